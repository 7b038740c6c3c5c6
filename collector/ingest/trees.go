package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
)

// lateIntervals is how many checkpoint intervals events may stay uncovered
// before the collector raises checkpoint_late.
const lateIntervals = 3

// maxPending bounds the leaves a host may have waiting behind a gap, and
// maxUncovered the leaves after its last covered checkpoint: past them the
// collector stops checking the host's coverage (and says so once) rather
// than hold unbounded memory for a host that never checkpoints.
const (
	maxPending   = 100_000
	maxUncovered = 1 << 20
)

// hostTree is what the collector knows of one host's Merkle log.
type hostTree struct {
	// log holds the leaves the collector stored, in seq order, marked at
	// the last checkpoint they were found to hash to.
	log *event.MerkleLog
	// pending holds leaves that arrived past a gap, by seq.
	pending map[uint64][]byte
	// broken says why coverage is no longer checked ("" while it is).
	broken string
	// The last accepted checkpoint (signature verified, tree grew).
	cpID   string
	cpSize uint64
	cpRoot []byte
	// waiting are accepted checkpoints larger than log, waiting for their
	// events.
	waiting []waitingCP
	// maxSeq is the highest v2 seq seen; uncoveredSince the (collector)
	// time the oldest event past cpSize arrived, zero if none.
	maxSeq         uint64
	uncoveredSince time.Time
	lateReported   bool
	interval       time.Duration
}

type waitingCP struct {
	id   string
	size uint64
	root []byte
}

// treeProblem is a problem found with a host's tree: of a checkpoint
// (CheckpointID) or of events not covered in time.
type treeProblem struct {
	event.Problem
	HostID       string
	CheckpointID string
	// From and To are the seqs concerned.
	From, To uint64
}

// covered is a checkpoint found to match the stored events, to record.
type covered struct {
	id       string
	frontier [][]byte
}

// trees tracks every host's Merkle log. It is used from the ingester's
// processing loop and its lateness ticker.
type trees struct {
	st *store.Store

	mu    sync.Mutex
	hosts map[string]*hostTree
}

func newTrees(st *store.Store) *trees {
	return &trees{st: st, hosts: make(map[string]*hostTree)}
}

// host returns a host's tree, loading it from the store the first time:
// the last covered checkpoint's compact range, then the stored leaves
// after it.
func (t *trees) host(ctx context.Context, hostID string) (*hostTree, error) {
	if h, ok := t.hosts[hostID]; ok {
		return h, nil
	}
	h := &hostTree{log: event.NewMerkleLog(), pending: map[uint64][]byte{}, interval: event.DefaultCheckpointInterval}
	if cp, err := t.st.LatestCheckpoint(ctx, hostID, false, 0, 0); err == nil {
		h.cpID, h.cpSize, h.cpRoot = cp.ID, cp.Size, cp.Root
		if dc, err := event.DecodeCheckpoint(cp.Raw); err == nil && dc.IntervalMS > 0 {
			h.interval = time.Duration(dc.IntervalMS) * time.Millisecond
		}
	} else if !errors.Is(err, store.ErrNoCheckpoint) {
		return nil, err
	}
	from := uint64(1)
	if cov, err := t.st.LatestCheckpoint(ctx, hostID, true, 0, 0); err == nil {
		l, err := event.ResumeMerkleLog(cov.Size, cov.Frontier, nil)
		if err != nil {
			return nil, fmt.Errorf("host %s: %w", hostID, err)
		}
		h.log, from = l, cov.Size+1
	} else if !errors.Is(err, store.ErrNoCheckpoint) {
		return nil, err
	}
	if h.cpID != "" || from > 1 {
		// Only hosts that ever sent a checkpoint have a tree to resume; a
		// v1 host's events are signed one by one.
		seqs, hashes, err := t.st.Leaves(ctx, hostID, from, 0)
		if err != nil {
			return nil, err
		}
		for i, seq := range seqs {
			if leaf, err := event.LeafHash(hashes[i]); err == nil {
				h.add(seq, leaf)
			}
		}
		h.maxSeq = h.log.Size()
	}
	t.hosts[hostID] = h
	return h, nil
}

// add places one leaf, in seq order, taking those waiting behind it.
func (h *hostTree) add(seq uint64, leaf []byte) {
	n := h.log.Size()
	switch {
	case seq == n+1:
		h.log.Append(leaf)
		for {
			next, ok := h.pending[h.log.Size()+1]
			if !ok {
				break
			}
			delete(h.pending, h.log.Size()+1)
			h.log.Append(next)
		}
	case seq > n+1:
		if len(h.pending) >= maxPending {
			h.broken = fmt.Sprintf("more than %d events wait behind seq %d", maxPending, n+1)
			return
		}
		h.pending[seq] = leaf
	}
	// seq <= n: a replay, already flagged by the chain check; the leaf at
	// that seq stays the first one stored.
}

// leaf records a stored v2 event of a host's chain and checks the
// checkpoints that waited for it.
func (t *trees) leaf(ctx context.Context, e *event.Event, now time.Time) ([]treeProblem, []covered, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.host(ctx, e.Host.ID)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := event.LeafHash(e.Hash)
	if err != nil {
		return nil, nil, nil // a bad hash is flagged by the chain check
	}
	if e.Seq > h.maxSeq {
		h.maxSeq = e.Seq
	}
	if e.Seq > h.cpSize && h.uncoveredSince.IsZero() {
		h.uncoveredSince = now
	}
	if h.broken != "" {
		return nil, nil, nil
	}
	h.add(e.Seq, leaf)
	if uint64(len(h.log.Since())) > maxUncovered {
		h.broken = fmt.Sprintf("more than %d events after the last covered checkpoint", maxUncovered)
		return nil, nil, nil
	}
	probs, covs := h.checkWaiting(e.Host.ID)
	return probs, covs, nil
}

// checkWaiting checks the waiting checkpoints the log has reached.
func (h *hostTree) checkWaiting(hostID string) ([]treeProblem, []covered) {
	var probs []treeProblem
	var covs []covered
	for len(h.waiting) > 0 && h.broken == "" && h.waiting[0].size <= h.log.Size() {
		w := h.waiting[0]
		h.waiting = h.waiting[1:]
		p, c := h.cover(hostID, w)
		probs, covs = append(probs, p...), append(covs, c...)
	}
	return probs, covs
}

// cover compares a checkpoint's root with the root of the stored leaves at
// its size.
func (h *hostTree) cover(hostID string, w waitingCP) ([]treeProblem, []covered) {
	mark := h.log.MarkSize()
	if w.size < mark {
		return nil, nil // older than what is covered; consistency was checked
	}
	root, err := h.log.RootAt(w.size)
	if err != nil {
		return nil, nil
	}
	if !bytes.Equal(root, w.root) {
		h.broken = fmt.Sprintf("stored events diverge from checkpoint %s", w.id)
		return []treeProblem{{
			Problem: event.Problem{Kind: event.NotCovered,
				Detail: fmt.Sprintf("the events stored for seq %d to %d do not hash to the root the agent signed at size %d: an event was forged, swapped or changed", mark+1, w.size, w.size)},
			HostID: hostID, CheckpointID: w.id, From: mark + 1, To: w.size,
		}}, nil
	}
	if err := h.log.MarkAt(w.size); err != nil {
		return nil, nil
	}
	return nil, []covered{{id: w.id, frontier: append([][]byte(nil), h.log.Frontier()...)}}
}

// checkpoint checks one checkpoint message of a host whose key is known:
// its signature, that the tree only grew, and that the stored events hash
// to its root. accepted says whether it became the host's tree head.
func (t *trees) checkpoint(ctx context.Context, cp *event.Checkpoint, pub []byte, now time.Time) (probs []treeProblem, covs []covered, accepted, duplicate bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.host(ctx, cp.Host.ID)
	if err != nil {
		return nil, nil, false, false, err
	}
	prob := func(kind event.ProblemKind, from, to uint64, format string, args ...any) {
		probs = append(probs, treeProblem{Problem: event.Problem{Kind: kind, Detail: fmt.Sprintf(format, args...)},
			HostID: cp.Host.ID, CheckpointID: cp.ID, From: from, To: to})
	}
	head, verr := cp.Verify(pub)
	if verr != nil {
		prob(event.CheckpointBadSignature, 0, cp.Size, "checkpoint %s for host %q: %v", cp.ID, cp.Host.ID, verr)
		return probs, nil, false, false, nil
	}
	if cp.IntervalMS > 0 {
		h.interval = time.Duration(cp.IntervalMS) * time.Millisecond
	}
	switch {
	case h.cpID == "":
	case head.Size < h.cpSize:
		prob(event.TreeTruncated, head.Size+1, h.cpSize, "checkpoint %s is for a tree of %d events, but the host already signed %d (checkpoint %s): its history was truncated", cp.ID, head.Size, h.cpSize, h.cpID)
		return probs, nil, false, false, nil
	case head.Size == h.cpSize:
		if bytes.Equal(head.Root, h.cpRoot) {
			return nil, nil, false, true, nil // the same tree head again
		}
		prob(event.TreeInconsistent, 1, head.Size, "checkpoint %s has another root for size %d than checkpoint %s: the history was rewritten", cp.ID, head.Size, h.cpID)
		h.broken = "the host signed two trees of one size"
	case cp.PrevSize == h.cpSize:
		proof, perr := cp.ConsistencyProof()
		if perr == nil {
			perr = event.VerifyConsistency(h.cpSize, head.Size, proof, h.cpRoot, head.Root)
		}
		if perr != nil {
			prob(event.TreeInconsistent, 1, head.Size, "checkpoint %s (size %d) does not extend checkpoint %s (size %d): %v; the history was rewritten or sequence numbers reused", cp.ID, head.Size, h.cpID, h.cpSize, perr)
			h.broken = "the host's tree forked"
		}
	}
	// Accepted: the host's newest tree head, even after a fork is
	// reported, so that what follows is checked against it.
	h.cpID, h.cpSize, h.cpRoot = cp.ID, head.Size, head.Root
	if h.maxSeq <= head.Size {
		h.uncoveredSince, h.lateReported = time.Time{}, false
	} else {
		h.uncoveredSince = now
	}
	if h.broken == "" {
		h.waiting = append(h.waiting, waitingCP{id: cp.ID, size: head.Size, root: head.Root})
		p, c := h.checkWaiting(cp.Host.ID)
		probs, covs = append(probs, p...), append(covs, c...)
	}
	return probs, covs, true, false, nil
}

// overdue returns, once per run, the hosts whose events stayed uncovered
// for lateIntervals checkpoint intervals.
func (t *trees) overdue(now time.Time) []treeProblem {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []treeProblem
	for id, h := range t.hosts {
		if h.uncoveredSince.IsZero() || h.lateReported || now.Sub(h.uncoveredSince) <= lateIntervals*h.interval {
			continue
		}
		h.lateReported = true
		out = append(out, treeProblem{
			Problem: event.Problem{Kind: event.CheckpointLate,
				Detail: fmt.Sprintf("events %d to %d of host %q have had no covering checkpoint for %s (checkpoint interval %s)",
					h.cpSize+1, h.maxSeq, id, now.Sub(h.uncoveredSince).Round(time.Millisecond), h.interval)},
			HostID: id, From: h.cpSize + 1, To: h.maxSeq,
		})
	}
	return out
}
