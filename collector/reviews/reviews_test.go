package reviews_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/collector/reviews"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/review"
	"github.com/wardenhq/warden/tests/harness"
)

var (
	bob   = review.Person{Sub: "bob", Email: "bob@example.com", Groups: []string{"dba", "engineering"}}
	alice = review.Person{Sub: "alice", Email: "alice@example.com", Groups: []string{"dba"}}
	sam   = review.Person{Sub: "sam", Email: "sam@example.com", Groups: []string{"security"}}
	eve   = review.Person{Sub: "eve", Email: "eve@example.com", Groups: []string{"engineering"}}
	carol = review.Person{Sub: "carol", Email: "carol@example.com", Groups: []string{"contractors"}}
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a running review service on a real embedded NATS server and a
// real SQLite store, with an agent-side connection.
type env struct {
	t     *testing.T
	svc   *reviews.Service
	st    *store.Store
	clock *clock
	agent *nats.Conn
}

func start(t *testing.T, cfg reviews.Config) *env {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: zerolog.Nop(), AllowAnonymous: true})
	if err != nil {
		t.Fatalf("start NATS: %v", err)
	}
	t.Cleanup(ns.Shutdown)
	st, err := store.Open(harness.StoreLocation(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	agent, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Close)

	clk := &clock{t: time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)}
	cfg.Store, cfg.NATS, cfg.Now, cfg.Logger = st, nc, clk.Now, zerolog.Nop()
	if cfg.SweepEvery == 0 {
		cfg.SweepEvery = time.Hour // tests call Sweep themselves
	}
	svc, err := reviews.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("Run stopped before it was ready: %v", err)
	}
	return &env{t: t, svc: svc, st: st, clock: clk, agent: agent}
}

// request sends a request as an agent does and decodes the reply.
func (e *env) request(subject string, req any) review.Reply {
	e.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := e.agent.Request(subject, b, 10*time.Second)
	if err != nil {
		e.t.Fatalf("request %s: %v", subject, err)
	}
	var rep review.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		e.t.Fatalf("reply of %s: %v: %s", subject, err, m.Data)
	}
	if rep.Now.IsZero() {
		e.t.Errorf("reply of %s has no now", subject)
	}
	return rep
}

// open opens a review over NATS and fails the test on an error reply.
func (e *env) open(req review.OpenRequest) review.Reply {
	e.t.Helper()
	rep := e.request(review.SubjectOpen, req)
	if rep.Error != "" {
		e.t.Fatalf("open: %s", rep.Error)
	}
	if rep.Review == nil {
		e.t.Fatal("open: reply without a review")
	}
	return rep
}

// updates subscribes to a host's review publications.
func (e *env) updates(host string) *nats.Subscription {
	e.t.Helper()
	sub, err := e.agent.SubscribeSync(review.HostUpdates(host))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.agent.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return sub
}

// next returns the next publication on sub.
func next(t *testing.T, sub *nats.Subscription) (string, review.Review) {
	t.Helper()
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no publication: %v", err)
	}
	var r review.Review
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	return m.Subject, r
}

// noMore checks that nothing else was published (the service flushes
// before it answers, so anything published has arrived after a round trip).
func noMore(t *testing.T, e *env, sub *nats.Subscription) {
	t.Helper()
	if err := e.agent.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sub.Pending(); n != 0 {
		m, _ := sub.NextMsg(0)
		t.Fatalf("unexpected publication on %s: %s", m.Subject, m.Data)
	}
}

const deleteAll = "DELETE FROM t"

func statement(by review.Person, require review.Require) review.OpenRequest {
	return review.OpenRequest{
		Kind: review.KindStatement, Host: "bastion-1", Requester: by, SessionID: "S1", Target: "orders-db",
		Rule: "unbounded-writes", Statement: deleteAll, Fingerprint: review.Fingerprint(deleteAll),
		Approvers: []string{"dba", "security"}, Require: require, GrantOnce: true,
	}
}

func access(by review.Person) review.OpenRequest {
	return review.OpenRequest{
		Kind: review.KindAccess, Host: "bastion-1", Requester: by, Target: "orders-db", Rule: review.AccessRule,
		Reason: "incident 42", Approvers: []string{"dba"}, Require: review.RequireAny, GrantFor: review.Duration(time.Hour),
	}
}

func TestOpenReusesPendingAndPublishes(t *testing.T) {
	e := start(t, reviews.Config{})
	sub := e.updates("bastion-1")
	first := e.open(statement(bob, review.RequireAny))
	r := first.Review
	if !review.ValidID(r.ID) || r.State != review.Pending || first.Used {
		t.Fatalf("first open: id %q state %s used %v", r.ID, r.State, first.Used)
	}
	if want := e.clock.Now().Add(review.PendingLifetime); !r.ExpiresAt.Equal(want) {
		t.Errorf("expires_at = %v, want %v", r.ExpiresAt, want)
	}
	subj, pub := next(t, sub)
	if subj != review.UpdateSubject("bastion-1", r.ID) || pub.ID != r.ID || pub.State != review.Pending {
		t.Fatalf("publication %s: %s %s", subj, pub.ID, pub.State)
	}

	again := e.open(statement(bob, review.RequireAny))
	if again.Review.ID != r.ID || again.Used {
		t.Fatalf("second open: %s used %v, want the pending %s", again.Review.ID, again.Used, r.ID)
	}
	noMore(t, e, sub)

	// Another statement, or another person, is another review.
	other := statement(bob, review.RequireAny)
	other.Statement = "DELETE FROM u"
	other.Fingerprint = review.Fingerprint(other.Statement)
	if got := e.open(other).Review.ID; got == r.ID {
		t.Error("a different statement reused the review")
	}
	if got := e.open(statement(eve, review.RequireAny)).Review.ID; got == r.ID {
		t.Error("a different requester reused the review")
	}

	got := e.request(review.SubjectGet, review.GetRequest{ID: r.ID})
	if got.Error != "" || got.Review == nil || got.Review.Statement != deleteAll {
		t.Fatalf("get: %+v", got)
	}
	if got := e.request(review.SubjectGet, review.GetRequest{ID: "R-01ARZ3NDEKTSV4RRFFQ69G5FAV"}); !strings.Contains(got.Error, "no review") {
		t.Errorf("get of an unknown id: %q", got.Error)
	}
}

func TestApprovedOnceRunsOnce(t *testing.T) {
	e := start(t, reviews.Config{})
	ctx := context.Background()
	r := e.open(statement(bob, review.RequireAny)).Review
	sub := e.updates("bastion-1")

	e.clock.Add(3 * time.Minute) // the client's hold ran out; the approval comes late
	dec, err := e.svc.Decide(ctx, r.ID, alice, true, "checked with bob")
	if err != nil {
		t.Fatal(err)
	}
	if dec.State != review.Approved || dec.GrantUntil == nil || !dec.GrantUntil.Equal(e.clock.Now().Add(review.OnceWindow)) {
		t.Fatalf("after approval: %s until %v", dec.State, dec.GrantUntil)
	}
	if d, _ := dec.LastDecision(); d.By.Sub != "alice" || len(d.For) != 1 || d.For[0] != "dba" || d.Reason != "checked with bob" {
		t.Errorf("decision = %+v", d)
	}
	if _, pub := next(t, sub); pub.State != review.Approved {
		t.Fatalf("publication after approval: %s", pub.State)
	}

	// The same statement again: the grant is used, once.
	rep := e.open(statement(bob, review.RequireAny))
	if !rep.Used || rep.Review.ID != r.ID || rep.Review.UsedAt == nil {
		t.Fatalf("re-run after approval: used %v id %s (want %s) used_at %v", rep.Used, rep.Review.ID, r.ID, rep.Review.UsedAt)
	}
	if _, pub := next(t, sub); pub.UsedAt == nil {
		t.Fatal("publication of the use has no used_at")
	}
	// And a second run waits for a new review.
	rep = e.open(statement(bob, review.RequireAny))
	if rep.Used || rep.Review.ID == r.ID || rep.Review.State != review.Pending {
		t.Fatalf("second re-run: used %v id %s state %s, want a new pending review", rep.Used, rep.Review.ID, rep.Review.State)
	}
}

func TestUse(t *testing.T) {
	e := start(t, reviews.Config{})
	r := e.open(statement(bob, review.RequireAny)).Review
	if rep := e.request(review.SubjectUse, review.UseRequest{ID: r.ID, Host: "bastion-1"}); !strings.Contains(rep.Error, "pending, not approved") {
		t.Fatalf("use of a pending review: %q", rep.Error)
	}
	if _, err := e.svc.Decide(context.Background(), r.ID, sam, true, ""); err != nil {
		t.Fatal(err)
	}
	if rep := e.request(review.SubjectUse, review.UseRequest{ID: r.ID, Host: "bastion-2"}); !strings.Contains(rep.Error, "belongs to host bastion-1") {
		t.Fatalf("use from another host: %q", rep.Error)
	}
	rep := e.request(review.SubjectUse, review.UseRequest{ID: r.ID, Host: "bastion-1"})
	if rep.Error != "" || rep.Review == nil || rep.Review.UsedAt == nil {
		t.Fatalf("use: %+v", rep)
	}
	if rep := e.request(review.SubjectUse, review.UseRequest{ID: r.ID, Host: "bastion-1"}); !strings.Contains(rep.Error, "already used") {
		t.Fatalf("second use: %q", rep.Error)
	}
	if rep := e.request(review.SubjectUse, review.UseRequest{ID: "R-nope", Host: "bastion-1"}); !strings.Contains(rep.Error, "not a review id") {
		t.Fatalf("use of a bad id: %q", rep.Error)
	}

	// Many agents racing for one grant: exactly one wins.
	r2 := e.open(statement(eve, review.RequireAny)).Review
	if _, err := e.svc.Decide(context.Background(), r2.ID, alice, true, ""); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Go(func() {
			_, err := e.svc.Use(context.Background(), review.UseRequest{ID: r2.ID, Host: "bastion-1"})
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, reviews.ErrNotUsable) {
				t.Errorf("use: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d uses won one grant", wins)
	}
}

func TestWhoMayDecide(t *testing.T) {
	e := start(t, reviews.Config{})
	ctx := context.Background()
	r := e.open(statement(bob, review.RequireAny)).Review

	_, err := e.svc.Decide(ctx, r.ID, bob, true, "")
	if !errors.Is(err, reviews.ErrNotDecider) || !strings.Contains(err.Error(), "you requested this review") {
		t.Fatalf("the requester (in dba) approving: %v", err)
	}
	_, err = e.svc.Decide(ctx, r.ID, eve, true, "")
	if !errors.Is(err, reviews.ErrNotDecider) || !strings.Contains(err.Error(), "not a member of dba, security") {
		t.Fatalf("an outsider approving: %v", err)
	}
	if _, err := e.svc.Decide(ctx, "R-01ARZ3NDEKTSV4RRFFQ69G5FAV", alice, true, ""); !errors.Is(err, reviews.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	if _, err := e.svc.Decide(ctx, "R-x", alice, true, ""); !errors.Is(err, reviews.ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
	if got, _ := e.svc.Get(ctx, r.ID); got.State != review.Pending || len(got.Decisions) != 0 {
		t.Fatalf("refused decisions changed the review: %s %d decisions", got.State, len(got.Decisions))
	}

	dec, err := e.svc.Decide(ctx, r.ID, alice, false, "no WHERE on orders")
	if err != nil || dec.State != review.Denied {
		t.Fatalf("deny: %v %v", dec, err)
	}
	if _, err := e.svc.Decide(ctx, r.ID, sam, true, ""); !errors.Is(err, reviews.ErrNotPending) || !strings.Contains(err.Error(), "already denied") {
		t.Fatalf("approving a denied review: %v", err)
	}
}

func TestRequireAll(t *testing.T) {
	e := start(t, reviews.Config{})
	ctx := context.Background()
	r := e.open(statement(bob, review.RequireAll)).Review
	dec, err := e.svc.Decide(ctx, r.ID, alice, true, "")
	if err != nil || dec.State != review.Pending {
		t.Fatalf("one group's approval: %v %v, want still pending", dec.State, err)
	}
	if _, err := e.svc.Decide(ctx, r.ID, alice, true, ""); !errors.Is(err, reviews.ErrAlreadyDecided) {
		t.Fatalf("the same person again: %v", err)
	}
	other := review.Person{Sub: "dan", Groups: []string{"dba"}}
	if dec, err := e.svc.Decide(ctx, r.ID, other, true, ""); err != nil || dec.State != review.Pending {
		t.Fatalf("a second dba: %v %v, want still pending", dec.State, err)
	}
	dec, err = e.svc.Decide(ctx, r.ID, sam, true, "")
	if err != nil || dec.State != review.Approved {
		t.Fatalf("security's approval: %v %v, want approved", dec.State, err)
	}
}

func TestExpiry(t *testing.T) {
	e := start(t, reviews.Config{})
	ctx := context.Background()
	pendingOne := e.open(statement(bob, review.RequireAny)).Review
	onceOne := e.open(statement(eve, review.RequireAny)).Review
	if _, err := e.svc.Decide(ctx, onceOne.ID, alice, true, ""); err != nil {
		t.Fatal(err)
	}
	sub := e.updates("bastion-1")

	if n, err := e.svc.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("early sweep: %d %v", n, err)
	}
	e.clock.Add(review.OnceWindow)
	if n, err := e.svc.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep at the end of the once window: %d %v, want 1", n, err)
	}
	if _, pub := next(t, sub); pub.ID != onceOne.ID || pub.State != review.Expired {
		t.Fatalf("publication: %s %s, want %s expired", pub.ID, pub.State, onceOne.ID)
	}
	if rep := e.request(review.SubjectUse, review.UseRequest{ID: onceOne.ID, Host: "bastion-1"}); !strings.Contains(rep.Error, "expired") {
		t.Fatalf("use of an expired grant: %q", rep.Error)
	}

	e.clock.Add(review.PendingLifetime)
	if n, err := e.svc.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep at the end of the pending lifetime: %d %v, want 1", n, err)
	}
	if _, pub := next(t, sub); pub.ID != pendingOne.ID || pub.State != review.Expired {
		t.Fatalf("publication: %s %s, want %s expired", pub.ID, pub.State, pendingOne.ID)
	}
	if _, err := e.svc.Decide(ctx, pendingOne.ID, alice, true, ""); !errors.Is(err, reviews.ErrNotPending) {
		t.Fatalf("approving an expired review: %v", err)
	}
	// The statement asks again: a new review.
	if got := e.open(statement(bob, review.RequireAny)).Review; got.ID == pendingOne.ID {
		t.Fatal("an expired review was reused")
	}
}

func TestExpiredFoundByDecideAndOpen(t *testing.T) {
	// Between sweeps, an expired review is expired by whoever finds it.
	e := start(t, reviews.Config{})
	r := e.open(statement(bob, review.RequireAny)).Review
	sub := e.updates("bastion-1")
	e.clock.Add(review.PendingLifetime)
	if _, err := e.svc.Decide(context.Background(), r.ID, alice, true, ""); !errors.Is(err, reviews.ErrNotPending) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("decide after the pending lifetime: %v", err)
	}
	if _, pub := next(t, sub); pub.State != review.Expired {
		t.Fatalf("publication: %s", pub.State)
	}
	if got := e.open(statement(bob, review.RequireAny)).Review; got.ID == r.ID {
		t.Fatal("an expired review was reused")
	}
}

func TestAccessGrants(t *testing.T) {
	e := start(t, reviews.Config{})
	ctx := context.Background()
	r := e.open(access(carol)).Review
	if r.State != review.Pending || r.Rule != review.AccessRule {
		t.Fatalf("access review: %s %s", r.State, r.Rule)
	}
	if again := e.open(access(carol)).Review; again.ID != r.ID {
		t.Fatal("a second access request did not return the pending one")
	}
	if rep := e.request(review.SubjectGrants, review.GrantsRequest{Host: "bastion-1"}); rep.Error != "" || len(rep.Reviews) != 0 {
		t.Fatalf("grants before approval: %+v", rep)
	}
	if _, err := e.svc.Decide(ctx, r.ID, alice, true, "on call"); err != nil {
		t.Fatal(err)
	}
	rep := e.request(review.SubjectGrants, review.GrantsRequest{Host: "bastion-1"})
	if rep.Error != "" || len(rep.Reviews) != 1 || rep.Reviews[0].ID != r.ID {
		t.Fatalf("grants after approval: %+v", rep)
	}
	if until := rep.Reviews[0].GrantUntil; until == nil || !until.Equal(e.clock.Now().Add(time.Hour)) {
		t.Fatalf("grant until %v", until)
	}
	if rep := e.request(review.SubjectGrants, review.GrantsRequest{Host: "bastion-2"}); len(rep.Reviews) != 0 {
		t.Fatalf("another host's grants: %+v", rep.Reviews)
	}
	// A request inside the window returns the live grant.
	if again := e.open(access(carol)); again.Review.ID != r.ID || again.Used {
		t.Fatalf("request inside the window: %s used %v", again.Review.ID, again.Used)
	}

	e.clock.Add(time.Hour)
	if rep := e.request(review.SubjectGrants, review.GrantsRequest{Host: "bastion-1"}); len(rep.Reviews) != 0 {
		t.Fatalf("grants after the window: %+v", rep.Reviews)
	}
	if again := e.open(access(carol)).Review; again.ID == r.ID || again.State != review.Pending {
		t.Fatalf("request after the window: %s %s, want a new pending review", again.ID, again.State)
	}
}

func TestOpenRefusesBadRequests(t *testing.T) {
	e := start(t, reviews.Config{})
	tests := []struct {
		name string
		edit func(*review.OpenRequest)
		want string
	}{
		{"no kind", func(r *review.OpenRequest) { r.Kind = "" }, "kind is required"},
		{"bad kind", func(r *review.OpenRequest) { r.Kind = "ssh" }, `kind "ssh"`},
		{"no host", func(r *review.OpenRequest) { r.Host = "" }, "host_id is required"},
		{"no requester", func(r *review.OpenRequest) { r.Requester.Sub = "" }, "requester.sub is required"},
		{"no target", func(r *review.OpenRequest) { r.Target = "" }, "target is required"},
		{"no rule", func(r *review.OpenRequest) { r.Rule = "" }, "rule is required"},
		{"control character", func(r *review.OpenRequest) { r.Target = "orders\x00db" }, "target has a control character"},
		{"long host", func(r *review.OpenRequest) { r.Host = strings.Repeat("h", 300) }, "host_id is longer than 256"},
		{"no approvers", func(r *review.OpenRequest) { r.Approvers = nil }, "approvers is empty"},
		{"empty approver", func(r *review.OpenRequest) { r.Approvers = []string{"dba", ""} }, "approvers[1] is required"},
		{"twice the same approver", func(r *review.OpenRequest) { r.Approvers = []string{"dba", "dba"} }, `approvers lists "dba" twice`},
		{"no require", func(r *review.OpenRequest) { r.Require = "" }, "require is required"},
		{"bad require", func(r *review.OpenRequest) { r.Require = "most" }, `require "most"`},
		{"no statement", func(r *review.OpenRequest) { r.Statement = "" }, "statement is required"},
		{"bad fingerprint", func(r *review.OpenRequest) { r.Fingerprint = "XYZ" }, "want 64 lowercase hex"},
		{"no grant", func(r *review.OpenRequest) { r.GrantOnce = false }, "exactly one"},
		{"two grants", func(r *review.OpenRequest) { r.GrantFor = review.Duration(time.Hour) }, "exactly one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := statement(bob, review.RequireAny)
			tc.edit(&req)
			rep := e.request(review.SubjectOpen, req)
			if !strings.Contains(rep.Error, tc.want) || rep.Review != nil {
				t.Fatalf("error %q, want one containing %q", rep.Error, tc.want)
			}
		})
	}
	accessTests := []struct {
		name string
		edit func(*review.OpenRequest)
		want string
	}{
		{"no reason", func(r *review.OpenRequest) { r.Reason = " " }, "reason is required"},
		{"no window", func(r *review.OpenRequest) { r.GrantFor = 0 }, "grant_for 0s"},
		{"too long a window", func(r *review.OpenRequest) { r.GrantFor = review.Duration(30 * 24 * time.Hour) }, "at most 168h"},
		{"other rule", func(r *review.OpenRequest) { r.Rule = "x" }, `must be "access"`},
		{"statement", func(r *review.OpenRequest) { r.Statement = "x" }, "no statement"},
	}
	for _, tc := range accessTests {
		t.Run("access "+tc.name, func(t *testing.T) {
			req := access(carol)
			tc.edit(&req)
			rep := e.request(review.SubjectOpen, req)
			if !strings.Contains(rep.Error, tc.want) {
				t.Fatalf("error %q, want one containing %q", rep.Error, tc.want)
			}
		})
	}
	m, err := e.agent.Request(review.SubjectOpen, []byte("{not json"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Data), "not valid JSON") {
		t.Fatalf("garbage: %s", m.Data)
	}
	if rs, err := e.svc.List(context.Background(), reviews.Query{}); err != nil || len(rs) != 0 {
		t.Fatalf("refused requests stored %d reviews (%v)", len(rs), err)
	}
}

func TestWebhook(t *testing.T) {
	got := make(chan reviews.WebhookPayload, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p reviews.WebhookPayload
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &p); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook body %s: %v", b, err)
		}
		got <- p
	}))
	defer srv.Close()
	e := start(t, reviews.Config{Webhook: srv.URL + "/hooks/T000/secret"})
	req := statement(bob, review.RequireAny)
	req.Statement = "DELETE FROM t WHERE a < $1"
	req.Fingerprint = review.Fingerprint(req.Statement)
	r := e.open(req).Review
	p := <-got
	if p.Event != reviews.EventRequested || p.Review == nil || p.Review.ID != r.ID {
		t.Fatalf("first payload: %+v", p)
	}
	for _, want := range []string{r.ID, "bob@example.com", "orders-db", "a &lt; $1", "warden review approve " + r.ID} {
		if !strings.Contains(p.Text, want) {
			t.Errorf("request text %q lacks %q", p.Text, want)
		}
	}
	if _, err := e.svc.Decide(context.Background(), r.ID, alice, false, "not now"); err != nil {
		t.Fatal(err)
	}
	p = <-got
	if p.Event != reviews.EventDecided || p.Review.State != review.Denied {
		t.Fatalf("second payload: %+v", p)
	}
	for _, want := range []string{"denied by alice@example.com (dba)", `"not now"`} {
		if !strings.Contains(p.Text, want) {
			t.Errorf("decision text %q lacks %q", p.Text, want)
		}
	}
	// The receiver saw the payload before its answer reached the service.
	deadline := time.Now().Add(20 * time.Second)
	for e.svc.Stats().WebhookSent < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := e.svc.Stats(); st.WebhookSent != 2 || st.WebhookFailed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestWebhookFailureIsCountedNotBlocking(t *testing.T) {
	var mu sync.Mutex
	tries := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tries++
		mu.Unlock()
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer srv.Close()
	e := start(t, reviews.Config{Webhook: srv.URL, WebhookBackoff: time.Millisecond})
	r := e.open(statement(bob, review.RequireAny)).Review
	if _, err := e.svc.Decide(context.Background(), r.ID, alice, true, ""); err != nil {
		t.Fatalf("a dead webhook blocked a decision: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for e.svc.Stats().WebhookFailed < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", e.svc.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if tries != 6 {
		t.Errorf("%d attempts for 2 deliveries, want 3 each", tries)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	if _, err := reviews.New(reviews.Config{}); err == nil {
		t.Error("no store accepted")
	}
	st, err := store.Open(harness.StoreLocation(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	nc := &nats.Conn{}
	for _, u := range []string{"ftp://x/y", "http://", "::"} {
		if _, err := reviews.New(reviews.Config{Store: st, NATS: nc, Webhook: u}); err == nil || !strings.Contains(err.Error(), "--webhook") {
			t.Errorf("webhook %q: %v", u, err)
		}
	}
}
