// Package recording writes SSH session recordings as asciicast v2 and
// stores them in chunks, while the session runs, in a JetStream Object
// Store bucket (WARDEN_RECORDINGS). A recording is the concatenation of
// its chunks, objects named ID/00000001, ID/00000002, ...; the last one
// written is followed by a manifest object named ID giving the chunk
// count, total bytes and sha256. The ssh.session end event carries the
// same sha256, so the signed event chain vouches for the recording, and
// Read refuses a recording that does not match.
//
// A chunk is uploaded once it holds ChunkSize bytes or FlushEvery has
// passed since its first byte, so an agent that is killed loses at most
// the chunk it was filling.
package recording

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Bucket is the JetStream Object Store bucket recordings are kept in.
const Bucket = "WARDEN_RECORDINGS"

// Defaults for WriterOptions.
const (
	DefaultChunkSize  = 256 << 10
	DefaultFlushEvery = 5 * time.Second
)

// ErrNotFound is returned by a Store for a missing object.
var ErrNotFound = errors.New("recording object not found")

// Store keeps recording objects. The NATS Object Store is one (see
// NewNATSStore); tests use a map.
type Store interface {
	Put(ctx context.Context, name string, data []byte) error
	// Get returns the object, or an error wrapping ErrNotFound.
	Get(ctx context.Context, name string) ([]byte, error)
}

// Header is the asciicast v2 header.
type Header struct {
	Width, Height int
	// Time is when the recording started.
	Time time.Time
	// Term is the client's TERM; "" when it asked for no terminal.
	Term string
	// Title is shown by players; the codec names target and person.
	Title string
}

// Manifest describes a stored recording: the object named after it.
type Manifest struct {
	ID     string `json:"id"`
	Chunks int    `json:"chunks"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	// Complete is false for a recording whose writer could not upload
	// every chunk.
	Complete bool `json:"complete"`
}

// Summary is what the session's end event says about its recording.
type Summary struct {
	// Object names the recording (its manifest object, and the prefix of
	// its chunks).
	Object string
	SHA256 string
	Bytes  int64
	// Duration is from the header's time to Close.
	Duration time.Duration
	// Lost counts bytes recorded but not stored (failed uploads).
	Lost int64
}

// WriterOptions tune a Writer.
type WriterOptions struct {
	ChunkSize  int
	FlushEvery time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// OnError is told about every failed upload (the chunk is lost; the
	// writer carries on); may be nil.
	OnError func(chunk int, err error)
}

// Writer records one session. It is safe for concurrent use: output and
// input come from different goroutines.
type Writer struct {
	store Store
	id    string
	opts  WriterOptions
	start time.Time

	mu      sync.Mutex
	buf     bytes.Buffer
	carry   map[string][]byte // an incomplete UTF-8 sequence per event kind
	hash    hash.Hash
	chunks  int
	bytes   int64
	lost    int64 // guarded by upMu
	ok      bool  // guarded by upMu
	closed  bool
	pending time.Time // first byte of buf
	stop    chan struct{}
	done    chan struct{}
	// queue feeds the uploader, which stores chunks in order, so a slow
	// or unreachable store never stalls the session being recorded.
	upMu     sync.Mutex // guards ok, lost and the queue
	upCond   *sync.Cond
	queue    []chunk
	queued   int  // bytes in queue
	qClosed  bool // no more chunks
	uploaded chan struct{}
}

type chunk struct {
	seq  int
	data []byte
}

// QueueBytes bounds the bytes waiting for the store. Beyond it, chunks
// are dropped and counted as lost rather than buffered without limit.
const QueueBytes = 32 << 20

// NewWriter starts the recording id with header h. Its flusher goroutine
// runs until Close.
func NewWriter(store Store, id string, h Header, opts WriterOptions) *Writer {
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = DefaultFlushEvery
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if h.Time.IsZero() {
		h.Time = opts.Now()
	}
	w := &Writer{store: store, id: id, opts: opts, start: h.Time, carry: map[string][]byte{}, ok: true,
		hash: sha256.New(), stop: make(chan struct{}), done: make(chan struct{}),
		uploaded: make(chan struct{})}
	w.upCond = sync.NewCond(&w.upMu)
	hdr := map[string]any{"version": 2, "width": h.Width, "height": h.Height, "timestamp": h.Time.Unix()}
	env := map[string]string{}
	if h.Term != "" {
		env["TERM"] = h.Term
	}
	hdr["env"] = env
	if h.Title != "" {
		hdr["title"] = h.Title
	}
	if j, ok := store.(journaled); ok {
		if err := j.begin(id); err != nil && opts.OnError != nil {
			opts.OnError(0, fmt.Errorf("journal: %w", err))
		}
	}
	line, _ := json.Marshal(hdr)
	w.append(append(line, '\n'))
	go w.flusher()
	go w.uploader()
	return w
}

// ID is the recording's id, the name of its manifest object.
func (w *Writer) ID() string { return w.id }

// Output records bytes the session wrote to the terminal.
func (w *Writer) Output(p []byte) { w.event("o", p) }

// Input records bytes typed at the terminal.
func (w *Writer) Input(p []byte) { w.event("i", p) }

// Resize records a terminal size change.
func (w *Writer) Resize(cols, rows int) {
	w.event("r", []byte(strconv.Itoa(cols)+"x"+strconv.Itoa(rows)))
}

// event appends one [time, kind, data] line. Data is split at a UTF-8
// boundary: the incomplete tail of a multi-byte character waits for the
// next call, so a character cut between two reads is not mangled.
func (w *Writer) event(kind string, p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	data := append(w.carry[kind], p...)
	cut := completeUTF8(data)
	w.carry[kind] = append([]byte(nil), data[cut:]...)
	data = data[:cut]
	if len(data) == 0 {
		return
	}
	w.line(kind, data)
}

func (w *Writer) line(kind string, data []byte) {
	t := w.opts.Now().Sub(w.start).Seconds()
	b, _ := json.Marshal([]any{json.Number(strconv.FormatFloat(t, 'f', 6, 64)), kind, string(data)})
	w.appendLocked(append(b, '\n'))
}

// completeUTF8 returns the length of p without a trailing incomplete
// UTF-8 sequence (at most 3 bytes are held back). Invalid bytes are not
// held: JSON encoding turns them into U+FFFD.
func completeUTF8(p []byte) int {
	for i := 1; i <= 3 && i <= len(p); i++ {
		c := p[len(p)-i]
		if c < 0x80 {
			return len(p)
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(p[len(p)-i:]) {
				return len(p) - i
			}
			return len(p)
		}
	}
	return len(p)
}

func (w *Writer) append(b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.appendLocked(b)
}

func (w *Writer) appendLocked(b []byte) {
	if w.buf.Len() == 0 {
		w.pending = w.opts.Now()
	}
	w.buf.Write(b)
	for w.buf.Len() >= w.opts.ChunkSize {
		w.flushLocked(w.opts.ChunkSize)
	}
}

// flushLocked uploads up to n bytes of the buffer as the next chunk.
func (w *Writer) flushLocked(n int) {
	n = min(n, w.buf.Len())
	if n == 0 {
		return
	}
	data := bytes.Clone(w.buf.Next(n))
	w.chunks++
	seq := w.chunks
	w.hash.Write(data)
	w.bytes += int64(len(data))
	w.upMu.Lock()
	full := w.queued+len(data) > QueueBytes
	if !full {
		w.queue = append(w.queue, chunk{seq, data})
		w.queued += len(data)
		w.upCond.Signal()
	}
	w.upMu.Unlock()
	if full {
		w.fail(seq, int64(len(data)), fmt.Errorf("%d bytes already wait for the store", QueueBytes))
	}
	if w.buf.Len() > 0 {
		w.pending = w.opts.Now()
	}
}

// fail counts chunk seq as lost.
func (w *Writer) fail(seq int, n int64, err error) {
	w.upMu.Lock()
	w.ok = false
	w.lost += n
	w.upMu.Unlock()
	if w.opts.OnError != nil {
		w.opts.OnError(seq, err)
	}
}

// uploader stores queued chunks in order until the queue is closed.
func (w *Writer) uploader() {
	defer close(w.uploaded)
	for {
		w.upMu.Lock()
		for len(w.queue) == 0 && !w.qClosed {
			w.upCond.Wait()
		}
		if len(w.queue) == 0 {
			w.upMu.Unlock()
			return
		}
		c := w.queue[0]
		w.queue = w.queue[1:]
		w.queued -= len(c.data)
		w.upMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := w.store.Put(ctx, ChunkName(w.id, c.seq), c.data)
		cancel()
		if err != nil {
			w.fail(c.seq, int64(len(c.data)), err)
		}
	}
}

func (w *Writer) flusher() {
	defer close(w.done)
	t := time.NewTicker(w.opts.FlushEvery / 4)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.mu.Lock()
			if w.buf.Len() > 0 && w.opts.Now().Sub(w.pending) >= w.opts.FlushEvery {
				w.flushLocked(w.buf.Len())
			}
			w.mu.Unlock()
		}
	}
}

// Close uploads what is buffered and the manifest, stops the flusher and
// summarises the recording. It is safe to call more than once.
func (w *Writer) Close() (Summary, error) {
	w.mu.Lock()
	if w.closed {
		s := w.summaryLocked()
		w.mu.Unlock()
		return s, nil
	}
	w.closed = true
	close(w.stop)
	for kind, rest := range w.carry {
		if len(rest) > 0 {
			w.line(kind, rest)
		}
	}
	w.flushLocked(w.buf.Len())
	w.upMu.Lock()
	w.qClosed = true
	w.upCond.Signal()
	w.upMu.Unlock()
	w.mu.Unlock()
	<-w.done
	<-w.uploaded
	w.mu.Lock()
	s := w.summaryLocked()
	w.upMu.Lock()
	ok := w.ok
	w.upMu.Unlock()
	m := Manifest{ID: w.id, Chunks: w.chunks, Bytes: w.bytes, SHA256: s.SHA256, Complete: ok}
	w.mu.Unlock()
	b, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.store.Put(ctx, w.id, b); err != nil {
		return s, fmt.Errorf("store recording manifest %s: %w", w.id, err)
	}
	// Only a recording whose manifest is stored leaves the journal: one
	// that could not be finished is reported as lost at the next start.
	if j, ok := w.store.(journaled); ok {
		if err := j.end(w.id); err != nil {
			return s, fmt.Errorf("recording %s: journal: %w", w.id, err)
		}
	}
	if !ok {
		return s, fmt.Errorf("recording %s: %d bytes were not stored", w.id, s.Lost)
	}
	return s, nil
}

func (w *Writer) summaryLocked() Summary {
	w.upMu.Lock()
	lost := w.lost
	w.upMu.Unlock()
	return Summary{Object: w.id, SHA256: hex.EncodeToString(w.hash.Sum(nil)), Bytes: w.bytes,
		Duration: w.opts.Now().Sub(w.start), Lost: lost}
}

// ChunkName names chunk seq (from 1) of recording id.
func ChunkName(id string, seq int) string { return fmt.Sprintf("%s/%08d", id, seq) }

// MaxChunks bounds how many chunks Read fetches for a recording without a
// manifest, so a damaged store cannot make it loop.
const MaxChunks = 1 << 20

// Read fetches recording id and checks it against wantSHA256 (hex, as the
// ssh.session end event gives it; "" skips the check, for a recording
// whose session never ended). It uses the manifest when there is one; a
// recording without one (its agent was killed) is read chunk by chunk
// until the first missing one. A mismatch is an error, and the bytes are
// not returned: a recording that is not the one the event vouches for is
// not played.
func Read(ctx context.Context, s Store, id, wantSHA256 string) ([]byte, *Manifest, error) {
	var m *Manifest
	if b, err := s.Get(ctx, id); err == nil {
		m = &Manifest{}
		if err := json.Unmarshal(b, m); err != nil {
			return nil, nil, fmt.Errorf("recording %s: manifest: %w", id, err)
		}
	} else if !errors.Is(err, ErrNotFound) {
		return nil, nil, fmt.Errorf("recording %s: manifest: %w", id, err)
	}
	var out bytes.Buffer
	for seq := 1; seq <= MaxChunks; seq++ {
		if m != nil && seq > m.Chunks {
			break
		}
		b, err := s.Get(ctx, ChunkName(id, seq))
		if errors.Is(err, ErrNotFound) && m == nil {
			if seq == 1 {
				return nil, nil, fmt.Errorf("recording %s: %w", id, ErrNotFound)
			}
			break
		}
		if err != nil {
			return nil, m, fmt.Errorf("recording %s: chunk %d: %w", id, seq, err)
		}
		out.Write(b)
	}
	sum := sha256.Sum256(out.Bytes())
	got := hex.EncodeToString(sum[:])
	if m != nil && m.SHA256 != got {
		return nil, m, fmt.Errorf("recording %s: its chunks hash to %s, its manifest says %s", id, got, m.SHA256)
	}
	if wantSHA256 != "" && got != wantSHA256 {
		return nil, m, fmt.Errorf("recording %s: sha256 %s does not match its ssh.session event's %s; refusing to play it", id, got, wantSHA256)
	}
	return out.Bytes(), m, nil
}
