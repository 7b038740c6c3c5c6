// Package guard is where every protocol codec asks what to do with a
// command. A codec turns what its client sent into Requests, in protocol
// neutral terms (statement keywords, tables, functions, protocol
// commands), and the Guard of the session matches them against the
// policy's L7 rules, asks a Reviewer when a review rule matched, and
// hands out the session's masker. Keeping the decision here, away from
// the wire formats, means a rule means the same thing on every protocol.
package guard

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/policy"
)

// Request is one command in protocol-neutral terms, as a codec extracted
// it. A field a protocol has no notion of stays empty, and a rule
// condition about it then never matches.
type Request struct {
	// Kinds are statement keywords, lower case: the statement's and those
	// of every statement nested in it. Kinds[0] is the top-level one.
	// SQL codecs only.
	Kinds []string
	// Tables are the relations named, as "rel" or "schema.rel".
	Tables []string
	// Functions are the functions called, lower case, schema-qualified
	// when written so.
	Functions []string
	// NoWhere is set when an UPDATE or DELETE anywhere in the command has
	// no WHERE clause.
	NoWhere bool
	// Commands are protocol commands: the Redis command, the program an
	// SSH exec request runs, the HTTP request method. Rules compare them
	// ignoring case.
	Commands []string
	// Method and Path are the HTTP request's, for the HTTP codec's
	// records and conditions to come; rules about methods match Commands.
	Method, Path string
	// Upgrade is the protocol an HTTP request asks to switch to (its
	// Upgrade header's first token, lower case), "" for none.
	Upgrade string
	// Text is the command's normalised text, with every literal taken
	// out, so it is safe to record.
	Text string
	// Exact is the command as the client sent it, literals included. A
	// review's approval is bound to it (by hash), so an approved shape
	// cannot carry other values. Never record it: it may hold secrets.
	Exact string
}

// Kind returns the top-level statement keyword, or "" when there is none.
func (r Request) Kind() string {
	if len(r.Kinds) == 0 {
		return ""
	}
	return r.Kinds[0]
}

// Verdict is the outcome of matching requests against rules.
type Verdict struct {
	// Action is what the deciding rule says; Allow when none matched.
	Action policy.Action
	// Rule names the deciding rule; "" when none matched.
	Rule string
	// Index is the request that matched, -1 when none did.
	Index int
	// Kind is that request's top-level keyword.
	Kind string
	// Exempted lists rules skipped because of except_groups, for the record.
	Exempted []string
	// Review is the Reviewer's answer when a review rule decided, nil
	// otherwise.
	Review *ReviewResult
}

// Reviewer decides a request that a review rule matched: it opens a
// review with the people the rule names and, as the ReviewRequest says,
// waits for their decision. It must give up when ctx is done, with
// ReviewCancelled.
type Reviewer interface {
	Review(ctx context.Context, req ReviewRequest) ReviewResult
}

// ReviewerFunc lets a function be a Reviewer. A nil ReviewerFunc answers
// ReviewUnavailable.
type ReviewerFunc func(ctx context.Context, req ReviewRequest) ReviewResult

// Review calls f.
func (f ReviewerFunc) Review(ctx context.Context, req ReviewRequest) ReviewResult {
	if f == nil {
		return ReviewResult{Outcome: ReviewUnavailable, Detail: "no review service"}
	}
	return f(ctx, req)
}

// ReviewRequest is what a Reviewer is asked to decide.
type ReviewRequest struct {
	// Rule names the review rule, and Spec is its review block.
	Rule string
	Spec policy.ReviewSpec
	// Request is the command under review.
	Request Request
	// Hold is how long to wait for a decision: Spec.Hold, or 0 when the
	// client cannot wait (inside a transaction, whose locks would stay
	// held). With 0 the review is opened (or an earlier approval used)
	// and the Reviewer returns at once.
	Hold time.Duration
	// Waiting, when set, is called once the review is open and then every
	// NoticeEvery while the request is held, so the codec can tell the
	// client what it waits for. It must not block for long.
	Waiting func(Waiting)
}

// Waiting tells a held client what it waits for.
type Waiting struct {
	// ID names the review, Rule the rule that asked for it.
	ID, Rule string
	// Hold is the whole wait, Left what remains of it.
	Hold, Left time.Duration
}

// NoticeEvery is how often a held client is reminded what it waits for.
const NoticeEvery = 15 * time.Second

// ReviewOutcome is how a review ended for the request.
type ReviewOutcome uint8

// Review outcomes.
const (
	// ReviewApproved: the request may run.
	ReviewApproved ReviewOutcome = iota + 1
	// ReviewDenied: an approver refused it (By, Reason).
	ReviewDenied
	// ReviewPending: no decision within the hold; the review stays open
	// and a later approval grants the same request.
	ReviewPending
	// ReviewCancelled: the client gave up (ctx done) while held.
	ReviewCancelled
	// ReviewUnavailable: no review could be opened (Detail says why). The
	// request is refused: a review that cannot happen never allows.
	ReviewUnavailable
)

// ReviewResult is a Reviewer's answer.
type ReviewResult struct {
	Outcome ReviewOutcome
	// ID names the review ("R-…"); empty for ReviewUnavailable.
	ID string
	// By and Reason are the deciding approver's, for ReviewDenied.
	By, Reason string
	// Detail explains ReviewUnavailable, for logs and the client.
	Detail string
}

// Guard decides the requests of one session: one identity, known by its
// groups, on one target, under one policy. It is safe for concurrent use:
// nothing in it changes after New.
type Guard struct {
	rules  []policy.Rule
	groups []string
	masker *masking.Masker
	rev    Reviewer
}

// New returns the Guard for an identity in groups using target under p.
// A nil p means no rules and no masking. A nil rev refuses every request
// a review rule matches.
func New(p *policy.Policy, target string, groups []string, rev Reviewer) *Guard {
	g := &Guard{groups: groups, rev: rev}
	if p != nil {
		g.rules = p.RulesFor(target)
		g.masker = masking.New(p.MaskingFor(target), groups)
	}
	return g
}

// Check matches a batch of requests sent together against the rules,
// without asking anyone: a review rule's verdict stays Review.
func (g *Guard) Check(reqs []Request) Verdict {
	return Evaluate(g.rules, g.groups, reqs)
}

// Decide is Check, then, for a Review verdict, the Reviewer's decision on
// the request the review rule matched, asked as hold says. Approved, the
// verdict becomes Allow and keeps the rule's name for the record; any
// other outcome, or no Reviewer, leaves it Review, which the codec
// refuses in its own words using v.Review.
func (g *Guard) Decide(ctx context.Context, reqs []Request, hold Hold) Verdict {
	v := g.Check(reqs)
	if v.Action != policy.Review || v.Index < 0 || v.Index >= len(reqs) {
		return v
	}
	rule, ok := g.rule(v.Rule)
	if g.rev == nil || !ok || rule.Review == nil {
		v.Review = &ReviewResult{Outcome: ReviewUnavailable, Detail: "no review service"}
		return v
	}
	req := ReviewRequest{Rule: v.Rule, Spec: *rule.Review, Request: reqs[v.Index], Hold: rule.Review.Hold, Waiting: hold.Waiting}
	if hold.Off {
		req.Hold = 0
	}
	res := g.rev.Review(ctx, req)
	v.Review = &res
	if res.Outcome == ReviewApproved {
		v.Action = policy.Allow
	}
	return v
}

// ReviewID names the review that decided v, "" when none did.
func (v Verdict) ReviewID() string {
	if v.Review == nil {
		return ""
	}
	return v.Review.ID
}

// Hold is how a codec lets a review hold its client.
type Hold struct {
	// Off: the client cannot be held (it is inside a transaction).
	Off bool
	// Waiting is ReviewRequest.Waiting.
	Waiting func(Waiting)
}

func (g *Guard) rule(name string) (policy.Rule, bool) {
	for _, r := range g.rules {
		if r.Name == name {
			return r, true
		}
	}
	return policy.Rule{}, false
}

// Masker returns the masker for the session's results, nil when nothing
// is masked for this identity on this target.
func (g *Guard) Masker() *masking.Masker { return g.masker }

// Groups returns the identity's groups, as the Guard was made with. The
// caller must not modify them.
func (g *Guard) Groups() []string { return g.groups }

// Evaluate applies rules (in policy order, as Policy.RulesFor returns them)
// to a batch of requests sent together. Each request gets the first rule
// it matches that the identity is not exempt from. A batch is only as
// allowed as its least allowed request: one denied request denies the
// whole batch, so "SELECT 1; DROP TABLE t" cannot smuggle the DROP.
func Evaluate(rules []policy.Rule, groups []string, reqs []Request) Verdict {
	v := Verdict{Action: policy.Allow, Index: -1}
	for i, r := range reqs {
		for _, rule := range rules {
			if !Matches(rule.When, r) {
				continue
			}
			if rule.Exempt(groups) {
				if !slices.Contains(v.Exempted, rule.Name) {
					v.Exempted = append(v.Exempted, rule.Name)
				}
				continue
			}
			if severity(rule.Action) > severity(v.Action) {
				v = Verdict{Action: rule.Action, Rule: rule.Name, Index: i, Kind: r.Kind(), Exempted: v.Exempted}
			} else if v.Index < 0 && rule.Action == policy.Allow {
				v.Rule, v.Index, v.Kind = rule.Name, i, r.Kind()
			}
			break
		}
	}
	return v
}

// severity orders actions so a batch takes its strictest request's.
func severity(a policy.Action) int {
	switch a {
	case policy.Deny:
		return 2
	case policy.Review:
		return 1
	}
	return 0
}

// Matches reports whether request r satisfies every condition of m. A
// condition about something r cannot have, a command on a SQL request or
// a table on a Redis one, is not satisfied, so a rule never applies to a
// protocol it was not written for by accident.
func Matches(m policy.Match, r Request) bool {
	if len(m.Statements) > 0 && !slices.ContainsFunc(m.Statements, func(k string) bool {
		return slices.Contains(r.Kinds, strings.ToLower(k))
	}) {
		return false
	}
	if len(m.Tables) > 0 && !slices.ContainsFunc(m.Tables, func(t string) bool { return hasName(r.Tables, t) }) {
		return false
	}
	if len(m.Functions) > 0 && !slices.ContainsFunc(m.Functions, func(f string) bool { return hasName(r.Functions, f) }) {
		return false
	}
	if m.NoWhere && !r.NoWhere {
		return false
	}
	if !m.MatchesHTTP(r.Method, r.Path, r.Upgrade) {
		return false
	}
	if len(m.Commands) > 0 && !slices.ContainsFunc(m.Commands, func(c string) bool {
		return slices.ContainsFunc(r.Commands, func(rc string) bool { return strings.EqualFold(rc, c) })
	}) {
		return false
	}
	return true
}

// hasName reports whether names holds want. An unqualified want matches
// any schema; a qualified one only that schema. Comparison ignores case:
// a rule about "Users" should not miss "users", and matching more is the
// safe way to err for a rule.
func hasName(names []string, want string) bool {
	qualified := strings.Contains(want, ".")
	for _, n := range names {
		if !qualified {
			if i := strings.LastIndexByte(n, '.'); i >= 0 {
				n = n[i+1:]
			}
		}
		if strings.EqualFold(n, want) {
			return true
		}
	}
	return false
}
