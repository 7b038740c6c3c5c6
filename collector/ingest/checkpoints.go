package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
)

// checkpoint verifies one checkpoint message and returns its row and what
// it revealed. dup is true for a checkpoint already processed (a
// redelivery, or the agent signing the same head twice).
func (in *Ingester) checkpoint(ctx context.Context, d decoded) (store.Checkpoint, []treeProblem, []covered, bool, error) {
	cp := d.cp
	row := store.Checkpoint{ID: cp.ID, HostID: cp.Host.ID, Size: cp.Size, Time: cp.Time, StreamSeq: d.streamSeq, Raw: d.msg.Data()}
	row.Root, _ = base64.StdEncoding.DecodeString(cp.Root)
	pub, ok := in.cfg.Keys.PublicKey(cp.Host.ID)
	if !ok {
		p := treeProblem{Problem: event.Problem{Kind: event.UnknownKey, Detail: fmt.Sprintf("checkpoint %s: no public key for host %q", cp.ID, cp.Host.ID)},
			HostID: cp.Host.ID, CheckpointID: cp.ID, To: cp.Size}
		row.Integrity = []string{string(p.Kind)}
		return row, []treeProblem{p}, nil, false, nil
	}
	if want := cp.Subject(); d.subject != want {
		p := treeProblem{Problem: event.Problem{Kind: SubjectMismatch, Detail: fmt.Sprintf("checkpoint of host %s published on %s, want %s", cp.Host.ID, d.subject, want)},
			HostID: cp.Host.ID, CheckpointID: cp.ID, To: cp.Size}
		row.Integrity = []string{string(p.Kind)}
		return row, []treeProblem{p}, nil, false, nil
	}
	if in.cfg.ChainCheck != ChainFull {
		// A share of the stream: only what the checkpoint shows alone.
		if _, err := cp.Verify(pub); err != nil {
			p := treeProblem{Problem: event.Problem{Kind: event.CheckpointBadSignature, Detail: fmt.Sprintf("checkpoint %s for host %q: %v", cp.ID, cp.Host.ID, err)},
				HostID: cp.Host.ID, CheckpointID: cp.ID, To: cp.Size}
			row.Integrity = []string{string(p.Kind)}
			return row, []treeProblem{p}, nil, false, nil
		}
		row.Accepted = true
		return row, nil, nil, false, nil
	}
	probs, covs, accepted, dup, err := in.trees.checkpoint(ctx, cp, pub, d.msgTime)
	if err != nil || dup {
		return row, nil, nil, dup, err
	}
	row.Accepted = accepted
	for _, p := range probs {
		if p.CheckpointID == cp.ID {
			row.Integrity = append(row.Integrity, string(p.Kind))
		}
	}
	for _, c := range covs {
		if c.id == cp.ID {
			row.Covered, row.Frontier = true, c.frontier
		}
	}
	return row, probs, covs, false, nil
}

// batchOf is what one batch writes: its events, its checkpoints, the
// coverage found for earlier checkpoints (those of this batch carry their
// own), and the marks on events that a checkpoint does not cover, applied
// after the batch's events are in so that they reach them.
func batchOf(recs []store.Record, cps []store.Checkpoint, covs []covered, notCovered []treeProblem) store.Batch {
	b := store.Batch{Events: recs, Checkpoints: cps}
	inBatch := map[string]bool{}
	for _, c := range cps {
		inBatch[c.ID] = c.Covered
	}
	for _, c := range covs {
		if !inBatch[c.id] {
			b.Covered = append(b.Covered, store.Covered{ID: c.id, Frontier: c.frontier})
		}
	}
	for _, p := range notCovered {
		b.Marks = append(b.Marks, store.Mark{HostID: p.HostID, From: p.From, To: p.To, Kind: string(p.Kind)})
	}
	return b
}

// checkLate raises checkpoint_late for hosts whose events stayed
// uncovered too long. wall is the collector's time, idle says that no
// message is waiting to be stored.
func (in *Ingester) checkLate(ctx context.Context, wall time.Time, idle bool) error {
	if in.cfg.ChainCheck != ChainFull {
		return nil
	}
	ps := in.trees.overdue(in.clock.now(wall, idle))
	if len(ps) == 0 {
		return nil
	}
	recs := make([]store.Record, 0, len(ps))
	for _, p := range ps {
		recs = append(recs, in.treeViolation(p, nil, nil))
		in.log.Warn().Str("host_id", p.HostID).Str("problem", string(p.Kind)).Str("detail", p.Detail).Msg("integrity violation")
	}
	n, err := in.insert(ctx, recs)
	if err != nil {
		return err
	}
	in.mu.Lock()
	in.stats.Violations += uint64(len(ps))
	in.stats.Stored += uint64(n)
	in.mu.Unlock()
	if in.cfg.OnStored != nil && n > 0 {
		in.cfg.OnStored()
	}
	return nil
}

// treeViolation builds the integrity.violation record of a tree problem,
// raised by message d (nil for a late check) about event e or a
// checkpoint. Its id is derived from what it reports, so a redelivery
// yields the same id.
func (in *Ingester) treeViolation(p treeProblem, d *decoded, e *event.Event) store.Record {
	data := map[string]any{
		"problem":   string(p.Kind),
		"detail":    p.Detail,
		"event_id":  p.CheckpointID,
		"host_id":   p.HostID,
		"seq":       p.To,
		"collector": in.cfg.Name,
	}
	if p.From != 0 || p.To != 0 {
		data["from_seq"], data["to_seq"] = p.From, p.To
	}
	if p.CheckpointID != "" {
		data["checkpoint_id"] = p.CheckpointID
	}
	when := time.Now()
	key := fmt.Sprintf("%s/%s/%s/%d/%d", p.HostID, p.Kind, p.CheckpointID, p.From, p.To)
	if d != nil {
		data["subject"], data["stream_seq"] = d.subject, d.streamSeq
		when = d.msgTime
		key += fmt.Sprintf("/%s/%d", d.subject, d.streamSeq)
	}
	if e != nil && p.CheckpointID == "" {
		data["event_id"] = e.ID
	}
	v := &event.Event{Schema: event.Schema, Type: event.IntegrityViolation, Time: time.Now().UTC(), Host: event.Host{ID: p.HostID}, Data: data}
	if e != nil {
		v.Host = e.Host
	} else if d != nil && d.cp != nil {
		v.Host = d.cp.Host
	}
	sum := sha256.Sum256([]byte(key))
	var id ulid.ULID
	_ = id.SetTime(ulid.Timestamp(when))
	_ = id.SetEntropy(sum[:10])
	v.ID = id.String()
	raw, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("ingest: encode violation: %v", err)) // we built Data
	}
	var sseq uint64
	if d != nil {
		sseq = d.streamSeq
	}
	return store.Record{Event: v, Raw: raw, StreamSeq: sseq}
}

// streamClock tells the time in the stream's terms. Lateness is measured
// in JetStream timestamps (when a message reached the stream), not by
// when the collector got to it: a collector catching up on a backlog
// reads events and their checkpoints long after they arrived, but the
// agent was no later than the stream shows. Only the main loop uses it.
type streamClock struct {
	// last is the newest stream timestamp stored, at collector time at;
	// caughtUp says the consumer had nothing after that message.
	last, at time.Time
	caughtUp bool
}

// saw records a stored message.
func (c *streamClock) saw(d decoded, now time.Time) {
	if d.msgTime.After(c.last) {
		c.last, c.at = d.msgTime, now
	}
	c.caughtUp = d.pending == 0
}

// now is the stream's present: the newest stored timestamp while messages
// wait, advanced by the time elapsed since once the collector is caught
// up (so that silence counts too). Elapsed time is measured on the
// collector's clock and added to the server's, so clock skew between the
// two does not matter.
func (c *streamClock) now(wall time.Time, idle bool) time.Time {
	switch {
	case c.last.IsZero():
		return wall
	case c.caughtUp && idle:
		return c.last.Add(wall.Sub(c.at))
	}
	return c.last
}
