package postgres

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// hang bounds every wait so a broken refusal fails instead of hanging.
const hang = 10 * time.Second

const refusal = "warden: no verified identity for this session; run 'warden login'"

// refuseOn runs RefuseStartup on the server end of a loopback TCP
// connection and returns the client end and RefuseStartup's result. The
// server end is closed once RefuseStartup returns, as the proxy does.
func refuseOn(t *testing.T, message string) (net.Conn, <-chan error) {
	return refuseWith(t, message, nil)
}

// refuseWith is refuseOn with TLS offered.
func refuseWith(t *testing.T, message string, cfg *tls.Config) (net.Conn, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{client, server} {
		c.SetDeadline(time.Now().Add(hang))
		t.Cleanup(func() { c.Close() })
	}
	done := make(chan error, 1)
	go func() {
		done <- RefuseStartup(context.Background(), server, message, cfg)
		server.Close()
	}()
	return client, done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(hang):
		t.Fatal("RefuseStartup did not return")
		return nil
	}
}

func startup() *pgproto3.StartupMessage {
	return &pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": "alice", "database": "orders"},
	}
}

// readByte reads the one-byte answer to an encryption request. It reads
// the raw connection, not the Frontend, which would expect a framed
// message.
func readByte(t *testing.T, c net.Conn) byte {
	t.Helper()
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("read encryption answer: %v", err)
	}
	return b[0]
}

// expectFatal reads the ErrorResponse and then EOF.
func expectFatal(t *testing.T, c net.Conn, fe *pgproto3.Frontend, message string) {
	t.Helper()
	msg, err := fe.Receive()
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	er, ok := msg.(*pgproto3.ErrorResponse)
	if !ok {
		t.Fatalf("got %T %+v, want ErrorResponse", msg, msg)
	}
	if er.Severity != "FATAL" || er.SeverityUnlocalized != "FATAL" || er.Code != CodeInvalidAuthorization || er.Message != message {
		t.Errorf("ErrorResponse %+v, want FATAL %s %q", er, CodeInvalidAuthorization, message)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Errorf("after the error: %q, %v; want EOF", rest, err)
	}
}

// startupRefused sends m on c and expects the FATAL refusal with message,
// and then RefuseStartup's clean return.
func startupRefused(t *testing.T, c net.Conn, done <-chan error, m *pgproto3.StartupMessage, message string) {
	t.Helper()
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(m)
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	expectFatal(t, c, fe, message)
	if err := wait(t, done); err != nil {
		t.Errorf("RefuseStartup: %v", err)
	}
}

func TestRefuseStartup(t *testing.T) {
	tests := []struct {
		name    string
		prelude []pgproto3.FrontendMessage // each answered with 'N'
	}{
		{name: "plain"},
		{name: "ssl", prelude: []pgproto3.FrontendMessage{&pgproto3.SSLRequest{}}},
		{name: "gssenc", prelude: []pgproto3.FrontendMessage{&pgproto3.GSSEncRequest{}}},
		{name: "gssenc then ssl", prelude: []pgproto3.FrontendMessage{&pgproto3.GSSEncRequest{}, &pgproto3.SSLRequest{}}},
		{name: "ssl then gssenc", prelude: []pgproto3.FrontendMessage{&pgproto3.SSLRequest{}, &pgproto3.GSSEncRequest{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, done := refuseOn(t, refusal)
			fe := pgproto3.NewFrontend(c, c)
			for _, m := range tt.prelude {
				fe.Send(m)
				if err := fe.Flush(); err != nil {
					t.Fatal(err)
				}
				if b := readByte(t, c); b != 'N' {
					t.Fatalf("answer to %T = %q, want 'N'", m, b)
				}
			}
			startupRefused(t, c, done, startup(), refusal)
		})
	}
}

// TestRefuseStartupProtocol32 refuses a client that asks for protocol 3.2
// (PostgreSQL 18 clients with max_protocol_version=3.2): the refusal must
// still reach it.
func TestRefuseStartupProtocol32(t *testing.T) {
	c, done := refuseOn(t, refusal)
	m := startup()
	m.ProtocolVersion = pgproto3.ProtocolVersion32
	startupRefused(t, c, done, m, refusal)
}

func TestRefuseStartupMessageVerbatim(t *testing.T) {
	// Quotes, newlines and non-ASCII go through untouched.
	msg := "warden: target \"orders-db\" refused\nrun 'warden login' — then retry"
	c, done := refuseOn(t, msg)
	startupRefused(t, c, done, startup(), msg)
}

func TestRefuseStartupCancelRequest(t *testing.T) {
	c, done := refuseOn(t, refusal)
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.CancelRequest{ProcessID: 1234, SecretKey: []byte{1, 2, 3, 4}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err != nil {
		t.Errorf("RefuseStartup: %v", err)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Errorf("cancel request answered with %q (%v); want nothing", rest, err)
	}
}

// startupPacket frames a startup-phase packet: length, then code, then body.
func startupPacket(code uint32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, body...)
}

func TestRefuseStartupGarbage(t *testing.T) {
	ssl := startupPacket(80877103, nil)
	tests := []struct {
		name  string
		input []byte
		// closeWrite ends the client's side after input, for inputs that
		// are only a prefix of a packet.
		closeWrite bool
		// ns is how many 'N' answers come before the error.
		ns int
	}{
		{name: "http", input: []byte("GET / HTTP/1.1\r\nHost: db\r\n\r\n")},
		{name: "tls client hello", input: []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}},
		{name: "unknown code", input: startupPacket(1234<<16|9999, []byte("xxxx"))},
		{name: "length too short", input: []byte{0, 0, 0, 2, 0, 0}, closeWrite: true},
		{name: "truncated", input: []byte{0, 0, 0, 40, 0, 3, 0, 0, 'u'}, closeWrite: true},
		{name: "empty", closeWrite: true},
		{name: "ssl then garbage", input: append(append([]byte(nil), ssl...), "hello world!"...), ns: 1},
		{name: "endless negotiation", input: append(append(append([]byte(nil), ssl...), ssl...), ssl...), ns: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, done := refuseOn(t, refusal)
			if _, err := c.Write(tt.input); err != nil {
				t.Fatal(err)
			}
			if tt.closeWrite {
				c.(*net.TCPConn).CloseWrite()
			}
			if err := wait(t, done); err == nil {
				t.Error("RefuseStartup accepted garbage")
			}
			got, _ := io.ReadAll(c) // the server may reset after unread input
			if want := strings.Repeat("N", tt.ns); string(got) != want {
				t.Errorf("client read %q, want %q", got, want)
			}
		})
	}
}

func TestRefuseStartupWriteErrors(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go client.Write(startupPacket(80877103, nil))
	err := RefuseStartup(context.Background(), failingWriter{server}, refusal, nil)
	if err == nil || !errors.Is(err, errWrite) {
		t.Errorf("RefuseStartup = %v, want the write error", err)
	}
}

var errWrite = errors.New("write failed")

type failingWriter struct{ net.Conn }

func (failingWriter) Write(p []byte) (int, error) { return 0, errWrite }

// selfSigned is a TLS configuration with a throwaway certificate for
// 127.0.0.1, and a pool that trusts it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// A client that asks for TLS gets it, and reads the refusal over it.
func TestRefuseStartupOverTLS(t *testing.T) {
	cfg, pool := selfSigned(t)
	c, done := refuseWith(t, refusal, cfg)
	c.Write(startupPacket(80877103, nil))
	if b := readByte(t, c); b != 'S' {
		t.Fatalf("answer to SSLRequest = %q, want 'S'", b)
	}
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	startupRefused(t, tc, done, startup(), refusal)
}

// Bytes sent behind the SSLRequest are refused, not read as if the
// handshake protected them; so is a second SSLRequest inside TLS.
func TestNegotiateRefusesInjectedPlaintext(t *testing.T) {
	cfg, pool := selfSigned(t)
	c, done := refuseWith(t, refusal, cfg)
	c.Write(append(startupPacket(80877103, nil), startupPacket(196608, []byte("user\x00alice\x00\x00"))...))
	if err := wait(t, done); err == nil || !strings.Contains(err.Error(), "ahead of the TLS handshake") {
		t.Errorf("RefuseStartup = %v, want a refusal of the injected bytes", err)
	}
	if got, _ := io.ReadAll(c); len(got) != 0 {
		t.Errorf("client read %q, want nothing", got)
	}

	c, done = refuseWith(t, refusal, cfg)
	c.Write(startupPacket(80877103, nil))
	readByte(t, c)
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	tc.Write(startupPacket(80877103, nil))
	if err := wait(t, done); err == nil || !strings.Contains(err.Error(), "inside TLS") {
		t.Errorf("RefuseStartup = %v, want a refusal of SSLRequest inside TLS", err)
	}
}
