package store_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

// BenchmarkListing300k reports the median time of the listings the
// console and /v1/events run, on a store of 300,000 events (40% db.query,
// 8 hosts, 20 targets); set WARDEN_TEST_STORE=postgres for PostgreSQL.
// Filling the store is not timed.
func BenchmarkListing300k(b *testing.B) {
	const n = 300_000
	ctx := context.Background()
	st, err := store.Open(harness.StoreLocation(b, b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	types := []event.Type{"db.query", "db.query", event.NetConnect, event.ProcessExec, "db.query", "file.open", "db.query", event.NetConnect, "ssh.command", "db.query"}
	raw := []byte(`{"id":"x","padding":"` + fmt.Sprintf("%0200d", 0) + `"}`)
	for i := 0; i < n; i += 1000 {
		var recs []store.Record
		for j := i; j < i+1000; j++ {
			// ids in time order, as ULIDs are; inserted roughly so.
			e := &event.Event{Schema: event.Schema, ID: fmt.Sprintf("01J%023d", j), Time: t0.Add(time.Duration(j) * 10 * time.Millisecond),
				Type: types[j%len(types)], Host: event.Host{ID: fmt.Sprintf("host-%d", j%8)}, Seq: uint64(j/8 + 1),
				Identity: &event.Identity{Sub: fmt.Sprintf("user-%d", j%13), Email: fmt.Sprintf("u%d@example.com", j%13)},
				Target:   &event.Target{Name: fmt.Sprintf("db-%d", j%20)}}
			recs = append(recs, store.Record{Event: e, Raw: raw})
		}
		if _, err := st.Insert(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	cases := []struct {
		name string
		f    store.Filter
	}{
		{"type/row-desc", store.Filter{Types: []string{"db.query"}, ByRow: true, Desc: true}},
		{"type/id-desc", store.Filter{Types: []string{"db.query"}, Desc: true}},
		{"type/id-asc", store.Filter{Types: []string{"db.query"}}},
		{"type-since/id-asc", store.Filter{Types: []string{"db.query"}, Since: t0.Add(40 * time.Minute)}},
		{"host/row-desc", store.Filter{HostID: "host-3", ByRow: true, Desc: true}},
		{"target/id-desc", store.Filter{Target: "db-7", Desc: true}},
		{"user/id-desc", store.Filter{User: "user-5", Desc: true}},
		{"type/follow", store.Filter{Types: []string{"db.query"}, ByRow: true, AfterRow: n - 500}},
	}
	b.ResetTimer()
	for range b.N {
		for _, c := range cases {
			f := c.f
			f.Limit = 200
			var d []time.Duration
			for range 7 {
				start := time.Now()
				if _, err := st.Query(ctx, f); err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(start))
			}
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, c.name+"-ms")
		}
	}
}
