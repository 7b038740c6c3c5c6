package sqlguard

import (
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/wardenhq/warden/pkg/policy"
)

// Verdict is the outcome of matching statements against rules.
type Verdict struct {
	// Action is what the first matching rule says; Allow when none matched.
	Action policy.Action
	// Rule names the matching rule; "" when none matched.
	Rule string
	// Index is the statement that matched, -1 when none did.
	Index int
	// Kind is that statement's top-level keyword.
	Kind string
	// Exempted lists rules skipped because of except_groups, for the record.
	Exempted []string
}

// Evaluate applies rules (in policy order, as Policy.RulesFor returns them)
// to a batch of statements sent together. Each statement gets the first
// rule it matches that the identity is not exempt from. A batch is only as
// allowed as its least allowed statement: one denied statement denies the
// whole batch, so "SELECT 1; DROP TABLE t" cannot smuggle the DROP.
func Evaluate(rules []policy.Rule, groups []string, stmts []*Statement) Verdict {
	v := Verdict{Action: policy.Allow, Index: -1}
	for i, s := range stmts {
		for _, r := range rules {
			if !Matches(r.When, s) {
				continue
			}
			if r.Exempt(groups) {
				if !slices.Contains(v.Exempted, r.Name) {
					v.Exempted = append(v.Exempted, r.Name)
				}
				continue
			}
			if severity(r.Action) > severity(v.Action) {
				v = Verdict{Action: r.Action, Rule: r.Name, Index: i, Kind: s.Kind(), Exempted: v.Exempted}
			} else if v.Index < 0 && r.Action == policy.Allow {
				v.Rule, v.Index, v.Kind = r.Name, i, s.Kind()
			}
			break
		}
	}
	return v
}

// severity orders actions so a batch takes its strictest statement's.
func severity(a policy.Action) int {
	switch a {
	case policy.Deny:
		return 2
	case policy.Review:
		return 1
	}
	return 0
}

// Matches reports whether statement s satisfies every condition of m.
func Matches(m policy.Match, s *Statement) bool {
	if len(m.Statements) > 0 && !slices.ContainsFunc(m.Statements, func(k string) bool {
		return slices.Contains(s.Kinds, strings.ToLower(k))
	}) {
		return false
	}
	if len(m.Tables) > 0 && !slices.ContainsFunc(m.Tables, func(t string) bool { return hasName(s.Tables, t) }) {
		return false
	}
	if len(m.Functions) > 0 && !slices.ContainsFunc(m.Functions, func(f string) bool { return hasName(s.Functions, f) }) {
		return false
	}
	if m.NoWhere && !s.NoWhere {
		return false
	}
	// Commands are for other protocols; the policy parser rejects them on
	// SQL targets, so they never reach here.
	return len(m.Commands) == 0
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

// Lexing is what the session's settings say about how the server splits a
// text into tokens. The zero value is the unknown, and safest, case.
type Lexing struct {
	// ConformingStrings is standard_conforming_strings = on: a backslash
	// in a '...' string is an ordinary character, as libpg_query reads it.
	ConformingStrings bool
	// ASCIISafeEncoding is a client_encoding in which every byte below
	// 0x80 is a character of its own (see ASCIISafeEncoding).
	ASCIISafeEncoding bool
}

// ASCIISafeEncoding reports whether PostgreSQL client encoding name never
// uses a byte below 0x80 inside a multi-byte character. SJIS, BIG5, GBK,
// UHC, GB18030 and JOHAB do: there, 0x83 0x5C is one character to the
// server and a byte then a backslash to a parser reading UTF-8.
func ASCIISafeEncoding(name string) bool {
	switch strings.ToUpper(name) {
	case "", "SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB":
		return false
	}
	return true
}

// Misread returns why the server, reading sql under lx, might split it into
// other tokens than libpg_query does, or "" when both read it the same.
// Only backslashes can make them differ: the parser always reads '...'
// strings as if standard_conforming_strings were on, and reads bytes as
// UTF-8. A misread text can hide a statement inside what the parser takes
// for a string, so the caller must refuse it.
func Misread(sql string, lx Lexing) string {
	if strings.IndexByte(sql, '\\') < 0 {
		return ""
	}
	if !lx.ASCIISafeEncoding && strings.IndexFunc(sql, func(r rune) bool { return r >= 0x80 }) >= 0 {
		return "a text with both a backslash and non-ASCII bytes is refused unless client_encoding is one where a backslash byte is always a backslash (UTF8, for one)"
	}
	if !lx.ConformingStrings && ambiguousEscapes(sql) {
		return "a backslash in a '...' string is read as an escape while standard_conforming_strings is off, and Warden checks statements as if it were on"
	}
	return ""
}

// ambiguousEscapes reports whether sql has a backslash inside a '...'
// string. libpg_query reads such strings as PostgreSQL does with
// standard_conforming_strings on, the default, where a backslash is an
// ordinary character. A session can turn the setting off, and then the
// server reads the backslash as an escape, so the same text can hold other
// statements. This is one string to the parser, and a string then a DROP
// to such a server:
//
//	SELECT 'a\''; DROP TABLE t; --'
//
// Texts without a backslash in such a string read the same either way;
// E'...' and dollar-quoted strings mean the same under both settings. A
// text the scanner rejects counts as ambiguous.
func ambiguousEscapes(sql string) bool {
	if strings.IndexByte(sql, '\\') < 0 {
		return false
	}
	res, err := pg_query.Scan(sql)
	if err != nil {
		return true
	}
	for _, t := range res.Tokens {
		if t.Token != pg_query.Token_SCONST || int(t.End) > len(sql) || t.Start < 0 || t.Start >= t.End {
			continue
		}
		lit := sql[t.Start:t.End]
		if lit[0] == '\'' && strings.IndexByte(lit, '\\') >= 0 {
			return true
		}
	}
	return false
}
