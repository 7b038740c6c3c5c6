package http

import (
	"bufio"
	"bytes"
	"errors"
	"net/textproto"
	"strings"
)

// MaxHead bounds a request head (request line and headers): a longer one
// is refused. net/http's own default is larger, but no request Warden
// should pass needs more.
const MaxHead = 64 << 10

// ErrHeadTooLarge is returned by HeadEnd for a head over MaxHead.
var ErrHeadTooLarge = errors.New("request head larger than 64KiB")

// HeadEnd returns the length of the request head at the start of b,
// through the empty line that ends it, or 0 when b does not hold all of
// it yet. It only finds the end of the head; it reads nothing in it.
func HeadEnd(b []byte) (int, error) {
	for off := 0; ; {
		nl := bytes.IndexByte(b[off:], '\n')
		if nl < 0 {
			if len(b) > MaxHead {
				return 0, ErrHeadTooLarge
			}
			return 0, nil
		}
		line := b[off : off+nl]
		off += nl + 1
		if off > MaxHead {
			return 0, ErrHeadTooLarge
		}
		// The first line is the request line, never the end.
		if off != nl+1 && (len(line) == 0 || len(line) == 1 && line[0] == '\r') {
			return off, nil
		}
	}
}

// Head is what CheckHead learnt of a request head.
type Head struct {
	// Upgrade is set when the request asks for a protocol upgrade: what
	// follows its head may not be HTTP.
	Upgrade bool
	// Chunked is set when the head has a Transfer-Encoding (chunked).
	Chunked bool
}

// CheckHead refuses, with an *AmbiguousError, a request head whose
// message length servers could read differently, which is how requests
// are smuggled past a proxy: both Content-Length and Transfer-Encoding,
// more than one Content-Length (even equal ones, which net/http would
// merge), a Content-Length that is not a plain number, a
// Transfer-Encoding other than a single "chunked", header lines folded
// onto the next line, a bare CR, and anything net/textproto cannot read.
// head is a whole head, as HeadEnd delimits it.
func CheckHead(head []byte) (Head, error) {
	var h Head
	if i := bytes.IndexByte(head, '\r'); i >= 0 {
		for j := i; j < len(head); j++ {
			if head[j] == '\r' && (j+1 == len(head) || head[j+1] != '\n') {
				return h, ambiguous("a bare CR in the request head")
			}
		}
	}
	if bytes.Contains(head, []byte("\n ")) || bytes.Contains(head, []byte("\n\t")) {
		return h, ambiguous("a header folded onto the next line (obs-fold)")
	}
	rd := bytes.NewReader(head)
	br := bufio.NewReader(rd)
	tp := textproto.NewReader(br)
	if _, err := tp.ReadLine(); err != nil {
		return h, ambiguous("unreadable request line")
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return h, ambiguous("unreadable request headers: %v", err)
	}
	if br.Buffered()+rd.Len() > 0 {
		// Lines after the blank line were not checked as headers; a
		// reader that took them for headers would frame the body
		// differently.
		return h, ambiguous("data after the blank line that ends the request head")
	}
	for k := range hdr {
		if !token(k) {
			// "Transfer-Encoding : chunked" is one header to a lenient
			// server and an unknown one to a strict server.
			return h, ambiguous("unreadable request headers: invalid header name %q", clip(k))
		}
	}
	cl, te := hdr["Content-Length"], hdr["Transfer-Encoding"]
	switch {
	case len(cl) > 0 && len(te) > 0:
		return h, ambiguous("both Content-Length and Transfer-Encoding (request smuggling)")
	case len(cl) > 1:
		return h, ambiguous("more than one Content-Length (request smuggling)")
	case len(te) > 1:
		return h, ambiguous("more than one Transfer-Encoding (request smuggling)")
	case len(cl) == 1 && !digits(strings.TrimSpace(cl[0])):
		return h, ambiguous("Content-Length %q is not a number (request smuggling)", clip(cl[0]))
	case len(te) == 1 && !strings.EqualFold(strings.TrimSpace(te[0]), "chunked"):
		return h, ambiguous("Transfer-Encoding %q: only chunked is accepted (request smuggling)", clip(te[0]))
	}
	h.Chunked = len(te) == 1
	// An upgrade needs both headers, as net/http and the reverse proxy
	// read it: the connection is then no longer HTTP if the server
	// agrees.
	for _, c := range hdr["Connection"] {
		for _, tok := range strings.Split(c, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") && len(hdr["Upgrade"]) > 0 {
				h.Upgrade = true
			}
		}
	}
	return h, nil
}

func digits(s string) bool {
	if s == "" || len(s) > 18 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// token reports whether s is an RFC 9110 token, as header names are.
func token(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
