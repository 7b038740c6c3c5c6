package postgres

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
	pgwire "github.com/wardenhq/warden/pkg/protocol/postgres"
)

// The server's key for the session, which the client must never see.
var (
	serverPID    uint32 = 4242
	serverSecret        = []byte{0xde, 0xad, 0xbe, 0xef}
)

func TestStartup(t *testing.T) {
	tests := []struct {
		name      string
		clientApp string // "" sends no application_name
		template  string // credentials.application_name; "" for none
		wantApp   string
	}{
		{"client name kept, person added", "report-job", "", "report-job [warden:alice]"},
		{"no client name", "", "", "[warden:alice]"},
		{"client cannot pass for another person", "x [warden:bob]", "", "x (warden:bob) [warden:alice]"},
		{"template without the client", "report-job", "{email} via warden", "alice@corp.example via warden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{}
			rec := &fakeRecorder{clock: clk}
			tp := policy.Target{}
			if tt.template != "" {
				tp.Credentials = &policy.Credentials{Username: "app", PasswordFile: writeSecret(t, "pw"), ApplicationName: tt.template}
			}
			att := attribution("alice", testPolicy(nil, nil), tp)
			var got *pgproto3.StartupMessage
			ss := serveSession(t, New(Options{}), att, rec, clk, func(s *fakeServer) error {
				var err error
				if got, err = s.trustLogin(serverPID, serverSecret); err != nil {
					return err
				}
				return s.drain()
			})
			params := map[string]string{"user": "alice_db", "database": "orders", "DateStyle": "ISO"}
			if tt.clientApp != "" {
				params["application_name"] = tt.clientApp
			}
			ss.startup(params)
			msgs := ss.untilReady()
			ss.endOK()

			if got == nil {
				t.Fatal("the server got no StartupMessage")
			}
			if app := got.Parameters["application_name"]; app != tt.wantApp {
				t.Errorf("server's application_name = %q, want %q", app, tt.wantApp)
			}
			wantUser := "alice_db"
			if tp.Credentials != nil {
				wantUser = "app"
			}
			if got.Parameters["user"] != wantUser || got.Parameters["database"] != "orders" || got.Parameters["DateStyle"] != "ISO" {
				t.Errorf("server's startup parameters %v: want user %s and the client's other parameters", got.Parameters, wantUser)
			}

			// What a server says at login reaches the client, in order,
			// with the backend's key swapped for Warden's.
			var types []string
			for _, m := range msgs {
				types = append(types, fmt.Sprintf("%T", m))
			}
			want := []string{"*pgproto3.AuthenticationOk", "*pgproto3.ParameterStatus", "*pgproto3.ParameterStatus",
				"*pgproto3.ParameterStatus", "*pgproto3.BackendKeyData", "*pgproto3.ReadyForQuery"}
			if !slices.Equal(types, want) {
				t.Fatalf("client got %v, want %v", types, want)
			}
			if ps := find[*pgproto3.ParameterStatus](msgs); ps[0].Name != "server_version" || ps[0].Value != "15.8" {
				t.Errorf("first ParameterStatus %+v", ps[0])
			}
			key := find[*pgproto3.BackendKeyData](msgs)[0]
			if key.ProcessID != serverPID {
				t.Errorf("client's backend pid = %d, want the server's %d", key.ProcessID, serverPID)
			}
			if bytes.Equal(key.SecretKey, serverSecret) || len(key.SecretKey) < 4 {
				t.Errorf("client's secret %x: want one of Warden's, not the server's %x", key.SecretKey, serverSecret)
			}
		})
	}
}

// Two sessions with the same backend pid (two servers) get different
// secrets, so each key names one session.
func TestStartupKeysAreDistinct(t *testing.T) {
	clk := &clock{}
	rec := &fakeRecorder{clock: clk}
	codec := New(Options{})
	var keys []*pgproto3.BackendKeyData
	for range 2 {
		ss := serveSession(t, codec, attribution("alice", testPolicy(nil, nil), policy.Target{}), rec, clk, func(s *fakeServer) error {
			if _, err := s.trustLogin(serverPID, serverSecret); err != nil {
				return err
			}
			return s.drain()
		})
		ss.startup(map[string]string{"user": "u"})
		keys = append(keys, find[*pgproto3.BackendKeyData](ss.untilReady())...)
		defer ss.endOK()
	}
	if len(keys) != 2 || keys[0].ProcessID != serverPID || keys[1].ProcessID != serverPID {
		t.Fatalf("keys %+v", keys)
	}
	if bytes.Equal(keys[0].SecretKey, keys[1].SecretKey) {
		t.Errorf("both sessions got secret %x", keys[0].SecretKey)
	}
}

func writeSecret(t *testing.T, password string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// md5Answer is what a server expects for an md5 challenge, computed here
// independently of the codec's code: "md5" + md5(hex(md5(password+user)) + salt).
func md5Answer(user, password string, salt [4]byte) string {
	inner := md5.Sum([]byte(password + user))
	outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), salt[:]...))
	return "md5" + hex.EncodeToString(outer[:])
}

// scramServer is the server side of SCRAM-SHA-256 (RFC 5802, RFC 7677)
// for one password, as PostgreSQL runs it.
type scramServer struct {
	password string
	salt     []byte
	iter     int
	// badSignature makes the server answer with a signature that does
	// not prove it knows the password.
	badSignature bool
}

// run performs the exchange after the server's AuthenticationSASL offer
// and reports whether the client's proof was valid. It returns an error
// only for a broken exchange.
func (sc scramServer) run(s *fakeServer) (valid bool, err error) {
	s.be.SetAuthType(pgproto3.AuthTypeSASL)
	first, _, err := expect[*pgproto3.SASLInitialResponse](s)
	if err != nil {
		return false, err
	}
	if first.AuthMechanism != "SCRAM-SHA-256" {
		return false, fmt.Errorf("server: client chose %q", first.AuthMechanism)
	}
	gs2, clientFirstBare, ok := strings.Cut(string(first.Data), ",,")
	if !ok || gs2 != "n" {
		// "n": no channel binding, which is right on a connection the
		// client believes is not TLS.
		return false, fmt.Errorf("server: client-first message %q", first.Data)
	}
	clientNonce := scramAttr(clientFirstBare, "r")
	if clientNonce == "" {
		return false, fmt.Errorf("server: client-first message %q has no nonce", first.Data)
	}
	serverFirst := fmt.Sprintf("r=%sSERVERNONCE,s=%s,i=%d", clientNonce, base64.StdEncoding.EncodeToString(sc.salt), sc.iter)
	if err := s.send(&pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)}); err != nil {
		return false, err
	}
	s.be.SetAuthType(pgproto3.AuthTypeSASLContinue)
	final, _, err := expect[*pgproto3.SASLResponse](s)
	if err != nil {
		return false, err
	}
	withoutProof, proofB64, ok := strings.Cut(string(final.Data), ",p=")
	if !ok || withoutProof != "c=biws,r="+clientNonce+"SERVERNONCE" {
		return false, fmt.Errorf("server: client-final message %q", final.Data)
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil {
		return false, fmt.Errorf("server: proof: %w", err)
	}
	salted, err := pbkdf2.Key(sha256.New, sc.password, sc.salt, sc.iter, sha256.Size)
	if err != nil {
		return false, err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	authMessage := clientFirstBare + "," + serverFirst + "," + withoutProof
	storedKey := sha256.Sum256(mac(salted, "Client Key"))
	clientSig := mac(storedKey[:], authMessage)
	if len(proof) != len(clientSig) {
		return false, nil
	}
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ clientSig[i]
	}
	if sum := sha256.Sum256(clientKey); sum != storedKey {
		return false, s.send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "app"`})
	}
	sig := mac(mac(salted, "Server Key"), authMessage)
	if sc.badSignature {
		sig[0] ^= 1
	}
	return true, s.send(&pgproto3.AuthenticationSASLFinal{Data: []byte("v=" + base64.StdEncoding.EncodeToString(sig))})
}

func scramAttr(msg, name string) string {
	for _, kv := range strings.Split(msg, ",") {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// With credentials, Warden answers the server's challenge itself: the
// client never sees one, and the server gets the vaulted password's proof.
func TestAuthInjection(t *testing.T) {
	const password = "vaulted-app-secret"
	salt := [4]byte{0x01, 0x02, 0x03, 0x04}
	tests := []struct {
		name string
		// auth runs the server's side; ok reports whether the client
		// proved the password.
		auth func(s *fakeServer) (ok bool, err error)
		// wantFatal, if set, is the client's error: the login fails.
		wantFatal string
	}{
		{"md5", func(s *fakeServer) (bool, error) {
			if err := s.send(&pgproto3.AuthenticationMD5Password{Salt: salt}); err != nil {
				return false, err
			}
			s.be.SetAuthType(pgproto3.AuthTypeMD5Password)
			pm, _, err := expect[*pgproto3.PasswordMessage](s)
			if err != nil {
				return false, err
			}
			if pm.Password != md5Answer("app", password, salt) {
				return false, fmt.Errorf("server: md5 answer %q, want %q", pm.Password, md5Answer("app", password, salt))
			}
			return true, s.send(&pgproto3.AuthenticationOk{})
		}, ""},
		{"cleartext", func(s *fakeServer) (bool, error) {
			if err := s.send(&pgproto3.AuthenticationCleartextPassword{}); err != nil {
				return false, err
			}
			s.be.SetAuthType(pgproto3.AuthTypeCleartextPassword)
			pm, _, err := expect[*pgproto3.PasswordMessage](s)
			if err != nil {
				return false, err
			}
			if pm.Password != password {
				return false, fmt.Errorf("server: cleartext password %q", pm.Password)
			}
			return true, s.send(&pgproto3.AuthenticationOk{})
		}, ""},
		{"scram-sha-256", func(s *fakeServer) (bool, error) {
			if err := s.send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}}); err != nil {
				return false, err
			}
			ok, err := scramServer{password: password, salt: []byte("salt-of-sixteen!"), iter: 4096}.run(s)
			if err != nil || !ok {
				return ok, err
			}
			return true, s.send(&pgproto3.AuthenticationOk{})
		}, ""},
		{"scram server cannot prove the password", func(s *fakeServer) (bool, error) {
			if err := s.send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}); err != nil {
				return false, err
			}
			return scramServer{password: password, salt: []byte("salt-of-sixteen!"), iter: 4096, badSignature: true}.run(s)
		}, "could not prove it knows the credential"},
		{"server refuses the login", func(s *fakeServer) (bool, error) {
			return false, s.send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "app"`})
		}, "login to target orders-db with the vaulted credential failed (28P01)"},
		{"unsupported method", func(s *fakeServer) (bool, error) {
			return false, s.send(&pgproto3.AuthenticationGSS{})
		}, "authentication method 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{}
			rec := &fakeRecorder{clock: clk}
			tp := policy.Target{Credentials: &policy.Credentials{Username: "app", PasswordFile: writeSecret(t, password)}}
			att := attribution("alice", testPolicy(nil, nil), tp)
			var (
				startup *pgproto3.StartupMessage
				proved  bool
			)
			ss := serveSession(t, New(Options{}), att, rec, clk, func(s *fakeServer) error {
				var err error
				if startup, err = s.startup(); err != nil {
					return err
				}
				if proved, err = tt.auth(s); err != nil || tt.wantFatal != "" {
					return err
				}
				if err := s.ready(serverPID, serverSecret); err != nil {
					return err
				}
				return s.drain()
			})
			ss.startup(map[string]string{"user": "whoever", "database": "orders"})
			if tt.wantFatal != "" {
				e, ok := ss.receive().(*pgproto3.ErrorResponse)
				if !ok || e.Severity != "FATAL" || !strings.Contains(e.Message, tt.wantFatal) {
					t.Fatalf("client got %+v, want a FATAL error containing %q", e, tt.wantFatal)
				}
				if strings.Contains(e.Message, `"app"`) || strings.Contains(e.Message, password) {
					t.Errorf("the error names the vaulted account: %q", e.Message)
				}
				if served, script := ss.wait(); served == nil || script != nil {
					t.Errorf("Serve = %v (want an error), server script = %v", served, script)
				}
				return
			}
			msgs := ss.untilReady()
			ss.endOK()
			if !proved {
				t.Fatal("the server did not get a valid proof of the password")
			}
			if startup.Parameters["user"] != "app" {
				t.Errorf("server's user = %q, want the vaulted app", startup.Parameters["user"])
			}
			if _, ok := msgs[0].(*pgproto3.AuthenticationOk); !ok {
				t.Errorf("client's first message %T, want AuthenticationOk", msgs[0])
			}
			for _, m := range msgs {
				switch m.(type) {
				case *pgproto3.AuthenticationMD5Password, *pgproto3.AuthenticationCleartextPassword,
					*pgproto3.AuthenticationSASL, *pgproto3.AuthenticationSASLContinue, *pgproto3.AuthenticationSASLFinal:
					t.Errorf("client saw the server's challenge %T", m)
				}
			}
			if n := len(find[*pgproto3.AuthenticationOk](msgs)); n != 1 {
				t.Errorf("client got %d AuthenticationOk", n)
			}
		})
	}
}

// Without credentials the client logs in itself, through the codec, with
// SCRAM channel binding taken out of the offer.
func TestAuthPassthrough(t *testing.T) {
	clk := &clock{}
	rec := &fakeRecorder{clock: clk}
	att := attribution("alice", testPolicy(nil, nil), policy.Target{})
	type step struct {
		init  *pgproto3.SASLInitialResponse
		final *pgproto3.SASLResponse
	}
	var got step
	ss := serveSession(t, New(Options{}), att, rec, clk, func(s *fakeServer) error {
		sm, err := s.startup()
		if err != nil {
			return err
		}
		if sm.Parameters["user"] != "person" {
			return fmt.Errorf("server: user %q, want the client's", sm.Parameters["user"])
		}
		if err := s.send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}}); err != nil {
			return err
		}
		s.be.SetAuthType(pgproto3.AuthTypeSASL)
		if got.init, _, err = expect[*pgproto3.SASLInitialResponse](s); err != nil {
			return err
		}
		if err := s.send(&pgproto3.AuthenticationSASLContinue{Data: []byte("r=abcdef,s=c2FsdA==,i=4096")}); err != nil {
			return err
		}
		s.be.SetAuthType(pgproto3.AuthTypeSASLContinue)
		if got.final, _, err = expect[*pgproto3.SASLResponse](s); err != nil {
			return err
		}
		if err := s.send(&pgproto3.AuthenticationSASLFinal{Data: []byte("v=c2lnbmF0dXJl")}, &pgproto3.AuthenticationOk{}); err != nil {
			return err
		}
		if err := s.ready(serverPID, serverSecret); err != nil {
			return err
		}
		return s.drain()
	})
	ss.startup(map[string]string{"user": "person", "database": "orders"})
	offer, ok := ss.receive().(*pgproto3.AuthenticationSASL)
	if !ok || !slices.Equal(offer.AuthMechanisms, []string{"SCRAM-SHA-256"}) {
		t.Fatalf("client's offer %+v, want SCRAM-SHA-256 alone", offer)
	}
	ss.send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abc")})
	cont, ok := ss.receive().(*pgproto3.AuthenticationSASLContinue)
	if !ok || string(cont.Data) != "r=abcdef,s=c2FsdA==,i=4096" {
		t.Fatalf("client got %+v, want the server-first message unchanged", cont)
	}
	ss.send(&pgproto3.SASLResponse{Data: []byte("c=biws,r=abcdef,p=cHJvb2Y=")})
	msgs := ss.untilReady()
	ss.endOK()
	if got.init == nil || string(got.init.Data) != "n,,n=,r=abc" || got.init.AuthMechanism != "SCRAM-SHA-256" {
		t.Errorf("server's SASLInitialResponse %+v", got.init)
	}
	if got.final == nil || string(got.final.Data) != "c=biws,r=abcdef,p=cHJvb2Y=" {
		t.Errorf("server's SASLResponse %+v", got.final)
	}
	if f := find[*pgproto3.AuthenticationSASLFinal](msgs); len(f) != 1 || string(f[0].Data) != "v=c2lnbmF0dXJl" {
		t.Errorf("client's SASLFinal %+v", f)
	}
	if len(find[*pgproto3.AuthenticationOk](msgs)) != 1 || len(find[*pgproto3.BackendKeyData](msgs)) != 1 {
		t.Errorf("client's login messages %T", msgs)
	}
}

// A server that offers only channel binding cannot be logged in to
// through the proxy: the client is told why instead of failing later.
func TestAuthPassthroughOnlyChannelBinding(t *testing.T) {
	clk := &clock{}
	rec := &fakeRecorder{clock: clk}
	ss := serveSession(t, New(Options{}), attribution("alice", testPolicy(nil, nil), policy.Target{}), rec, clk, func(s *fakeServer) error {
		if _, err := s.startup(); err != nil {
			return err
		}
		return s.send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256-PLUS"}})
	})
	ss.startup(map[string]string{"user": "person"})
	e, ok := ss.receive().(*pgproto3.ErrorResponse)
	if !ok || e.Severity != "FATAL" || e.Code != pgwire.CodeInvalidAuthorization || !strings.Contains(e.Message, "channel binding") {
		t.Fatalf("client got %+v, want FATAL 28000 about channel binding", e)
	}
	if served, _ := ss.wait(); served == nil {
		t.Error("Serve returned nil for a failed login")
	}
}

// Replication streams data past every check: refused before the server
// hears of it.
func TestReplicationRefused(t *testing.T) {
	clk := &clock{}
	rec := &fakeRecorder{clock: clk}
	var startups int
	ss := serveSession(t, New(Options{}), attribution("alice", testPolicy(nil, nil), policy.Target{}), rec, clk, func(s *fakeServer) error {
		if _, err := s.be.ReceiveStartupMessage(); err == nil {
			startups++
		}
		return nil
	})
	ss.startup(map[string]string{"user": "person", "replication": "database"})
	e, ok := ss.receive().(*pgproto3.ErrorResponse)
	if !ok || e.Severity != "FATAL" || e.Code != pgwire.CodeInsufficientPrivilege || !strings.Contains(e.Message, "replication") {
		t.Fatalf("client got %+v, want FATAL 42501 about replication", e)
	}
	ss.wait()
	if startups != 0 {
		t.Error("the server got the replication startup")
	}
}

// sendCancel sends a CancelRequest as sub on a connection of its own and
// returns what the server behind that connection received, nil for nothing.
func sendCancel(t *testing.T, codec *Codec, sub string, pid uint32, secret []byte) (forwarded *pgproto3.CancelRequest) {
	t.Helper()
	clk := &clock{}
	rec := &fakeRecorder{clock: clk}
	ss := serveSession(t, codec, attribution(sub, testPolicy(nil, nil), policy.Target{}), rec, clk, func(s *fakeServer) error {
		m, err := s.be.ReceiveStartupMessage()
		if err != nil {
			return nil // nothing forwarded: the codec closed the connection
		}
		cr, ok := m.(*pgproto3.CancelRequest)
		if !ok {
			return fmt.Errorf("server: got %T on the cancel connection", m)
		}
		forwarded = &pgproto3.CancelRequest{ProcessID: cr.ProcessID, SecretKey: slices.Clone(cr.SecretKey)}
		return nil
	})
	ss.send(&pgproto3.CancelRequest{ProcessID: pid, SecretKey: secret})
	// Serve returns once it has forwarded the request or decided not
	// to; then the upstream connection is closed, and the server script
	// has read whatever was sent.
	served, script := ss.wait()
	if served != nil || script != nil {
		t.Fatalf("cancel: Serve = %v, server = %v", served, script)
	}
	return forwarded
}

func TestCancel(t *testing.T) {
	codec := New(Options{})
	clk := &clock{}
	rec := &fakeRecorder{clock: clk}
	ss := serveSession(t, codec, attribution("alice", testPolicy(nil, nil), policy.Target{}), rec, clk, func(s *fakeServer) error {
		if _, err := s.trustLogin(serverPID, serverSecret); err != nil {
			return err
		}
		return s.drain()
	})
	ss.startup(map[string]string{"user": "person"})
	key := find[*pgproto3.BackendKeyData](ss.untilReady())[0]

	t.Run("own key reaches the backend with its own secret", func(t *testing.T) {
		got := sendCancel(t, codec, "alice", key.ProcessID, key.SecretKey)
		if got == nil || got.ProcessID != serverPID || !bytes.Equal(got.SecretKey, serverSecret) {
			t.Fatalf("server got cancel %+v, want pid %d with secret %x", got, serverPID, serverSecret)
		}
	})
	t.Run("wrong secret is dropped", func(t *testing.T) {
		wrong := slices.Clone(key.SecretKey)
		wrong[0] ^= 0xff
		if got := sendCancel(t, codec, "alice", key.ProcessID, wrong); got != nil {
			t.Fatalf("server got cancel %+v", got)
		}
	})
	t.Run("the server's own secret is dropped", func(t *testing.T) {
		if got := sendCancel(t, codec, "alice", serverPID, serverSecret); got != nil {
			t.Fatalf("server got cancel %+v", got)
		}
	})
	t.Run("another person's cancel is dropped", func(t *testing.T) {
		if got := sendCancel(t, codec, "mallory", key.ProcessID, key.SecretKey); got != nil {
			t.Fatalf("server got cancel %+v", got)
		}
	})
	ss.endOK()
	t.Run("the key dies with its session", func(t *testing.T) {
		if got := sendCancel(t, codec, "alice", key.ProcessID, key.SecretKey); got != nil {
			t.Fatalf("server got cancel %+v after the session ended", got)
		}
	})
}

// A client that asks for TLS when the codec offers none is told 'N' and
// goes on in the clear; GSS encryption is always declined.
func TestNegotiateDeclined(t *testing.T) {
	clk := &clock{}
	rec := &fakeRecorder{clock: clk}
	ss := serveSession(t, New(Options{}), attribution("alice", testPolicy(nil, nil), policy.Target{}), rec, clk, func(s *fakeServer) error {
		if _, err := s.trustLogin(serverPID, serverSecret); err != nil {
			return err
		}
		return s.drain()
	})
	for _, req := range []pgproto3.FrontendMessage{&pgproto3.GSSEncRequest{}, &pgproto3.SSLRequest{}} {
		ss.send(req)
		var answer [1]byte
		if _, err := io.ReadFull(ss.conn, answer[:]); err != nil || answer[0] != 'N' {
			t.Fatalf("%T answered %q, %v; want 'N'", req, answer[0], err)
		}
	}
	ss.startup(map[string]string{"user": "person"})
	if _, ok := ss.untilReady()[0].(*pgproto3.AuthenticationOk); !ok {
		t.Error("login in the clear after the decline failed")
	}
	ss.endOK()
}

// ClientTLS is not offered where the client logs in itself to a server
// reached over TLS: its SCRAM would tell the server a downgrade happened.
func TestClientTLSOffer(t *testing.T) {
	cfg := &tls.Config{}
	var asked []netip.Addr
	codec := New(Options{ClientTLS: func(dst netip.Addr) *tls.Config {
		asked = append(asked, dst)
		return cfg
	}})
	tlsUp := policy.UpstreamTLS{Mode: policy.TLSVerifyFull}
	creds := &policy.Credentials{Username: "app", PasswordFile: "/nonexistent"}
	for _, tt := range []struct {
		name string
		tp   policy.Target
		want *tls.Config
	}{
		{"plain target", policy.Target{}, cfg},
		{"credentials over TLS", policy.Target{Credentials: &policy.Credentials{Username: "app", PasswordFile: "/x", TLS: tlsUp}}, cfg},
		{"credentials in the clear", policy.Target{Credentials: creds}, cfg},
		{"own login over TLS", policy.Target{TLS: tlsUp}, nil},
	} {
		att := attribution("alice", nil, tt.tp)
		att.Kernel.OrigDst = netip.MustParseAddrPort("10.0.0.5:5432")
		if got := codec.clientTLS(att); got != tt.want {
			t.Errorf("%s: clientTLS = %p, want %p", tt.name, got, tt.want)
		}
	}
	if len(asked) != 3 || asked[0] != netip.MustParseAddr("10.0.0.5") {
		t.Errorf("ClientTLS asked for %v", asked)
	}
	if got := New(Options{}).clientTLS(attribution("alice", nil, policy.Target{})); got != nil {
		t.Errorf("without ClientTLS: %v", got)
	}
}

func TestRefuse(t *testing.T) {
	const reason = `warden: alice may not reach target "orders-db"; ask for access`
	refuse := func(t *testing.T, client func(c net.Conn, fe *pgproto3.Frontend)) error {
		t.Helper()
		clientEnd, proxyEnd := net.Pipe()
		defer clientEnd.Close()
		clientEnd.SetDeadline(time.Now().Add(hang))
		att := attribution("alice", nil, policy.Target{})
		att.Decision = event.Decision{Action: event.Deny, Rule: "access", Reason: reason}
		done := make(chan error, 1)
		go func() {
			err := New(Options{}).Refuse(context.Background(), proxyEnd, att)
			proxyEnd.Close()
			done <- err
		}()
		client(clientEnd, pgproto3.NewFrontend(clientEnd, clientEnd))
		return waitFor(t, done)
	}
	wantFatal := func(t *testing.T, fe *pgproto3.Frontend) {
		t.Helper()
		m, err := fe.Receive()
		e, ok := m.(*pgproto3.ErrorResponse)
		if err != nil || !ok || e.Severity != "FATAL" || e.Code != pgwire.CodeInvalidAuthorization || e.Message != reason {
			t.Fatalf("client got %+v, %v; want FATAL 28000 %q", m, err, reason)
		}
	}
	startup := func(fe *pgproto3.Frontend) {
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "x"}})
		fe.Flush()
	}

	t.Run("startup", func(t *testing.T) {
		if err := refuse(t, func(c net.Conn, fe *pgproto3.Frontend) {
			startup(fe)
			wantFatal(t, fe)
		}); err != nil {
			t.Errorf("Refuse: %v", err)
		}
	})
	t.Run("TLS declined, then the reason in the clear", func(t *testing.T) {
		refuse(t, func(c net.Conn, fe *pgproto3.Frontend) {
			fe.Send(&pgproto3.SSLRequest{})
			fe.Flush()
			var answer [1]byte
			if _, err := io.ReadFull(c, answer[:]); err != nil || answer[0] != 'N' {
				t.Fatalf("SSLRequest answered %q, %v", answer[0], err)
			}
			startup(fe)
			wantFatal(t, fe)
		})
	})
	t.Run("cancel gets nothing", func(t *testing.T) {
		refuse(t, func(c net.Conn, fe *pgproto3.Frontend) {
			fe.Send(&pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}})
			fe.Flush()
			var b [1]byte
			if n, err := c.Read(b[:]); n != 0 || err == nil {
				t.Fatalf("cancel answered %q", b[:n])
			}
		})
	})
}
