package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/agent/proxy/proxytest"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
)

// The codec's unit tests run it between a scripted client (pgproto3's
// Frontend) and a scripted server (pgproto3's Backend), each on a
// net.Pipe, as the proxy would: one proxy.Stream with an Attribution, a
// Guard and an Audit whose recorder the test reads. Every read and write of
// the fakes has a deadline of hang, so a codec that stalls fails the test.

// targetName is the policy target every test session is attributed to.
const targetName = "orders-db"

// clock orders what the fake recorder records against what the fake
// server receives: each takes the next tick when it happens.
type clock struct{ n atomic.Int64 }

func (c *clock) tick() int64 { return c.n.Add(1) }

// recorded is one event and the tick it was emitted at.
type recorded struct {
	ev *event.Event
	at int64
}

// fakeRecorder captures events as the agent's recorder would store them:
// it gives each an id, which Audit hands back as the request's receipt.
// With fail set it stores nothing and returns fail, as a recorder whose
// spool is full does.
type fakeRecorder struct {
	clock *clock
	fail  error

	mu     sync.Mutex
	events []recorded
}

func (r *fakeRecorder) Emit(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	at := r.clock.tick()
	if e.ID == "" {
		e.ID = fmt.Sprintf("ev-%d", at)
	}
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, recorded{e, at})
	return nil
}

// setFail makes Emit fail with err from now on; nil makes it work again.
func (r *fakeRecorder) setFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

// ofType returns the events of type typ, in emission order.
func (r *fakeRecorder) ofType(typ event.Type) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, e := range r.events {
		if e.ev.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// target is the PostgreSQL target every test session is attributed to.
var target = proxytest.Target{Name: targetName, Protocol: policy.ProtocolPostgres, Address: "10.0.0.5:5432"}

// testPolicy is a policy with the one postgres target and the given rules
// and masking, all for that target.
func testPolicy(rules []policy.Rule, masks []policy.Masking) *policy.Policy {
	return target.Policy(rules, masks)
}

// attribution is an allowed connection of sub (in group engineering) to
// the target, under p; tp is the target's entry (credentials, TLS).
func attribution(sub string, p *policy.Policy, tp policy.Target) *proxy.Attribution {
	return target.Attribution(sub, p, tp)
}

// fakeServer is the scripted PostgreSQL server side of a session.
type fakeServer struct {
	conn  net.Conn
	be    *pgproto3.Backend
	clock *clock
}

// startup reads the startup packet, which must be a StartupMessage.
func (s *fakeServer) startup() (*pgproto3.StartupMessage, error) {
	m, err := s.be.ReceiveStartupMessage()
	if err != nil {
		return nil, fmt.Errorf("server: read startup: %w", err)
	}
	sm, ok := m.(*pgproto3.StartupMessage)
	if !ok {
		return nil, fmt.Errorf("server: startup packet is %T, want StartupMessage", m)
	}
	params := make(map[string]string, len(sm.Parameters))
	for k, v := range sm.Parameters {
		params[k] = v
	}
	return &pgproto3.StartupMessage{ProtocolVersion: sm.ProtocolVersion, Parameters: params}, nil
}

// receive reads one message, a copy the caller may keep, and the tick it
// arrived at.
func (s *fakeServer) receive() (pgproto3.FrontendMessage, int64, error) {
	m, err := s.be.Receive()
	if err != nil {
		return nil, 0, fmt.Errorf("server: receive: %w", err)
	}
	return cloneMessage(m), s.clock.tick(), nil
}

// expect reads one message and checks that it is a T.
func expect[T pgproto3.FrontendMessage](s *fakeServer) (T, int64, error) {
	var zero T
	m, at, err := s.receive()
	if err != nil {
		return zero, 0, err
	}
	t, ok := m.(T)
	if !ok {
		return zero, 0, fmt.Errorf("server: got %T %+v, want %T", m, m, zero)
	}
	return t, at, nil
}

// query reads one message, which must be a simple Query.
func (s *fakeServer) query() (string, int64, error) {
	q, at, err := expect[*pgproto3.Query](s)
	if err != nil {
		return "", 0, err
	}
	return q.String, at, nil
}

func (s *fakeServer) send(msgs ...pgproto3.BackendMessage) error {
	for _, m := range msgs {
		s.be.Send(m)
	}
	if err := s.be.Flush(); err != nil {
		return fmt.Errorf("server: send: %w", err)
	}
	return nil
}

// ready ends a login: the session settings a server reports, the
// backend's key and ReadyForQuery.
func (s *fakeServer) ready(pid uint32, secret []byte) error {
	return s.send(
		&pgproto3.ParameterStatus{Name: "server_version", Value: "15.8"},
		&pgproto3.ParameterStatus{Name: "client_encoding", Value: "UTF8"},
		&pgproto3.ParameterStatus{Name: "standard_conforming_strings", Value: "on"},
		&pgproto3.BackendKeyData{ProcessID: pid, SecretKey: secret},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	)
}

// trustLogin is a server that needs no password: it reads the startup
// message, logs the client in and returns what the client asked for.
func (s *fakeServer) trustLogin(pid uint32, secret []byte) (*pgproto3.StartupMessage, error) {
	sm, err := s.startup()
	if err != nil {
		return nil, err
	}
	if err := s.send(&pgproto3.AuthenticationOk{}); err != nil {
		return nil, err
	}
	return sm, s.ready(pid, secret)
}

// drain reads until the session ends. A Terminate is the client's
// goodbye; anything else was not in the script.
func (s *fakeServer) drain() error {
	for {
		m, err := s.be.Receive()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe) {
				return nil
			}
			return fmt.Errorf("server: waiting for the end: %w", err)
		}
		if _, ok := m.(*pgproto3.Terminate); !ok {
			return fmt.Errorf("server: unexpected %T %+v", m, m)
		}
	}
}

// session is one connection through the codec.
type session struct {
	t      *testing.T
	conn   net.Conn // the client's end
	fe     *pgproto3.Frontend
	served chan error // Serve's result
	script chan error // the server script's result
}

// serveSession runs codec.Serve on a new stream attributed to att, with
// script as the server; the test drives the client through the session.
func serveSession(t *testing.T, codec *Codec, att *proxy.Attribution, rec proxy.Recorder, clk *clock, script func(*fakeServer) error) *session {
	t.Helper()
	ss, _ := serveStream(t, codec, att, rec, clk, script)
	return ss
}

// serveStream is serveSession that also returns the stream, for a test to
// end it as the proxy does.
func serveStream(t *testing.T, codec *Codec, att *proxy.Attribution, rec proxy.Recorder, clk *clock, script func(*fakeServer) error) (*session, *proxy.Stream) {
	t.Helper()
	return serveReviewed(t, codec, att, rec, clk, nil, script)
}

// serveReviewed is serveStream with rev deciding what review rules hold.
func serveReviewed(t *testing.T, codec *Codec, att *proxy.Attribution, rec proxy.Recorder, clk *clock, rev guard.Reviewer, script func(*fakeServer) error) (*session, *proxy.Stream) {
	t.Helper()
	clientEnd, pc := net.Pipe()
	pu, serverEnd := net.Pipe()
	proxyClient, proxyUp := proxytest.TCPLike{Conn: pc}, proxytest.TCPLike{Conn: pu}
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
	ss := &session{t: t, conn: clientEnd, fe: pgproto3.NewFrontend(clientEnd, clientEnd),
		served: make(chan error, 1), script: make(chan error, 1)}
	go func() {
		err := codec.Serve(context.Background(), st)
		// As the proxy does once its codec returns.
		proxyUp.Close()
		proxyClient.Close()
		ss.served <- err
	}()
	srv := &fakeServer{conn: serverEnd, be: pgproto3.NewBackend(serverEnd, serverEnd), clock: clk}
	go func() {
		err := script(srv)
		serverEnd.Close()
		ss.script <- err
	}()
	t.Cleanup(func() {
		clientEnd.Close()
		serverEnd.Close()
		waitFor(t, ss.served)
		waitFor(t, ss.script)
	})
	return ss, st
}

// waitFor returns what c yields, failing the test if nothing comes within
// hang. It may be called again on a channel already drained: the value
// comes once, and later calls see nil.
func waitFor(t *testing.T, c chan error) error {
	t.Helper()
	select {
	case err, ok := <-c:
		if ok {
			close(c)
		}
		return err
	case <-time.After(hang):
		t.Errorf("no result within %v", hang)
		return nil
	}
}

func (ss *session) send(msgs ...pgproto3.FrontendMessage) {
	ss.t.Helper()
	for _, m := range msgs {
		ss.fe.Send(m)
	}
	if err := ss.fe.Flush(); err != nil {
		ss.t.Fatalf("client: send: %v", err)
	}
}

// startup sends the client's StartupMessage with params.
func (ss *session) startup(params map[string]string) {
	ss.t.Helper()
	ss.send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params})
}

// receive reads one message, a copy the test may keep.
func (ss *session) receive() pgproto3.BackendMessage {
	ss.t.Helper()
	m, err := ss.fe.Receive()
	if err != nil {
		ss.t.Fatalf("client: receive: %v", err)
	}
	return cloneMessage(m)
}

// untilReady reads through the next ReadyForQuery, which it includes.
func (ss *session) untilReady() []pgproto3.BackendMessage {
	ss.t.Helper()
	var out []pgproto3.BackendMessage
	for {
		m := ss.receive()
		out = append(out, m)
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			return out
		}
	}
}

// end says goodbye and returns Serve's and the script's errors.
func (ss *session) end() (served, script error) {
	ss.t.Helper()
	ss.fe.Send(&pgproto3.Terminate{})
	ss.fe.Flush() // the codec may have ended the session already
	return ss.wait()
}

// wait returns Serve's and the script's errors, once both are done.
func (ss *session) wait() (served, script error) {
	ss.t.Helper()
	return waitFor(ss.t, ss.served), waitFor(ss.t, ss.script)
}

// endOK ends the session and fails the test if either side failed.
func (ss *session) endOK() {
	ss.t.Helper()
	served, script := ss.end()
	if served != nil {
		ss.t.Errorf("Serve: %v", served)
	}
	if script != nil {
		ss.t.Errorf("%v", script)
	}
}

// cloneMessage returns a copy of m that does not share the buffer the
// Frontend or Backend reuses on its next Receive.
func cloneMessage[M interface {
	Encode([]byte) ([]byte, error)
	Decode([]byte) error
}](m M) M {
	buf, err := m.Encode(nil)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", m, err))
	}
	fresh := reflect.New(reflect.TypeOf(m).Elem()).Interface().(M)
	if err := fresh.Decode(buf[5:]); err != nil {
		panic(fmt.Sprintf("decode %T: %v", m, err))
	}
	return fresh
}

// find returns the messages of type T among msgs.
func find[T pgproto3.BackendMessage](msgs []pgproto3.BackendMessage) []T {
	var out []T
	for _, m := range msgs {
		if t, ok := m.(T); ok {
			out = append(out, t)
		}
	}
	return out
}
