package http

import (
	"strings"
	"testing"
)

// FuzzCanonical checks the canonicaliser's promises on any input: it
// never panics, and a path it accepts is canonical for good: it starts
// with "/", holds no "." or ".." segment, no "//", no ';' or '\', no
// control character, and canonicalising its re-encoding gives it back.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"/", "/admin/x", "/a//b/", "/%2e%2e/admin", "/a%252F", "/caf%C3%A9", "/a;b", "/%c0%ae", "/100%25off", "/a%2Fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := Canonical(raw)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") || strings.ContainsAny(p, ";\\") {
			t.Fatalf("Canonical(%q) = %q: not canonical", raw, p)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("Canonical(%q) = %q: dot segment", raw, p)
			}
		}
		for _, c := range []byte(p) {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("Canonical(%q) = %q: control character", raw, p)
			}
		}
		again, err := Canonical(encode(p))
		if err != nil || again != p {
			t.Fatalf("Canonical(encode(%q)) = %q, %v; want it back", p, again, err)
		}
	})
}

// encode percent-encodes what a path cannot carry raw, as a client would.
func encode(p string) string {
	var b strings.Builder
	for _, c := range []byte(p) {
		if c <= ' ' || c >= 0x7f || c == '%' || c == '?' || c == '#' {
			b.WriteString("%")
			b.WriteString(strings.ToUpper(string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15])))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// FuzzCheckHead checks that CheckHead never panics, and that a head it
// accepts has at most one framing header.
func FuzzCheckHead(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		if _, err := CheckHead(head); err != nil {
			return
		}
		lower := strings.ToLower(string(head))
		if strings.Count(lower, "\ncontent-length:") > 1 {
			t.Fatalf("accepted two Content-Length headers: %q", head)
		}
	})
}
