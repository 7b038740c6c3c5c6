// Package commands is the agent's end of the collector's kill switch: it
// reads the WARDEN_COMMANDS stream through a durable consumer of this host
// and applies each kill and lock through a lifetime.Handler.
//
// The consumer is durable so that a command sent while the agent is away
// (stopped, or its NATS link down) is delivered when it comes back; a
// message is acknowledged only after the Handler applied it, so a crash in
// between means a redelivery, and the Handler's operations are idempotent
// (a kill that matches nothing reports nothing; a lock replaces the
// person's previous one). Commands that expired on the way (a kill older
// than event.KillMaxAge, a lock past its end) are dropped.
//
// The Handler emits the events (session.killed); this package only logs.
package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/lifetime"
	"github.com/wardenhq/warden/pkg/event"
)

// Defaults of Config.
const (
	// DefaultRetry is the pause between attempts to bind the consumer while
	// NATS or the stream is not there.
	DefaultRetry = time.Second
	// DefaultApplyTimeout bounds one Handler call.
	DefaultApplyTimeout = 30 * time.Second
	// ackWait is how long NATS waits for an ack before redelivering; it
	// must exceed the longest Handler call.
	ackWait = 2 * DefaultApplyTimeout
	// rememberIDs bounds the set of applied command ids kept against
	// redelivery.
	rememberIDs = 4096
)

// Config configures a Subscriber.
type Config struct {
	// URL is the agent's NATS URL (agent.yaml nats.url; comma-separated
	// servers allowed).
	URL string
	// HostID is the agent's host id: its consumer and its subject.
	HostID string
	// Handler applies the commands.
	Handler lifetime.Handler
	// NATSOptions are added to the connection's options (credentials, TLS).
	NATSOptions []nats.Option
	// Retry is the pause between attempts to bind; default DefaultRetry.
	Retry time.Duration
	// ApplyTimeout bounds one Handler call; default DefaultApplyTimeout.
	ApplyTimeout time.Duration
	// Now is the clock that decides expiry; nil means time.Now.
	Now    func() time.Time
	Logger zerolog.Logger
}

// Subscriber applies the commands for one host. Run it once.
type Subscriber struct {
	cfg Config
	log zerolog.Logger

	synced     chan struct{}
	syncedOnce sync.Once

	mu      sync.Mutex
	applied map[string]bool // command ids applied, against redelivery
	order   []string        // applied ids, oldest first, for eviction
	stats   Stats
}

// Stats counts what a Subscriber did.
type Stats struct {
	Applied  uint64 // commands applied
	Expired  uint64 // commands dropped because they expired on the way
	Repeated uint64 // redeliveries of commands already applied
	Invalid  uint64 // messages that are not valid commands
	Failed   uint64 // Handler errors (the command is redelivered)
}

// New returns a Subscriber; nothing connects until Run.
func New(cfg Config) (*Subscriber, error) {
	if cfg.Handler == nil {
		return nil, errors.New("commands: no handler")
	}
	if cfg.URL == "" {
		return nil, errors.New("commands: no NATS URL")
	}
	if err := event.ValidCommandHost(cfg.HostID); err != nil {
		return nil, fmt.Errorf("commands: host_id: %w", err)
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = DefaultApplyTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Subscriber{
		cfg:     cfg,
		log:     cfg.Logger.With().Str("component", "commands").Logger(),
		synced:  make(chan struct{}),
		applied: map[string]bool{},
	}, nil
}

// Synced is closed once the commands waiting for this host when Run first
// bound its consumer have been applied. The daemon waits for it (bounded)
// before it accepts logins, so that a lock issued while the agent was away
// refuses the first login after its return. It stays open while NATS is
// unreachable.
func (s *Subscriber) Synced() <-chan struct{} { return s.synced }

// Stats returns the counters.
func (s *Subscriber) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Run connects to NATS, binds this host's durable consumer and applies
// commands until ctx ends; then it returns nil. An unreachable NATS, a
// missing stream or a lost consumer are retried, never returned.
func (s *Subscriber) Run(ctx context.Context) error {
	opts := append([]nats.Option{
		nats.Name("wardend commands " + s.cfg.HostID),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(s.cfg.Retry),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn().Err(err).Msg("disconnected from NATS; commands wait in the stream")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
	}, s.cfg.NATSOptions...)
	nc, err := nats.Connect(s.cfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("commands: connect to NATS at %s: %w", s.cfg.URL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("commands: jetstream: %w", err)
	}
	for {
		err := s.serve(ctx, js)
		if ctx.Err() != nil {
			return nil
		}
		if nc.IsConnected() {
			s.log.Warn().Err(err).Dur("retry_in", s.cfg.Retry).Msg("command consumer stopped; binding again")
		} else {
			s.log.Debug().Err(err).Msg("NATS unreachable; retrying")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.cfg.Retry):
		}
	}
}

// consumerConfig is this host's durable consumer: its own subject and the
// one for every host, from the start of the stream (expired commands are
// dropped here, and a lock still in force must reach a new host too).
func (s *Subscriber) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        event.CommandConsumer(s.cfg.HostID),
		Description:    "wardend on " + s.cfg.HostID + ": kills and locks",
		FilterSubjects: []string{event.CommandSubject(s.cfg.HostID), event.CommandSubjectAll},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        ackWait,
		MaxAckPending:  1, // in stream order: a lock before the kill that follows it
	}
}

// serve binds the consumer, applies the backlog, then consumes until ctx
// ends or the consumer fails.
func (s *Subscriber) serve(ctx context.Context, js jetstream.JetStream) error {
	cons, err := js.CreateOrUpdateConsumer(ctx, event.CommandStreamName, s.consumerConfig())
	if err != nil {
		return fmt.Errorf("bind consumer %s on %s: %w", event.CommandConsumer(s.cfg.HostID), event.CommandStreamName, err)
	}
	// The backlog first, without waiting: when nothing more is pending,
	// the agent is in sync and may accept logins.
	for {
		batch, err := cons.FetchNoWait(64)
		if err != nil {
			return fmt.Errorf("fetch backlog: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			s.apply(ctx, m)
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("fetch backlog: %w", err)
		}
		if n == 0 {
			break
		}
	}
	s.syncedOnce.Do(func() {
		s.log.Info().Msg("commands in sync")
		close(s.synced)
	})

	failed := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) { s.apply(ctx, m) },
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				select {
				case failed <- err:
				default:
				}
				return
			}
			// Missed heartbeats and the like during an outage: Consume
			// recovers by itself once the link is back.
			s.log.Debug().Err(err).Msg("command consumer")
		}))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-failed:
		return err
	}
}

// apply applies one message and acknowledges it, or naks it for a retry
// when the Handler failed.
func (s *Subscriber) apply(ctx context.Context, m jetstream.Msg) {
	c, err := event.DecodeCommand(m.Data())
	if err != nil {
		s.count(func(st *Stats) { st.Invalid++ })
		s.log.Error().Err(err).Str("subject", m.Subject()).Msg("not a command; dropped")
		_ = m.Term()
		return
	}
	log := s.log.With().Str("command", c.ID).Str("kind", string(c.Kind)).Str("by", c.By).Logger()
	if c.Host != "" && c.Host != s.cfg.HostID {
		// Only a misconfigured filter delivers another host's command.
		s.count(func(st *Stats) { st.Invalid++ })
		log.Error().Str("host", c.Host).Msg("command for another host; dropped")
		_ = m.Term()
		return
	}
	if s.seen(c.ID) {
		s.count(func(st *Stats) { st.Repeated++ })
		log.Debug().Msg("command already applied; acknowledged again")
		_ = m.Ack()
		return
	}
	now := s.cfg.Now()
	if c.Expired(now) {
		s.count(func(st *Stats) { st.Expired++ })
		log.Warn().Time("issued", c.Issued).Time("until", c.Until).Msg("command expired before it arrived; not applied")
		_ = m.Ack()
		return
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	switch c.Kind {
	case event.KindLock:
		err = s.cfg.Handler.Lock(actx, c.Sub, c.Until, c.Reason, c.By)
		if err == nil {
			log.Info().Str("sub", c.Sub).Time("until", c.Until).Str("reason", c.Reason).Msg("lock applied")
		}
	case event.KindKill:
		// The lock a kill asked for travels as its own command, ahead of
		// the kill, ending at Issued+Lock. The kill carries what is left of
		// it, so that session.killed names the lock and a kill delivered
		// late does not push the lock's end past the one the collector
		// lists.
		req := lifetime.KillRequest{SessionID: c.SessionID, Sub: c.Sub, Reason: c.Reason, By: c.By}
		if c.Lock > 0 {
			req.Lock = max(c.Issued.Add(time.Duration(c.Lock)).Sub(now), 0)
		}
		var rep lifetime.KillReport
		rep, err = s.cfg.Handler.Kill(actx, req)
		if err == nil {
			log.Info().Str("session", c.SessionID).Str("sub", c.Sub).Strs("sessions", rep.Sessions).
				Ints("processes", rep.Processes).Int("connections", rep.Connections).Msg("kill applied")
		}
	}
	if err != nil {
		s.count(func(st *Stats) { st.Failed++ })
		log.Error().Err(err).Msg("command failed; it will be redelivered")
		_ = m.NakWithDelay(s.cfg.Retry)
		return
	}
	s.remember(c.ID)
	s.count(func(st *Stats) { st.Applied++ })
	if err := m.DoubleAck(ctx); err != nil {
		// Redelivered later and recognised by its id (in this process) or
		// applied again harmlessly (after a restart).
		log.Warn().Err(err).Msg("ack of an applied command lost")
	}
}

func (s *Subscriber) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

func (s *Subscriber) seen(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied[id]
}

func (s *Subscriber) remember(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied[id] = true
	s.order = append(s.order, id)
	if len(s.order) > rememberIDs {
		delete(s.applied, s.order[0])
		s.order = s.order[1:]
	}
}
