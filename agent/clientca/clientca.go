// Package clientca is the certificate authority behind the TLS the proxy
// offers clients. The kernel hands a client's connection to a target to the
// agent, so the agent answers the client's TLS request itself: a client
// that insists on TLS (libpq's sslmode=require) gets it, and one that
// verifies the server (sslmode=verify-full) can, by trusting this
// authority's certificate, which the agent keeps readable for the purpose.
//
// The authority signs a short-lived certificate per name a client asks for
// (SNI) and per address it connected to. Its key never leaves the agent,
// and it is distinct from every target's own certificate: trusting it says
// "I talk to targets through this host's Warden", nothing more.
package clientca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Lifetimes. A leaf is replaced once less than leafRenew of it remains, so
// a long-running agent never serves an expired one.
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	leafLifetime = 7 * 24 * time.Hour
	leafRenew    = 24 * time.Hour
	clockSkew    = time.Hour // leaves are valid from a little before now
	maxLeaves    = 1024      // bound on cached leaves
)

// Authority issues the certificates the proxy presents to clients. It is
// safe for concurrent use.
type Authority struct {
	cert *x509.Certificate
	key  crypto.Signer

	mu     sync.Mutex
	leaves map[leafKey]*tls.Certificate
}

type leafKey struct {
	name string
	addr netip.Addr
}

// Open loads the authority from certFile and keyFile, creating both (the
// key readable by root only, the certificate by everyone) when neither
// exists. hostID names the authority in its certificate.
func Open(certFile, keyFile, hostID string) (*Authority, error) {
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	switch {
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		if err := create(certFile, keyFile, hostID); err != nil {
			return nil, err
		}
	case errors.Is(certErr, os.ErrNotExist) || errors.Is(keyErr, os.ErrNotExist):
		return nil, fmt.Errorf("client TLS authority: %s and %s must both exist or both be absent (then wardend creates them)", certFile, keyFile)
	}
	return load(certFile, keyFile)
}

func create(certFile, keyFile, hostID string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("client TLS authority: generate key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Warden agent " + hostID + " client TLS", Organization: []string{"Warden"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("client TLS authority: self-sign: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("client TLS authority: encode key: %w", err)
	}
	// Open refuses one file without the other, so if the certificate
	// cannot be written the key goes too, and the next start begins anew.
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyFile)
		return err
	}
	return nil
}

func load(certFile, keyFile string) (*Authority, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client TLS authority %s: %w", certFile, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("client TLS authority %s: %w", certFile, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("client TLS authority %s: not a CA certificate (basic constraints CA and key usage certSign are required)", certFile)
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("client TLS authority %s: expired on %s; remove it and its key to have a new one made", certFile, cert.NotAfter.Format(time.DateOnly))
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("client TLS authority %s: the key cannot sign", keyFile)
	}
	return &Authority{cert: cert, key: key, leaves: map[leafKey]*tls.Certificate{}}, nil
}

// Certificate is the authority's own certificate, the one clients trust.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// WriteCertificate publishes the authority's certificate at path, readable
// by everyone, for clients to trust (sslrootcert).
func (a *Authority) WriteCertificate(path string) error {
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw}), 0o644)
}

// ServerConfig is the TLS configuration for a client that connected to dst
// (its original destination, before the kernel's redirect). The
// certificate names dst and the host name the client asked for, if any.
func (a *Authority) ServerConfig(dst netip.Addr) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return a.leaf(serverName(hello.ServerName), dst.Unmap())
		},
	}
}

// serverName keeps a requested name only if it is a plausible DNS name;
// anything else is left out of the certificate.
func serverName(s string) string {
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if s == "" || len(s) > 253 || net.ParseIP(s) != nil {
		return ""
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return ""
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return ""
			}
		}
	}
	return s
}

// leaf returns a certificate for name and addr, from the cache while it
// has more than leafRenew to live.
func (a *Authority) leaf(name string, addr netip.Addr) (*tls.Certificate, error) {
	k := leafKey{name, addr}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.leaves[k]; ok && now.Add(leafRenew).Before(c.Leaf.NotAfter) {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("leaf key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(a.cert.NotAfter) {
		tmpl.NotAfter = a.cert.NotAfter
	}
	if name != "" {
		tmpl.DNSNames = []string{name}
		tmpl.Subject.CommonName = name
	}
	if addr.IsValid() {
		tmpl.IPAddresses = []net.IP{addr.AsSlice()}
		if tmpl.Subject.CommonName == "" {
			tmpl.Subject.CommonName = addr.String()
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf for %q %s: %w", name, addr, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse leaf: %w", err)
	}
	c := &tls.Certificate{Certificate: [][]byte{der, a.cert.Raw}, PrivateKey: key, Leaf: leaf}
	if len(a.leaves) >= maxLeaves {
		clear(a.leaves) // rare; re-signing is cheap
	}
	a.leaves[k] = c
	return c, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}

// writeAtomic writes data to path through a temporary file in the same
// directory, so a crash never leaves half a key or certificate.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("client TLS authority: %w", err)
	}
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("client TLS authority: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("client TLS authority: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("client TLS authority: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("client TLS authority: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("client TLS authority: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("client TLS authority: %w", err)
	}
	return nil
}
