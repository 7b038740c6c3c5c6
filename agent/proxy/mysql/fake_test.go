package mysql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/agent/proxy/proxytest"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
	wire "github.com/wardenhq/warden/pkg/protocol/mysql"
)

// The codec's unit tests run it between a scripted client and a scripted
// server, each on a net.Pipe, as the proxy would: one proxy.Stream with an
// Attribution, a Guard and an Audit whose recorder the test reads. Every
// read and write has a deadline of hang, so a codec that stalls fails.

const (
	targetName = "shop-db"
	hang       = 10 * time.Second
	// caps is what the scripted client asks for: protocol 4.1, plugin
	// auth, multi-statements, legacy EOF packets.
	clientCaps = wire.ClientProtocol41 | wire.ClientSecureConnection | wire.ClientPluginAuth |
		wire.ClientMultiStatements | wire.ClientMultiResults | wire.ClientPSMultiResults |
		wire.ClientConnectWithDB | wire.ClientTransactions | wire.ClientLongPassword | wire.ClientLocalFiles
	serverCaps = clientCaps | wire.ClientConnectAttrs | wire.ClientSSL | wire.ClientCompress
)

// fakeRecorder captures events, giving each an id; with fail set it
// stores nothing and returns fail.
type fakeRecorder struct {
	mu     sync.Mutex
	n      int
	fail   error
	events []*event.Event
}

func (r *fakeRecorder) Emit(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if e.ID == "" {
		e.ID = fmt.Sprintf("ev-%d", r.n)
	}
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, e)
	return nil
}

func (r *fakeRecorder) ofType(typ event.Type) []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*event.Event
	for _, e := range r.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// target is the MySQL target every test session is attributed to.
var target = proxytest.Target{Name: targetName, Protocol: policy.ProtocolMySQL, Address: "10.0.0.7:3306"}

func testPolicy(rules []policy.Rule, masks []policy.Masking) *policy.Policy {
	return target.Policy(rules, masks)
}

func attribution(sub string, p *policy.Policy, tp policy.Target) *proxy.Attribution {
	return target.Attribution(sub, p, tp)
}

// peer is either scripted end: packets in and out.
type peer struct {
	conn net.Conn
	r    *wire.Reader
	w    *wire.Writer
}

func newPeer(c net.Conn) *peer {
	return &peer{conn: c, r: wire.NewReader(c), w: wire.NewWriter(c)}
}

func (p *peer) send(payloads ...[]byte) error {
	for _, b := range payloads {
		if err := p.w.Write(b); err != nil {
			return err
		}
	}
	return p.w.Flush()
}

func (p *peer) next() ([]byte, error) {
	_, b, err := p.r.Next()
	return b, err
}

// fakeServer is the scripted server.
type fakeServer struct {
	*peer
	connID uint32
	caps   uint32 // offered beside serverCaps
}

// handshake sends the server's greeting with plugin and scramble and
// reads the login.
func (s *fakeServer) handshake(plugin string, scramble []byte) (*wire.HandshakeResponse, error) {
	hs := &wire.Handshake{ServerVersion: "5.5.5-10.11.6-MariaDB", ConnectionID: s.connID, AuthData: scramble,
		Capabilities: serverCaps | s.caps, Charset: 45, Status: wire.StatusAutocommit, AuthPlugin: plugin}
	s.w.Seq = 0
	if err := s.send(hs.Encode()); err != nil {
		return nil, err
	}
	seq, p, err := s.r.Next()
	if err != nil {
		return nil, fmt.Errorf("server: read login: %w", err)
	}
	s.w.Seq = seq + 1
	return wire.ParseHandshakeResponse(p)
}

func (s *fakeServer) ok() error {
	return s.send((&wire.OK{Status: wire.StatusAutocommit}).Encode(wire.HeaderOK, clientCaps))
}

// command reads one command, sequence id 0, and readies the reply.
func (s *fakeServer) command() ([]byte, error) {
	seq, p, err := s.r.Next()
	if err != nil {
		return nil, fmt.Errorf("server: read command: %w", err)
	}
	if seq != 0 {
		return nil, fmt.Errorf("server: command with sequence id %d", seq)
	}
	s.w.Seq = 1
	return p, nil
}

// expectQuery reads a COM_QUERY and checks its text.
func (s *fakeServer) expectQuery(want string) error {
	p, err := s.command()
	if err != nil {
		return err
	}
	if len(p) == 0 || p[0] != wire.ComQuery || string(p[1:]) != want {
		return fmt.Errorf("server: got %q, want COM_QUERY %q", p, want)
	}
	return nil
}

// lexing answers Warden's question about the session's settings.
func (s *fakeServer) lexing() error {
	if err := s.expectQuery("SELECT @@SESSION.sql_mode, @@SESSION.character_set_client"); err != nil {
		return err
	}
	cols := []*wire.Column{{Name: "@@SESSION.sql_mode", Type: wire.TypeVarString, Charset: 45}, {Name: "@@SESSION.character_set_client", Type: wire.TypeVarString, Charset: 45}}
	return s.resultSet(cols, [][][]byte{{[]byte("STRICT_TRANS_TABLES"), []byte("utf8mb4")}}, false)
}

// resultSet sends a result set with legacy EOF packets.
func (s *fakeServer) resultSet(cols []*wire.Column, rows [][][]byte, binaryRows bool) error {
	out := [][]byte{wire.AppendLenenc(nil, uint64(len(cols)))}
	for _, c := range cols {
		out = append(out, c.Encode())
	}
	out = append(out, wire.EOF(0, wire.StatusAutocommit))
	for _, r := range rows {
		if binaryRows {
			out = append(out, wire.AppendBinaryRow(nil, cols, r))
		} else {
			out = append(out, wire.AppendTextRow(nil, r))
		}
	}
	out = append(out, wire.EOF(0, wire.StatusAutocommit))
	return s.send(out...)
}

// login is a server whose account needs the password in the scramble
// answer it checks with check.
func (s *fakeServer) quit() error {
	p, err := s.command()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
			return nil
		}
		return err
	}
	if len(p) != 1 || p[0] != wire.ComQuit {
		return fmt.Errorf("server: got %q, want COM_QUIT", p)
	}
	return nil
}

// client is the scripted client.
type client struct {
	*peer
	t *testing.T
}

// login reads the greeting and logs in as user with an answer of garbage:
// with injected credentials it must not matter.
func (c *client) login(user, db string) (*wire.Handshake, []byte) {
	c.t.Helper()
	p, err := c.next()
	if err != nil {
		c.t.Fatalf("client: read greeting: %v", err)
	}
	hs, err := wire.ParseHandshake(p)
	if err != nil {
		c.t.Fatalf("client: greeting: %v", err)
	}
	resp := &wire.HandshakeResponse{Capabilities: clientCaps, MaxPacket: 1 << 24, Charset: 45, User: user,
		AuthResponse: []byte("not-the-password"), Database: db, AuthPlugin: hs.AuthPlugin}
	c.w.Seq = 1
	if err := c.send(resp.Encode()); err != nil {
		c.t.Fatal(err)
	}
	reply, err := c.next()
	if err != nil {
		c.t.Fatalf("client: read login reply: %v", err)
	}
	return hs, reply
}

// command sends a command and returns the response's packets, up to its
// end (OK, ERR, or the EOF after the rows of the last result).
func (c *client) command(pkt []byte) [][]byte {
	c.t.Helper()
	c.w.Seq = 0
	if err := c.send(pkt); err != nil {
		c.t.Fatal(err)
	}
	var out [][]byte
	inRows, eofs := false, 0
	for {
		p, err := c.next()
		if err != nil {
			c.t.Fatalf("client: read response: %v (after %q)", err, out)
		}
		out = append(out, p)
		switch {
		case wire.IsERR(p):
			return out
		case !inRows && p[0] == wire.HeaderOK && len(out) == 1:
			if wire.EOFStatus(p, clientCaps|wire.ClientDeprecateEOF)&wire.StatusMoreResultsExists == 0 {
				return out
			}
			out = out[:0:0]
		case wire.IsEOF(p):
			eofs++
			if eofs == 2 {
				if wire.EOFStatus(p, clientCaps)&wire.StatusMoreResultsExists == 0 {
					return out
				}
				eofs = 0
			}
		}
		inRows = eofs == 1
	}
}

func query(sql string) []byte { return append([]byte{wire.ComQuery}, sql...) }

// errOf returns the ERR in a response, nil if none.
func errOf(t *testing.T, resp [][]byte) *wire.ERR {
	t.Helper()
	last := resp[len(resp)-1]
	if !wire.IsERR(last) {
		return nil
	}
	e, err := wire.ParseERR(last, clientCaps)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// harness runs codec.Serve on a stream attributed to att with script as
// the server, and returns the client.
type run struct {
	c      *client
	stream *proxy.Stream
	served chan error
	script chan error
}

func serve(t *testing.T, codec *Codec, att *proxy.Attribution, rec proxy.Recorder, script func(*fakeServer) error) *run {
	t.Helper()
	return serveReviewed(t, codec, att, rec, nil, script)
}

// serveReviewed is serve with rev deciding what review rules hold.
func serveReviewed(t *testing.T, codec *Codec, att *proxy.Attribution, rec proxy.Recorder, rev guard.Reviewer, script func(*fakeServer) error) *run {
	t.Helper()
	clientEnd, pc := net.Pipe()
	pu, serverEnd := net.Pipe()
	proxyClient, proxyUp := proxytest.TCPLike{Conn: pc, Remote: "10.1.1.1:50000"}, proxytest.TCPLike{Conn: pu, Remote: "10.0.0.7:3306"}
	deadline := time.Now().Add(hang)
	clientEnd.SetDeadline(deadline)
	serverEnd.SetDeadline(deadline)
	var groups []string
	if att.Identity != nil {
		groups = att.Identity.Groups
	}
	st := &proxy.Stream{
		Client: proxyClient, Upstream: proxyUp, Attribution: att,
		Guard: guard.New(att.Policy, att.Target.Name, groups, rev),
		Audit: proxy.NewAudit(rec, att, proxy.FailClosed),
		Log:   zerolog.Nop(),
	}
	r := &run{c: &client{peer: newPeer(clientEnd), t: t}, stream: st, served: make(chan error, 1), script: make(chan error, 1)}
	go func() {
		err := codec.Serve(context.Background(), st)
		proxyUp.Close()
		proxyClient.Close()
		r.served <- err
	}()
	go func() {
		err := script(&fakeServer{peer: newPeer(serverEnd), connID: 42})
		serverEnd.Close()
		r.script <- err
	}()
	t.Cleanup(func() {
		clientEnd.Close()
		serverEnd.Close()
		waitFor(t, r.served)
		waitFor(t, r.script)
	})
	return r
}

// end quits and checks the server script.
func (r *run) end() {
	r.c.t.Helper()
	r.c.w.Seq = 0
	r.c.send([]byte{wire.ComQuit})
	if err := waitFor(r.c.t, r.script); err != nil {
		r.c.t.Fatalf("server script: %v", err)
	}
}

func waitFor(t *testing.T, c chan error) error {
	t.Helper()
	select {
	case err, ok := <-c:
		if ok {
			close(c)
		}
		return err
	case <-time.After(hang):
		t.Fatal("timed out")
		return nil
	}
}
