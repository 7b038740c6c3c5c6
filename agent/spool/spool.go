// Package spool is the agent's durable on-disk queue of sealed events.
//
// Records are appended to segment files in one directory. Each record is
// length-prefixed and CRC32C-checked, so a write torn by a crash is detected
// and cut off when the spool is opened. Appends are made durable in groups:
// one fsync covers every record written since the previous one, and an
// append's Wait returns only after the fsync that covers it. A persistent
// read cursor records how far the publisher got; records after it are
// delivered again after a restart.
//
// Layout of the directory:
//
//	<first index, 20 digits>.seg   segment: magic "WSPOOL1\n", then records
//	cursor                         index of the first unacknowledged record
//	lock                           flock'ed while a process has the spool open
//
// A record is: uint32 little-endian payload length, uint32 little-endian
// CRC32C (Castagnoli) of the payload, payload. Records are numbered from 0
// across segments; a segment's file name is the number of its first record.
package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for Options.
const (
	DefaultMaxBytes      = 1 << 30
	DefaultSegmentBytes  = 64 << 20
	DefaultFlushInterval = 50 * time.Millisecond
	DefaultBatchSize     = 256
	// MaxRecordBytes bounds one record; a larger length prefix on disk is
	// treated as corruption.
	MaxRecordBytes = 8 << 20
)

const (
	magic     = "WSPOOL1\n"
	hdrLen    = 8
	segSuffix = ".seg"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Errors returned by the spool.
var (
	// ErrFull means the spool holds MaxBytes; the record was not stored.
	// Once full, the spool refuses every record until acknowledged
	// segments are deleted, so a small record never slips in after a
	// larger one was refused: full is a state that only the publisher's
	// acknowledgements end.
	ErrFull = errors.New("spool full")
	// ErrClosed means the spool was closed.
	ErrClosed = errors.New("spool closed")
	// ErrTooLarge means the record exceeds MaxRecordBytes.
	ErrTooLarge = errors.New("spool record too large")
)

// Options configure a Spool. Zero values take the defaults.
type Options struct {
	// MaxBytes bounds the bytes of all segment files, acknowledged records
	// included until their segment is deleted. Default 1 GiB.
	MaxBytes int64
	// SegmentBytes is the size at which a new segment file is started.
	// Default 64 MiB, at most MaxBytes/4 so that acknowledged space is
	// returned in reasonable steps.
	SegmentBytes int64
	// FlushInterval is the longest a record waits for its fsync. Default 50ms.
	FlushInterval time.Duration
	// BatchSize records trigger an fsync without waiting for FlushInterval.
	// Default 256.
	BatchSize int
}

// Recovery describes what Open found and repaired.
type Recovery struct {
	// TornBytes were cut off the end of the last segment: a record whose
	// write was interrupted by a crash. It was never reported durable.
	TornBytes int64
	// TornSegment is the file the bytes were cut from.
	TornSegment string
	// Detail says what was wrong with the torn bytes.
	Detail string
}

// Record is one stored record.
type Record struct {
	// Pos is the record's number; pass it to Ack.
	Pos  uint64
	Data []byte
}

// Stats is a snapshot of the spool's state.
type Stats struct {
	Bytes    int64  // bytes of all segment files
	MaxBytes int64  // the bound
	Segments int    // segment files
	Pending  uint64 // durable records not yet acknowledged
	Written  uint64 // records appended since Open
	// Corrupt counts durable records that could not be read back (disk
	// corruption) and were skipped since Open.
	Corrupt uint64
	// Syncs counts group fsyncs since Open; Written/Syncs is the batching.
	Syncs uint64
}

type segment struct {
	first uint64 // number of the first record
	count uint64 // records written
	size  int64  // bytes written, magic included
	// durableSize is how many bytes are known to be on disk: readers never
	// read past it.
	durableSize int64
	path        string
}

func (g *segment) end() uint64 { return g.first + g.count }

// batch is one group of appends covered by one fsync.
type batch struct {
	n    int
	done chan struct{}
	err  error
}

// Spool is a durable, bounded queue of records. It is safe for concurrent
// use; records are stored in the order Enqueue was called.
type Spool struct {
	dir      string
	opts     Options
	lockFile *os.File
	recovery Recovery

	mu          sync.Mutex
	segs        []*segment // oldest first; the last one is the active segment
	active      *os.File   // open for writing, the last segment
	retired     []*os.File // rotated segment files the syncer still has to close
	forceRotate bool       // start a new segment at the next append
	totalBytes  int64
	nextIndex   uint64 // number of the next record to append
	durableNext uint64 // records below this number are on disk
	acked       uint64 // records below this number are acknowledged
	cur         *batch
	notify      chan struct{} // closed and replaced when durableNext moves
	err         error         // sticky: a failed fsync leaves the file's state unknown
	exhausted   bool          // a record was refused for want of space; cleared when space is freed
	closed      bool
	written     uint64

	ackMu  sync.Mutex // serialises cursor writes
	cursor *os.File
	// beforeDelete, when set, runs before acknowledged segments are
	// deleted (see SetBeforeDelete).
	beforeDelete func() error

	corrupt atomic.Uint64
	syncs   atomic.Uint64

	kick    chan struct{} // a batch has its first record
	full    chan struct{} // a batch reached BatchSize or someone waits for it
	closing chan struct{}
	wg      sync.WaitGroup
}

// Open opens or creates the spool in dir, repairs a torn tail and starts the
// background syncer. Close stops it.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	opts.SegmentBytes = min(opts.SegmentBytes, max(opts.MaxBytes/4, 4096))
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create spool dir: %w", err)
	}
	s := &Spool{
		dir:     dir,
		opts:    opts,
		cur:     &batch{done: make(chan struct{})},
		notify:  make(chan struct{}),
		kick:    make(chan struct{}, 1),
		full:    make(chan struct{}, 1),
		closing: make(chan struct{}),
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	if err := s.load(); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.wg.Add(1)
	go s.syncer()
	return s, nil
}

// lock takes an exclusive flock so two agents never share a spool.
func (s *Spool) lock() error {
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open spool lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("lock spool %s (is another agent running?): %w", s.dir, err)
	}
	s.lockFile = f
	return nil
}

func (s *Spool) load() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read spool dir: %w", err)
	}
	for _, ent := range ents {
		name := ent.Name()
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil {
			return fmt.Errorf("spool: unexpected segment file %s", name)
		}
		s.segs = append(s.segs, &segment{first: first, path: filepath.Join(s.dir, name)})
	}
	slices.SortFunc(s.segs, func(a, b *segment) int { return cmpU64(a.first, b.first) })

	acked, err := s.openCursor()
	if err != nil {
		return err
	}

	for i, g := range s.segs {
		st, err := os.Stat(g.path)
		if err != nil {
			return fmt.Errorf("stat segment: %w", err)
		}
		g.size, g.durableSize = st.Size(), st.Size()
		if i+1 < len(s.segs) {
			// Older segments were fsynced before the next one was started,
			// so only the last one can be torn.
			g.count = s.segs[i+1].first - g.first
		}
		s.totalBytes += g.size
	}
	if len(s.segs) == 0 {
		if err := s.newSegment(acked); err != nil {
			return err
		}
	} else if err := s.repairTail(); err != nil {
		return err
	}
	last := s.segs[len(s.segs)-1]
	s.nextIndex = last.end()
	s.durableNext = s.nextIndex
	// A cursor outside the stored range (files removed by hand, or a cursor
	// lost to corruption) is clamped: re-delivery is safe, skipping is not.
	s.acked = min(max(acked, s.segs[0].first), s.durableNext)

	if s.active == nil {
		f, err := os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("open active segment: %w", err)
		}
		s.active = f
	}
	// Segments acknowledged before a crash may not have been deleted yet.
	for _, p := range s.deletableLocked() {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove acknowledged segment: %w", err)
		}
	}
	return nil
}

// repairTail scans the last segment, counts its records and cuts off a torn
// record at its end.
func (s *Spool) repairTail() error {
	g := s.segs[len(s.segs)-1]
	f, err := os.OpenFile(g.path, os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open last segment: %w", err)
	}
	defer f.Close()
	count, validEnd, detail, err := scanSegment(f, g.size)
	if err != nil {
		return fmt.Errorf("scan segment %s: %w", g.path, err)
	}
	g.count = count
	if validEnd == g.size {
		return nil
	}
	if validEnd == 0 {
		// Even the magic is incomplete: the segment was being created.
		if _, err := f.WriteAt([]byte(magic), 0); err != nil {
			return fmt.Errorf("rewrite segment header: %w", err)
		}
		validEnd = int64(len(magic))
	}
	if err := f.Truncate(validEnd); err != nil {
		return fmt.Errorf("truncate torn segment: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync repaired segment: %w", err)
	}
	s.recovery = Recovery{TornBytes: g.size - validEnd, TornSegment: g.path, Detail: detail}
	s.totalBytes += validEnd - g.size
	g.size, g.durableSize = validEnd, validEnd
	return nil
}

// scanSegment reads records from the start of a segment and returns how many
// are intact, where the intact prefix ends and, if it ends before size, why.
// A missing or incomplete magic gives validEnd 0.
func scanSegment(f *os.File, size int64) (count uint64, validEnd int64, detail string, err error) {
	m := make([]byte, len(magic))
	if n, _ := f.ReadAt(m, 0); n < len(magic) || string(m) != magic {
		if size >= int64(len(magic)) && string(m) != magic && n == len(magic) {
			return 0, 0, "", fmt.Errorf("bad magic %q", m)
		}
		return 0, 0, "incomplete segment header", nil
	}
	off := int64(len(magic))
	var hdr [hdrLen]byte
	var buf []byte
	for off < size {
		if size-off < hdrLen {
			return count, off, fmt.Sprintf("%d-byte partial record header", size-off), nil
		}
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return 0, 0, "", err
		}
		n := int64(binary.LittleEndian.Uint32(hdr[0:4]))
		if n > MaxRecordBytes {
			return count, off, fmt.Sprintf("record length %d exceeds limit", n), nil
		}
		if off+hdrLen+n > size {
			return count, off, fmt.Sprintf("record of %d bytes has only %d", n, size-off-hdrLen), nil
		}
		buf = slices.Grow(buf[:0], int(n))[:n]
		if _, err := f.ReadAt(buf, off+hdrLen); err != nil {
			return 0, 0, "", err
		}
		if crc32.Checksum(buf, crcTable) != binary.LittleEndian.Uint32(hdr[4:8]) {
			return count, off, "record checksum mismatch", nil
		}
		off += hdrLen + n
		count++
	}
	return count, off, "", nil
}

// newSegment creates and makes durable an empty segment starting at record
// first and makes it the active one. Called with mu held (or before the
// syncer runs).
func (s *Spool) newSegment(first uint64) error {
	path := filepath.Join(s.dir, fmt.Sprintf("%020d%s", first, segSuffix))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	if _, err := f.Write([]byte(magic)); err != nil {
		f.Close()
		return fmt.Errorf("write segment header: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync new segment: %w", err)
	}
	// The directory entry must be durable too, or a crash could lose the
	// whole segment after its records were reported durable.
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	if s.active != nil {
		s.retired = append(s.retired, s.active)
	}
	s.active = f
	n := int64(len(magic))
	s.segs = append(s.segs, &segment{first: first, size: n, durableSize: n, path: path})
	s.totalBytes += n
	return nil
}

// Dir returns the spool's directory. Files in it other than segments,
// the cursor and the lock are not the spool's: the recorder keeps its
// Merkle tree state there.
func (s *Spool) Dir() string { return s.dir }

// Recovered reports what Open repaired.
func (s *Spool) Recovered() Recovery { return s.recovery }

// Pending is the outcome of one Enqueue.
type Pending struct {
	s *Spool
	b *batch
}

// Wait blocks until the record is durable, the fsync covering it failed, or
// ctx is done. A ctx error says nothing about the record: it was stored in
// order and will be synced (or the spool fails) regardless.
//
// A waiting caller makes the syncer fsync now instead of after
// FlushInterval: batches still form from the appends that arrive while an
// fsync is running, so a lone writer is not slowed to one record per
// interval, and records nobody waits for are synced in FlushInterval groups.
func (p Pending) Wait(ctx context.Context) error {
	select {
	case <-p.b.done:
	default:
		signal(p.s.full)
	}
	select {
	case <-p.b.done:
		if p.b.err != nil {
			return fmt.Errorf("spool sync: %w", p.b.err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Enqueue stores rec after every record enqueued before it and returns
// without waiting for the disk; Pending.Wait waits for durability. Enqueue
// returns ErrFull when the spool is at MaxBytes. It is cheap enough to call
// under a caller's lock, which is how the recorder keeps chain order. rec
// is written, not kept: the caller may reuse it once Enqueue returns.
func (s *Spool) Enqueue(rec []byte) (Pending, error) {
	if len(rec) > MaxRecordBytes {
		return Pending{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(rec))
	}
	n := int64(hdrLen + len(rec))
	// Header and payload go out in one writev: no copy of the record.
	var hdr [hdrLen]byte
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(rec)))
	binary.LittleEndian.PutUint32(hdr[4:8], crc32.Checksum(rec, crcTable))

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Pending{}, ErrClosed
	}
	if s.err != nil {
		return Pending{}, s.err
	}
	g := s.segs[len(s.segs)-1]
	rotate := g.count > 0 && (s.forceRotate || g.size+n > s.opts.SegmentBytes)
	need := n
	if rotate {
		need += int64(len(magic))
	}
	if s.exhausted || s.totalBytes+need > s.opts.MaxBytes {
		s.exhausted = true
		return Pending{}, ErrFull
	}
	if rotate {
		if err := s.rotateLocked(); err != nil {
			return Pending{}, err
		}
		g = s.segs[len(s.segs)-1]
	}
	if err := writeRecord(s.active, hdr[:], rec); err != nil {
		// Cut off whatever part was written so the next record starts on a
		// record boundary; if even that fails the file is unusable.
		if terr := s.active.Truncate(g.size); terr != nil {
			s.err = fmt.Errorf("spool write failed (%v) and could not be undone: %w", err, terr)
		}
		return Pending{}, fmt.Errorf("spool write: %w", err)
	}
	g.size += n
	g.count++
	s.totalBytes += n
	s.nextIndex++
	s.written++
	b := s.cur
	b.n++
	if b.n == 1 {
		signal(s.kick)
	}
	if b.n >= s.opts.BatchSize {
		signal(s.full)
	}
	return Pending{s: s, b: b}, nil
}

// writeRecord appends header and payload to f in one writev, finishing a
// short write the way os.File.Write would.
func writeRecord(f *os.File, hdr, rec []byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	iov := [][]byte{hdr, rec}
	var werr error
	if err := rc.Write(func(fd uintptr) bool {
		for len(iov) > 0 {
			n, err := unix.Writev(int(fd), iov)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			for n > 0 && len(iov) > 0 {
				if n >= len(iov[0]) {
					n -= len(iov[0])
					iov = iov[1:]
				} else {
					iov[0] = iov[0][n:]
					n = 0
				}
			}
			for len(iov) > 0 && len(iov[0]) == 0 {
				iov = iov[1:]
			}
		}
		return true
	}); err != nil {
		return err
	}
	return werr
}

// Append stores rec and waits until it is durable: a nil error means the
// record survives a crash. Concurrent Appends share fsyncs.
func (s *Spool) Append(ctx context.Context, rec []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.Enqueue(rec)
	if err != nil {
		return err
	}
	return p.Wait(ctx)
}

// rotateLocked makes the active segment durable and starts a new one. The
// fsync here is what lets Open assume only the last segment can be torn.
func (s *Spool) rotateLocked() error {
	old := s.segs[len(s.segs)-1]
	if err := s.active.Sync(); err != nil {
		s.err = fmt.Errorf("sync segment before rotation: %w", err)
		return s.err
	}
	old.durableSize = old.size
	s.forceRotate = false
	if err := s.newSegment(s.nextIndex); err != nil {
		return fmt.Errorf("rotate spool segment: %w", err)
	}
	return nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// syncer runs the group commit: after the first record of a batch it waits
// up to FlushInterval, until the batch is full or until a caller waits for
// it, then fsyncs once for all.
func (s *Spool) syncer() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-s.closing:
			s.syncOnce()
			return
		case <-s.kick:
		}
		t.Reset(s.opts.FlushInterval)
		select {
		case <-t.C:
		case <-s.full:
			t.Stop()
		case <-s.closing:
			t.Stop()
		}
		s.syncOnce()
	}
}

func (s *Spool) syncOnce() {
	s.mu.Lock()
	b := s.cur
	retired := s.retired
	s.retired = nil
	if b.n == 0 {
		s.mu.Unlock()
		closeAll(retired)
		return
	}
	s.cur = &batch{done: make(chan struct{})}
	f := s.active
	g := s.segs[len(s.segs)-1]
	size, upto := g.size, s.nextIndex
	select { // a stale "full" from this batch must not cut the next one short
	case <-s.full:
	default:
	}
	s.mu.Unlock()

	// Appends continue on the new batch while the disk works.
	err := f.Sync()
	s.syncs.Add(1)
	closeAll(retired)

	s.mu.Lock()
	if err != nil {
		// After a failed fsync the kernel may have dropped the dirty pages;
		// nothing written since the last good sync can be trusted.
		if s.err == nil {
			s.err = fmt.Errorf("spool fsync: %w", err)
		}
	} else {
		g.durableSize = max(g.durableSize, size)
		if upto > s.durableNext {
			s.durableNext = upto
			close(s.notify)
			s.notify = make(chan struct{})
		}
	}
	s.mu.Unlock()
	b.err = err
	close(b.done)
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// Ack records that every record up to and including pos was delivered. The
// cursor is fsynced before Ack returns, and segments holding only
// acknowledged records are deleted (except the one holding the newest
// record, which LastRecord needs).
func (s *Spool) Ack(pos uint64) error {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if pos >= s.durableNext {
		s.mu.Unlock()
		return fmt.Errorf("spool ack %d: only %d records are durable", pos, s.durableNext)
	}
	if pos+1 <= s.acked {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()

	if err := s.writeCursor(pos + 1); err != nil {
		return err
	}

	s.mu.Lock()
	s.acked = pos + 1
	hook := s.beforeDelete
	s.mu.Unlock()
	if hook != nil && s.wouldDelete() {
		if err := hook(); err != nil {
			// Keep the segments; the next Ack tries again.
			return nil
		}
	}
	s.mu.Lock()
	del := s.deletableLocked()
	s.mu.Unlock()
	for _, p := range del {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			// Left behind, it is deleted at the next Open; only space is lost.
			return fmt.Errorf("remove acknowledged segment: %w", err)
		}
	}
	return nil
}

// SetBeforeDelete makes Ack call fn before it deletes acknowledged
// segments; if fn fails they are kept for a later Ack. The recorder uses
// it to make its Merkle tree state durable for every event it is about to
// lose from the spool. fn runs without the spool's lock held.
func (s *Spool) SetBeforeDelete(fn func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeDelete = fn
}

// wouldDelete reports whether deletableLocked would delete a segment.
func (s *Spool) wouldDelete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.segs) > 1 && s.segs[0].end() <= s.acked && s.segs[0].end() < s.durableNext
}

// SegmentStarts returns the number of the first record of each segment the
// spool holds, oldest first (acknowledged ones included until deleted).
func (s *Spool) SegmentStarts() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint64, 0, len(s.segs))
	for _, g := range s.segs {
		if g.count > 0 {
			out = append(out, g.first)
		}
	}
	return out
}

// Scan calls fn with every durable record from number from on, in order,
// acknowledged ones included, until fn returns false or an error stops it.
// The recorder rebuilds its Merkle tree from it after a crash.
func (s *Spool) Scan(from uint64, fn func(Record) bool) error {
	s.mu.Lock()
	segs := make([]segment, len(s.segs))
	for i, g := range s.segs {
		segs[i] = *g
	}
	end := s.durableNext
	s.mu.Unlock()
	r := &Reader{s: s}
	defer r.Close()
	for _, g := range segs {
		for idx := max(from, g.first); idx < g.end() && idx < end; idx++ {
			data, err := r.readAt(g, idx)
			if err != nil {
				return fmt.Errorf("spool scan: %w", err)
			}
			if !fn(Record{Pos: idx, Data: data}) {
				return nil
			}
		}
	}
	return nil
}

// deletableLocked drops fully acknowledged segments from s.segs and returns
// their paths. A segment is kept while no later segment has a durable record.
func (s *Spool) deletableLocked() []string {
	var paths []string
	for len(s.segs) > 1 {
		g := s.segs[0]
		if g.end() > s.acked || g.end() >= s.durableNext {
			break
		}
		paths = append(paths, g.path)
		s.totalBytes -= g.size
		s.segs = s.segs[1:]
		s.exhausted = false
	}
	return paths
}

// The cursor file is 16 bytes written in place: uint64 LE next unacked
// record, uint32 LE CRC32C of those 8 bytes, 4 zero bytes. A small aligned
// write is not torn in practice, and if it were, the CRC makes Open fall back
// to the start of the spool: re-delivery, never loss.
const cursorLen = 16

func (s *Spool) openCursor() (uint64, error) {
	f, err := os.OpenFile(filepath.Join(s.dir, "cursor"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, fmt.Errorf("open spool cursor: %w", err)
	}
	s.cursor = f
	var b [cursorLen]byte
	if n, _ := f.ReadAt(b[:], 0); n < cursorLen {
		return 0, nil
	}
	if crc32.Checksum(b[:8], crcTable) != binary.LittleEndian.Uint32(b[8:12]) {
		return 0, nil
	}
	return binary.LittleEndian.Uint64(b[:8]), nil
}

func (s *Spool) writeCursor(next uint64) error {
	var b [cursorLen]byte
	binary.LittleEndian.PutUint64(b[:8], next)
	binary.LittleEndian.PutUint32(b[8:12], crc32.Checksum(b[:8], crcTable))
	if _, err := s.cursor.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("write spool cursor: %w", err)
	}
	if err := unix.Fdatasync(int(s.cursor.Fd())); err != nil {
		return fmt.Errorf("sync spool cursor: %w", err)
	}
	return nil
}

// LastRecord returns the newest durable record, for the recorder to recover
// its chain head after a restart. ok is false if the spool never held a
// record (or all were removed by hand). It reads the newest non-empty
// segment, so it costs up to one segment of I/O.
func (s *Spool) LastRecord() (rec Record, ok bool, err error) {
	s.mu.Lock()
	if s.durableNext == 0 {
		s.mu.Unlock()
		return Record{}, false, nil
	}
	want := s.durableNext - 1
	var g segment
	found := false
	for i := len(s.segs) - 1; i >= 0; i-- {
		if s.segs[i].first <= want && want < s.segs[i].end() {
			g, found = *s.segs[i], true
			break
		}
	}
	s.mu.Unlock()
	if !found {
		return Record{}, false, nil
	}
	r := &Reader{s: s}
	defer r.Close()
	data, err := r.readAt(g, want)
	if err != nil {
		return Record{}, false, err
	}
	return Record{Pos: want, Data: data}, true, nil
}

// Stats returns a snapshot of the spool's state.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Bytes:    s.totalBytes,
		MaxBytes: s.opts.MaxBytes,
		Segments: len(s.segs),
		Pending:  s.durableNext - s.acked,
		Written:  s.written,
		Corrupt:  s.corrupt.Load(),
		Syncs:    s.syncs.Load(),
	}
}

// Err returns the sticky error that stopped the spool accepting records
// (a failed fsync), or nil.
func (s *Spool) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close makes pending records durable, wakes waiting readers and releases
// the directory. It waits for the syncer to stop.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.closing)
	s.wg.Wait()
	err := s.Err()
	s.closeFiles()
	return err
}

func (s *Spool) closeFiles() {
	closeAll(s.retired)
	s.retired = nil
	if s.active != nil {
		s.active.Close()
	}
	if s.cursor != nil {
		s.cursor.Close()
	}
	if s.lockFile != nil {
		s.lockFile.Close() // releases the flock
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open spool dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync spool dir: %w", err)
	}
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
