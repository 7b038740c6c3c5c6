package postgres

import (
	"bytes"
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/policy"
)

// postmaster stands in for the server's listener where a closing session's
// CancelRequest arrives: each dial gets a pipe whose far end reads one
// cancel packet and closes, as a server does.
type postmaster struct {
	mu      sync.Mutex
	addrs   []string
	cancels []*pgproto3.CancelRequest
	wg      sync.WaitGroup
}

func (pm *postmaster) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	near, far := net.Pipe()
	pm.mu.Lock()
	pm.addrs = append(pm.addrs, addr)
	pm.mu.Unlock()
	pm.wg.Add(1)
	go func() {
		defer pm.wg.Done()
		defer far.Close()
		far.SetDeadline(time.Now().Add(hang))
		m, err := pgproto3.NewBackend(far, far).ReceiveStartupMessage()
		if err != nil {
			return
		}
		if cr, ok := m.(*pgproto3.CancelRequest); ok {
			pm.mu.Lock()
			pm.cancels = append(pm.cancels, &pgproto3.CancelRequest{ProcessID: cr.ProcessID, SecretKey: slices.Clone(cr.SecretKey)})
			pm.mu.Unlock()
		}
	}()
	return near, nil
}

func (pm *postmaster) received() ([]string, []*pgproto3.CancelRequest) {
	pm.wg.Wait()
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return slices.Clone(pm.addrs), slices.Clone(pm.cancels)
}

// endAsync ends st as the proxy does, and reports when End has returned.
func endAsync(st *proxy.Stream, reason string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.End(context.Background(), reason)
	}()
	return done
}

// readFatal reads what the client gets after the close: the FATAL error,
// then the end of the connection.
func readFatal(t *testing.T, ss *session) *pgproto3.ErrorResponse {
	t.Helper()
	var fatal *pgproto3.ErrorResponse
	for {
		m, err := ss.fe.Receive()
		if err != nil {
			if fatal == nil {
				t.Fatalf("client: connection ended (%v) without an error", err)
			}
			return fatal
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok && fatal == nil {
			fatal = cloneMessage(e)
		}
	}
}

func TestCloseIdleSession(t *testing.T) {
	codec := New(Options{})
	pm := &postmaster{}
	codec.dial = pm.dial
	serverEOF := make(chan error, 1)
	clk := &clock{}
	ss, st := serveStream(t, codec, attribution("alice", testPolicy(nil, nil), policy.Target{}), &fakeRecorder{clock: clk}, clk, func(s *fakeServer) error {
		if _, err := s.trustLogin(serverPID, serverSecret); err != nil {
			return err
		}
		if _, _, err := s.query(); err != nil {
			return err
		}
		if err := s.send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'}); err != nil {
			return err
		}
		err := s.drain()
		serverEOF <- err
		return err
	})
	ss.startup(map[string]string{"user": "person"})
	ss.untilReady()
	// One statement answered: the session is past its login and idle.
	ss.send(&pgproto3.Query{String: "select 1"})
	ss.untilReady()

	reason := "warden: session expired; run 'warden login'"
	ended := endAsync(st, reason) // a pipe's writes wait for the reader
	e := readFatal(t, ss)
	<-ended
	if e.Severity != "FATAL" || e.Code != codeAdminShutdown || e.Message != reason {
		t.Errorf("client got %s %s %q, want FATAL %s %q", e.Severity, e.Code, e.Message, codeAdminShutdown, reason)
	}
	if err := waitFor(t, serverEOF); err != nil {
		t.Errorf("server: %v", err)
	}
	if served, _ := ss.wait(); served != nil {
		t.Errorf("Serve: %v", served)
	}
	if addrs, _ := pm.received(); len(addrs) != 0 {
		t.Errorf("an idle session's close dialled %v for a cancel", addrs)
	}
}

func TestCloseCancelsRunningStatement(t *testing.T) {
	codec := New(Options{})
	pm := &postmaster{}
	codec.dial = pm.dial
	running := make(chan struct{})
	after := make(chan []pgproto3.FrontendMessage, 1)
	clk := &clock{}
	ss, st := serveStream(t, codec, attribution("alice", testPolicy(nil, nil), policy.Target{}), &fakeRecorder{clock: clk}, clk, func(s *fakeServer) error {
		if _, err := s.trustLogin(serverPID, serverSecret); err != nil {
			return err
		}
		if _, _, err := s.query(); err != nil {
			return err
		}
		close(running) // and never answers: the statement runs on
		var got []pgproto3.FrontendMessage
		for {
			m, _, err := s.receive()
			if err != nil {
				after <- got
				return nil
			}
			got = append(got, m)
		}
	})
	ss.startup(map[string]string{"user": "person"})
	ss.untilReady()
	ss.send(&pgproto3.Query{String: "select pg_sleep(1000)"})
	<-running

	reason := "warden: session killed by soc@example.com: incident 42"
	ended := endAsync(st, reason)
	e := readFatal(t, ss)
	<-ended
	if e.Severity != "FATAL" || e.Message != reason {
		t.Errorf("client got %s %q, want FATAL %q", e.Severity, e.Message, reason)
	}
	addrs, cancels := pm.received()
	if len(cancels) != 1 || cancels[0].ProcessID != serverPID || !bytes.Equal(cancels[0].SecretKey, serverSecret) {
		t.Fatalf("server got cancels %+v, want one for pid %d with its own secret", cancels, serverPID)
	}
	if want := st.Upstream.RemoteAddr().String(); len(addrs) != 1 || addrs[0] != want {
		t.Errorf("cancel dialled %v, want the session's server %s", addrs, want)
	}
	if got := <-after; len(got) != 0 {
		t.Errorf("the server received %d more messages after the running statement: %+v", len(got), got)
	}
	// Nothing the client sends now reaches anyone.
	ss.fe.Send(&pgproto3.Query{String: "select 'after-close'"})
	if err := ss.fe.Flush(); err == nil {
		t.Error("client could still write after the close")
	}
	// The backend key dies with the session.
	if served, _ := ss.wait(); served != nil {
		t.Errorf("Serve: %v", served)
	}
	codec.mu.Lock()
	defer codec.mu.Unlock()
	if len(codec.cancels) != 0 {
		t.Errorf("backend keys outlive the closed session: %v", codec.cancels)
	}
}

func TestCloseDuringStartupJustCloses(t *testing.T) {
	codec := New(Options{})
	codec.dial = (&postmaster{}).dial
	loginSeen := make(chan struct{})
	clk := &clock{}
	ss, st := serveStream(t, codec, attribution("alice", testPolicy(nil, nil), policy.Target{}), &fakeRecorder{clock: clk}, clk, func(s *fakeServer) error {
		if _, err := s.startup(); err != nil {
			return err
		}
		close(loginSeen)
		s.drain() // the close ends it
		return nil
	})
	ss.startup(map[string]string{"user": "person"})
	<-loginSeen
	ended := endAsync(st, "warden: you logged out")
	defer func() { <-ended }()
	if _, err := ss.fe.Receive(); err == nil {
		t.Error("client got a message from a session closed during its login")
	}
	ss.wait()
}
