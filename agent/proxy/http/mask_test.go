package http

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	nethttp "net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/policy"
)

func testMasker() *masking.Masker {
	return masking.New([]policy.Masking{{Name: "pii", Columns: []string{"ssn", "Secret"}, Detectors: []string{"email", "credit_card"}}}, nil)
}

func TestMaskJSON(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":1}`, `{"a":1}`},
		{`{"email":"x@example.com","n":[1,2.5e3,"4111111111111111"]}`, `{"email":"[masked:email]","n":[1,2.5e3,"[masked:credit_card]"]}`},
		{`{"ssn":{"deep":[1,{"x":"y"}]},"after":true}`, `{"ssn":"****","after":true}`},
		{`{"SSN":"078-05-1120","secret":null}`, `{"SSN":"****","secret":"****"}`},
		{`[{"ssn":1},{"ssn":[2]}]`, `[{"ssn":"****"},{"ssn":"****"}]`},
		{"{\"a\":\"<b>&\"}\n{\"b\":false}\n", "{\"a\":\"<b>&\"}\n{\"b\":false}"},
		{`"mail me at al@example.com"`, `"mail me at [masked:email]"`},
		{`  { "k" : [ ] , "o" : { } }  `, `{"k":[],"o":{}}`},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		res := &maskResult{}
		// One byte at a time: the masker must not depend on how the
		// body arrives.
		if err := maskJSON(&out, iotest.OneByteReader(strings.NewReader(tt.in)), testMasker(), res); err != nil {
			t.Errorf("maskJSON(%s): %v", tt.in, err)
			continue
		}
		if out.String() != tt.want {
			t.Errorf("maskJSON(%s)\n got %s\nwant %s", tt.in, out.String(), tt.want)
		}
	}
	for _, bad := range []string{`{"a":`, `{"a" 1}`, `[1,2`, `{"ssn":[1,`} {
		var out bytes.Buffer
		if err := maskJSON(&out, strings.NewReader(bad), testMasker(), &maskResult{}); err == nil {
			t.Errorf("maskJSON(%s) succeeded with %q; a body that cannot be read must not pass", bad, out.String())
		}
	}
}

func response(ct, enc string, body []byte, length int64) *nethttp.Response {
	h := nethttp.Header{}
	h.Set("Content-Type", ct)
	if enc != "" {
		h.Set("Content-Encoding", enc)
	}
	return &nethttp.Response{StatusCode: 200, Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: length}
}

func TestMaskResponse(t *testing.T) {
	doc := []byte(`{"email":"x@example.com","ssn":"1"}`)
	want := `{"email":"[masked:email]","ssn":"****"}`
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(doc)
	zw.Close()
	for _, tc := range []struct {
		name string
		resp *nethttp.Response
	}{
		{"known length", response("application/json", "", doc, int64(len(doc)))},
		{"streamed", response("application/json; charset=utf-8", "", doc, -1)},
		{"gzip", response("application/problem+json", "gzip", gz.Bytes(), int64(gz.Len()))},
	} {
		res := &maskResult{}
		if err := maskResponse(tc.resp, testMasker(), 1<<20, res); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := io.ReadAll(tc.resp.Body)
		tc.resp.Body.Close()
		if err != nil || string(got) != want {
			t.Errorf("%s: %q %v", tc.name, got, err)
		}
		if tc.resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("%s: Content-Encoding left on a decoded body", tc.name)
		}
	}
	if err := maskResponse(response("application/json", "br", doc, -1), testMasker(), 1<<20, &maskResult{}); err == nil || !strings.Contains(err.Error(), `"br"`) {
		t.Errorf("brotli body: %v, want a refusal naming the encoding", err)
	}
	big := bytes.Repeat([]byte("a"), 2048)
	err := maskResponse(response("text/plain", "", big, -1), testMasker(), 1024, &maskResult{})
	if err == nil || !strings.Contains(err.Error(), "max_body") {
		t.Errorf("text over max_body: %v", err)
	}
	img := response("image/png", "", []byte("x@example.com"), 13)
	if err := maskResponse(img, testMasker(), 1024, &maskResult{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(img.Body); string(b) != "x@example.com" {
		t.Errorf("an opaque body was changed: %q", b)
	}
	// A JSON body cut short streams out cut and is reported, never passed
	// on whole-looking.
	cut := response("application/json", "", []byte(`{"email":"x@example.com","more":[1,2`), -1)
	res := &maskResult{}
	if err := maskResponse(cut, testMasker(), 1<<20, res); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(cut.Body); err == nil {
		t.Error("a truncated JSON body read to the end without an error")
	}
	cut.Body.Close()
	if _, _, err := res.get(); err == nil {
		t.Error("the truncated body's error was not kept for the record")
	}
}

// Server-sent events never end: they are masked line by line as they
// come, not held.
func TestMaskEventStream(t *testing.T) {
	pr, pw := io.Pipe()
	resp := &nethttp.Response{StatusCode: 200, Header: nethttp.Header{"Content-Type": {"text/event-stream"}}, Body: pr, ContentLength: -1}
	if err := maskResponse(resp, testMasker(), 1<<20, &maskResult{}); err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	go io.WriteString(pw, "data: from al@example.com\n\n")
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: from [masked:email]\n" {
		t.Errorf("first event %q %v", line, err)
	}
	pw.Close()
}
