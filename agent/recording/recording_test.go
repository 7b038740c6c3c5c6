package recording

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// memStore is a MemoryStore whose Put fails for the names in fail, which
// a test sets before it uses the store.
type memStore struct {
	*MemoryStore
	fail map[string]bool
}

func newMem() *memStore { return &memStore{MemoryStore: NewMemoryStore(), fail: map[string]bool{}} }

func (m *memStore) Put(ctx context.Context, name string, data []byte) error {
	if m.fail[name] {
		return errors.New("store down")
	}
	return m.MemoryStore.Put(ctx, name, data)
}

// clock is a fake clock that moves one millisecond per call.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func TestWriterRoundTrip(t *testing.T) {
	st := newMem()
	c := &clock{t: time.Unix(1700000000, 0)}
	w := NewWriter(st, "rec-1", Header{Width: 80, Height: 24, Term: "xterm"}, WriterOptions{ChunkSize: 64, Now: c.now})
	w.Output([]byte("hello-warden\r\n"))
	euro := []byte("€")
	w.Output(euro[:1]) // a character cut between two reads
	w.Output(euro[1:])
	w.Resize(100, 30)
	w.Input([]byte("exit\r"))
	w.Output(bytes.Repeat([]byte("x"), 300))
	sum, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	data, m, err := Read(context.Background(), st, "rec-1", sum.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if m == nil || !m.Complete || m.Chunks < 5 || m.Bytes != int64(len(data)) || m.Bytes != sum.Bytes {
		t.Fatalf("manifest %+v, summary %+v, %d bytes read", m, sum, len(data))
	}
	h := sha256.Sum256(data)
	if hex.EncodeToString(h[:]) != sum.SHA256 {
		t.Fatal("summary sha256 is not the recording's")
	}
	hdr, evs, err := ParseCast(data)
	if err != nil {
		t.Fatalf("ParseCast: %v\n%s", err, data)
	}
	if hdr.Width != 80 || hdr.Height != 24 || hdr.Env["TERM"] != "xterm" || hdr.Timestamp != 1700000000 {
		t.Errorf("header %+v", hdr)
	}
	var out strings.Builder
	kinds := ""
	for _, e := range evs {
		kinds += e.Kind
		if e.Kind == "o" {
			out.WriteString(e.Data)
		}
	}
	if kinds != "oorio" {
		t.Errorf("event kinds %q, want oorio", kinds)
	}
	if !strings.Contains(out.String(), "hello-warden") || !strings.Contains(out.String(), "€") {
		t.Errorf("output %q lost text", out.String())
	}
}

func TestReadRefusesMismatch(t *testing.T) {
	st := newMem()
	w := NewWriter(st, "r", Header{Width: 1, Height: 1}, WriterOptions{ChunkSize: 16})
	w.Output([]byte("some output that spans chunks"))
	sum, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Read(context.Background(), st, "r", strings.Repeat("0", 64)); err == nil {
		t.Fatal("a recording whose hash is not the event's was returned")
	}
	// A chunk changed in the store: the manifest and the event both
	// disagree with it.
	st.objs[ChunkName("r", 2)][0] ^= 1
	if _, _, err := Read(context.Background(), st, "r", sum.SHA256); err == nil {
		t.Fatal("a tampered chunk was returned")
	}
}

func TestReadWithoutManifest(t *testing.T) {
	// A killed agent: chunks, but no manifest and no end event.
	st := newMem()
	w := NewWriter(st, "k", Header{Width: 1, Height: 1}, WriterOptions{ChunkSize: 8})
	w.Output([]byte("0123456789abcdef0123"))
	w.mu.Lock()
	stored, chunks := w.bytes, w.chunks
	w.mu.Unlock()
	// Chunks are uploaded in the background; wait for the last one.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := st.Get(context.Background(), ChunkName("k", chunks)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("chunks never uploaded")
		}
	}
	data, m, err := Read(context.Background(), st, "k", "")
	if err != nil {
		t.Fatal(err)
	}
	if m != nil || int64(len(data)) != stored {
		t.Fatalf("read %d bytes (manifest %v), %d were stored", len(data), m, stored)
	}
	w.Close()
}

func TestWriterCountsLostChunks(t *testing.T) {
	st := newMem()
	st.fail[ChunkName("l", 1)] = true
	var failed []int
	w := NewWriter(st, "l", Header{Width: 1, Height: 1}, WriterOptions{ChunkSize: 8, OnError: func(c int, _ error) { failed = append(failed, c) }})
	w.Output([]byte("abcdefgh"))
	sum, err := w.Close()
	if err == nil || sum.Lost == 0 || len(failed) == 0 || failed[0] != 1 {
		t.Fatalf("Close = %v, lost %d, failed chunks %v", err, sum.Lost, failed)
	}
	if _, _, err := Read(context.Background(), st, "l", sum.SHA256); err == nil {
		t.Fatal("a recording missing a chunk was read")
	}
}

func TestFlushEvery(t *testing.T) {
	st := newMem()
	w := NewWriter(st, "f", Header{Width: 1, Height: 1}, WriterOptions{FlushEvery: 40 * time.Millisecond})
	defer w.Close()
	w.Output([]byte("idle session"))
	// No chunk is full, yet the output is stored while the session runs.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := st.Get(context.Background(), ChunkName("f", 1)); err == nil && bytes.Contains(b, []byte("idle session")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("buffered output was never uploaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FuzzChunks writes arbitrary output in arbitrary pieces with an arbitrary
// chunk size, and checks that the recording reads back whole, hashes to
// its summary and parses with every byte of valid UTF-8 output intact.
func FuzzChunks(f *testing.F) {
	f.Add([]byte("hello\r\nworld"), uint8(3), uint8(7))
	f.Add([]byte("€€€ \xff\xfe bad"), uint8(1), uint8(1))
	f.Add([]byte{}, uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, out []byte, piece, chunk uint8) {
		st := newMem()
		w := NewWriter(st, "z", Header{Width: 80, Height: 24}, WriterOptions{ChunkSize: int(chunk) + 1})
		step := int(piece) + 1
		for i := 0; i < len(out); i += step {
			w.Output(out[i:min(i+step, len(out))])
		}
		sum, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		data, _, err := Read(context.Background(), st, "z", sum.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		_, evs, err := ParseCast(data)
		if err != nil {
			t.Fatalf("ParseCast: %v", err)
		}
		var got strings.Builder
		for _, e := range evs {
			got.WriteString(e.Data)
		}
		// Invalid bytes become U+FFFD (how many depends on where the
		// pieces fall); valid UTF-8 must come back exactly.
		if utf8.Valid(out) && got.String() != string(out) {
			t.Fatalf("output %q read back as %q", out, got.String())
		}
	})
}

// FuzzParseCast checks that no input panics the cast reader.
func FuzzParseCast(f *testing.F) {
	f.Add([]byte("{\"version\":2,\"width\":80,\"height\":24}\n[0.5,\"o\",\"hi\"]\n[1,\"r\",\"80x24\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ParseCast(data)
	})
}

func TestJournalOrphans(t *testing.T) {
	dir := t.TempDir()
	j, err := WithJournal(newMem(), dir)
	if err != nil {
		t.Fatal(err)
	}
	done := NewWriter(j, "ssh-done", Header{Width: 1, Height: 1}, WriterOptions{})
	killed := NewWriter(j, "ssh-killed", Header{Width: 1, Height: 1}, WriterOptions{})
	killed.Output([]byte("in flight"))
	if _, err := done.Close(); err != nil {
		t.Fatal(err)
	}
	// The agent dies with ssh-killed open: a new run finds it.
	j2, err := WithJournal(newMem(), dir)
	if err != nil {
		t.Fatal(err)
	}
	orphans, err := j2.Orphans()
	if err != nil || len(orphans) != 1 || orphans[0] != "ssh-killed" {
		t.Fatalf("orphans %v, %v", orphans, err)
	}
	if again, _ := j2.Orphans(); len(again) != 0 {
		t.Fatalf("orphans reported twice: %v", again)
	}
	killed.Close()
}
