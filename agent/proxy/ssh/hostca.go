package ssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/wardenhq/warden/pkg/event"
)

// HostCA is the agent's SSH host certificate authority. A client that
// trusts it (one "@cert-authority * KEY" line in ssh_known_hosts) accepts
// every target the agent proxies without a prompt: for each target the
// codec presents a host certificate naming every name and address the
// target is known by.
type HostCA struct {
	ca ssh.Signer
	// hostKey is the key the certificates certify. One key for every
	// target: what the client verifies is the CA's signature and the
	// principals, not the key.
	hostKey ssh.Signer

	mu    sync.Mutex
	certs map[string]ssh.Signer // by joined principals
}

// CertValidity is how long a host certificate is valid. Certificates are
// made afresh for every agent start, so a short validity limits what a
// stolen one is worth without ever expiring under a live agent (they are
// renewed once half of it has passed).
const CertValidity = 7 * 24 * time.Hour

// LoadHostCA reads the CA's private key (OpenSSH or PKCS#8 PEM) from
// keyPath, creating an ed25519 key there (0600) when there is none, and
// writes the known_hosts line that trusts it to knownHostsPath (0644),
// world-readable so every user's ssh can use it. An empty knownHostsPath
// writes nothing.
func LoadHostCA(keyPath, knownHostsPath string) (*HostCA, error) {
	pemBytes, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		pemBytes, err = createKey(keyPath)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh host CA %s: %w", keyPath, err)
	}
	ca, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("ssh host CA %s: %w", keyPath, err)
	}
	h, err := NewHostCA(ca)
	if err != nil {
		return nil, err
	}
	if knownHostsPath != "" {
		if err := writeFileAtomic(knownHostsPath, []byte(h.KnownHostsLine()+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("write ssh known_hosts line %s: %w", knownHostsPath, err)
		}
	}
	return h, nil
}

// NewHostCA returns a host CA signing with ca and certifying a fresh
// ed25519 host key.
func NewHostCA(ca ssh.Signer) (*HostCA, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ssh host key: %w", err)
	}
	hk, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("ssh host key: %w", err)
	}
	return &HostCA{ca: ca, hostKey: hk, certs: map[string]ssh.Signer{}}, nil
}

// KnownHostsLine is the line that makes ssh trust the CA for every host.
func (h *HostCA) KnownHostsLine() string {
	return "@cert-authority * " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(h.ca.PublicKey())))
}

// PublicKey is the CA's public key.
func (h *HostCA) PublicKey() ssh.PublicKey { return h.ca.PublicKey() }

// Principals are the names a target is known by: its policy name, the
// host of its address and the address the client dialled.
func Principals(t event.Target, dst string) []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	add(t.Name)
	for _, a := range []string{t.Address, dst} {
		host := a
		if h, _, err := net.SplitHostPort(a); err == nil {
			host = h
		}
		if i := strings.IndexByte(host, '/'); i >= 0 {
			// A prefix target: the dialled address names the host.
			continue
		}
		add(host)
	}
	return out
}

// Signer returns the host certificate signer for a target known by
// principals, made on first use and renewed once half its validity has
// passed.
func (h *HostCA) Signer(principals []string) (ssh.Signer, error) {
	k := strings.Join(principals, "\x00")
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.certs[k]; ok {
		c := s.PublicKey().(*ssh.Certificate)
		if time.Until(time.Unix(int64(c.ValidBefore), 0)) > CertValidity/2 {
			return s, nil
		}
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key:             h.hostKey.PublicKey(),
		CertType:        ssh.HostCert,
		KeyId:           "warden host " + principals[0],
		ValidPrincipals: principals,
		// A minute back for clock skew between the agent and a client
		// on another host's clock.
		ValidAfter:  uint64(now.Add(-time.Minute).Unix()),
		ValidBefore: uint64(now.Add(CertValidity).Unix()),
	}
	if err := cert.SignCert(rand.Reader, h.ca); err != nil {
		return nil, fmt.Errorf("sign ssh host certificate for %s: %w", principals[0], err)
	}
	s, err := ssh.NewCertSigner(cert, h.hostKey)
	if err != nil {
		return nil, fmt.Errorf("ssh host certificate for %s: %w", principals[0], err)
	}
	h.certs[k] = s
	return s, nil
}

func newEd25519Signer() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return ssh.NewSignerFromKey(priv)
}

func createKey(path string) ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "warden ssh host CA")
	if err != nil {
		return nil, err
	}
	b := pem.EncodeToMemory(block)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// O_EXCL: two agents racing on a fresh state directory must not
	// each believe their own key is the CA.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return os.ReadFile(path)
		}
		return nil, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	return b, f.Close()
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
