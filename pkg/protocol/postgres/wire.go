package postgres

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// MaxMessageLen bounds one message body. PostgreSQL's own limit is 1 GB;
// a proxy that buffered that much per connection would be easy to exhaust,
// and no interactive result row or statement comes near 64 MB.
const MaxMessageLen = 64 << 20

// Startup packet request codes (the first four bytes of the body).
const (
	codeSSLRequest    = 80877103
	codeGSSEncRequest = 80877104
	codeCancelRequest = 80877102
)

// Reader reads protocol messages as type byte and body, without decoding
// them, so that the proxy can forward what it does not need to look at
// byte for byte. Decode a body with the pgproto3 message's Decode method.
type Reader struct {
	r   *bufio.Reader
	buf []byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 32<<10)}
}

// Buffered reports how many bytes are read ahead. A proxy flushes its
// output when this is 0, so it batches pipelined messages but never sits
// on a reply the peer is waiting for.
func (r *Reader) Buffered() int { return r.r.Buffered() }

// Next returns the next message. body is valid until the next call.
func (r *Reader) Next() (typ byte, body []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[1:]))) - 4
	if n < 0 || n > MaxMessageLen {
		return 0, nil, fmt.Errorf("message %q: invalid length %d", hdr[0], n+4)
	}
	body, err = r.read(n)
	if err != nil {
		return 0, nil, fmt.Errorf("message %q body: %w", hdr[0], unexpectedEOF(err))
	}
	return hdr[0], body, nil
}

func (r *Reader) read(n int) ([]byte, error) {
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	_, err := io.ReadFull(r.r, r.buf)
	return r.buf, err
}

// Startup reads one untyped startup-phase packet: StartupMessage,
// SSLRequest, GSSEncRequest or CancelRequest. The returned message is the
// caller's to keep.
func (r *Reader) Startup() (pgproto3.FrontendMessage, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[:]))) - 4
	if n < 4 || n > 10000 {
		return nil, fmt.Errorf("invalid startup packet length %d", n+4)
	}
	body, err := r.read(n)
	if err != nil {
		return nil, fmt.Errorf("startup packet: %w", unexpectedEOF(err))
	}
	var msg pgproto3.FrontendMessage
	switch code := binary.BigEndian.Uint32(body); code {
	case codeSSLRequest:
		msg = &pgproto3.SSLRequest{}
	case codeGSSEncRequest:
		msg = &pgproto3.GSSEncRequest{}
	case codeCancelRequest:
		msg = &pgproto3.CancelRequest{}
	case pgproto3.ProtocolVersion30, pgproto3.ProtocolVersion32:
		msg = &pgproto3.StartupMessage{}
	default:
		return nil, fmt.Errorf("unknown startup packet code %d", code)
	}
	if err := msg.Decode(body); err != nil {
		return nil, fmt.Errorf("decode %T: %w", msg, err)
	}
	return msg, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Writer buffers outgoing messages; nothing is sent until Flush.
type Writer struct {
	w   *bufio.Writer
	enc []byte
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriterSize(w, 32<<10)} }

// Raw queues a message given as type byte and body.
func (w *Writer) Raw(typ byte, body []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)+4))
	w.w.Write(hdr[:])
	_, err := w.w.Write(body)
	return err
}

// Send queues an encoded message.
func (w *Writer) Send(msg pgproto3.Message) error {
	var err error
	w.enc, err = msg.Encode(w.enc[:0])
	if err != nil {
		return fmt.Errorf("encode %T: %w", msg, err)
	}
	_, err = w.w.Write(w.enc)
	return err
}

// Flush sends everything queued.
func (w *Writer) Flush() error { return w.w.Flush() }
