package ingest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

// benchMsg is a stream message with the metadata the ingester reads.
type benchMsg struct {
	jetstream.Msg
	subject string
	data    []byte
	seq     uint64
	// at is when it reached the stream (zero: now); pending how many
	// messages the consumer had yet to deliver after it.
	at      time.Time
	pending uint64
}

func (m *benchMsg) Subject() string { return m.subject }
func (m *benchMsg) Data() []byte    { return m.data }
func (m *benchMsg) Ack() error      { return nil }
func (m *benchMsg) Nak() error      { return nil }
func (m *benchMsg) Metadata() (*jetstream.MsgMetadata, error) {
	at := m.at
	if at.IsZero() {
		at = time.Now()
	}
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}, Timestamp: at, NumPending: m.pending}, nil
}

// benchStream is one host's sealed events with a signed checkpoint after
// every 1,000, as an agent publishes them.
func benchStream(b testing.TB, host string, n int, key ed25519.PrivateKey) []jetstream.Msg {
	signer := event.NewSigner(nil, 0, "")
	log := event.NewMerkleLog()
	ns, err := event.NewNoteSigner(host, key)
	if err != nil {
		b.Fatal(err)
	}
	var out []jetstream.Msg
	add := func(subject string, data []byte) {
		out = append(out, &benchMsg{subject: subject, data: data, seq: uint64(len(out) + 1)})
	}
	for i := range n {
		e := &event.Event{
			Schema: event.Schema, ID: ulid.Make().String(), Time: time.Now().UTC(), Type: event.DBQuery,
			Host:     event.Host{ID: host, Name: host},
			Identity: &event.Identity{Sub: "alice", Email: "alice@example.com", Groups: []string{"engineering", "oncall"}, Issuer: "https://idp.example.com", SessionID: "sess-1"},
			Process: &event.Process{ExecID: "exec-3", PID: 3000, UID: 1000, Binary: "/usr/bin/psql", Args: []string{"-h", "orders-db", "orders"}, ParentExecID: "exec-2",
				Ancestors: []event.Ancestor{{ExecID: "exec-2", PID: 2000, UID: 1000, Binary: "/bin/bash"}, {ExecID: "exec-1", PID: 1000, UID: 0, Binary: "/usr/sbin/sshd"}}},
			Target:   &event.Target{Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432"},
			Decision: &event.Decision{Action: event.Allow, Rule: "default"},
			Data:     map[string]any{"statement": "SELECT id, total FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 50", "rows": 50},
		}
		p, err := event.Prepare(e)
		if err != nil {
			b.Fatal(err)
		}
		add(e.Subject(), signer.SealPrepared(e, p))
		leaf, err := event.LeafHash(e.Hash)
		if err != nil {
			b.Fatal(err)
		}
		log.Append(leaf)
		if (i+1)%event.DefaultCheckpointEvents != 0 && i != n-1 {
			continue
		}
		proof, err := log.Consistency()
		if err != nil {
			b.Fatal(err)
		}
		head := event.TreeHead{Origin: host, Size: log.Size(), Root: log.Root()}
		note, err := event.SignTreeHead(ns, head)
		if err != nil {
			b.Fatal(err)
		}
		cp := &event.Checkpoint{Schema: event.CheckpointSchema, ID: ulid.Make().String(), Time: time.Now().UTC(), Type: event.CheckpointType,
			Host: event.Host{ID: host, Name: host}, Size: head.Size, Root: event.EncodeHashes([][]byte{head.Root})[0],
			PrevSize: log.MarkSize(), Consistency: event.EncodeHashes(proof), IntervalMS: 1000, Note: note}
		if err := log.MarkAt(log.Size()); err != nil {
			b.Fatal(err)
		}
		data, err := json.Marshal(cp)
		if err != nil {
			b.Fatal(err)
		}
		add(cp.Subject(), data)
	}
	return out
}

// BenchmarkProcess measures the collector's cost per event from a batch of
// received messages to committed rows: decode, hash checks, chain and tree
// checks, the store transaction. It reports CPU and wall time per event;
// set WARDEN_TEST_STORE=postgres for PostgreSQL.
func BenchmarkProcess(b *testing.B) {
	const n = 20000
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	msgs := benchStream(b, "bench-host", n, key)
	keys := event.StaticKeys{"bench-host": key.Public().(ed25519.PublicKey)}
	ctx := context.Background()
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		st, err := store.Open(harness.StoreLocation(b, b.TempDir()))
		if err != nil {
			b.Fatal(err)
		}
		in, err := New(ctx, Config{Stream: fakeStream{}, Consumer: "bench", Store: st, Keys: keys, Logger: zerolog.Nop()})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cpu0 := cpuTime()
		for i := 0; i < len(msgs); i += in.cfg.BatchSize {
			if err := in.store(ctx, in.decodeAll(msgs[i:min(i+in.cfg.BatchSize, len(msgs))])); err != nil {
				b.Fatal(err)
			}
		}
		cpu += cpuTime() - cpu0
		b.StopTimer()
		if s := in.Stats(); s.Violations != 0 || s.Stored != n {
			b.Fatalf("stored %d, %d violations; want %d, 0", s.Stored, s.Violations, n)
		}
		st.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
	// CPU time is steadier than wall time on a shared machine.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*n), "cpu-ns/event")
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fakeStream satisfies Config; process never touches the stream.
type fakeStream struct{ jetstream.Stream }
