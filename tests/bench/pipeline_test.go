// Package bench holds Warden's throughput and latency measurements. They
// run only with WARDEN_BENCH=1 (make bench), since their numbers depend on
// the machine and they take tens of seconds.
package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/publish"
	"github.com/wardenhq/warden/agent/recorder"
	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/collector"
	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
)

// TestBenchPipeline measures the collector pipeline: events per second from
// publishing into JetStream to committed in SQLite, and the latency from
// publishing one event to reading it back through the API. As a baseline it
// measures a bare JetStream publish, consume and ack of the same messages,
// and prints the pipeline's rate as a fraction of it.
func TestBenchPipeline(t *testing.T) {
	if os.Getenv("WARDEN_BENCH") != "1" {
		t.Skip("benchmark: set WARDEN_BENCH=1 (make bench)")
	}
	n := envInt(t, "WARDEN_BENCH_EVENTS", 20000)
	samples := envInt(t, "WARDEN_BENCH_LATENCY_SAMPLES", 300)

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	// bench-host publishes as an agent does: v2 events and a signed
	// checkpoint every 1,000 of them (and after each latency sample), which
	// the collector verifies against what it stored.
	bt := newBenchTree(t, priv)
	var msgs []*nats.Msg
	for i := range n {
		msgs = append(msgs, bt.sealedMsg(t))
		if (i+1)%event.DefaultCheckpointEvents == 0 || i == n-1 {
			msgs = append(msgs, bt.checkpoint(t))
		}
	}
	sampleMsgs := make([]*nats.Msg, samples)
	for i := range sampleMsgs {
		sampleMsgs[i] = bt.sealedMsg(t)
	}
	_, agentKey, _ := ed25519.GenerateKey(rand.Reader)
	keys := event.StaticKeys{
		"bench-host":  priv.Public().(ed25519.PublicKey),
		"bench-agent": agentKey.Public().(ed25519.PublicKey),
	}

	rawRate := baseline(t, msgs)
	// What the same JetStream does with the same bytes when each message
	// carries batchedEvents events (JSON lines): the lever that one event
	// per message leaves unused.
	batchedRate := baseline(t, batched(msgs, batchedEvents)) * batchedEvents

	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: zerolog.Nop(), AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	// The API reads need a reader's token, as everywhere.
	idp, token := benchIdP(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := collector.New(ctx, collector.Config{
		NATSURL: ns.ClientURL(), StorePath: filepath.Join(t.TempDir(), "events.db"),
		Listen: "127.0.0.1:0", Keys: keys, Logger: zerolog.Nop(),
		OIDC: idtoken.Config{Issuer: idp.Issuer(), ClientID: "warden"}, Readers: []string{"soc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	js := connectJS(t, ns.ClientURL())

	start := time.Now()
	publishAll(t, js, msgs)
	waitStored(t, c, int64(n))
	pipeRate := float64(n) / time.Since(start).Seconds()

	// Latency: one event at a time, polled through the API until it
	// answers 200. Polling every 500µs bounds the resolution.
	base := "http://" + c.APIAddr() + "/v1/events/"
	lat := make([]time.Duration, 0, samples)
	for i, m := range sampleMsgs {
		id := m.Header.Get(nats.MsgIdHdr)
		t0 := time.Now()
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		for !found(t, base+id, token) {
			time.Sleep(500 * time.Microsecond)
		}
		lat = append(lat, time.Since(t0))
		if _, err := js.PublishMsg(context.Background(), bt.checkpointUpTo(t, uint64(n+i+1))); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]

	// The agent's own path: events already in the agent's spool (as after a
	// NATS outage) drained by its publisher into the running collector.
	stored := int64(n + len(lat))
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	rec, err := recorder.New(recorder.Options{Host: event.Host{ID: "bench-agent", Name: "bench"}, Key: agentKey, Spool: sp, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	for i := range n {
		e := benchEvent(i)
		if i == n-1 {
			if err := rec.EmitSync(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			break
		}
		rec.Emit(e)
	}
	pubCtx, stopPub := context.WithCancel(context.Background())
	pub := publish.New(sp, publish.Options{URL: ns.ClientURL(), HostID: "bench-agent", Logger: zerolog.Nop()})
	pubDone := make(chan error, 1)
	start, cpu0 := time.Now(), processCPU()
	go func() { pubDone <- pub.Run(pubCtx) }()
	waitStored(t, c, stored+int64(n))
	spoolRate := float64(n) / time.Since(start).Seconds()
	spoolCPU := float64((processCPU() - cpu0).Microseconds()) / float64(n)
	stopPub()
	<-pubDone

	h := c.Ingester().Stats()
	if h.Violations != 0 {
		t.Errorf("benchmark events raised %d integrity violations: %s", h.Violations, violations(t, c))
	}
	line := fmt.Sprintf("BENCH pipeline: %d events: agent spool->collector store %.0f events/s (%.1f µs CPU/event, publisher+NATS+collector; %.2fx raw JetStream); "+
		"JetStream publish->stored %.0f events/s (raw JetStream publish+consume+ack, one event per message: %.0f events/s, ratio %.2f; with %d events per message: %.0f events/s); "+
		"publish->queryable latency p50=%s p99=%s (%d samples)",
		n, spoolRate, spoolCPU, spoolRate/rawRate, pipeRate, rawRate, pipeRate/rawRate, batchedEvents, batchedRate,
		p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), len(lat))
	fmt.Println(line)
	t.Log(line)
}

// batchedEvents is how many events a message carries in the batched
// baseline.
const batchedEvents = 16

// batched joins the data of every per consecutive messages into one
// message of JSON lines, with an id of its own.
func batched(msgs []*nats.Msg, per int) []*nats.Msg {
	var out []*nats.Msg
	for i := 0; i < len(msgs); i += per {
		group := msgs[i:min(i+per, len(msgs))]
		m := nats.NewMsg(group[0].Subject)
		for _, g := range group {
			m.Data = append(append(m.Data, g.Data...), '\n')
		}
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("batch-%d", i))
		out = append(out, m)
	}
	return out
}

// baseline publishes msgs into a fresh JetStream and consumes and acks
// them with no verification and no store. It returns messages per second.
func baseline(t *testing.T, msgs []*nats.Msg) float64 {
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: zerolog.Nop(), AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	js := connectJS(t, ns.ClientURL())
	ctx := context.Background()
	st, err := natsembed.EnsureStream(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{}, len(msgs))
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		got <- struct{}{}
	}, jetstream.PullMaxMessages(500))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	start := time.Now()
	publishAll(t, js, msgs)
	for range msgs {
		<-got
	}
	return float64(len(msgs)) / time.Since(start).Seconds()
}

func connectJS(t *testing.T, url string) jetstream.JetStream {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsembed.EnsureStream(context.Background(), js, 1); err != nil {
		t.Fatal(err)
	}
	return js
}

// publishAll publishes asynchronously, as the agent's spool does, and
// waits for every ack from JetStream.
func publishAll(t *testing.T, js jetstream.JetStream, msgs []*nats.Msg) {
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		// A fresh copy: a nats.Msg must not be published twice.
		cp := nats.NewMsg(m.Subject)
		cp.Data, cp.Header = m.Data, m.Header
		// A long stall wait: on a loaded machine the 4,096 pending acks
		// can take longer than the default 200 ms to drain.
		f, err := js.PublishMsgAsync(cp, jetstream.WithStallWait(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		futures[i] = f
	}
	<-js.PublishAsyncComplete()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish: %v", err)
		}
	}
}

func waitStored(t *testing.T, c *collector.Collector, n int64) {
	deadline := time.Now().Add(10 * time.Minute) // a hang guard, not a threshold
	for {
		// The ingester counts rows after their transaction commits: they
		// are queryable then. A COUNT(*) here would scan the growing table
		// every few ms and charge the bench's own polling to the store
		// (8 µs per event at 100,000 events).
		k := int64(c.Ingester().Stats().Stored)
		if k >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored %d of %d", k, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// benchIdP serves a dev OIDC issuer on loopback and returns it with a
// token of a member of "soc".
func benchIdP(t *testing.T) (*devidp.IdP, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	idp, err := devidp.New(devidp.Options{Issuer: "http://" + ln.Addr().String(), ClientID: "warden"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = idp.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	token, err := idp.Issue(devidp.IssueOptions{Sub: "sam", Groups: []string{"soc"}, TTL: 6 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return idp, token
}

func found(t *testing.T, url, token string) bool {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// sealedMsg builds a realistic db.query event (identity, lineage, target,
// decision, statement: about 900 bytes) as a NATS message.
// benchTree is bench-host's chain and Merkle log.
type benchTree struct {
	signer *event.Signer
	key    ed25519.PrivateKey
	log    *event.MerkleLog
	// pending holds the leaves not yet in a checkpoint.
	pending [][]byte
}

func newBenchTree(t *testing.T, key ed25519.PrivateKey) *benchTree {
	return &benchTree{signer: event.NewSigner(nil, 0, ""), key: key, log: event.NewMerkleLog()}
}

// sealedMsg seals the next event; its leaf waits for checkpoint.
func (b *benchTree) sealedMsg(t *testing.T) *nats.Msg {
	m, e := sealedMsg(t, b.signer)
	leaf, err := event.LeafHash(e.Hash)
	if err != nil {
		t.Fatal(err)
	}
	b.pending = append(b.pending, leaf)
	return m
}

// checkpoint covers every event sealed so far.
func (b *benchTree) checkpoint(t *testing.T) *nats.Msg {
	return b.checkpointUpTo(t, b.log.Size()+uint64(len(b.pending)))
}

// checkpointUpTo covers the events up to seq size.
func (b *benchTree) checkpointUpTo(t *testing.T, size uint64) *nats.Msg {
	for b.log.Size() < size {
		b.log.Append(b.pending[0])
		b.pending = b.pending[1:]
	}
	proof, err := b.log.Consistency()
	if err != nil {
		t.Fatal(err)
	}
	s, err := event.NewNoteSigner("bench-host", b.key)
	if err != nil {
		t.Fatal(err)
	}
	head := event.TreeHead{Origin: "bench-host", Size: b.log.Size(), Root: b.log.Root()}
	note, err := event.SignTreeHead(s, head)
	if err != nil {
		t.Fatal(err)
	}
	cp := &event.Checkpoint{Schema: event.CheckpointSchema, ID: ulid.Make().String(), Time: time.Now().UTC(), Type: event.CheckpointType,
		Host: event.Host{ID: "bench-host", Name: "bench-host"}, Size: head.Size, Root: event.EncodeHashes([][]byte{head.Root})[0],
		PrevSize: b.log.MarkSize(), Consistency: event.EncodeHashes(proof), IntervalMS: 1000, Note: note}
	if err := b.log.MarkAt(b.log.Size()); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(cp)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(cp.Subject())
	m.Data = data
	m.Header.Set(nats.MsgIdHdr, cp.ID)
	return m
}

func sealedMsg(t *testing.T, s *event.Signer) (*nats.Msg, *event.Event) {
	e := &event.Event{
		Schema: event.Schema, ID: ulid.Make().String(), Time: time.Now().UTC(), Type: event.DBQuery,
		Host:     event.Host{ID: "bench-host", Name: "bench-host"},
		Identity: &event.Identity{Sub: "alice", Email: "alice@example.com", Groups: []string{"engineering", "oncall"}, Issuer: "https://idp.example.com", SessionID: "sess-1"},
		Process: &event.Process{ExecID: "exec-3", PID: 3000, UID: 1000, Binary: "/usr/bin/psql", Args: []string{"-h", "orders-db", "orders"}, ParentExecID: "exec-2",
			Ancestors: []event.Ancestor{{ExecID: "exec-2", PID: 2000, UID: 1000, Binary: "/bin/bash"}, {ExecID: "exec-1", PID: 1000, UID: 0, Binary: "/usr/sbin/sshd"}}},
		Target:   &event.Target{Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432"},
		Decision: &event.Decision{Action: event.Allow, Rule: "default"},
		Data:     map[string]any{"statement": "SELECT id, total FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 50", "rows": 50},
	}
	// The wire form an agent sends: canonical, with the hash member.
	p, err := event.Prepare(e)
	if err != nil {
		t.Fatal(err)
	}
	b := s.SealPrepared(e, p)
	m := nats.NewMsg(e.Subject())
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, e.ID)
	return m, e
}

// violations describes the first few integrity violations stored.
func violations(t *testing.T, c *collector.Collector) string {
	rows, err := c.Store().Query(context.Background(), store.Filter{Types: []string{string(event.IntegrityViolation)}, Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		e, err := r.Event()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%v: %v", e.Data["problem"], e.Data["detail"]))
	}
	return strings.Join(out, "; ")
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// benchEvent is a connection event shaped like the agent's.
func benchEvent(i int) *event.Event {
	return &event.Event{
		Type:     event.NetConnect,
		Identity: &event.Identity{Sub: "alice", Email: "alice@corp.example", Groups: []string{"engineering"}, Issuer: "https://idp.example", SessionID: "s1"},
		Process:  &event.Process{ExecID: "x", PID: uint32(1000 + i), Binary: "/usr/bin/psql", Args: []string{"psql", "-h", "db"}, Ancestors: []event.Ancestor{}},
		Target:   &event.Target{Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432"},
		Decision: &event.Decision{Action: event.Allow, Rule: "access"},
		Data:     map[string]any{"original_dst": "10.0.0.5:5432", "verdict": "allowed"},
	}
}
