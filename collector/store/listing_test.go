package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
)

// TestListingsWalkAnIndex checks, from the database's own query plan, that
// a listing filtered on one type, target or host, in either order it is
// asked for (by id; by insertion, as console Live and following do), walks
// an index in that order and stops at the limit, instead of sorting every
// matching row (seconds for a common type on a large store). A plan, not a
// timing: the same on any machine.
func TestListingsWalkAnIndex(t *testing.T) {
	forEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		var recs []store.Record
		for i := range 500 {
			typ := []event.Type{event.NetConnect, event.ProcessExec, "db.query"}[i%3]
			e := &event.Event{Schema: event.Schema, ID: fmt.Sprintf("01J%023d", i), Time: t0.Add(time.Duration(i) * time.Second),
				Type: typ, Host: event.Host{ID: fmt.Sprintf("host-%d", i%4)}, Seq: uint64(i/4 + 1),
				Target: &event.Target{Name: fmt.Sprintf("db-%d", i%5)}}
			recs = append(recs, store.Record{Event: e, Raw: []byte(`{}`)})
		}
		if _, err := st.Insert(ctx, recs); err != nil {
			t.Fatal(err)
		}
		filters := []struct {
			name, index string
			f           store.Filter
		}{
			{"type", "events_type", store.Filter{Types: []string{"db.query"}}},
			{"target", "events_target", store.Filter{Target: "db-1"}},
			{"host", "events_host", store.Filter{HostID: "host-2"}},
			{"type+since", "events_type", store.Filter{Types: []string{"db.query"}, Since: t0.Add(time.Minute)}},
		}
		for _, c := range filters {
			for _, byRow := range []bool{false, true} {
				for _, desc := range []bool{false, true} {
					f := c.f
					f.ByRow, f.Desc, f.Limit = byRow, desc, 50
					index := c.index + "_id"
					if byRow {
						index = c.index + "_row"
					}
					name := fmt.Sprintf("%s/byRow=%v/desc=%v", c.name, byRow, desc)
					plan, err := st.Plan(ctx, f)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if !strings.Contains(plan, index) || sorts(plan) {
						t.Errorf("%s: the plan does not walk %s in order:\n%s", name, index, plan)
					}
					rows, err := st.Query(ctx, f)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if len(rows) != 50 {
						t.Errorf("%s: %d rows, want 50", name, len(rows))
					}
				}
			}
		}
		// Following: rows after a cursor, oldest first.
		f := store.Filter{Types: []string{"db.query"}, ByRow: true, AfterRow: 400, Limit: 50}
		plan, err := st.Plan(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if sorts(plan) {
			t.Errorf("follow: the plan sorts:\n%s", plan)
		}
	})
}

// sorts reports whether a plan (SQLite's or PostgreSQL's) sorts rows.
func sorts(plan string) bool {
	for _, l := range strings.Split(plan, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "->"))
		if strings.Contains(l, "TEMP B-TREE") || strings.HasPrefix(l, "Sort") || strings.HasPrefix(l, "Incremental Sort") {
			return true
		}
	}
	return false
}
