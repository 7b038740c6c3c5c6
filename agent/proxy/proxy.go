// Package proxy is the agent's L7 proxy framework. Every connection the
// kernel redirected goes through the same steps:
//
//	accept → attribute → decide → relay or parse → record
//
// Attribution comes from the kernel (original destination, pid, uid,
// session). The decision comes from the daemon's current policy. What
// happens on the wire is up to the target protocol's Codec: the generic one
// relays bytes; protocol codecs parse, enforce and record statements.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
)

// Attributor recovers what the kernel recorded about a redirected
// connection from the client's address as seen on accept().
type Attributor interface {
	TakeConn(client netip.AddrPort) (loader.ConnInfo, error)
}

// Attribution is everything the proxy knows about a connection before it
// speaks to the target.
type Attribution struct {
	Kernel loader.ConnInfo
	Target event.Target
	// Policy is the policy in force when the connection was accepted, and
	// TargetPolicy its entry for Target (credentials included). Codecs take
	// rules and masking from here so one connection sees one policy.
	Policy       *policy.Policy
	TargetPolicy policy.Target
	Identity     *event.Identity // nil when no verified identity stands behind it
	Process      *event.Process
	Decision     event.Decision
	SessionID    string
	// Data is added to the connection's event data, e.g. a
	// lineage_warning when the process's lineage does not back its
	// identity.
	Data map[string]any
}

// Authorizer attributes a connection and decides on it using the daemon's
// current sessions and policy. It must return a deny decision, never an
// error, when it cannot attribute: fail closed.
type Authorizer func(info loader.ConnInfo) Attribution

// Recorder receives the events the proxy produces. Emit returns an error
// when the event was not stored (*recorder.Recorder is one): the proxy
// then refuses what it was about to let through, unless the audit fails
// open.
type Recorder interface {
	Emit(*event.Event) error
}

// Stream is an allowed connection handed to a codec.
type Stream struct {
	Client      net.Conn
	Upstream    net.Conn
	Attribution *Attribution
	// Guard decides the stream's requests under the policy in force when
	// the connection was accepted.
	Guard *guard.Guard
	// Audit records the stream's requests and their results.
	Audit *Audit
	Log   zerolog.Logger

	lifeMu  sync.Mutex
	closeFn func(ctx context.Context, reason string) // see OnClose
}

// Codec speaks one target protocol. Each codec lives in its own package
// under agent/proxy/ and is registered in agent/proxy/codecs.
type Codec interface {
	// Enforces lists what the codec enforces. Policy validation rejects
	// any rule, mask or credential on the protocol's targets that needs
	// something else, so nothing in a policy goes silently unenforced.
	Enforces() []policy.Capability
	// Refuse tells the client why it cannot proceed (att.Decision.Reason),
	// in the protocol's own terms where the protocol has an error message,
	// then returns. The target is never contacted.
	Refuse(ctx context.Context, client net.Conn, att *Attribution) error
	// Serve carries an allowed connection until one side closes it.
	Serve(ctx context.Context, s *Stream) error
}

// Metrics counts what the proxy does. Any field may be nil.
type Metrics interface {
	Accepted(target string)
	Refused(target, reason string)
	Unattributed()
}

// Options configure a Proxy.
type Options struct {
	Listeners  []net.Listener
	Attributor Attributor
	Authorize  Authorizer
	// Codecs picks each stream's codec by its target's protocol.
	Codecs *Registry
	// Reviews decides requests that review rules hold; nil refuses them.
	Reviews  Reviews
	Recorder Recorder
	// AuditFailure says what happens to a connection or request that
	// cannot be recorded; the zero value, FailClosed, refuses it.
	AuditFailure AuditFailure
	Metrics      Metrics
	Log          zerolog.Logger
	// DialTimeout bounds the upstream connect. Default 10s.
	DialTimeout time.Duration
}

// Reviews opens reviews of requests that review rules hold, for a stream:
// the agent's review client. It records review.requested through audit,
// so the record carries the stream's attribution.
type Reviews interface {
	Review(ctx context.Context, att *Attribution, audit *Audit, req guard.ReviewRequest) guard.ReviewResult
}

// Proxy accepts redirected connections and serves them.
type Proxy struct {
	opts Options

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool // set once Serve closes every connection
	// open indexes the authorized streams, so that the agent can close
	// those of a session that ended (see Close).
	open map[*openStream]struct{}
	// authMu is held shared from a connection's authorization until it is
	// indexed, and exclusively by Close while it selects: the daemon
	// changes its sessions or policy, then calls Close, which therefore
	// sees every stream authorized under the old state.
	authMu sync.RWMutex
	wg     sync.WaitGroup
}

// New returns a proxy; Serve runs it.
func New(opts Options) *Proxy {
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 10 * time.Second
	}
	return &Proxy{opts: opts, conns: map[net.Conn]struct{}{}, open: map[*openStream]struct{}{}}
}

// Serve accepts on every listener until ctx is done, then closes the
// listeners and every open connection and waits for their handlers.
func (p *Proxy) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(p.opts.Listeners))
	for _, ln := range p.opts.Listeners {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			errc <- p.acceptLoop(ctx, ln)
		}()
	}
	<-ctx.Done()
	for _, ln := range p.opts.Listeners {
		ln.Close()
	}
	p.mu.Lock()
	p.closing = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (p *Proxy) acceptLoop(ctx context.Context, ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		p.track(c, true)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.track(c, false)
			defer c.Close()
			p.handle(ctx, c)
		}()
	}
}

func (p *Proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add && p.closing {
		c.Close() // accepted or dialled after Serve closed the rest
		return
	}
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) handle(ctx context.Context, client net.Conn) {
	log := p.opts.Log.With().Str("client", client.RemoteAddr().String()).Logger()
	remote, err := netip.ParseAddrPort(client.RemoteAddr().String())
	if err != nil {
		log.Error().Err(err).Msg("unparseable client address")
		return
	}
	info, err := p.opts.Attributor.TakeConn(remote)
	if err != nil {
		// Not redirected by the kernel (someone dialled the proxy port
		// directly) or the record was lost: nothing to attribute it to.
		if p.opts.Metrics != nil {
			p.opts.Metrics.Unattributed()
		}
		log.Warn().Err(err).Msg("connection without kernel attribution closed")
		return
	}
	// Authorization and indexing are one step for Close (see authMu):
	// a stream authorized before its session ended is indexed before
	// Close looks, so it cannot slip past.
	p.authMu.RLock()
	att := p.opts.Authorize(info)
	var open *openStream
	if att.Decision.Action == event.Allow {
		open = p.index(&att, client.RemoteAddr().String())
		defer p.unindex(open)
	}
	p.authMu.RUnlock()
	log = log.With().Str("target", att.Target.Name).Uint32("pid", info.TGID).Uint32("uid", info.UID).Logger()
	codec := p.opts.Codecs.Codec(att.Target.Protocol)

	if att.Decision.Action != event.Allow {
		if err := p.record(&att, event.Connect{}); err != nil {
			// Refused either way; the recorder counts the loss.
			log.Debug().Err(err).Msg("refused connection not recorded")
		}
		log.Info().Str("reason", att.Decision.Reason).Msg("connection refused")
		p.refuse(ctx, codec, client, &att, log)
		return
	}

	// Indexed before the dial: a session that ends while the dial is in
	// progress finds the stream, and it is refused below instead of
	// served.
	d := net.Dialer{Timeout: p.opts.DialTimeout}
	upstream, err := d.DialContext(ctx, "tcp", info.OrigDst.String())
	if err != nil {
		att.Decision = event.Decision{Action: event.Deny, Rule: "upstream", Reason: fmt.Sprintf("warden: target %s is unreachable", att.Target.Name)}
		if ctx.Err() != nil {
			// Not the target's fault: the agent is stopping.
			att.Decision = event.Decision{Action: event.Deny, Rule: "shutdown", Reason: "warden: the agent is shutting down; try again"}
		}
		if err := p.record(&att, event.Connect{Error: err.Error()}); err != nil {
			log.Debug().Err(err).Msg("refused connection not recorded")
		}
		log.Warn().Err(err).Msg("upstream dial failed")
		p.refuse(ctx, codec, client, &att, log)
		return
	}
	p.track(upstream, true)
	defer p.track(upstream, false)
	defer upstream.Close()

	// The connection is recorded before a byte of it reaches the target:
	// under FailClosed one that cannot be recorded is refused.
	if err := p.record(&att, event.Connect{UpstreamLocal: upstream.LocalAddr().String()}); err != nil {
		if p.opts.AuditFailure == FailClosed {
			u := Unrecorded(err)
			att.Decision = event.Decision{Action: event.Deny, Rule: ruleAudit,
				Reason: fmt.Sprintf("warden: the audit log cannot record this connection (%s); refusing", u.Cause)}
			log.Warn().Err(err).Msg("connection refused: the audit log cannot record it")
			p.refuse(ctx, codec, client, &att, log)
			return
		}
		log.Debug().Err(err).Msg("connection not recorded; audit_failure allows it")
	}
	if p.opts.Metrics != nil {
		p.opts.Metrics.Accepted(att.Target.Name)
	}
	var groups []string
	if att.Identity != nil {
		groups = att.Identity.Groups
	}
	audit := NewAudit(p.opts.Recorder, &att, p.opts.AuditFailure)
	var reviewer guard.Reviewer
	if p.opts.Reviews != nil {
		reviewer = guard.ReviewerFunc(func(ctx context.Context, req guard.ReviewRequest) guard.ReviewResult {
			return p.opts.Reviews.Review(ctx, &att, audit, req)
		})
	}
	s := &Stream{
		Client: client, Upstream: upstream, Attribution: &att, Log: log,
		Guard: guard.New(att.Policy, att.Target.Name, groups, reviewer),
		Audit: audit,
	}
	if reason := open.serving(s); reason != "" {
		// The session ended (or lost the target) between authorization
		// and now: refuse with the same words an open stream gets.
		att.Decision = event.Decision{Action: event.Deny, Rule: "lifetime", Reason: reason}
		log.Info().Str("reason", reason).Msg("connection closed before it was served")
		if err := codec.Refuse(ctx, client, &att); err != nil {
			log.Debug().Err(err).Msg("refusal not delivered")
		}
		return
	}
	if err := codec.Serve(ctx, s); err != nil && ctx.Err() == nil {
		log.Debug().Err(err).Msg("stream ended with error")
	}
}

// refuse counts a refusal under its rule and tells the client why, in the
// codec's terms.
func (p *Proxy) refuse(ctx context.Context, codec Codec, client net.Conn, att *Attribution, log zerolog.Logger) {
	if p.opts.Metrics != nil {
		p.opts.Metrics.Refused(att.Target.Name, att.Decision.Rule)
	}
	if err := codec.Refuse(ctx, client, att); err != nil {
		log.Debug().Err(err).Msg("refusal not delivered")
	}
}

// ruleAudit is the decision rule (and refusal metric reason) of a
// connection refused because it cannot be recorded.
const ruleAudit = "audit"

// record emits the net.connect event for a connection and returns the
// recorder's error if it was not stored.
func (p *Proxy) record(att *Attribution, c event.Connect) error {
	c.OriginalDst, c.Verdict, c.Via = att.Kernel.OrigDst.String(), att.Kernel.Verdict.String(), "proxy"
	c.Notes = att.Data
	dec := att.Decision
	return p.opts.Recorder.Emit(&event.Event{
		Type:     event.NetConnect,
		Identity: att.Identity,
		Process:  att.Process,
		Target:   &att.Target,
		Decision: &dec,
		Data:     c.Data(),
	})
}
