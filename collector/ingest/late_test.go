package ingest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
)

// TestLatenessInStreamTime: events and their checkpoint that reached the
// stream close together are not late however long the collector takes
// to get to them, while a host that goes silent is late once the
// collector has read everything and the intervals pass.
func TestLatenessInStreamTime(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	msgs := benchStream(t, "h1", 20, key) // 20 events, then their checkpoint
	t0 := time.Now().Add(-time.Hour)      // a backlog an hour old
	for i, m := range msgs {
		bm := m.(*benchMsg)
		bm.at = t0.Add(time.Duration(i) * 10 * time.Millisecond)
		bm.pending = uint64(len(msgs) - 1 - i)
	}
	newIngester := func() *Ingester {
		st, err := store.Open(filepath.Join(t.TempDir(), "events.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		in, err := New(context.Background(), Config{Stream: fakeStream{}, Consumer: "test", Store: st,
			Keys: event.StaticKeys{"h1": key.Public().(ed25519.PublicKey)}, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	ctx := context.Background()
	wall := time.Now()

	// Catching up: the events are stored, the checkpoint still waits
	// (pending), and the collector's clock runs far ahead of the stream.
	in := newIngester()
	if err := in.store(ctx, in.decodeAll(msgs[:20])); err != nil {
		t.Fatal(err)
	}
	for _, idle := range []bool{false, true} {
		if err := in.checkLate(ctx, wall.Add(time.Minute), idle); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.store(ctx, in.decodeAll(msgs[20:])); err != nil {
		t.Fatal(err)
	}
	if err := in.checkLate(ctx, wall.Add(2*time.Minute), true); err != nil {
		t.Fatal(err)
	}
	if s := in.Stats(); s.Violations != 0 || s.Stored != 20 {
		t.Fatalf("backlog: stored %d, %d violations; want 20 stored, none late", s.Stored, s.Violations)
	}

	// Silent: the events are all the stream had, and no checkpoint comes.
	in = newIngester()
	if err := in.store(ctx, in.decodeAll(msgs[:20])); err != nil {
		t.Fatal(err)
	}
	in.clock.caughtUp = true // as the last message of a stream says
	if err := in.checkLate(ctx, in.clock.at.Add(time.Second), true); err != nil {
		t.Fatal(err)
	}
	if s := in.Stats(); s.Violations != 0 {
		t.Fatalf("late after one interval: %d violations", s.Violations)
	}
	if err := in.checkLate(ctx, in.clock.at.Add(5*time.Second), true); err != nil {
		t.Fatal(err)
	}
	rows, err := in.cfg.Store.Query(ctx, store.Filter{Types: []string{string(event.IntegrityViolation)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("silent host: %d violations, want one checkpoint_late", len(rows))
	}
	if e, err := rows[0].Event(); err != nil || e.Data["problem"] != string(event.CheckpointLate) {
		t.Fatalf("silent host: violation %v (%v), want checkpoint_late", e, err)
	}
}
