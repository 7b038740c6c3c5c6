// Package postgres implements the parts of the PostgreSQL v3 wire protocol
// the Warden proxy needs, on top of jackc/pgx's pgproto3 message codec.
package postgres

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATE codes Warden answers with.
const (
	// CodeInvalidAuthorization is 28000, invalid_authorization_specification:
	// the client has no right to connect.
	CodeInvalidAuthorization = "28000"
	// CodeInsufficientPrivilege is 42501: a statement was refused.
	CodeInsufficientPrivilege = "42501"
)

// maxNegotiations bounds the packets of the startup phase: libpq sends at
// most a GSSENCRequest, an SSLRequest and then its StartupMessage.
const maxNegotiations = 3

// Negotiate reads a client's startup phase up to its StartupMessage or
// CancelRequest, and returns that message with the connection to go on
// with and a reader on it. An SSLRequest is answered with TLS when
// tlsConfig is not nil, and declined ('N') otherwise; a GSSENCRequest is
// always declined, so the client goes on in the clear or gives up.
func Negotiate(ctx context.Context, conn net.Conn, tlsConfig *tls.Config) (net.Conn, *Reader, pgproto3.FrontendMessage, error) {
	plain := conn
	r := NewReader(conn)
	for range maxNegotiations {
		msg, err := r.Startup()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read startup message: %w", err)
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest:
			if conn != plain {
				return nil, nil, nil, errors.New("SSLRequest inside TLS")
			}
			if tlsConfig == nil {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return nil, nil, nil, fmt.Errorf("decline TLS: %w", err)
				}
				continue
			}
			// Bytes sent after the SSLRequest, ahead of the handshake,
			// are not protected by it and must not be read as if they
			// were (CVE-2021-23214 in the server).
			if r.Buffered() > 0 {
				return nil, nil, nil, errors.New("data sent ahead of the TLS handshake")
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return nil, nil, nil, fmt.Errorf("accept TLS: %w", err)
			}
			tc := tls.Server(conn, tlsConfig)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, nil, nil, fmt.Errorf("TLS handshake: %w", err)
			}
			conn, r = tc, NewReader(tc)
		case *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, nil, nil, fmt.Errorf("decline GSS encryption: %w", err)
			}
		case *pgproto3.CancelRequest, *pgproto3.StartupMessage:
			return conn, r, msg, nil
		default:
			return nil, nil, nil, fmt.Errorf("unexpected startup message %T", msg)
		}
	}
	return nil, nil, nil, errors.New("client kept negotiating encryption")
}

// RefuseStartup reads the client's startup phase (see Negotiate) and
// answers it with a FATAL ErrorResponse carrying message, the way a server
// refuses a login. A client that asks for TLS gets it when tlsConfig is not
// nil, so that one that requires TLS still reads the message; without it,
// TLS is declined and the message goes in the clear, which on the loopback
// hop between client and agent exposes nothing. A CancelRequest gets no
// answer.
func RefuseStartup(ctx context.Context, conn net.Conn, message string, tlsConfig *tls.Config) error {
	conn, _, msg, err := Negotiate(ctx, conn, tlsConfig)
	if err != nil {
		return err
	}
	if _, ok := msg.(*pgproto3.StartupMessage); !ok {
		return nil
	}
	w := NewWriter(conn)
	w.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: CodeInvalidAuthorization, Message: message})
	if err := w.Flush(); err != nil {
		return fmt.Errorf("send error response: %w", err)
	}
	return nil
}
