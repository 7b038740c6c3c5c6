package ssh

import (
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/wardenhq/warden/pkg/policy"
)

// hostCert certifies key for principals with ca.
func hostCert(t *testing.T, ca ssh.Signer, key ssh.Signer, principals ...string) ssh.PublicKey {
	t.Helper()
	c := &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: principals,
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHostKeyPins(t *testing.T) {
	key, _ := newEd25519Signer()
	other, _ := newEd25519Signer()
	ca, _ := newEd25519Signer()
	addr := &net.TCPAddr{IP: net.IPv4(10, 0, 1, 7), Port: 22}
	authorized := func(k ssh.PublicKey) string { return string(ssh.MarshalAuthorizedKey(k)) }
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(knownHosts, []byte("10.0.1.7 "+authorized(key.PublicKey())), 0o600)

	for _, tc := range []struct {
		name   string
		target policy.Target
		dst    string
		key    ssh.PublicKey
		ok     bool
	}{
		{"host_key matches", policy.Target{SSH: &policy.SSHTarget{HostKey: authorized(key.PublicKey())}}, "10.0.1.7:22", key.PublicKey(), true},
		{"host_key other", policy.Target{SSH: &policy.SSHTarget{HostKey: authorized(key.PublicKey())}}, "10.0.1.7:22", other.PublicKey(), false},
		{"host_ca signed for the address", policy.Target{SSH: &policy.SSHTarget{HostCA: authorized(ca.PublicKey())}}, "10.0.1.7:22", hostCert(t, ca, key, "10.0.1.7"), true},
		{"host_ca signed for another host", policy.Target{SSH: &policy.SSHTarget{HostCA: authorized(ca.PublicKey())}}, "10.0.1.7:22", hostCert(t, ca, key, "10.0.1.8"), false},
		{"host_ca plain key", policy.Target{SSH: &policy.SSHTarget{HostCA: authorized(ca.PublicKey())}}, "10.0.1.7:22", key.PublicKey(), false},
		{"host_ca by another CA", policy.Target{SSH: &policy.SSHTarget{HostCA: authorized(ca.PublicKey())}}, "10.0.1.7:22", hostCert(t, other, key, "10.0.1.7"), false},
		{"known_hosts matches", policy.Target{SSH: &policy.SSHTarget{KnownHostsFile: knownHosts}}, "10.0.1.7:22", key.PublicKey(), true},
		{"known_hosts other", policy.Target{SSH: &policy.SSHTarget{KnownHostsFile: knownHosts}}, "10.0.1.7:22", other.PublicKey(), false},
	} {
		tc.target.Name, tc.target.Address = "app-1", "10.0.1.7:22"
		cb, err := hostKeyCallback(tc.target, tc.dst)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = cb(hostKeyAddr(tc.target, tc.dst), addr, tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && !errors.Is(err, ErrHostKey) {
			t.Errorf("%s: %v is not ErrHostKey", tc.name, err)
		}
	}
	if _, err := hostKeyCallback(policy.Target{Name: "app-1"}, "10.0.1.7:22"); err == nil || !strings.Contains(err.Error(), "pins no host key") {
		t.Fatalf("a target without a pin: %v", err)
	}
}

func TestPrincipals(t *testing.T) {
	got := Principals(eventTarget("app-1", "app-1.internal:22"), "10.0.1.7:22")
	if strings.Join(got, ",") != "app-1,app-1.internal,10.0.1.7" {
		t.Fatalf("principals %q", got)
	}
	got = Principals(eventTarget("app-hosts", "10.0.2.0/24:22"), "10.0.2.9:22")
	if strings.Join(got, ",") != "app-hosts,10.0.2.9" {
		t.Fatalf("principals of a prefix target %q", got)
	}
}

func TestVaultedPassword(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("person-secret\n"), 0o600)
	h := start(t, policy.Target{Credentials: &policy.Credentials{Username: "svc", PasswordFile: pw}}, nil, nil).must()
	if out, _, _ := h.run("true"); out != "ran: true\n" {
		t.Fatalf("exec with a vaulted password: %q", out)
	}
	h.tg.mu.Lock()
	defer h.tg.mu.Unlock()
	if len(h.tg.users) != 1 || h.tg.users[0] != "svc" {
		t.Fatalf("the target saw logins as %q", h.tg.users)
	}
}
