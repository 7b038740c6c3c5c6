package event

import (
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

func testCommand(kind CommandKind) *Command {
	now := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	c := &Command{Schema: CommandSchema, ID: ulid.Make().String(), Kind: kind, Issued: now, By: "soc1", Reason: "intrusion", Sub: "alice"}
	if kind == KindLock {
		c.Until = now.Add(time.Hour)
	}
	return c
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range []*Command{testCommand(KindKill), testCommand(KindLock)} {
		c.Host = "bastion-1"
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if got.ID != c.ID || got.Kind != c.Kind || !got.Issued.Equal(c.Issued) || !got.Until.Equal(c.Until) || got.Sub != c.Sub || got.Host != c.Host {
			t.Fatalf("round trip changed the command: %+v -> %+v", c, got)
		}
		if got.Subject() != "warden.commands.bastion-1" {
			t.Fatalf("subject %q", got.Subject())
		}
	}
	k := testCommand(KindKill)
	k.Lock = Duration(90 * time.Minute)
	b, _ := EncodeCommand(k)
	if !strings.Contains(string(b), `"lock":"1h30m0s"`) {
		t.Fatalf("lock duration encoded as %s", b)
	}
	got, err := DecodeCommand(b)
	if err != nil || time.Duration(got.Lock) != 90*time.Minute {
		t.Fatalf("lock duration decoded as %v, %v", got.Lock, err)
	}
	if k.Host = ""; k.Subject() != CommandSubjectAll {
		t.Fatalf("subject without host %q", k.Subject())
	}
}

func TestCommandValidate(t *testing.T) {
	cases := map[string]func(c *Command){
		"schema":          func(c *Command) { c.Schema = "x" },
		"id":              func(c *Command) { c.ID = "nope" },
		"issued":          func(c *Command) { c.Issued = time.Time{} },
		"by":              func(c *Command) { c.By = "" },
		"reason":          func(c *Command) { c.Reason = "  " },
		"host all":        func(c *Command) { c.Host = "all" },
		"host dot":        func(c *Command) { c.Host = "a.b" },
		"kill both":       func(c *Command) { c.SessionID = "s1" },
		"kill neither":    func(c *Command) { c.Sub = "" },
		"kill with until": func(c *Command) { c.Until = c.Issued.Add(time.Hour) },
		"kind":            func(c *Command) { c.Kind = "reboot" },
	}
	for name, mod := range cases {
		c := testCommand(KindKill)
		mod(c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted %+v", name, c)
		}
		if b, err := EncodeCommand(c); err == nil {
			t.Errorf("%s: encoded %s", name, b)
		}
	}
	lockCases := map[string]func(c *Command){
		"no sub":      func(c *Command) { c.Sub = "" },
		"session":     func(c *Command) { c.SessionID = "s1" },
		"ends before": func(c *Command) { c.Until = c.Issued },
		"too long":    func(c *Command) { c.Until = c.Issued.Add(MaxLock + time.Second) },
	}
	for name, mod := range lockCases {
		c := testCommand(KindLock)
		mod(c)
		if err := c.Validate(); err == nil {
			t.Errorf("lock %s: accepted %+v", name, c)
		}
	}
}

func TestDecodeCommandRefusesUnknownFields(t *testing.T) {
	b, _ := EncodeCommand(testCommand(KindKill))
	bad := strings.Replace(string(b), `"kind"`, `"also":"x","kind"`, 1)
	if _, err := DecodeCommand([]byte(bad)); err == nil {
		t.Fatal("unknown field accepted")
	}
	if _, err := DecodeCommand(append(b, []byte(`{}`)...)); err == nil {
		t.Fatal("trailing data accepted")
	}
}

func TestCommandExpired(t *testing.T) {
	k := testCommand(KindKill)
	if k.Expired(k.Issued.Add(KillMaxAge)) {
		t.Fatal("kill expired at exactly KillMaxAge")
	}
	if !k.Expired(k.Issued.Add(KillMaxAge + time.Second)) {
		t.Fatal("old kill not expired")
	}
	l := testCommand(KindLock)
	if l.Expired(l.Until.Add(-time.Second)) || !l.Expired(l.Until) {
		t.Fatal("lock expiry not at its end")
	}
}

func TestValidCommandHost(t *testing.T) {
	for _, h := range []string{"", "all", "a.b", "a*", "a>", "a b", "a/b"} {
		if ValidCommandHost(h) == nil {
			t.Errorf("%q accepted", h)
		}
	}
	if err := ValidCommandHost("bastion-1"); err != nil {
		t.Error(err)
	}
}
