// Package api serves the collector's HTTP JSON query API: events, lineage,
// sessions, a live follow stream, the kill switch and health. Every /v1
// call carries an OIDC ID token (Authorization: Bearer) verified with
// go-oidc; the groups in it decide what the person may do (see routes).
// Wire types are those of pkg/collectorclient.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/collector/reviews"
	"github.com/wardenhq/warden/collector/store"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/event"
)

// Limits of the listing endpoints.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
	// maxLineage bounds the walk up parent_exec_id links when an event
	// carries no ancestors array; it also stops a cycle in forged data.
	maxLineage = 64
	// followPage is how many rows a follower reads per query.
	followPage = 1000
)

// keepAlive is how often an idle follow stream gets an empty line, so that
// proxies keep it open and the server notices a client that went away.
const keepAlive = 30 * time.Second

// Notifier wakes followers when new events are stored. Each waiter gets the
// current channel; Notify closes it and starts a new one (a broadcast that
// never blocks the ingester and never loses a wake-up).
type Notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// NewNotifier returns a Notifier.
func NewNotifier() *Notifier { return &Notifier{ch: make(chan struct{})} }

// Wait returns a channel closed at the next Notify.
func (n *Notifier) Wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

// Notify wakes every current waiter.
func (n *Notifier) Notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}

// Config configures the API.
type Config struct {
	Store    *store.Store
	Notifier *Notifier
	// Stats reports ingestion counters for /healthz; may be nil.
	Stats func() cc.IngestStats
	// Verifier verifies the bearer ID token every /v1 call carries. Nil
	// refuses every call (503): the API never serves unauthenticated.
	Verifier Verifier
	// Sessions, when set, authenticates calls without a bearer token by
	// the web console's session cookie (GETs, and POSTs with its CSRF
	// token); nil accepts bearer tokens only.
	Sessions SessionAuth
	// Readers are the groups whose members may read events, lineage,
	// sessions, locks and every review.
	Readers []string
	// Kill enables the kill switch and locks; zero: nobody may kill.
	Kill KillConfig
	// Reviews serves /v1/reviews; nil answers 503 there.
	Reviews *reviews.Service
	// Recordings serves /v1/recordings (SSH sessions); nil answers 503.
	Recordings recording.Store
	// Keys are the agents' public keys, named in proof bundles; may be nil.
	Keys   event.KeyRing
	Logger zerolog.Logger
}

// Server is the API's HTTP handler.
type Server struct {
	cfg Config
	mux *http.ServeMux
	log zerolog.Logger
}

// New returns the API handler.
func New(cfg Config) *Server {
	if cfg.Notifier == nil {
		cfg.Notifier = NewNotifier()
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger.With().Str("component", "api").Logger()}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.pattern, s.guard(rt))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s
}

// routes is every endpoint of the API with who may call it: the one list
// New registers and the tests walk, so an endpoint cannot be added
// without an access rule.
func (s *Server) routes() []route {
	return append([]route{
		{"GET /v1/events", accessReaders, s.events},
		{"GET /v1/events/{id}", accessReaders, s.event},
		{"GET /v1/lineage/{id}", accessReaders, s.lineage},
		{"GET /v1/sessions", accessReaders, s.sessions},
		{"GET /v1/follow", accessReaders, s.follow},
		{"GET /v1/locks", accessReaders, s.locks},
		{"GET /v1/recordings/{id}", accessReaders, s.recording},
		{"GET /v1/proofs/{id}", accessReaders, s.proof},
		{"POST /v1/sessions/kill", accessHandler, s.kill}, // killers
		{"GET /healthz", accessPublic, s.health},
	}, s.reviewRoutes()...)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.log.Debug().Str("method", r.Method).Str("uri", r.URL.RequestURI()).Str("remote", r.RemoteAddr).Msg("request")
	s.mux.ServeHTTP(w, r)
}

// paramError is a bad query parameter; it becomes a 400 naming it.
type paramError struct {
	param string
	msg   string
}

func (e *paramError) Error() string { return fmt.Sprintf("query parameter %q: %s", e.param, e.msg) }

var typeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$`)

// ParseFilter reads the event filter parameters (type, user, host, target,
// since, until, limit, after_id, order); allowed lists the ones the caller
// accepts, and anything else is refused so that a typo (users=) does not
// silently widen an audit query. The console reads its filters with it too.
func ParseFilter(v url.Values, now time.Time, allowed ...string) (store.Filter, error) {
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	for k := range v {
		if !ok[k] {
			return store.Filter{}, &paramError{k, "unknown parameter for this endpoint"}
		}
	}
	one := func(k string) (string, error) {
		vals := v[k]
		if len(vals) > 1 {
			return "", &paramError{k, "given more than once"}
		}
		if len(vals) == 0 {
			return "", nil
		}
		if vals[0] == "" {
			return "", &paramError{k, "empty value"}
		}
		return vals[0], nil
	}
	var f store.Filter
	var err error
	if t, err := one("type"); err != nil {
		return f, err
	} else if t != "" {
		if !typeRE.MatchString(t) {
			return f, &paramError{"type", fmt.Sprintf("%q is not an event type like db.query", t)}
		}
		f.Types = []string{t}
	}
	if f.User, err = one("user"); err != nil {
		return f, err
	}
	if f.Target, err = one("target"); err != nil {
		return f, err
	}
	if f.HostID, err = one("host"); err != nil {
		return f, err
	}
	for _, tp := range []struct {
		k   string
		dst *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		s, err := one(tp.k)
		if err != nil {
			return f, err
		}
		if s == "" {
			continue
		}
		t, err := cc.ParseTime(s, now)
		if err != nil {
			return f, &paramError{tp.k, err.Error()}
		}
		*tp.dst = t
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, &paramError{"until", "must be after since"}
	}
	f.Limit = DefaultLimit
	if s, err := one("limit"); err != nil {
		return f, err
	} else if s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return f, &paramError{"limit", fmt.Sprintf("%q: want an integer from 1 to %d", s, MaxLimit)}
		}
		f.Limit = n
	}
	if s, err := one("after_id"); err != nil {
		return f, err
	} else if s != "" {
		if _, err := ulid.ParseStrict(s); err != nil {
			return f, &paramError{"after_id", fmt.Sprintf("%q is not an event id (ULID): %v", s, err)}
		}
		f.AfterID = s
	}
	if s, err := one("order"); err != nil {
		return f, err
	} else {
		switch s {
		case "", "asc":
		case "desc":
			f.Desc = true
		default:
			return f, &paramError{"order", fmt.Sprintf("%q: want asc or desc", s)}
		}
	}
	return f, nil
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query(), time.Now(), "type", "user", "host", "target", "since", "until", "limit", "after_id", "order")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rows, err := s.cfg.Store.Query(r.Context(), f)
	if err != nil {
		s.internal(w, err)
		return
	}
	out := cc.EventList{Events: make([]json.RawMessage, 0, len(rows))}
	for _, row := range rows {
		out.Events = append(out.Events, row.Raw)
		if len(row.Integrity) > 0 {
			if out.Integrity == nil {
				out.Integrity = map[string][]string{}
			}
			out.Integrity[row.ID] = row.Integrity
		}
	}
	if len(rows) == f.Limit {
		out.NextAfterID = rows[len(rows)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) event(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	row, err := s.cfg.Store.Get(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no event with id %q", id))
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	if len(row.Integrity) > 0 {
		// The body stays the event as received; the verdict travels beside it.
		w.Header().Set("Warden-Integrity", joinComma(row.Integrity))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(row.Raw)
}

func (s *Server) lineage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	out, err := s.Lineage(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no event or exec id %q", id))
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// Lineage is the lineage of an event id, else of an exec id: the event,
// its process chain oldest first, the person and their login. It returns
// an error wrapping store.ErrNotFound when neither id is known. Callers
// check the reader role first (GET /v1/lineage, the console).
func (s *Server) Lineage(ctx context.Context, id string) (*cc.Lineage, error) {
	row, err := s.findForLineage(ctx, id)
	if err != nil {
		return nil, err
	}
	e, err := row.Event()
	if err != nil {
		return nil, err
	}
	out := &cc.Lineage{Event: row.Raw, Integrity: row.Integrity, Identity: e.Identity, Host: e.Host, Chain: []cc.Step{}}
	if e.Process != nil {
		if out.Chain, err = s.chain(ctx, e.Process); err != nil {
			return nil, err
		}
	}
	if out.Identity == nil && e.Process != nil {
		// The event itself may be unattributed while its process's exec was
		// not (for example agent-side events about a known process).
		if ex, err := s.execEvent(ctx, e.Process.ExecID); err == nil && ex != nil {
			out.Identity = ex.Identity
		}
	}
	if out.Identity != nil && out.Identity.SessionID != "" {
		rows, err := s.cfg.Store.Query(ctx, store.Filter{SessionID: out.Identity.SessionID, Types: []string{string(event.SessionLogin)}, Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(rows) > 0 {
			out.Login = &cc.Login{EventID: rows[0].ID, Time: rows[0].Time, SessionID: rows[0].SessionID, HostID: rows[0].HostID}
		}
	}
	return out, nil
}

// findForLineage resolves an event id, else an exec id (preferring that
// process's process.exec event).
func (s *Server) findForLineage(ctx context.Context, id string) (store.Row, error) {
	row, err := s.cfg.Store.Get(ctx, id)
	if !errors.Is(err, store.ErrNotFound) {
		return row, err
	}
	for _, types := range [][]string{{string(event.ProcessExec)}, nil} {
		rows, err := s.cfg.Store.Query(ctx, store.Filter{ExecID: id, Types: types, Limit: 1})
		if err != nil {
			return store.Row{}, err
		}
		if len(rows) > 0 {
			return rows[0], nil
		}
	}
	return store.Row{}, store.ErrNotFound
}

// chain builds the process lineage, oldest first. The event's own ancestors
// array is authoritative (the agent saw it in the kernel); without one, the
// chain is rebuilt from stored process.exec events via parent_exec_id.
func (s *Server) chain(ctx context.Context, p *event.Process) ([]cc.Step, error) {
	self := cc.Step{ExecID: p.ExecID, PID: p.PID, UID: p.UID, Binary: p.Binary, Args: p.Args, ParentExecID: p.ParentExecID}
	var steps []cc.Step // nearest first, then reversed
	steps = append(steps, self)
	if len(p.Ancestors) > 0 {
		for i, a := range p.Ancestors {
			st := cc.Step{ExecID: a.ExecID, PID: a.PID, UID: a.UID, Binary: a.Binary, Args: a.Args}
			if i+1 < len(p.Ancestors) {
				st.ParentExecID = p.Ancestors[i+1].ExecID
			}
			steps = append(steps, st)
		}
	} else {
		seen := map[string]bool{p.ExecID: true}
		parent := p.ParentExecID
		for parent != "" && !seen[parent] && len(steps) < maxLineage {
			seen[parent] = true
			ex, err := s.execEvent(ctx, parent)
			if err != nil {
				return nil, err
			}
			if ex == nil || ex.Process == nil {
				steps = append(steps, cc.Step{ExecID: parent}) // known to exist, never seen
				break
			}
			q := ex.Process
			steps = append(steps, cc.Step{ExecID: q.ExecID, PID: q.PID, UID: q.UID, Binary: q.Binary, Args: q.Args, ParentExecID: q.ParentExecID})
			parent = q.ParentExecID
		}
	}
	// Enrich every step from its process.exec event, when stored.
	for i := range steps {
		if steps[i].ExecID == "" {
			continue
		}
		ex, err := s.execEvent(ctx, steps[i].ExecID)
		if err != nil {
			return nil, err
		}
		if ex == nil {
			continue
		}
		t := ex.Time
		steps[i].ExecEventID, steps[i].ExecTime = ex.ID, &t
		if ex.Process != nil {
			if steps[i].Binary == "" {
				steps[i].Binary = ex.Process.Binary
			}
			if len(steps[i].Args) == 0 {
				steps[i].Args = ex.Process.Args
			}
			if steps[i].ParentExecID == "" {
				steps[i].ParentExecID = ex.Process.ParentExecID
			}
		}
	}
	for i, j := 0, len(steps)-1; i < j; i, j = i+1, j-1 {
		steps[i], steps[j] = steps[j], steps[i]
	}
	return steps, nil
}

// execEvent returns the process.exec event of an exec id, or nil.
func (s *Server) execEvent(ctx context.Context, execID string) (*event.Event, error) {
	if execID == "" {
		return nil, nil
	}
	rows, err := s.cfg.Store.Query(ctx, store.Filter{ExecID: execID, Types: []string{string(event.ProcessExec)}, Limit: 1})
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	return rows[0].Event()
}

// sessionTypes are the events that start (the first) or end a session.
var sessionTypes = []string{string(event.SessionLogin), string(event.SessionLogout), string(event.SessionExpired), string(event.SessionKilled)}

func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query(), time.Now(), "since", "user", "host", "limit")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out, err := s.Sessions(r.Context(), f)
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// Sessions lists at most f.Limit sessions, newest first, with a session
// event matching f (since, user, host): login, end and targets of each.
// Callers check the reader role first.
func (s *Server) Sessions(ctx context.Context, f store.Filter) (*cc.SessionList, error) {
	limit := f.Limit
	// Session events are few next to everything else; reading them all in
	// the window and grouping here keeps the SQL simple.
	f.Types, f.Limit, f.Desc = sessionTypes, 0, true
	rows, err := s.cfg.Store.Query(ctx, f)
	if err != nil {
		return nil, err
	}
	byID := map[string]*cc.Session{}
	var order []string
	for _, row := range rows {
		e, err := row.Event()
		if err != nil {
			return nil, err
		}
		key := row.SessionID
		if key == "" {
			key = "event:" + row.ID // a session event without a session id still shows
		}
		ss, ok := byID[key]
		if !ok {
			if len(order) == limit {
				continue
			}
			ss = &cc.Session{SessionID: row.SessionID, HostID: row.HostID, Targets: []string{}}
			byID[key] = ss
			order = append(order, key)
		}
		applySessionEvent(ss, row, e)
	}
	out := &cc.SessionList{Sessions: make([]cc.Session, 0, len(order))}
	for _, key := range order {
		ss := byID[key]
		if ss.SessionID != "" {
			if ss.Login == nil {
				// Logged in before the window: fetch the login itself.
				if err := s.fill(ctx, ss, []string{string(event.SessionLogin)}); err != nil {
					return nil, err
				}
			}
			if ss.End == nil {
				if err := s.fill(ctx, ss, sessionTypes[1:]); err != nil {
					return nil, err
				}
			}
			if ss.Targets, err = s.cfg.Store.DistinctTargets(ctx, ss.SessionID); err != nil {
				return nil, err
			}
			if ss.Targets == nil {
				ss.Targets = []string{}
			}
		}
		out.Sessions = append(out.Sessions, *ss)
	}
	sort.SliceStable(out.Sessions, func(i, j int) bool {
		return sessionStart(&out.Sessions[i]).After(sessionStart(&out.Sessions[j]))
	})
	return out, nil
}

func (s *Server) fill(ctx context.Context, ss *cc.Session, types []string) error {
	rows, err := s.cfg.Store.Query(ctx, store.Filter{SessionID: ss.SessionID, Types: types, Limit: 1})
	if err != nil {
		return err
	}
	for _, row := range rows {
		e, err := row.Event()
		if err != nil {
			return err
		}
		applySessionEvent(ss, row, e)
	}
	return nil
}

func applySessionEvent(ss *cc.Session, row store.Row, e *event.Event) {
	if e.Identity != nil && ss.Sub == "" {
		ss.Sub, ss.Email, ss.Name = e.Identity.Sub, e.Identity.Email, e.Identity.Name
	}
	t := e.Time
	switch e.Type {
	case event.SessionLogin:
		if ss.Login == nil || t.Before(*ss.Login) {
			ss.Login, ss.LoginEventID = &t, e.ID
		}
	case event.SessionLogout, event.SessionExpired, event.SessionKilled:
		if ss.End == nil || t.Before(*ss.End) {
			ss.End, ss.EndType = &t, string(e.Type)
		}
	}
	if len(row.Integrity) > 0 {
		ss.Flagged = append(ss.Flagged, row.ID)
	}
}

func sessionStart(s *cc.Session) time.Time {
	if s.Login != nil {
		return *s.Login
	}
	if s.End != nil {
		return *s.End
	}
	return time.Time{}
}

// errTokenExpired ends a follow stream at its token's (or session's)
// expiry.
var errTokenExpired = errors.New("the caller's ID token expired")

// follow streams matching events as JSON lines while they are stored.
func (s *Server) follow(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	f, err := ParseFilter(r.URL.Query(), time.Now(), "type", "user", "host", "target", "since")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if f.Since.IsZero() {
		// Only new events; with since, stored ones from then on come first.
		if f.AfterRow, err = s.cfg.Store.LastRowID(ctx); err != nil {
			s.internal(w, err)
			return
		}
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	// A stream lasts no longer than the token that opened it: past its
	// expiry the caller is no longer a verified reader.
	c := claimsOf(ctx)
	if c != nil && !c.Expiry.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadlineCause(ctx, c.Expiry, errTokenExpired)
		defer cancel()
	}
	err = s.Follow(ctx, f, func(rows []store.Row) error {
		for _, row := range rows {
			if _, err := w.Write(append(row.Raw, '\n')); err != nil {
				return err
			}
		}
		return rc.Flush()
	}, func() error {
		if _, err := w.Write([]byte("\n")); err != nil {
			return err
		}
		return rc.Flush()
	})
	switch {
	case errors.Is(context.Cause(ctx), errTokenExpired):
		b, _ := json.Marshal(cc.ErrorBody{Error: fmt.Sprintf("your ID token expired at %s: the stream ends; run warden login and follow again",
			c.Expiry.UTC().Format(time.RFC3339))})
		_, _ = w.Write(append(b, '\n'))
		_ = rc.Flush()
	case err != nil && ctx.Err() == nil && !errors.Is(err, errClient):
		s.log.Error().Err(err).Msg("follow query")
		b, _ := json.Marshal(cc.ErrorBody{Error: "internal error reading events; reconnect"})
		_, _ = w.Write(append(b, '\n'))
	}
}

// errClient marks a failed write to the client, which ends a stream
// without an error message.
var errClient = errors.New("client write failed")

// Follow calls emit with each batch of events that match f and were
// stored after row f.AfterRow, oldest first, as they are stored (woken by
// the Notifier), and idle every keepAlive without any. It returns when
// ctx ends (nil), when emit or idle fails (an error wrapping errClient),
// or when the store fails. Callers check the reader role first.
func (s *Server) Follow(ctx context.Context, f store.Filter, emit func([]store.Row) error, idle func() error) error {
	f.Limit, f.ByRow, f.AfterID, f.Desc = followPage, true, "", false
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		// Take the wake-up channel before querying, so an insert that lands
		// between the query and the wait is not missed.
		wake := s.cfg.Notifier.Wait()
		rows, err := s.cfg.Store.Query(ctx, f)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("follow: %w", err)
		}
		if len(rows) > 0 {
			if err := emit(rows); err != nil {
				return fmt.Errorf("%w: %w", errClient, err)
			}
			f.AfterRow = rows[len(rows)-1].RowID
		}
		if len(rows) == followPage {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-tick.C:
			if err := idle(); err != nil {
				return fmt.Errorf("%w: %w", errClient, err)
			}
		}
	}
}

// health serves GET /healthz without a token, for load balancers and
// service managers, which hold no ID token: it says only whether the
// collector can read its store. The counters (how many events, from
// which consumer) describe the fleet's activity, so only a reader's
// token gets them; any other or no token is not refused, just answered
// with the status alone.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	n, err := s.cfg.Store.Count(r.Context())
	if err != nil {
		s.log.Error().Err(err).Msg("health: store")
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	if !s.healthReader(r) {
		writeJSON(w, http.StatusOK, struct {
			Status string `json:"status"`
		}{"ok"})
		return
	}
	h := cc.Health{Status: "ok", Stored: n}
	if s.cfg.Stats != nil {
		h.Ingest = s.cfg.Stats()
	}
	if s.cfg.Reviews != nil {
		rs := s.cfg.Reviews.Stats()
		h.Reviews = &rs
	}
	writeJSON(w, http.StatusOK, h)
}

// healthReader reports whether a health check carries a reader's valid
// token.
func (s *Server) healthReader(r *http.Request) bool {
	tok, ok := bearer(r)
	if !ok || s.cfg.Verifier == nil {
		return false
	}
	c, err := s.cfg.Verifier.Verify(r.Context(), tok)
	return err == nil && s.IsReader(c)
}

func (s *Server) internal(w http.ResponseWriter, err error) {
	s.log.Error().Err(err).Msg("request failed")
	writeError(w, http.StatusInternalServerError, "internal error: "+err.Error())
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, cc.ErrorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func joinComma(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}
