package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
)

// hang bounds every wait so that a broken proxy fails the test instead of
// hanging it; nothing here depends on how long things take.
const hang = 10 * time.Second

// privateLoopback returns a listen address on a random address in
// 127.0.0.0/8 other than 127.0.0.1. Other tests on the host dial ports on
// 127.0.0.1 (some of them ports they just closed, to get a refusal); a
// listener of ours that reused such a port would see their connections.
func privateLoopback() string {
	return fmt.Sprintf("127.%d.%d.%d:0", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
}

// fakeAttributor hands out info for every client, or err if set, and
// remembers the client addresses it was asked about.
type fakeAttributor struct {
	info loader.ConnInfo
	err  error

	mu      sync.Mutex
	clients []netip.AddrPort
}

func (a *fakeAttributor) TakeConn(client netip.AddrPort) (loader.ConnInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clients = append(a.clients, client)
	return a.info, a.err
}

func (a *fakeAttributor) asked() []netip.AddrPort {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]netip.AddrPort(nil), a.clients...)
}

// fakeRecorder keeps what it stores. While err is set it stores nothing
// and returns err, as the real one does when its spool is full.
type fakeRecorder struct {
	mu     sync.Mutex
	err    error
	events []*event.Event
	failed []*event.Event // not stored because of err
}

func (r *fakeRecorder) Emit(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		r.failed = append(r.failed, e)
		return r.err
	}
	r.events = append(r.events, e)
	return nil
}

func (r *fakeRecorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

func (r *fakeRecorder) lost() []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*event.Event(nil), r.failed...)
}

func (r *fakeRecorder) all() []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*event.Event(nil), r.events...)
}

type metrics struct {
	mu           sync.Mutex
	accepted     []string
	refused      []string // "target/reason"
	unattributed int
}

func (m *metrics) Accepted(target string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.accepted = append(m.accepted, target)
}

func (m *metrics) Refused(target, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refused = append(m.refused, target+"/"+reason)
}

func (m *metrics) Unattributed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unattributed++
}

func (m *metrics) snapshot() (accepted, refused []string, unattributed int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.accepted...), append([]string(nil), m.refused...), m.unattributed
}

// fakeCodec refuses by writing "refused: <reason>" to the client, and
// serves with Relay unless serve is set. It counts both.
type fakeCodec struct {
	serve func(ctx context.Context, s *Stream) error

	mu      sync.Mutex
	refuses []string
	serves  []*Stream
}

func (c *fakeCodec) Enforces() []policy.Capability { return nil }

func (c *fakeCodec) Refuse(ctx context.Context, client net.Conn, att *Attribution) error {
	reason := att.Decision.Reason
	c.mu.Lock()
	c.refuses = append(c.refuses, reason)
	c.mu.Unlock()
	_, err := io.WriteString(client, "refused: "+reason)
	return err
}

func (c *fakeCodec) Serve(ctx context.Context, s *Stream) error {
	c.mu.Lock()
	c.serves = append(c.serves, s)
	c.mu.Unlock()
	if c.serve != nil {
		return c.serve(ctx, s)
	}
	return Relay{}.Serve(ctx, s)
}

func (c *fakeCodec) calls() (refuses []string, serves int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.refuses...), len(c.serves)
}

// upstream is a real loopback listener standing in for a target. Every
// accepted connection is handed to handle (or closed when handle is nil)
// and counted.
type upstream struct {
	ln       net.Listener
	accepted chan net.Conn
}

func newUpstream(t *testing.T, handle func(net.Conn)) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", privateLoopback())
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln, accepted: make(chan net.Conn, 16)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepted <- c
			if handle != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					handle(c)
				}()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-u.accepted:
				c.Close()
				continue
			default:
			}
			break
		}
		wg.Wait()
	})
	return u
}

func (u *upstream) addr() netip.AddrPort { return netip.MustParseAddrPort(u.ln.Addr().String()) }

// acceptsBefore returns how many connections the upstream accepted before
// a sentinel connection the test makes itself. The accept queue is FIFO, so
// any connection the proxy made earlier has been counted once the sentinel
// shows up: no sleeping needed to prove a negative.
func (u *upstream) acceptsBefore(t *testing.T) int {
	t.Helper()
	sentinel, err := net.Dial("tcp", u.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sentinel.Close()
	n := 0
	timeout := time.After(hang)
	for {
		select {
		case c := <-u.accepted:
			if c.RemoteAddr().String() == sentinel.LocalAddr().String() {
				return n
			}
			n++
		case <-timeout:
			t.Fatal("upstream never accepted the sentinel connection")
		}
	}
}

// harness runs a Proxy on a loopback listener until the test ends.
type harness struct {
	t      *testing.T
	ln     net.Listener
	attr   *fakeAttributor
	codec  *fakeCodec
	rec    *fakeRecorder
	met    *metrics
	authz  chan loader.ConnInfo
	cancel context.CancelFunc
	done   chan error
}

// start runs a proxy whose Authorizer answers with decide(info) and whose
// only codec (for postgres and as the fallback) is h.codec. The returned
// Attribution carries the kernel info, as the daemon's does.
func start(t *testing.T, attr *fakeAttributor, decide func(loader.ConnInfo) Attribution) *harness {
	t.Helper()
	c := &fakeCodec{}
	h := startWith(t, attr, decide, map[string]Codec{"postgres": c}, c)
	h.codec = c
	return h
}

// startWith runs a proxy with the given codecs; each of opts may change its
// options first.
func startWith(t *testing.T, attr *fakeAttributor, decide func(loader.ConnInfo) Attribution, codecs map[string]Codec, fallback Codec, opts ...func(*Options)) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", privateLoopback())
	if err != nil {
		t.Fatal(err)
	}
	registry := NewRegistry(fallback)
	for protocol, c := range codecs {
		registry.Register(protocol, c)
	}
	h := &harness{
		t: t, ln: ln, attr: attr, rec: &fakeRecorder{}, met: &metrics{},
		authz: make(chan loader.ConnInfo, 16), done: make(chan error, 1),
	}
	o := Options{
		Listeners:  []net.Listener{ln},
		Attributor: attr,
		Authorize: func(info loader.ConnInfo) Attribution {
			select {
			case h.authz <- info:
			default:
			}
			att := decide(info)
			att.Kernel = info
			return att
		},
		Codecs:   registry,
		Recorder: h.rec,
		Metrics:  h.met,
		Log:      zerolog.Nop(),
	}
	for _, f := range opts {
		f(&o)
	}
	p := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		select {
		case <-h.done:
		default:
			h.stop()
		}
	})
	return h
}

// stop cancels Serve and waits for it to return.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Serve: %v", err)
		}
		h.done <- nil // let a second stop (cleanup) see it has returned
	case <-time.After(hang):
		h.t.Fatal("Serve did not return after its context was cancelled")
	}
}

func (h *harness) dial() *net.TCPConn {
	h.t.Helper()
	c, err := net.Dial("tcp", h.ln.Addr().String())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(hang))
	return c.(*net.TCPConn)
}

// readAll reads c to EOF and fails on any other error.
func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read until EOF: %v (got %q)", err, b)
	}
	return string(b)
}

func dbTarget() event.Target {
	return event.Target{Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432"}
}

func TestUnattributedConnectionIsClosed(t *testing.T) {
	up := newUpstream(t, nil)
	attr := &fakeAttributor{err: errors.New("no record")}
	h := start(t, attr, func(loader.ConnInfo) Attribution {
		t.Error("Authorize called for an unattributed connection")
		return Attribution{}
	})
	c := h.dial()
	if got := readAll(t, c); got != "" {
		t.Errorf("client read %q", got)
	}
	h.stop()

	if got, want := attr.asked(), []netip.AddrPort{netip.MustParseAddrPort(c.LocalAddr().String())}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("TakeConn asked about %v, want %v", got, want)
	}
	if refuses, serves := h.codec.calls(); len(refuses) != 0 || serves != 0 {
		t.Errorf("codec called: refuses %q, serves %d", refuses, serves)
	}
	if n := up.acceptsBefore(t); n != 0 {
		t.Errorf("upstream accepted %d connections", n)
	}
	if evs := h.rec.all(); len(evs) != 0 {
		t.Errorf("recorded %d events", len(evs))
	}
	if acc, ref, un := h.met.snapshot(); un != 1 || len(acc) != 0 || len(ref) != 0 {
		t.Errorf("metrics: accepted %v refused %v unattributed %d", acc, ref, un)
	}
}

func TestDeniedConnectionIsRefused(t *testing.T) {
	up := newUpstream(t, nil)
	alice := &event.Identity{Sub: "alice", Email: "alice@example.com"}
	proc := &event.Process{PID: 4242, UID: 1001}
	attr := &fakeAttributor{info: loader.ConnInfo{OrigDst: up.addr(), Verdict: loader.VerdictUnbound, TGID: 4242, UID: 1001}}
	reason := "warden: no verified identity for this session; run 'warden login'"
	h := start(t, attr, func(loader.ConnInfo) Attribution {
		return Attribution{
			Target:   dbTarget(),
			Identity: alice,
			Process:  proc,
			Decision: event.Decision{Action: event.Deny, Rule: "identity", Reason: reason},
		}
	})
	c := h.dial()
	if got, want := readAll(t, c), "refused: "+reason; got != want {
		t.Errorf("client read %q, want %q", got, want)
	}
	h.stop()

	if info := <-h.authz; info != attr.info {
		t.Errorf("Authorize got %+v, want %+v", info, attr.info)
	}
	if refuses, serves := h.codec.calls(); len(refuses) != 1 || refuses[0] != reason || serves != 0 {
		t.Errorf("codec: refuses %q, serves %d; want one refusal and no Serve", refuses, serves)
	}
	if n := up.acceptsBefore(t); n != 0 {
		t.Errorf("upstream was dialled %d times for a denied connection", n)
	}
	evs := h.rec.all()
	if len(evs) != 1 {
		t.Fatalf("recorded %d events, want 1: %+v", len(evs), evs)
	}
	e := evs[0]
	if e.Type != event.NetConnect || e.Decision == nil || e.Decision.Action != event.Deny || e.Decision.Rule != "identity" || e.Decision.Reason != reason {
		t.Errorf("event %+v decision %+v", e, e.Decision)
	}
	if e.Identity != alice || e.Process != proc || e.Target == nil || *e.Target != dbTarget() {
		t.Errorf("event attribution: identity %+v process %+v target %+v", e.Identity, e.Process, e.Target)
	}
	wantData := map[string]any{"original_dst": up.addr().String(), "verdict": "unbound", "via": "proxy"}
	for k, v := range wantData {
		if e.Data[k] != v {
			t.Errorf("data[%s] = %v, want %v", k, e.Data[k], v)
		}
	}
	if _, ok := e.Data["upstream_local"]; ok {
		t.Errorf("denied connection has upstream_local: %v", e.Data)
	}
	if acc, ref, un := h.met.snapshot(); len(ref) != 1 || ref[0] != "orders-db/identity" || len(acc) != 0 || un != 0 {
		t.Errorf("metrics: accepted %v refused %v unattributed %d", acc, ref, un)
	}
}

// TestAllowedConnectionRelays checks bytes flow both ways and half-closes
// propagate: the upstream answers only after it has read the client's EOF,
// and the client still reads that answer after shutting its write side.
func TestAllowedConnectionRelays(t *testing.T) {
	upLocal := make(chan string, 1)
	up := newUpstream(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(hang))
		upLocal <- c.RemoteAddr().String()
		io.WriteString(c, "greeting\n")
		b, err := io.ReadAll(c)
		if err != nil {
			t.Errorf("upstream read: %v", err)
			return
		}
		fmt.Fprintf(c, "got %q", b)
	})
	attr := &fakeAttributor{info: loader.ConnInfo{OrigDst: up.addr(), Verdict: loader.VerdictAllowed, TGID: 7, UID: 1001, IdentityID: 3}}
	alice := &event.Identity{Sub: "alice"}
	h := start(t, attr, func(loader.ConnInfo) Attribution {
		return Attribution{Target: dbTarget(), Identity: alice, Decision: event.Decision{Action: event.Allow, Rule: "access"}}
	})
	c := h.dial()
	greeting := make([]byte, len("greeting\n"))
	if _, err := io.ReadFull(c, greeting); err != nil || string(greeting) != "greeting\n" {
		t.Fatalf("read greeting: %q, %v", greeting, err)
	}
	if _, err := io.WriteString(c, "select 1"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, want := readAll(t, c), `got "select 1"`; got != want {
		t.Errorf("client read %q, want %q", got, want)
	}
	h.stop()

	if refuses, serves := h.codec.calls(); len(refuses) != 0 || serves != 1 {
		t.Errorf("codec: refuses %q, serves %d", refuses, serves)
	}
	evs := h.rec.all()
	if len(evs) != 1 {
		t.Fatalf("recorded %d events, want 1", len(evs))
	}
	e := evs[0]
	if e.Type != event.NetConnect || e.Decision == nil || e.Decision.Action != event.Allow || e.Decision.Rule != "access" || e.Identity != alice {
		t.Errorf("event %+v decision %+v", e, e.Decision)
	}
	if got := e.Data["original_dst"]; got != up.addr().String() {
		t.Errorf("original_dst = %v, want %v", got, up.addr())
	}
	if got := e.Data["verdict"]; got != "allowed" {
		t.Errorf("verdict = %v", got)
	}
	if got, want := e.Data["upstream_local"], <-upLocal; got != want {
		t.Errorf("upstream_local = %v, want %v", got, want)
	}
	if acc, ref, un := h.met.snapshot(); len(acc) != 1 || acc[0] != "orders-db" || len(ref) != 0 || un != 0 {
		t.Errorf("metrics: accepted %v refused %v unattributed %d", acc, ref, un)
	}
}

func TestStreamCarriesAttribution(t *testing.T) {
	up := newUpstream(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	attr := &fakeAttributor{info: loader.ConnInfo{OrigDst: up.addr(), Verdict: loader.VerdictAllowed}}
	got := make(chan *Stream, 1)
	codec := &fakeCodec{serve: func(ctx context.Context, s *Stream) error {
		got <- s
		return nil
	}}
	h := startWith(t, attr, func(loader.ConnInfo) Attribution {
		return Attribution{Target: dbTarget(), SessionID: "s-1", Decision: event.Decision{Action: event.Allow}}
	}, nil, codec)
	c := h.dial()
	readAll(t, c)
	s := <-got
	if s.Attribution.SessionID != "s-1" || s.Attribution.Kernel != attr.info || s.Audit == nil || s.Audit.rec != h.rec || s.Guard == nil {
		t.Errorf("stream %+v attribution %+v", s, s.Attribution)
	}
	if s.Upstream.RemoteAddr().String() != up.addr().String() {
		t.Errorf("upstream dialled %v, want %v", s.Upstream.RemoteAddr(), up.addr())
	}
	if s.Client.RemoteAddr().String() != c.LocalAddr().String() {
		t.Errorf("client conn is %v, want %v", s.Client.RemoteAddr(), c.LocalAddr())
	}
}

func TestUnreachableUpstreamIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", privateLoopback())
	if err != nil {
		t.Fatal(err)
	}
	dead := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens there now: connect() is refused at once
	attr := &fakeAttributor{info: loader.ConnInfo{OrigDst: dead, Verdict: loader.VerdictAllowed}}
	h := start(t, attr, func(loader.ConnInfo) Attribution {
		return Attribution{Target: dbTarget(), Decision: event.Decision{Action: event.Allow, Rule: "access"}}
	})
	c := h.dial()
	reason := "warden: target orders-db is unreachable"
	if got := readAll(t, c); got != "refused: "+reason {
		t.Errorf("client read %q", got)
	}
	h.stop()

	if refuses, serves := h.codec.calls(); len(refuses) != 1 || refuses[0] != reason || serves != 0 {
		t.Errorf("codec: refuses %q, serves %d", refuses, serves)
	}
	evs := h.rec.all()
	if len(evs) != 1 {
		t.Fatalf("recorded %d events, want 1", len(evs))
	}
	e := evs[0]
	if e.Decision == nil || e.Decision.Action != event.Deny || e.Decision.Rule != "upstream" || e.Decision.Reason != reason {
		t.Errorf("decision %+v", e.Decision)
	}
	if e.Data["original_dst"] != dead.String() || e.Data["error"] == nil || e.Data["error"] == "" {
		t.Errorf("data %v", e.Data)
	}
	if acc, _, _ := h.met.snapshot(); len(acc) != 0 {
		t.Errorf("unreachable upstream counted as accepted: %v", acc)
	}
}

// A connection whose net.connect cannot be recorded is refused while the
// audit fails closed: the codec never serves it and the target never gets
// a byte. Failing open, it is served.
func TestUnrecordableConnection(t *testing.T) {
	for _, tt := range []struct {
		name    string
		failure AuditFailure
	}{{"fail closed", FailClosed}, {"fail open", FailOpen}} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan []byte, 1)
			up := newUpstream(t, func(c net.Conn) {
				c.SetDeadline(time.Now().Add(hang))
				b, _ := io.ReadAll(c)
				got <- b
			})
			attr := &fakeAttributor{info: loader.ConnInfo{OrigDst: up.addr(), Verdict: loader.VerdictAllowed}}
			c := &fakeCodec{}
			h := startWith(t, attr, func(loader.ConnInfo) Attribution {
				return Attribution{Target: dbTarget(), Decision: event.Decision{Action: event.Allow, Rule: "access"}}
			}, nil, c, func(o *Options) { o.AuditFailure = tt.failure })
			h.rec.fail(fmt.Errorf("record net.connect: %w", spool.ErrFull))
			client := h.dial()
			if tt.failure == FailOpen {
				// Refused, the proxy would not read this: the client's
				// close would then reset the connection.
				io.WriteString(client, "select 1")
				client.CloseWrite()
			}
			out := readAll(t, client)
			h.stop()

			refuses, serves := c.calls()
			lost := h.rec.lost()
			if len(lost) != 1 || lost[0].Type != event.NetConnect || lost[0].Decision.Action != event.Allow {
				t.Fatalf("recorder was asked to store %+v", lost)
			}
			_, refused, _ := h.met.snapshot()
			if tt.failure == FailOpen {
				if serves != 1 || len(refuses) != 0 || string(<-got) != "select 1" {
					t.Fatalf("failing open: serves %d, refuses %q", serves, refuses)
				}
				return
			}
			reason := "warden: the audit log cannot record this connection (spool full); refusing"
			if serves != 0 || len(refuses) != 1 || refuses[0] != reason || out != "refused: "+reason {
				t.Fatalf("serves %d, refuses %q, client read %q", serves, refuses, out)
			}
			if b := <-got; len(b) != 0 {
				t.Fatalf("the target received %q from a refused connection", b)
			}
			if len(refused) != 1 || refused[0] != "orders-db/audit" {
				t.Fatalf("refusal metrics %v", refused)
			}
		})
	}
}

func TestCodecByProtocol(t *testing.T) {
	tests := []struct {
		protocol string
		specific bool
	}{
		{"postgres", true},
		{"redis", false},
		{"tcp", false},
	}
	for _, tt := range tests {
		t.Run(tt.protocol, func(t *testing.T) {
			specific, fallback := &fakeCodec{}, &fakeCodec{}
			attr := &fakeAttributor{info: loader.ConnInfo{OrigDst: netip.MustParseAddrPort("127.0.0.1:1")}}
			h := startWith(t, attr, func(loader.ConnInfo) Attribution {
				return Attribution{Target: event.Target{Name: "x", Protocol: tt.protocol}, Decision: event.Decision{Action: event.Deny, Reason: "no"}}
			}, map[string]Codec{"postgres": specific}, fallback)
			if got := readAll(t, h.dial()); got != "refused: no" {
				t.Errorf("client read %q", got)
			}
			h.stop()
			sr, _ := specific.calls()
			fr, _ := fallback.calls()
			if tt.specific && (len(sr) != 1 || len(fr) != 0) || !tt.specific && (len(sr) != 0 || len(fr) != 1) {
				t.Errorf("specific codec refused %d, fallback %d", len(sr), len(fr))
			}
		})
	}
}

// TestServeStopsOnCancel leaves an allowed stream open in both directions
// and a refusal stuck waiting for the client, then cancels: Serve must
// return, and every client and upstream connection must see EOF.
func TestServeStopsOnCancel(t *testing.T) {
	upConns := make(chan net.Conn, 4)
	upEOF := make(chan error, 4)
	up := newUpstream(t, func(c net.Conn) {
		upConns <- c
		io.WriteString(c, "u")
		_, err := io.Copy(io.Discard, c) // returns at EOF
		upEOF <- err
	})
	attr := &fakeAttributor{info: loader.ConnInfo{OrigDst: up.addr()}}
	stuck := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	h := startWith(t, attr, func(loader.ConnInfo) Attribution {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return Attribution{Target: dbTarget(), Decision: event.Decision{Action: event.Allow}}
		}
		return Attribution{Target: dbTarget(), Decision: event.Decision{Action: event.Deny}}
	}, nil, slowRefuser{entered: stuck})

	// The client sends nothing: bytes the proxy had not yet read when it
	// closed the connection would make the kernel answer with a reset
	// instead of EOF, a race the test is not about.
	open := h.dial()
	// Reading the upstream's byte proves the proxy is relaying, not still
	// dialling: a dial cut short by the cancel would be a refusal instead.
	b := make([]byte, 1)
	if _, err := io.ReadFull(open, b); err != nil || b[0] != 'u' {
		t.Fatalf("allowed connection is not relaying: read %q, %v", b, err)
	}
	<-upConns
	blocked := h.dial()
	select {
	case <-stuck:
	case <-time.After(hang):
		t.Fatal("refusal never started")
	}

	h.stop()

	for name, c := range map[string]net.Conn{"allowed": open, "refusing": blocked} {
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("%s client: %v, want EOF", name, err)
		}
	}
	select {
	case err := <-upEOF:
		if err != nil {
			t.Errorf("upstream read: %v, want EOF", err)
		}
	case <-time.After(hang):
		t.Error("upstream connection left open after Serve returned")
	}
	if c, err := net.Dial("tcp", h.ln.Addr().String()); err == nil {
		c.Close()
		t.Error("proxy listener still accepts after Serve returned")
	}
}

// slowRefuser refuses by waiting for the client to speak, like a protocol
// codec waiting for a startup message.
type slowRefuser struct{ entered chan struct{} }

func (r slowRefuser) Enforces() []policy.Capability { return nil }

func (r slowRefuser) Refuse(ctx context.Context, client net.Conn, att *Attribution) error {
	close(r.entered)
	_, err := io.ReadAll(client)
	return err
}

func (r slowRefuser) Serve(ctx context.Context, s *Stream) error { return Pipe(s.Client, s.Upstream) }

func TestServeSeveralListeners(t *testing.T) {
	attr := &fakeAttributor{err: errors.New("no record")}
	var lns []net.Listener
	for _, addr := range []string{privateLoopback(), "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if addr == "[::1]:0" {
				t.Logf("no IPv6 loopback: %v", err)
				continue
			}
			t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	met := &metrics{}
	p := New(Options{Listeners: lns, Attributor: attr, Codecs: NewRegistry(Relay{}), Recorder: &fakeRecorder{}, Metrics: met, Log: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	for _, ln := range lns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(hang))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("%v: %v", ln.Addr(), err)
		}
		c.Close()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(hang):
		t.Fatal("Serve did not return")
	}
	if _, _, un := met.snapshot(); un != len(lns) {
		t.Errorf("unattributed = %d, want %d", un, len(lns))
	}
}

// TestPipe checks each direction independently: a→b ends first, b keeps
// talking to a, and Pipe returns only when both are done.
func TestPipe(t *testing.T) {
	a1, a2 := tcpPair(t)
	b1, b2 := tcpPair(t)
	done := make(chan error, 1)
	go func() { done <- Pipe(a2, b1) }()

	io.WriteString(a1, "ping")
	a1.(*net.TCPConn).CloseWrite()
	if got := readAll(t, b2); got != "ping" {
		t.Errorf("b read %q", got)
	}
	select {
	case <-done:
		t.Fatal("Pipe returned while b→a was still open")
	default:
	}
	io.WriteString(b2, "pong")
	b2.(*net.TCPConn).CloseWrite()
	if got := readAll(t, a1); got != "pong" {
		t.Errorf("a read %q", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Pipe: %v", err)
		}
	case <-time.After(hang):
		t.Fatal("Pipe did not return after both directions ended")
	}
}

// TestPipeWithoutCloseWrite uses net.Pipe, which cannot half-close: Pipe
// must close the destination instead so the peer still sees EOF.
func TestPipeWithoutCloseWrite(t *testing.T) {
	a1, a2 := net.Pipe()
	b1, b2 := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- Pipe(a2, b1) }()
	go func() {
		io.WriteString(a1, "ping")
		a1.Close()
	}()
	b2.SetDeadline(time.Now().Add(hang))
	if got := readAll(t, b2); got != "ping" {
		t.Errorf("b read %q", got)
	}
	b2.Close()
	select {
	case <-done:
	case <-time.After(hang):
		t.Fatal("Pipe did not return")
	}
}

func TestRelayRefuseIsSilent(t *testing.T) {
	a, b := tcpPair(t)
	if err := (Relay{}).Refuse(context.Background(), a, &Attribution{}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if got := readAll(t, b); got != "" {
		t.Errorf("Relay.Refuse wrote %q to the client", got)
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", privateLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{c1, c2} {
		c.SetDeadline(time.Now().Add(hang))
		t.Cleanup(func() { c.Close() })
	}
	return c1, c2
}
