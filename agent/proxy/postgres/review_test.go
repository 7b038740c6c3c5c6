package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
)

var reviewDeletes = policy.Rule{Name: "unbounded-writes", When: policy.Match{Statements: []string{"delete"}, NoWhere: true}, Action: policy.Review,
	Review: &policy.ReviewSpec{Approvers: []string{"dba"}, Require: policy.RequireAny, Hold: time.Minute, GrantOnce: true}}

// scriptedReviewer answers as its test says, after telling the client it
// waits, and remembers what it was asked.
type scriptedReviewer struct {
	answer func(ctx context.Context) guard.ReviewResult

	mu    sync.Mutex
	asked []guard.ReviewRequest
}

func (r *scriptedReviewer) Review(ctx context.Context, req guard.ReviewRequest) guard.ReviewResult {
	r.mu.Lock()
	r.asked = append(r.asked, req)
	r.mu.Unlock()
	if req.Hold > 0 && req.Waiting != nil {
		req.Waiting(guard.Waiting{ID: "R-1", Rule: req.Rule, Hold: req.Hold, Left: req.Hold})
	}
	return r.answer(ctx)
}

func (r *scriptedReviewer) requests() []guard.ReviewRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]guard.ReviewRequest(nil), r.asked...)
}

// reviewedSession is statementSession with rev deciding reviews. It
// returns the codec too, for cancel requests.
func reviewedSession(t *testing.T, rev guard.Reviewer, serve func(s *fakeServer) error) (*session, *fakeRecorder, *Codec, *pgproto3.BackendKeyData) {
	t.Helper()
	clk := &clock{}
	rec := &fakeRecorder{clock: clk}
	codec := New(Options{})
	ss, _ := serveReviewed(t, codec, attribution("alice", testPolicy([]policy.Rule{reviewDeletes}, nil), policy.Target{}), rec, clk, rev, func(s *fakeServer) error {
		if _, err := s.trustLogin(serverPID, serverSecret); err != nil {
			return err
		}
		if err := serve(s); err != nil {
			return err
		}
		return s.drain()
	})
	ss.startup(map[string]string{"user": "person", "database": "orders"})
	key := find[*pgproto3.BackendKeyData](ss.untilReady())[0]
	return ss, rec, codec, key
}

// substitute answers Warden's substitute as PostgreSQL does.
func substitute(s *fakeServer, want string) error {
	q, _, err := s.query()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(q, "warden_denied_") {
		return fmt.Errorf("server got %q, want Warden's substitute for %s", q, want)
	}
	return s.send(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42601", Message: "syntax error"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
}

// An approved statement runs after the client was told what it waits
// for, and its record names the review.
func TestReviewApproved(t *testing.T) {
	rev := &scriptedReviewer{answer: func(context.Context) guard.ReviewResult {
		return guard.ReviewResult{Outcome: guard.ReviewApproved, ID: "R-1"}
	}}
	var got string
	ss, rec, _, _ := reviewedSession(t, rev, func(s *fakeServer) error {
		q, _, err := s.query()
		got = q
		if err != nil {
			return err
		}
		return s.send(&pgproto3.CommandComplete{CommandTag: []byte("DELETE 3")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	ss.send(&pgproto3.Query{String: "DELETE FROM t"})
	msgs := ss.untilReady()
	ss.endOK()

	if got != "DELETE FROM t" {
		t.Fatalf("server got %q", got)
	}
	notices := find[*pgproto3.NoticeResponse](msgs)
	if len(notices) != 1 || notices[0].Message != `warden: review R-1 required by rule "unbounded-writes"; waiting up to 1m (approve: warden review approve R-1)` {
		t.Errorf("notices %+v", notices)
	}
	if done := find[*pgproto3.CommandComplete](msgs); len(done) != 1 || string(done[0].CommandTag) != "DELETE 3" {
		t.Errorf("client got %+v", msgs)
	}
	asked := rev.requests()
	if len(asked) != 1 || asked[0].Hold != time.Minute || asked[0].Request.Exact != "DELETE FROM t" || asked[0].Rule != "unbounded-writes" {
		t.Errorf("reviewer asked %+v", asked)
	}
	q := rec.ofType(event.DBQuery)
	if len(q) != 1 || q[0].ev.Decision.Action != event.Allow || q[0].ev.Decision.Rule != "unbounded-writes" || q[0].ev.Decision.Reason != "approved in review R-1" {
		t.Errorf("db.query %+v", q)
	}
}

// Every other outcome refuses the statement in the client's terms, and
// nothing of it reaches the server.
func TestReviewRefusals(t *testing.T) {
	for _, tc := range []struct {
		name       string
		result     guard.ReviewResult
		code, want string
		detail     string
	}{
		{"denied", guard.ReviewResult{Outcome: guard.ReviewDenied, ID: "R-1", By: "bob@example.com", Reason: "not now"}, "42501", "warden: review R-1 denied by bob@example.com: not now", ""},
		{"not in time", guard.ReviewResult{Outcome: guard.ReviewPending, ID: "R-1"}, "42501", `warden: statement requires review R-1 (rule "unbounded-writes") and was not approved in time`, "review R-1"},
		{"unreachable", guard.ReviewResult{Outcome: guard.ReviewUnavailable, Detail: "no responders"}, "42501", "warden: review service unreachable", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rev := &scriptedReviewer{answer: func(context.Context) guard.ReviewResult { return tc.result }}
			ss, rec, _, _ := reviewedSession(t, rev, func(s *fakeServer) error { return substitute(s, tc.name) })
			ss.send(&pgproto3.Query{String: "DELETE FROM t"})
			msgs := ss.untilReady()
			ss.endOK()
			errs := find[*pgproto3.ErrorResponse](msgs)
			if len(errs) != 1 || errs[0].Code != tc.code || errs[0].Message != tc.want || (tc.detail != "" && errs[0].Detail != tc.detail) {
				t.Fatalf("client got %+v", errs)
			}
			q := rec.ofType(event.DBQuery)
			if len(q) != 1 || q[0].ev.Decision.Action != event.Review || q[0].ev.Decision.Reason != tc.want {
				t.Errorf("db.query %+v", q)
			}
		})
	}
}

// Inside a transaction the statement is not held: the review is opened
// and the statement refused at once.
func TestReviewInTransaction(t *testing.T) {
	rev := &scriptedReviewer{answer: func(context.Context) guard.ReviewResult {
		return guard.ReviewResult{Outcome: guard.ReviewPending, ID: "R-1"}
	}}
	ss, _, _, _ := reviewedSession(t, rev, func(s *fakeServer) error {
		if _, _, err := s.query(); err != nil { // BEGIN
			return err
		}
		if err := s.send(&pgproto3.CommandComplete{CommandTag: []byte("BEGIN")}, &pgproto3.ReadyForQuery{TxStatus: 'T'}); err != nil {
			return err
		}
		return substitute(s, "a statement in a transaction")
	})
	ss.send(&pgproto3.Query{String: "BEGIN"})
	ss.untilReady()
	ss.send(&pgproto3.Query{String: "DELETE FROM t"})
	msgs := ss.untilReady()
	ss.endOK()
	errs := find[*pgproto3.ErrorResponse](msgs)
	if len(errs) != 1 || !strings.Contains(errs[0].Message, "it cannot wait inside a transaction") || !strings.Contains(errs[0].Message, "R-1") {
		t.Fatalf("client got %+v", errs)
	}
	if n := find[*pgproto3.NoticeResponse](msgs); len(n) != 0 {
		t.Errorf("a statement that is not held got notices %+v", n)
	}
	if asked := rev.requests(); len(asked) != 1 || asked[0].Hold != 0 {
		t.Errorf("reviewer asked %+v", asked)
	}
}

// A CancelRequest for the session withdraws the held statement (57014)
// and never reaches the server.
func TestReviewCancelled(t *testing.T) {
	holding := make(chan struct{})
	rev := &scriptedReviewer{answer: func(ctx context.Context) guard.ReviewResult {
		close(holding)
		<-ctx.Done()
		return guard.ReviewResult{Outcome: guard.ReviewCancelled, ID: "R-1"}
	}}
	ss, _, codec, key := reviewedSession(t, rev, func(s *fakeServer) error { return substitute(s, "a withdrawn statement") })
	ss.send(&pgproto3.Query{String: "DELETE FROM t"})
	// The notice comes first; the pipe delivers it only as it is read.
	if n, ok := ss.receive().(*pgproto3.NoticeResponse); !ok || !strings.Contains(n.Message, "R-1") {
		t.Fatalf("client got %+v, want the hold's notice", n)
	}
	<-holding
	if got := sendCancel(t, codec, "alice", key.ProcessID, key.SecretKey); got != nil {
		t.Fatalf("the cancel of a held statement reached the server: %+v", got)
	}
	msgs := ss.untilReady()
	ss.endOK()
	errs := find[*pgproto3.ErrorResponse](msgs)
	if len(errs) != 1 || errs[0].Code != codeQueryCanceled || errs[0].Message != "canceling statement due to user request" || !strings.Contains(errs[0].Detail, "R-1") {
		t.Fatalf("client got %+v", errs)
	}
}

// Ending the session (expiry, logout, kill) withdraws a held statement at
// once instead of waiting out the hold.
func TestCloseWithdrawsHeldStatement(t *testing.T) {
	holding := make(chan struct{})
	rev := &scriptedReviewer{answer: func(ctx context.Context) guard.ReviewResult {
		close(holding)
		<-ctx.Done()
		return guard.ReviewResult{Outcome: guard.ReviewCancelled, ID: "R-1"}
	}}
	clk := &clock{}
	ss, st := serveReviewed(t, New(Options{}), attribution("alice", testPolicy([]policy.Rule{reviewDeletes}, nil), policy.Target{}),
		&fakeRecorder{clock: clk}, clk, rev, func(s *fakeServer) error {
			if _, err := s.trustLogin(serverPID, serverSecret); err != nil {
				return err
			}
			return s.drain()
		})
	ss.startup(map[string]string{"user": "person", "database": "orders"})
	ss.untilReady()
	ss.send(&pgproto3.Query{String: "DELETE FROM t"})
	if _, ok := ss.receive().(*pgproto3.NoticeResponse); !ok {
		t.Fatal("no hold notice")
	}
	<-holding
	reason := "warden: session killed by soc@example.com"
	ended := endAsync(st, reason)
	if e := readFatal(t, ss); e.Code != codeAdminShutdown || e.Message != reason {
		t.Errorf("client got %+v", e)
	}
	select {
	case <-ended:
	case <-time.After(hang):
		t.Fatal("End waited on the held statement")
	}
}
