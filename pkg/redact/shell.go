package redact

import "strings"

// word is one shell word: where it is in the command line and its value
// once quotes and escapes are removed.
type word struct {
	start, end int
	val        string
}

// commandLine redacts a shell command line: each simple command is read as
// an argument vector, and the words a redaction changed are put back,
// quoted. Words nothing changed keep their original text, so the line
// reads as typed.
func (c *config) commandLine(s string, depth int) string {
	if depth > maxDepth {
		return s
	}
	var edits []edit
	for _, cmd := range tokenize(s) {
		vals := make([]string, len(cmd))
		for i, w := range cmd {
			vals[i] = w.val
		}
		out, changed := c.argv("", vals, depth)
		if !changed {
			continue
		}
		for i, w := range cmd {
			if out[i] != w.val {
				edits = append(edits, edit{w.start, w.end, quote(out[i])})
			}
		}
	}
	return applyEdits(s, edits)
}

// tokenize splits a command line into simple commands and their words, as
// a POSIX shell does for the parts that matter here: blanks, the operators
// that end a command (; & | ( ) and newline), redirections, quotes,
// backslash escapes, $'…' strings, and $(…) and `…` kept as they are. It
// never fails: an unclosed quote runs to the end.
func tokenize(s string) [][]word {
	var cmds [][]word
	var cur []word
	for i := 0; i < len(s); {
		switch s[i] {
		case ' ', '\t', '\r':
			i++
		case '\n', ';', '&', '|', '(', ')':
			if len(cur) > 0 {
				cmds, cur = append(cmds, cur), nil
			}
			i++
		case '<', '>':
			i++
		default:
			w := readWord(s, i)
			cur = append(cur, w)
			i = w.end
		}
	}
	if len(cur) > 0 {
		cmds = append(cmds, cur)
	}
	return cmds
}

// readWord reads the word that starts at i.
func readWord(s string, i int) word {
	start := i
	var b strings.Builder
	for i < len(s) {
		switch c := s[i]; c {
		case ' ', '\t', '\r', '\n', ';', '&', '|', '(', ')', '<', '>':
			return word{start, i, b.String()}
		case '\\':
			if i+1 < len(s) {
				if s[i+1] != '\n' {
					b.WriteByte(s[i+1])
				}
				i += 2
			} else {
				b.WriteByte('\\')
				i++
			}
		case '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				b.WriteString(s[i+1:])
				i = len(s)
			} else {
				b.WriteString(s[i+1 : i+1+j])
				i += j + 2
			}
		case '"':
			i++
			for i < len(s) && s[i] != '"' {
				switch {
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\\n", s[i+1]) >= 0:
					if s[i+1] != '\n' {
						b.WriteByte(s[i+1])
					}
					i += 2
				case s[i] == '$' && i+1 < len(s) && s[i+1] == '(':
					j := substitution(s, i+2, ')')
					b.WriteString(s[i:j])
					i = j
				case s[i] == '`':
					j := substitution(s, i+1, '`')
					b.WriteString(s[i:j])
					i = j
				default:
					b.WriteByte(s[i])
					i++
				}
			}
			if i < len(s) {
				i++ // the closing quote
			}
		case '$':
			switch {
			case i+1 < len(s) && s[i+1] == '\'':
				i += 2
				for i < len(s) && s[i] != '\'' {
					if s[i] == '\\' && i+1 < len(s) {
						switch s[i+1] {
						case '\'', '\\':
							b.WriteByte(s[i+1])
						default:
							b.WriteString(s[i : i+2])
						}
						i += 2
						continue
					}
					b.WriteByte(s[i])
					i++
				}
				if i < len(s) {
					i++
				}
			case i+1 < len(s) && s[i+1] == '(':
				j := substitution(s, i+2, ')')
				b.WriteString(s[i:j])
				i = j
			default:
				b.WriteByte(c)
				i++
			}
		case '`':
			j := substitution(s, i+1, '`')
			b.WriteString(s[i:j])
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	return word{start, i, b.String()}
}

// substitution returns the index just past the close that ends a command
// substitution whose text starts at i: a ')' at depth zero (parentheses
// nest; quoted text is skipped) or the closing '`'.
func substitution(s string, i int, close byte) int {
	depth := 0
	for i < len(s) {
		switch c := s[i]; {
		case c == '\\':
			i += 2
			continue
		case close == ')' && (c == '\'' || c == '"'):
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return len(s)
			}
			i += j + 2
			continue
		case close == ')' && c == '(':
			depth++
		case c == close:
			if depth == 0 {
				return i + 1
			}
			depth--
		}
		i++
	}
	return len(s)
}

// quote returns v as one shell word: bare if nothing in it is special to
// a shell but for the brackets of markers (kept bare so the line reads
// well; it is a record, not a script to run), else in single quotes, or in double quotes when v holds single
// quotes and nothing double quotes would expand.
func quote(v string) string {
	if v == "" {
		return "''"
	}
	safe := true
	for i := 0; i < len(v) && safe; i++ {
		c := v[i]
		safe = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_@%+=:,./-[]", c) >= 0
	}
	switch {
	case safe:
		return v
	case !strings.Contains(v, "'"):
		return "'" + v + "'"
	case !strings.ContainsAny(v, "\"\\$`!"):
		return `"` + v + `"`
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}
