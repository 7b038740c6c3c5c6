package http

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonical(t *testing.T) {
	ok := []struct{ raw, want string }{
		{"/", "/"},
		{"/admin/x", "/admin/x"},
		{"/a//b", "/a/b"},
		{"//admin", "/admin"},
		{"/a/b/", "/a/b/"},
		{"/caf%C3%A9", "/café"},
		{"/%61dmin/x", "/admin/x"}, // an encoded letter is the letter: rules see /admin
		{"/100%25off", "/100%off"},
		{"/a%20b", "/a b"},
		{"/q%3Fx", "/q?x"},
	}
	for _, tt := range ok {
		got, err := Canonical(tt.raw)
		if err != nil || got != tt.want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
		}
	}
	bad := []struct{ raw, why string }{
		{"/admin%2Fx", "encoded slash"},
		{"/admin%2fx", "encoded slash"},
		{"/admin%5Cx", "encoded backslash"},
		{"/admin\\x", "backslash"},
		{"/public/../admin", `".." segment`},
		{"/public/%2e%2e/admin", `".." segment`},
		{"/public/%2E./admin", `".." segment`},
		{"/./admin", `"." segment`},
		{"/admin%252Fx", "double-encoded"},
		{"/%2541dmin", "double-encoded"},
		{"/admin;jsessionid=1", "path parameter"},
		{"/admin%3Bx", "encoded ';'"},
		{"/a%00b", "control character"},
		{"/a%zzb", "invalid percent-encoding"},
		{"/a%2", "invalid percent-encoding"},
		{"/a%u002e", "invalid percent-encoding"},
		{"/%c0%ae%c0%ae/admin", "UTF-8"},
		{"admin", "does not start with /"},
		{"", "does not start with /"},
		{"/a b", "space"},
	}
	for _, tt := range bad {
		got, err := Canonical(tt.raw)
		var amb *AmbiguousError
		if !errors.As(err, &amb) || !strings.Contains(amb.Reason, tt.why) {
			t.Errorf("Canonical(%q) = %q, %v; want an ambiguity error about %s", tt.raw, got, err, tt.why)
		}
	}
}

func TestCheckHead(t *testing.T) {
	good := []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
	}
	for _, h := range good {
		if _, err := CheckHead([]byte(h)); err != nil {
			t.Errorf("CheckHead(%q) = %v, want nil", h, err)
		}
	}
	bad := []struct{ head, why string }{
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length and Transfer-Encoding"},
		{"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n", "both Content-Length and Transfer-Encoding"},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", "more than one Content-Length"},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "more than one Content-Length"},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", "not a number"},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "not a number"},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "only chunked"},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "more than one Transfer-Encoding"},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", "obs-fold"},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", "unreadable request headers"},
		{"POST / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", "bare CR"},
		{"POST / HTTP/1.1\r\nHost: a\r\n\r\nContent-Length: 5\r\n\r\n", "data after the blank line"},
	}
	for _, tt := range bad {
		_, err := CheckHead([]byte(tt.head))
		var amb *AmbiguousError
		if !errors.As(err, &amb) || !strings.Contains(amb.Reason, tt.why) {
			t.Errorf("CheckHead(%q) = %v; want an ambiguity error about %s", tt.head, err, tt.why)
		}
	}
	h, err := CheckHead([]byte("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"))
	if err != nil || !h.Upgrade {
		t.Errorf("upgrade head: %+v, %v; want Upgrade", h, err)
	}
	// Without Connection: upgrade nothing is upgraded, as net/http sees it.
	h, err = CheckHead([]byte("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"))
	if err != nil || h.Upgrade {
		t.Errorf("Upgrade without Connection: %+v, %v; want no upgrade", h, err)
	}
}

func TestHeadEnd(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY", 27},
		{"GET / HTTP/1.1\nHost: a\n\nBODY", 24},
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0},
		{"GET / HTTP/1.1\r\n", 0},
	} {
		got, err := HeadEnd([]byte(tt.in))
		if err != nil || got != tt.want {
			t.Errorf("HeadEnd(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	if _, err := HeadEnd([]byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHead) + "\r\n")); !errors.Is(err, ErrHeadTooLarge) {
		t.Errorf("huge head: %v, want ErrHeadTooLarge", err)
	}
}
