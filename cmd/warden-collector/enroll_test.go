package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/natsauth"
)

// enroll writes the creds (0600, an agent JWT for the host), installs the
// agent's key, records the user, and prints the agent.yaml lines.
func TestEnroll(t *testing.T) {
	dir := t.TempDir()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	keyFile := filepath.Join(dir, "b1.pub")
	if err := event.WritePublicKey(keyFile, pub); err != nil {
		t.Fatal(err)
	}
	auth, keys, creds := filepath.Join(dir, "auth"), filepath.Join(dir, "keys"), filepath.Join(dir, "b1.creds")
	var stdout, stderr strings.Builder
	code := enroll([]string{"bastion-1", "--nats-auth", auth, "--out", creds, "--agent-key", keyFile, "--agent-keys", keys,
		"--nats-url", "tls://nats-1:4222", "--creds-path", "/etc/warden/nats.creds"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	want := "host_id: bastion-1\nnats: { url: \"tls://nats-1:4222\", creds_file: /etc/warden/nats.creds }\n"
	if stdout.String() != want {
		t.Fatalf("printed %q, want %q", stdout.String(), want)
	}
	fi, err := os.Stat(creds)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("creds file: %v, mode %v", err, fi.Mode())
	}
	b, _ := os.ReadFile(creds)
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil || uc.Name != "agent:bastion-1" {
		t.Fatalf("user JWT %v: %v", uc, err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(b)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	if strings.Contains(stdout.String()+stderr.String(), string(seed)) {
		t.Fatal("the user's seed was printed")
	}
	got, err := event.LoadPublicKeys(keys)
	if err != nil || !got["bastion-1"].Equal(pub) {
		t.Fatalf("installed keys %v: %v", got, err)
	}
	a, err := natsauth.Open(auth)
	if err != nil {
		t.Fatal(err)
	}
	u, err := a.Lookup(natsauth.RoleAgent, "bastion-1")
	if err != nil || u.PublicKey != uc.Subject || u.AgentKey == "" {
		t.Fatalf("recorded user %+v (%v); want NATS key %s and the agent key", u, err, uc.Subject)
	}
}

func TestEnrollRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "want exactly one HOST_ID"},
		{[]string{"a", "b"}, 2, "want exactly one HOST_ID"},
		{[]string{"bad\thost"}, 1, "control character"},
		{[]string{"bastion-1", "--agent-key", filepath.Join(dir, "none.pub")}, 1, "--agent-key"},
	} {
		var stdout, stderr strings.Builder
		code := enroll(append(tc.args, "--nats-auth", filepath.Join(dir, "auth"), "--out", filepath.Join(dir, "x.creds")), &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) || stdout.Len() != 0 {
			t.Errorf("%v: exit %d, stderr %q; want exit %d naming %q and nothing printed", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}

func TestParseAge(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "400d": 400 * 24 * time.Hour, "720h": 720 * time.Hour} {
		if got, err := parseAge(in); err != nil || got != want {
			t.Errorf("parseAge(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0d", "-1d", "10m", "d", "1y", "abc"} {
		if _, err := parseAge(in); err == nil {
			t.Errorf("parseAge(%q): no error", in)
		}
	}
}
