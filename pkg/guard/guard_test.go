package guard_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/pkg/sqlguard"
)

var sqlRules = []policy.Rule{
	{Name: "allow-temp", When: policy.Match{Statements: []string{"drop"}, Tables: []string{"scratch.tmp"}}, Action: policy.Allow},
	{Name: "no-ddl", When: policy.Match{Statements: []string{"drop", "truncate", "alter"}}, Action: policy.Deny, ExceptGroups: []string{"dba"}},
	{Name: "no-mass-delete", When: policy.Match{Statements: []string{"delete", "update"}, NoWhere: true}, Action: policy.Deny},
	{Name: "no-file-read", When: policy.Match{Functions: []string{"pg_read_file", "copy_program"}}, Action: policy.Deny},
	{Name: "review-grants", When: policy.Match{Statements: []string{"grant"}}, Action: policy.Review,
		Review: &policy.ReviewSpec{Approvers: []string{"dba"}, Require: policy.RequireAny, Hold: time.Minute, GrantOnce: true}},
}

// requests analyses sql as the PostgreSQL codec does.
func requests(t *testing.T, sql string) []guard.Request {
	t.Helper()
	stmts, err := sqlguard.Analyze(sql)
	if err != nil {
		t.Fatalf("%q: %v", sql, err)
	}
	return sqlguard.Requests(stmts)
}

func TestEvaluate(t *testing.T) {
	tests := []struct {
		sql    string
		groups []string
		action policy.Action
		rule   string
	}{
		{"select 1", nil, policy.Allow, ""},
		{"SELECT 1; DROP TABLE t", nil, policy.Deny, "no-ddl"},
		{"/**/DrOp/**/ TABLE t", nil, policy.Deny, "no-ddl"},
		{"drop table t", []string{"dba"}, policy.Allow, ""},
		{"drop table scratch.tmp", nil, policy.Allow, "allow-temp"},
		{"delete from t", []string{"dba"}, policy.Deny, "no-mass-delete"},
		{"delete from t where id = 1", nil, policy.Allow, ""},
		{"select PG_READ_FILE('x')", nil, policy.Deny, "no-file-read"},
		{"copy t to program 'id'", nil, policy.Deny, "no-file-read"},
		{"grant select on t to u; drop table t", nil, policy.Deny, "no-ddl"},
		{"grant select on t to u", nil, policy.Review, "review-grants"},
		{"prepare p as delete from t", nil, policy.Deny, "no-mass-delete"},
	}
	for _, tt := range tests {
		v := guard.Evaluate(sqlRules, tt.groups, requests(t, tt.sql))
		if v.Action != tt.action || v.Rule != tt.rule {
			t.Errorf("%q %v: got %s/%q, want %s/%q", tt.sql, tt.groups, v.Action, v.Rule, tt.action, tt.rule)
		}
	}
}

func TestEvaluateVerdictDetails(t *testing.T) {
	v := guard.Evaluate(sqlRules, []string{"dba"}, requests(t, "select 1; drop table t; drop table u; delete from t"))
	if v.Action != policy.Deny || v.Rule != "no-mass-delete" || v.Index != 3 || v.Kind != "delete" {
		t.Errorf("verdict %+v", v)
	}
	if !slices.Equal(v.Exempted, []string{"no-ddl"}) {
		t.Errorf("exempted %q, want no-ddl once", v.Exempted)
	}
	v = guard.Evaluate(sqlRules, nil, requests(t, "select 1; drop table scratch.tmp"))
	if v.Action != policy.Allow || v.Rule != "allow-temp" || v.Index != 1 || v.Kind != "drop" {
		t.Errorf("allow verdict %+v", v)
	}
	if v := guard.Evaluate(sqlRules, nil, nil); v.Action != policy.Allow || v.Index != -1 || v.Rule != "" {
		t.Errorf("empty batch %+v", v)
	}
}

func TestMatches(t *testing.T) {
	redisGet := guard.Request{Commands: []string{"GET"}}
	sshRun := guard.Request{Commands: []string{"/bin/sh"}}
	dropT := guard.Request{Kinds: []string{"drop"}, Tables: []string{"Public.T"}}
	tests := []struct {
		name string
		m    policy.Match
		r    guard.Request
		want bool
	}{
		{"empty match matches all", policy.Match{}, redisGet, true},
		{"command ignores case", policy.Match{Commands: []string{"get", "set"}}, redisGet, true},
		{"other command", policy.Match{Commands: []string{"flushall"}}, redisGet, false},
		{"program exact", policy.Match{Commands: []string{"/bin/sh"}}, sshRun, true},
		{"commands on a SQL request", policy.Match{Commands: []string{"drop"}}, dropT, false},
		{"statements on a Redis request", policy.Match{Statements: []string{"get"}}, redisGet, false},
		{"tables on a Redis request", policy.Match{Tables: []string{"t"}}, redisGet, false},
		{"no_where on a Redis request", policy.Match{NoWhere: true}, redisGet, false},
		{"statement keyword case", policy.Match{Statements: []string{"DROP"}}, dropT, true},
		{"unqualified table any schema", policy.Match{Tables: []string{"t"}}, dropT, true},
		{"qualified table ignores case", policy.Match{Tables: []string{"public.t"}}, dropT, true},
		{"qualified table other schema", policy.Match{Tables: []string{"other.t"}}, dropT, false},
		{"every condition must hold", policy.Match{Statements: []string{"drop"}, Tables: []string{"u"}}, dropT, false},
	}
	for _, tt := range tests {
		if got := guard.Matches(tt.m, tt.r); got != tt.want {
			t.Errorf("%s: Matches = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// fakeReviewer answers every review with outcome and remembers what it
// was asked.
type fakeReviewer struct {
	outcome guard.ReviewOutcome
	asked   []guard.ReviewRequest
}

func (f *fakeReviewer) Review(_ context.Context, req guard.ReviewRequest) guard.ReviewResult {
	f.asked = append(f.asked, req)
	return guard.ReviewResult{Outcome: f.outcome, ID: "R-1"}
}

func testPolicy() *policy.Policy {
	rules := append([]policy.Rule(nil), sqlRules...)
	for i := range rules {
		rules[i].Targets = []string{"db"}
	}
	return &policy.Policy{
		Rules: append(rules, policy.Rule{Name: "elsewhere", Targets: []string{"cache"},
			When: policy.Match{Statements: []string{"select"}}, Action: policy.Deny}),
		Masking: []policy.Masking{
			{Name: "pii", Targets: []string{"db"}, Columns: []string{"ssn"}, ExceptGroups: []string{"auditors"}},
		},
	}
}

func TestDecide(t *testing.T) {
	ctx := context.Background()
	grant := requests(t, "select 1; grant select on t to u")

	approver := &fakeReviewer{outcome: guard.ReviewApproved}
	v := guard.New(testPolicy(), "db", nil, approver).Decide(ctx, grant, guard.Hold{})
	if v.Action != policy.Allow || v.Rule != "review-grants" || v.Index != 1 || v.Review == nil || v.Review.ID != "R-1" {
		t.Errorf("approved: %+v", v)
	}
	if len(approver.asked) != 1 || approver.asked[0].Rule != "review-grants" || approver.asked[0].Request.Kind() != "grant" ||
		approver.asked[0].Hold != time.Minute || !slices.Equal(approver.asked[0].Spec.Approvers, []string{"dba"}) {
		t.Errorf("reviewer asked %+v", approver.asked)
	}

	// Inside a transaction the review is opened without holding.
	held := &fakeReviewer{outcome: guard.ReviewPending}
	if v := guard.New(testPolicy(), "db", nil, held).Decide(ctx, grant, guard.Hold{Off: true}); v.Action != policy.Review || v.Review.Outcome != guard.ReviewPending {
		t.Errorf("pending: %+v", v)
	}
	if len(held.asked) != 1 || held.asked[0].Hold != 0 {
		t.Errorf("hold off asked %+v", held.asked)
	}

	for _, o := range []guard.ReviewOutcome{guard.ReviewDenied, guard.ReviewPending, guard.ReviewCancelled, guard.ReviewUnavailable} {
		r := &fakeReviewer{outcome: o}
		if v := guard.New(testPolicy(), "db", nil, r).Decide(ctx, grant, guard.Hold{}); v.Action != policy.Review || v.Rule != "review-grants" || v.Review.Outcome != o {
			t.Errorf("outcome %d: %+v", o, v)
		}
	}

	if v := guard.New(testPolicy(), "db", nil, nil).Decide(ctx, grant, guard.Hold{}); v.Action != policy.Review || v.Review.Outcome != guard.ReviewUnavailable {
		t.Errorf("no reviewer: %+v", v)
	}
	if v := guard.New(testPolicy(), "db", nil, guard.ReviewerFunc(nil)).Decide(ctx, grant, guard.Hold{}); v.Action != policy.Review || v.Review.Outcome != guard.ReviewUnavailable {
		t.Errorf("nil ReviewerFunc: %+v", v)
	}

	// Denied and allowed batches never reach the reviewer.
	asked := &fakeReviewer{outcome: guard.ReviewApproved}
	g := guard.New(testPolicy(), "db", nil, asked)
	if v := g.Decide(ctx, requests(t, "grant select on t to u; drop table t"), guard.Hold{}); v.Action != policy.Deny {
		t.Errorf("deny approved away: %+v", v)
	}
	if v := g.Decide(ctx, requests(t, "select 1"), guard.Hold{}); v.Action != policy.Allow {
		t.Errorf("select: %+v", v)
	}
	if len(asked.asked) != 0 {
		t.Errorf("reviewer asked about %+v", asked.asked)
	}
}

func TestNew(t *testing.T) {
	g := guard.New(nil, "db", []string{"eng"}, nil)
	if g.Masker() != nil {
		t.Error("masker without a policy")
	}
	if v := g.Check(requests(t, "drop table t")); v.Action != policy.Allow {
		t.Errorf("rules without a policy: %+v", v)
	}
	if !slices.Equal(g.Groups(), []string{"eng"}) {
		t.Errorf("groups %q", g.Groups())
	}

	g = guard.New(testPolicy(), "db", []string{"eng"}, nil)
	if v := g.Check(requests(t, "drop table t")); v.Action != policy.Deny || v.Rule != "no-ddl" {
		t.Errorf("db rules: %+v", v)
	}
	if v := g.Check(requests(t, "select 1")); v.Action != policy.Allow {
		t.Errorf("another target's rule applied: %+v", v)
	}
	if !g.Masker().Column("ssn") {
		t.Error("ssn not masked")
	}
	if guard.New(testPolicy(), "db", []string{"auditors"}, nil).Masker() != nil {
		t.Error("exempt group masked")
	}
	if guard.New(testPolicy(), "cache", nil, nil).Masker() != nil {
		t.Error("another target's masking applied")
	}
	if v := guard.New(testPolicy(), "cache", nil, nil).Check(requests(t, "select 1")); v.Action != policy.Deny || v.Rule != "elsewhere" {
		t.Errorf("cache rules: %+v", v)
	}
}
