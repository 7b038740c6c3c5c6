package recorder

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
// acknowledges them. Checkpoints are skipped.
func drain(t *testing.T, sp *spool.Spool, r *spool.Reader, want int) []*event.Event {
	evs, _ := drainAll(t, sp, r, want)
	return evs
}

// drainAll is drain returning the checkpoints read too.
func drainAll(t *testing.T, sp *spool.Spool, r *spool.Reader, want int) ([]*event.Event, []*event.Checkpoint) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var evs []*event.Event
	var cps []*event.Checkpoint
	var last uint64
	for len(evs) < want {
		rec, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(evs), want, err)
		}
		last = rec.Pos
		if cp, err := event.DecodeCheckpoint(rec.Data); err == nil {
			cps = append(cps, cp)
			continue
		}
		var e event.Event
		if err := json.Unmarshal(rec.Data, &e); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, &e)
	}
	if err := sp.Ack(last); err != nil {
		t.Fatal(err)
	}
	return evs, cps
}

// verifyCheckpoints checks that each checkpoint is signed by the host's key,
// covers exactly the events before it with its root, and extends the
// previous one by its consistency proof.
func verifyCheckpoints(t *testing.T, pub ed25519.PublicKey, evs []*event.Event, cps []*event.Checkpoint) {
	t.Helper()
	var leaves [][]byte
	for _, e := range evs {
		h, err := event.LeafHash(e.Hash)
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, h)
	}
	var prev *event.TreeHead
	for _, cp := range cps {
		head, err := cp.Verify(pub)
		if err != nil {
			t.Fatalf("checkpoint %d: %v", cp.Size, err)
		}
		if head.Size > uint64(len(leaves)) || !bytes.Equal(head.Root, event.RootOf(leaves[:head.Size])) {
			t.Fatalf("checkpoint %d: root does not cover the events", cp.Size)
		}
		if prev != nil {
			if cp.PrevSize != prev.Size {
				t.Fatalf("checkpoint %d: prev_size %d, previous checkpoint %d", cp.Size, cp.PrevSize, prev.Size)
			}
			p, err := cp.ConsistencyProof()
			if err != nil {
				t.Fatal(err)
			}
			if err := event.VerifyConsistency(prev.Size, head.Size, p, prev.Root, head.Root); err != nil {
				t.Fatalf("checkpoint %d does not extend %d: %v", cp.Size, prev.Size, err)
			}
		}
		prev = &head
	}
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
				if err := rec.Emit(query(w*per + i)); err != nil {
					t.Error(err)
				}
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

	// Fill the spool; nothing drains it. Emit tells the caller each
	// loss, and the recorder counts the same ones.
	var stored, lost int
	for lost < 25 {
		switch err := rec.Emit(query(stored + lost)); {
		case errors.Is(err, spool.ErrFull):
			lost++
		case err != nil:
			t.Fatalf("event %d: %v", stored+lost, err)
		default:
			stored++
		}
	}
	if got := rec.Losses()[LossKey{SourceRecorder, ReasonSpoolFull}]; got != uint64(lost) {
		t.Fatalf("counted %d spool_full losses, Emit returned %d", got, lost)
	}
	// An event that cannot be encoded is a loss too, not a panic or a gap.
	bad := query(0)
	bad.Data["x"] = math.NaN()
	if err := rec.Emit(bad); !errors.Is(err, ErrEncode) || errors.Is(err, spool.ErrFull) {
		t.Fatalf("Emit of an unencodable event: %v, want ErrEncode", err)
	}
	if got := rec.Losses()[LossKey{SourceRecorder, ReasonEncode}]; got != 1 {
		t.Fatalf("encode losses %d, want 1", got)
	}
	if got := rec.PendingLosses(); got != uint64(lost+1) {
		t.Fatalf("pending losses %d, want %d", got, lost+1)
	}
	// What was stored, with the warning given on the way to full.
	evs := drain(t, sp, r, stored+1)
	if found, _ := pressureEvents(t, evs); len(found) != 1 {
		t.Fatalf("%d agent.spool_pressure events on the way to a full spool", len(found))
	}

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
	if err := rec.Emit(query(-1)); err != nil {
		t.Fatalf("Emit once the spool has room again: %v", err)
	}
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
		if err := rec.Emit(query(i)); err != nil {
			t.Fatal(err)
		}
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
		if err := rec.Emit(query(10 + i)); err != nil {
			t.Fatal(err)
		}
	}
	rec.Close() // signs the last checkpoint
	r := sp.NewReader()
	defer r.Close()
	evs, cps := drainAll(t, sp, r, 20)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if rec, err := r.Next(ctx); err != nil {
		t.Fatalf("no record after the events: %v", err)
	} else if cp, err := event.DecodeCheckpoint(rec.Data); err != nil {
		t.Fatalf("the record after the events is not a checkpoint: %v", err)
	} else {
		cps = append(cps, cp)
	}
	verifyAll(t, event.NewVerifier(event.StaticKeys{host.ID: pub}), evs)
	// One checkpoint at each Close, the second extending the first
	// across the restart.
	if len(cps) != 2 || cps[0].Size != 10 || cps[1].Size != 20 {
		t.Fatalf("checkpoints %v, want sizes 10 and 20", cps)
	}
	verifyCheckpoints(t, pub, evs, cps)

	// Emitting after Close is a counted loss.
	rec.Close()
	if err := rec.Emit(query(99)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Emit after Close: %v, want ErrClosed", err)
	}
	if rec.Losses()[LossKey{SourceRecorder, ReasonClosed}] != 1 {
		t.Fatalf("losses %v", rec.Losses())
	}
	if err := rec.EmitSync(ctx, query(100)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("EmitSync after close: %v", err)
	}
}

// copyDir copies a directory tree: the disk as a crash leaves it (the
// agent's writes are in the page cache, which survives the process).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from+"/.", to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
}

// A crashed agent (no Close, no last checkpoint) rebuilds its Merkle log
// from the tree state and the spool: the next checkpoint extends the last
// one across the crash.
func TestTreeSurvivesCrash(t *testing.T) {
	pub, priv := newKey(t)
	dir := t.TempDir()
	sp := openSpool(t, dir, spool.Options{})
	rec, err := New(Options{Host: host, Key: priv, Spool: sp, Logger: zerolog.Nop(), CheckpointInterval: time.Hour, CheckpointEvents: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 { // checkpoints at 5 and 10; 11 and 12 only in the spool
		if err := rec.EmitSync(context.Background(), query(i)); err != nil {
			t.Fatal(err)
		}
	}
	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	os.Remove(filepath.Join(crashed, "lock"))
	rec.Close()

	sp2 := openSpool(t, crashed, spool.Options{})
	rec2, err := New(Options{Host: host, Key: priv, Spool: sp2, Logger: zerolog.Nop(), CheckpointInterval: time.Hour, CheckpointEvents: 5})
	if err != nil {
		t.Fatal(err)
	}
	if seq, _ := rec2.Head(); seq != 12 {
		t.Fatalf("recovered head seq %d, want 12", seq)
	}
	for i := range 3 {
		if err := rec2.Emit(query(12 + i)); err != nil {
			t.Fatal(err)
		}
	}
	rec2.Close()
	r := sp2.NewReader()
	defer r.Close()
	evs, cps := drainAll(t, sp2, r, 15)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if rec, err := r.Next(ctx); err == nil {
		if cp, err := event.DecodeCheckpoint(rec.Data); err == nil {
			cps = append(cps, cp)
		}
	}
	verifyAll(t, event.NewVerifier(event.StaticKeys{host.ID: pub}), evs)
	var sizes []uint64
	for _, cp := range cps {
		sizes = append(sizes, cp.Size)
	}
	if !slices.Equal(sizes, []uint64{5, 10, 15}) {
		t.Fatalf("checkpoint sizes %v, want 5, 10, 15", sizes)
	}
	verifyCheckpoints(t, pub, evs, cps)
}

// fill emits queries numbered from first until the spool is full. It
// returns how many were stored and the number of the first one after
// which the spool held at least PressurePercent of its bound.
func fill(t *testing.T, rec *Recorder, sp *spool.Spool, first int) (stored, crossedAt int) {
	t.Helper()
	crossedAt = -1
	for i := first; ; i++ {
		err := rec.Emit(query(i))
		if errors.Is(err, spool.ErrFull) {
			return stored, crossedAt
		}
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		stored++
		if st := sp.Stats(); crossedAt < 0 && st.Bytes*100 >= st.MaxBytes*PressurePercent {
			crossedAt = i
		}
		if stored > 100000 {
			t.Fatal("spool never filled")
		}
	}
}

// pressureEvents returns the agent.spool_pressure events in evs, each with
// the event before it.
func pressureEvents(t *testing.T, evs []*event.Event) (found, before []*event.Event) {
	t.Helper()
	for i, e := range evs {
		if e.Type == event.AgentSpoolPressure {
			if i == 0 {
				t.Fatal("agent.spool_pressure is the first event")
			}
			found, before = append(found, e), append(before, evs[i-1])
		}
	}
	return found, before
}

func TestSpoolPressureAndRecovery(t *testing.T) {
	pub, priv := newKey(t)
	const maxBytes = 64 << 10
	sp := openSpool(t, t.TempDir(), spool.Options{MaxBytes: maxBytes, SegmentBytes: 16 << 10})
	rec := newRecorder(t, sp, priv)
	r := sp.NewReader()
	defer r.Close()
	v := event.NewVerifier(event.StaticKeys{host.ID: pub})

	stored, crossedAt := fill(t, rec, sp, 0)
	if crossedAt < 0 {
		t.Fatal("the spool filled up without passing the pressure threshold")
	}
	// Every stored query and exactly one pressure event, right after the
	// query that crossed the threshold.
	evs := drain(t, sp, r, stored+1)
	verifyAll(t, v, evs)
	found, before := pressureEvents(t, evs)
	if len(found) != 1 {
		t.Fatalf("%d agent.spool_pressure events for one crossing", len(found))
	}
	if got, want := before[0].Data["statement"], fmt.Sprintf("SELECT %d", crossedAt); got != want {
		t.Fatalf("pressure event follows %v, want the crossing query %q", got, want)
	}
	d := found[0].Data
	if fmt.Sprint(d["max_bytes"]) != fmt.Sprint(maxBytes) {
		t.Fatalf("pressure event data %v", d)
	}
	pct, _ := strconv.Atoi(fmt.Sprint(d["percent"]))
	bytes, _ := strconv.Atoi(fmt.Sprint(d["bytes"]))
	if pct < PressurePercent || pct > 100 || bytes*100/maxBytes != pct {
		t.Fatalf("pressure event data %v", d)
	}

	// Everything read is acknowledged: the acknowledged segments are
	// deleted, the spool has room again and Emit succeeds, with no
	// restart. The fall below RelievedPercent rearms the warning.
	if st := sp.Stats(); st.Bytes*100 >= maxBytes*RelievedPercent {
		t.Fatalf("after a full ack the spool still holds %d of %d bytes", st.Bytes, st.MaxBytes)
	}
	stored2, crossedAt2 := fill(t, rec, sp, 1_000_000)
	if stored2 == 0 || crossedAt2 < 0 {
		t.Fatalf("after the ack: %d stored, crossed at %d", stored2, crossedAt2)
	}
	// The first fill's losses are reported first, then the second fill.
	evs = drain(t, sp, r, stored2+2)
	verifyAll(t, v, evs)
	if evs[0].Type != event.AgentLoss || fmt.Sprint(evs[0].Data["count"]) != "1" {
		t.Fatalf("first event after recovery: %s %v, want the agent.loss of the one refused event", evs[0].Type, evs[0].Data)
	}
	found, before = pressureEvents(t, evs)
	if len(found) != 1 || before[0].Data["statement"] != fmt.Sprintf("SELECT %d", crossedAt2) {
		t.Fatalf("second crossing: %d pressure events (%v)", len(found), before)
	}
}

func TestSpoolGauges(t *testing.T) {
	_, priv := newKey(t)
	sp := openSpool(t, t.TempDir(), spool.Options{MaxBytes: 1 << 20})
	rec := newRecorder(t, sp, priv)
	for i := range 10 {
		if err := rec.Emit(query(i)); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(rec)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	st := sp.Stats()
	if got["warden_spool_bytes"] != float64(st.Bytes) || got["warden_spool_max_bytes"] != 1<<20 ||
		got["warden_spool_used_ratio"] != float64(st.Bytes)/(1<<20) || st.Bytes == 0 {
		t.Fatalf("gauges %v, spool %+v", got, st)
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
		if err := rec.Emit(query(i)); err != nil {
			b.Fatal(err)
		}
	}
	if l := rec.Losses(); len(l) != 0 {
		b.Fatalf("losses: %v", l)
	}
}

// BenchmarkEmitParallel is BenchmarkEmit from concurrent producers, as one
// per proxied connection: the chain lock is held across the spool append.
func BenchmarkEmitParallel(b *testing.B) {
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
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := rec.Emit(query(i)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// The tree state file is written behind the chain, so a crash can leave
// it one checkpoint behind the spool: recovery marks the tree at the
// newest checkpoint the spool holds, and the next checkpoint extends that
// one.
func TestTreeStateBehindCheckpoint(t *testing.T) {
	pub, priv := newKey(t)
	dir := t.TempDir()
	sp := openSpool(t, dir, spool.Options{})
	opts := Options{Host: host, Key: priv, Spool: sp, Logger: zerolog.Nop(), CheckpointInterval: time.Hour, CheckpointEvents: 5}
	rec, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 { // the checkpoint at 5
		if err := rec.EmitSync(context.Background(), query(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The state at 5, once the writer has written it (flush waits for it).
	rec.mu.Lock()
	if err := rec.treeFile.flush(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Unlock()
	atFive, err := os.ReadFile(filepath.Join(dir, TreeFileName))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 7 { // the checkpoint at 10; 11 and 12 only in the spool
		if err := rec.EmitSync(context.Background(), query(5+i)); err != nil {
			t.Fatal(err)
		}
	}
	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	os.Remove(filepath.Join(crashed, "lock"))
	if err := os.WriteFile(filepath.Join(crashed, TreeFileName), atFive, 0o600); err != nil {
		t.Fatal(err)
	}
	rec.Close()

	sp2 := openSpool(t, crashed, spool.Options{})
	opts.Spool = sp2
	rec2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if seq, _ := rec2.Head(); seq != 12 {
		t.Fatalf("recovered head seq %d, want 12", seq)
	}
	if m := rec2.tree.MarkSize(); m != 10 {
		t.Fatalf("recovered tree marked at %d, want the spool's last checkpoint, 10", m)
	}
	for i := range 3 {
		if err := rec2.Emit(query(12 + i)); err != nil {
			t.Fatal(err)
		}
	}
	rec2.Close()
	r := sp2.NewReader()
	defer r.Close()
	evs, cps := drainAll(t, sp2, r, 15)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if rec, err := r.Next(ctx); err == nil {
		if cp, err := event.DecodeCheckpoint(rec.Data); err == nil {
			cps = append(cps, cp)
		}
	}
	var sizes []uint64
	for _, cp := range cps {
		sizes = append(sizes, cp.Size)
	}
	if !slices.Equal(sizes, []uint64{5, 10, 15}) {
		t.Fatalf("checkpoint sizes %v, want 5, 10, 15", sizes)
	}
	verifyCheckpoints(t, pub, evs, cps)
}
