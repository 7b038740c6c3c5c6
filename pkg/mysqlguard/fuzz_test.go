package mysqlguard

import (
	"testing"
)

// FuzzAnalyze checks that no text makes the analysis panic or accept a
// statement without a kind, and that the comment rewrite keeps every
// byte where it was, so statement texts cut from it line up with the
// client's.
func FuzzAnalyze(f *testing.F) {
	for _, s := range []string{
		"select 1", "/*!50000 DROP TABLE t */", "select 1; drop table t", "select 'a\\''; drop table t; -- '",
		"/*M!100100 select 1 */", "/*!110000 ' */ drop table t -- '", "select \"x\" from t", "prepare s from 'delete from t'",
		"load data local infile 'x' into table t", "select * from t into outfile '/tmp/x'", "call p(1)", "kill query 7",
		"select 1 # c\n", "select 1 -- c\n", "update t set a = 1", "select `a``b` from t",
	} {
		f.Add(s, false, false, true)
	}
	f.Fuzz(func(t *testing.T, sql string, noBackslash, ansi, known bool) {
		srv := Server{MariaDB: true, Version: 101106}
		if text, reason := prepare(sql, noBackslash, ansi, srv); reason == "" && len(text) != len(sql) {
			t.Fatalf("prepare changed the length: %d -> %d", len(sql), len(text))
		}
		lx := Lexing{ModeKnown: known, NoBackslashEscapes: noBackslash, ANSIQuotes: ansi, ASCIISafeCharset: true, Server: srv}
		stmts, err := Analyze(sql, lx)
		if err != nil {
			return
		}
		for _, s := range stmts {
			if s.Kind() == "" || s.Normalized == "" || s.Fingerprint == "" {
				t.Fatalf("statement without kind or record text: %+v", s)
			}
		}
	})
}
