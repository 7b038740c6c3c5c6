package review

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)

var (
	bob     = Person{Sub: "bob", Email: "bob@example.com", Groups: []string{"dba", "engineering"}}
	alice   = Person{Sub: "alice", Email: "alice@example.com", Groups: []string{"dba"}}
	sam     = Person{Sub: "sam", Groups: []string{"security"}}
	both    = Person{Sub: "olga", Groups: []string{"security", "dba"}}
	outside = Person{Sub: "eve", Groups: []string{"engineering"}}
)

func pending(req Require, once bool) *Review {
	return &Review{
		ID: "R-01JFAKE0000000000000000000", Kind: KindStatement, State: Pending, Host: "bastion-1",
		Requester: bob, Target: "orders-db", Rule: "unbounded-writes",
		Approvers: []string{"dba", "security"}, Require: req, GrantOnce: once, GrantFor: Duration(time.Hour),
		CreatedAt: t0, ExpiresAt: t0.Add(PendingLifetime),
	}
}

func decide(r *Review, p Person, approve bool) {
	r.Decisions = append(r.Decisions, Decision{By: p, Approve: approve, At: t0, For: r.Decider(p)})
}

func TestSettle(t *testing.T) {
	now := t0.Add(time.Minute)
	tests := []struct {
		name      string
		require   Require
		once      bool
		deciders  []Person
		approve   []bool
		want      State
		changed   bool
		wantUntil time.Time
	}{
		{"no decision", RequireAny, true, nil, nil, Pending, false, time.Time{}},
		{"any: one approval", RequireAny, true, []Person{alice}, []bool{true}, Approved, true, now.Add(OnceWindow)},
		{"any: denial", RequireAny, true, []Person{alice}, []bool{false}, Denied, true, time.Time{}},
		{"all: one group is not enough", RequireAll, true, []Person{alice}, []bool{true}, Pending, false, time.Time{}},
		{"all: one from each group", RequireAll, true, []Person{alice, sam}, []bool{true, true}, Approved, true, now.Add(OnceWindow)},
		{"all: a member of both groups", RequireAll, true, []Person{both}, []bool{true}, Approved, true, now.Add(OnceWindow)},
		{"all: a denial after an approval", RequireAll, true, []Person{alice, sam}, []bool{true, false}, Denied, true, time.Time{}},
		{"window grant", RequireAny, false, []Person{sam}, []bool{true}, Approved, true, now.Add(time.Hour)},
		{"the requester counts for nothing", RequireAny, true, []Person{bob}, []bool{true}, Pending, false, time.Time{}},
		{"outsider counts for nothing", RequireAny, true, []Person{outside}, []bool{true}, Pending, false, time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := pending(tc.require, tc.once)
			for i, p := range tc.deciders {
				decide(r, p, tc.approve[i])
			}
			if got := r.Settle(now); got != tc.changed {
				t.Errorf("Settle changed = %v, want %v", got, tc.changed)
			}
			if r.State != tc.want {
				t.Errorf("state = %s, want %s", r.State, tc.want)
			}
			if tc.wantUntil.IsZero() {
				if r.GrantUntil != nil {
					t.Errorf("GrantUntil = %v, want none", *r.GrantUntil)
				}
			} else if r.GrantUntil == nil || !r.GrantUntil.Equal(tc.wantUntil) {
				t.Errorf("GrantUntil = %v, want %v", r.GrantUntil, tc.wantUntil)
			}
			if tc.changed && (r.DecidedAt == nil || !r.DecidedAt.Equal(now)) {
				t.Errorf("DecidedAt = %v, want %v", r.DecidedAt, now)
			}
			// A settled review never changes again.
			if tc.changed && r.Settle(now.Add(time.Second)) {
				t.Error("Settle changed a review that was already settled")
			}
		})
	}
}

func TestDecider(t *testing.T) {
	r := pending(RequireAny, true)
	tests := []struct {
		p    Person
		want []string
	}{
		{bob, nil}, // requester, although in dba
		{alice, []string{"dba"}},
		{both, []string{"dba", "security"}},
		{outside, nil},
		{Person{Groups: []string{"dba"}}, nil}, // no sub: nobody
	}
	for _, tc := range tests {
		if got := r.Decider(tc.p); !slices.Equal(got, tc.want) {
			t.Errorf("Decider(%s) = %v, want %v", tc.p.Sub, got, tc.want)
		}
	}
}

func TestExpireAndLive(t *testing.T) {
	approvedAt := t0.Add(time.Minute)
	tests := []struct {
		name    string
		make    func() *Review
		at      time.Time
		expired bool
		live    bool
	}{
		{"pending before its end", func() *Review { return pending(RequireAny, true) }, t0.Add(PendingLifetime - time.Second), false, false},
		{"pending at its end", func() *Review { return pending(RequireAny, true) }, t0.Add(PendingLifetime), true, false},
		{"once, unused, in window", func() *Review {
			r := pending(RequireAny, true)
			decide(r, alice, true)
			r.Settle(approvedAt)
			return r
		}, approvedAt.Add(OnceWindow - time.Second), false, true},
		{"once, unused, past window", func() *Review {
			r := pending(RequireAny, true)
			decide(r, alice, true)
			r.Settle(approvedAt)
			return r
		}, approvedAt.Add(OnceWindow), true, false},
		{"once, used", func() *Review {
			r := pending(RequireAny, true)
			decide(r, alice, true)
			r.Settle(approvedAt)
			u := approvedAt.Add(time.Second)
			r.UsedAt = &u
			return r
		}, approvedAt.Add(2 * time.Second), false, false},
		{"once, used, past window stays approved", func() *Review {
			r := pending(RequireAny, true)
			decide(r, alice, true)
			r.Settle(approvedAt)
			u := approvedAt.Add(time.Second)
			r.UsedAt = &u
			return r
		}, approvedAt.Add(OnceWindow), false, false},
		{"window, inside", func() *Review {
			r := pending(RequireAny, false)
			decide(r, alice, true)
			r.Settle(approvedAt)
			return r
		}, approvedAt.Add(time.Hour - time.Second), false, true},
		{"window, past its end (stays approved, not live)", func() *Review {
			r := pending(RequireAny, false)
			decide(r, alice, true)
			r.Settle(approvedAt)
			return r
		}, approvedAt.Add(time.Hour), false, false},
		{"denied", func() *Review {
			r := pending(RequireAny, true)
			decide(r, alice, false)
			r.Settle(approvedAt)
			return r
		}, t0.Add(2 * PendingLifetime), false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.make()
			if got := r.Live(tc.at); got != tc.live {
				t.Errorf("Live = %v, want %v", got, tc.live)
			}
			before := r.State
			if got := r.Expire(tc.at); got != tc.expired {
				t.Errorf("Expire = %v, want %v", got, tc.expired)
			}
			if tc.expired && r.State != Expired {
				t.Errorf("state after Expire = %s, want expired", r.State)
			}
			if !tc.expired && r.State != before {
				t.Errorf("state changed from %s to %s without expiring", before, r.State)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"R-01JFAKE0000000000000000000", true},
		{"R-01ARZ3NDEKTSV4RRFFQ69G5FAV", true},
		{"01ARZ3NDEKTSV4RRFFQ69G5FAV", false},
		{"R-01ARZ3NDEKTSV4RRFFQ69G5FA", false},   // 25
		{"R-01ARZ3NDEKTSV4RRFFQ69G5FAVV", false}, // 27
		{"R-01ARZ3NDEKTSV4RRFFQ69G5FAU", false},  // U is not Crockford
		{"R-01arz3ndektsv4rrffq69g5fav", false},
		{"R-01ARZ3NDEKTSV4RRFFQ69G5F.V", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestSubjects(t *testing.T) {
	if got := UpdateSubject("bastion.1", "R-X"); got != "warden.reviews.bastion_1.R-X" {
		t.Errorf("UpdateSubject = %q", got)
	}
	if got := HostUpdates("a*b>c d"); got != "warden.reviews.a_b_c_d.*" {
		t.Errorf("HostUpdates = %q", got)
	}
	if got := Token(""); got != "_" {
		t.Errorf("Token(\"\") = %q", got)
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(OpenRequest{GrantFor: Duration(90 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	var back OpenRequest
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.GrantFor.D() != 90*time.Minute {
		t.Errorf("grant_for round trip = %s", back.GrantFor.D())
	}
	if err := json.Unmarshal([]byte(`{"grant_for":"soon"}`), &back); err == nil {
		t.Error("grant_for \"soon\" accepted")
	}
}
