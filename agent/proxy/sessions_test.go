package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/event"
)

// blockingRecorder holds the first allowed net.connect until release is
// closed, reporting on held that it got there: the stream is then indexed
// and dialled but not yet served.
type blockingRecorder struct {
	fakeRecorder
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (r *blockingRecorder) Emit(e *event.Event) error {
	if e.Type == event.NetConnect && e.Decision.Action == event.Allow {
		r.once.Do(func() {
			close(r.held)
			<-r.release
		})
	}
	return r.fakeRecorder.Emit(e)
}

// lifetimeProxy runs a proxy whose connections belong, in the order they
// are accepted, to the sessions named in sessions, all to target db. The
// proxy's one codec is c.
func lifetimeProxy(t *testing.T, up *upstream, c Codec, rec Recorder, sessions ...string) (*Proxy, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", privateLoopback())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	p := New(Options{
		Listeners:  []net.Listener{ln},
		Attributor: &fakeAttributor{info: loader.ConnInfo{OrigDst: up.addr(), TGID: 42}},
		Authorize: func(info loader.ConnInfo) Attribution {
			mu.Lock()
			defer mu.Unlock()
			id := sessions[n%len(sessions)]
			n++
			return Attribution{Kernel: info, Target: dbTarget(), SessionID: id,
				Identity: &event.Identity{Sub: "alice", SessionID: id}, Decision: event.Decision{Action: event.Allow}}
		},
		Codecs:   NewRegistry(c),
		Recorder: rec,
		Log:      zerolog.Nop(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return p, ln
}

// echoUpstream answers every line with itself.
func echoUpstream(t *testing.T) *upstream {
	return newUpstream(t, func(c net.Conn) { io.Copy(c, c) })
}

// roundTrip sends a line and reads it back: the stream is served.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("write %q: %v", line, err)
	}
	got, err := r.ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("read back %q, %v; want %q", got, err, line)
	}
}

// wordsCodec relays, and on closure tells the client the reason in one
// line first, as a protocol codec would in its own terms.
type wordsCodec struct{ Relay }

func (wordsCodec) Serve(ctx context.Context, s *Stream) error {
	s.OnClose(func(ctx context.Context, reason string) {
		io.WriteString(s.Client, "closing: "+reason+"\n")
	})
	return Pipe(s.Client, s.Upstream)
}

func dialConn(t *testing.T, ln net.Listener) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(timeNowPlusHang())
	return c, bufio.NewReader(c)
}

func TestCloseSelectsBySession(t *testing.T) {
	up := echoUpstream(t)
	p, ln := lifetimeProxy(t, up, wordsCodec{}, &fakeRecorder{}, "s1", "s1", "s2")
	var conns []net.Conn
	var readers []*bufio.Reader
	for i := range 3 {
		c, r := dialConn(t, ln)
		roundTrip(t, c, r, "hello "+string(rune('a'+i)))
		conns, readers = append(conns, c), append(readers, r)
	}
	if got := len(p.Streams()); got != 3 {
		t.Fatalf("Streams lists %d open streams, want 3", got)
	}

	closed := p.Close(context.Background(), BySession("s1", "warden: you logged out"))
	if len(closed) != 2 {
		t.Fatalf("Close closed %d streams, want the 2 of s1: %+v", len(closed), closed)
	}
	for _, c := range closed {
		if c.SessionID != "s1" || c.Target != dbTarget() || c.PID != 42 || c.Client == "" || c.Reason != "warden: you logged out" {
			t.Errorf("closed stream %+v", c)
		}
	}
	clients := []string{closed[0].Client, closed[1].Client}
	for i := range 2 {
		if !slices.Contains(clients, conns[i].LocalAddr().String()) {
			t.Errorf("client %s not among the closed %v", conns[i].LocalAddr(), clients)
		}
		rest, err := io.ReadAll(readers[i])
		if err != nil {
			t.Errorf("s1 client %d: %v", i, err)
		}
		if string(rest) != "closing: warden: you logged out\n" {
			t.Errorf("s1 client %d read %q before EOF, want the codec's words", i, rest)
		}
	}
	// The other session's stream stays served.
	roundTrip(t, conns[2], readers[2], "still here")
	if s := p.Streams(); len(s) != 1 || s[0].SessionID != "s2" {
		t.Errorf("after the close Streams lists %+v, want the s2 stream only", s)
	}
	// A second closure of the same session finds nothing.
	if again := p.Close(context.Background(), BySession("s1", "again")); len(again) != 0 {
		t.Errorf("second Close closed %+v", again)
	}
}

func TestCloseSelectorSeesAttribution(t *testing.T) {
	up := echoUpstream(t)
	p, ln := lifetimeProxy(t, up, wordsCodec{}, &fakeRecorder{}, "s1")
	c, r := dialConn(t, ln)
	roundTrip(t, c, r, "hi")
	var seen []string
	closed := p.Close(context.Background(), func(att *Attribution) (string, bool) {
		seen = append(seen, att.SessionID+"/"+att.Target.Name)
		return "warden: access to target " + att.Target.Name + " revoked by policy", att.Target.Name == dbTarget().Name
	})
	if len(seen) != 1 || seen[0] != "s1/"+dbTarget().Name {
		t.Errorf("selector saw %v", seen)
	}
	if len(closed) != 1 {
		t.Fatalf("closed %+v", closed)
	}
	rest, _ := io.ReadAll(r)
	if want := "closing: warden: access to target " + dbTarget().Name + " revoked by policy\n"; string(rest) != want {
		t.Errorf("client read %q, want %q", rest, want)
	}
}

func TestCloseRelayJustCloses(t *testing.T) {
	upSaw := make(chan string, 1)
	up := newUpstream(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		line, _ := r.ReadString('\n')
		io.WriteString(c, line)
		rest, _ := io.ReadAll(r) // until the proxy closes its side
		upSaw <- string(rest)
	})
	p, ln := lifetimeProxy(t, up, Relay{}, &fakeRecorder{}, "s1")
	c, r := dialConn(t, ln)
	roundTrip(t, c, r, "hi")
	if closed := p.Close(context.Background(), BySession("s1", "warden: session expired; run 'warden login'")); len(closed) != 1 {
		t.Fatalf("closed %+v", closed)
	}
	rest, err := io.ReadAll(r)
	if err != nil || len(rest) != 0 {
		t.Errorf("relayed client read %q, %v; want a bare EOF", rest, err)
	}
	if got := <-upSaw; got != "" {
		t.Errorf("upstream read %q after the close", got)
	}
}

func TestCloseBeforeServeRefuses(t *testing.T) {
	up := echoUpstream(t)
	rec := &blockingRecorder{held: make(chan struct{}), release: make(chan struct{})}
	codec := &fakeCodec{}
	p, ln := lifetimeProxy(t, up, codec, rec, "s1")
	c, _ := dialConn(t, ln)
	<-rec.held // authorized, indexed and dialled; Serve not started
	closed := p.Close(context.Background(), BySession("s1", "warden: session expired; run 'warden login'"))
	close(rec.release)
	if len(closed) != 1 {
		t.Fatalf("Close closed %+v, want the stream being set up", closed)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "refused: warden: session expired; run 'warden login'"; string(got) != want {
		t.Errorf("client read %q, want %q", got, want)
	}
	if refuses, serves := codec.calls(); serves != 0 || len(refuses) != 1 {
		t.Errorf("codec refused %v and served %d; want one refusal and no Serve", refuses, serves)
	}
	if s := p.Streams(); len(s) != 0 {
		t.Errorf("Streams lists %+v after the refusal", s)
	}
	if !strings.Contains(closed[0].Reason, "expired") {
		t.Errorf("reason %q", closed[0].Reason)
	}
}

func timeNowPlusHang() time.Time { return time.Now().Add(hang) }
