package publish_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/publish"
	"github.com/wardenhq/warden/agent/recorder"
	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/pkg/event"
)

// deadline bounds every wait; generous, never a performance threshold.
const deadline = 60 * time.Second

var host = event.Host{ID: "bastion-1", Name: "bastion-1.example"}

// startNATS runs an embedded JetStream server on 127.0.0.1:port (-1 picks a
// free port) with its file store in storeDir.
func startNATS(t *testing.T, port int, storeDir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  storeDir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(deadline) {
		t.Fatal("nats server did not start")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// freePort finds a port nobody listens on, for a server started later.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// agent is the agent's event pipeline: spool, recorder, publisher.
type agent struct {
	sp     *spool.Spool
	rec    *recorder.Recorder
	pub    *publish.Publisher
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t *testing.T, dir string, key ed25519.PrivateKey, url string) *agent {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Checkpoints only at Close: the tests count events.
	rec, err := recorder.New(recorder.Options{Host: host, Key: key, Spool: sp, Logger: log, CheckpointInterval: time.Hour, CheckpointEvents: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	pub := publish.New(sp, publish.Options{URL: url, HostID: host.ID, Logger: log, AckTimeout: 2 * time.Second, MaxBackoff: 500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{sp: sp, rec: rec, pub: pub, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- pub.Run(ctx) }()
	t.Cleanup(a.stop)
	return a
}

// stop shuts the pipeline down in order; safe to call twice.
func (a *agent) stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	<-a.done
	a.rec.Close()
	a.sp.Close()
	a.cancel = nil
}

func (a *agent) emit(n, from int) {
	for i := from; i < from+n; i++ {
		a.rec.Emit(&event.Event{
			Type:   event.DBQuery,
			Target: &event.Target{Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432"},
			Data:   map[string]any{"statement": fmt.Sprintf("SELECT %d", i), "rows": i},
		})
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func streamMsgs(t *testing.T, url string) uint64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		return 0
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, publish.StreamName)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return 0
	}
	// Events only: checkpoints are counted by the tests that want them.
	var n uint64
	for subj, c := range info.State.Subjects {
		if !strings.HasSuffix(subj, "."+string(event.CheckpointType)) {
			n += c
		}
	}
	return n
}

// readStream returns every event in the stream in stream order and checks
// subject and Nats-Msg-Id on each.
func readStream(t *testing.T, url string) []*event.Event {
	evs, _ := readStreamAll(t, url)
	return evs
}

// readStreamAll is readStream returning the checkpoints too.
func readStreamAll(t *testing.T, url string) ([]*event.Event, []*event.Checkpoint) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	s, err := js.Stream(ctx, publish.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Storage != jetstream.FileStorage || info.Config.Subjects[0] != publish.StreamSubject {
		t.Fatalf("stream config %+v", info.Config)
	}
	var evs []*event.Event
	var cps []*event.Checkpoint
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get stream msg %d: %v", seq, err)
		}
		if cp, err := event.DecodeCheckpoint(m.Data); err == nil {
			if m.Subject != cp.Subject() || m.Header.Get(jetstream.MsgIDHeader) != cp.ID {
				t.Fatalf("stream msg %d: subject %s, msg id %s for checkpoint %s", seq, m.Subject, m.Header.Get(jetstream.MsgIDHeader), cp.ID)
			}
			cps = append(cps, cp)
			continue
		}
		var e event.Event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatal(err)
		}
		if m.Subject != e.Subject() || m.Header.Get(jetstream.MsgIDHeader) != e.ID {
			t.Fatalf("stream msg %d: subject %s, msg id %s for event %s %s", seq, m.Subject, m.Header.Get(jetstream.MsgIDHeader), e.Type, e.ID)
		}
		evs = append(evs, &e)
	}
	return evs, cps
}

// checkChain asserts the stream holds one unbroken, verifying chain of
// exactly want events, in seq order, without duplicates.
func checkChain(t *testing.T, pub ed25519.PublicKey, evs []*event.Event, want int) {
	t.Helper()
	if len(evs) != want {
		t.Fatalf("stream holds %d events, want %d", len(evs), want)
	}
	v := event.NewVerifier(event.StaticKeys{host.ID: pub})
	ids := map[string]bool{}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("stream position %d holds seq %d", i+1, e.Seq)
		}
		if ids[e.ID] {
			t.Fatalf("duplicate event %s in stream", e.ID)
		}
		ids[e.ID] = true
		if ps := v.Check(e); len(ps) != 0 {
			t.Fatalf("seq %d: %v", e.Seq, ps)
		}
	}
}

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestPublishInOrder(t *testing.T) {
	pubKey, key := newKey(t)
	ns := startNATS(t, -1, t.TempDir())
	url := ns.ClientURL()
	a := startAgent(t, t.TempDir(), key, url)

	const n = 2000
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { a.emit(n/4, w*n/4) })
	}
	wg.Wait()
	emitted := time.Since(start)
	waitFor(t, "all events in the stream", func() bool { return streamMsgs(t, url) == n })
	waitFor(t, "spool drained", func() bool { return a.pub.Stats().Pending == 0 })
	t.Logf("%d events: emitted in %v, stored in JetStream after %v", n, emitted, time.Since(start))
	checkChain(t, pubKey, readStream(t, url), n)
	st := a.pub.Stats()
	if st.Published != n || !st.Connected {
		t.Fatalf("stats %+v", st)
	}
}

// The recorder's checkpoints reach the stream on the host's checkpoint
// subject, behind the events they cover, and verify.
func TestCheckpointsPublished(t *testing.T) {
	pubKey, key := newKey(t)
	ns := startNATS(t, -1, t.TempDir())
	url := ns.ClientURL()
	a := startAgent(t, t.TempDir(), key, url)
	a.emit(10, 0)
	waitFor(t, "10 events published", func() bool { return streamMsgs(t, url) == 10 })
	a.rec.Close() // signs the checkpoint; the publisher still runs
	waitFor(t, "the checkpoint published", func() bool {
		_, cps := readStreamAll(t, url)
		return len(cps) == 1
	})
	evs, cps := readStreamAll(t, url)
	checkChain(t, pubKey, evs, 10)
	head, err := cps[0].Verify(pubKey)
	if err != nil {
		t.Fatal(err)
	}
	var leaves [][]byte
	for _, e := range evs {
		l, _ := event.LeafHash(e.Hash)
		leaves = append(leaves, l)
	}
	if head.Size != 10 || !bytes.Equal(head.Root, event.RootOf(leaves)) {
		t.Fatalf("checkpoint size %d does not cover the 10 events", head.Size)
	}
}

func TestNATSDownThenBack(t *testing.T) {
	pubKey, key := newKey(t)
	port := freePort(t)
	storeDir := t.TempDir()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)

	// The agent starts before NATS exists: events are spooled.
	a := startAgent(t, t.TempDir(), key, url)
	a.emit(100, 0)
	waitFor(t, "100 events durable in the spool", func() bool { return a.sp.Stats().Pending == 100 })
	if st := a.pub.Stats(); st.Connected || st.Published != 0 {
		t.Fatalf("stats with NATS down: %+v", st)
	}

	ns := startNATS(t, port, storeDir)
	waitFor(t, "first 100 delivered", func() bool { return streamMsgs(t, url) == 100 })

	// NATS goes away mid-way; the agent keeps recording.
	ns.Shutdown()
	ns.WaitForShutdown()
	waitFor(t, "publisher to notice", func() bool { return !a.pub.Stats().Connected })
	a.emit(100, 100)
	waitFor(t, "second 100 durable in the spool", func() bool { return a.sp.Stats().Pending == 100 })

	// A new server on the same port and store: everything arrives once.
	startNATS(t, port, storeDir)
	waitFor(t, "all 200 delivered", func() bool { return streamMsgs(t, url) == 200 && a.pub.Stats().Pending == 0 })
	a.emit(50, 200)
	waitFor(t, "250 delivered", func() bool { return streamMsgs(t, url) == 250 && a.pub.Stats().Pending == 0 })
	checkChain(t, pubKey, readStream(t, url), 250)
	t.Logf("publisher stats: %+v", a.pub.Stats())
}

func TestCrashRecovery(t *testing.T) {
	pubKey, key := newKey(t)
	ns := startNATS(t, -1, t.TempDir())
	url := ns.ClientURL()
	dir := t.TempDir()

	a := startAgent(t, dir, key, url)
	a.emit(50, 0)
	waitFor(t, "50 delivered", func() bool { return streamMsgs(t, url) == 50 && a.pub.Stats().Pending == 0 })
	a.stop()

	// Simulate a crash: the cursor update never reached the disk (so all 50
	// are delivered again), and an event was being written when the power
	// went: a torn record at the end of the segment.
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Remove(filepath.Join(spoolDir, "cursor")); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(spoolDir, "*.seg"))
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{200, 0, 0, 0, 1, 2, 3, 4, '{', '"'}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	b := startAgent(t, dir, key, url)
	if rc := b.sp.Recovered(); rc.TornBytes != 10 {
		t.Fatalf("recovery %+v", rc)
	}
	b.emit(50, 50)
	// 50 old + 1 agent.loss (the torn write) + 50 new; the re-delivered 50
	// are dropped by JetStream's duplicate detection.
	waitFor(t, "101 delivered", func() bool { return streamMsgs(t, url) == 101 && b.pub.Stats().Pending == 0 })
	evs := readStream(t, url)
	checkChain(t, pubKey, evs, 101)
	if loss := evs[50]; loss.Type != event.AgentLoss || loss.Data["reason"] != recorder.ReasonTornWrite {
		t.Fatalf("event 51 is %s %v, want agent.loss torn_write", loss.Type, loss.Data)
	}
	if st := b.pub.Stats(); st.Duplicates != 50 {
		t.Fatalf("stats %+v: want 50 duplicates from the re-delivery", st)
	}
}

func TestRunStopsOnClosedSpool(t *testing.T) {
	ns := startNATS(t, -1, t.TempDir())
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := publish.New(sp, publish.Options{URL: ns.ClientURL(), HostID: host.ID, Logger: zerolog.Nop()})
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	waitFor(t, "connected", func() bool { return p.Stats().Connected })
	sp.Close()
	select {
	case err := <-done:
		if !errors.Is(err, spool.ErrClosed) {
			t.Fatalf("Run returned %v, want ErrClosed", err)
		}
	case <-time.After(deadline):
		t.Fatal("Run did not return after the spool closed")
	}
}
