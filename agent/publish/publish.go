// Package publish drains the agent's spool to NATS JetStream.
//
// Each spooled event is published on "warden.events.<host>.<type>" with the
// Nats-Msg-Id header set to the event id, and removed from the spool only
// after JetStream acknowledged it. Publishes are pipelined (a bounded window
// of unacknowledged messages) and the spool is acknowledged in order. On any
// failure the window is published again from the first unacknowledged
// record: JetStream's duplicate detection (keyed by Nats-Msg-Id) turns the
// re-delivery into exactly-once storage. While NATS is unreachable, events
// wait in the spool (bounded by its MaxBytes) and producers never block.
package publish

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/pkg/event"
)

// Stream names and subjects fixed by the product contract.
const (
	StreamName    = event.StreamName
	StreamSubject = event.StreamSubjects
	subjectPrefix = event.SubjectPrefix
	// InvalidType is the last token of the subject (after the host's)
	// that receives spool records that are not decodable events, so the
	// collector sees (and flags) them instead of the agent dropping them.
	InvalidType = "invalid"
)

// Defaults for Options.
const (
	DefaultWindow          = 256
	DefaultAckTimeout      = 5 * time.Second
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 5 * time.Second
	DefaultDuplicateWindow = 10 * time.Minute
	ackEvery               = 100 * time.Millisecond
)

// Options configure a Publisher.
type Options struct {
	// URL of the NATS server(s), comma separated (agent.yaml nats.url).
	URL string
	// HostID is this agent's host id: events are published on
	// warden.events.<host>.<type>, the only subjects its NATS user may
	// publish to. Required.
	HostID string
	// Name is the NATS connection name; default "wardend".
	Name string
	// NATSOptions are extra connection options: TLS, credentials.
	NATSOptions []nats.Option
	// Window bounds unacknowledged publishes in flight. Default 256.
	Window int
	// AckTimeout is how long a publish waits for JetStream. Default 5s.
	AckTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts after a
	// failure; it doubles per consecutive failure. Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// DuplicateWindow is JetStream's duplicate-detection window, used only
	// when the publisher creates the stream. It must cover the longest
	// re-delivery: records published but not yet acknowledged in the spool
	// when the agent stops. Default 10 minutes.
	DuplicateWindow time.Duration
	// Logger receives connection state and failures.
	Logger zerolog.Logger
}

// Stats are the publisher's counters.
type Stats struct {
	Published  uint64 // events stored by JetStream (duplicates included)
	Duplicates uint64 // of those, ones JetStream already had (re-delivery)
	Errors     uint64 // failed publish attempts (each causes a re-delivery)
	Pending    uint64 // durable spool records not yet acknowledged
	Connected  bool   // connected to a NATS server
}

// Publisher drains a spool to JetStream.
type Publisher struct {
	spool *spool.Spool
	opts  Options
	log   zerolog.Logger
	// hostPrefix is warden.events.<host>.
	hostPrefix string

	published  atomic.Uint64
	duplicates atomic.Uint64
	errors     atomic.Uint64

	mu sync.Mutex
	nc *nats.Conn // set while Run runs
}

// New returns a Publisher for sp. Run starts it.
func New(sp *spool.Spool, opts Options) *Publisher {
	if opts.Name == "" {
		opts.Name = "wardend"
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = DefaultAckTimeout
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.DuplicateWindow <= 0 {
		opts.DuplicateWindow = DefaultDuplicateWindow
	}
	return &Publisher{spool: sp, opts: opts, log: opts.Logger.With().Str("component", "publish").Logger(),
		hostPrefix: subjectPrefix + event.HostToken(opts.HostID) + "."}
}

// Run connects to NATS and publishes spooled events until ctx ends; then it
// closes the connection and returns nil. NATS being unreachable is not an
// error: Run keeps retrying. It returns an error only for a bad
// configuration (URL, options) or when the spool is closed under it.
func (p *Publisher) Run(ctx context.Context) error {
	opts := append([]nats.Option{
		nats.Name(p.opts.Name),
		// Connect even if the server is down now, and never give up: the
		// spool holds events meanwhile.
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(p.opts.MinBackoff),
		// No reconnect buffer: a message buffered while disconnected would
		// be sent after reconnecting, ahead of an earlier one lost with the
		// old connection, and the stream would hold events out of chain
		// order. Publishing fails while disconnected and pump starts over
		// from the spool instead.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(nc *nats.Conn) {
			p.log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("connected to NATS")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			p.log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close
				p.log.Warn().Err(err).Msg("disconnected from NATS; events wait in the spool")
			}
		}),
	}, p.opts.NATSOptions...)
	nc, err := nats.Connect(p.opts.URL, opts...)
	if err != nil {
		return fmt.Errorf("publish: connect to NATS: %w", err)
	}
	p.mu.Lock()
	p.nc = nc
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.nc = nil
		p.mu.Unlock()
		nc.Close()
	}()

	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(p.opts.Window),
		jetstream.WithPublishAsyncTimeout(p.opts.AckTimeout),
	)
	if err != nil {
		return fmt.Errorf("publish: jetstream: %w", err)
	}

	r := p.spool.NewReader()
	defer r.Close()
	backoff := p.opts.MinBackoff
	for {
		before := p.published.Load()
		err := p.ensureStream(ctx, js)
		if err == nil {
			err = p.pump(ctx, nc, js, r)
			// Fail the abandoned window's futures now rather than after
			// AckTimeout, so they do not hold publish slots.
			js.CleanupPublisher()
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, spool.ErrClosed) {
			return fmt.Errorf("publish: %w", err)
		}
		if p.published.Load() != before {
			backoff = p.opts.MinBackoff // it worked for a while
		}
		p.errors.Add(1)
		if errors.Is(err, nats.ErrReconnectBufExceeded) || !nc.IsConnected() {
			// Already reported by the disconnect handler; a line per
			// retry would flood the log during an outage.
			p.log.Debug().Err(err).Dur("retry_in", backoff).Msg("NATS unreachable; retrying")
		} else {
			p.log.Warn().Err(err).Dur("retry_in", backoff).Msg("publishing interrupted; will re-deliver from the spool")
		}
		// Everything not acknowledged comes again; duplicates are dropped
		// by JetStream.
		r.Reset()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, p.opts.MaxBackoff)
	}
}

// ensureStream finds the stream or creates it with file storage.
func (p *Publisher) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.AckTimeout)
	defer cancel()
	_, err := js.Stream(ctx, StreamName)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up stream %s: %w", StreamName, err)
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Warden audit events (warden.event/v2) and checkpoints (warden.checkpoint/v1)",
		Subjects:    []string{StreamSubject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  p.opts.DuplicateWindow,
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w", StreamName, err)
	}
	p.log.Info().Str("stream", StreamName).Msg("created JetStream stream")
	return nil
}

var errReconnected = errors.New("NATS connection was re-established; restarting the publish window")

// inflight is one publish awaiting its ack.
type inflight struct {
	pos uint64
	fut jetstream.PubAckFuture
}

// pump publishes records from r until an error. Acks are consumed in
// publish order, so the spool is only ever acknowledged up to a prefix that
// JetStream has stored.
//
// Messages on one connection reach JetStream in order, and a connection
// that breaks loses a suffix of them. So as long as the window never spans
// two connections, JetStream stores a prefix of what was sent, and
// re-sending from the first unacknowledged record keeps the stream in chain
// order. That is why pump stops as soon as the connection was re-established.
func (p *Publisher) pump(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, r *spool.Reader) error {
	conn := nc.Stats().Reconnects

	// The spool Reader blocks; a goroutine feeds records so that this loop
	// can wait for records and acks at once. It is stopped and waited for
	// before pump returns, so the caller may Reset the Reader.
	rctx, cancel := context.WithCancel(ctx)
	recs := make(chan spool.Record)
	rerr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			rec, err := r.Next(rctx)
			if err != nil {
				rerr <- err
				return
			}
			select {
			case recs <- rec:
			case <-rctx.Done():
				rerr <- rctx.Err()
				return
			}
		}
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	var (
		window    []inflight
		ackedUpto uint64
		unacked   bool // ackedUpto not yet passed to the spool
		tick      = time.NewTicker(ackEvery)
	)
	defer tick.Stop()
	flush := func() error {
		if !unacked {
			return nil
		}
		if err := p.spool.Ack(ackedUpto); err != nil {
			return fmt.Errorf("ack spool: %w", err)
		}
		unacked = false
		return nil
	}
	defer flush() // what JetStream has stored need not come again

	for {
		var (
			in    chan spool.Record
			okCh  <-chan *jetstream.PubAck
			errCh <-chan error
		)
		if len(window) < p.opts.Window {
			in = recs
		}
		if len(window) > 0 {
			okCh, errCh = window[0].fut.Ok(), window[0].fut.Err()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-rerr:
			return fmt.Errorf("read spool: %w", err)
		case rec := <-in:
			if nc.Stats().Reconnects != conn {
				return errReconnected
			}
			fut, err := js.PublishMsgAsync(p.message(rec))
			if err != nil {
				return fmt.Errorf("publish record %d: %w", rec.Pos, err)
			}
			window = append(window, inflight{pos: rec.Pos, fut: fut})
		case ack := <-okCh:
			p.published.Add(1)
			if ack.Duplicate {
				p.duplicates.Add(1)
			}
			ackedUpto, unacked = window[0].pos, true
			window = window[1:]
			// Progress is persisted on the tick, not per ack: a cursor
			// fsync per event would cost more than publishing it. What a
			// crash loses is re-published and dropped as a duplicate.
		case err := <-errCh:
			return fmt.Errorf("publish record %d: %w", window[0].pos, err)
		case <-tick.C:
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// message builds the NATS message for one spooled event.
func (p *Publisher) message(rec spool.Record) *nats.Msg {
	m := nats.NewMsg("")
	m.Data = rec.Data
	var head eventHead
	err := head.scan(rec.Data)
	if err != nil || head.ID == "" || head.Type == "" {
		sum := sha256.Sum256(rec.Data)
		m.Subject = p.hostPrefix + InvalidType
		p.log.Error().Err(err).Uint64("pos", rec.Pos).Msg("spool record is not a decodable event; publishing it on " + m.Subject)
		m.Header.Set(jetstream.MsgIDHeader, "invalid-"+hex.EncodeToString(sum[:]))
		return m
	}
	m.Subject = p.hostPrefix + head.Type
	m.Header.Set(jetstream.MsgIDHeader, head.ID)
	return m
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	connected := p.nc != nil && p.nc.IsConnected()
	p.mu.Unlock()
	return Stats{
		Published:  p.published.Load(),
		Duplicates: p.duplicates.Load(),
		Errors:     p.errors.Load(),
		Pending:    p.spool.Stats().Pending,
		Connected:  connected,
	}
}

var (
	publishedDesc  = prometheus.NewDesc("warden_publish_published_total", "Events stored by JetStream.", nil, nil)
	duplicatesDesc = prometheus.NewDesc("warden_publish_duplicates_total", "Re-delivered events JetStream already had.", nil, nil)
	errorsDesc     = prometheus.NewDesc("warden_publish_errors_total", "Failed publish attempts.", nil, nil)
	pendingDesc    = prometheus.NewDesc("warden_publish_pending", "Spooled events not yet stored by JetStream.", nil, nil)
	connectedDesc  = prometheus.NewDesc("warden_publish_connected", "1 when connected to NATS.", nil, nil)
)

// Describe implements prometheus.Collector.
func (p *Publisher) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{publishedDesc, duplicatesDesc, errorsDesc, pendingDesc, connectedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (p *Publisher) Collect(ch chan<- prometheus.Metric) {
	st := p.Stats()
	conn := 0.0
	if st.Connected {
		conn = 1
	}
	ch <- prometheus.MustNewConstMetric(publishedDesc, prometheus.CounterValue, float64(st.Published))
	ch <- prometheus.MustNewConstMetric(duplicatesDesc, prometheus.CounterValue, float64(st.Duplicates))
	ch <- prometheus.MustNewConstMetric(errorsDesc, prometheus.CounterValue, float64(st.Errors))
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(connectedDesc, prometheus.GaugeValue, conn)
}
