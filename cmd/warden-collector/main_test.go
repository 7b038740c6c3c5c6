package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Start-up mistakes of the API end the collector with one clear line and
// a non-zero status, before it opens or starts anything.
func TestStartupRefusals(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "events.db")
	base := []string{"--store", store, "--nats-store", filepath.Join(dir, "nats"), "--agent-keys", dir,
		"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"}
	oidc := []string{"--oidc-issuer", "http://127.0.0.1:1", "--oidc-client-id", "warden"}
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no issuer", nil, 2, "--oidc-issuer and --oidc-client-id are required"},
		{"no client id", []string{"--oidc-issuer", "http://127.0.0.1:1"}, 2, "--oidc-issuer and --oidc-client-id are required"},
		{"readers without issuer", []string{"--readers", "soc"}, 2, "--oidc-issuer and --oidc-client-id are required"},
		{"cert without key", append([]string{"--api-tls-cert", junk}, oidc...), 2, "--api-tls-cert and --api-tls-key go together"},
		{"key without cert", append([]string{"--api-tls-key", junk}, oidc...), 2, "--api-tls-cert and --api-tls-key go together"},
		{"unreadable pair", append([]string{"--api-tls-cert", junk, "--api-tls-key", filepath.Join(dir, "none.key")}, oidc...), 1, "API TLS (--api-tls-cert " + junk},
		{"https issuer required off loopback", []string{"--oidc-issuer", "http://idp.example.com", "--oidc-client-id", "warden"}, 1, "must use https"},
	} {
		var stderr strings.Builder
		code := run(append(append([]string{}, base...), tc.args...), &stderr)
		out := stderr.String()
		if code != tc.code || !strings.Contains(out, tc.want) || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "warden-collector: ") {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and one line with %q", tc.name, code, out, tc.code, tc.want)
		}
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("a refused start created the store: %v", err)
	}
}
