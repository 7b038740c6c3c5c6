package http

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	nethttp "net/http"
	"slices"
	"strings"
	"sync"

	"github.com/wardenhq/warden/pkg/masking"
)

// bodyKind is how a response body is masked.
type bodyKind uint8

const (
	// bodyOpaque is not text (images, archives, octet streams): the
	// detectors cannot read it, so it passes as is.
	bodyOpaque bodyKind = iota
	// bodyJSON is masked as it streams: by key name and by detectors on
	// string and number values.
	bodyJSON
	// bodyText is held (up to max_body) and masked by the detectors.
	bodyText
	// bodyLines is a text stream that never ends (server-sent events):
	// masked line by line as it streams.
	bodyLines
)

// kindOf says how a body of content type ct is masked. A body without a
// type is read as text: it may well be, and reading too much is the safe
// error.
func kindOf(ct string) bodyKind {
	if ct == "" {
		return bodyText
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return bodyText
	}
	switch {
	case mt == "text/event-stream":
		return bodyLines
	case mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "application/x-ndjson":
		return bodyJSON
	case strings.HasPrefix(mt, "text/"), mt == "application/xml", strings.HasSuffix(mt, "+xml"),
		mt == "application/javascript", mt == "application/x-www-form-urlencoded", mt == "application/yaml":
		return bodyText
	}
	return bodyOpaque
}

// maskResult is what masking a response did, for its record.
type maskResult struct {
	mu       sync.Mutex
	keys     []string
	detected bool
	err      error
}

func (r *maskResult) key(k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.keys, k) {
		r.keys = append(r.keys, k)
	}
}

func (r *maskResult) hit() {
	r.mu.Lock()
	r.detected = true
	r.mu.Unlock()
}

func (r *maskResult) fail(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
}

func (r *maskResult) get() (keys []string, detected bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.keys), r.detected, r.err
}

// smallBody is the largest JSON body masked whole rather than streamed.
const smallBody = 256 << 10

// errMaxBody is a text body over the target's max_body.
type errMaxBody struct{ limit int64 }

func (e errMaxBody) Error() string {
	return fmt.Sprintf("warden: the response body is larger than max_body (%d bytes) and must be masked; raise http.max_body on the target, or ask for less", e.limit)
}

// maskResponse replaces resp's body with its masked form. JSON is masked
// while it streams; text is held up to maxBody and refused beyond it.
// Encoded bodies (gzip, deflate) are decoded first; others are refused,
// since they cannot be read.
func maskResponse(resp *nethttp.Response, m *masking.Masker, maxBody int64, res *maskResult) error {
	kind := kindOf(resp.Header.Get("Content-Type"))
	if kind == bodyOpaque || resp.Body == nil || resp.Body == nethttp.NoBody {
		return nil
	}
	body, decoded, length := resp.Body, true, resp.ContentLength
	switch enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		decoded = false
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return fmt.Errorf("warden: cannot decode the gzip response to mask it: %w", err)
		}
		body = readCloser{zr, resp.Body}
	case "deflate":
		body = readCloser{flate.NewReader(body), resp.Body}
	default:
		return fmt.Errorf("warden: cannot mask a response encoded with %q (the target ignored Accept-Encoding: identity)", enc)
	}
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Content-Length")
	resp.Header.Del("Etag") // the representation changed
	resp.ContentLength = -1

	if kind == bodyLines {
		resp.Body = streamMasked(body, func(w io.Writer) error { return maskLines(w, body, m, maxBody, res) }, res)
		return nil
	}
	if kind == bodyText {
		data, err := io.ReadAll(io.LimitReader(body, maxBody+1))
		body.Close()
		if err != nil {
			return fmt.Errorf("warden: read the response to mask it: %w", err)
		}
		if int64(len(data)) > maxBody {
			return errMaxBody{maxBody}
		}
		if out, hit := m.Redact(data); hit {
			data = out
			res.hit()
		}
		resp.Body = io.NopCloser(bytes.NewReader(data))
		resp.ContentLength = int64(len(data))
		resp.Header.Set("Content-Length", fmt.Sprint(len(data)))
		return nil
	}
	if !decoded && length >= 0 && length <= min(maxBody, smallBody) {
		// A small body of known length is masked whole, so that the
		// client gets a length too (an HTTP/1.0 client otherwise loses
		// its keep-alive connection).
		var out bytes.Buffer
		err := maskJSON(&out, io.LimitReader(body, length), m, res)
		body.Close()
		if err != nil {
			return fmt.Errorf("warden: %w", err)
		}
		resp.Body = io.NopCloser(&out)
		resp.ContentLength = int64(out.Len())
		resp.Header.Set("Content-Length", fmt.Sprint(out.Len()))
		return nil
	}
	resp.Body = streamMasked(body, func(w io.Writer) error { return maskJSON(w, body, m, res) }, res)
	return nil
}

// streamMasked returns a body that mask writes, from src, in a goroutine
// that closing the body stops.
func streamMasked(src io.Closer, mask func(io.Writer) error, res *maskResult) io.ReadCloser {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := mask(pw)
		if err != nil {
			res.fail(err)
		}
		// An error reaches the client as a cut response: the reverse
		// proxy aborts it rather than send what could not be masked.
		pw.CloseWithError(err)
	}()
	return &maskedBody{pr: pr, src: src, done: done}
}

// maskLines copies src to dst line by line, masking each line with the
// detectors; a line longer than maxBody is refused.
func maskLines(dst io.Writer, src io.Reader, m *masking.Masker, maxBody int64, res *maskResult) error {
	br := bufio.NewReaderSize(src, 64<<10)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			if int64(len(line)) > maxBody {
				return errMaxBody{maxBody}
			}
			continue
		}
		if len(line) > 0 {
			out, hit := m.Redact(line)
			if hit {
				res.hit()
			}
			if _, werr := dst.Write(out); werr != nil {
				return werr
			}
			line = line[:0]
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// maskedBody is a response body masked by a goroutine; closing it stops
// the goroutine and waits for it.
type maskedBody struct {
	pr   *io.PipeReader
	src  io.Closer
	done chan struct{}
}

func (b *maskedBody) Read(p []byte) (int, error) { return b.pr.Read(p) }

func (b *maskedBody) Close() error {
	b.pr.Close()
	err := b.src.Close()
	<-b.done
	return err
}

// jsonFrame is one open object or array while masking JSON.
type jsonFrame struct {
	object bool
	n      int // members or elements written so far
}

// maskJSON copies the JSON values of src (one document, or several in a
// row) to dst, masking values under keys m masks by name ("****", whole
// subtrees included) and every string or number a detector matches. It
// holds one token at a time. White space is not kept.
func maskJSON(dst io.Writer, src io.Reader, m *masking.Masker, res *maskResult) error {
	w := bufio.NewWriterSize(dst, 32<<10)
	dec := json.NewDecoder(src)
	dec.UseNumber()
	var stack []jsonFrame
	top := 0
	expectKey := func() bool { return len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].n%2 == 0 }
	// sep writes what comes before the next token and counts it.
	sep := func() {
		if len(stack) == 0 {
			if top > 0 {
				w.WriteByte('\n')
			}
			top++
			return
		}
		f := &stack[len(stack)-1]
		switch {
		case f.object && f.n%2 == 1:
			w.WriteByte(':')
		case f.n > 0:
			w.WriteByte(',')
		}
		f.n++
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if len(stack) > 0 {
				return errors.New("the JSON response ended inside a value")
			}
			return w.Flush()
		}
		if err != nil {
			return fmt.Errorf("the JSON response cannot be read to mask it: %w", err)
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			w.WriteByte(byte(d))
			stack = stack[:len(stack)-1]
			continue
		}
		isKey := expectKey()
		sep()
		switch v := tok.(type) {
		case json.Delim:
			w.WriteByte(byte(v))
			stack = append(stack, jsonFrame{object: v == '{'})
		case string:
			if isKey {
				writeString(w, v)
				if m.Column(strings.ToLower(v)) {
					res.key(v)
					sep()
					w.WriteString(`"` + masking.Whole + `"`)
					if err := skipValue(dec); err != nil {
						return err
					}
				}
				continue
			}
			if out, hit := m.Redact([]byte(v)); hit {
				res.hit()
				v = string(out)
			}
			writeString(w, v)
		case json.Number:
			if out, hit := m.Redact([]byte(v)); hit {
				res.hit()
				writeString(w, string(out))
				continue
			}
			w.WriteString(string(v))
		case bool:
			if v {
				w.WriteString("true")
			} else {
				w.WriteString("false")
			}
		case nil:
			w.WriteString("null")
		}
		if w.Buffered() > 16<<10 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

// skipValue reads past the next value, however deep.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("the JSON response cannot be read to mask it: %w", err)
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

// writeString writes s as a JSON string, without escaping HTML.
func writeString(w *bufio.Writer, s string) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	w.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}
