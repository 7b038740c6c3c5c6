package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/wardenhq/warden/pkg/policy"
)

// sslRequestCode is the PostgreSQL SSLRequest code (1234.5679).
const sslRequestCode = 80877103

// tlsHandshakeTimeout bounds the SSLRequest exchange and the handshake, so
// a target that accepts TCP but never answers cannot pin a handler.
const tlsHandshakeTimeout = 30 * time.Second

// errTLSNotOffered means the server answered the SSLRequest with something
// other than 'S'.
var errTLSNotOffered = errors.New("the server does not accept TLS")

// pgUpstreamTLS asks a PostgreSQL server for TLS on conn (SSLRequest) and
// completes the handshake with the verification target's
// credentials.tls demands. The caller sends the startup packet over the
// returned connection. It never falls back to plain TCP: the policy asked
// for TLS so that the injected login cannot be seen or intercepted.
func pgUpstreamTLS(ctx context.Context, conn net.Conn, target policy.Target) (*tls.Conn, error) {
	cfg, err := upstreamTLSConfig(target)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(tlsHandshakeTimeout))
	defer conn.SetDeadline(time.Time{})

	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		return nil, fmt.Errorf("send SSLRequest: %w", err)
	}
	// Read exactly one byte, unbuffered: anything the server (or a
	// machine in the middle) sends after it must not be taken as part of
	// the protocol, or it could be injected ahead of the encrypted stream
	// (CVE-2021-23222 in libpq).
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return nil, fmt.Errorf("read SSLRequest answer: %w", err)
	}
	if answer[0] != 'S' {
		return nil, fmt.Errorf("%w (it answered %q to SSLRequest)", errTLSNotOffered, answer[0])
	}
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// upstreamTLSConfig builds the client TLS configuration for target. The CA
// file is read here, at each connection, like the password file: a rotated
// CA takes effect without a policy reload.
func upstreamTLSConfig(target policy.Target) (*tls.Config, error) {
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
		// PostgreSQL 17 checks the protocol name when a client offers
		// ALPN; older servers ignore it.
		NextProtos: []string{"postgresql"},
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
