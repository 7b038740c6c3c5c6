package mysql

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
	wire "github.com/wardenhq/warden/pkg/protocol/mysql"
)

const vaulted = "vaulted-secret"

// withCreds is a target entry with injected credentials read from a file.
func withCreds(t *testing.T) policy.Target {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(vaulted+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return policy.Target{Credentials: &policy.Credentials{Username: "app", PasswordFile: path}}
}

func mustScramble(t *testing.T) []byte {
	s, err := scramble()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCachingSHA2FastAndFullAuth(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprintf("full=%v", full), func(t *testing.T) {
			rec := &fakeRecorder{}
			sc := mustScramble(t)
			r := serve(t, New(Options{}), attribution("alice", testPolicy(nil, nil), withCreds(t)), rec, func(s *fakeServer) error {
				resp, err := s.handshake(wire.PluginCachingSHA2, sc)
				if err != nil {
					return err
				}
				if resp.User != "app" || resp.AuthPlugin != wire.PluginCachingSHA2 || resp.Database != "shop" {
					return fmt.Errorf("server: login %+v", resp)
				}
				if resp.Capabilities&(wire.ClientLocalFiles|wire.ClientCompress) != 0 {
					return errors.New("server: LOCAL INFILE or compression forwarded")
				}
				if !bytes.Equal(resp.AuthResponse, wire.CachingSHA2Password(sc, vaulted)) {
					return errors.New("server: wrong fast-auth answer")
				}
				warden := ""
				for _, a := range resp.Attrs {
					if a.Key == "warden" {
						warden = a.Value
					}
				}
				if !strings.Contains(warden, "alice") {
					return fmt.Errorf("server: person not in the connection attributes: %q", warden)
				}
				if !full {
					if err := s.send([]byte{wire.HeaderAuthMore, wire.SHA2FastAuthOK}); err != nil {
						return err
					}
				} else {
					if err := s.send([]byte{wire.HeaderAuthMore, wire.SHA2FullAuth}); err != nil {
						return err
					}
					seq, p, err := s.r.Next()
					if err != nil || !bytes.Equal(p, []byte{wire.SHA2RequestPublicKey}) {
						return fmt.Errorf("server: want a public key request, got %q %v", p, err)
					}
					s.w.Seq = seq + 1
					if err := s.send(append([]byte{wire.HeaderAuthMore}, pubPEM...)); err != nil {
						return err
					}
					seq, ct, err := s.r.Next()
					if err != nil {
						return err
					}
					s.w.Seq = seq + 1
					plain, err := rsa.DecryptOAEP(sha1.New(), nil, key, ct, nil)
					if err != nil {
						return fmt.Errorf("server: decrypt: %w", err)
					}
					for i := range plain {
						plain[i] ^= sc[i%len(sc)]
					}
					if string(plain) != vaulted+"\x00" {
						return errors.New("server: wrong password in full auth")
					}
				}
				if err := s.ok(); err != nil {
					return err
				}
				if err := s.lexing(); err != nil {
					return err
				}
				return s.quit()
			})
			hs, reply := r.c.login("whoever", "shop")
			if hs.AuthPlugin != wire.PluginNative || hs.ConnectionID != 42 {
				t.Fatalf("greeting %+v", hs)
			}
			if hs.Capabilities&wire.ClientCompress != 0 {
				t.Fatal("compression offered to the client")
			}
			if len(reply) == 0 || reply[0] != wire.HeaderOK {
				t.Fatalf("login reply %q", reply)
			}
			r.end()
		})
	}
}

func TestInjectedLoginFailureHidesAccount(t *testing.T) {
	r := serve(t, New(Options{}), attribution("alice", testPolicy(nil, nil), withCreds(t)), &fakeRecorder{}, func(s *fakeServer) error {
		if _, err := s.handshake(wire.PluginNative, mustScramble(t)); err != nil {
			return err
		}
		return s.send((&wire.ERR{Code: 1045, State: "28000", Message: "Access denied for user 'app'@'10.1.1.1'"}).Encode())
	})
	_, reply := r.c.login("whoever", "")
	e, err := wire.ParseERR(reply, clientCaps)
	if err != nil {
		t.Fatalf("reply %q: %v", reply, err)
	}
	if !strings.Contains(e.Message, "vaulted credential failed (error 1045)") || strings.Contains(e.Message, "app") {
		t.Fatalf("message %q", e.Message)
	}
}

// loggedIn is a server script prefix: a native-password login, then
// Warden's question about the session.
func loggedIn(s *fakeServer) error {
	if _, err := s.handshake(wire.PluginNative, []byte("abcdefghijklmnopqrst")); err != nil {
		return err
	}
	if err := s.ok(); err != nil {
		return err
	}
	return s.lexing()
}

func TestDeniedTextsNeverReachTheServer(t *testing.T) {
	rec := &fakeRecorder{}
	p := testPolicy([]policy.Rule{{Name: "no-ddl", When: policy.Match{Statements: []string{"drop"}}, Action: policy.Deny}}, nil)
	r := serve(t, New(Options{}), attribution("alice", p, withCreds(t)), rec, func(s *fakeServer) error {
		if err := loggedIn(s); err != nil {
			return err
		}
		return s.quit() // anything else arriving fails the script
	})
	r.c.login("whoever", "shop")
	for _, tc := range []struct{ sql, want string }{
		{"select 1; drop table t", `warden: DROP denied by rule "no-ddl"`},
		{"/*!50000 DROP TABLE t */", `warden: DROP denied by rule "no-ddl"`},
		{"select 1 --; drop table t", "statement refused: the MySQL grammar"},
		{"load data local infile '/etc/passwd' into table t", `denied by rule "local-infile"`},
		{"prepare s from @q", `denied by rule "prepare"`},
		{"kill query 99", "was not opened through Warden"},
	} {
		e := errOf(t, r.c.command(query(tc.sql)))
		if e == nil || !strings.Contains(e.Message, tc.want) {
			t.Fatalf("%q: %+v, want %q", tc.sql, e, tc.want)
		}
	}
	// A statement never prepared through Warden (its PREPARE was
	// refused) is never executed, and the execution is not forwarded
	// unrecorded.
	if e := errOf(t, r.c.command([]byte{wire.ComStmtExecute, 99, 0, 0, 0, 0, 1, 0, 0, 0})); e == nil || e.Code != erUnknownStmt {
		t.Fatalf("execute of an unknown statement: %+v", e)
	}
	for _, cmd := range []byte{wire.ComChangeUser, wire.ComBinlogDump, wire.ComShutdown, 0x77} {
		if e := errOf(t, r.c.command([]byte{cmd, 0, 0, 0, 0})); e == nil {
			t.Fatalf("%s not refused", wire.CommandName(cmd))
		}
	}
	r.end()
	qs := rec.ofType(event.DBQuery)
	if len(qs) < 2 || qs[0].Decision.Action != event.Deny || qs[0].Decision.Rule != "no-ddl" {
		t.Fatalf("events %+v", qs)
	}
	// Both statements of the refused text are recorded, the SELECT too.
	if qs[0].Data["kind"] != "select" || qs[1].Data["kind"] != "drop" || qs[0].Identity.Sub != "alice" {
		t.Fatalf("records %v / %v", qs[0].Data, qs[1].Data)
	}
}

func TestMaskingTextAndBinaryRows(t *testing.T) {
	rec := &fakeRecorder{}
	p := testPolicy(nil, []policy.Masking{{Name: "pii", Columns: []string{"ssn"}, Detectors: []string{"email"}}})
	emailCol := &wire.Column{Table: "c", OrgTable: "customers", Name: "email", OrgName: "email", Type: wire.TypeVarString, Charset: 45}
	aliasCol := &wire.Column{Table: "c", OrgTable: "customers", Name: "x", OrgName: "ssn", Type: wire.TypeVarString, Charset: 45}
	idCol := &wire.Column{Table: "c", OrgTable: "customers", Name: "id", OrgName: "id", Type: wire.TypeLong}
	exprCol := &wire.Column{Name: "n", Type: wire.TypeLongLong}
	r := serve(t, New(Options{}), attribution("alice", p, withCreds(t)), rec, func(s *fakeServer) error {
		if err := loggedIn(s); err != nil {
			return err
		}
		if err := s.expectQuery("select email, ssn as x, id from customers"); err != nil {
			return err
		}
		if err := s.resultSet([]*wire.Column{emailCol, aliasCol, idCol}, [][][]byte{{[]byte("mail carol@example.org"), []byte("078-05-1120"), []byte("1")}}, false); err != nil {
			return err
		}
		// Prepared: checked at PREPARE, rows in the binary format.
		pk, err := s.command()
		if err != nil || pk[0] != wire.ComStmtPrepare {
			return fmt.Errorf("server: want COM_STMT_PREPARE, got %q %v", pk, err)
		}
		pok := []byte{0, 7, 0, 0, 0, 3, 0, 1, 0, 0, 0, 0}
		param := (&wire.Column{Name: "?", Type: wire.TypeLongLong}).Encode()
		if err := s.send(pok, param, wire.EOF(0, 2), aliasCol.Encode(), idCol.Encode(), exprCol.Encode(), wire.EOF(0, 2)); err != nil {
			return err
		}
		ex, err := s.command()
		if err != nil || ex[0] != wire.ComStmtExecute || binary.LittleEndian.Uint32(ex[1:]) != 7 {
			return fmt.Errorf("server: want COM_STMT_EXECUTE 7, got %q %v", ex, err)
		}
		n := binary.LittleEndian.AppendUint64(nil, 2)
		if err := s.resultSet([]*wire.Column{aliasCol, idCol, exprCol}, [][][]byte{{[]byte("078-05-1120"), {1, 0, 0, 0}, n}}, true); err != nil {
			return err
		}
		return s.quit()
	})
	r.c.login("whoever", "shop")
	resp := r.c.command(query("select email, ssn as x, id from customers"))
	row, err := wire.DecodeTextRow(resp[5], 3)
	if err != nil {
		t.Fatalf("%q: %v", resp, err)
	}
	if string(row[0]) != "mail [masked:email]" || string(row[1]) != "****" || string(row[2]) != "1" {
		t.Fatalf("text row %q", row)
	}
	prep := r.c.command(append([]byte{wire.ComStmtPrepare}, "select ssn as x, id, id * 2 as n from customers where id = ?"...))
	if len(prep) != 1 {
		t.Fatalf("prepare reply %q", prep)
	}
	for i := 0; i < 6; i++ { // param, EOF, three columns, EOF
		if _, err := r.c.next(); err != nil {
			t.Fatal(err)
		}
	}
	exec := append([]byte{wire.ComStmtExecute, 7, 0, 0, 0, 0, 1, 0, 0, 0}, 0, 1, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0)
	resp = r.c.command(exec)
	cols := []*wire.Column{aliasCol, idCol, exprCol}
	brow, err := wire.DecodeBinaryRow(resp[5], cols)
	if err != nil {
		t.Fatalf("%q: %v", resp, err)
	}
	if string(brow[0]) != "****" || !bytes.Equal(brow[1], []byte{1, 0, 0, 0}) || binary.LittleEndian.Uint64(brow[2]) != 2 {
		t.Fatalf("binary row %q", brow)
	}
	r.end()
	results := rec.ofType(event.DBResult)
	if len(results) != 2 || fmt.Sprint(results[0].Data["masked_columns"]) != "[email x]" || fmt.Sprint(results[1].Data["masked_columns"]) != "[x]" {
		t.Fatalf("results %+v", results)
	}
	qs := rec.ofType(event.DBQuery)
	if len(qs) != 2 || qs[1].Data["protocol"] != "prepared" || strings.Contains(fmt.Sprint(qs), "078-05") {
		t.Fatalf("queries %+v", qs)
	}
}

func TestKillOnlyOwnConnections(t *testing.T) {
	codec := New(Options{})
	// alice's session, connection 42, stays open.
	a := serve(t, codec, attribution("alice", testPolicy(nil, nil), withCreds(t)), &fakeRecorder{}, func(s *fakeServer) error {
		if err := loggedIn(s); err != nil {
			return err
		}
		return s.quit()
	})
	a.c.login("whoever", "")
	// bob, through the same shared account, may not end it.
	b := serve(t, codec, attribution("bob", testPolicy(nil, nil), withCreds(t)), &fakeRecorder{}, func(s *fakeServer) error {
		s.connID = 43
		if err := loggedIn(s); err != nil {
			return err
		}
		return s.quit()
	})
	b.c.login("whoever", "")
	if e := errOf(t, b.c.command(query("KILL QUERY 42"))); e == nil || !strings.Contains(e.Message, "belongs to someone else") {
		t.Fatalf("bob's KILL: %+v", e)
	}
	if e := errOf(t, b.c.command([]byte{wire.ComProcessKill, 42, 0, 0, 0})); e == nil {
		t.Fatal("bob's COM_PROCESS_KILL went through")
	}
	b.end()
	// alice's second connection (Ctrl-C in her client) may.
	c := serve(t, codec, attribution("alice", testPolicy(nil, nil), withCreds(t)), &fakeRecorder{}, func(s *fakeServer) error {
		s.connID = 44
		if err := loggedIn(s); err != nil {
			return err
		}
		if err := s.expectQuery("KILL QUERY 42"); err != nil {
			return err
		}
		if err := s.ok(); err != nil {
			return err
		}
		return s.quit()
	})
	c.c.login("whoever", "")
	if e := errOf(t, c.c.command(query("KILL QUERY 42"))); e != nil {
		t.Fatalf("alice's KILL refused: %+v", e)
	}
	c.end()
	a.end()
}

func TestUnrecordableStatementRefused(t *testing.T) {
	rec := &fakeRecorder{}
	r := serve(t, New(Options{}), attribution("alice", testPolicy(nil, nil), withCreds(t)), rec, func(s *fakeServer) error {
		if err := loggedIn(s); err != nil {
			return err
		}
		return s.quit()
	})
	r.c.login("whoever", "")
	rec.mu.Lock()
	rec.fail = spool.ErrFull
	rec.mu.Unlock()
	e := errOf(t, r.c.command(query("select 1")))
	if e == nil || !strings.Contains(e.Message, "audit log cannot record this statement (spool full)") {
		t.Fatalf("%+v", e)
	}
	r.end()
}

// reviewer answers every review with one result.
type reviewer struct{ res guard.ReviewResult }

func (r reviewer) Review(ctx context.Context, req guard.ReviewRequest) guard.ReviewResult {
	return r.res
}

// Review rules are decided at once, without holding the client: an
// approval lets the statement run, anything else refuses it with the
// review's id.
func TestReviewWithoutHold(t *testing.T) {
	p := testPolicy([]policy.Rule{{Name: "grants", When: policy.Match{Statements: []string{"grant"}}, Action: policy.Review,
		Review: &policy.ReviewSpec{Approvers: []string{"security"}}}}, nil)
	for _, tc := range []struct {
		name string
		res  guard.ReviewResult
		want string
	}{
		{"pending", guard.ReviewResult{Outcome: guard.ReviewPending, ID: "R-7"}, `warden: GRANT requires review R-7 (rule "grants"); re-run it once the review is approved`},
		{"denied", guard.ReviewResult{Outcome: guard.ReviewDenied, ID: "R-7", By: "sec@corp.example", Reason: "no"}, "warden: review R-7 denied by sec@corp.example: no"},
		{"unavailable", guard.ReviewResult{Outcome: guard.ReviewUnavailable}, "review service is unreachable"},
		{"approved", guard.ReviewResult{Outcome: guard.ReviewApproved, ID: "R-7"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := serveReviewed(t, New(Options{}), attribution("alice", p, withCreds(t)), &fakeRecorder{}, reviewer{tc.res}, func(s *fakeServer) error {
				if err := loggedIn(s); err != nil {
					return err
				}
				if tc.want == "" {
					if err := s.expectQuery("grant select on t to bob"); err != nil {
						return err
					}
					if err := s.ok(); err != nil {
						return err
					}
				}
				return s.quit()
			})
			r.c.login("whoever", "")
			e := errOf(t, r.c.command(query("grant select on t to bob")))
			switch {
			case tc.want == "" && e != nil:
				t.Fatalf("approved statement refused: %+v", e)
			case tc.want != "" && (e == nil || !strings.Contains(e.Message, tc.want)):
				t.Fatalf("%+v, want %q", e, tc.want)
			}
			r.end()
		})
	}
}

func TestAgentClosesIdleSession(t *testing.T) {
	codec := New(Options{})
	// The close may find the command loop finishing the ping, and try a
	// KILL: no server to reach.
	codec.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, errors.New("no server here")
	}
	r := serve(t, codec, attribution("alice", testPolicy(nil, nil), withCreds(t)), &fakeRecorder{}, func(s *fakeServer) error {
		if err := loggedIn(s); err != nil {
			return err
		}
		if p, err := s.command(); err != nil || p[0] != wire.ComPing {
			return fmt.Errorf("server: want COM_PING, got %q %v", p, err)
		}
		if err := s.ok(); err != nil {
			return err
		}
		_, err := s.next() // the connection just closes
		if err == nil {
			return errors.New("server: got a command after the close")
		}
		return nil
	})
	r.c.login("whoever", "")
	// A command answered means the command loop runs; End waits for the
	// codec's words.
	if e := errOf(t, r.c.command([]byte{wire.ComPing})); e != nil {
		t.Fatal(e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	go r.stream.End(ctx, "warden: your session expired")
	p, err := r.c.next()
	if err != nil {
		t.Fatal(err)
	}
	e, err := wire.ParseERR(p, clientCaps)
	if err != nil || e.Code != erServerShutdown || e.Message != "warden: your session expired" {
		t.Fatalf("closing words %q %v", p, err)
	}
}

func TestAgentClosesRunningStatement(t *testing.T) {
	running := make(chan struct{})
	codec := New(Options{})
	// The KILL goes on a connection of its own, logged in with the
	// vaulted credential.
	killed := make(chan error, 1)
	codec.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != "10.0.0.7:3306" {
			return nil, fmt.Errorf("KILL dialled %s", addr)
		}
		proxyEnd, serverEnd := net.Pipe()
		serverEnd.SetDeadline(time.Now().Add(hang))
		go func() {
			defer serverEnd.Close()
			s := &fakeServer{peer: newPeer(serverEnd), connID: 77}
			sc := []byte("abcdefghijklmnopqrst")
			resp, err := s.handshake(wire.PluginNative, sc)
			if err == nil && (resp.User != "app" || !bytes.Equal(resp.AuthResponse, wire.NativePassword(sc, vaulted))) {
				err = fmt.Errorf("KILL connection: login %+v", resp)
			}
			if err == nil {
				err = s.ok()
			}
			if err == nil {
				err = s.expectQuery("KILL QUERY 42")
			}
			if err == nil {
				err = s.ok()
			}
			killed <- err
		}()
		return proxyEnd, nil
	}
	r := serve(t, codec, attribution("alice", testPolicy(nil, nil), withCreds(t)), &fakeRecorder{}, func(s *fakeServer) error {
		if err := loggedIn(s); err != nil {
			return err
		}
		if err := s.expectQuery("select sleep(30)"); err != nil {
			return err
		}
		close(running)
		if _, err := s.next(); err == nil { // until Warden closes the connection
			return errors.New("server: got a command while the statement ran")
		}
		return nil
	})
	r.c.login("whoever", "")
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-running
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		defer cancel()
		r.stream.End(ctx, "warden: you were logged out")
	}()
	e := errOf(t, r.c.command(query("select sleep(30)")))
	if e == nil || e.Code != erServerShutdown || e.Message != "warden: you were logged out" {
		t.Fatalf("closing words %+v", e)
	}
	<-done
	if err := waitFor(t, killed); err != nil {
		t.Fatal(err)
	}
}

// A row over 16 MiB is split into several physical packets on both hops;
// masked, it is re-split with the client's sequence ids continuing.
func TestRowsOver16MiB(t *testing.T) {
	// Columns only: detectors over 32 MiB would make this test slow.
	p := testPolicy(nil, []policy.Masking{{Name: "pii", Columns: []string{"ssn"}}})
	big := bytes.Repeat([]byte("x"), wire.MaxPayload+100)
	bigMail := append(append([]byte(nil), big...), "y"...)
	cols := []*wire.Column{
		{Name: "ssn", OrgName: "ssn", Type: wire.TypeLongBlob},
		{Name: "note", OrgName: "note", Type: wire.TypeLongBlob},
	}
	r := serve(t, New(Options{}), attribution("alice", p, withCreds(t)), &fakeRecorder{}, func(s *fakeServer) error {
		if err := loggedIn(s); err != nil {
			return err
		}
		if err := s.expectQuery("select ssn, note from t"); err != nil {
			return err
		}
		if err := s.resultSet(cols, [][][]byte{{big, bigMail}}, false); err != nil {
			return err
		}
		return s.quit()
	})
	r.c.login("whoever", "")
	resp := r.c.command(query("select ssn, note from t"))
	if len(resp) != 6 {
		t.Fatalf("%d packets", len(resp))
	}
	row, err := wire.DecodeTextRow(resp[4], 2)
	if err != nil {
		t.Fatal(err)
	}
	if string(row[0]) != "****" || !bytes.Equal(row[1], bigMail) {
		t.Fatalf("row: %q..., %d bytes", row[0], len(row[1]))
	}
	// count, two columns, EOF, a row of two physical packets, EOF: the
	// last sequence id is 7.
	if r.c.r.Seq != 7 {
		t.Fatalf("last sequence id %d, want 7", r.c.r.Seq)
	}
	r.end()
}

// selfSigned is a TLS configuration for the agent's side of the client hop.
func selfSigned(t *testing.T) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// Without credentials, a client on TLS to Warden and a server without TLS:
// caching_sha2_password's full authentication gets the client's password
// over the client's TLS and sends it on under the server's RSA key, never
// in clear, with both hops' sequence ids in order.
func TestPassthroughFullAuthEncryptsForTheServer(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	sc := mustScramble(t)
	cfg := selfSigned(t)
	codec := New(Options{ClientTLS: func(netip.Addr) *tls.Config { return cfg }})
	r := serve(t, codec, attribution("alice", testPolicy(nil, nil), policy.Target{}), &fakeRecorder{}, func(s *fakeServer) error {
		resp, err := s.handshake(wire.PluginCachingSHA2, sc)
		if err != nil {
			return err
		}
		if resp.User != "person" || resp.Capabilities&wire.ClientSSL != 0 {
			return fmt.Errorf("server: login %+v", resp)
		}
		if err := s.send([]byte{wire.HeaderAuthMore, wire.SHA2FullAuth}); err != nil {
			return err
		}
		seq, p, err := s.r.Next()
		if err != nil || !bytes.Equal(p, []byte{wire.SHA2RequestPublicKey}) || seq != 3 {
			return fmt.Errorf("server: want a public key request at 3, got %q at %d %v", p, seq, err)
		}
		s.w.Seq = seq + 1
		if err := s.send(append([]byte{wire.HeaderAuthMore}, pubPEM...)); err != nil {
			return err
		}
		seq, ct, err := s.r.Next()
		if err != nil {
			return err
		}
		if bytes.Contains(ct, []byte("person-secret")) {
			return errors.New("server: the password arrived in clear")
		}
		plain, err := rsa.DecryptOAEP(sha1.New(), nil, key, ct, nil)
		if err != nil {
			return fmt.Errorf("server: decrypt: %w", err)
		}
		for i := range plain {
			plain[i] ^= sc[i%len(sc)]
		}
		if string(plain) != "person-secret\x00" {
			return errors.New("server: wrong password")
		}
		s.w.Seq = seq + 1
		if err := s.ok(); err != nil {
			return err
		}
		if err := s.lexing(); err != nil {
			return err
		}
		return s.quit()
	})
	c := r.c
	p, err := c.next()
	if err != nil {
		t.Fatal(err)
	}
	hs, err := wire.ParseHandshake(p)
	if err != nil || hs.Capabilities&wire.ClientSSL == 0 || !bytes.Equal(hs.AuthData, sc) {
		t.Fatalf("greeting %+v %v", hs, err)
	}
	resp := &wire.HandshakeResponse{Capabilities: clientCaps | wire.ClientSSL, MaxPacket: 1 << 24, Charset: 45, User: "person",
		AuthResponse: wire.CachingSHA2Password(sc, "person-secret"), AuthPlugin: wire.PluginCachingSHA2}
	c.w.Seq = 1
	if err := c.send(wire.SSLRequestFor(resp)); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	c.peer = newPeer(tc)
	c.w.Seq = 2
	if err := c.send(resp.Encode()); err != nil {
		t.Fatal(err)
	}
	seq, p, err := c.r.Next()
	if err != nil || seq != 3 || !bytes.Equal(p, []byte{wire.HeaderAuthMore, wire.SHA2FullAuth}) {
		t.Fatalf("client: want full auth at 3, got %q at %d %v", p, seq, err)
	}
	c.w.Seq = 4
	if err := c.send([]byte("person-secret\x00")); err != nil {
		t.Fatal(err)
	}
	seq, p, err = c.r.Next()
	if err != nil || seq != 5 || p[0] != wire.HeaderOK {
		t.Fatalf("client: want OK at 5, got %q at %d %v", p, seq, err)
	}
	r.end()
}

// With CLIENT_DEPRECATE_EOF, no EOF follows the column definitions and an
// OK with the EOF header ends the rows; a text holding two statements
// gets two results, each recorded, and rows of both masked.
func TestDeprecateEOFAndMultiResults(t *testing.T) {
	caps := clientCaps | wire.ClientDeprecateEOF
	rec := &fakeRecorder{}
	p := testPolicy(nil, []policy.Masking{{Name: "pii", Columns: []string{"ssn"}}})
	col := &wire.Column{Name: "ssn", OrgName: "ssn", Type: wire.TypeVarString}
	end := func(more bool) []byte {
		st := wire.StatusAutocommit
		if more {
			st |= wire.StatusMoreResultsExists
		}
		return (&wire.OK{Status: st}).Encode(wire.HeaderEOF, caps)
	}
	r := serve(t, New(Options{}), attribution("alice", p, withCreds(t)), rec, func(s *fakeServer) error {
		s.caps = wire.ClientDeprecateEOF
		resp, err := s.handshake(wire.PluginNative, []byte("abcdefghijklmnopqrst"))
		if err != nil {
			return err
		}
		if resp.Capabilities&wire.ClientDeprecateEOF == 0 {
			return errors.New("server: CLIENT_DEPRECATE_EOF not forwarded")
		}
		if err := s.ok(); err != nil {
			return err
		}
		// Warden's own question, answered without EOF packets.
		if err := s.expectQuery("SELECT @@SESSION.sql_mode, @@SESSION.character_set_client"); err != nil {
			return err
		}
		c1 := &wire.Column{Name: "a", Type: wire.TypeVarString}
		if err := s.send([]byte{2}, c1.Encode(), c1.Encode(), wire.AppendTextRow(nil, [][]byte{[]byte(""), []byte("utf8mb4")}), end(false)); err != nil {
			return err
		}
		if err := s.expectQuery("select ssn from t; select ssn from t where id = 1"); err != nil {
			return err
		}
		row := wire.AppendTextRow(nil, [][]byte{[]byte("078-05-1120")})
		if err := s.send([]byte{1}, col.Encode(), row, row, end(true), []byte{1}, col.Encode(), row, end(false)); err != nil {
			return err
		}
		return s.quit()
	})
	// The scripted client, with CLIENT_DEPRECATE_EOF.
	c := r.c
	p0, err := c.next()
	if err != nil {
		t.Fatal(err)
	}
	hs, _ := wire.ParseHandshake(p0)
	login := &wire.HandshakeResponse{Capabilities: caps, MaxPacket: 1 << 24, Charset: 45, User: "x", AuthResponse: []byte("x"), AuthPlugin: hs.AuthPlugin}
	c.w.Seq = 1
	c.send(login.Encode())
	if p, err := c.next(); err != nil || p[0] != wire.HeaderOK {
		t.Fatalf("login: %q %v", p, err)
	}
	c.w.Seq = 0
	c.send(query("select ssn from t; select ssn from t where id = 1"))
	var got []string
	for results := 0; results < 2; {
		p, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case wire.IsEOF(p):
			results++
		case len(p) > 1 && p[0] != 3: // a row, not the count or a column
			if v, err := wire.DecodeTextRow(p, 1); err == nil {
				got = append(got, string(v[0]))
			}
		}
	}
	if strings.Join(got, ",") != "****,****,****" {
		t.Fatalf("rows %q", got)
	}
	r.end()
	res := rec.ofType(event.DBResult)
	if len(res) != 2 || fmt.Sprint(res[0].Data["rows_returned"]) != "2" || fmt.Sprint(res[1].Data["rows_returned"]) != "1" {
		t.Fatalf("results %+v", res)
	}
}

func TestRefuse(t *testing.T) {
	att := attribution("alice", testPolicy(nil, nil), policy.Target{})
	att.Decision = event.Decision{Action: event.Deny, Rule: "identity", Reason: "warden: no verified identity for this session; run 'warden login'"}
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			opts := Options{}
			if withTLS {
				cfg := selfSigned(t)
				opts.ClientTLS = func(netip.Addr) *tls.Config { return cfg }
			}
			clientEnd, proxyEnd := net.Pipe()
			clientEnd.SetDeadline(time.Now().Add(hang))
			done := make(chan error, 1)
			go func() {
				done <- New(opts).Refuse(context.Background(), proxyEnd, att)
				proxyEnd.Close()
			}()
			c := newPeer(clientEnd)
			p, err := c.next()
			if err != nil {
				t.Fatal(err)
			}
			if withTLS {
				hs, err := wire.ParseHandshake(p)
				if err != nil || hs.Capabilities&wire.ClientSSL == 0 {
					t.Fatalf("greeting %+v %v", hs, err)
				}
				resp := &wire.HandshakeResponse{Capabilities: clientCaps | wire.ClientSSL, Charset: 45, User: "x"}
				c.w.Seq = 1
				c.send(wire.SSLRequestFor(resp))
				tc := tls.Client(clientEnd, &tls.Config{InsecureSkipVerify: true})
				c = newPeer(tc)
				c.w.Seq = 2
				c.send(resp.Encode())
				if p, err = c.next(); err != nil {
					t.Fatal(err)
				}
			}
			e, err := wire.ParseERR(p, clientCaps)
			if err != nil || e.Code != erAccessDenied || e.Message != att.Decision.Reason {
				t.Fatalf("refusal %q %v", p, err)
			}
			if err := waitFor(t, done); err != nil {
				t.Fatal(err)
			}
		})
	}
}
