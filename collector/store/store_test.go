package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

// forEachStore runs fn against a fresh SQLite store and a fresh database
// on a real PostgreSQL server (the Debian package, started on loopback).
func forEachStore(t *testing.T, fn func(*testing.T, *store.Store)) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			fn(t, openStore(t, kind))
		})
	}
}

func location(t *testing.T, kind string) string {
	if kind == "postgres" {
		return harness.PostgresStore(t)
	}
	return filepath.Join(t.TempDir(), "events.db")
}

func openStore(t *testing.T, kind string) *store.Store {
	t.Helper()
	st, err := store.Open(location(t, kind))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if st.Dialect() != kind {
		t.Fatalf("opened a %s store, want %s", st.Dialect(), kind)
	}
	return st
}

// chain makes n events of host, chained by seq, one minute apart from t0.
func chain(host string, n int, t0 time.Time) []store.Record {
	var out []store.Record
	for i := range n {
		e := &event.Event{Schema: event.Schema, ID: fmt.Sprintf("01%s%022d", host[:2], i), Time: t0.Add(time.Duration(i) * time.Minute),
			Type: event.NetConnect, Host: event.Host{ID: host}, Seq: uint64(i + 1), Hash: fmt.Sprintf("h-%s-%d", host, i+1)}
		out = append(out, store.Record{Event: e, Raw: []byte(fmt.Sprintf(`{"id":%q}`, e.ID)), ChainHead: true, StreamSeq: uint64(i + 1)})
	}
	return out
}

func TestMigrationsAreVersioned(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			loc := location(t, kind)
			for range 2 { // the second open finds every version applied
				st, err := store.Open(loc)
				if err != nil {
					t.Fatal(err)
				}
				v, err := st.SchemaVersion(context.Background())
				st.Close()
				if err != nil || v != 5 {
					t.Fatalf("schema version %d (%v), want 5", v, err)
				}
			}
		})
	}
}

// Two collectors writing the same events to one database, concurrently,
// store each once; rowids follow commit order.
func TestInsertIdempotentAcrossWriters(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			loc := location(t, kind)
			a, err := store.Open(loc)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := store.Open(loc)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			recs := chain("bastion-1", 200, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			ctx := context.Background()
			var wg sync.WaitGroup
			var na, nb int
			var ea, eb error
			wg.Add(2)
			go func() {
				defer wg.Done()
				for i := 0; i < len(recs) && ea == nil; i += 10 {
					var n int
					n, ea = a.Insert(ctx, recs[i:i+10])
					na += n
				}
			}()
			go func() {
				defer wg.Done()
				for i := len(recs) - 10; i >= 0 && eb == nil; i -= 10 {
					var n int
					n, eb = b.Insert(ctx, recs[i:i+10])
					nb += n
				}
			}()
			wg.Wait()
			if ea != nil || eb != nil {
				t.Fatalf("inserts: %v, %v", ea, eb)
			}
			if na+nb != len(recs) {
				t.Fatalf("writers reported %d+%d new rows, want %d", na, nb, len(recs))
			}
			if n, err := a.Count(ctx); err != nil || n != int64(len(recs)) {
				t.Fatalf("count %d (%v), want %d", n, err, len(recs))
			}
			rows, err := b.Query(ctx, store.Filter{ByRow: true})
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(rows); i++ {
				if rows[i].RowID <= rows[i-1].RowID {
					t.Fatalf("rowids out of order at %d", i)
				}
			}
			seqs, err := a.StreamSeqs(ctx, []string{recs[7].Event.ID, "nope"})
			if err != nil || len(seqs) != 1 || seqs[recs[7].Event.ID] != 8 {
				t.Fatalf("stream seqs %v (%v)", seqs, err)
			}
			heads, err := a.ChainHeads(ctx)
			if err != nil || len(heads) != 1 || heads[0].Seq != 200 {
				t.Fatalf("chain heads %+v (%v)", heads, err)
			}
		})
	}
}

// Retention deletes in batches, records each host's anchor before its
// chain events go, and keeps every host's chain head.
func TestRetain(t *testing.T) {
	forEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		busy := chain("busy-host", 50, t0) // minutes 0..49
		idle := chain("idle-host", 3, t0)  // minutes 0..2: all old
		fresh := chain("fresh-host", 5, t0.Add(time.Hour))
		// A flagged event that is no chain head.
		junk := chain("junk-host", 1, t0)
		junk[0].ChainHead = false
		for _, recs := range [][]store.Record{busy, idle, fresh, junk} {
			if _, err := st.Insert(ctx, recs); err != nil {
				t.Fatal(err)
			}
		}
		cutoff := t0.Add(30 * time.Minute) // busy 0..29 expire
		n, err := st.Retain(ctx, cutoff, 7)
		if err != nil {
			t.Fatal(err)
		}
		// busy: 30 deleted; idle: 2 (its head stays); junk: 1.
		if n != 33 {
			t.Fatalf("deleted %d rows, want 33", n)
		}
		anchors, err := st.Anchors(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]uint64{"busy-host": 30, "idle-host": 2}
		if len(anchors) != len(want) {
			t.Fatalf("anchors %+v, want %v", anchors, want)
		}
		for _, a := range anchors {
			if want[a.HostID] != a.Seq || a.Hash != fmt.Sprintf("h-%s-%d", a.HostID, a.Seq) {
				t.Fatalf("anchor %+v, want seq %d", a, want[a.HostID])
			}
		}
		heads, err := st.ChainHeads(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]uint64{}
		for _, h := range heads {
			got[h.HostID] = h.Seq
		}
		if got["busy-host"] != 50 || got["idle-host"] != 3 || got["fresh-host"] != 5 {
			t.Fatalf("chain heads after retention: %v", got)
		}
		// The next stored busy event chains onto the anchor.
		rows, err := st.Query(ctx, store.Filter{HostID: "busy-host"})
		if err != nil || len(rows) != 20 || rows[0].ID != busy[30].Event.ID {
			t.Fatalf("busy-host rows after retention: %d, first %v (%v)", len(rows), rows, err)
		}
		// Again: nothing more to delete, anchors unchanged.
		if n, err := st.Retain(ctx, cutoff, 7); err != nil || n != 0 {
			t.Fatalf("second retention deleted %d (%v)", n, err)
		}
	})
}
