package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/review"
)

func TestReviewSelections(t *testing.T) {
	forEachStore(t, testReviewSelections)
}

func testReviewSelections(t *testing.T, st *store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	mk := func(id string, state review.State, created time.Duration) *review.Review {
		return &review.Review{ID: id, Kind: review.KindStatement, State: state, Host: "h1", Requester: review.Person{Sub: "bob"},
			Target: "db", Rule: "r", Fingerprint: "f", Approvers: []string{"dba"}, Require: review.RequireAny, GrantOnce: true,
			CreatedAt: t0.Add(created), ExpiresAt: t0.Add(created + time.Hour)}
	}
	pending := mk("R-1", review.Pending, 0)
	onceUnused := mk("R-2", review.Approved, time.Minute)
	onceUnused.GrantUntil = at(16 * time.Minute)
	onceUsed := mk("R-3", review.Approved, 2*time.Minute)
	onceUsed.GrantUntil, onceUsed.UsedAt = at(17*time.Minute), at(3*time.Minute)
	window := mk("R-4", review.Approved, 3*time.Minute)
	window.Kind, window.GrantOnce, window.GrantUntil = review.KindAccess, false, at(63*time.Minute)
	denied := mk("R-5", review.Denied, 4*time.Minute)
	other := mk("R-6", review.Pending, 5*time.Minute)
	other.Requester.Sub = "eve"

	if err := st.UpdateReviews(ctx, func(tx *store.ReviewTx) error {
		for _, r := range []*review.Review{pending, onceUnused, onceUsed, window, denied, other} {
			if err := tx.Put(r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		f    store.ReviewFilter
		want []string
	}{
		{"all, newest first", store.ReviewFilter{}, []string{"R-6", "R-5", "R-4", "R-3", "R-2", "R-1"}},
		{"limit", store.ReviewFilter{Limit: 2}, []string{"R-6", "R-5"}},
		{"state", store.ReviewFilter{States: []review.State{review.Approved}}, []string{"R-4", "R-3", "R-2"}},
		{"kind", store.ReviewFilter{Kind: review.KindAccess}, []string{"R-4"}},
		{"requester", store.ReviewFilter{Sub: "eve"}, []string{"R-6"}},
		{"keep before limit", store.ReviewFilter{Keep: func(r *review.Review) bool { return r.State == review.Pending }, Limit: 1}, []string{"R-6"}},
		{"open at 10m", store.ReviewFilter{OpenAt: t0.Add(10 * time.Minute)}, []string{"R-6", "R-4", "R-2", "R-1"}},
		{"open at 20m", store.ReviewFilter{OpenAt: t0.Add(20 * time.Minute)}, []string{"R-6", "R-4", "R-1"}},
		{"due at 10m", store.ReviewFilter{Due: t0.Add(10 * time.Minute)}, nil},
		{"due at 16m", store.ReviewFilter{Due: t0.Add(16 * time.Minute)}, []string{"R-2"}},
		{"due at 61m", store.ReviewFilter{Due: t0.Add(61 * time.Minute)}, []string{"R-2", "R-1"}},
	}
	for _, tc := range tests {
		rs, err := st.Reviews(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rs {
			got = append(got, r.ID)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}

	// Put replaces; a failed update leaves nothing behind.
	pending.State = review.Expired
	boom := errors.New("boom")
	if err := st.UpdateReviews(ctx, func(tx *store.ReviewTx) error {
		if err := tx.Put(pending); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("update: %v", err)
	}
	if r, err := st.Review(ctx, "R-1"); err != nil || r.State != review.Pending {
		t.Fatalf("after a rolled-back update: %v %v", r, err)
	}
	if _, err := st.Review(ctx, "R-9"); !errors.Is(err, store.ErrReviewNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}
