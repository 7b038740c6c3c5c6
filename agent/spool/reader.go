package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// errCorrupt marks a durable record that fails its checks.
var errCorrupt = errors.New("corrupt spool record")

// readChunk is how much a Reader reads from a segment at a time.
const readChunk = 256 << 10

// Reader yields durable records in order. A spool has one consumer (the
// publisher); more Readers work but share the one acknowledgement cursor.
// A Reader is not safe for concurrent use.
type Reader struct {
	s    *Spool
	next uint64 // number of the record Next returns

	f      *os.File
	seg    uint64 // first record of the open segment
	idx    uint64 // number of the record at off
	off    int64
	buf    []byte // file bytes [bufOff, bufOff+len(buf))
	bufOff int64
}

// NewReader returns a Reader positioned at the first unacknowledged record.
func (s *Spool) NewReader() *Reader {
	r := &Reader{s: s}
	r.Reset()
	return r
}

// Reset moves the Reader back to the first unacknowledged record, so that
// records delivered but not acknowledged (a failed publish) come again.
func (r *Reader) Reset() {
	r.s.mu.Lock()
	r.next = r.s.acked
	r.s.mu.Unlock()
	r.closeFile()
}

// Next returns the next durable record, waiting for one if needed. It
// returns ctx.Err() when ctx is done and ErrClosed when the spool closes.
// Records that cannot be read back (disk corruption) are skipped and counted
// in Stats().Corrupt; the recorder reports them as lost.
func (r *Reader) Next(ctx context.Context) (Record, error) {
	for {
		g, err := r.wait(ctx)
		if err != nil {
			return Record{}, err
		}
		data, err := r.readAt(g, r.next)
		if errors.Is(err, errCorrupt) {
			r.skipCorrupt(g)
			continue
		}
		if err != nil {
			return Record{}, err
		}
		rec := Record{Pos: r.next, Data: data}
		r.next++
		return rec, nil
	}
}

// wait blocks until record r.next is durable and returns its segment.
func (r *Reader) wait(ctx context.Context) (segment, error) {
	s := r.s
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return segment{}, ErrClosed
		}
		if first := s.segs[0].first; r.next < first {
			// Its segment was deleted (acknowledged through another
			// Reader); nothing before first is owed to anyone.
			r.next = first
		}
		if r.next < s.durableNext {
			for i := len(s.segs) - 1; i >= 0; i-- {
				if g := s.segs[i]; g.first <= r.next {
					cp := *g
					s.mu.Unlock()
					return cp, nil
				}
			}
		}
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return segment{}, ctx.Err()
		case <-s.closing:
			return segment{}, ErrClosed
		}
	}
}

// skipCorrupt gives up on the rest of segment g after a corrupt record: the
// record boundaries after it are unknown. If g is still being written, it is
// closed for writing so that later records land in a readable segment.
func (r *Reader) skipCorrupt(g segment) {
	s := r.s
	s.mu.Lock()
	end := g.end()
	for _, cur := range s.segs {
		if cur.first == g.first {
			end = cur.end() // includes records written since g was copied
		}
	}
	if last := s.segs[len(s.segs)-1]; last.first == g.first {
		s.forceRotate = true
		end = s.nextIndex
	}
	s.mu.Unlock()
	if end > r.next {
		s.corrupt.Add(end - r.next)
	}
	r.next = end
	r.closeFile()
}

// readAt returns record number want, which lies in segment g and is durable.
func (r *Reader) readAt(g segment, want uint64) ([]byte, error) {
	if r.f == nil || r.seg != g.first || want < r.idx {
		r.closeFile()
		f, err := os.Open(g.path)
		if err != nil {
			return nil, fmt.Errorf("open segment: %w", err)
		}
		r.f, r.seg, r.idx, r.off = f, g.first, g.first, int64(len(magic))
	}
	for {
		hdr, err := r.bytes(r.off, hdrLen, g.durableSize)
		if err != nil {
			return nil, fmt.Errorf("record %d in %s: %w", r.idx, g.path, err)
		}
		n := int64(binary.LittleEndian.Uint32(hdr[0:4]))
		sum := binary.LittleEndian.Uint32(hdr[4:8])
		if n > MaxRecordBytes {
			return nil, fmt.Errorf("record %d in %s: %w: length %d", r.idx, g.path, errCorrupt, n)
		}
		if r.idx < want {
			// Skipping to the wanted record (after Reset or Open): headers
			// only. A bad length here shows up as a short read below.
			r.off += hdrLen + n
			r.idx++
			continue
		}
		p, err := r.bytes(r.off+hdrLen, n, g.durableSize)
		if err != nil {
			return nil, fmt.Errorf("record %d in %s: %w", r.idx, g.path, err)
		}
		if crc32.Checksum(p, crcTable) != sum {
			return nil, fmt.Errorf("record %d in %s: %w: checksum mismatch", r.idx, g.path, errCorrupt)
		}
		out := make([]byte, n)
		copy(out, p)
		r.off += hdrLen + n
		r.idx++
		return out, nil
	}
}

// bytes returns n file bytes at off, never reading at or past limit (the
// durable size: bytes beyond it may still be being written).
func (r *Reader) bytes(off, n, limit int64) ([]byte, error) {
	if off+n > limit {
		return nil, fmt.Errorf("%w: needs bytes up to %d, durable size %d", errCorrupt, off+n, limit)
	}
	if off >= r.bufOff && off+n <= r.bufOff+int64(len(r.buf)) {
		return r.buf[off-r.bufOff : off-r.bufOff+n], nil
	}
	size := min(max(n, readChunk), limit-off)
	if int64(cap(r.buf)) < size {
		r.buf = make([]byte, size)
	}
	r.buf = r.buf[:size]
	m, err := r.f.ReadAt(r.buf, off)
	r.buf, r.bufOff = r.buf[:m], off
	if int64(m) < n {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("%w: short read", errCorrupt)
		}
		return nil, err
	}
	return r.buf[:n], nil
}

func (r *Reader) closeFile() {
	if r.f != nil {
		r.f.Close()
	}
	r.f, r.buf, r.bufOff = nil, r.buf[:0], 0
}

// Close releases the Reader's file.
func (r *Reader) Close() { r.closeFile() }
