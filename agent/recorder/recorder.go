// Package recorder is the one place the agent emits events. It stamps each
// event (schema, ULID, time, host), links it into the host's hash chain and
// Merkle log and stores it in the spool, from where the publisher ships it.
//
// Every CheckpointInterval (when events were sealed since the last one),
// every CheckpointEvents events and at Close, the recorder signs the tree
// head with the agent's key as a C2SP checkpoint and stores it in the spool
// behind the events it covers, so it is published in order with them. The
// tree survives restarts in a state file beside the spool (tree.go).
//
// Nothing is dropped silently: an event that cannot be stored is counted by
// source and reason, and as soon as the spool accepts records again the
// recorder emits one agent.loss event per (source, reason) with the count.
// Emit also returns the failure to its caller, so a producer that can still
// refuse what it is about to do (the proxy, before it forwards a request)
// does not do it unrecorded.
//
// When the spool passes 80% of its bound the recorder emits an
// agent.spool_pressure event, once per crossing.
package recorder

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"

	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/pkg/event"
)

// Loss sources and reasons used by the recorder itself. Other components
// report their own through Lost.
const (
	SourceRecorder = "recorder"
	SourceSpool    = "spool"

	ReasonSpoolFull  = "spool_full"  // the spool was at MaxBytes
	ReasonSpoolError = "spool_error" // a write or fsync failed
	ReasonTooLarge   = "too_large"   // the encoded event exceeds spool.MaxRecordBytes
	ReasonEncode     = "encode"      // the event could not be encoded (e.g. NaN in data)
	ReasonClosed     = "closed"      // emitted after Close
	ReasonTornWrite  = "torn_write"  // a record cut off by a crash, found at start
	ReasonCorrupt    = "corrupt"     // durable records unreadable from disk
)

// retryInterval is how often pending loss reports are retried when nothing
// else is emitted.
const retryInterval = time.Second

// Spool pressure thresholds, in percent of the spool's MaxBytes. An
// agent.spool_pressure event is emitted when the spool reaches
// PressurePercent, and again only after it fell below RelievedPercent: a
// spool hovering at the threshold does not flood the trail.
const (
	PressurePercent = 80
	RelievedPercent = 70
)

// Errors Emit returns besides the spool's own (spool.ErrFull,
// spool.ErrTooLarge and write or sync failures), so callers can tell the
// causes apart with errors.Is.
var (
	// ErrClosed means the recorder was closed: the agent is stopping.
	ErrClosed = errors.New("recorder closed")
	// ErrEncode means the event cannot be encoded, e.g. a NaN in its data.
	ErrEncode = errors.New("event cannot be encoded")
)

// Options configure a Recorder.
type Options struct {
	// Host is stamped on every event; Host.ID names the chain and is the
	// origin of its checkpoints.
	Host event.Host
	// Key signs the checkpoints.
	Key ed25519.PrivateKey
	// CheckpointInterval is how often a checkpoint is signed when events
	// were sealed since the last one (agent.yaml checkpoint_interval);
	// default event.DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// CheckpointEvents is the most events sealed between two checkpoints;
	// default event.DefaultCheckpointEvents.
	CheckpointEvents int
	// TreePath is the Merkle tree state file; default TreeFileName in the
	// spool's directory.
	TreePath string
	// Spool stores sealed events. The recorder must be its only writer.
	Spool *spool.Spool
	// Logger receives loss and failure reports. Events are never logged:
	// they may carry statements and arguments with secrets in them.
	Logger zerolog.Logger
}

// LossKey names a kind of loss.
type LossKey struct {
	Source string
	Reason string
}

// loss accumulates unreported losses of one kind.
type loss struct {
	count       uint64
	first, last time.Time
	types       map[event.Type]uint64
}

// Recorder stamps, seals and spools events. It is safe for concurrent use.
type Recorder struct {
	host    event.Host
	spool   *spool.Spool
	log     zerolog.Logger
	entropy io.Reader // monotonic ULID entropy; used under mu

	noteSigner note.Signer
	interval   time.Duration
	every      uint64

	// mu orders sealing and spooling: seq order in the spool is chain order,
	// and a failed append never consumes a seq.
	mu       sync.Mutex
	lastSeq  uint64
	lastHash string
	// wire is the sealed event's buffer, reused: the spool copies what it
	// stores before Enqueue returns.
	wire []byte
	// tree is the Merkle log of the chain, marked at the last stored
	// checkpoint; treeFile persists it.
	tree     *event.MerkleLog
	treeFile *treeFile
	// checkpoints counts checkpoints stored since New.
	checkpoints uint64
	pending     map[LossKey]*loss // counted, not yet reported in an agent.loss
	corrupt     uint64            // spool corrupt count already taken into pending
	closed      bool
	// pressured is set once an agent.spool_pressure event is stored for
	// the current crossing, and cleared when the spool falls below
	// RelievedPercent.
	pressured bool

	emitted atomic.Uint64
	lossMu  sync.Mutex
	total   map[LossKey]uint64 // cumulative, for metrics

	stop chan struct{}
	wg   sync.WaitGroup
}

// New returns a Recorder that continues the chain found in the spool (its
// newest record), so seq and prev_hash carry on across restarts and crashes.
// It starts a goroutine that retries loss reports; Close stops it.
func New(opts Options) (*Recorder, error) {
	if opts.Spool == nil {
		return nil, errors.New("recorder: no spool")
	}
	if len(opts.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("recorder: no ed25519 signing key")
	}
	if opts.Host.ID == "" {
		return nil, errors.New("recorder: empty host id")
	}
	signer, err := event.NewNoteSigner(opts.Host.ID, opts.Key)
	if err != nil {
		return nil, fmt.Errorf("recorder: host id %q cannot name a checkpoint key: %w", opts.Host.ID, err)
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = event.DefaultCheckpointInterval
	}
	if opts.CheckpointEvents <= 0 {
		opts.CheckpointEvents = event.DefaultCheckpointEvents
	}
	if opts.TreePath == "" {
		opts.TreePath = filepath.Join(opts.Spool.Dir(), TreeFileName)
	}
	r := &Recorder{
		host:       opts.Host,
		spool:      opts.Spool,
		log:        opts.Logger.With().Str("component", "recorder").Logger(),
		entropy:    ulid.Monotonic(rand.Reader, 0),
		noteSigner: signer,
		interval:   opts.CheckpointInterval,
		every:      uint64(opts.CheckpointEvents),
		pending:    make(map[LossKey]*loss),
		total:      make(map[LossKey]uint64),
		stop:       make(chan struct{}),
	}
	if err := r.recoverHead(opts.TreePath); err != nil {
		return nil, err
	}
	if rc := opts.Spool.Recovered(); rc.TornBytes > 0 {
		// A torn record held at least one event (possibly more, if several
		// were unsynced at a power loss); we cannot tell how many.
		r.log.Warn().Int64("bytes", rc.TornBytes).Str("segment", rc.TornSegment).Str("detail", rc.Detail).
			Msg("spool had a torn write at its end; the events in it are lost")
		r.countLoss(LossKey{SourceSpool, ReasonTornWrite}, 1, "", time.Now())
	}
	r.corrupt = opts.Spool.Stats().Corrupt
	opts.Spool.SetBeforeDelete(r.flushTree)
	r.wg.Add(2)
	go r.retryLoop()
	go r.checkpointLoop()
	return r, nil
}

// recordHead is what recovery reads of the spool's newest record: an
// event, or a checkpoint (Size is then the seq it covers).
type recordHead struct {
	Schema string     `json:"schema"`
	Type   event.Type `json:"type"`
	Host   event.Host `json:"host"`
	Seq    uint64     `json:"seq"`
	Hash   string     `json:"hash"`
	Size   uint64     `json:"size"`
}

// recoverHead finds the chain head and the Merkle log from the tree state
// and the spool, so seq, prev_hash and the tree carry on across restarts
// and crashes.
//
// The tree state holds the log up to its last write (a checkpoint, or a
// flush before the spool deleted a segment); every event sealed since is
// still in the spool, which is scanned from the segment where those events
// begin. After a power loss either can be behind: the tree (what
// checkpoints may already have covered) wins if it is ahead; if the spool's
// events do not continue it, the tree cannot be rebuilt and a new chain
// starts, which the collector reports.
func (r *Recorder) recoverHead(treePath string) error {
	st, haveTree, err := readTree(treePath)
	if err != nil {
		r.log.Error().Err(err).Msg("tree state unreadable; starting a new chain")
		st, haveTree = treeState{}, false
	}
	if haveTree && st.host != r.host.ID {
		// The host was renamed: chains are per host id, so a new one
		// starts, and so does its tree.
		r.log.Warn().Str("old_host", st.host).Str("host", r.host.ID).Msg("tree state is another host's; starting a new chain")
		st, haveTree = treeState{}, false
	}
	treeSeq, _ := st.head()
	var extra [][]byte
	var spoolMax, cpMax uint64
	next := treeSeq + 1
	gap := false
	err = r.scanSpool(treeSeq, func(h recordHead) error {
		if h.Host.ID != r.host.ID {
			return nil // another host's chain, from before a rename
		}
		if h.Type == event.CheckpointType {
			spoolMax = max(spoolMax, h.Size)
			cpMax = max(cpMax, h.Size)
			return nil
		}
		spoolMax = max(spoolMax, h.Seq)
		switch {
		case h.Seq < next:
		case h.Seq == next && !gap:
			raw, err := hexHash(h.Hash)
			if err != nil {
				return err
			}
			extra = append(extra, raw)
			next++
		default:
			gap = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recorder: read the chain from the spool: %w", err)
	}
	switch {
	case !haveTree && spoolMax == 0:
		// A new chain.
	case !haveTree:
		r.log.Error().Uint64("seq", spoolMax).Msg("no Merkle tree state for the chain in the spool (an agent older than warden.event/v2, or the file was removed); starting a new chain")
		st, extra, cpMax = treeState{host: r.host.ID}, nil, 0
	case gap || len(extra) == 0 && spoolMax > treeSeq:
		r.log.Error().Uint64("spool_seq", spoolMax).Uint64("tree_seq", treeSeq).
			Msg("the spool's events do not continue the Merkle tree state (power loss?); starting a new chain")
		st, extra, cpMax = treeState{host: r.host.ID}, nil, 0
	case spoolMax < treeSeq:
		r.log.Warn().Uint64("spool_seq", spoolMax).Uint64("tree_seq", treeSeq).
			Msg("spool lost events the tree holds (power loss?); continuing the tree")
	}
	st.host = r.host.ID
	st.since = append(st.since, extra...)
	tree, err := st.log()
	if err != nil {
		r.log.Error().Err(err).Msg("tree state inconsistent; starting a new chain")
		st = treeState{host: r.host.ID}
		tree = event.NewMerkleLog()
	} else if cpMax > tree.MarkSize() && cpMax <= tree.Size() {
		// A checkpoint stored before the crash whose state file was not
		// written yet (the writer runs behind the chain): mark the tree
		// there, so the next checkpoint extends it, as it would have.
		if err := tree.MarkAt(cpMax); err != nil {
			return fmt.Errorf("recorder: mark the tree at checkpoint %d: %w", cpMax, err)
		}
	}
	tf, err := openTree(treePath, st, r.interval, r.log)
	if err != nil {
		return fmt.Errorf("recorder: %w", err)
	}
	r.tree, r.treeFile = tree, tf
	r.lastSeq, r.lastHash = st.head()
	if r.lastSeq > 0 {
		r.log.Info().Uint64("seq", r.lastSeq).Uint64("checkpointed", tree.MarkSize()).Int("from_spool", len(extra)).Msg("chain head recovered")
	}
	return nil
}

// scanSpool calls fn with the head of every record from the segment where
// the events after seq afterSeq begin.
func (r *Recorder) scanSpool(afterSeq uint64, fn func(recordHead) error) error {
	starts := r.spool.SegmentStarts()
	if len(starts) == 0 {
		return nil
	}
	headOf := func(rec spool.Record) (recordHead, error) {
		var h recordHead
		if err := json.Unmarshal(rec.Data, &h); err != nil {
			return h, fmt.Errorf("decode spool record %d: %w", rec.Pos, err)
		}
		return h, nil
	}
	from := starts[0]
	for i := len(starts) - 1; i > 0; i-- {
		var first recordHead
		var ferr error
		if err := r.spool.Scan(starts[i], func(rec spool.Record) bool {
			first, ferr = headOf(rec)
			return false
		}); err != nil {
			return err
		}
		if ferr != nil {
			return ferr
		}
		at := first.Seq
		if first.Type == event.CheckpointType {
			at = first.Size + 1
		}
		if at <= afterSeq+1 {
			from = starts[i]
			break
		}
	}
	var ferr error
	err := r.spool.Scan(from, func(rec spool.Record) bool {
		h, err := headOf(rec)
		if err == nil {
			err = fn(h)
		}
		ferr = err
		return err == nil
	})
	if err != nil {
		return err
	}
	return ferr
}

// flushTree makes the hashes of the events sealed since the tree state was
// last written durable in it: the spool calls it before it deletes
// segments, whose events recovery could otherwise no longer read.
func (r *Recorder) flushTree() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.treeFile.flush(); err != nil {
		r.log.Error().Err(err).Msg("tree state flush failed; the spool keeps its segments")
		return err
	}
	return nil
}

func hexHash(h string) ([]byte, error) {
	raw, err := hex.DecodeString(h)
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("event hash %q is not 64 hex digits", h)
	}
	return raw, nil
}

// Emit stamps, seals and spools e. It takes ownership of e: it sets Schema,
// ID (if empty), Time (now, if zero; always UTC), Host and the chain fields,
// and the caller must not modify e afterwards (reading e.ID is fine).
//
// A nil error means the event is written to the spool, in chain order: it
// survives a crash of the agent, and is durable on disk within the spool's
// FlushInterval (EmitSync waits for that). Otherwise the event was not
// stored and is counted as lost (reported later in an agent.loss event);
// the error says why: errors.Is(err, spool.ErrFull) for a full spool,
// which clears once the publisher drains it, spool.ErrTooLarge, ErrEncode,
// ErrClosed, or a write error of the spool's disk.
func (r *Recorder) Emit(e *event.Event) error {
	return r.EmitIn(nil, e)
}

// EmitIn is Emit for an event of a stream whose shared members c encodes
// (see event.Context): the proxy records every statement of a connection
// with the same identity, process and target.
func (r *Recorder) EmitIn(c *event.Context, e *event.Event) error {
	prep, perr := r.prepareIn(c, e)
	r.mu.Lock()
	_, err := r.emitLocked(e, prep, perr)
	r.mu.Unlock()
	return err
}

// EmitSync is Emit, then waits until the event is durable in the spool. It
// returns an error if the event was lost (it is counted either way) or ctx
// ended first (the event is still stored).
func (r *Recorder) EmitSync(ctx context.Context, e *event.Event) error {
	prep, perr := r.prepare(e)
	r.mu.Lock()
	p, err := r.emitLocked(e, prep, perr)
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return p.Wait(ctx)
}

// prepare stamps e (all but its id) and encodes it for sealing. It runs in
// the caller's goroutine, outside the chain lock: encoding is most of the
// cost of an event, and producers (one per proxied connection) do it in
// parallel.
func (r *Recorder) prepare(e *event.Event) (*event.Prepared, error) {
	return r.prepareIn(nil, e)
}

func (r *Recorder) prepareIn(c *event.Context, e *event.Event) (*event.Prepared, error) {
	now := time.Now()
	e.Schema = event.Schema
	if e.Time.IsZero() {
		e.Time = now
	}
	e.Time = e.Time.UTC()
	e.Host = r.host
	return event.PrepareIn(c, e)
}

// emitLocked reports pending losses first (so the agent.loss event precedes
// what follows it), then stores e.
func (r *Recorder) emitLocked(e *event.Event, prep *event.Prepared, perr error) (spool.Pending, error) {
	now := time.Now()
	if r.closed {
		r.countLoss(LossKey{SourceRecorder, ReasonClosed}, 1, e.Type, now)
		return spool.Pending{}, fmt.Errorf("record %s: %w", e.Type, ErrClosed)
	}
	r.takeSpoolCorruption(now)
	r.reportLossesLocked(now)
	key, p, err := r.storeLocked(e, prep, perr)
	if err != nil {
		r.countLoss(key, 1, e.Type, now)
		return spool.Pending{}, fmt.Errorf("record %s: %w", e.Type, err)
	}
	r.emitted.Add(1)
	r.checkPressureLocked(now)
	return p, nil
}

// checkPressureLocked emits an agent.spool_pressure event when the spool
// has passed PressurePercent since the last one, and rearms once it fell
// below RelievedPercent. The spool only grows through the recorder, so
// checking after each stored event sees every crossing; it shrinks when
// the publisher's acks delete segments, which the next check (an emit or
// the retry loop) notices.
func (r *Recorder) checkPressureLocked(now time.Time) {
	st := r.spool.Stats()
	pct := percentOf(st.Bytes, st.MaxBytes)
	switch {
	case pct < RelievedPercent:
		r.pressured = false
	case pct >= PressurePercent && !r.pressured:
		ev := &event.Event{Type: event.AgentSpoolPressure, Time: now,
			Data: event.SpoolPressure{Bytes: st.Bytes, MaxBytes: st.MaxBytes, Percent: pct}.Data()}
		prep, perr := r.prepare(ev)
		if _, _, err := r.storeLocked(ev, prep, perr); err != nil {
			// Retried at the next check while the spool stays above the
			// threshold; if it is full by then, agent.loss tells.
			r.log.Debug().Err(err).Msg("agent.spool_pressure event not stored; will retry")
			return
		}
		r.pressured = true
		r.emitted.Add(1)
		r.log.Warn().Int64("bytes", st.Bytes).Int64("max_bytes", st.MaxBytes).Int64("percent", pct).
			Msg("spool is filling up: events are not reaching NATS; when it is full, events are lost or refused")
	}
}

// percentOf is n as a whole percentage of max, rounded down.
func percentOf(n, max int64) int64 {
	if max <= 0 {
		return 0
	}
	return min(n*100/max, 100)
}

// storeLocked seals and enqueues a prepared event. On failure the chain head
// does not move, so the next event links to the last stored one and a lost
// event shows up as an agent.loss event, never as a broken chain.
func (r *Recorder) storeLocked(e *event.Event, prep *event.Prepared, perr error) (LossKey, spool.Pending, error) {
	if perr != nil {
		r.log.Error().Err(perr).Str("type", string(e.Type)).Msg("event cannot be encoded; counted as lost")
		return LossKey{SourceRecorder, ReasonEncode}, spool.Pending{}, fmt.Errorf("%w: %w", ErrEncode, perr)
	}
	if e.ID == "" {
		// Under the chain lock, so ids rise with seq.
		id, err := ulid.New(ulid.Timestamp(time.Now()), r.entropy)
		if err != nil {
			// Monotonic entropy overflows only after 2^80 IDs in one ms.
			return LossKey{SourceRecorder, ReasonEncode}, spool.Pending{}, fmt.Errorf("%w: new ulid: %w", ErrEncode, err)
		}
		e.ID = id.String()
	}
	r.wire = event.NewSigner(nil, r.lastSeq, r.lastHash).SealPreparedTo(r.wire, e, prep)
	prep.Release()
	p, err := r.spool.Enqueue(r.wire)
	if cap(r.wire) > 64<<10 {
		r.wire = nil // an occasional huge event: do not keep its buffer
	}
	switch {
	case err == nil:
		r.lastSeq, r.lastHash = e.Seq, e.Hash
		r.addLeafLocked(e.Hash)
		return LossKey{}, p, nil
	case errors.Is(err, spool.ErrFull):
		return LossKey{SourceRecorder, ReasonSpoolFull}, spool.Pending{}, err
	case errors.Is(err, spool.ErrTooLarge):
		return LossKey{SourceRecorder, ReasonTooLarge}, spool.Pending{}, err
	default:
		return LossKey{SourceRecorder, ReasonSpoolError}, spool.Pending{}, err
	}
}

// addLeafLocked adds a stored event to the Merkle log, and signs a
// checkpoint when CheckpointEvents are uncovered.
func (r *Recorder) addLeafLocked(hash string) {
	var raw [32]byte
	if n, err := hex.Decode(raw[:], []byte(hash)); err != nil || n != len(raw) {
		panic(fmt.Sprintf("recorder: sealed event hash %q: %v", hash, err)) // SealPrepared writes 64 hex digits
	}
	r.tree.Append(event.Hasher.HashLeaf(raw[:]))
	r.treeFile.add(raw[:])
	if r.tree.Size()-r.tree.MarkSize() >= r.every {
		r.checkpointLocked(time.Now())
	}
}

// checkpointLocked signs the tree head and stores the checkpoint in the
// spool, behind the events it covers. It does nothing when no event was
// sealed since the last one. A checkpoint that cannot be stored (a full
// spool) is retried at the next tick, covering more.
func (r *Recorder) checkpointLocked(now time.Time) {
	size := r.tree.Size()
	if size == r.tree.MarkSize() {
		return
	}
	proof, err := r.tree.Consistency()
	if err != nil {
		r.log.Error().Err(err).Msg("consistency proof")
		return
	}
	head := event.TreeHead{Origin: r.host.ID, Size: size, Root: r.tree.Root()}
	signed, err := event.SignTreeHead(r.noteSigner, head)
	if err != nil {
		r.log.Error().Err(err).Msg("sign checkpoint")
		return
	}
	id, err := ulid.New(ulid.Timestamp(now), r.entropy)
	if err != nil {
		r.log.Error().Err(err).Msg("checkpoint id")
		return
	}
	cp := event.Checkpoint{Schema: event.CheckpointSchema, ID: id.String(), Time: now.UTC(), Type: event.CheckpointType,
		Host: r.host, Size: size, Root: event.EncodeHashes([][]byte{head.Root})[0], PrevSize: r.tree.MarkSize(),
		Consistency: event.EncodeHashes(proof), IntervalMS: r.interval.Milliseconds(), Note: signed}
	b, err := json.Marshal(&cp)
	if err != nil {
		r.log.Error().Err(err).Msg("encode checkpoint")
		return
	}
	if _, err := r.spool.Enqueue(b); err != nil {
		r.log.Debug().Err(err).Uint64("size", size).Msg("checkpoint not stored; will retry")
		return
	}
	if err := r.tree.MarkAt(size); err != nil {
		panic(fmt.Sprintf("recorder: mark tree: %v", err)) // size is the tree's own
	}
	r.checkpoints++
	lastRaw, _ := hexHash(r.lastHash)
	r.treeFile.schedule(treeState{host: r.host.ID, size: size, lastHash: lastRaw, frontier: slices.Clone(r.tree.Frontier())})
}

// checkpointLoop signs a checkpoint every interval when events were
// sealed since the last one.
func (r *Recorder) checkpointLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.mu.Lock()
		if !r.closed {
			r.checkpointLocked(time.Now())
		}
		r.mu.Unlock()
	}
}

// Checkpoints returns how many checkpoints were stored since New, and the
// current tree size.
func (r *Recorder) Checkpoints() (stored uint64, treeSize uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkpoints, r.tree.Size()
}

// Lost records that another component of the agent lost n events (for
// example a BPF ring buffer overflow). They are reported in an agent.loss
// event like the recorder's own losses.
func (r *Recorder) Lost(source, reason string, n uint64) {
	if n == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.countLoss(LossKey{source, reason}, n, "", time.Now())
	if !r.closed {
		r.reportLossesLocked(time.Now())
	}
}

// countLoss is called with mu held.
func (r *Recorder) countLoss(k LossKey, n uint64, t event.Type, now time.Time) {
	l := r.pending[k]
	if l == nil {
		l = &loss{first: now, types: make(map[event.Type]uint64)}
		r.pending[k] = l
		// Log once per unreported run, not per event: a full spool would
		// otherwise flood the log.
		r.log.Error().Str("source", k.Source).Str("reason", k.Reason).Msg("events are being lost; an agent.loss event will report the count")
	}
	l.count += n
	l.last = now
	if t != "" {
		l.types[t] += n
	}
	r.lossMu.Lock()
	r.total[k] += n
	r.lossMu.Unlock()
}

// takeSpoolCorruption moves records the spool found unreadable into pending.
func (r *Recorder) takeSpoolCorruption(now time.Time) {
	if c := r.spool.Stats().Corrupt; c > r.corrupt {
		r.countLoss(LossKey{SourceSpool, ReasonCorrupt}, c-r.corrupt, "", now)
		r.corrupt = c
	}
}

// reportLossesLocked emits one agent.loss event per pending kind, in a
// stable order. A report that cannot be stored stays pending (and is not
// itself counted: it is retried).
func (r *Recorder) reportLossesLocked(now time.Time) {
	if len(r.pending) == 0 {
		return
	}
	keys := make([]LossKey, 0, len(r.pending))
	for k := range r.pending {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Source != keys[j].Source {
			return keys[i].Source < keys[j].Source
		}
		return keys[i].Reason < keys[j].Reason
	})
	for _, k := range keys {
		l := r.pending[k]
		data := event.Loss{Count: l.count, Reason: k.Reason, Source: k.Source, First: l.first, Last: l.last, Types: l.types}.Data()
		ev := &event.Event{Type: event.AgentLoss, Data: data, Time: now}
		prep, perr := r.prepare(ev)
		if _, _, err := r.storeLocked(ev, prep, perr); err != nil {
			return // still failing; keep counting, retry later
		}
		r.emitted.Add(1)
		r.log.Warn().Str("source", k.Source).Str("reason", k.Reason).Uint64("count", l.count).
			Str("event_id", ev.ID).Msg("reported lost events")
		delete(r.pending, k)
	}
}

// retryLoop reports pending losses when the spool has room again even if
// nothing else is being emitted.
func (r *Recorder) retryLoop() {
	defer r.wg.Done()
	t := time.NewTicker(retryInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.mu.Lock()
		if !r.closed {
			now := time.Now()
			r.takeSpoolCorruption(now)
			r.reportLossesLocked(now)
			r.checkPressureLocked(now)
		}
		r.mu.Unlock()
	}
}

// Losses returns the cumulative count of lost events by source and reason,
// reported or not.
func (r *Recorder) Losses() map[LossKey]uint64 {
	r.lossMu.Lock()
	defer r.lossMu.Unlock()
	out := make(map[LossKey]uint64, len(r.total))
	for k, v := range r.total {
		out[k] = v
	}
	return out
}

// PendingLosses returns how many lost events are counted but not yet
// reported in an agent.loss event.
func (r *Recorder) PendingLosses() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n uint64
	for _, l := range r.pending {
		n += l.count
	}
	return n
}

// Head returns the seq and hash of the last stored event.
func (r *Recorder) Head() (seq uint64, hash string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastSeq, r.lastHash
}

// Close makes one last attempt to report pending losses, signs a last
// checkpoint, then stops the recorder's goroutines. Events emitted after
// Close are counted as lost. It does not close the spool.
func (r *Recorder) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.takeSpoolCorruption(time.Now())
	r.reportLossesLocked(time.Now())
	r.checkpointLocked(time.Now())
	r.closed = true
	r.treeFile.close()
	r.mu.Unlock()
	close(r.stop)
	r.wg.Wait()
}

var (
	emittedDesc    = prometheus.NewDesc("warden_events_emitted_total", "Events stored in the spool.", nil, nil)
	lostDesc       = prometheus.NewDesc("warden_events_lost_total", "Events the agent could not record, by source and reason.", []string{"source", "reason"}, nil)
	spoolBytesDesc = prometheus.NewDesc("warden_spool_bytes", "Bytes in the spool's segment files, acknowledged records included until their segment is deleted.", nil, nil)
	spoolMaxDesc   = prometheus.NewDesc("warden_spool_max_bytes", "The spool's bound (spool_max_bytes); at it, events are lost or, with audit_failure: deny, requests refused.", nil, nil)
	spoolRatioDesc = prometheus.NewDesc("warden_spool_used_ratio", "warden_spool_bytes / warden_spool_max_bytes; an agent.spool_pressure event is emitted at 0.8.", nil, nil)
)

// Describe implements prometheus.Collector.
func (r *Recorder) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{emittedDesc, lostDesc, spoolBytesDesc, spoolMaxDesc, spoolRatioDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *Recorder) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(emittedDesc, prometheus.CounterValue, float64(r.emitted.Load()))
	for k, v := range r.Losses() {
		ch <- prometheus.MustNewConstMetric(lostDesc, prometheus.CounterValue, float64(v), k.Source, k.Reason)
	}
	st := r.spool.Stats()
	ch <- prometheus.MustNewConstMetric(spoolBytesDesc, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(spoolMaxDesc, prometheus.GaugeValue, float64(st.MaxBytes))
	ratio := 0.0
	if st.MaxBytes > 0 {
		ratio = float64(st.Bytes) / float64(st.MaxBytes)
	}
	ch <- prometheus.MustNewConstMetric(spoolRatioDesc, prometheus.GaugeValue, ratio)
}
