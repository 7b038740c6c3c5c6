package postgres

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// SSLRequestCode is the request code of an SSLRequest (1234.5679).
const SSLRequestCode = 80877103

// TLSHandshakeTimeout bounds the SSLRequest exchange and the handshake, so
// a server that accepts TCP but never answers cannot pin a handler.
const TLSHandshakeTimeout = 30 * time.Second

// ErrTLSNotOffered means the server answered an SSLRequest with something
// other than 'S'.
var ErrTLSNotOffered = errors.New("the server does not accept TLS")

// RequestTLS asks a PostgreSQL server for TLS on conn (SSLRequest) and
// completes the handshake with cfg. The caller sends its startup packet
// (or CancelRequest) over the returned connection. It never falls back to
// plain TCP.
func RequestTLS(ctx context.Context, conn net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	conn.SetDeadline(time.Now().Add(TLSHandshakeTimeout))
	defer conn.SetDeadline(time.Time{})

	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], SSLRequestCode)
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
		return nil, fmt.Errorf("%w (it answered %q to SSLRequest)", ErrTLSNotOffered, answer[0])
	}
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, TLSHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}
