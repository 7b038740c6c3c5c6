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
// a listing filtered on one type, target or user by id, and on one type
// by insertion (as console Live and following do), walks an index in that
// order and stops at the limit, instead of sorting every
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
				Target: &event.Target{Name: fmt.Sprintf("db-%d", i%5)}, Identity: &event.Identity{}}
			// alice is the sub of every 6th, the email of every 10th.
			if i%6 == 0 {
				e.Identity.Sub = "alice"
			}
			if i%10 == 0 {
				e.Identity.Email = "alice"
			}
			recs = append(recs, store.Record{Event: e, Raw: []byte(`{}`)})
		}
		if _, err := st.Insert(ctx, recs); err != nil {
			t.Fatal(err)
		}
		// The (filter, order) pairs migration 5 serves from an index in
		// order; by insertion only for type, the filter matching the most rows.
		cases := []struct {
			name, index string
			f           store.Filter
		}{
			{"type/id", "events_type_id", store.Filter{Types: []string{"db.query"}}},
			{"type/row", "events_type_row", store.Filter{Types: []string{"db.query"}, ByRow: true}},
			{"target/id", "events_target_id", store.Filter{Target: "db-1"}},
		}
		for _, c := range cases {
			for _, desc := range []bool{false, true} {
				f := c.f
				f.Desc, f.Limit = desc, 50
				name := fmt.Sprintf("%s/desc=%v", c.name, desc)
				plan, err := st.Plan(ctx, f)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !strings.Contains(plan, c.index) || sorts(plan) {
					t.Errorf("%s: the plan does not walk %s in order:\n%s", name, c.index, plan)
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
		// A user is a sub or an email: two index walks, merged.
		var want []string
		for i := 499; i >= 0; i-- {
			if i%6 == 0 || i%10 == 0 {
				want = append(want, recs[i].Event.ID)
			}
		}
		for _, limit := range []int{10, 1000} {
			f := store.Filter{User: "alice", Desc: true, Limit: limit}
			plan, err := st.Plan(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(plan, "events_sub_id") || !strings.Contains(plan, "events_email_id") {
				t.Errorf("user: the plan does not walk events_sub_id and events_email_id:\n%s", plan)
			}
			rows, err := st.Query(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rows {
				got = append(got, r.ID)
			}
			if w := want[:min(limit, len(want))]; strings.Join(got, ",") != strings.Join(w, ",") {
				t.Errorf("user alice, limit %d: got %d events %v, want %d %v", limit, len(got), got, len(w), w)
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
