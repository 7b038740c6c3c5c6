// Package http holds the HTTP codec's pure checks on what a client sent,
// before anything of it reaches a target: the canonical form of a request
// path, which policy rules match, and the refusal of requests that
// different servers would read differently (ambiguous paths, request
// smuggling). It parses no HTTP itself: request heads are read with the
// standard library's net/textproto, and messages with net/http.
package http

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// AmbiguousError is a request Warden refuses (400) because servers and
// proxies disagree on what it means, so a rule could match one reading
// while the target acts on another.
type AmbiguousError struct {
	// Reason says what is ambiguous, for the client and the record.
	Reason string
}

func (e *AmbiguousError) Error() string { return "ambiguous request: " + e.Reason }

func ambiguous(format string, args ...any) error {
	return &AmbiguousError{Reason: fmt.Sprintf(format, args...)}
}

// Canonical returns the canonical form of raw, the path of a request
// target as the client sent it (percent-encoded, without the query): the
// form rules match and the target receives.
//
// It decodes percent-escapes once, collapses repeated slashes, and
// refuses (with an *AmbiguousError) whatever servers decode differently:
//   - an encoded slash or backslash (%2F, %5C), or a raw backslash: some
//     servers split segments on them after decoding, others do not;
//   - "." and ".." segments, raw or encoded: some servers resolve them,
//     some reject them, and a rule on "/admin/**" must not be walked
//     around with "/public/../admin";
//   - double encoding (%252F, and anything else that still holds a
//     percent-escape after one decoding): servers that decode twice see
//     another path;
//   - ";" path parameters, raw or encoded: Java servers cut them off
//     ("/admin;x" is "/admin" to Tomcat);
//   - invalid escapes, control characters, NUL and invalid UTF-8
//     (overlong encodings of '.' and '/').
func Canonical(raw string) (string, error) {
	if raw == "" || raw[0] != '/' {
		return "", ambiguous("the path %q does not start with /", clip(raw))
	}
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "", ambiguous("invalid percent-encoding in the path %q", clip(raw))
			}
			d := unhex(raw[i+1])<<4 | unhex(raw[i+2])
			switch d {
			case '/':
				return "", ambiguous("an encoded slash (%%2F) in the path")
			case '\\':
				return "", ambiguous("an encoded backslash (%%5C) in the path")
			case ';':
				return "", ambiguous("an encoded ';' (%%3B) in the path")
			}
			if d < 0x20 || d == 0x7f {
				return "", ambiguous("an encoded control character (%%%02X) in the path", d)
			}
			b.WriteByte(d)
			i += 2
		case c == '\\':
			return "", ambiguous("a backslash in the path")
		case c == ';':
			return "", ambiguous("a ';' path parameter in the path")
		case c < 0x21 || c == 0x7f || c == '#' || c == '?':
			return "", ambiguous("a control character, space, '?' or '#' in the path")
		default:
			b.WriteByte(c)
		}
	}
	dec := b.String()
	if !utf8.ValidString(dec) {
		return "", ambiguous("the decoded path is not valid UTF-8")
	}
	if hasEscape(dec) {
		return "", ambiguous("a double-encoded path (it still holds a percent-escape after decoding)")
	}
	segs := strings.Split(dec, "/")
	out := segs[:1] // the "" before the leading slash
	for i, s := range segs[1:] {
		switch {
		case s == "." || s == "..":
			return "", ambiguous("a %q segment in the path", s)
		case s == "" && i < len(segs)-2:
			// "//" inside the path: collapsed, as most servers do. A
			// trailing "/" is kept: "/a/" and "/a" can differ.
			continue
		}
		out = append(out, s)
	}
	p := strings.Join(out, "/")
	if p == "" {
		p = "/"
	}
	if strings.HasPrefix(p, "//") {
		p = "/" + strings.TrimLeft(p, "/")
	}
	return p, nil
}

// hasEscape reports whether s holds a percent-escape.
func hasEscape(s string) bool {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '%' && isHex(s[i+1]) && isHex(s[i+2]) {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
