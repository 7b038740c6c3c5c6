package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
)

// codeQueryCanceled is query_canceled: a held statement the client gave up
// on, as the server answers a cancelled statement.
const codeQueryCanceled = "57014"

// holdFor says whether the statement now read may be held for review. It
// may only when the server is idle outside a transaction with nothing in
// flight: holding inside a transaction would keep its locks held while a
// person decides.
func (ss *pgSession) holdFor() guard.Hold {
	return guard.Hold{Off: byte(ss.txStatus.Load()) != 'I' || !ss.q.empty(), Waiting: ss.noticeWaiting}
}

// noticeWaiting tells the held client what it waits for, in a
// NoticeResponse that psql prints at once.
func (ss *pgSession) noticeWaiting(w guard.Waiting) {
	n := &pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "01000",
		Message: fmt.Sprintf("warden: review %s required by rule %q; waiting up to %s (approve: warden review approve %s)",
			w.ID, w.Rule, shortDuration(w.Hold), w.ID)}
	if w.Left < w.Hold {
		n.Detail = fmt.Sprintf("%s left", shortDuration(w.Left))
	}
	ss.cwMu.Lock()
	defer ss.cwMu.Unlock()
	ss.cw.Send(n)
	if err := ss.cw.Flush(); err != nil {
		ss.s.Log.Debug().Err(err).Msg("review notice not delivered")
	}
}

// decide is the Guard's decision on reqs. A review rule's decision holds
// the client, under a context that a CancelRequest for this session ends,
// so Ctrl-C in psql withdraws the statement from the hold.
func (ss *pgSession) decide(ctx context.Context, reqs []guard.Request) guard.Verdict {
	v := ss.s.Guard.Check(reqs)
	if v.Action != policy.Review {
		return v
	}
	hold := ss.holdFor()
	ss.holding(ctx, func(ctx context.Context) { v = ss.s.Guard.Decide(ctx, reqs, hold) })
	return v
}

func (ss *pgSession) holding(ctx context.Context, decide func(context.Context)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ss.holdMu.Lock()
	ss.holdCancel = cancel
	ss.holdMu.Unlock()
	defer func() {
		ss.holdMu.Lock()
		ss.holdCancel = nil
		ss.holdMu.Unlock()
	}()
	decide(ctx)
}

// cancelHold ends the session's hold, if a statement is held. It reports
// whether one was: the cancel is then Warden's to answer, since nothing of
// the statement reached the server.
func (ss *pgSession) cancelHold() bool {
	ss.holdMu.Lock()
	defer ss.holdMu.Unlock()
	if ss.holdCancel == nil {
		return false
	}
	ss.holdCancel()
	return true
}

// reviewError is the client's error for a statement a review did not let
// run.
func reviewError(rule, kind string, r *guard.ReviewResult) *pgproto3.ErrorResponse {
	e := deniedError("", rule, kind, "")
	switch r.Outcome {
	case guard.ReviewDenied:
		e.Message = fmt.Sprintf("warden: review %s denied by %s", r.ID, r.By)
		if r.Reason != "" {
			e.Message += ": " + r.Reason
		}
		e.Detail = fmt.Sprintf("review %s, rule %q", r.ID, rule)
		e.Hint = "The approvers refused this statement; talk to them before you try again."
	case guard.ReviewPending:
		e.Message = fmt.Sprintf("warden: statement requires review %s (rule %q) and was not approved in time", r.ID, rule)
		e.Detail = "review " + r.ID
		e.Hint = fmt.Sprintf("Re-run the statement once the review is approved (warden review show %s); an approval lets it run once.", r.ID)
	case guard.ReviewCancelled:
		e.Code = codeQueryCanceled
		e.Message = "canceling statement due to user request"
		e.Detail = fmt.Sprintf("warden: withdrawn while waiting for review %s", r.ID)
		e.Hint = ""
	default:
		e.Message = "warden: review service unreachable"
		e.Detail = fmt.Sprintf("rule %q requires a review, and none could be opened: %s", rule, r.Detail)
		e.Hint = "Warden never runs a statement that needs review without one. Retry later; if it persists, tell the Warden administrator."
	}
	return e
}

// heldInTransaction is the error for a statement that needs review inside
// a transaction: refused at once, with the review opened for a later run.
func heldInTransaction(rule string, r *guard.ReviewResult) *pgproto3.ErrorResponse {
	e := reviewError(rule, "", r)
	e.Message = fmt.Sprintf("warden: statement requires review %s (rule %q); it cannot wait inside a transaction", r.ID, rule)
	e.Hint = fmt.Sprintf("End the transaction, and re-run the statement outside one once review %s is approved.", r.ID)
	return e
}

// shortDuration prints 2m0s as 2m and 1h30m0s as 1h30m.
func shortDuration(d time.Duration) string {
	s := d.Round(time.Second).String()
	for _, suf := range []string{"m0s", "h0m"} {
		if len(s) > len(suf) && s[len(s)-len(suf):] == suf {
			s = s[:len(s)-len(suf)+1]
		}
	}
	return s
}

// onceSpent is the error for a second Execute of a prepared statement a
// review approved.
func onceSpent(id string) *pgproto3.ErrorResponse {
	e := deniedError("", "review", "", "")
	e.Message = fmt.Sprintf("warden: review %s approved one run of this statement, and it has run", id)
	e.Hint = "Prepare the statement again to ask for another review."
	return e
}
