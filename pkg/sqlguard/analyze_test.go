package sqlguard

import (
	"slices"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
)

func TestAnalyzeKindsTablesFunctions(t *testing.T) {
	tests := []struct {
		sql       string
		kinds     []string
		tables    []string
		functions []string
		noWhere   bool
	}{
		{sql: "select 1", kinds: []string{"select"}},
		{sql: "/**/DrOp/**/ TABLE t", kinds: []string{"drop"}, tables: []string{"t"}},
		{sql: `DROP TABLE "Public"."T", s.u`, kinds: []string{"drop"}, tables: []string{"Public.T", "s.u"}},
		{sql: "delete from t", kinds: []string{"delete"}, tables: []string{"t"}, noWhere: true},
		{sql: "DELETE FROM t WHERE id = 1", kinds: []string{"delete"}, tables: []string{"t"}},
		{sql: "update t set a = 1", kinds: []string{"update"}, tables: []string{"t"}, noWhere: true},
		{sql: "with d as (delete from t returning *) select * from d", kinds: []string{"select", "delete"}, tables: []string{"d", "t"}, noWhere: true},
		{sql: "select pg_catalog.pg_read_file('/etc/passwd')", kinds: []string{"select"}, functions: []string{"pg_catalog.pg_read_file"}},
		{sql: "select * from dblink('x', 'y') as r(a int)", kinds: []string{"select"}, functions: []string{"dblink"}},
		{sql: "copy t to program 'id'", kinds: []string{"copy"}, tables: []string{"t"}, functions: []string{"copy_program"}},
		{sql: "prepare p as delete from t", kinds: []string{"prepare", "delete"}, tables: []string{"t"}, noWhere: true},
		{sql: "explain analyze delete from t", kinds: []string{"explain", "delete"}, tables: []string{"t"}, noWhere: true},
		{sql: "truncate a, b", kinds: []string{"truncate"}, tables: []string{"a", "b"}},
		{sql: "alter table t add column x int", kinds: []string{"alter"}, tables: []string{"t"}},
		{sql: "create table t (a int)", kinds: []string{"create"}, tables: []string{"t"}},
		{sql: "select * into t2 from t", kinds: []string{"select", "create"}, tables: []string{"t2", "t"}},
		{sql: "grant select on t to u", kinds: []string{"grant"}, tables: []string{"t"}},
		{sql: "revoke select on t from u", kinds: []string{"revoke"}, tables: []string{"t"}},
		{sql: "end", kinds: []string{"commit", "end"}},
		{sql: "values (1)", kinds: []string{"values"}},
		{sql: "select 1 union select 2", kinds: []string{"select"}},
		{sql: "do $$ begin null; end $$", kinds: []string{"do"}},
		{sql: "create function f() returns int as 'select 1' language sql", kinds: []string{"create"}},
		{sql: "drop database d", kinds: []string{"drop"}},
	}
	for _, tt := range tests {
		t.Run(tt.sql, func(t *testing.T) {
			stmts, err := Analyze(tt.sql)
			if err != nil {
				t.Fatal(err)
			}
			if len(stmts) != 1 {
				t.Fatalf("%d statements", len(stmts))
			}
			s := stmts[0]
			if !slices.Equal(s.Kinds, tt.kinds) {
				t.Errorf("kinds %q, want %q", s.Kinds, tt.kinds)
			}
			if !slices.Equal(s.Tables, tt.tables) {
				t.Errorf("tables %q, want %q", s.Tables, tt.tables)
			}
			if !slices.Equal(s.Functions, tt.functions) {
				t.Errorf("functions %q, want %q", s.Functions, tt.functions)
			}
			if s.NoWhere != tt.noWhere {
				t.Errorf("no_where %v", s.NoWhere)
			}
		})
	}
}

func TestAnalyzeSplitsAndNormalizes(t *testing.T) {
	stmts, err := Analyze("SELECT 1; /* hi */ DROP TABLE t; select * from u where ssn = '123-45-6789'")
	if err != nil {
		t.Fatal(err)
	}
	if len(stmts) != 3 || stmts[1].Kind() != "drop" {
		t.Fatalf("%d statements, second %q", len(stmts), stmts[1].Kind())
	}
	if strings.Contains(stmts[2].Normalized, "123-45") || !strings.Contains(stmts[2].Normalized, "$1") {
		t.Fatalf("normalized %q keeps the literal", stmts[2].Normalized)
	}
	if stmts[2].Fingerprint == "" {
		t.Fatal("no fingerprint")
	}
	c, err := Analyze("copy (select a from t) to stdout with (format csv, header)")
	if err != nil || c[0].Copy == nil || !c[0].Copy.ToClient || c[0].Copy.Format != "csv" || !c[0].Copy.Header ||
		c[0].Copy.Source != "SELECT * FROM (SELECT a FROM t) AS warden_copy" {
		t.Fatalf("copy: %+v, %v", c[0].Copy, err)
	}
	if none, err := Analyze("  ;  "); err != nil || len(none) != 0 {
		t.Fatalf("empty query: %d, %v", len(none), err)
	}
	if _, err := Analyze("DROP TABLE"); err == nil {
		t.Fatal("parse error not reported")
	}
}

func TestRequest(t *testing.T) {
	stmts, err := Analyze("with d as (delete from s.t returning *) select pg_read_file('/etc/passwd') from d")
	if err != nil {
		t.Fatal(err)
	}
	r := stmts[0].Request()
	if !slices.Equal(r.Kinds, []string{"select", "delete"}) || !slices.Equal(r.Tables, []string{"d", "s.t"}) ||
		!slices.Equal(r.Functions, []string{"pg_read_file"}) || !r.NoWhere || r.Kind() != "select" {
		t.Errorf("request %+v", r)
	}
	if r.Text != stmts[0].Normalized || strings.Contains(r.Text, "passwd") {
		t.Errorf("request text %q, want the normalised statement", r.Text)
	}
	if len(r.Commands) != 0 || r.Method != "" || r.Path != "" {
		t.Errorf("a SQL request has protocol commands: %+v", r)
	}
	batch, err := Analyze("select 1; drop table t")
	if err != nil {
		t.Fatal(err)
	}
	reqs := Requests(batch)
	if len(reqs) != 2 || reqs[0].Kind() != "select" || reqs[1].Kind() != "drop" {
		t.Errorf("requests %+v", reqs)
	}
}

func TestDerivedOutputs(t *testing.T) {
	masked := func(c string) bool { return c == "email" }
	tests := []struct {
		sql   string
		names []string
		pos   []bool
	}{
		{"select id, email from users", nil, []bool{false, true}},
		{"select email as e, id from users", []string{"e"}, []bool{true, false}},
		{"select lower(email) from users", nil, []bool{true}},
		{"select x from (select email as x from users) s", []string{"x"}, []bool{true}},
		{"select * from users", nil, nil},
		{"select id from a union select email from b", nil, []bool{true}},
	}
	for _, tt := range tests {
		stmts, err := Analyze(tt.sql)
		if err != nil {
			t.Fatal(err)
		}
		o := stmts[0].Derived(masked)
		for _, n := range tt.names {
			if !o.Names[n] {
				t.Errorf("%q: %q not derived (%v)", tt.sql, n, o.Names)
			}
		}
		if !slices.Equal(o.Positions, tt.pos) {
			t.Errorf("%q: positions %v, want %v", tt.sql, o.Positions, tt.pos)
		}
	}
}

func FuzzAnalyze(f *testing.F) {
	for _, s := range []string{"select 1", "SELECT 1; DROP TABLE t", "/**/DrOp/**/ TABLE t", "delete from t",
		"with d as (delete from t returning *) select * from d", "copy (select 1) to stdout with (format csv)",
		"prepare p as select $1", `select "E""x" from "T"`} {
		f.Add(s)
	}
	rules := []policy.Rule{{Name: "no-drop", When: policy.Match{Statements: []string{"drop"}}, Action: policy.Deny}}
	f.Fuzz(func(t *testing.T, sql string) {
		checkCached(t, sql)
		stmts, err := Analyze(sql)
		if err != nil {
			return
		}
		v := guard.Evaluate(rules, nil, Requests(stmts))
		for _, s := range stmts {
			if slices.Contains(s.Kinds, "drop") && v.Action != policy.Deny {
				t.Fatalf("drop allowed: %q", sql)
			}
			s.Derived(func(c string) bool { return c == "email" })
		}
	})
}

func TestAmbiguousEscapes(t *testing.T) {
	for sql, want := range map[string]bool{
		`SELECT 'a\''; DROP TABLE t; --'`: true,
		`SELECT 'a\d' ~ 'x'`:              true,
		`SELECT 'it''s'`:                  false,
		`SELECT E'a\'b'`:                  false,
		`SELECT $$a\b$$`:                  false,
		`SELECT "a\b" FROM t`:             false,
		`SELECT 1 -- a\b`:                 false,
		`SELECT 1 /* 'a\' */`:             false,
		`SELECT 'unterminated\`:           true,
		`SELECT 'plain'`:                  false,
	} {
		if got := ambiguousEscapes(sql); got != want {
			t.Errorf("ambiguousEscapes(%q) = %v, want %v", sql, got, want)
		}
	}
}

func TestMisread(t *testing.T) {
	safe := Lexing{ConformingStrings: true, ASCIISafeEncoding: true}
	for _, tc := range []struct {
		sql     string
		lx      Lexing
		misread bool
	}{
		{`SELECT 'a\d' ~ 'x'`, safe, false},
		{`SELECT 'a\d' ~ 'x'`, Lexing{ASCIISafeEncoding: true}, true},
		{`SELECT E'a\'b'`, Lexing{ASCIISafeEncoding: true}, false},
		{"SELECT E'\x83\\'; DROP TABLE t; --'", Lexing{ConformingStrings: true}, true},
		{"SELECT E'\x83\\'; DROP TABLE t; --'", safe, false},
		{"SELECT 'é'", Lexing{}, false},
		{"SELECT 1", Lexing{}, false},
	} {
		if got := Misread(tc.sql, tc.lx) != ""; got != tc.misread {
			t.Errorf("Misread(%q, %+v) = %v, want %v", tc.sql, tc.lx, got, tc.misread)
		}
	}
	for name, want := range map[string]bool{"UTF8": true, "SQL_ASCII": true, "LATIN1": true, "EUC_JP": true, "SJIS": false, "big5": false, "": false} {
		if ASCIISafeEncoding(name) != want {
			t.Errorf("ASCIISafeEncoding(%q) != %v", name, want)
		}
	}
}
