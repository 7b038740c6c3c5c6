package mysqlguard

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

var maria = Lexing{ModeKnown: true, ASCIISafeCharset: true, Server: Server{MariaDB: true, Version: 101106}}

func analyzeOK(t *testing.T, sql string, lx Lexing) []*Statement {
	t.Helper()
	stmts, err := Analyze(sql, lx)
	if err != nil {
		t.Fatalf("%q: %v", sql, err)
	}
	return stmts
}

func kinds(stmts []*Statement) []string {
	var out []string
	for _, s := range stmts {
		out = append(out, s.Kinds...)
	}
	return out
}

func TestExecutableCommentsAreCode(t *testing.T) {
	for _, sql := range []string{
		"/*!50000 DROP TABLE t */",
		"/*! DROP TABLE t */",
		"/*!100100 DROP TABLE t */",  // MariaDB's six-digit version, below 10.11.6
		"/*M!100100 DROP TABLE t */", // MariaDB-only, and this is MariaDB
		"/*M! DROP TABLE t */",
		"select 1 /*!, (select 1 from t where 1; DROP TABLE t) */",
	} {
		stmts, err := Analyze(sql, maria)
		if err != nil {
			// Refusing is fine too: the text must never pass as harmless.
			continue
		}
		if !slices.Contains(kinds(stmts), "drop") {
			t.Errorf("%q: kinds %v, want drop among them", sql, kinds(stmts))
		}
	}
}

func TestCommentsTheServerSkips(t *testing.T) {
	// A version above the server's is a comment to the server: what
	// follows it is what runs.
	stmts := analyzeOK(t, "/*!110000 select 1 */ DROP TABLE t", maria)
	if got := kinds(stmts); !slices.Equal(got, []string{"drop"}) {
		t.Fatalf("kinds %v", got)
	}
	// /*M! is a comment on MySQL, /*T! (TiDB's) on both.
	mysql8 := maria
	mysql8.Server = Server{Version: 80036}
	if got := kinds(analyzeOK(t, "/*M! DROP TABLE t */ select 1", mysql8)); !slices.Equal(got, []string{"select"}) {
		t.Fatalf("/*M! on MySQL: kinds %v", got)
	}
	if got := kinds(analyzeOK(t, "/*T! DROP TABLE t */ select 1", maria)); !slices.Equal(got, []string{"select"}) {
		t.Fatalf("/*T!: kinds %v", got)
	}
	// A quote inside a skipped comment does not start a string.
	if got := kinds(analyzeOK(t, "/*!110000 ' */ DROP TABLE t -- '", maria)); !slices.Contains(got, "drop") {
		t.Fatalf("quote in a skipped comment: kinds %v", got)
	}
}

func TestLineComments(t *testing.T) {
	if got := kinds(analyzeOK(t, "select 1 # ; drop table t\n", maria)); !slices.Equal(got, []string{"select"}) {
		t.Fatalf("# comment: %v", got)
	}
	if got := kinds(analyzeOK(t, "select 1 -- ; drop table t\n", maria)); !slices.Equal(got, []string{"select"}) {
		t.Fatalf("-- comment: %v", got)
	}
	// "--" without a space is not a comment: the server reads 1 - -...
	if _, err := Analyze("select 1 --; drop table t", maria); err == nil {
		t.Fatal(`"--;" read as a comment`)
	}
	if got := kinds(analyzeOK(t, "select 1 --1\n; drop table t", maria)); !slices.Contains(got, "drop") {
		t.Fatalf("--1 is arithmetic: %v", got)
	}
}

func TestBackslashesFollowSQLMode(t *testing.T) {
	sql := `select 'a\''; drop table t; -- '`
	// With escapes on (the default) this is a SELECT then a DROP.
	if got := kinds(analyzeOK(t, sql, maria)); !slices.Contains(got, "drop") {
		t.Fatalf("escapes on: %v", got)
	}
	nbe := maria
	nbe.NoBackslashEscapes = true
	// Under NO_BACKSLASH_ESCAPES 'a\' is a string, then ' starts another
	// that runs to the end: the parser must read it as the server does.
	if stmts, err := Analyze(sql, nbe); err == nil && !slices.Contains(kinds(stmts), "drop") {
		if len(stmts) != 1 {
			t.Fatalf("NO_BACKSLASH_ESCAPES: %v", kinds(stmts))
		}
	}
	unknown := maria
	unknown.ModeKnown = false
	_, err := Analyze(sql, unknown)
	var pe *ParseError
	if !errors.As(err, &pe) || !strings.Contains(pe.Msg, "sql_mode") {
		t.Fatalf("unknown mode: %v, want an ambiguity refusal", err)
	}
	// Texts without backslashes or double quotes read the same anyway.
	analyzeOK(t, "select 'plain'", unknown)
	// ANSI_QUOTES: "x" is a name, so this is a column.
	ansi := maria
	ansi.ANSIQuotes = true
	stmts := analyzeOK(t, `select "name" from t`, ansi)
	if !strings.Contains(stmts[0].Normalized, "withheld") {
		t.Fatalf("normalized text under ANSI_QUOTES: %q", stmts[0].Normalized)
	}
}

func TestMultiByteCharsetsWithBackslash(t *testing.T) {
	gbk := maria
	gbk.ASCIISafeCharset = false
	if _, err := Analyze("select '\xbf\\'; drop table t; -- '", gbk); err == nil {
		t.Fatal("0xbf5c under an unsafe charset accepted")
	}
	analyzeOK(t, "select 'é\\n'", maria)
	analyzeOK(t, "select 'é'", gbk) // no backslash: nothing to misread
	if ASCIISafeCharset("gbk") || ASCIISafeCharset("sjis") || !ASCIISafeCharset("utf8mb4") {
		t.Fatal("charset table")
	}
	if ASCIISafeCollation(28) || !ASCIISafeCollation(45) {
		t.Fatal("collation table")
	}
}

func TestMultiStatements(t *testing.T) {
	stmts := analyzeOK(t, "select 1; drop table t", maria)
	if len(stmts) != 2 || stmts[1].Kind() != "drop" || !slices.Equal(stmts[1].Tables, []string{"t"}) {
		t.Fatalf("%v", stmts)
	}
	if stmts[0].Normalized != "select ?" {
		t.Fatalf("normalized %q", stmts[0].Normalized)
	}
	// DELIMITER is the client's, never the server's.
	if _, err := Analyze("DELIMITER //", maria); err == nil {
		t.Fatal("DELIMITER accepted")
	}
}

func TestShapes(t *testing.T) {
	cases := []struct {
		sql       string
		kinds     []string
		tables    []string
		functions []string
		noWhere   bool
	}{
		{"select a, upper(b) from shop.customers c join orders o on c.id = o.cid", []string{"select"}, []string{"shop.customers", "orders"}, []string{"upper"}, false},
		{"delete from t", []string{"delete"}, []string{"t"}, nil, true},
		{"update t set a = 1 where id = 2", []string{"update"}, []string{"t"}, nil, false},
		{"insert into t select * from u", []string{"insert", "select"}, []string{"u", "t"}, nil, false},
		{"replace into t values (1)", []string{"replace"}, []string{"t"}, nil, false},
		{"call billing.refund(1)", []string{"call"}, nil, []string{"billing.refund"}, false},
		{"select * from t into outfile '/tmp/x'", []string{"select"}, []string{"t"}, []string{"into_outfile"}, false},
		{"select load_file('/etc/passwd')", []string{"select"}, nil, []string{"load_file"}, false},
		{"select sys_exec('id')", []string{"select"}, nil, []string{"sys_exec"}, false},
		{"prepare s from 'delete from t'", []string{"prepare", "delete"}, []string{"t"}, nil, true},
		{"create table x (a int)", []string{"create"}, []string{"x"}, nil, false},
		{"drop table t", []string{"drop"}, []string{"t"}, nil, false},
		{"set names utf8mb4", []string{"set"}, nil, nil, false},
		{"create user bob", []string{"create"}, nil, nil, false},
	}
	for _, c := range cases {
		s := analyzeOK(t, c.sql, maria)[0]
		if !slices.Equal(s.Kinds, c.kinds) || !slices.Equal(s.Tables, c.tables) || !slices.Equal(s.Functions, c.functions) || s.NoWhere != c.noWhere {
			t.Errorf("%q: got %v", c.sql, s)
		}
	}
}

func TestFlags(t *testing.T) {
	if s := analyzeOK(t, "load data local infile '/etc/passwd' into table t", maria)[0]; !s.LocalInfile || s.Kind() != "load" {
		t.Fatalf("local infile: %v %v", s, s.LocalInfile)
	}
	if s := analyzeOK(t, "load data infile '/tmp/x' into table t", maria)[0]; s.LocalInfile {
		t.Fatal("server-side LOAD DATA marked local")
	}
	if s := analyzeOK(t, "prepare s from @q", maria)[0]; !s.PrepareFromVariable {
		t.Fatal("PREPARE FROM @var not flagged")
	}
	for _, sql := range []string{"set sql_mode = 'ANSI_QUOTES'", "set @@session.sql_mode = ''", "set names gbk", "set character set gbk", "set character_set_client = gbk"} {
		if s := analyzeOK(t, sql, maria)[0]; !s.ChangesLexing {
			t.Errorf("%q: ChangesLexing unset", sql)
		}
	}
	if s := analyzeOK(t, "set autocommit = 0", maria)[0]; s.ChangesLexing {
		t.Error("autocommit changes lexing?")
	}
	if s := analyzeOK(t, "use `Shop`", maria)[0]; s.UseDB != "Shop" || s.Kind() != "use" {
		t.Fatalf("use: %+v", s)
	}
	if s := analyzeOK(t, "kill query 42", maria)[0]; s.Kill == nil || s.Kill.ID != 42 || !s.Kill.Query {
		t.Fatalf("kill: %+v", s.Kill)
	}
	if _, err := Analyze("prepare s from 'kill 3'", maria); err == nil {
		t.Fatal("prepared KILL accepted")
	}
	if _, err := Analyze("prepare s from 'drop table t; garbage'", maria); err == nil {
		t.Fatal("unparseable prepared text accepted")
	}
}

func TestRefusedSyntax(t *testing.T) {
	for _, sql := range []string{
		"create or replace table t (a int)", // MariaDB-only: not in the grammar
		"handler t open",
		"/* unterminated",
		"/*! select 1 /* nested */ */",
		"select 1 /*! drop table t",
		"select 1 \x00; drop table t",
	} {
		_, err := Analyze(sql, maria)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%q: %v, want a ParseError", sql, err)
		}
	}
}

func TestParseServerVersion(t *testing.T) {
	if s := ParseServerVersion("5.5.5-10.11.6-MariaDB-0+deb12u1"); !s.MariaDB || s.Version != 101106 {
		t.Fatalf("%+v", s)
	}
	if s := ParseServerVersion("8.0.36"); s.MariaDB || s.Version != 80036 {
		t.Fatalf("%+v", s)
	}
	var lx Lexing
	lx.ParseSQLMode("STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES,ANSI")
	if !lx.ModeKnown || !lx.NoBackslashEscapes || !lx.ANSIQuotes {
		t.Fatalf("%+v", lx)
	}
}

func TestOutputs(t *testing.T) {
	s := analyzeOK(t, "select id * 2, concat(ssn, 'x') as y, (select max(ssn) from u), email from t join v on t.id = v.id", maria)[0]
	want := [][]string{{"id"}, {"ssn"}, {"ssn"}, {"email"}}
	if len(s.Outputs) != len(want) {
		t.Fatalf("outputs %v", s.Outputs)
	}
	for i := range want {
		if !slices.Equal(s.Outputs[i], want[i]) {
			t.Fatalf("output %d: %v, want %v", i, s.Outputs[i], want[i])
		}
	}
	for _, sql := range []string{"select * from t", "select x from (select ssn as x from t) d", "with c as (select ssn from t) select ssn from c", "select 1 union select 2"} {
		if s := analyzeOK(t, sql, maria)[0]; s.Outputs != nil {
			t.Errorf("%q: outputs %v, want none", sql, s.Outputs)
		}
	}
}

func TestLexingChangeEndsText(t *testing.T) {
	for _, sql := range []string{
		"set sql_mode = 'NO_BACKSLASH_ESCAPES'; select 'a\\'; drop table t; # '",
		"set names gbk; select 1",
		"execute s; select 1",
	} {
		if _, err := Analyze(sql, maria); err == nil {
			t.Errorf("%q accepted", sql)
		}
	}
	analyzeOK(t, "select 1; set names utf8mb4", maria)
	oracle := maria
	oracle.ParseSQLMode("ORACLE")
	if _, err := Analyze("select 1", oracle); err == nil {
		t.Fatal("sql_mode ORACLE accepted")
	}
}
