package reviews_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/agent/reviews"
	"github.com/wardenhq/warden/collector/natsembed"
	collreviews "github.com/wardenhq/warden/collector/reviews"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/pkg/review"
)

// The agent's client is tested against the collector's real review
// service, over a real NATS server: the two halves of the contract meet
// here before they meet in the end-to-end tests.

const host = "bastion-1"

type recorder struct {
	mu     sync.Mutex
	events []*event.Event
}

func (r *recorder) Emit(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) ofType(t event.Type) []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*event.Event
	for _, e := range r.events {
		if e.Type == t {
			out = append(out, e)
		}
	}
	return out
}

type fixture struct {
	svc     *collreviews.Service
	client  *reviews.Client
	rec     *recorder
	changes atomic.Int64
}

func start(t *testing.T, withCollector bool) *fixture {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: zerolog.Nop(), AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	f := &fixture{rec: &recorder{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	if withCollector {
		st, err := store.Open(filepath.Join(t.TempDir(), "events.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		f.svc, err = collreviews.New(collreviews.Config{Store: st, NATS: nc, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { f.svc.Run(ctx) })
		<-f.svc.Ready()
	}
	f.client, err = reviews.New(reviews.Config{URL: ns.ClientURL(), HostID: host, Recorder: f.rec, Timeout: time.Second,
		GrantsChanged: func() { f.changes.Add(1) }, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { f.client.Run(ctx) })
	return f
}

var bob = &event.Identity{Sub: "bob", Email: "bob@example.com", Groups: []string{"dba"}, SessionID: "s-1"}

func (f *fixture) att() (*proxy.Attribution, *proxy.Audit) {
	att := &proxy.Attribution{Identity: bob, SessionID: "s-1", Target: event.Target{Name: "orders-db", Protocol: "postgres"}}
	return att, proxy.NewAudit(f.rec, att, proxy.FailClosed)
}

func statement(hold time.Duration, waiting func(guard.Waiting)) guard.ReviewRequest {
	return guard.ReviewRequest{
		Rule: "unbounded-writes", Hold: hold, Waiting: waiting,
		Spec:    policy.ReviewSpec{Approvers: []string{"dba", "security"}, Require: policy.RequireAny, Hold: hold, GrantOnce: true},
		Request: guard.Request{Kinds: []string{"delete"}, NoWhere: true, Text: "DELETE FROM t", Exact: "DELETE FROM t"},
	}
}

// review runs a held review in the background and returns its result.
func (f *fixture) review(ctx context.Context, req guard.ReviewRequest) <-chan guard.ReviewResult {
	out := make(chan guard.ReviewResult, 1)
	att, audit := f.att()
	go func() { out <- f.client.Review(ctx, att, audit, req) }()
	return out
}

func waitResult(t *testing.T, c <-chan guard.ReviewResult) guard.ReviewResult {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no review result")
	}
	return guard.ReviewResult{}
}

func alice() review.Person {
	return review.Person{Sub: "alice", Email: "alice@example.com", Groups: []string{"dba"}}
}

func waitConnected(t *testing.T, f *fixture) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f.client.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("client never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestApprovedWhileHeld(t *testing.T) {
	f := start(t, true)
	waitConnected(t, f)
	var notices atomic.Int64
	var id atomic.Value
	res := f.review(context.Background(), statement(time.Minute, func(w guard.Waiting) {
		notices.Add(1)
		id.Store(w.ID)
	}))
	for id.Load() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	rid := id.Load().(string)
	if _, err := f.svc.Decide(context.Background(), rid, review.Person{Sub: "bob", Groups: []string{"dba"}}, true, "mine"); err == nil {
		t.Fatal("the requester approved his own review")
	}
	if _, err := f.svc.Decide(context.Background(), rid, alice(), true, "ok"); err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, res)
	if r.Outcome != guard.ReviewApproved || r.ID != rid || notices.Load() != 1 {
		t.Fatalf("result %+v after %d notices", r, notices.Load())
	}
	got, err := f.svc.Get(context.Background(), rid)
	if err != nil || got.UsedAt == nil {
		t.Fatalf("the grant was not used: %+v, %v", got, err)
	}
	// The same statement again opens a new review: the grant was once.
	again := waitResult(t, f.review(context.Background(), statement(0, nil)))
	if again.Outcome != guard.ReviewPending || again.ID == rid {
		t.Fatalf("second run: %+v", again)
	}
	req := f.rec.ofType(event.ReviewRequested)
	if len(req) != 2 || req[0].Data["review_id"] != rid || req[0].Identity.Sub != "bob" || req[0].Data["fingerprint"] != review.Fingerprint("DELETE FROM t") {
		t.Errorf("review.requested %+v", req)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(f.rec.ofType(event.ReviewDecided)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	dec := f.rec.ofType(event.ReviewDecided)
	if len(dec) != 1 || dec[0].Data["outcome"] != "approved" || dec[0].Data["reviewer"] != "alice@example.com" || dec[0].Identity.Sub != "bob" {
		t.Errorf("review.decided %+v", dec)
	}
}

func TestDeniedAndHoldOutcomes(t *testing.T) {
	f := start(t, true)
	waitConnected(t, f)
	var id atomic.Value
	res := f.review(context.Background(), statement(time.Minute, func(w guard.Waiting) { id.Store(w.ID) }))
	for id.Load() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := f.svc.Decide(context.Background(), id.Load().(string), alice(), false, "not now"); err != nil {
		t.Fatal(err)
	}
	if r := waitResult(t, res); r.Outcome != guard.ReviewDenied || r.By != "alice@example.com" || r.Reason != "not now" {
		t.Fatalf("denied: %+v", r)
	}

	// The hold ends before anyone decides; a late approval then lets the
	// same statement run once, without holding it.
	late := waitResult(t, f.review(context.Background(), statement(200*time.Millisecond, nil)))
	if late.Outcome != guard.ReviewPending {
		t.Fatalf("hold expiry: %+v", late)
	}
	if _, err := f.svc.Decide(context.Background(), late.ID, alice(), true, "late"); err != nil {
		t.Fatal(err)
	}
	if r := waitResult(t, f.review(context.Background(), statement(time.Minute, nil))); r.Outcome != guard.ReviewApproved || r.ID != late.ID {
		t.Fatalf("re-run after a late approval: %+v", r)
	}

	// Ctrl-C: the client's context ends while held.
	ctx, cancel := context.WithCancel(context.Background())
	c := f.review(ctx, statement(time.Minute, func(guard.Waiting) { cancel() }))
	if r := waitResult(t, c); r.Outcome != guard.ReviewCancelled {
		t.Fatalf("cancelled: %+v", r)
	}
}

// Without a collector answering, a review is refused at once.
func TestUnreachable(t *testing.T) {
	f := start(t, false)
	start := time.Now()
	r := waitResult(t, f.review(context.Background(), statement(time.Minute, nil)))
	if r.Outcome != guard.ReviewUnavailable || r.Detail == "" || time.Since(start) > 5*time.Second {
		t.Fatalf("no collector: %+v after %s", r, time.Since(start))
	}
}

func TestAccessGrants(t *testing.T) {
	f := start(t, true)
	waitConnected(t, f)
	spec := policy.ReviewSpec{Approvers: []string{"dba"}, Require: policy.RequireAny, GrantFor: time.Hour}
	carol := &event.Identity{Sub: "carol", Groups: []string{"contractors"}, SessionID: "s-2"}
	if _, err := f.client.RequestAccess(context.Background(), reviews.AccessRequest{Identity: carol, Target: "orders-db", Reason: "incident", For: 2 * time.Hour, Spec: spec}); err == nil {
		t.Fatal("a window longer than the grant was asked for and opened")
	}
	r, err := f.client.RequestAccess(context.Background(), reviews.AccessRequest{Identity: carol, Target: "orders-db", Reason: "incident", For: 30 * time.Minute, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if r.State != review.Pending || r.GrantFor.D() != 30*time.Minute || f.client.PendingAccess("carol", "orders-db") != r.ID {
		t.Fatalf("access review %+v, pending %q", r, f.client.PendingAccess("carol", "orders-db"))
	}
	if _, err := f.svc.Decide(context.Background(), r.ID, alice(), true, "go"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(f.client.Grants()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	g := f.client.Grants()
	if len(g) != 1 || g[0].Sub != "carol" || g[0].Target != "orders-db" || time.Until(g[0].Until) > 31*time.Minute || f.changes.Load() == 0 {
		t.Fatalf("grants %+v after %d changes", g, f.changes.Load())
	}
	if f.client.PendingAccess("carol", "orders-db") != "" {
		t.Error("an approved review is still pending")
	}
}
