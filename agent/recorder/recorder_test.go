package recorder

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/pkg/event"
)

const deadline = 30 * time.Second

var host = event.Host{ID: "bastion-1", Name: "bastion-1.example"}

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func openSpool(t *testing.T, dir string, opts spool.Options) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

func newRecorder(t *testing.T, sp *spool.Spool, key ed25519.PrivateKey) *Recorder {
	t.Helper()
	r, err := New(Options{Host: host, Key: key, Spool: sp, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func query(i int) *event.Event {
	return &event.Event{
		Type:   event.DBQuery,
		Target: &event.Target{Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432"},
		Data:   map[string]any{"statement": fmt.Sprintf("SELECT %d", i), "rows": i},
	}
}

// drain reads every durable record from r until want events are read, and
// acknowledges them.
func drain(t *testing.T, sp *spool.Spool, r *spool.Reader, want int) []*event.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var evs []*event.Event
	var last uint64
	for len(evs) < want {
		rec, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(evs), want, err)
		}
		var e event.Event
		if err := json.Unmarshal(rec.Data, &e); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, &e)
		last = rec.Pos
	}
	if err := sp.Ack(last); err != nil {
		t.Fatal(err)
	}
	return evs
}

func verifyAll(t *testing.T, v *event.Verifier, evs []*event.Event) {
	t.Helper()
	for _, e := range evs {
		if ps := v.Check(e); len(ps) != 0 {
			t.Fatalf("event seq %d (%s): %v", e.Seq, e.Type, ps)
		}
	}
}

func TestEmitStampsSealsAndOrders(t *testing.T) {
	pub, priv := newKey(t)
	sp := openSpool(t, t.TempDir(), spool.Options{})
	rec := newRecorder(t, sp, priv)

	const writers, per = 8, 250
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				rec.Emit(query(w*per + i))
			}
		})
	}
	wg.Wait()
	r := sp.NewReader()
	defer r.Close()
	evs := drain(t, sp, r, writers*per)
	v := event.NewVerifier(event.StaticKeys{host.ID: pub})
	verifyAll(t, v, evs)
	ids := map[string]bool{}
	for i, e := range evs {
		if e.Seq != uint64(i+1) || e.Schema != event.Schema || e.Host != host || e.ID == "" || e.Time.Location() != time.UTC {
			t.Fatalf("event %d badly stamped: %+v", i, e)
		}
		if i > 0 && e.ID <= evs[i-1].ID {
			t.Fatalf("ULIDs not monotonic: %s after %s", e.ID, evs[i-1].ID)
		}
		ids[e.ID] = true
	}
	if len(ids) != writers*per {
		t.Fatalf("%d distinct ids for %d events", len(ids), writers*per)
	}
	if len(rec.Losses()) != 0 {
		t.Fatalf("losses: %v", rec.Losses())
	}
	// EmitSync returns once durable.
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := rec.EmitSync(ctx, query(-1)); err != nil {
		t.Fatal(err)
	}
	verifyAll(t, v, drain(t, sp, r, 1))
}

func TestLossIsCountedAndReported(t *testing.T) {
	pub, priv := newKey(t)
	sp := openSpool(t, t.TempDir(), spool.Options{MaxBytes: 64 << 10, SegmentBytes: 16 << 10})
	rec := newRecorder(t, sp, priv)
	r := sp.NewReader()
	defer r.Close()

	// Fill the spool; nothing drains it.
	var stored, lost int
	for lost < 25 {
		rec.Emit(query(stored + lost))
		if l := rec.Losses()[LossKey{SourceRecorder, ReasonSpoolFull}]; int(l) > lost {
			lost = int(l)
		} else {
			stored++
		}
	}
	// An event that cannot be encoded is a loss too, not a panic or a gap.
	bad := query(0)
	bad.Data["x"] = math.NaN()
	rec.Emit(bad)
	if got := rec.Losses()[LossKey{SourceRecorder, ReasonEncode}]; got != 1 {
		t.Fatalf("encode losses %d, want 1", got)
	}
	if got := rec.PendingLosses(); got != uint64(lost+1) {
		t.Fatalf("pending losses %d, want %d", got, lost+1)
	}
	evs := drain(t, sp, r, stored)

	// Space is back. Without any new Emit, the retry loop reports the
	// losses: one agent.loss per reason, linked into the chain.
	loss := drain(t, sp, r, 2)
	byReason := map[string]*event.Event{}
	for _, e := range loss {
		if e.Type != event.AgentLoss {
			t.Fatalf("got %s, want agent.loss", e.Type)
		}
		byReason[e.Data["reason"].(string)] = e
	}
	full := byReason[ReasonSpoolFull]
	if full == nil || fmt.Sprint(full.Data["count"]) != fmt.Sprint(lost) || full.Data["source"] != SourceRecorder {
		t.Fatalf("spool_full report: %+v", full)
	}
	if types := full.Data["types"].(map[string]any); fmt.Sprint(types["db.query"]) != fmt.Sprint(lost) {
		t.Fatalf("types %v", types)
	}
	if enc := byReason[ReasonEncode]; enc == nil || fmt.Sprint(enc.Data["count"]) != "1" {
		t.Fatalf("encode report: %+v", enc)
	}
	if rec.PendingLosses() != 0 {
		t.Fatalf("pending losses %d after report", rec.PendingLosses())
	}
	rec.Emit(query(-1))
	evs = append(evs, loss...)
	evs = append(evs, drain(t, sp, r, 1)...)
	// No lost event left a hole in the chain.
	verifyAll(t, event.NewVerifier(event.StaticKeys{host.ID: pub}), evs)
	t.Logf("stored %d, lost %d (spool full) + 1 (encode), reported in %d agent.loss events", stored, lost, len(loss))
}

func TestChainContinuesAfterRestart(t *testing.T) {
	pub, priv := newKey(t)
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := New(Options{Host: host, Key: priv, Spool: sp, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		rec.Emit(query(i))
	}
	rec.Close()
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	sp = openSpool(t, dir, spool.Options{})
	rec = newRecorder(t, sp, priv)
	if seq, _ := rec.Head(); seq != 10 {
		t.Fatalf("recovered head seq %d, want 10", seq)
	}
	for i := range 10 {
		rec.Emit(query(10 + i))
	}
	r := sp.NewReader()
	defer r.Close()
	evs := drain(t, sp, r, 20)
	verifyAll(t, event.NewVerifier(event.StaticKeys{host.ID: pub}), evs)

	// Emitting after Close is a counted loss.
	rec.Close()
	rec.Emit(query(99))
	if rec.Losses()[LossKey{SourceRecorder, ReasonClosed}] != 1 {
		t.Fatalf("losses %v", rec.Losses())
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := rec.EmitSync(ctx, query(100)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("EmitSync after close: %v", err)
	}
}

// BenchmarkEmit measures stamping, sealing and spooling one db.query event
// (the disk sync is amortised by group commit).
func BenchmarkEmit(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	sp, err := spool.Open(b.TempDir(), spool.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	rec, err := New(Options{Host: host, Key: priv, Spool: sp, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer rec.Close()
	for i := 0; b.Loop(); i++ {
		rec.Emit(query(i))
	}
	if l := rec.Losses(); len(l) != 0 {
		b.Fatalf("losses: %v", l)
	}
}
