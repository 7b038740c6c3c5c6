package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wardenhq/warden/agent/control"
	"github.com/wardenhq/warden/agent/reviews"
	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/review"
)

// Login verifies the token and binds its identity to the caller's shell.
// Failures are recorded too: repeated bad tokens are what a SOC looks for.
func (d *Daemon) Login(ctx context.Context, peer session.Peer, raw string) (*session.Session, error) {
	proc, _ := d.attribute(uint32(peer.PID), peer.UID, 0, 0)
	vctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	claims, err := d.verifier.Verify(vctx, raw)
	if err != nil {
		d.log.Warn().Err(err).Int("pid", peer.PID).Uint32("uid", peer.UID).Msg("login refused")
		d.emit(&event.Event{Type: event.SessionLogin, Process: proc,
			Decision: &event.Decision{Action: event.Deny, Rule: "token", Reason: err.Error()}})
		return nil, err
	}
	d.awaitCommands(ctx)
	if lk, locked := d.locks.Check(claims.Subject, time.Now()); locked {
		msg := lockedMessage(lk)
		d.log.Warn().Str("sub", claims.Subject).Int("pid", peer.PID).Time("until", lk.Until).Msg("login refused: locked")
		d.emit(&event.Event{Type: event.SessionLogin, Identity: &event.Identity{Sub: claims.Subject, Email: claims.Email, Groups: claims.Groups, Issuer: claims.Issuer},
			Process: proc, Decision: &event.Decision{Action: event.Deny, Rule: "lock", Reason: msg}})
		return nil, errors.New(msg)
	}
	id := session.Identity{Subject: claims.Subject, Email: claims.Email, Name: claims.Name, Issuer: claims.Issuer, Groups: claims.Groups}
	s, refreshed, err := d.sessions.Login(peer, id, claims.Expiry)
	if err != nil {
		d.log.Warn().Err(err).Str("sub", claims.Subject).Int("pid", peer.PID).Msg("login not bound")
		d.emit(&event.Event{Type: event.SessionLogin, Identity: &event.Identity{Sub: claims.Subject, Email: claims.Email, Groups: claims.Groups, Issuer: claims.Issuer},
			Process: proc, Decision: &event.Decision{Action: event.Deny, Rule: "binding", Reason: err.Error()}})
		return nil, err
	}
	if err := d.syncAccess(); err != nil {
		// Without access entries the session reaches nothing: closed.
		d.log.Error().Err(err).Msg("sync access after login")
	}
	d.wakeExpiry()
	d.log.Info().Str("session", s.ID).Str("sub", s.Identity.Subject).Bool("refreshed", refreshed).Time("expires", s.Expires).Msg("session bound")
	d.emitSession(event.SessionLogin, s, d.loginShell(proc, s), nil)
	if refreshed {
		// A new token may carry fewer groups: what they no longer
		// reach closes as for a policy change.
		d.revokeAccess(context.WithoutCancel(ctx), d.currentPolicy())
	}
	return s, nil
}

// Logout unbinds the caller's session.
func (d *Daemon) Logout(ctx context.Context, peer session.Peer) (*session.Session, error) {
	s, err := d.sessions.Logout(peer)
	if err != nil {
		return nil, err
	}
	if err := d.syncAccess(); err != nil {
		d.log.Error().Err(err).Msg("sync access after logout")
	}
	closed := d.closeLoggedOut(ctx, s)
	d.log.Info().Str("session", s.ID).Str("sub", s.Identity.Subject).Int("connections_closed", len(closed)).Msg("session ended")
	proc, _ := d.attribute(uint32(peer.PID), peer.UID, 0, s.CgroupID)
	d.emitSession(event.SessionLogout, s, proc, closed)
	return s, nil
}

// Whoami returns the caller's session.
func (d *Daemon) Whoami(ctx context.Context, peer session.Peer) (*session.Session, error) {
	s, err := d.sessions.Of(peer.PID)
	if err != nil && !errors.Is(err, session.ErrNoSession) {
		return nil, err
	}
	return s, err
}

// RequestAccess opens a just-in-time access review of req.Target for the
// caller's session, under the access entry that offers it.
func (d *Daemon) RequestAccess(ctx context.Context, peer session.Peer, req control.AccessRequest) (*review.Review, error) {
	s, err := d.sessions.Of(peer.PID)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(req.Reason) == "" {
		return nil, errors.New("say why you need access: --reason TEXT")
	}
	if len(req.Reason) > 1024 {
		return nil, errors.New("--reason is longer than 1024 bytes")
	}
	p := d.currentPolicy()
	if _, ok := p.Target(req.Target); !ok {
		return nil, fmt.Errorf("no target %q in the policy", req.Target)
	}
	if _, plain := d.reach(p, s)[req.Target]; plain {
		return nil, fmt.Errorf("you can already reach %q", req.Target)
	}
	spec, ok := p.AccessReview(s.Identity.Groups, req.Target)
	if !ok {
		return nil, fmt.Errorf("no access entry lets your groups (%s) ask for %q", strings.Join(s.Identity.Groups, ", "), req.Target)
	}
	return d.reviews.RequestAccess(ctx, reviews.AccessRequest{
		Identity: identityOf(s), SessionID: s.ID, Target: req.Target, Reason: req.Reason, For: req.For.D(), Spec: spec,
	})
}

// IdP returns the identity provider wardend trusts.
func (d *Daemon) IdP() control.IdPInfo {
	return control.IdPInfo{Issuer: d.cfg.OIDC.Issuer, ClientID: d.cfg.OIDC.ClientID, CAFile: d.cfg.OIDC.CAFile}
}

// loginShell records that the shell which ran 'warden login' (the parent
// of the login command peer) joined session s, and returns its event view;
// see lineage.Tracker.LoginShell.
func (d *Daemon) loginShell(peer *event.Process, s *session.Session) *event.Process {
	shell, err := d.lineage.LoginShell(peer, s.CgroupID, identityOf(s))
	if err != nil {
		d.log.Warn().Err(err).Str("session", s.ID).Msg("login shell not joined to its session's lineage")
	}
	return shell
}
