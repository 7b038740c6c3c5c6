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
		"host ctl":        func(c *Command) { c.Host = "a\nb" },
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
	for _, h := range []string{"", "a\tb", "a\x7f"} {
		if ValidCommandHost(h) == nil {
			t.Errorf("%q accepted", h)
		}
	}
	for _, h := range []string{"bastion-1", "bastion-1.corp.example", "all", "a b"} {
		if err := ValidCommandHost(h); err != nil {
			t.Error(err)
		}
	}
}

func TestCommandHostToken(t *testing.T) {
	for host, want := range map[string]string{
		"bastion-1":              "bastion-1",
		"bastion-1.corp.example": "bastion-1%2Ecorp%2Eexample",
		"all":                    "%61ll",
		"all.x":                  "all%2Ex",
		"50%":                    "50%25",
		"a*b>c/d\\e f":           "a%2Ab%3Ec%2Fd%5Ce%20f",
	} {
		if got := CommandHostToken(host); got != want {
			t.Errorf("%q: token %q, want %q", host, got, want)
		}
	}
	// Distinct hosts, distinct subjects: escaping is reversible.
	seen := map[string]string{}
	for _, h := range []string{"a.b", "a%2Eb", "a_b", "all", "%61ll", "ALL"} {
		tok := CommandHostToken(h)
		if other, ok := seen[tok]; ok {
			t.Errorf("%q and %q share token %q", h, other, tok)
		}
		seen[tok] = h
		if strings.ContainsAny(tok, ".*> /\\") {
			t.Errorf("%q: token %q is no subject token", h, tok)
		}
	}
	if CommandSubject("a.b") != "warden.commands.a%2Eb" || CommandConsumer("a.b") != "warden-agent-a%2Eb" {
		t.Errorf("subject %q consumer %q", CommandSubject("a.b"), CommandConsumer("a.b"))
	}
	c := testCommand(KindKill)
	if c.Host = "all"; c.Subject() == CommandSubjectAll {
		t.Error(`host "all" gets the subject of every host`)
	}
}
