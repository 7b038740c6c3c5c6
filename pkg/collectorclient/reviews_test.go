package collectorclient

import (
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/review"
)

func TestWriteReviews(t *testing.T) {
	now := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	until, used := now.Add(10*time.Minute), now.Add(-time.Minute)
	rs := []review.Review{
		{ID: "R-A", Kind: review.KindStatement, State: review.Approved, Requester: review.Person{Sub: "bob", Email: "bob@example.com"},
			Target: "orders-db", Rule: "unbounded-writes", Statement: "DELETE FROM t\nWHERE true", GrantOnce: true,
			GrantUntil: &until, UsedAt: &used, CreatedAt: now.Add(-3 * time.Hour)},
		{ID: "R-B", Kind: review.KindAccess, State: review.Approved, Requester: review.Person{Sub: "carol"},
			Target: "orders-db", Rule: review.AccessRule, Reason: "incident 42", GrantFor: review.Duration(time.Hour),
			GrantUntil: &used, CreatedAt: now.Add(-90 * time.Second)},
		{ID: "R-C", Kind: review.KindStatement, State: review.Pending, Requester: review.Person{Sub: "dan"},
			Target: "db", Rule: "r", Statement: strings.Repeat("x", 100), CreatedAt: now.Add(-72 * time.Hour)},
	}
	var b strings.Builder
	if err := WriteReviews(&b, rs, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("table:\n%s", b.String())
	}
	for i, want := range [][]string{
		{"R-A", "approved,used", "bob@example.com", "3h", "DELETE FROM t WHERE true"},
		{"R-B", "approved,ended", "carol", "1m", "1h0m0s: incident 42"},
		{"R-C", "pending", "3d", strings.Repeat("x", 59) + "…"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("row %d %q lacks %q", i+1, lines[i+1], w)
			}
		}
	}
}
