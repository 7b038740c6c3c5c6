package recorder

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/pkg/event"
)

// TreeFileName is the name of the Merkle tree state file in the spool
// directory.
const TreeFileName = "tree"

// treeMagic starts a tree state file.
var treeMagic = []byte("WTREE02\n")

// treeFile persists the agent's Merkle log across restarts and crashes.
//
// Layout: magic; uint16 LE length and the host id; uint64 LE size at the
// last checkpoint; the 32-byte hash of the event at that seq (zeros at size
// 0); uint32 LE count and that many 32-byte hashes of the compact range at
// that size; then raw 32-byte event hashes after that size. At each
// checkpoint the file is replaced (write, fsync, rename) by one holding
// only the new header. The replacement runs in the background, off the
// chain lock, since its two fsyncs would stall every producer, and at most
// once per checkpoint interval, since under load checkpoints come every
// 1,000 events, several a second: until it lands, the old file and the
// spool (which still holds every event since the old header, and the
// checkpoints) rebuild the same tree. The hashes of the events sealed since are kept in
// memory, not written one by one: they are in the spool, which the
// recorder reads at start (Recorder.recoverHead), and they are appended to
// the file (and synced) only before the spool deletes a segment, the one
// moment the spool would forget them (spool.SetBeforeDelete). A record torn
// by a crash is cut off when the file is read.
type treeFile struct {
	path string
	// buf holds the raw hashes sealed since the newest state, written or
	// pending. The recorder's mu guards it.
	buf []byte

	// io orders the file's writes and guards f and next.
	io sync.Mutex
	f  *os.File // open for appending
	// next is the newest checkpoint's state while it is not written yet.
	next *treeState
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	log  zerolog.Logger
	// every is the least time between two background writes.
	every time.Duration
}

// treeState is what a tree file holds.
type treeState struct {
	host     string
	size     uint64   // at the last checkpoint
	lastHash []byte   // event hash at seq size, nil at 0
	frontier [][]byte // compact range at size
	since    [][]byte // raw event hashes after size
}

// head is the seq and hex hash of the newest event in the state.
func (st *treeState) head() (uint64, string) {
	n := st.size + uint64(len(st.since))
	switch {
	case len(st.since) > 0:
		return n, hex.EncodeToString(st.since[len(st.since)-1])
	case st.size > 0:
		return n, hex.EncodeToString(st.lastHash)
	}
	return 0, ""
}

// log rebuilds the Merkle log, marked at the last checkpoint.
func (st *treeState) log() (*event.MerkleLog, error) {
	leaves := make([][]byte, len(st.since))
	for i, h := range st.since {
		leaves[i] = event.Hasher.HashLeaf(h)
	}
	return event.ResumeMerkleLog(st.size, st.frontier, leaves)
}

// readTree reads the state at path; ok is false if there is none.
func readTree(path string) (st treeState, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return treeState{}, false, nil
	}
	if err != nil {
		return treeState{}, false, fmt.Errorf("read tree state %s: %w", path, err)
	}
	bad := func(what string) error { return fmt.Errorf("tree state %s: %s", path, what) }
	if !bytes.HasPrefix(b, treeMagic) {
		return treeState{}, false, bad("no WTREE01 header")
	}
	b = b[len(treeMagic):]
	if len(b) < 2 || len(b) < 2+int(binary.LittleEndian.Uint16(b)) {
		return treeState{}, false, bad("host id cut short")
	}
	hl := int(binary.LittleEndian.Uint16(b))
	st.host = string(b[2 : 2+hl])
	b = b[2+hl:]
	if len(b) < 8+32+4 {
		return treeState{}, false, bad("header cut short")
	}
	st.size = binary.LittleEndian.Uint64(b)
	if st.size > 0 {
		st.lastHash = bytes.Clone(b[8:40])
	}
	n := int(binary.LittleEndian.Uint32(b[40:44]))
	b = b[44:]
	if n > 64 || len(b) < 32*n {
		return treeState{}, false, bad("frontier cut short")
	}
	for i := 0; i < n; i++ {
		st.frontier = append(st.frontier, bytes.Clone(b[32*i:32*i+32]))
	}
	b = b[32*n:]
	for len(b) >= 32 {
		st.since = append(st.since, bytes.Clone(b[:32]))
		b = b[32:]
	}
	return st, true, nil
}

// openTree writes st as the whole file (see rewrite), opens it for
// appending and starts the writer of later states.
func openTree(path string, st treeState, every time.Duration, log zerolog.Logger) (*treeFile, error) {
	t := &treeFile{path: path, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), log: log, every: every}
	if err := t.rewrite(st); err != nil {
		return nil, err
	}
	go t.writer()
	return t, nil
}

// schedule makes st, a checkpoint's state, the file's next content. The
// recorder calls it with its mu held: the hashes kept so far are covered
// by st, and the ones sealed from now on follow it.
func (t *treeFile) schedule(st treeState) {
	t.io.Lock()
	t.next = &st
	t.io.Unlock()
	t.buf = t.buf[:0]
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// writer writes scheduled states in the background, then rests for the
// interval. A newer state supersedes one not yet written; one that fails
// stays scheduled, for the next flush or state to retry.
func (t *treeFile) writer() {
	defer close(t.done)
	rest := time.NewTimer(0)
	defer rest.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-t.wake:
		}
		select {
		case <-t.stop:
			return
		case <-rest.C:
		}
		t.io.Lock()
		if err := t.writeNextLocked(); err != nil {
			t.log.Error().Err(err).Msg("tree state not saved; the old state and the spool still hold the tree")
		}
		t.io.Unlock()
		rest.Reset(t.every)
	}
}

// writeNextLocked writes the scheduled state, if any. Called with io held.
func (t *treeFile) writeNextLocked() error {
	if t.next == nil {
		return nil
	}
	if err := t.rewrite(*t.next); err != nil {
		return err
	}
	t.next = nil
	return nil
}

// rewrite replaces the file with st, durably, and reopens it for appends.
// Called with io held, or before the writer runs.
func (t *treeFile) rewrite(st treeState) error {
	var b bytes.Buffer
	b.Write(treeMagic)
	_ = binary.Write(&b, binary.LittleEndian, uint16(len(st.host)))
	b.WriteString(st.host)
	_ = binary.Write(&b, binary.LittleEndian, st.size)
	last := st.lastHash
	if last == nil {
		last = make([]byte, 32)
	}
	b.Write(last)
	_ = binary.Write(&b, binary.LittleEndian, uint32(len(st.frontier)))
	for _, h := range st.frontier {
		b.Write(h)
	}
	for _, h := range st.since {
		b.Write(h)
	}
	dir := filepath.Dir(t.path)
	tmp, err := os.CreateTemp(dir, "."+TreeFileName+".tmp*")
	if err != nil {
		return fmt.Errorf("tree state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	_, err = tmp.Write(b.Bytes())
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		tmp.Close()
		return fmt.Errorf("write tree state: %w", err)
	}
	if err := os.Rename(tmp.Name(), t.path); err != nil {
		tmp.Close()
		return fmt.Errorf("replace tree state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	if t.f != nil {
		t.f.Close()
	}
	// The renamed temporary file is the new state: keep appending to it.
	if _, err := tmp.Seek(0, io.SeekEnd); err != nil {
		tmp.Close()
		t.f = nil
		return fmt.Errorf("tree state: %w", err)
	}
	t.f = tmp
	return nil
}

// add keeps one sealed event's raw hash in memory until flush.
func (t *treeFile) add(h []byte) { t.buf = append(t.buf, h...) }

// flush appends the hashes kept in memory to the file and syncs it,
// after the scheduled state: the hashes follow that state, not the old
// one. The recorder calls it with its mu held.
func (t *treeFile) flush() error {
	t.io.Lock()
	defer t.io.Unlock()
	if err := t.writeNextLocked(); err != nil {
		return err
	}
	if len(t.buf) == 0 {
		return nil
	}
	if t.f == nil {
		return errors.New("tree state file is not open")
	}
	if _, err := t.f.Write(t.buf); err != nil {
		return fmt.Errorf("append to tree state: %w", err)
	}
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("sync tree state: %w", err)
	}
	t.buf = t.buf[:0]
	return nil
}

// close stops the writer, writes a state still scheduled (the last
// checkpoint's, at Close) and closes the file.
func (t *treeFile) close() {
	close(t.stop)
	<-t.done
	t.io.Lock()
	defer t.io.Unlock()
	if err := t.writeNextLocked(); err != nil {
		t.log.Error().Err(err).Msg("tree state not saved at close; the spool still holds the tree")
	}
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}
