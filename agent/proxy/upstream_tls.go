package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/wardenhq/warden/pkg/policy"
)

// UpstreamTLSConfig builds the client TLS configuration for target, offering
// the ALPN protocols nextProtos. The CA file is read here, at each
// connection, like the password file: a rotated CA takes effect without a
// policy reload.
func UpstreamTLSConfig(target policy.Target, nextProtos ...string) (*tls.Config, error) {
	if !target.UpstreamTLS().Enabled() {
		return nil, errors.New("TLS is not configured for this target")
	}
	opts := target.UpstreamTLS()
	var roots *x509.CertPool // nil: the system roots
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", opts.CAFile)
		}
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    roots,
		NextProtos: nextProtos,
	}
	switch opts.Mode {
	case policy.TLSVerifyFull:
		name := target.TLSServerName()
		if name == "" {
			// Parse rejects this; a hand-built policy must not end up
			// verifying nothing.
			return nil, errors.New("verify-full without a server name to check")
		}
		cfg.ServerName = name
	case policy.TLSRequire:
		// crypto/tls verifies the chain and the name together, so turn
		// its verification off and verify the chain alone, against the
		// same roots. InsecureSkipVerify is only safe together with this
		// callback.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, roots)
		}
	default:
		return nil, fmt.Errorf("unknown TLS mode %q", opts.Mode)
	}
	return cfg, nil
}

// verifyChain checks that the leaf of certs chains to roots (the system
// roots when nil) through the other certificates the server sent, and may
// serve TLS; the host name is not checked.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool) error {
	if len(certs) == 0 {
		return errors.New("the server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verify server certificate: %w", err)
	}
	return nil
}
