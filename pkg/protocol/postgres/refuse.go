// Package postgres implements the parts of the PostgreSQL v3 wire protocol
// the Warden proxy needs, on top of jackc/pgx's pgproto3 message codec.
package postgres

import (
	"fmt"
	"io"

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

// RefuseStartup reads the client's startup phase and answers it with a
// FATAL ErrorResponse carrying message, the way a server refuses a login.
// TLS and GSS encryption requests are declined first ('N') so that clients
// which ask for them still get to read the message in the clear; on the
// loopback hop between client and agent that exposes nothing.
func RefuseStartup(rw io.ReadWriter, message string) error {
	be := pgproto3.NewBackend(rw, rw)
	for range 3 { // SSLRequest, then GSSENCRequest, then StartupMessage at most
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return fmt.Errorf("read startup message: %w", err)
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := rw.Write([]byte{'N'}); err != nil {
				return fmt.Errorf("decline encryption: %w", err)
			}
			continue
		case *pgproto3.CancelRequest:
			return nil // a cancel gets no answer
		case *pgproto3.StartupMessage:
			be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: CodeInvalidAuthorization, Message: message})
			if err := be.Flush(); err != nil {
				return fmt.Errorf("send error response: %w", err)
			}
			return nil
		default:
			return fmt.Errorf("unexpected startup message %T", msg)
		}
	}
	return fmt.Errorf("client kept negotiating encryption")
}
