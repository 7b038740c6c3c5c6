package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// deadline bounds every wait in these tests; it is generous on purpose and
// never a performance threshold.
const deadline = 30 * time.Second

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, dir string, opts Options) *Spool {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func rec(i int) []byte { return []byte(fmt.Sprintf("record-%06d", i)) }

func appendN(t *testing.T, s *Spool, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := s.Append(ctxT(t), rec(i)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// readN reads n records and checks they are rec(from)..rec(from+n-1).
func readN(t *testing.T, r *Reader, from, n int) []Record {
	t.Helper()
	var out []Record
	for i := from; i < from+n; i++ {
		got, err := r.Next(ctxT(t))
		if err != nil {
			t.Fatalf("next (want record %d): %v", i, err)
		}
		if string(got.Data) != string(rec(i)) {
			t.Fatalf("read %q at pos %d, want %q", got.Data, got.Pos, rec(i))
		}
		out = append(out, got)
	}
	return out
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

func TestAppendReadAck(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	appendN(t, s, 0, 10)
	r := s.NewReader()
	defer r.Close()
	recs := readN(t, r, 0, 10)
	if recs[9].Pos != 9 {
		t.Fatalf("pos %d, want 9", recs[9].Pos)
	}
	if st := s.Stats(); st.Pending != 10 {
		t.Fatalf("pending %d, want 10", st.Pending)
	}
	if err := s.Ack(recs[9].Pos); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Pending != 0 {
		t.Fatalf("pending %d after ack, want 0", st.Pending)
	}
	if err := s.Ack(100); err == nil {
		t.Fatal("ack beyond durable records accepted")
	}

	// Next waits for a record appended later.
	got := make(chan Record, 1)
	go func() {
		rec, err := r.Next(ctxT(t))
		if err != nil {
			t.Error(err)
		}
		got <- rec
	}()
	appendN(t, s, 10, 11)
	if rr := <-got; string(rr.Data) != string(rec(10)) || rr.Pos != 10 {
		t.Fatalf("got %q at %d", rr.Data, rr.Pos)
	}

	// A second process cannot open the same spool.
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("second Open of a locked spool succeeded")
	}
}

func TestGroupCommit(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() { errs <- s.Append(ctxT(t), rec(i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	t.Logf("%d appends, %d fsyncs", st.Written, st.Syncs)
	if st.Written != n || st.Syncs == 0 || st.Syncs >= n/2 {
		t.Fatalf("written %d with %d fsyncs: appends are not sharing fsyncs", st.Written, st.Syncs)
	}
	// Enqueue without waiting, then wait for all: one Wait covers many.
	var ps []Pending
	for i := range 300 {
		p, err := s.Enqueue(rec(i))
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if err := p.Wait(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTornWriteRecovery(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	appendN(t, s, 0, 20)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of writing record 19: cut its last 3 bytes.
	segs := segFiles(t, dir)
	last := segs[len(segs)-1]
	st, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, st.Size()-3); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir, Options{})
	rc := s.Recovered()
	if rc.TornBytes != int64(hdrLen+len(rec(19))-3) || rc.TornSegment != last {
		t.Fatalf("recovery %+v, want %d torn bytes in %s", rc, hdrLen+len(rec(19))-3, last)
	}
	t.Logf("recovered: %+v", rc)
	lr, ok, err := s.LastRecord()
	if err != nil || !ok || lr.Pos != 18 || string(lr.Data) != string(rec(18)) {
		t.Fatalf("last record %d %q %v %v, want 18", lr.Pos, lr.Data, ok, err)
	}
	r := s.NewReader()
	defer r.Close()
	readN(t, r, 0, 19)
	// New appends continue after the intact prefix with the next number.
	appendN(t, s, 19, 21)
	got := readN(t, r, 19, 2)
	if got[0].Pos != 19 {
		t.Fatalf("pos %d, want 19", got[0].Pos)
	}

	// Garbage instead of a record (a torn header) is cut off too.
	s.Close()
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0xff, 0xff, 0xff})
	f.Close()
	s = open(t, dir, Options{})
	if rc := s.Recovered(); rc.TornBytes != 3 {
		t.Fatalf("recovery %+v, want 3 torn bytes", rc)
	}
	if lr, _, _ := s.LastRecord(); lr.Pos != 20 {
		t.Fatalf("last record %d, want 20", lr.Pos)
	}
}

func TestBoundAndSegmentDeletion(t *testing.T) {
	dir := t.TempDir()
	opts := Options{MaxBytes: 16 << 10, SegmentBytes: 4 << 10}
	s := open(t, dir, opts)
	var n int
	for ; ; n++ {
		err := s.Append(ctxT(t), rec(n))
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n > 10000 {
			t.Fatal("spool never filled")
		}
	}
	st := s.Stats()
	t.Logf("full after %d records: %+v", n, st)
	if st.Bytes > opts.MaxBytes {
		t.Fatalf("spool holds %d bytes, bound %d", st.Bytes, opts.MaxBytes)
	}
	if len(segFiles(t, dir)) < 3 {
		t.Fatalf("expected several segments, have %v", segFiles(t, dir))
	}

	r := s.NewReader()
	defer r.Close()
	recs := readN(t, r, 0, n)
	if err := s.Ack(recs[n-1].Pos); err != nil {
		t.Fatal(err)
	}
	// Everything is acknowledged: only the newest segment stays, for
	// LastRecord.
	if segs := segFiles(t, dir); len(segs) != 1 {
		t.Fatalf("segments after full ack: %v", segs)
	}
	lr, ok, err := s.LastRecord()
	if err != nil || !ok || lr.Pos != uint64(n-1) {
		t.Fatalf("last record %d %v %v, want %d", lr.Pos, ok, err, n-1)
	}
	// Space is back.
	appendN(t, s, n, n+10)
	readN(t, r, n, 10)
}

// A spool sized only by MaxBytes (as wardend's spool_max_bytes sets it)
// returns space in segment steps of at most a quarter of the bound, so a
// full spool accepts records again as soon as the publisher acknowledges
// its oldest segment, with no restart.
func TestFullSpoolFreesSpaceOnAck(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 1 << 20
	s := open(t, dir, Options{MaxBytes: maxBytes})
	// About a kilobyte each, like an event.
	big := func(i int) []byte { return fmt.Appendf(nil, "%s-%01000d", rec(i), 0) }
	var n int
	var last Pending
	for ; ; n++ {
		p, err := s.Enqueue(big(n))
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = p
		if n > 10000 {
			t.Fatal("spool never filled")
		}
	}
	if err := last.Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	segs := segFiles(t, dir)
	for _, p := range segs {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > maxBytes/4 {
			t.Fatalf("segment %s holds %d bytes, more than a quarter of the bound", p, st.Size())
		}
	}
	if len(segs) < 4 {
		t.Fatalf("a full spool of %d records has only segments %v", n, segs)
	}
	if _, err := s.Enqueue(big(n)); !errors.Is(err, ErrFull) {
		t.Fatalf("enqueue on a full spool: %v", err)
	}
	// Full is a state: a record small enough for the space left is
	// refused too, until acknowledged space is freed.
	st := s.Stats()
	if left := st.MaxBytes - st.Bytes; left < hdrLen+1+int64(len(magic)) {
		t.Fatalf("only %d bytes left: the test needs room for a tiny record", left)
	}
	if _, err := s.Enqueue([]byte("x")); !errors.Is(err, ErrFull) {
		t.Fatalf("a tiny record on a full spool: %v", err)
	}

	// Acknowledge exactly the first segment's records: it is deleted and
	// its space is usable at once.
	second, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(segs[1]), segSuffix), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	before := s.Stats().Bytes
	if err := s.Ack(second - 1); err != nil {
		t.Fatal(err)
	}
	if got := segFiles(t, dir); len(got) != len(segs)-1 || got[0] != segs[1] {
		t.Fatalf("segments after acking the first: %v (were %v)", got, segs)
	}
	if freed := before - s.Stats().Bytes; freed < maxBytes/8 {
		t.Fatalf("acking the first segment freed only %d bytes", freed)
	}
	if _, err := s.Enqueue(big(n)); err != nil {
		t.Fatalf("enqueue after the ack: %v", err)
	}
	n++

	// Acknowledging everything leaves one segment, well below the bound.
	if err := s.Append(ctxT(t), big(n)); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(uint64(n)); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Segments != 1 || st.Bytes > maxBytes/4 || st.Pending != 0 {
		t.Fatalf("after acking everything: %+v", st)
	}
}

func TestCursorSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 4096, MaxBytes: 1 << 20}
	s := open(t, dir, opts)
	appendN(t, s, 0, 500)
	r := s.NewReader()
	recs := readN(t, r, 0, 300)
	if err := s.Ack(recs[249].Pos); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	first := segFiles(t, dir)[0]

	s = open(t, dir, opts)
	if s.Recovered().TornBytes != 0 {
		t.Fatalf("clean close reported torn bytes: %+v", s.Recovered())
	}
	if st := s.Stats(); st.Pending != 250 {
		t.Fatalf("pending after reopen %d, want 250", st.Pending)
	}
	r = s.NewReader()
	defer r.Close()
	// Delivered but unacknowledged records (250..299) come again.
	readN(t, r, 250, 250)
	// Reset rewinds to the cursor, as the publisher does after a failure.
	r.Reset()
	readN(t, r, 250, 5)
	if segFiles(t, dir)[0] != first {
		t.Fatal("segment list changed without an ack")
	}
}

func TestCorruptRecordSkipped(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 4096, MaxBytes: 1 << 20}
	s := open(t, dir, opts)
	appendN(t, s, 0, 600)
	s.Close()
	segs := segFiles(t, dir)
	// Flip a payload byte of the first record of the first segment (not the
	// last segment, so Open does not treat it as a torn tail).
	f, err := os.OpenFile(segs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("X"), int64(len(magic)+hdrLen)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s = open(t, dir, opts)
	r := s.NewReader()
	defer r.Close()
	got, err := r.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	lost := s.Stats().Corrupt
	if lost == 0 || got.Pos != lost {
		t.Fatalf("first readable record %d, %d counted corrupt", got.Pos, lost)
	}
	t.Logf("skipped %d records of a corrupt segment", lost)
}

// Ack runs the before-delete hook before it deletes segments, and keeps
// them when the hook fails; Scan still reads acknowledged records the
// spool holds.
func TestBeforeDeleteAndScan(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 4096, MaxBytes: 1 << 20})
	appendN(t, s, 0, 1000)
	if len(s.SegmentStarts()) < 3 {
		t.Fatalf("want several segments, have %v", s.SegmentStarts())
	}
	r := s.NewReader()
	defer r.Close()
	recs := readN(t, r, 0, 1000)

	calls := 0
	s.SetBeforeDelete(func() error { calls++; return errors.New("not now") })
	if err := s.Ack(recs[499].Pos); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || s.SegmentStarts()[0] != 0 {
		t.Fatalf("failing hook: %d calls, segments %v; want the segments kept", calls, s.SegmentStarts())
	}
	var scanned []string
	if err := s.Scan(10, func(r Record) bool { scanned = append(scanned, string(r.Data)); return len(scanned) < 3 }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(scanned, []string{string(rec(10)), string(rec(11)), string(rec(12))}) {
		t.Fatalf("scan from 10: %q", scanned)
	}

	s.SetBeforeDelete(func() error { calls++; return nil })
	if err := s.Ack(recs[999].Pos); err != nil {
		t.Fatal(err)
	}
	if calls != 2 || len(s.SegmentStarts()) != 1 {
		t.Fatalf("hook: %d calls, segments %v; want all but the newest deleted", calls, s.SegmentStarts())
	}
}

// copyDir copies the spool's files as a crash of the agent leaves them: the
// page cache's contents.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// A record is stored once Enqueue returns, with no fsync and no Close: an
// agent killed right after finds it at restart.
func TestEnqueuedSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 4096, MaxBytes: 1 << 20, FlushInterval: time.Hour, BatchSize: 1 << 20}
	s := open(t, dir, opts)
	const n = 500 // several segments, the last one partly filled
	for i := range n {
		if _, err := s.Enqueue(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	crashed := copyDir(t, dir)
	segs := segFiles(t, crashed)
	if len(segs) < 3 {
		t.Fatalf("want several segments, have %v", segs)
	}
	s2 := open(t, crashed, opts)
	if rc := s2.Recovered(); rc != (Recovery{}) {
		t.Fatalf("recovery after a kill: %+v, want nothing torn", rc)
	}
	r := s2.NewReader()
	defer r.Close()
	readN(t, r, 0, n)
}

// A record larger than a segment gets a segment of its own.
func TestRecordLargerThanSegment(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 4096, MaxBytes: 1 << 20}
	s := open(t, dir, opts)
	big := make([]byte, 10000)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	appendN(t, s, 0, 3)
	if err := s.Append(ctxT(t), big); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, opts)
	r := s.NewReader()
	defer r.Close()
	readN(t, r, 0, 3)
	got, err := r.Next(ctxT(t))
	if err != nil || string(got.Data) != string(big) {
		t.Fatalf("big record: %d bytes, %v", len(got.Data), err)
	}
}

// BenchmarkEnqueue measures one append of an event-sized record, group
// fsyncs included (they run in the background syncer).
func BenchmarkEnqueue(b *testing.B) {
	opts := Options{}
	if os.Getenv("SPOOL_BENCH_NOSYNC") != "" {
		opts.FlushInterval, opts.BatchSize = time.Hour, 1<<30
	}
	s, err := Open(b.TempDir(), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := bytes.Repeat([]byte("x"), 1000)
	for b.Loop() {
		if _, err := s.Enqueue(rec); err != nil {
			b.Fatal(err)
		}
	}
}
