package sqlguard

import (
	"strings"
	"unicode/utf8"
)

// A statement's shape is its text with the value of every plain literal
// (a '...' string, an integer, a decimal) replaced by a marker of the
// literal's lexical class. Drivers and tools send the same few shapes with
// different values inline (pgbench's "WHERE aid = 4242", an ORM's
// "LIMIT 20"), so analyses are cached by shape (see Analyze).
//
// Why this is sound: when two texts have the same shape, PostgreSQL's
// scanner reads them as the same token sequence, differing only in the
// values of SCONST, ICONST and FCONST tokens. The grammar never looks at a
// token's value, so both parse to the same tree up to constant values, and
// the analysis (statement kinds, tables, functions, WHERE presence, output
// columns) does not read constant values. The exceptions are checked when
// an entry is stored (see shapeSafe).
//
// The scanner below models only a subset of PostgreSQL's lexical grammar,
// and gives up (ok is false) on anything outside it, so that it never reads
// a text differently from the server: backslashes anywhere (their meaning
// in strings depends on standard_conforming_strings), E'', B'', X'', N''
// and U&'' strings, U&"" identifiers, dollar quoting, string continuation
// across lines, numbers glued to identifiers or dots (read differently by
// PostgreSQL 15 and 16+: 0x1F, 1_000, 1abc), NUL, control characters and
// invalid UTF-8.
// The tests hold it against libpg_query's own scanner.

// Markers that replace a literal in a shape. A NUL cannot occur in SQL
// text (shapeOf refuses it), so a marker is never confused with the text
// around it.
const (
	markString  = "\x00s" // '...'
	markInteger = "\x00i" // digits that fit an int32 (PostgreSQL's ICONST)
	markNumeric = "\x00f" // any other number (FCONST)
)

// span is a byte range [start, end) of a text.
type span struct{ start, end int }

// shapeOf returns the shape of sql and the spans of its literals, in order.
// ok is false when sql uses lexical features the scanner does not model;
// the caller must then treat sql as a text of its own.
func shapeOf(sql string) (shape string, lits []span, ok bool) {
	if strings.IndexByte(sql, 0) >= 0 || !utf8.ValidString(sql) {
		// libpg_query stops reading at a NUL, and refuses invalid UTF-8
		// in a string's value: both make the analysis depend on a
		// literal's bytes.
		return "", nil, false
	}
	n := len(sql)
	var b strings.Builder
	copied := 0 // sql[:copied] is in b
	literal := func(start, end int, mark string) {
		b.WriteString(sql[copied:start])
		b.WriteString(mark)
		copied = end
		lits = append(lits, span{start, end})
	}
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == '-' && i+1 < n && sql[i+1] == '-':
			i = skipLineComment(sql, i)
		case c == '/' && i+1 < n && sql[i+1] == '*':
			end, closed := skipBlockComment(sql, i)
			if !closed {
				return "", nil, false
			}
			i = end
		case c == '\'':
			if i > 0 && (identChar(sql[i-1]) || sql[i-1] == '&') {
				return "", nil, false // E'', B'', X'', N'', U&'' or glued to a word
			}
			end, plain := scanString(sql, i)
			if !plain {
				return "", nil, false
			}
			literal(i, end, markString)
			i = end
		case c == '"':
			if i > 0 && sql[i-1] == '&' {
				return "", nil, false // U&"..."
			}
			end := scanQuotedIdent(sql, i)
			if end < 0 {
				return "", nil, false
			}
			i = end
		case c == '$':
			// At a token start: a parameter ($1) or dollar quoting. Inside
			// a word, '$' is consumed by the identifier case.
			j := i + 1
			for j < n && digit(sql[j]) {
				j++
			}
			if j == i+1 || (j < n && identChar(sql[j])) {
				return "", nil, false
			}
			i = j
		case digit(c):
			end, mark := scanNumber(sql, i)
			if end < 0 {
				return "", nil, false
			}
			literal(i, end, mark)
			i = end
		case c == '.' && i+1 < n && digit(sql[i+1]):
			return "", nil, false // .5, or a number after a name
		case identStart(c):
			i++
			for i < n && identChar(sql[i]) {
				i++
			}
		case c == '\\' || c == 0x7f || (c < ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f'):
			return "", nil, false
		default:
			i++ // whitespace, operators, punctuation
		}
	}
	b.WriteString(sql[copied:])
	return b.String(), lits, true
}

// skipLineComment returns the end of the "--" comment starting at i.
func skipLineComment(sql string, i int) int {
	for i < len(sql) && sql[i] != '\n' && sql[i] != '\r' {
		i++
	}
	return i
}

// skipBlockComment returns the end of the "/*" comment starting at i.
// Block comments nest, as in PostgreSQL.
func skipBlockComment(sql string, i int) (end int, closed bool) {
	depth := 0
	for j := i + 2; j < len(sql); {
		switch {
		case sql[j] == '/' && j+1 < len(sql) && sql[j+1] == '*':
			depth++
			j += 2
		case sql[j] == '*':
			for j < len(sql) && sql[j] == '*' {
				j++
			}
			if j < len(sql) && sql[j] == '/' {
				j++
				if depth == 0 {
					return j, true
				}
				depth--
			}
		default:
			j++
		}
	}
	return 0, false
}

// scanString returns the end of the '...' string starting at i. plain is
// false for a string with a backslash, an unterminated one, or one that
// PostgreSQL would continue with a following '...' (a string, then
// whitespace with a newline, then a string, is one literal).
func scanString(sql string, i int) (end int, plain bool) {
	j := i + 1
	for {
		k := strings.IndexByte(sql[j:], '\'')
		if k < 0 || strings.IndexByte(sql[j:j+k], '\\') >= 0 {
			return 0, false
		}
		j += k + 1
		if j < len(sql) && sql[j] == '\'' { // '' is a quote inside
			j++
			continue
		}
		break
	}
	// Refuse anything that looks like a continuation, newline or not.
	for k := j; k < len(sql); {
		switch c := sql[k]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			k++
		case c == '-' && k+1 < len(sql) && sql[k+1] == '-':
			k = skipLineComment(sql, k)
		case c == '\'':
			return 0, false
		default:
			return j, true
		}
	}
	return j, true
}

// scanQuotedIdent returns the end of the "..." identifier starting at i,
// or -1 if it is unterminated.
func scanQuotedIdent(sql string, i int) int {
	j := i + 1
	for {
		k := strings.IndexByte(sql[j:], '"')
		if k < 0 {
			return -1
		}
		j += k + 1
		if j < len(sql) && sql[j] == '"' {
			j++
			continue
		}
		return j
	}
}

// scanNumber returns the end and class of the number starting at i (a
// digit at a token start), or -1 when it is not one this scanner models.
func scanNumber(sql string, i int) (end int, mark string) {
	n := len(sql)
	j := i
	for j < n && digit(sql[j]) {
		j++
	}
	mark = markInteger
	if j < n && sql[j] == '.' {
		if j+1 < n && sql[j+1] == '.' {
			return -1, "" // 1..: PostgreSQL backs up to the integer
		}
		mark = markNumeric
		j++
		for j < n && digit(sql[j]) {
			j++
		}
	}
	if j < n && (sql[j] == 'e' || sql[j] == 'E') {
		k := j + 1
		if k < n && (sql[k] == '+' || sql[k] == '-') {
			k++
		}
		if k >= n || !digit(sql[k]) {
			return -1, ""
		}
		for k < n && digit(sql[k]) {
			k++
		}
		j, mark = k, markNumeric
	}
	if j < n && (identChar(sql[j]) || sql[j] == '.') {
		return -1, ""
	}
	if mark == markInteger && !fitsInt32(sql[i:j]) {
		mark = markNumeric // PostgreSQL makes an FCONST of a too-large integer
	}
	return j, mark
}

// fitsInt32 reports whether the decimal digits s are at most 2^31-1.
func fitsInt32(s string) bool {
	s = strings.TrimLeft(s, "0")
	if len(s) != 10 {
		return len(s) < 10
	}
	return s <= "2147483647"
}

func digit(c byte) bool { return '0' <= c && c <= '9' }

// identStart and identChar are PostgreSQL's ident_start and ident_cont;
// every byte from 0x80 up may be part of a (multi-byte) letter.
func identStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c >= 0x80
}

func identChar(c byte) bool { return identStart(c) || digit(c) || c == '$' }
