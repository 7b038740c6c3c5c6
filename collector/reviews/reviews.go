// Package reviews is the collector's review service: the one queue where
// the reviews of every bastion meet. Agents open and use reviews over NATS
// request/reply (the subjects of pkg/review); people list and decide them
// through the collector's HTTP API, which calls this service. Every change
// is stored first, then published on warden.reviews.<host>.<id> for the
// agents and the SOC, and requests and decisions are posted to an optional
// webhook.
package reviews

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector/store"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/review"
)

// QueueGroup is the NATS queue group of the request subjects: collectors
// sharing it split the agents' requests between them.
const QueueGroup = "warden-collector"

// DefaultSweepEvery is how often pending reviews and unused once-grants
// are checked for expiry.
const DefaultSweepEvery = 2 * time.Second

const (
	// workers answer the request subjects concurrently; each request is
	// one SQLite transaction, so a few are plenty.
	workers = 4
	// inbox bounds the requests waiting for a worker; beyond it NATS
	// drops them (slow consumer) and the agent, timing out, fails closed.
	inbox = 256
	// requestTimeout bounds the work on one request.
	requestTimeout = 10 * time.Second
	// flushTimeout bounds the wait for the NATS server to take a
	// publication.
	flushTimeout = 5 * time.Second
	// maxRequest bounds a request body.
	maxRequest = 256 << 10
)

// Errors of the service; the API maps them to HTTP statuses. They are
// wrapped in errors that say what happened, so match with errors.Is.
var (
	// ErrInvalid: the request is malformed (400).
	ErrInvalid = errors.New("invalid review request")
	// ErrNotFound: no review has the id (404).
	ErrNotFound = errors.New("no such review")
	// ErrNotPending: the review was already decided or expired (409).
	ErrNotPending = errors.New("review is not pending")
	// ErrAlreadyDecided: the person already decided this review (409).
	ErrAlreadyDecided = errors.New("already decided by this person")
	// ErrNotDecider: the person may not decide this review (403).
	ErrNotDecider = errors.New("may not decide this review")
	// ErrNotUsable: a Use that the review does not grant.
	ErrNotUsable = errors.New("review grants nothing to use")
)

// failure is an error whose text is a whole sentence for people, while
// errors.Is still finds its kind.
type failure struct {
	kind error
	msg  string
}

func (f *failure) Error() string { return f.msg }
func (f *failure) Unwrap() error { return f.kind }

func fail(kind error, format string, args ...any) error {
	return &failure{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// wrap gives an unexpected error (the store's) its context; a failure
// already says everything and is returned as it is.
func wrap(err error, format string, args ...any) error {
	var f *failure
	if errors.As(err, &f) {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// Config configures a Service.
type Config struct {
	Store *store.Store
	// NATS answers the agents' requests and carries the publications.
	NATS *nats.Conn
	// Webhook, if set, receives each request and decision (POST, JSON,
	// Slack-compatible).
	Webhook string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// SweepEvery is how often expiry is checked; 0 means
	// DefaultSweepEvery.
	SweepEvery time.Duration
	// WebhookClient posts to the webhook; nil means a client with a
	// timeout of WebhookTimeout.
	WebhookClient *http.Client
	// WebhookBackoff is the wait before the first retry of a failed
	// delivery (doubled for each further one); 0 means one second.
	WebhookBackoff time.Duration
	Logger         zerolog.Logger
}

// Service stores, decides, expires and publishes reviews.
type Service struct {
	st    *store.Store
	nc    *nats.Conn
	now   func() time.Time
	every time.Duration
	log   zerolog.Logger
	hook  *webhook // nil without a webhook
	ready chan struct{}

	publishFailed atomic.Uint64
}

// New checks cfg and returns a Service; nothing runs until Run.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("reviews: no store")
	}
	if cfg.NATS == nil {
		return nil, errors.New("reviews: no NATS connection")
	}
	s := &Service{
		st: cfg.Store, nc: cfg.NATS, now: cfg.Now, every: cfg.SweepEvery,
		log:   cfg.Logger.With().Str("component", "reviews").Logger(),
		ready: make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.every <= 0 {
		s.every = DefaultSweepEvery
	}
	if cfg.Webhook != "" {
		h, err := newWebhook(cfg.Webhook, cfg.WebhookClient, cfg.WebhookBackoff, s.log)
		if err != nil {
			return nil, err
		}
		s.hook = h
	}
	return s, nil
}

// Ready is closed once Run's subscriptions are registered with the NATS
// server.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Run answers the request subjects, expires reviews and delivers webhooks
// until ctx ends; every goroutine it starts has returned when it returns.
func (s *Service) Run(ctx context.Context) error {
	msgs := make(chan *nats.Msg, inbox)
	var subs []*nats.Subscription
	unsubscribe := func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		subs = nil
	}
	defer unsubscribe()
	for _, subj := range []string{review.SubjectOpen, review.SubjectUse, review.SubjectGet, review.SubjectGrants} {
		sub, err := s.nc.ChanQueueSubscribe(subj, QueueGroup, msgs)
		if err != nil {
			return fmt.Errorf("reviews: subscribe to %s: %w", subj, err)
		}
		subs = append(subs, sub)
	}
	if err := s.nc.FlushTimeout(flushTimeout); err != nil {
		return fmt.Errorf("reviews: register subscriptions: %w", err)
	}
	close(s.ready)
	s.log.Info().Str("queue", QueueGroup).Bool("webhook", s.hook != nil).Msg("review service answering")

	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case m := <-msgs:
					s.handle(ctx, m)
				}
			}
		})
	}
	wg.Go(func() { s.sweepLoop(ctx) })
	if s.hook != nil {
		wg.Go(func() { s.hook.run(ctx) })
	}
	<-ctx.Done()
	// No new requests reach the inbox once unsubscribed; those already in
	// it go unanswered, and their agents, timing out, fail closed.
	unsubscribe()
	wg.Wait()
	return nil
}

// handle answers one request message.
func (s *Service) handle(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	rep := s.answer(ctx, m.Subject, m.Data)
	rep.Now = s.now().UTC()
	if m.Reply == "" {
		return
	}
	b, err := json.Marshal(rep)
	if err != nil {
		b, _ = json.Marshal(review.Reply{Error: "encode reply: " + err.Error(), Now: rep.Now})
	}
	if err := m.Respond(b); err != nil {
		s.log.Warn().Err(err).Str("subject", m.Subject).Msg("reply to agent")
	}
}

func (s *Service) answer(ctx context.Context, subject string, data []byte) review.Reply {
	if len(data) > maxRequest {
		return review.Reply{Error: fmt.Sprintf("%s: request of %d bytes is over the limit of %d", subject, len(data), maxRequest)}
	}
	decode := func(v any) error {
		if err := json.Unmarshal(data, v); err != nil {
			return fail(ErrInvalid, "%s: request is not valid JSON: %v", subject, err)
		}
		return nil
	}
	var (
		r    *review.Review
		rs   []review.Review
		used bool
		err  error
	)
	switch subject {
	case review.SubjectOpen:
		var req review.OpenRequest
		if err = decode(&req); err == nil {
			r, used, err = s.Open(ctx, req)
		}
	case review.SubjectUse:
		var req review.UseRequest
		if err = decode(&req); err == nil {
			r, err = s.Use(ctx, req)
		}
	case review.SubjectGet:
		var req review.GetRequest
		if err = decode(&req); err == nil {
			r, err = s.Get(ctx, req.ID)
		}
	case review.SubjectGrants:
		var req review.GrantsRequest
		if err = decode(&req); err == nil {
			rs, err = s.Grants(ctx, req.Host)
		}
	default:
		err = fmt.Errorf("no such review subject %q", subject)
	}
	if err != nil {
		var f *failure
		if !errors.As(err, &f) {
			s.log.Error().Err(err).Str("subject", subject).Msg("review request failed")
		}
		return review.Reply{Error: err.Error()}
	}
	if subject == review.SubjectGrants && rs == nil {
		rs = []review.Review{}
	}
	return review.Reply{Review: r, Reviews: rs, Used: used}
}

// Open opens a review for req, or returns the one that already stands for
// it: for a statement, a live grant of the same requester, host, target,
// rule and fingerprint is used (used is true: the statement may run now;
// a grant: once is spent), else a pending one is returned; for access, a
// pending or live review of the same requester, host and target is
// returned as it is.
func (s *Service) Open(ctx context.Context, req review.OpenRequest) (r *review.Review, used bool, err error) {
	if err := validateOpen(&req); err != nil {
		return nil, false, err
	}
	now := s.now().UTC()
	var changed []*review.Review
	var created bool
	err = s.st.UpdateReviews(ctx, func(tx *store.ReviewTx) error {
		r, used, created, changed = nil, false, false, nil
		f := store.ReviewFilter{Kind: req.Kind, Host: req.Host, Sub: req.Requester.Sub, Target: req.Target, OpenAt: now}
		if req.Kind == review.KindStatement {
			f.Rule, f.Fingerprint = req.Rule, req.Fingerprint
		}
		cands, err := tx.Reviews(f)
		if err != nil {
			return err
		}
		var pending *review.Review
		for i := range cands {
			c := &cands[i]
			if c.Expire(now) {
				if err := tx.Put(c); err != nil {
					return err
				}
				changed = append(changed, c)
				continue
			}
			if c.Live(now) {
				if req.Kind == review.KindStatement {
					if c.GrantOnce {
						c.UsedAt = &now
						if err := tx.Put(c); err != nil {
							return err
						}
						changed = append(changed, c)
					}
					used = true
				}
				r = c
				return nil
			}
			if c.State == review.Pending && pending == nil {
				pending = c
			}
		}
		if pending != nil {
			r = pending
			return nil
		}
		r = newReview(&req, now)
		if err := tx.Put(r); err != nil {
			return err
		}
		created = true
		changed = append(changed, r)
		return nil
	})
	if err != nil {
		return nil, false, wrap(err, "open review for %s on %s", req.Requester.Sub, req.Target)
	}
	s.publish(changed)
	ev := s.log.Info().Str("review", r.ID).Str("kind", string(r.Kind)).Str("host", r.Host).
		Str("requester", r.Requester.Sub).Str("target", r.Target).Str("rule", r.Rule)
	switch {
	case created:
		ev.Msg("review requested")
		s.notify(EventRequested, r, requestedText(r))
	case used:
		ev.Msg("grant used")
	default:
		ev.Str("state", string(r.State)).Msg("review reused")
	}
	return r, used, nil
}

// newReview is the pending review req asks for.
func newReview(req *review.OpenRequest, now time.Time) *review.Review {
	return &review.Review{
		ID:          "R-" + ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy()).String(),
		Kind:        req.Kind,
		State:       review.Pending,
		Host:        req.Host,
		Requester:   req.Requester,
		SessionID:   req.SessionID,
		Target:      req.Target,
		Rule:        req.Rule,
		Statement:   req.Statement,
		Fingerprint: req.Fingerprint,
		Reason:      req.Reason,
		Approvers:   req.Approvers,
		Require:     req.Require,
		GrantOnce:   req.GrantOnce,
		GrantFor:    req.GrantFor,
		CreatedAt:   now,
		ExpiresAt:   now.Add(review.PendingLifetime),
	}
}

// Use spends an approved grant: once statement review for the agent of
// req.Host, so that a held statement runs only if its agent wins the
// grant. A statement review that grants a window is returned unchanged
// while the window is open.
func (s *Service) Use(ctx context.Context, req review.UseRequest) (*review.Review, error) {
	if !review.ValidID(req.ID) {
		return nil, fail(ErrInvalid, "use: %q is not a review id (R- and a ULID)", req.ID)
	}
	if req.Host == "" {
		return nil, fail(ErrInvalid, "use %s: host_id is required", req.ID)
	}
	now := s.now().UTC()
	var r *review.Review
	var changed []*review.Review
	err := s.st.UpdateReviews(ctx, func(tx *store.ReviewTx) error {
		changed = nil
		var err error
		if r, err = tx.Review(req.ID); err != nil {
			if errors.Is(err, store.ErrReviewNotFound) {
				return fail(ErrNotFound, "no review %s", req.ID)
			}
			return err
		}
		if r.Expire(now) {
			if err := tx.Put(r); err != nil {
				return err
			}
			changed = append(changed, r)
			return fail(ErrNotUsable, "review %s expired unused", r.ID)
		}
		switch {
		case r.Host != req.Host:
			return fail(ErrNotUsable, "review %s belongs to host %s, not %s", r.ID, r.Host, req.Host)
		case r.Kind != review.KindStatement:
			return fail(ErrNotUsable, "review %s is an access review, not a statement to run", r.ID)
		case r.State != review.Approved:
			return fail(ErrNotUsable, "review %s is %s, not approved", r.ID, r.State)
		case r.UsedAt != nil && r.GrantOnce:
			return fail(ErrNotUsable, "review %s was already used at %s", r.ID, r.UsedAt.Format(time.RFC3339))
		case !r.Live(now):
			return fail(ErrNotUsable, "review %s stopped granting at %s", r.ID, r.GrantUntil.Format(time.RFC3339))
		}
		if !r.GrantOnce {
			return nil
		}
		r.UsedAt = &now
		if err := tx.Put(r); err != nil {
			return err
		}
		changed = append(changed, r)
		return nil
	})
	s.publish(changed)
	if err != nil {
		return nil, wrap(err, "use review %s", req.ID)
	}
	s.log.Info().Str("review", r.ID).Str("host", r.Host).Msg("grant used")
	return r, nil
}

// Get returns one review.
func (s *Service) Get(ctx context.Context, id string) (*review.Review, error) {
	if !review.ValidID(id) {
		return nil, fail(ErrInvalid, "%q is not a review id (R- and a ULID)", id)
	}
	r, err := s.st.Review(ctx, id)
	if errors.Is(err, store.ErrReviewNotFound) {
		return nil, fail(ErrNotFound, "no review %s", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get review %s: %w", id, err)
	}
	return r, nil
}

// Grants returns the live access grants of a host.
func (s *Service) Grants(ctx context.Context, host string) ([]review.Review, error) {
	if host == "" {
		return nil, fail(ErrInvalid, "grants: host_id is required")
	}
	now := s.now().UTC()
	rs, err := s.st.Reviews(ctx, store.ReviewFilter{Kind: review.KindAccess, Host: host, States: []review.State{review.Approved}, OpenAt: now})
	if err != nil {
		return nil, fmt.Errorf("grants of host %s: %w", host, err)
	}
	return rs, nil
}

// Query selects reviews for List.
type Query struct {
	// States selects; empty means every state.
	States []review.State
	// Kind selects; empty means both.
	Kind review.Kind
	// Keep, when set, decides which reviews the caller may see.
	Keep  func(*review.Review) bool
	Limit int
}

// List returns the reviews q selects, newest first.
func (s *Service) List(ctx context.Context, q Query) ([]review.Review, error) {
	rs, err := s.st.Reviews(ctx, store.ReviewFilter{States: q.States, Kind: q.Kind, Keep: q.Keep, Limit: q.Limit})
	if err != nil {
		return nil, fmt.Errorf("list reviews: %w", err)
	}
	return rs, nil
}

// maxReason bounds a decision's or a request's reason.
const maxReason = 1024

// Decide records person's approval or denial of review id and settles the
// review. The errors say why it was refused: ErrNotFound, ErrNotPending,
// ErrNotDecider (the requester never decides), ErrAlreadyDecided,
// ErrInvalid.
func (s *Service) Decide(ctx context.Context, id string, person review.Person, approve bool, reason string) (*review.Review, error) {
	if !review.ValidID(id) {
		return nil, fail(ErrInvalid, "%q is not a review id (R- and a ULID)", id)
	}
	if person.Sub == "" {
		return nil, fail(ErrInvalid, "decide %s: the decider has no sub", id)
	}
	reason = strings.TrimSpace(reason)
	if err := checkText("reason", reason, maxReason, true); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	verb := "deny"
	if approve {
		verb = "approve"
	}
	var r *review.Review
	var changed []*review.Review
	var d review.Decision
	err := s.st.UpdateReviews(ctx, func(tx *store.ReviewTx) error {
		changed = nil
		var err error
		if r, err = tx.Review(id); err != nil {
			if errors.Is(err, store.ErrReviewNotFound) {
				return fail(ErrNotFound, "no review %s", id)
			}
			return err
		}
		if r.Expire(now) {
			if err := tx.Put(r); err != nil {
				return err
			}
			changed = append(changed, r)
		}
		if r.State != review.Pending {
			return fail(ErrNotPending, "review %s is already %s", id, r.State)
		}
		groups := r.Decider(person)
		if len(groups) == 0 {
			if person.Sub == r.Requester.Sub {
				return fail(ErrNotDecider, "%s may not %s %s: you requested this review; it needs a member of %s",
					person.Name(), verb, id, strings.Join(r.Approvers, ", "))
			}
			return fail(ErrNotDecider, "%s may not %s %s: not a member of %s", person.Name(), verb, id, strings.Join(r.Approvers, ", "))
		}
		for _, prev := range r.Decisions {
			if prev.By.Sub == person.Sub {
				return fail(ErrAlreadyDecided, "%s already decided %s at %s", person.Name(), id, prev.At.Format(time.RFC3339))
			}
		}
		d = review.Decision{By: person, Approve: approve, Reason: reason, At: now, For: groups}
		r.Decisions = append(r.Decisions, d)
		r.Settle(now)
		if err := tx.Put(r); err != nil {
			return err
		}
		changed = append(changed, r)
		return nil
	})
	// Publish even on refusal: an expiry found on the way was stored.
	s.publish(changed)
	if err != nil {
		return nil, wrap(err, "%s review %s", verb, id)
	}
	s.log.Info().Str("review", r.ID).Str("by", person.Sub).Bool("approve", approve).Strs("for", d.For).
		Str("state", string(r.State)).Msg("review decided")
	s.notify(EventDecided, r, decidedText(r, d))
	return r, nil
}

// Sweep expires the pending reviews past their end and the unused
// once-grants past their window, stores and publishes them, and returns
// how many it expired. Run calls it every SweepEvery.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	now := s.now().UTC()
	var changed []*review.Review
	err := s.st.UpdateReviews(ctx, func(tx *store.ReviewTx) error {
		changed = nil
		due, err := tx.Reviews(store.ReviewFilter{Due: now, Limit: 1000})
		if err != nil {
			return err
		}
		for i := range due {
			r := &due[i]
			if !r.Expire(now) {
				continue
			}
			if err := tx.Put(r); err != nil {
				return err
			}
			changed = append(changed, r)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire reviews: %w", err)
	}
	s.publish(changed)
	for _, r := range changed {
		s.log.Info().Str("review", r.ID).Str("host", r.Host).Msg("review expired")
	}
	return len(changed), nil
}

func (s *Service) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Error().Err(err).Msg("review expiry sweep")
			}
		}
	}
}

// publish sends each changed review on its update subject, then flushes,
// so that the server has them before the caller answers.
func (s *Service) publish(rs []*review.Review) {
	if len(rs) == 0 {
		return
	}
	for _, r := range rs {
		b, err := json.Marshal(r)
		if err == nil {
			err = s.nc.Publish(review.UpdateSubject(r.Host, r.ID), b)
		}
		if err != nil {
			s.publishFailed.Add(1)
			s.log.Error().Err(err).Str("review", r.ID).Msg("publish review update")
		}
	}
	if err := s.nc.FlushTimeout(flushTimeout); err != nil {
		s.publishFailed.Add(1)
		s.log.Error().Err(err).Msg("flush review updates")
	}
}

// Stats returns the service's delivery counters, for /healthz.
func (s *Service) Stats() cc.ReviewStats {
	st := cc.ReviewStats{PublishFailed: s.publishFailed.Load()}
	if s.hook != nil {
		st.WebhookSent, st.WebhookFailed, st.WebhookDropped = s.hook.sent.Load(), s.hook.failed.Load(), s.hook.dropped.Load()
	}
	return st
}
