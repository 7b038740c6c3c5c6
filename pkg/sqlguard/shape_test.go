package sqlguard

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
)

// shapeCorpus are texts the scanner must model: every literal found, none
// invented, in agreement with PostgreSQL's own scanner.
var shapeCorpus = []string{
	"SELECT abalance FROM pgbench_accounts WHERE aid = 4242;",
	"select * from t where a = 'x' and b = 'it''s' and c in (1, 2.5, 3e7, 1.e-3, 99999999999)",
	"select 2147483647, 2147483648, 0000000000001, 1.",
	"/* 'not a string' /* nested 'still not' */ */ select 'a' -- 'nor this'\n, 5",
	"select $1, $22 from t where x = 'y'",
	`select "we""ird '5'" from "T" where "a$b" = 7`,
	"select t1.c2, x$1 from t1 where c2 > 10 and x$1 < 'é'",
	"update t set a = 1 where b = 'two'; delete from t where id = 3",
	"select 2*/*c*/3, 4--5\n",
	"select 'a' /* block */ 'b'",
	"insert into t values ('a', 1), ('b', 2)",
	"select interval '1 day', date '2020-01-01', 'x'::text",
	"select -5, - 5, +3",
	"SELECT 1 LIMIT 10 OFFSET 20",
	"select 'multi\nline'",
	"select ''", "select ''''",
	"select 1 from t where x = 1;select 2",
}

// shapeRefused are texts outside the modelled subset.
var shapeRefused = []string{
	`select 'a\'b'`, `select E'a'`, `select e'\n'`, "select B'101'", "select X'ff'", "select N'x'",
	"select U&'d\\0061t'", `select U&"d!0061t" UESCAPE '!'`, "select $$body$$", "select $tag$x$tag$",
	"select 'a'\n'b'", "select 'a' -- c\n 'b'", "select 'a' 'b'", "select 0x1F", "select 1_000", "select 1abc",
	"select 1e", "select 1..2", "select .5", "select t.5", "select 'unterminated", `select "unterminated`,
	"select /* unterminated", "select 1\x00", "select 1\v", "select $", "select $1a", "select abc'x'",
	"select 5'x'", "select 1.2.3", "select pg_read_file('\xff')",
}

// literalClass is the marker the scanner uses for the literal text lit.
func literalClass(lit string) string {
	switch {
	case strings.HasPrefix(lit, "'"):
		return markString
	case strings.Trim(lit, "0123456789") == "" && fitsInt32(lit):
		return markInteger
	}
	return markNumeric
}

// checkAgainstScanner compares the scanner's literals with the constants
// libpg_query's scanner reports for sql.
func checkAgainstScanner(t *testing.T, sql string, lits []span) {
	t.Helper()
	res, err := pg_query.Scan(sql)
	if err != nil {
		return // the parser refuses it too; Analyze caches nothing
	}
	var want []span
	for _, tok := range res.Tokens {
		var class string
		switch tok.Token {
		case pg_query.Token_SCONST:
			class = markString
		case pg_query.Token_ICONST:
			class = markInteger
		case pg_query.Token_FCONST:
			class = markNumeric
		case pg_query.Token_BCONST, pg_query.Token_XCONST, pg_query.Token_USCONST, pg_query.Token_UIDENT:
			t.Fatalf("%q: scanner accepted a %v token", sql, tok.Token)
		default:
			continue
		}
		s := span{int(tok.Start), int(tok.End)}
		if got := literalClass(sql[s.start:s.end]); got != class {
			t.Fatalf("%q: literal %q is %q to PostgreSQL, %q to the scanner", sql, sql[s.start:s.end], class, got)
		}
		want = append(want, s)
	}
	if !reflect.DeepEqual(lits, want) && !(len(lits) == 0 && len(want) == 0) {
		t.Fatalf("%q: literals at %v, PostgreSQL's scanner has %v", sql, lits, want)
	}
}

func TestShapeAgreesWithPostgresScanner(t *testing.T) {
	for _, sql := range shapeCorpus {
		_, lits, ok := shapeOf(sql)
		if !ok {
			t.Errorf("%q: refused", sql)
			continue
		}
		checkAgainstScanner(t, sql, lits)
	}
	for _, sql := range shapeRefused {
		if shape, _, ok := shapeOf(sql); ok {
			t.Errorf("%q: accepted as %q", sql, shape)
		}
	}
}

// variant returns sql with every literal replaced by another value of the
// same class and a different length, so that statement boundaries move.
func variant(sql string, lits []span) string {
	var b strings.Builder
	at := 0
	for i, l := range lits {
		b.WriteString(sql[at:l.start])
		switch literalClass(sql[l.start:l.end]) {
		case markString:
			b.WriteString("'" + strings.Repeat("v''", i%3+1) + "'")
		case markInteger:
			b.WriteString(strconv.Itoa(7 + 1000*i))
		default:
			b.WriteString("31.25e2")
		}
		at = l.end
	}
	b.WriteString(sql[at:])
	return b.String()
}

// checkShapeVariant primes the cache with sql, then asserts that a variant
// of the same shape analyses exactly as it would uncached; and the other
// way round, so that a text the fuzzer made is served from an entry made
// from a tame variant of it.
func checkShapeVariant(t *testing.T, sql string) (hit bool) {
	t.Helper()
	shape, lits, ok := shapeOf(sql)
	if !ok {
		return false
	}
	checkAgainstScanner(t, sql, lits)
	other := variant(sql, lits)
	s2, _, ok := shapeOf(other)
	if !ok {
		// Refused for what the new values touch ("0.''" becomes
		// "31.25e2'...'", a string glued to a word): not cached, fine.
		return false
	}
	if s2 != shape {
		t.Fatalf("variant %q of %q has another shape", other, sql)
	}
	if _, err := Analyze(other); err == nil {
		checkCached(t, sql)
	}
	if _, err := Analyze(sql); err != nil {
		return false
	}
	_, hit = cache.get("s" + shape)
	checkCached(t, other)
	return hit
}

func TestAnalyzeByShape(t *testing.T) {
	hits := 0
	for _, sql := range shapeCorpus {
		if checkShapeVariant(t, sql) {
			hits++
		}
	}
	// Most of the corpus must actually be served by shape, or this test
	// proves nothing about it.
	if hits < len(shapeCorpus)/2 {
		t.Fatalf("only %d of %d texts cached by shape", hits, len(shapeCorpus))
	}
	// pgbench's statement is the case the cache exists for.
	if !checkShapeVariant(t, "SELECT abalance FROM pgbench_accounts WHERE aid = 1;") {
		t.Fatal("pgbench's statement not cached by shape")
	}
}

// Where the analysis reads a literal's value, texts are not cached by
// shape: COPY options, and literals pg_query keeps or folds (-5).
func TestShapeNotUsedWhereValuesMatter(t *testing.T) {
	for _, pair := range [][2]string{
		{"copy t to stdout with (format csv, header 1)", "copy t to stdout with (format csv, header 0)"},
		{"copy t to stdout with (format 'csv')", "copy t to stdout with (format 'binary')"},
		{"select -5 from t", "select -6 from t"},
	} {
		if _, err := Analyze(pair[0]); err != nil {
			t.Fatal(err)
		}
		shape, _, _ := shapeOf(pair[0])
		if _, ok := cache.get("s" + shape); ok {
			t.Errorf("%q cached by shape", pair[0])
		}
		checkCached(t, pair[1])
	}
}

// FuzzShape checks the scanner against libpg_query's, and that a text
// served from another text's shape entry analyses exactly as it would
// uncached.
func FuzzShape(f *testing.F) {
	for _, s := range append(append([]string{}, shapeCorpus...), shapeRefused...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if len(sql) > cacheMaxText {
			return
		}
		checkShapeVariant(t, sql)
	})
}

// Texts crafted to share a shape with an allowed statement must still be
// denied: quotes inside comments, comments inside strings, doubled quotes
// and string continuation cannot make a DROP look like a literal.
func TestShapeCannotSmuggleStatements(t *testing.T) {
	rules := []policy.Rule{{Name: "no-drop", When: policy.Match{Statements: []string{"drop"}}, Action: policy.Deny}}
	for _, pair := range [][2]string{
		{"SELECT 1 /* 'x' */", "SELECT 1 /* ' */; DROP TABLE t; /* ' */"},
		{"SELECT 'a' -- x", "SELECT 'a' -- x\n; DROP TABLE t"},
		{"SELECT 'x'", "SELECT ''; DROP TABLE t; SELECT ''"},
		{"SELECT 'x'", "SELECT 'x'''; DROP TABLE t"},
		{"SELECT 'a'\n'b'", "SELECT 'a'\n; DROP TABLE t; SELECT 'b'"},
		{"SELECT E'a'", "SELECT E'\\\\'; DROP TABLE t; --'"},
		{"SELECT $$a$$", "SELECT $$a$$; DROP TABLE t; SELECT $$b$$"},
		{"SELECT 1", "SELECT 1; DROP TABLE t"},
		{"SELECT \"a'\" FROM t", "SELECT \"a\" FROM t; DROP TABLE t; SELECT '\"'"},
	} {
		if _, err := Analyze(pair[0]); err != nil {
			t.Fatalf("%q: %v", pair[0], err)
		}
		stmts, err := Analyze(pair[1])
		if err != nil {
			t.Errorf("%q: %v", pair[1], err)
			continue
		}
		if v := guard.Evaluate(rules, nil, Requests(stmts)); v.Action != policy.Deny {
			t.Errorf("after %q, %q is %v", pair[0], pair[1], v.Action)
		}
	}
}
