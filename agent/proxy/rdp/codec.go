// Package rdp is the proxy's RDP codec: what an L7 point can honestly do
// without a full RDP stack. It reads the client's X.224 Connection Request
// (cookie or routing token, offered security protocols) and the server's
// Connection Confirm (selected protocol), refuses sessions that would not
// use Network Level Authentication when the target requires it, then
// relays the TLS that follows without opening it, with the person bound
// by the kernel, and ends the session at the target's max_duration. Each
// session is recorded as an rdp.session start and end. Pure wire code
// lives in pkg/protocol/rdp; docs/rdp.md says what is and is not seen.
package rdp

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/pkg/protocol/rdp"
)

// Codec is the RDP codec.
type Codec struct{}

// New returns the RDP codec.
func New() *Codec { return &Codec{} }

// Enforces implements proxy.Codec: the target's rdp block (require_nla,
// max_duration). RDP sessions are TLS the proxy does not open, so no
// rule, mask or credential applies inside them.
func (*Codec) Enforces() []policy.Capability {
	return []policy.Capability{policy.CapRDPSession}
}

// negotiationTimeout bounds the first exchange on each side.
const negotiationTimeout = 30 * time.Second

// Refuse reads the client's Connection Request and closes. RDP has no way
// to carry a reason before TLS: a negotiation failure code would name a
// security protocol problem that is not the one. The reason is in the
// net.connect event and the agent's log.
func (*Codec) Refuse(ctx context.Context, client net.Conn, att *proxy.Attribution) error {
	client.SetDeadline(time.Now().Add(negotiationTimeout))
	_, err := rdp.ReadTPKT(client)
	return err
}

// Rules the codec applies, as decisions name them.
const (
	ruleNLA         = "require_nla"
	ruleProtocol    = "protocol"
	ruleMaxDuration = "max_duration"
)

// Serve negotiates, then relays until either side closes or the target's
// max_duration passes.
func (*Codec) Serve(ctx context.Context, s *proxy.Stream) error {
	att := s.Attribution
	settings := att.TargetPolicy.RDPSettings()
	start := time.Now()
	var fromClient, fromServer atomic.Int64

	s.Client.SetDeadline(time.Now().Add(negotiationTimeout))
	req, err := rdp.ReadTPKT(s.Client)
	if err != nil {
		return fmt.Errorf("rdp connection request: %w", err)
	}
	fromClient.Add(int64(len(req)))
	cr, err := rdp.ParseConnectionRequest(req)
	if err != nil {
		// Never relay what was not read: the server might read it
		// differently.
		refuse(s, &event.RDP{Phase: "start"}, ruleProtocol, fmt.Sprintf("warden: unreadable RDP connection request: %v", err), rdp.FailureInconsistentFlags)
		return err
	}
	ev := &event.RDP{Phase: "start", Cookie: cr.Cookie, RoutingToken: cr.RoutingToken, Requested: rdp.ProtocolNames(cr.Requested)}
	if settings.RequireNLA && cr.Requested&rdp.NLA == 0 {
		refuse(s, ev, ruleNLA, fmt.Sprintf("warden: target %s requires Network Level Authentication (CredSSP); the client offered only %s",
			att.Target.Name, strings.Join(ev.Requested, ", ")), rdp.FailureHybridRequired)
		return nil
	}

	s.Upstream.SetDeadline(time.Now().Add(negotiationTimeout))
	if _, err := s.Upstream.Write(req); err != nil {
		return fmt.Errorf("rdp: send connection request upstream: %w", err)
	}
	conf, err := rdp.ReadTPKT(s.Upstream)
	if err != nil {
		return fmt.Errorf("rdp connection confirm: %w", err)
	}
	fromServer.Add(int64(len(conf)))
	cc, err := rdp.ParseConnectionConfirm(conf)
	if err != nil {
		refuse(s, ev, ruleProtocol, fmt.Sprintf("warden: unreadable RDP connection confirm from target %s: %v", att.Target.Name, err), rdp.FailureInconsistentFlags)
		return err
	}
	if cc.Failed {
		// The server refused the client's protocols itself: pass its
		// answer on, and record who said no.
		s.Client.Write(conf)
		ev.Selected = ""
		rec(s, ev, event.Decision{Action: event.Deny, Rule: ruleProtocol,
			Reason: fmt.Sprintf("warden: target %s refused the negotiation (failure code %d)", att.Target.Name, cc.FailureCode)})
		return nil
	}
	ev.Selected = rdp.ProtocolName(cc.Selected)
	if settings.RequireNLA && cc.Selected&rdp.NLA == 0 {
		refuse(s, ev, ruleNLA, fmt.Sprintf("warden: target %s requires Network Level Authentication (CredSSP), and the server selected %s",
			att.Target.Name, ev.Selected), rdp.FailureHybridRequired)
		return nil
	}
	receipt, err := s.Audit.Request(event.RDPSession, event.Decision{Action: event.Allow, Rule: att.Decision.Rule}, ev)
	if err != nil {
		// Fail closed: no record, no session.
		s.Log.Warn().Err(err).Msg("rdp session refused: the audit log cannot record it")
		s.Client.Write(rdp.NegotiationFailure(rdp.FailureHybridRequired))
		return nil
	}
	if _, err := s.Client.Write(conf); err != nil {
		return fmt.Errorf("rdp: send connection confirm: %w", err)
	}
	s.Client.SetDeadline(time.Time{})
	s.Upstream.SetDeadline(time.Time{})

	reason := relay(ctx, s, settings.MaxDuration, &fromClient, &fromServer)
	end := *ev
	end.Phase, end.EndReason, end.Duration = "end", reason, time.Since(start)
	end.BytesFromClient, end.BytesFromServer = fromClient.Load(), fromServer.Load()
	if err := s.Audit.Result(receipt, event.RDPSession, end); err != nil {
		s.Log.Debug().Err(err).Msg("rdp session end not recorded")
	}
	s.Log.Info().Str("reason", reason).Dur("duration", end.Duration).Msg("rdp session ended")
	return nil
}

// refuse records a refused session and answers the client with a
// negotiation failure, the only refusal an RDP client shows before TLS.
func refuse(s *proxy.Stream, ev *event.RDP, rule, reason string, code uint32) {
	rec(s, ev, event.Decision{Action: event.Deny, Rule: rule, Reason: reason})
	s.Log.Info().Str("rule", rule).Str("reason", reason).Msg("rdp session refused")
	if _, err := s.Client.Write(rdp.NegotiationFailure(code)); err != nil {
		s.Log.Debug().Err(err).Msg("negotiation failure not delivered")
	}
}

// rec records a session start that is refused either way.
func rec(s *proxy.Stream, ev *event.RDP, dec event.Decision) {
	if _, err := s.Audit.Request(event.RDPSession, dec, ev); err != nil {
		s.Log.Debug().Err(err).Msg("refused rdp session not recorded")
	}
}

// relay copies both ways until one side closes (then the other is
// closed too), ctx ends, or limit passes; it returns why it ended.
func relay(ctx context.Context, s *proxy.Stream, limit time.Duration, fromClient, fromServer *atomic.Int64) string {
	var once sync.Once
	why := ""
	stop := func(reason string) {
		once.Do(func() {
			why = reason
			s.Client.Close()
			s.Upstream.Close()
		})
	}
	// The agent ends streams whose session ended or lost the target;
	// record that as the reason, not the closed sockets it causes.
	s.OnClose(func(_ context.Context, reason string) { stop("ended by the agent: " + reason) })
	defer s.OnClose(nil)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		copyCounting(s.Upstream, s.Client, fromClient)
		stop("client closed")
	}()
	go func() {
		defer wg.Done()
		copyCounting(s.Client, s.Upstream, fromServer)
		stop("server closed")
	}()
	go func() {
		wg.Wait()
		close(done)
	}()
	var timeout <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-done:
	case <-timeout:
		stop(ruleMaxDuration)
		<-done
	case <-ctx.Done():
		stop("agent stopping")
		<-done
	}
	return why
}

// copyCounting copies src to dst, counting into n as it goes, so a session
// cut short still reports what crossed.
func copyCounting(dst io.Writer, src io.Reader, n *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
			n.Add(int64(k))
		}
		if err != nil {
			return
		}
	}
}
