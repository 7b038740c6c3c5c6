package collectorclient

import (
	"strings"
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2025, 1, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"1h":                          now.Add(-time.Hour),
		"7d":                          now.Add(-7 * 24 * time.Hour),
		"90s":                         now.Add(-90 * time.Second),
		"2025-01-01T00:00:00Z":        time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		"2025-01-01T00:00:00.5+01:00": time.Date(2024, 12, 31, 23, 0, 0, 5e8, time.UTC),
	} {
		got, err := ParseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-1h", "3x"} {
		if _, err := ParseTime(bad, now); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
}

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"127.0.0.1:8181", "ftp://x", "http://", "http://a b"} {
		if _, err := New(u, nil); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
	t.Setenv(EnvURL, "http://collector:8181")
	if got := ResolveURL(""); got != "http://collector:8181" {
		t.Errorf("ResolveURL from env = %q", got)
	}
	if got := ResolveURL("http://flag:1"); got != "http://flag:1" {
		t.Errorf("ResolveURL flag = %q", got)
	}
}

func TestRender(t *testing.T) {
	raw := []byte(`{"schema":"warden.event/v1","id":"01J0000000000000000000000A","time":"2025-01-10T12:00:00Z","type":"db.query",
		"host":{"id":"bastion-1"},"identity":{"sub":"alice","email":"alice@example.com","groups":[],"issuer":"x","session_id":"s"},
		"target":{"name":"orders-db"},"decision":{"action":"deny","rule":"no-ddl"},"data":{"statement":"DROP TABLE x"}}`)
	line := FormatEvent(raw, []string{"bad_hash"})
	for _, want := range []string{"db.query", "alice@example.com", "orders-db", "deny (no-ddl)", "statement=DROP TABLE x", "INTEGRITY bad_hash"} {
		if !strings.Contains(line, want) {
			t.Errorf("row %q lacks %q", line, want)
		}
	}
	login := time.Date(2025, 1, 10, 9, 0, 0, 0, time.UTC)
	var b strings.Builder
	if err := WriteSessions(&b, []Session{{SessionID: "s", Sub: "alice", HostID: "bastion-1", Login: &login, Targets: []string{"b", "a"}}}); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "2025-01-10T09:00:00Z") || !strings.Contains(out, "active") || !strings.Contains(out, "a,b") {
		t.Errorf("sessions table:\n%s", out)
	}
}
