// Package mysql is the MySQL/MariaDB client/server protocol as Warden's
// proxy needs it: packet framing (with packets over 16 MiB and sequence
// ids), the handshake and its responses, OK/ERR/EOF, column definitions,
// text and binary result rows, prepared-statement replies and the
// authentication plugins' scrambles. It holds no policy: the codec in
// agent/proxy/mysql decides what to do with what it reads here.
package mysql

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// MaxPayload is the largest payload one physical packet carries. A logical
// packet of this size or more is split, and ends with a shorter (possibly
// empty) physical packet.
const MaxPayload = 1<<24 - 1

// MaxLogical bounds a logical packet Warden reads whole. The server's own
// max_allowed_packet cannot exceed 1 GiB.
const MaxLogical = 1 << 30

// ErrTooLarge is returned for a logical packet over MaxLogical.
var ErrTooLarge = errors.New("mysql packet larger than 1 GiB")

// Reader reads logical packets: the payloads of consecutive physical
// packets joined, as long as each is MaxPayload long.
type Reader struct {
	r *bufio.Reader
	// Seq is the sequence id of the last physical packet read.
	Seq byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 16<<10)} }

// Buffered is how many bytes have been read from the connection but not
// yet returned.
func (r *Reader) Buffered() int { return r.r.Buffered() }

// Detach returns the bytes read from the connection but not yet
// returned, and leaves the Reader empty. A client sends its TLS
// ClientHello right behind its SSLRequest, without waiting for an answer,
// so the bytes already read belong to the TLS handshake.
func (r *Reader) Detach() []byte {
	b, _ := r.r.Peek(r.r.Buffered())
	out := append([]byte(nil), b...)
	r.r.Discard(len(out))
	return out
}

// Next returns the next logical packet's payload and the sequence id of
// its first physical packet. The payload is the caller's to keep.
func (r *Reader) Next() (seq byte, payload []byte, err error) {
	first := true
	for {
		var h [4]byte
		if _, err := io.ReadFull(r.r, h[:]); err != nil {
			if !first && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
		if first {
			seq = h[3]
		}
		r.Seq = h[3]
		if len(payload)+n > MaxLogical {
			return 0, nil, ErrTooLarge
		}
		start := len(payload)
		payload = append(payload, make([]byte, n)...)
		if _, err := io.ReadFull(r.r, payload[start:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, fmt.Errorf("read mysql packet body: %w", err)
		}
		first = false
		if n < MaxPayload {
			if payload == nil {
				payload = []byte{}
			}
			return seq, payload, nil
		}
	}
}

// Writer writes logical packets, split as the protocol requires, numbering
// each physical packet from Seq.
type Writer struct {
	w *bufio.Writer
	// Seq is the sequence id the next physical packet gets.
	Seq byte
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriterSize(w, 16<<10)} }

// Write buffers one logical packet.
func (w *Writer) Write(payload []byte) error {
	for {
		n := min(len(payload), MaxPayload)
		h := [4]byte{byte(n), byte(n >> 8), byte(n >> 16), w.Seq}
		w.Seq++
		if _, err := w.w.Write(h[:]); err != nil {
			return err
		}
		if _, err := w.w.Write(payload[:n]); err != nil {
			return err
		}
		payload = payload[n:]
		if n < MaxPayload {
			return nil
		}
	}
}

// WriteSeq sets Seq, then writes payload.
func (w *Writer) WriteSeq(seq byte, payload []byte) error {
	w.Seq = seq
	return w.Write(payload)
}

// Flush sends what is buffered.
func (w *Writer) Flush() error { return w.w.Flush() }

// Buffered is how many bytes wait for Flush.
func (w *Writer) Buffered() int { return w.w.Buffered() }
