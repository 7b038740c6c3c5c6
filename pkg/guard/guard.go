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
	// Text is the command's normalised text, with every literal taken
	// out, so it is safe to record.
	Text string
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
}

// Reviewer decides a request that a review rule matched. It returns true
// to let the request run. It may block while a person decides, and
// should give up, returning false, when ctx is done.
type Reviewer interface {
	Review(ctx context.Context, rule string, req Request) bool
}

// ReviewerFunc lets a function be a Reviewer, so a codec can close over
// what its reviewer needs to know of the session. A nil ReviewerFunc
// refuses.
type ReviewerFunc func(ctx context.Context, rule string, req Request) bool

// Review calls f.
func (f ReviewerFunc) Review(ctx context.Context, rule string, req Request) bool {
	return f != nil && f(ctx, rule, req)
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
// the request the review rule matched: approved, the verdict becomes Allow
// and keeps the rule's name for the record; refused, or with no Reviewer,
// it stays Review, which the codec refuses.
func (g *Guard) Decide(ctx context.Context, reqs []Request) Verdict {
	v := g.Check(reqs)
	if v.Action != policy.Review || g.rev == nil || v.Index < 0 || v.Index >= len(reqs) {
		return v
	}
	if g.rev.Review(ctx, v.Rule, reqs[v.Index]) {
		v.Action = policy.Allow
	}
	return v
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
