package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
)

// What a client reads when the agent closes its open connection (in the
// protocol's own terms where it has any: an ErrorResponse FATAL for
// PostgreSQL).
const (
	MsgSessionExpired = "warden: session expired; run 'warden login'"
	MsgLoggedOut      = "warden: you logged out"
)

// msgRevoked is the reason for a connection whose target the policy no
// longer gives its session.
func msgRevoked(target string) string {
	return fmt.Sprintf("warden: access to target %s revoked by policy", target)
}

// msgKilled is the reason for a connection of a killed session.
func msgKilled(by, reason string) string {
	return fmt.Sprintf("warden: session killed by %s: %s", by, reason)
}

// expiryMaxWait bounds the wait for the next expiry: a fallback should a
// wake-up be missed or the wall clock jump, and the old one-second tick.
const expiryMaxWait = time.Second

// untilNextExpiry is how long maintainSessions sleeps before the next
// session expires.
func (d *Daemon) untilNextExpiry() time.Duration {
	next, ok := d.sessions.NextExpiry()
	if !ok {
		return expiryMaxWait
	}
	return min(max(time.Until(next), 0), expiryMaxWait)
}

// wakeExpiry tells maintainSessions that the next expiry may have moved
// (a login, a refresh).
func (d *Daemon) wakeExpiry() {
	select {
	case d.expiryWake <- struct{}{}:
	default:
	}
}

// expireSessions ends the sessions whose token expired by now: the kernel
// binding goes (the kernel already refuses the identity on its own clock),
// then every open connection of theirs is closed, and each session's
// session.expired lists the connections it closed.
func (d *Daemon) expireSessions(ctx context.Context, now time.Time) {
	expired, err := d.sessions.Expire(now)
	if err != nil {
		d.log.Error().Err(err).Msg("expire sessions")
	}
	if len(expired) == 0 {
		return
	}
	if err := d.syncAccess(); err != nil {
		d.log.Error().Err(err).Msg("sync access after expiry")
	}
	ids := map[string]bool{}
	for _, s := range expired {
		ids[s.ID] = true
	}
	closed := bySession(d.proxy.Close(ctx, func(att *proxy.Attribution) (string, bool) {
		return MsgSessionExpired, ids[att.SessionID]
	}))
	for _, s := range expired {
		d.log.Info().Str("session", s.ID).Str("sub", s.Identity.Subject).Int("connections_closed", len(closed[s.ID])).Msg("session expired")
		d.emitSession(event.SessionExpired, s, nil, closedConnections(closed[s.ID]))
	}
}

// closeLoggedOut closes the connections of a session just logged out.
func (d *Daemon) closeLoggedOut(ctx context.Context, s *session.Session) []event.ClosedConnection {
	// The logout's request may end (the CLI gone); the closing may not.
	ctx = context.WithoutCancel(ctx)
	return closedConnections(d.proxy.Close(ctx, proxy.BySession(s.ID, MsgLoggedOut)))
}

// revokeAccess closes every open connection whose session no longer
// reaches its target under p (the policy changed, or a refreshed login
// brought fewer groups), and records access.revoked for each session and
// target. Connections whose session has ended are the expiry's, logout's
// or kill's to close.
func (d *Daemon) revokeAccess(ctx context.Context, p *policy.Policy) {
	reach := map[string]map[string]time.Time{}
	live := map[string]*session.Session{}
	for _, s := range d.sessions.List() {
		reach[s.ID] = d.reach(p, s)
		live[s.ID] = s
	}
	closed := d.proxy.Close(ctx, func(att *proxy.Attribution) (string, bool) {
		targets, ok := reach[att.SessionID]
		if _, reached := targets[att.Target.Name]; !ok || reached {
			return "", false
		}
		return msgRevoked(att.Target.Name), true
	})
	type key struct{ session, target string }
	groups := map[key][]proxy.ClosedStream{}
	var order []key
	for _, c := range closed {
		k := key{c.SessionID, c.Target.Name}
		if _, seen := groups[k]; !seen {
			order = append(order, k)
		}
		groups[k] = append(groups[k], c)
	}
	for _, k := range order {
		cs := groups[k]
		s := live[k.session]
		tgt := cs[0].Target
		d.log.Info().Str("session", s.ID).Str("sub", s.Identity.Subject).Str("target", tgt.Name).Int("connections_closed", len(cs)).Msg("access revoked by policy")
		d.emit(&event.Event{Type: event.AccessRevoked, Identity: identityOf(s), Target: &tgt,
			Decision: &event.Decision{Action: event.Deny, Rule: "access", Reason: msgRevoked(tgt.Name)},
			Data:     event.Revocation{PolicyDigest: p.Digest, ConnectionsClosed: closedConnections(cs)}.Data()})
	}
}

// bySession groups closed streams by session id.
func bySession(cs []proxy.ClosedStream) map[string][]proxy.ClosedStream {
	out := map[string][]proxy.ClosedStream{}
	for _, c := range cs {
		out[c.SessionID] = append(out[c.SessionID], c)
	}
	return out
}

// closedConnections is the events' view of closed streams; never nil, so
// that an event says "none" rather than leaving the member out.
func closedConnections(cs []proxy.ClosedStream) []event.ClosedConnection {
	out := make([]event.ClosedConnection, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Event())
	}
	return out
}
