package http

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	httpwire "github.com/wardenhq/warden/pkg/protocol/http"
)

// refusalHeader marks the request a screen puts in place of one it
// refused; its value is the screen's secret token, so a client cannot
// send one of its own.
const refusalHeader = "X-Warden-Refusal"

// screen stands between an HTTP/1 client and net/http's server, so that a
// request whose length servers could read differently (request smuggling)
// never reaches net/http, let alone the target. net/http merges or drops
// the framing headers it is lenient about before a handler sees them, so
// the check has to look at each request head as the client sent it.
//
// It reads each head (up to the empty line), checks it with
// httpwire.CheckHead, and hands net/http the head and then the body, as
// framed by the one length header the check left (the body of a chunked
// request is re-chunked, with its trailers). A refused request is replaced
// by a request of its own, marked with refusalHeader, which the handler
// answers 400 after every earlier response, then the stream ends. After
// an upgrade request the rest of the connection is passed on as is: it is
// no longer HTTP, and the handler closes the connection unless the
// upgrade is allowed.
type screen struct {
	src net.Conn
	br  *bufio.Reader
	// pw is the screen's end of a synchronous in-memory connection and
	// pr net/http's, whose read deadlines (net/http sets them, and
	// clears a pending read with one when a handler hijacks the
	// connection) must stop net/http's read, not the screen's.
	pr, pw net.Conn
	token  string

	mu      sync.Mutex
	refusal *refusal
	done    chan struct{}
}

// refusal is what the screen refused, for the handler's answer and record.
type refusal struct {
	Reason         string
	Method, Target string
}

// newScreen starts screening src; the returned conn is what net/http
// serves. Closing it closes src and stops the screen.
func newScreen(src net.Conn) (*screen, net.Conn, error) {
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, nil, fmt.Errorf("screen token: %w", err)
	}
	pr, pw := net.Pipe()
	sc := &screen{src: src, br: bufio.NewReaderSize(src, httpwire.MaxHead+1024), pr: pr, pw: pw,
		token: hex.EncodeToString(tok[:]), done: make(chan struct{})}
	go sc.run()
	return sc, &screenedConn{Conn: src, sc: sc}, nil
}

// wait returns once the screen stopped: after its source closed.
func (sc *screen) wait() { <-sc.done }

// Refused returns the refusal behind a request marked with tok, if tok is
// the screen's.
func (sc *screen) refused(tok string) *refusal {
	if subtle.ConstantTimeCompare([]byte(tok), []byte(sc.token)) != 1 {
		return nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.refusal
}

func (sc *screen) run() {
	defer close(sc.done)
	// Whatever ended the loop, net/http sees the end of the stream.
	sc.loop()
	sc.pw.Close()
	sc.mu.Lock()
	refused := sc.refusal != nil
	sc.mu.Unlock()
	if refused {
		// Read on until the connection closes: closing a socket with
		// unread input resets it, and the client could lose the 400
		// that says why.
		io.Copy(io.Discard, sc.br)
	}
}

func (sc *screen) loop() error {
	for {
		head, err := sc.head()
		if err != nil {
			return err
		}
		if head == nil {
			return io.EOF
		}
		info, err := httpwire.CheckHead(head)
		if err != nil {
			return sc.refuse(head, err)
		}
		// The head is well framed: net/http reads it the way CheckHead
		// did. Its length headers say how much body follows.
		req, err := nethttp.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			return sc.refuse(head, &httpwire.AmbiguousError{Reason: "unreadable request: " + err.Error()})
		}
		if req.ProtoMajor != 1 {
			return sc.refuse(head, &httpwire.AmbiguousError{Reason: "not an HTTP/1 request"})
		}
		if info.Chunked && req.ProtoMinor == 0 {
			// HTTP/1.0 has no chunked encoding: net/http ignores the
			// header, a server that honours it reads another body.
			return sc.refuse(head, &httpwire.AmbiguousError{Reason: "Transfer-Encoding in an HTTP/1.0 request (request smuggling)"})
		}
		if _, err := sc.pw.Write(head); err != nil {
			return err
		}
		if _, err := sc.br.Discard(len(head)); err != nil {
			return err
		}
		switch {
		case info.Upgrade:
			_, err := io.Copy(sc.pw, sc.br)
			return err
		case len(req.TransferEncoding) > 0:
			if err := sc.chunked(); err != nil {
				return err
			}
		case req.ContentLength > 0:
			if _, err := io.CopyN(sc.pw, sc.br, req.ContentLength); err != nil {
				return err
			}
		}
	}
}

// head returns the next request head, nil at a clean end of the stream.
func (sc *screen) head() ([]byte, error) {
	want := 1 // bytes to wait for before looking again
	for {
		if _, err := sc.br.Peek(want); err != nil {
			if errors.Is(err, io.EOF) && sc.br.Buffered() == 0 {
				return nil, nil
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				b, _ := sc.br.Peek(sc.br.Buffered())
				return nil, sc.refuse(b, httpwire.ErrHeadTooLarge)
			}
			return nil, err
		}
		b, _ := sc.br.Peek(sc.br.Buffered())
		end, herr := httpwire.HeadEnd(b)
		if herr != nil {
			return nil, sc.refuse(b, herr)
		}
		if end > 0 {
			return b[:end], nil
		}
		// Wait for at least one byte more than is buffered.
		want = len(b) + 1
	}
}

// chunked forwards a chunked body, re-chunked, with its trailers.
func (sc *screen) chunked() error {
	cw := httputil.NewChunkedWriter(sc.pw)
	if _, err := io.Copy(cw, httputil.NewChunkedReader(sc.br)); err != nil {
		return err
	}
	if err := cw.Close(); err != nil { // the last, empty chunk
		return err
	}
	// Trailer lines, up to and including the empty line.
	for {
		line, err := sc.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if _, err := sc.pw.Write(line); err != nil {
			return err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
}

// refuse replaces the request whose head starts b with the screen's
// marked request, and ends the stream: what follows a request whose end
// is unclear cannot be read safely.
func (sc *screen) refuse(b []byte, cause error) error {
	r := &refusal{Reason: cause.Error()}
	var amb *httpwire.AmbiguousError
	if errors.As(cause, &amb) {
		r.Reason = amb.Reason
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	if f := strings.Fields(string(line)); len(f) >= 2 {
		r.Method, r.Target = clip(f[0], 32), clip(f[1], 256)
	}
	sc.mu.Lock()
	sc.refusal = r
	sc.mu.Unlock()
	marked := "GET /.warden/refused HTTP/1.1\r\nHost: warden\r\n" + refusalHeader + ": " + sc.token + "\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(sc.pw, marked); err != nil {
		return err
	}
	return io.EOF
}

// screenedConn is the client connection as net/http sees it: reads come
// through the screen, writes go straight to the client.
type screenedConn struct {
	net.Conn
	sc   *screen
	once sync.Once
}

func (c *screenedConn) Read(p []byte) (int, error) { return c.sc.pr.Read(p) }

// CloseWrite shuts the client connection's write side, which net/http
// does before it closes a connection it answered "Connection: close" on,
// so that the client reads the whole answer.
func (c *screenedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SetReadDeadline applies to net/http's reads from the screen.
func (c *screenedConn) SetReadDeadline(t time.Time) error { return c.sc.pr.SetReadDeadline(t) }

// SetDeadline sets the read deadline of net/http's reads from the screen
// and the write deadline of the client connection.
func (c *screenedConn) SetDeadline(t time.Time) error {
	c.sc.pr.SetReadDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

// closeGrace bounds how long Close waits for a client to read the 400
// of a refused request.
const closeGrace = 2 * time.Second

// Close closes the client connection, which stops the screen. After a
// refusal it first shuts the write side and waits (a little) for the
// client to close its own: a socket closed with the client's unread
// input in it is reset, and the client could lose the 400 that says why.
func (c *screenedConn) Close() error {
	var err error
	c.once.Do(func() {
		c.sc.mu.Lock()
		refused := c.sc.refusal != nil
		c.sc.mu.Unlock()
		if refused {
			c.CloseWrite()
			t := time.NewTimer(closeGrace)
			select {
			case <-c.sc.done: // the client closed; the screen read it all
			case <-t.C:
			}
			t.Stop()
		}
		err = c.Conn.Close()
		c.sc.pr.Close()
	})
	return err
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
