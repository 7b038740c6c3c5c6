package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/collector/reviews"
	"github.com/wardenhq/warden/collector/store"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/review"
	"github.com/wardenhq/warden/tests/harness"
)

// reviewEnv is the API with a running review service (real NATS, real
// SQLite), a real verifier for a dev IdP, and readers "soc".
type reviewEnv struct {
	t    *testing.T
	idp  *devidp.IdP
	svc  *reviews.Service
	base string
}

func newReviewEnv(t *testing.T) *reviewEnv {
	t.Helper()
	idp := serveIdP(t)
	v, err := idtoken.NewVerifier(context.Background(), idtoken.Config{Issuer: idp.Issuer(), ClientID: clientID})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(harness.StoreLocation(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: zerolog.Nop(), AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	svc, err := reviews.New(reviews.Config{Store: st, NATS: nc, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	s := New(Config{Store: st, Verifier: v, Readers: []string{"soc"}, Reviews: svc, Logger: zerolog.Nop()})
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return &reviewEnv{t: t, idp: idp, svc: svc, base: hs.URL}
}

// as returns a client carrying a token of sub in groups.
func (e *reviewEnv) as(sub string, groups ...string) *cc.Client {
	e.t.Helper()
	cl, err := cc.New(e.base, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return cl.WithToken(issue(e.t, e.idp, devidp.IssueOptions{Sub: sub, Email: sub + "@example.com", Groups: groups}))
}

// open opens a review as an agent would.
func (e *reviewEnv) open(kind review.Kind, sub string, approvers ...string) *review.Review {
	e.t.Helper()
	req := review.OpenRequest{Kind: kind, Host: "bastion-1", Requester: review.Person{Sub: sub, Email: sub + "@example.com"},
		Target: "orders-db", Approvers: approvers, Require: review.RequireAny}
	if kind == review.KindAccess {
		req.Rule, req.Reason, req.GrantFor = review.AccessRule, "incident", review.Duration(time.Hour)
	} else {
		req.Rule, req.Statement, req.GrantOnce = "unbounded-writes", "DELETE FROM "+sub, true
		req.Fingerprint = review.Fingerprint(req.Statement)
	}
	r, _, err := e.svc.Open(context.Background(), req)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func statusOf(err error) (int, string) {
	var ce *cc.Error
	if errors.As(err, &ce) {
		return ce.Status, ce.Message
	}
	return 0, ""
}

func ids(rs []review.Review) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// Every review endpoint refuses a call without a valid token with a 401
// and one line saying what is missing.
func TestReviewRoutesNeedAToken(t *testing.T) {
	e := newReviewEnv(t)
	r := e.open(review.KindStatement, "bob", "dba")
	expired := issue(t, e.idp, devidp.IssueOptions{Sub: "alice", Groups: []string{"dba", "soc"}, TTL: -time.Minute})
	routes := (&Server{}).reviewRoutes()
	if len(routes) != 4 {
		t.Fatalf("%d review routes", len(routes))
	}
	for _, rt := range routes {
		method, path, _ := strings.Cut(rt.pattern, " ")
		path = strings.ReplaceAll(path, "{id}", r.ID)
		for name, tok := range map[string]string{"none": "", "garbage": "x.y.z", "expired": expired} {
			req, _ := http.NewRequest(method, e.base+path, strings.NewReader(`{"reason":"x"}`))
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s with %s token: %d, want 401 with a challenge", rt.pattern, name, resp.StatusCode)
			}
		}
	}
	if got, _ := e.svc.Get(context.Background(), r.ID); got.State != review.Pending {
		t.Fatalf("an unauthenticated call changed the review: %s", got.State)
	}
}

func TestReviewListVisibility(t *testing.T) {
	e := newReviewEnv(t)
	ctx := context.Background()
	bobs := e.open(review.KindStatement, "bob", "dba", "security")
	carols := e.open(review.KindAccess, "carol", "dba")
	eves := e.open(review.KindStatement, "eve", "security")

	tests := []struct {
		name   string
		cl     *cc.Client
		q      cc.ReviewQuery
		expect []string
	}{
		{"a reader sees all", e.as("sam", "soc"), cc.ReviewQuery{}, sorted(bobs.ID, carols.ID, eves.ID)},
		{"a dba sees what dba may decide", e.as("alice", "dba"), cc.ReviewQuery{}, sorted(bobs.ID, carols.ID)},
		{"bob sees his own and dba's", e.as("bob", "dba"), cc.ReviewQuery{}, sorted(bobs.ID, carols.ID)},
		{"an outsider sees only their own", e.as("eve", "engineering"), cc.ReviewQuery{}, []string{eves.ID}},
		{"someone with none sees none", e.as("zed"), cc.ReviewQuery{}, nil},
		{"kind filter", e.as("sam", "soc"), cc.ReviewQuery{Kind: "access"}, []string{carols.ID}},
		{"limit", e.as("sam", "soc"), cc.ReviewQuery{Limit: 1}, []string{eves.ID}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := tc.cl.Reviews(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(rs); !slices.Equal(got, tc.expect) {
				t.Fatalf("got %v, want %v", got, tc.expect)
			}
		})
	}

	// The default is pending; other states on request.
	if _, err := e.as("alice", "dba").Approve(ctx, carols.ID, ""); err != nil {
		t.Fatal(err)
	}
	sam := e.as("sam", "soc")
	for state, want := range map[string][]string{
		"":         sorted(bobs.ID, eves.ID),
		"pending":  sorted(bobs.ID, eves.ID),
		"approved": {carols.ID},
		"denied":   nil,
		"all":      sorted(bobs.ID, carols.ID, eves.ID),
	} {
		rs, err := sam.Reviews(ctx, cc.ReviewQuery{State: state})
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(rs); !slices.Equal(got, want) {
			t.Errorf("state %q: got %v, want %v", state, got, want)
		}
	}
	for _, q := range []cc.ReviewQuery{{State: "open"}, {Kind: "ssh"}, {Limit: 5000}} {
		if _, err := sam.Reviews(ctx, q); err == nil {
			t.Errorf("%+v accepted", q)
		} else if st, msg := statusOf(err); st != http.StatusBadRequest || strings.Contains(msg, "\n") {
			t.Errorf("%+v: %d %q, want 400", q, st, msg)
		}
	}
}

func TestReviewShow(t *testing.T) {
	e := newReviewEnv(t)
	ctx := context.Background()
	r := e.open(review.KindStatement, "bob", "dba")
	for name, cl := range map[string]*cc.Client{
		"requester": e.as("bob"),
		"approver":  e.as("alice", "dba"),
		"reader":    e.as("sam", "soc"),
	} {
		got, err := cl.Review(ctx, r.ID)
		if err != nil || got.ID != r.ID || got.Statement != r.Statement {
			t.Errorf("%s: %v %v", name, got, err)
		}
	}
	tests := []struct {
		name string
		cl   *cc.Client
		id   string
		code int
		msg  string
	}{
		{"outsider", e.as("eve", "engineering"), r.ID, http.StatusForbidden, "eve@example.com may not see review " + r.ID},
		{"bad id", e.as("sam", "soc"), "R-../../etc", http.StatusBadRequest, "is not a review id"},
		{"unknown", e.as("sam", "soc"), "R-01ARZ3NDEKTSV4RRFFQ69G5FAV", http.StatusNotFound, "no review R-01ARZ3NDEKTSV4RRFFQ69G5FAV"},
	}
	for _, tc := range tests {
		_, err := tc.cl.Review(ctx, tc.id)
		if st, msg := statusOf(err); st != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, st, msg, tc.code, tc.msg)
		}
	}
}

func TestReviewDecide(t *testing.T) {
	e := newReviewEnv(t)
	ctx := context.Background()
	r := e.open(review.KindStatement, "bob", "dba", "security")
	refusals := []struct {
		name string
		cl   *cc.Client
		id   string
		code int
		msg  string
	}{
		{"the requester", e.as("bob", "dba"), r.ID, http.StatusForbidden, "you requested this review"},
		{"another group", e.as("eve", "engineering"), r.ID, http.StatusForbidden, "not a member of dba, security"},
		{"a reader who is no approver", e.as("sam", "soc"), r.ID, http.StatusForbidden, "not a member of dba, security"},
		{"unknown", e.as("alice", "dba"), "R-01ARZ3NDEKTSV4RRFFQ69G5FAV", http.StatusNotFound, "no review"},
		{"bad id", e.as("alice", "dba"), "12", http.StatusBadRequest, "is not a review id"},
	}
	for _, tc := range refusals {
		_, err := tc.cl.Approve(ctx, tc.id, "")
		if st, msg := statusOf(err); st != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, st, msg, tc.code, tc.msg)
		}
	}
	if got, _ := e.svc.Get(ctx, r.ID); got.State != review.Pending || len(got.Decisions) != 0 {
		t.Fatalf("refusals changed the review: %s, %d decisions", got.State, len(got.Decisions))
	}

	alice := e.as("alice", "dba")
	got, err := alice.Approve(ctx, r.ID, "looked at it")
	if err != nil || got.State != review.Approved {
		t.Fatalf("alice approves: %v %v", got, err)
	}
	if d, _ := got.LastDecision(); d.By.Sub != "alice" || d.Reason != "looked at it" {
		t.Errorf("decision %+v", d)
	}
	_, err = e.as("sam", "security").Deny(ctx, r.ID, "late")
	if st, msg := statusOf(err); st != http.StatusConflict || !strings.Contains(msg, "already approved") {
		t.Errorf("deny after approval: %d %q, want 409", st, msg)
	}

	// require: all: one group is not enough, and the same person twice is
	// a conflict, not a second group.
	req := review.OpenRequest{Kind: review.KindStatement, Host: "bastion-1", Requester: review.Person{Sub: "dan"},
		Target: "orders-db", Rule: "unbounded-writes", Statement: "DELETE FROM dan", Fingerprint: review.Fingerprint("DELETE FROM dan"),
		Approvers: []string{"dba", "security"}, Require: review.RequireAll, GrantOnce: true}
	all, _, err := e.svc.Open(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := alice.Approve(ctx, all.ID, ""); err != nil || got.State != review.Pending {
		t.Fatalf("dba alone under require all: %v %v, want pending", got, err)
	}
	_, err = alice.Approve(ctx, all.ID, "")
	if st, msg := statusOf(err); st != http.StatusConflict || !strings.Contains(msg, "already decided") {
		t.Errorf("alice twice: %d %q, want 409", st, msg)
	}
	if got, err := e.as("sam", "security").Approve(ctx, all.ID, ""); err != nil || got.State != review.Approved {
		t.Fatalf("security too: %v %v, want approved", got, err)
	}
}

// jsonDecode reads a JSON answer and closes its body.
func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func TestReviewDecideBody(t *testing.T) {
	e := newReviewEnv(t)
	r := e.open(review.KindStatement, "bob", "dba")
	tok := issue(t, e.idp, devidp.IssueOptions{Sub: "alice", Groups: []string{"dba"}})
	for _, tc := range []struct {
		body string
		code int
		msg  string
	}{
		{`{"reason":"x","approve":false}`, http.StatusBadRequest, `unknown field "approve"`},
		{`{"reason":"x"} {}`, http.StatusBadRequest, "more than one JSON value"},
		{`{"reason":"` + strings.Repeat("x", 20000) + `"}`, http.StatusBadRequest, "too large"},
		{`{"reason":"` + strings.Repeat("x", 2000) + `"}`, http.StatusBadRequest, "reason is longer than 1024"},
		{``, http.StatusOK, ""},
	} {
		req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/reviews/"+r.ID+"/deny", strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var eb cc.ErrorBody
		_ = jsonDecode(resp, &eb)
		if resp.StatusCode != tc.code || !strings.Contains(eb.Error, tc.msg) {
			t.Errorf("body %.40q: %d %q, want %d with %q", tc.body, resp.StatusCode, eb.Error, tc.code, tc.msg)
		}
	}
	if got, _ := e.svc.Get(context.Background(), r.ID); got.State != review.Denied {
		t.Fatalf("state %s after the empty-body deny", got.State)
	}
}

func TestReviewsDisabled(t *testing.T) {
	idp := serveIdP(t)
	v, err := idtoken.NewVerifier(context.Background(), idtoken.Config{Issuer: idp.Issuer(), ClientID: clientID})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(harness.StoreLocation(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(Config{Store: st, Verifier: v, Logger: zerolog.Nop()})
	req := httptest.NewRequest(http.MethodGet, "/v1/reviews", nil)
	req.Header.Set("Authorization", "Bearer "+issue(t, idp, devidp.IssueOptions{Sub: "sam"}))
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "serves no reviews") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}

// A reader's /healthz carries the review service's delivery counters.
func TestHealthHasReviewCounters(t *testing.T) {
	e := newReviewEnv(t)
	h, err := e.as("sam", "soc").Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h.Reviews == nil {
		t.Fatal("no review counters in /healthz")
	}
}
