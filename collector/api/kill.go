package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/wardenhq/warden/collector/store"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
)

// maxKillBody bounds a kill request's body.
const maxKillBody = 16 << 10

// maxReason bounds a kill's reason, which travels to every agent and into
// events.
const maxReason = 1024

// Commander records and delivers commands to the agents; the collector's
// implementation publishes on the WARDEN_COMMANDS stream.
type Commander interface {
	// Publish sends c to the agents it names. It returns once JetStream
	// has stored it (delivery to an agent away is the stream's job).
	Publish(ctx context.Context, c *event.Command) error
}

// KillConfig enables POST /v1/sessions/kill. With no Killers nobody may
// kill. The caller's token is checked by Config.Verifier.
type KillConfig struct {
	// Killers are the groups (the token's groups claim) allowed to kill
	// and lock.
	Killers  []string
	Commands Commander
	// Collector names this collector as the host of the command events it
	// records.
	Collector string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (s *Server) now() time.Time {
	if s.cfg.Kill.Now != nil {
		return s.cfg.Kill.Now()
	}
	return time.Now()
}

// authorizeKiller verifies the bearer token and the killers role. On
// failure it has written the answer: 401 without a valid token, 403 for
// someone outside the killers groups.
func (s *Server) authorizeKiller(w http.ResponseWriter, r *http.Request) (*idtoken.Claims, bool) {
	kc := s.cfg.Kill
	// Who asks comes first: an unauthenticated caller learns nothing,
	// not even whether kills are enabled.
	claims, ok := s.identify(w, r)
	if !ok {
		return nil, false
	}
	if len(kc.Killers) == 0 || kc.Commands == nil {
		writeError(w, http.StatusForbidden, "killing sessions is disabled on this collector (no --killers groups)")
		return nil, false
	}
	for _, g := range claims.Groups {
		if slices.Contains(kc.Killers, g) {
			return claims, true
		}
	}
	s.log.Warn().Str("sub", claims.Subject).Strs("groups", claims.Groups).Msg("kill refused: not in a killers group")
	writeError(w, http.StatusForbidden, fmt.Sprintf("%s may not kill sessions: not a member of %s", claims.Subject, strings.Join(kc.Killers, ", ")))
	return nil, false
}

// kill serves POST /v1/sessions/kill: the request is recorded as a
// command.kill (and command.lock) event, then published to the agents.
func (s *Server) kill(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authorizeKiller(w, r)
	if !ok {
		return
	}
	var req cc.KillRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxKillBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	lock, err := validateKill(&req)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	now := s.now().UTC()
	kill := &event.Command{Schema: event.CommandSchema, ID: ulid.Make().String(), Kind: event.KindKill, Issued: now,
		By: claims.Subject, ByEmail: claims.Email, Reason: req.Reason, Host: req.Host, Lock: event.Duration(lock)}
	if req.SessionID != "" {
		login, err := s.sessionLogin(ctx, req.SessionID)
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no session.login event for session %q", req.SessionID))
			return
		}
		if err != nil {
			s.internal(w, err)
			return
		}
		if req.Host != "" && req.Host != login.HostID {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("session %s is on host %s, not %s", req.SessionID, login.HostID, req.Host))
			return
		}
		kill.SessionID, kill.Host = req.SessionID, login.HostID
		if login.sub == "" && lock > 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("session %s has no person to lock", req.SessionID))
			return
		}
		req.User = login.sub
	} else {
		kill.Sub = req.User
	}
	out := cc.KillResult{KillID: kill.ID, Sub: req.User, SessionID: kill.SessionID, Host: kill.Host}
	cmds := []*event.Command{}
	if lock > 0 {
		// The lock goes first: an agent applies commands in stream order,
		// so the person cannot log in again between the kill and the lock.
		l := &event.Command{Schema: event.CommandSchema, ID: ulid.Make().String(), Kind: event.KindLock, Issued: now,
			By: claims.Subject, ByEmail: claims.Email, Reason: req.Reason, Host: req.Host, Sub: req.User, Until: now.Add(lock)}
		cmds = append(cmds, l)
		cl := lockOf(l)
		out.Lock = &cl
	}
	cmds = append(cmds, kill)
	for _, c := range cmds {
		if err := c.Validate(); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	// Recorded before sent: a kill nobody can later find is not allowed.
	if err := s.record(ctx, claims, cmds); err != nil {
		s.internal(w, err)
		return
	}
	for _, c := range cmds {
		if err := s.cfg.Kill.Commands.Publish(ctx, c); err != nil {
			s.log.Error().Err(err).Str("command", c.ID).Msg("publish command")
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("command %s recorded but not queued for the agents: %v", c.ID, err))
			return
		}
	}
	s.log.Info().Str("by", claims.Subject).Str("sub", out.Sub).Str("session", out.SessionID).Str("host", out.Host).
		Str("reason", req.Reason).Dur("lock", lock).Str("kill_id", kill.ID).Msg("kill queued")
	writeJSON(w, http.StatusAccepted, out)
}

// validateKill checks a request and returns its lock duration.
func validateKill(req *cc.KillRequest) (time.Duration, error) {
	if (req.SessionID == "") == (req.User == "") {
		return 0, errors.New("give exactly one of session_id and user")
	}
	req.Reason = strings.TrimSpace(req.Reason)
	if req.Reason == "" {
		return 0, errors.New("reason is required")
	}
	if len(req.Reason) > maxReason {
		return 0, fmt.Errorf("reason is longer than %d bytes", maxReason)
	}
	if req.Host != "" {
		if err := event.ValidCommandHost(req.Host); err != nil {
			return 0, fmt.Errorf("host: %w", err)
		}
	}
	if req.Lock == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(req.Lock)
	if err != nil {
		return 0, fmt.Errorf("lock %q: %w", req.Lock, err)
	}
	if d <= 0 || d > event.MaxLock {
		return 0, fmt.Errorf("lock %s: want more than 0 and at most %s", d, event.MaxLock)
	}
	return d, nil
}

type loginInfo struct {
	HostID string
	sub    string
}

// sessionLogin finds where a session lives and whose it is from its
// session.login event.
func (s *Server) sessionLogin(ctx context.Context, sessionID string) (loginInfo, error) {
	rows, err := s.cfg.Store.Query(ctx, store.Filter{SessionID: sessionID, Types: []string{string(event.SessionLogin)}, Limit: 1})
	if err != nil {
		return loginInfo{}, err
	}
	if len(rows) == 0 {
		return loginInfo{}, store.ErrNotFound
	}
	e, err := rows[0].Event()
	if err != nil {
		return loginInfo{}, err
	}
	li := loginInfo{HostID: rows[0].HostID}
	if e.Identity != nil {
		li.sub = e.Identity.Sub
	}
	return li, nil
}

// record stores one event per command, raised by the collector itself
// like integrity violations: the requester is the identity, the command
// the data. The event id is the command id.
func (s *Server) record(ctx context.Context, claims *idtoken.Claims, cmds []*event.Command) error {
	recs := make([]store.Record, 0, len(cmds))
	for _, c := range cmds {
		typ := event.CommandKill
		if c.Kind == event.KindLock {
			typ = event.CommandLock
		}
		b, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("encode command %s: %w", c.ID, err)
		}
		var data map[string]any
		if err := json.Unmarshal(b, &data); err != nil {
			return fmt.Errorf("command %s as event data: %w", c.ID, err)
		}
		groups := claims.Groups
		if groups == nil {
			groups = []string{}
		}
		e := &event.Event{
			Schema: event.Schema, ID: c.ID, Time: c.Issued, Type: typ,
			Host:     event.Host{ID: s.cfg.Kill.Collector, Name: s.cfg.Kill.Collector},
			Identity: &event.Identity{Sub: claims.Subject, Email: claims.Email, Name: claims.Name, Groups: groups, Issuer: claims.Issuer},
			Data:     data,
		}
		raw, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event of command %s: %w", c.ID, err)
		}
		recs = append(recs, store.Record{Event: e, Raw: raw})
	}
	if _, err := s.cfg.Store.Insert(ctx, recs); err != nil {
		return err
	}
	s.cfg.Notifier.Notify()
	return nil
}

func lockOf(c *event.Command) cc.Lock {
	return cc.Lock{ID: c.ID, Sub: c.Sub, Host: c.Host, Reason: c.Reason, By: c.By, Issued: c.Issued, Until: c.Until}
}

// locks serves GET /v1/locks: the locks in force, newest first, from the
// command.lock events the collector recorded.
func (s *Server) locks(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Query()) > 0 {
		for k := range r.URL.Query() {
			writeError(w, http.StatusBadRequest, (&paramError{k, "unknown parameter for this endpoint"}).Error())
			return
		}
	}
	now := s.now()
	rows, err := s.cfg.Store.Query(r.Context(), store.Filter{Types: []string{string(event.CommandLock)}, Since: now.Add(-event.MaxLock), Desc: true})
	if err != nil {
		s.internal(w, err)
		return
	}
	out := cc.LockList{Locks: []cc.Lock{}}
	for _, row := range rows {
		c, err := commandOf(row)
		if err != nil {
			s.log.Warn().Err(err).Str("id", row.ID).Msg("unreadable command.lock event")
			continue
		}
		if c.Kind != event.KindLock || c.Expired(now) {
			continue
		}
		out.Locks = append(out.Locks, lockOf(c))
	}
	writeJSON(w, http.StatusOK, out)
}

// commandOf reads the command back from its event.
func commandOf(row store.Row) (*event.Command, error) {
	var e struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(row.Raw, &e); err != nil {
		return nil, err
	}
	return event.DecodeCommand(e.Data)
}
