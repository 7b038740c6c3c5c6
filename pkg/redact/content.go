package redact

import (
	"regexp"
	"strings"
)

// edit replaces s[start:end] with text.
type edit struct {
	start, end int
	text       string
}

// applyEdits applies non-overlapping edits in ascending order; an edit
// that overlaps the one before it is dropped.
func applyEdits(s string, edits []edit) string {
	if len(edits) == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16*len(edits))
	last := 0
	for _, e := range edits {
		if e.start < last {
			continue
		}
		b.WriteString(s[last:e.start])
		b.WriteString(e.text)
		last = e.end
	}
	b.WriteString(s[last:])
	return b.String()
}

// content applies the rules that read text to s. whole says s is one whole
// argument, where NAME=value is an assignment.
func (c *config) content(s string, whole bool, depth int) string {
	if len(s) < 4 {
		return s
	}
	if whole && c.on(ruleEnv) {
		s = envAssignment(s)
	}
	if c.on(ruleURL) {
		s = urlCredentials(s)
	}
	if c.on(ruleKeyValue) {
		s = keyValues(s)
		s = jsonFields(s)
	}
	if c.on(ruleHeaders) {
		s = headers(s)
	}
	if c.on(ruleSQL) {
		s = sqlPasswords(s)
	}
	s = c.detect(s)
	s = c.patterns(s)
	return s
}

// envName matches a shell variable name followed by '='.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// envAssignment redacts the value of NAME=value when NAME is secret: the
// value is the rest of the argument, blanks and all. PWD and OLDPWD are
// the shell's directories.
func envAssignment(s string) string {
	loc := envName.FindStringIndex(s)
	if loc == nil {
		return s
	}
	name, v := s[:loc[1]-1], s[loc[1]:]
	if name == "PWD" || name == "OLDPWD" || v == "" || IsMarker(v) {
		return s
	}
	kind, ok := secretName(name)
	if !ok {
		return s
	}
	return s[:loc[1]] + Marker(kind)
}

var schemeRE = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://`)

// urlCredentials redacts the password of scheme://user:password@host, and
// a token standing as the user (https://TOKEN@github.com/...).
func urlCredentials(s string) string {
	if !strings.Contains(s, "://") || strings.IndexByte(s, '@') < 0 {
		return s
	}
	marks := markerSpans(s)
	var edits []edit
	for _, loc := range schemeRE.FindAllStringIndex(s, -1) {
		start := loc[1]
		end := start
		for end < len(s) && !strings.ContainsRune("/?#'\"<> \t\n\\", rune(s[end])) {
			end++
		}
		at := strings.LastIndexByte(s[start:end], '@')
		if at < 0 {
			continue
		}
		at += start
		colon := -1
		for i := start; i < at; i++ {
			if s[i] == ':' && !inSpans(marks, i) {
				colon = i
				break
			}
		}
		switch {
		case colon >= 0:
			if pw := s[colon+1 : at]; pw != "" && !IsMarker(pw) {
				edits = append(edits, edit{colon + 1, at, Marker("password")})
			}
		case tokenLike(s[start:at]):
			edits = append(edits, edit{start, at, Marker("token")})
		}
	}
	return applyEdits(s, edits)
}

// tokenLike reports whether a URL's user looks like an access token rather
// than a name: long, with letters and digits, no dots.
func tokenLike(u string) bool {
	if len(u) < 20 || IsMarker(u) || strings.ContainsAny(u, ".%[]") {
		return false
	}
	var letter, digit bool
	for i := 0; i < len(u); i++ {
		switch c := u[i]; {
		case '0' <= c && c <= '9':
			digit = true
		case isLetter(c):
			letter = true
		case c == '_' || c == '-':
		default:
			return false
		}
	}
	return letter && digit
}

// keyByte is a byte of a key in key=value text.
func keyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-'
}

// keyValues redacts the values of secret-named keys in key=value text. How
// far an unquoted value reaches depends on what comes before the key: a
// libpq string separates pairs with blanks, JDBC and ODBC with ';', a
// query string with '&'. Quoted values ('…', "…", ODBC's {…}) end at
// their closing quote.
func keyValues(s string) string {
	if strings.IndexByte(s, '=') < 0 {
		return s
	}
	marks := markerSpans(s)
	var edits []edit
	for i := 0; i < len(s); i++ {
		if s[i] != '=' || inSpans(marks, i) {
			continue
		}
		k := i
		for k > 0 && keyByte(s[k-1]) {
			k--
		}
		if k == i {
			continue
		}
		key := s[k:i]
		var delim byte
		if k > 0 {
			delim = s[k-1]
		}
		if (key == "PWD" || key == "OLDPWD") && (delim == 0 || isBlank(delim)) {
			continue
		}
		kind, ok := secretName(key)
		if !ok {
			continue
		}
		vs := i + 1
		for vs < len(s) && (s[vs] == '=' || s[vs] == ' ') {
			vs++ // httpie's key==value; libpq's "password = x"
		}
		cs, ce, end := valueSpan(s, vs, delim)
		if v := s[cs:ce]; v != "" && !IsMarker(v) && !overlaps(marks, cs, ce) {
			edits = append(edits, edit{cs, ce, Marker(kind)})
		}
		i = end - 1
	}
	return applyEdits(s, edits)
}

// valueSpan finds the value starting at i: its content [cs, ce) and where
// it ends (after a closing quote).
func valueSpan(s string, i int, delim byte) (cs, ce, end int) {
	if i >= len(s) {
		return i, i, i
	}
	switch q := s[i]; q {
	case '\'', '"':
		j := closing(s, i+1, q)
		if j < len(s) {
			return i + 1, j, j + 1
		}
		return i + 1, j, j
	case '{':
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return i + 1, len(s), len(s)
		}
		return i + 1, i + j, i + j + 1
	}
	stops := "'\""
	switch delim {
	case ';':
		stops += ";"
	case '?', '&':
		stops += "&#"
	case ',', '(':
		stops += ",)"
	}
	j := i
	for j < len(s) && !isBlank(s[j]) && strings.IndexByte(stops, s[j]) < 0 {
		if s[j] == '\\' && j+1 < len(s) {
			j++
		}
		j++
	}
	return i, j, j
}

// closing returns the index of the quote q that closes a string whose
// content starts at i, with backslash escapes and doubled quotes, or
// len(s) if it is not closed.
func closing(s string, i int, q byte) int {
	for i < len(s) {
		switch s[i] {
		case '\\':
			i += 2
			continue
		case q:
			if i+1 < len(s) && s[i+1] == q {
				i += 2
				continue
			}
			return i
		}
		i++
	}
	return len(s)
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

var jsonKeyRE = regexp.MustCompile(`"([A-Za-z0-9_.-]{1,64})"\s*:\s*"`)

// jsonFields redacts string values of secret-named JSON fields
// ({"password":"…"}).
func jsonFields(s string) string {
	if !strings.Contains(s, "\":") && !strings.Contains(s, "\" :") {
		return s
	}
	marks := markerSpans(s)
	var edits []edit
	for _, m := range jsonKeyRE.FindAllStringSubmatchIndex(s, -1) {
		kind, ok := secretName(s[m[2]:m[3]])
		if !ok || inSpans(marks, m[0]) {
			continue
		}
		cs := m[1]
		ce := closing(s, cs, '"')
		if v := s[cs:ce]; v != "" && !IsMarker(v) && !overlaps(marks, cs, ce) {
			edits = append(edits, edit{cs, ce, Marker(kind)})
		}
	}
	return applyEdits(s, edits)
}

var headerRE = regexp.MustCompile(`^[ \t]*([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*`)

// headers redacts HTTP headers given as text, one a line: at the start of
// a line, or after the first '=' (wget --header=…, git -c
// http.extraHeader=…).
func headers(s string) string {
	if strings.IndexByte(s, ':') < 0 {
		return s
	}
	if !strings.Contains(s, "\n") {
		return headerArg(s)
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = headerArg(l)
	}
	return strings.Join(lines, "\n")
}

func headerArg(s string) string {
	if out := redactHeader(s); out != s {
		return out
	}
	if i := strings.IndexByte(s, '='); i >= 0 {
		if out := redactHeader(s[i+1:]); out != s[i+1:] {
			return s[:i+1] + out
		}
	}
	return s
}

// redactHeader redacts one "Name: value" header whose value is a secret:
// Authorization and Proxy-Authorization keep their scheme (Bearer, Basic),
// Cookie is redacted whole, and so is any header with a secret name
// (X-Api-Key, X-Vault-Token).
func redactHeader(h string) string {
	m := headerRE.FindStringSubmatchIndex(h)
	if m == nil {
		return h
	}
	name := strings.ToLower(h[m[2]:m[3]])
	v := h[m[1]:]
	if v == "" || IsMarker(v) {
		return h
	}
	switch name {
	case "authorization", "proxy-authorization":
		scheme, rest, ok := strings.Cut(v, " ")
		if !ok || strings.TrimSpace(rest) == "" {
			return h[:m[1]] + Marker("authorization")
		}
		rest = strings.TrimLeft(rest, " ")
		if IsMarker(rest) {
			return h
		}
		kind := "authorization"
		switch strings.ToLower(scheme) {
		case "bearer", "token":
			kind = "token"
		case "basic":
			kind = "credentials"
		}
		return h[:m[1]] + scheme + " " + Marker(kind)
	case "cookie", "set-cookie":
		return h[:m[1]] + Marker("cookie")
	}
	if kind, ok := secretName(name); ok {
		return h[:m[1]] + Marker(kind)
	}
	return h
}

// detect applies pkg/masking's content detectors.
func (c *config) detect(s string) string {
	if len(s) < 13 {
		return s
	}
	var b []byte
	for r := ruleJWT; r < numRules; r++ {
		if !c.on(r) {
			continue
		}
		if b == nil {
			b = []byte(s)
		}
		spans := detectors[r].Find(b)
		if len(spans) == 0 {
			continue
		}
		marks := markerSpans(s)
		edits := make([]edit, 0, len(spans))
		for _, sp := range spans {
			if !overlaps(marks, sp[0], sp[1]) {
				edits = append(edits, edit{sp[0], sp[1], Marker(ruleNames[r])})
			}
		}
		if len(edits) > 0 {
			s = applyEdits(s, edits)
			b = nil
		}
	}
	return s
}

// patterns applies the policy's argument patterns: the first group is
// redacted if the pattern has groups, the whole match otherwise.
func (c *config) patterns(s string) string {
	if c.r == nil || len(c.r.patterns) == 0 {
		return s
	}
	for _, p := range c.r.patterns {
		marks := markerSpans(s)
		var edits []edit
		group := 0
		if p.re.NumSubexp() > 0 {
			group = 1
		}
		for _, m := range p.re.FindAllStringSubmatchIndex(s, -1) {
			a, b := m[2*group], m[2*group+1]
			if a < 0 || a == b || overlaps(marks, a, b) {
				continue
			}
			edits = append(edits, edit{a, b, Marker(p.kind)})
		}
		s = applyEdits(s, edits)
	}
	return s
}
