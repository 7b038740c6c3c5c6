package clientca

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenCreatesThenReloads(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	a, err := Open(cert, key, "bastion-1")
	if err != nil {
		t.Fatal(err)
	}
	for path, perm := range map[string]os.FileMode{cert: 0o644, key: 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != perm {
			t.Errorf("%s: %v mode %v, want %v", path, err, fi.Mode().Perm(), perm)
		}
	}
	if !a.Certificate().IsCA || !strings.Contains(a.Certificate().Subject.CommonName, "bastion-1") {
		t.Errorf("authority certificate %+v", a.Certificate().Subject)
	}
	b, err := Open(cert, key, "bastion-1")
	if err != nil {
		t.Fatal(err)
	}
	if !b.Certificate().Equal(a.Certificate()) {
		t.Error("reopening made a new authority")
	}
}

func TestOpenRefusesHalfOrBadFiles(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	os.WriteFile(cert, []byte("x"), 0o644)
	if _, err := Open(cert, key, "h"); err == nil || !strings.Contains(err.Error(), "both exist or both be absent") {
		t.Errorf("half an authority: %v", err)
	}
	os.WriteFile(key, []byte("y"), 0o600)
	if _, err := Open(cert, key, "h"); err == nil || !strings.Contains(err.Error(), cert) {
		t.Errorf("garbage authority: %v", err)
	}
}

// A client that trusts the authority verifies the proxy as the address it
// dialled and as the name it asked for, and nothing else.
func TestServerConfigVerifies(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "h")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(a.Certificate())
	dst := netip.MustParseAddr("::ffff:10.1.2.3") // as the kernel may report it
	for _, tc := range []struct {
		sni, verifyAs string
		ok            bool
	}{
		{"", "10.1.2.3", true},
		{"db.internal", "db.internal", true},
		{"db.internal", "10.1.2.3", true},
		{"db.internal", "other.internal", false},
		{"", "10.1.2.4", false},
		{"bad name!", "bad name!", false},
	} {
		server, client := net.Pipe()
		go func() {
			tls.Server(server, a.ServerConfig(dst)).Handshake()
			server.Close()
		}()
		err := tls.Client(client, &tls.Config{RootCAs: roots, ServerName: tc.sni, VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.verifyAs, Intermediates: x509.NewCertPool()})
			return err
		}, InsecureSkipVerify: true}).Handshake()
		client.Close()
		if (err == nil) != tc.ok {
			t.Errorf("SNI %q verified as %q: %v, want ok=%v", tc.sni, tc.verifyAs, err, tc.ok)
		}
	}
}
