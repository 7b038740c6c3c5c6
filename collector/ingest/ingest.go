// Package ingest consumes Warden events and checkpoints from JetStream,
// verifies their hash chains, the agents' signed checkpoints over their
// Merkle logs (and the signatures of v1 events), and stores them. Nothing
// that arrives on the stream is dropped: an event that fails verification
// is stored with its problems marked, and every problem (including
// messages that are not events at all) becomes an integrity.violation
// event of its own.
package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/event"
)

// Problem kinds the collector raises besides the verifier's.
const (
	// Malformed: the message is not a decodable event (warden.event/v2 or v1).
	Malformed event.ProblemKind = "malformed"
	// SubjectMismatch: the event was published on another type's subject.
	SubjectMismatch event.ProblemKind = "subject_mismatch"
	// DuplicateID: an event id already stored arrived again in a new
	// message (not a redelivery) and the chain check did not catch it.
	DuplicateID event.ProblemKind = "duplicate_id"
)

// ChainCheck selects how much of the verification the collector does.
type ChainCheck string

const (
	// ChainFull checks signatures, hashes and per-host chain order. It
	// needs to see every event of a host, in order.
	ChainFull ChainCheck = "full"
	// ChainSignature checks signatures and hashes only. Use it when
	// several collectors share one durable consumer: each sees only part of
	// every host's chain, so gaps would be reported that are not there.
	ChainSignature ChainCheck = "signature"
)

// ParseChainCheck reads a --chain-check value.
func ParseChainCheck(s string) (ChainCheck, error) {
	switch c := ChainCheck(s); c {
	case ChainFull, ChainSignature:
		return c, nil
	}
	return "", fmt.Errorf("chain check %q: want %q or %q", s, ChainFull, ChainSignature)
}

// maxRawInViolation bounds how much of an offending message a violation
// carries when the message cannot be stored as an event row of its own.
const maxRawInViolation = 64 * 1024

// Config configures an Ingester.
type Config struct {
	Stream jetstream.Stream
	// Consumer is the durable consumer name; collectors sharing it split
	// the stream between them.
	Consumer string
	// FilterSubject restricts the consumer, for sharding by subject; ""
	// consumes the whole stream.
	FilterSubject string
	Store         *store.Store
	Keys          event.KeyRing
	ChainCheck    ChainCheck
	// BatchSize is the most messages decoded at a time (default 500).
	// Batches decoded while the store was busy with the last transaction
	// go into one, of fewer than twice BatchSize events.
	BatchSize int
	// Name identifies this collector in the violations it raises.
	Name   string
	Logger zerolog.Logger
	// OnStored is called after each committed batch (wakes API followers).
	OnStored func()
	// ReorderWait is how long an event ahead of a gap in its host's chain
	// waits for the missing ones (ChainFull); default DefaultReorderWait.
	ReorderWait time.Duration
}

// Ingester moves events from a durable pull consumer into the store.
type Ingester struct {
	cfg      Config
	verifier *event.Verifier
	log      zerolog.Logger

	// trees checks checkpoints against the stored events (ChainFull only).
	trees *trees
	// clock measures checkpoint lateness (main loop only).
	clock streamClock

	mu    sync.Mutex
	stats collectorclient.IngestStats
}

// New returns an Ingester whose verifier resumes from the chain heads in the
// store, so that a restart does not report a gap at every host.
func New(ctx context.Context, cfg Config) (*Ingester, error) {
	if cfg.Stream == nil || cfg.Store == nil || cfg.Keys == nil {
		return nil, errors.New("ingest: stream, store and keys are required")
	}
	if cfg.Consumer == "" {
		return nil, errors.New("ingest: consumer name is empty")
	}
	if cfg.ChainCheck == "" {
		cfg.ChainCheck = ChainFull
	}
	if cfg.ReorderWait <= 0 {
		cfg.ReorderWait = DefaultReorderWait
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	v := event.NewVerifier(cfg.Keys)
	heads, err := cfg.Store.ChainHeads(ctx)
	if err != nil {
		return nil, fmt.Errorf("ingest: resume verifier: %w", err)
	}
	for _, h := range heads {
		v.Resume(h.HostID, h.Seq, h.Hash)
	}
	log := cfg.Logger.With().Str("component", "ingest").Str("consumer", cfg.Consumer).Logger()
	log.Info().Int("hosts", len(heads)).Str("chain_check", string(cfg.ChainCheck)).Msg("verifier resumed from store")
	in := &Ingester{cfg: cfg, verifier: v, log: log, trees: newTrees(cfg.Store)}
	in.stats.Consumer = cfg.Consumer
	in.stats.ChainCheck = string(cfg.ChainCheck)
	return in, nil
}

// Stats returns the counters since start.
func (in *Ingester) Stats() collectorclient.IngestStats {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stats
}

// Run consumes until ctx is cancelled. Messages fetched but not yet stored
// when it stops are nak'ed, so they are redelivered promptly and in order.
func (in *Ingester) Run(ctx context.Context) error {
	cons, err := in.cfg.Stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       in.cfg.Consumer,
		Description:   "warden-collector: verify and store events",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 20000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: in.cfg.FilterSubject,
	})
	if err != nil {
		return fmt.Errorf("ingest: create consumer %s: %w", in.cfg.Consumer, err)
	}

	msgs := make(chan jetstream.Msg, in.cfg.BatchSize)
	stopping := make(chan struct{})
	// The handler runs on the library's delivery goroutine, one message at a
	// time and in stream order; it only hands messages over.
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case <-stopping:
			_ = m.Nak()
			return
		default:
		}
		select {
		case msgs <- m:
		case <-stopping:
			_ = m.Nak()
		}
	},
		jetstream.PullMaxMessages(in.cfg.BatchSize),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			in.log.Warn().Err(err).Msg("consume")
		}))
	if err != nil {
		return fmt.Errorf("ingest: consume %s: %w", in.cfg.Consumer, err)
	}
	defer func() {
		close(stopping)
		cc.Drain()
		<-cc.Closed()
		for {
			select {
			case m := <-msgs:
				_ = m.Nak()
			default:
				return
			}
		}
	}()

	// Decoding runs a stage ahead: while one transaction commits, the
	// next messages are decoded and hash-checked on every core. The
	// decoder's read-ahead is bounded by the channel.
	ready := make(chan []decoded, decodeAhead)
	decCtx, stopDecoding := context.WithCancel(ctx)
	decDone := make(chan struct{})
	go func() {
		defer close(decDone)
		in.decodeLoop(decCtx, msgs, ready)
	}()
	// Decoded but never stored: nak'ed, so they come again promptly and
	// in order. (Deferred after the consumer's drain, so it runs first.)
	defer func() {
		stopDecoding()
		<-decDone
		for {
			select {
			case ds := <-ready:
				for _, d := range ds {
					_ = d.msg.Nak()
				}
			default:
				return
			}
		}
	}()

	var reorder *reorderer
	if in.cfg.ChainCheck == ChainFull {
		reorder = &reorderer{wait: in.cfg.ReorderWait, held: map[string][]heldMsg{}, head: func(host string) (uint64, bool) {
			seq, _, ok := in.verifier.Head(host)
			return seq, ok
		}}
		// Held messages come again, promptly, to whoever consumes next.
		defer func() {
			for _, d := range reorder.all() {
				_ = d.msg.Nak()
			}
		}()
	}
	late := time.NewTicker(lateCheckEvery)
	defer late.Stop()
	fail := func(ds []decoded, err error) error {
		for _, d := range ds {
			_ = d.msg.Nak()
		}
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	for {
		var batch []decoded
		select {
		case <-ctx.Done():
			return nil
		case <-late.C:
			if reorder != nil {
				if exp := reorder.expired(time.Now()); len(exp) > 0 {
					if err := in.store(ctx, exp); err != nil {
						return fail(exp, err)
					}
				}
			}
			if err := in.checkLate(ctx, time.Now(), len(ready) == 0 && len(msgs) == 0); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			continue
		case batch = <-ready:
		}
		// Batches decoded while the last transaction committed go into
		// one transaction: the busier the stream, the larger the commits.
	merge:
		for len(batch) < in.cfg.BatchSize {
			select {
			case more := <-ready:
				batch = append(batch, more...)
			default:
				break merge
			}
		}
		if reorder != nil {
			if batch = reorder.order(batch, time.Now()); len(batch) == 0 {
				continue
			}
		}
		if err := in.store(ctx, batch); err != nil {
			return fail(batch, err)
		}
	}
}

// decodeAhead is how many decoded batches may wait for the store.
const decodeAhead = 2

// decodeLoop takes messages as they arrive, as many as are waiting up to
// BatchSize at a time (a burst is one batch; a lone message waits for
// nothing), decodes and hash-checks them on every core and hands them on
// in stream order.
func (in *Ingester) decodeLoop(ctx context.Context, msgs <-chan jetstream.Msg, ready chan<- []decoded) {
	for {
		var batch []jetstream.Msg
		select {
		case <-ctx.Done():
			return
		case m := <-msgs:
			batch = append(make([]jetstream.Msg, 0, in.cfg.BatchSize), m)
		}
	drain:
		for len(batch) < in.cfg.BatchSize {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		ds := in.decodeAll(batch)
		select {
		case ready <- ds:
		case <-ctx.Done():
			for _, d := range ds {
				_ = d.msg.Nak()
			}
			return
		}
	}
}

// lateCheckEvery is how often the ingester looks for hosts whose events
// stayed uncovered by a checkpoint too long.
const lateCheckEvery = 250 * time.Millisecond

// decoded is one message after parsing.
type decoded struct {
	msg       jetstream.Msg
	subject   string
	streamSeq uint64
	msgTime   time.Time // when the message reached the stream
	pending   uint64    // messages after it the consumer had yet to deliver
	ev        *event.Event
	cp        *event.Checkpoint // a checkpoint message instead of an event
	isCP      bool              // published on a checkpoint subject
	err       error             // decode problem
	auth      []event.Problem   // what Authenticate found
}

// isCheckpointSubject reports whether a subject is a host's checkpoint
// subject: no event type is the single token "checkpoint".
func isCheckpointSubject(subject string) bool {
	return strings.HasSuffix(subject, "."+string(event.CheckpointType))
}

// store verifies a decoded batch in order, stores it in one transaction
// (then its checkpoints), and acks it.
func (in *Ingester) store(ctx context.Context, ds []decoded) error {
	ids := make([]string, 0, len(ds))
	for _, d := range ds {
		if d.err == nil && d.ev != nil {
			ids = append(ids, d.ev.ID)
		}
	}
	known, err := in.cfg.Store.StreamSeqs(ctx, ids)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}

	var recs []store.Record
	var cps []store.Checkpoint
	var covs []covered
	var notCovered []treeProblem
	var received, redelivered, violations uint64
	treeProblems := func(d decoded, e *event.Event, ps []treeProblem, cs []covered) {
		covs = append(covs, cs...)
		for _, p := range ps {
			recs = append(recs, in.treeViolation(p, &d, e))
			violations++
			if p.Kind == event.NotCovered {
				notCovered = append(notCovered, p)
			}
			in.log.Warn().Str("host_id", p.HostID).Str("checkpoint_id", p.CheckpointID).Str("problem", string(p.Kind)).
				Str("detail", p.Detail).Msg("integrity violation")
		}
	}
	now := time.Now()
	for _, d := range ds {
		in.clock.saw(d, now)
		received++
		if d.err != nil {
			kind := Malformed
			if d.isCP {
				kind = event.CheckpointMalformed
			}
			p := event.Problem{Kind: kind, Detail: fmt.Sprintf("subject %s, stream seq %d: %v", d.subject, d.streamSeq, d.err)}
			recs = append(recs, in.violation(d, nil, p, true))
			violations++
			in.log.Warn().Str("subject", d.subject).Uint64("stream_seq", d.streamSeq).Err(d.err).Msg("malformed message")
			continue
		}
		if d.cp != nil {
			row, ps, cs, dup, err := in.checkpoint(ctx, d)
			if err != nil {
				return fmt.Errorf("ingest: checkpoint %s: %w", d.cp.ID, err)
			}
			if dup {
				redelivered++
				continue
			}
			cps = append(cps, row)
			treeProblems(d, nil, ps, cs)
			continue
		}
		e := d.ev
		prevSeq, seen := known[e.ID]
		if seen && prevSeq == d.streamSeq && d.streamSeq != 0 {
			// Same stream message again: our ack was lost. Already stored
			// and verified; only the ack is missing.
			redelivered++
			continue
		}

		seqBefore, hashBefore, _ := in.verifier.Head(e.Host.ID)
		probs := in.chain(e, d.auth)
		seqAfter, hashAfter, _ := in.verifier.Head(e.Host.ID)
		// The chain took the event at its seq (a late one too): it is the
		// leaf at that seq of the host's Merkle log.
		head := seqAfter != seqBefore || hashAfter != hashBefore || hasKind(probs, event.Reorder)
		if head && !seen && e.Schema == event.Schema && in.cfg.ChainCheck == ChainFull {
			ps, cs, err := in.trees.leaf(ctx, e, d.msgTime)
			if err != nil {
				return fmt.Errorf("ingest: %w", err)
			}
			treeProblems(d, e, ps, cs)
		}
		if want := e.Subject(); d.subject != want {
			probs = append(probs, event.Problem{Kind: SubjectMismatch, Detail: fmt.Sprintf("event of type %s published on %s, want %s", e.Type, d.subject, want)})
		}
		if seen && !hasKind(probs, event.Replay) {
			probs = append(probs, event.Problem{Kind: DuplicateID, Detail: fmt.Sprintf("event id %s already stored from stream seq %d, arrived again as stream seq %d", e.ID, prevSeq, d.streamSeq)})
		}
		if !seen {
			known[e.ID] = d.streamSeq
			recs = append(recs, store.Record{Event: e, Raw: d.msg.Data(), Integrity: kinds(probs), ChainHead: head, StreamSeq: d.streamSeq})
		}
		for _, p := range probs {
			// A copy that could not be stored under its own id (the id is
			// taken) travels inside the violation, so nothing is lost.
			recs = append(recs, in.violation(d, e, p, seen))
			violations++
		}
		if len(probs) > 0 {
			in.log.Warn().Str("event_id", e.ID).Str("host_id", e.Host.ID).Uint64("seq", e.Seq).
				Strs("problems", kinds(probs)).Msg("integrity violation")
		}
	}

	stored, err := in.write(ctx, batchOf(recs, cps, covs, notCovered))
	if err != nil {
		return err
	}
	for _, d := range ds {
		if err := d.msg.Ack(); err != nil {
			// Stored already: a redelivery will be recognised and acked.
			in.log.Warn().Err(err).Msg("ack")
		}
	}
	in.mu.Lock()
	in.stats.Received += received
	in.stats.Stored += uint64(stored)
	in.stats.Violations += violations
	in.stats.Redelivered += redelivered
	in.mu.Unlock()
	if in.cfg.OnStored != nil && stored > 0 {
		in.cfg.OnStored()
	}
	return nil
}

// insert retries a failed transaction rather than nak'ing the batch: the
// verifier has already moved past these events, and a redelivery would be
// seen as replays.
func (in *Ingester) insert(ctx context.Context, recs []store.Record) (int, error) {
	return in.write(ctx, store.Batch{Events: recs})
}

// write stores a batch in one transaction, retrying it like insert.
func (in *Ingester) write(ctx context.Context, b store.Batch) (int, error) {
	recs := b.Events
	backoff := 100 * time.Millisecond
	for {
		n, err := in.cfg.Store.Write(ctx, b)
		if err == nil {
			return n, nil
		}
		in.mu.Lock()
		in.stats.LastError = err.Error()
		in.mu.Unlock()
		in.log.Error().Err(err).Int("events", len(recs)).Dur("retry_in", backoff).Msg("store batch")
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("ingest: store batch: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// check runs the verifier, dropping chain-order problems when this
// collector sees only a share of each host's chain.
// decodeAll decodes and authenticates a batch on every CPU: signature and
// hash checks dominate the collector's cost, and they need no chain state.
func (in *Ingester) decodeAll(msgs []jetstream.Msg) []decoded {
	ds := make([]decoded, len(msgs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(msgs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(msgs) {
					return
				}
				m := msgs[i]
				d := decoded{msg: m, subject: m.Subject()}
				if meta, err := m.Metadata(); err == nil {
					d.streamSeq, d.msgTime, d.pending = meta.Sequence.Stream, meta.Timestamp, meta.NumPending
				} else {
					d.msgTime = time.Now()
				}
				if d.isCP = isCheckpointSubject(d.subject); d.isCP {
					d.cp, d.err = event.DecodeCheckpoint(m.Data())
				} else if d.ev, d.err = decode(m.Data()); d.err == nil {
					d.auth = in.verifier.AuthenticateRaw(d.ev, m.Data())
				}
				ds[i] = d
			}
		}()
	}
	wg.Wait()
	return ds
}

// chain places an authenticated event in its host's chain, in arrival
// order, keeping only the problem kinds the configured chain check covers.
func (in *Ingester) chain(e *event.Event, auth []event.Problem) []event.Problem {
	probs := in.verifier.Chain(e, auth)
	if in.cfg.ChainCheck == ChainFull {
		return probs
	}
	out := probs[:0]
	for _, p := range probs {
		switch p.Kind {
		case event.Gap, event.Replay, event.Reorder, event.BrokenLink:
		default:
			out = append(out, p)
		}
	}
	return out
}

// violation builds the integrity.violation record for one problem. Its id
// is derived from the stream message and the problem kind, so a redelivered
// message yields the same id and is stored once.
func (in *Ingester) violation(d decoded, e *event.Event, p event.Problem, includeRaw bool) store.Record {
	data := map[string]any{
		"problem":    string(p.Kind),
		"detail":     p.Detail,
		"event_id":   "",
		"host_id":    "",
		"seq":        uint64(0),
		"subject":    d.subject,
		"stream_seq": d.streamSeq,
		"collector":  in.cfg.Name,
	}
	v := &event.Event{
		Schema: event.Schema,
		Type:   event.IntegrityViolation,
		Time:   time.Now().UTC(),
	}
	if e != nil {
		data["event_id"], data["host_id"], data["seq"] = e.ID, e.Host.ID, e.Seq
		v.Host = e.Host
	}
	if p.Expected != 0 || p.Got != 0 {
		data["expected_seq"], data["got_seq"] = p.Expected, p.Got
	}
	if includeRaw {
		raw := d.msg.Data()
		if len(raw) > maxRawInViolation {
			raw = raw[:maxRawInViolation]
			data["raw_truncated"] = true
		}
		if utf8.Valid(raw) {
			data["raw"] = string(raw)
		} else {
			data["raw_base64"] = raw // encoding/json writes []byte as base64
		}
	}
	v.Data = data
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d/%s/%s", d.subject, d.streamSeq, p.Kind, string(d.msg.Data())))
	var id ulid.ULID
	_ = id.SetTime(ulid.Timestamp(d.msgTime))
	_ = id.SetEntropy(sum[:10])
	v.ID = id.String()
	raw, err := json.Marshal(v)
	if err != nil {
		// Only unencodable Data could cause this, and we built Data.
		panic(fmt.Sprintf("ingest: encode violation: %v", err))
	}
	return store.Record{Event: v, Raw: raw, StreamSeq: d.streamSeq}
}

func hasKind(ps []event.Problem, k event.ProblemKind) bool {
	for _, p := range ps {
		if p.Kind == k {
			return true
		}
	}
	return false
}

func kinds(ps []event.Problem) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p.Kind)
	}
	return out
}
