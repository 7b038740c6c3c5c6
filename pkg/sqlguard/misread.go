package sqlguard

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

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
