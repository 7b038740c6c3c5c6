// Package reviews is the agent's side of reviews. It opens a review at the
// collector when a review rule holds a request (or a person asks for
// just-in-time access), waits for the decision while the codec holds the
// client, and keeps the host's live access grants for the kernel's access
// table.
//
// The collector is the only place reviews are decided: every question goes
// to it over NATS request/reply (pkg/review), and decisions come back on
// the host's update subject. When it cannot be asked, a held request is
// refused at once: a review that cannot happen never allows anything.
package reviews

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/pkg/review"
)

// Defaults.
const (
	// DefaultTimeout bounds one request to the collector.
	DefaultTimeout = 3 * time.Second
	// pollEvery is how often a held request asks for its review, in case
	// the update that decided it was missed (a reconnect, say).
	pollEvery = 5 * time.Second
	// grantsEvery is how often the live access grants are fetched again,
	// for the same reason.
	grantsEvery = 30 * time.Second
)

// ErrUnreachable is returned when the collector cannot be asked.
var ErrUnreachable = errors.New("review service unreachable")

// Recorder stores events; *recorder.Recorder is one.
type Recorder interface {
	Emit(*event.Event) error
}

// Config configures a Client.
type Config struct {
	// URL is the agent's NATS URL (agent.yaml nats.url).
	URL    string
	HostID string
	// NATSOptions are added to the connection's options (credentials, TLS).
	NATSOptions []nats.Option
	// Recorder receives review.decided events.
	Recorder Recorder
	// GrantsChanged is called (from the client's goroutine) when the set
	// of live access grants changed, so the daemon can sync the kernel.
	GrantsChanged func()
	// Timeout bounds one request; default DefaultTimeout.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger zerolog.Logger
}

// Grant is a live just-in-time access window.
type Grant struct {
	ReviewID string
	Sub      string
	Target   string
	Until    time.Time
}

// Client talks to the collector's review service. Run it once; Review and
// RequestAccess may be called from any goroutine meanwhile.
type Client struct {
	cfg Config
	log zerolog.Logger

	mu      sync.Mutex
	nc      *nats.Conn // set while Run runs
	waiters map[string][]chan *review.Review
	grants  map[string]review.Review // live access grants, by review id
	pending map[string]string        // sub + "\x00" + target → pending access review id
	decided map[string]review.State  // review.decided emitted, by review id
}

// New returns a Client; nothing connects until Run.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("reviews: no NATS URL")
	}
	if cfg.HostID == "" {
		return nil, errors.New("reviews: no host id")
	}
	if cfg.Recorder == nil {
		return nil, errors.New("reviews: no recorder")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{
		cfg: cfg, log: cfg.Logger.With().Str("component", "reviews").Logger(),
		waiters: map[string][]chan *review.Review{}, grants: map[string]review.Review{},
		pending: map[string]string{}, decided: map[string]review.State{},
	}, nil
}

// Run connects, follows the host's review updates and refreshes the access
// grants until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	refresh := make(chan struct{}, 1)
	poke := func() {
		select {
		case refresh <- struct{}{}:
		default:
		}
	}
	opts := append([]nats.Option{
		nats.Name("wardend reviews " + c.cfg.HostID),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ConnectHandler(func(*nats.Conn) { poke() }),
		nats.ReconnectHandler(func(*nats.Conn) { poke() }),
	}, c.cfg.NATSOptions...)
	nc, err := nats.Connect(c.cfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("reviews: connect %s: %w", c.cfg.URL, err)
	}
	defer nc.Close()
	updates := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(review.HostUpdates(c.cfg.HostID), updates)
	if err != nil {
		return fmt.Errorf("reviews: subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	c.mu.Lock()
	c.nc = nc
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.nc = nil
		c.mu.Unlock()
	}()
	poke()
	tick := time.NewTicker(grantsEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-updates:
			var r review.Review
			if err := json.Unmarshal(m.Data, &r); err != nil || r.ID == "" {
				c.log.Warn().Str("subject", m.Subject).Msg("malformed review update ignored")
				continue
			}
			if r.Host != c.cfg.HostID {
				// Another host whose id maps to the same subject token.
				continue
			}
			c.update(&r)
		case <-refresh:
			c.refreshGrants(ctx)
		case <-tick.C:
			c.refreshGrants(ctx)
			c.expireGrants()
		}
	}
}

// Connected reports whether the client can ask the collector now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nc != nil && c.nc.IsConnected()
}

// request asks the collector and decodes its Reply.
func (c *Client) request(ctx context.Context, subject string, body any) (*review.Reply, error) {
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc == nil || !nc.IsConnected() {
		return nil, ErrUnreachable
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", subject, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, subject, err)
	}
	var rep review.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return nil, fmt.Errorf("%s: malformed reply: %w", subject, err)
	}
	if rep.Error != "" {
		return nil, fmt.Errorf("%s: %s", subject, rep.Error)
	}
	if rep.Review == nil && subject != review.SubjectGrants {
		return nil, fmt.Errorf("%s: reply without a review", subject)
	}
	return &rep, nil
}

// Review implements proxy.Reviews: it opens (or uses) a review of req for
// the stream attributed to att, records review.requested through audit,
// and waits as req.Hold says.
func (c *Client) Review(ctx context.Context, att *proxy.Attribution, audit *proxy.Audit, req guard.ReviewRequest) guard.ReviewResult {
	if att.Identity == nil {
		return guard.ReviewResult{Outcome: guard.ReviewUnavailable, Detail: "no verified identity to review for"}
	}
	open := review.OpenRequest{
		Kind: review.KindStatement, Host: c.cfg.HostID, Requester: person(att.Identity), SessionID: att.SessionID,
		Target: att.Target.Name, Rule: req.Rule, Statement: req.Request.Text, Fingerprint: review.Fingerprint(req.Request.Exact),
		Approvers: req.Spec.Approvers, Require: review.Require(req.Spec.Require), GrantOnce: req.Spec.GrantOnce, GrantFor: review.Duration(req.Spec.GrantFor),
	}
	rep, err := c.request(ctx, review.SubjectOpen, open)
	if err != nil {
		c.log.Warn().Err(err).Str("rule", req.Rule).Msg("review could not be opened; refusing")
		return guard.ReviewResult{Outcome: guard.ReviewUnavailable, Detail: err.Error()}
	}
	r := rep.Review
	if rep.Used {
		return guard.ReviewResult{Outcome: guard.ReviewApproved, ID: r.ID}
	}
	if err := c.requested(audit, r, req.Spec, req.Hold); err != nil {
		// No record, no review: the request does not run.
		return guard.ReviewResult{Outcome: guard.ReviewUnavailable, ID: r.ID, Detail: err.Error()}
	}
	if req.Hold <= 0 {
		return guard.ReviewResult{Outcome: guard.ReviewPending, ID: r.ID}
	}
	return c.wait(ctx, r, req)
}

// wait holds until r is decided, the hold ends or ctx is done.
func (c *Client) wait(ctx context.Context, r *review.Review, req guard.ReviewRequest) guard.ReviewResult {
	ch := make(chan *review.Review, 4)
	c.mu.Lock()
	c.waiters[r.ID] = append(c.waiters[r.ID], ch)
	c.mu.Unlock()
	defer c.unwait(r.ID, ch)

	start := c.cfg.Now()
	deadline := time.NewTimer(req.Hold)
	defer deadline.Stop()
	notice := time.NewTicker(guard.NoticeEvery)
	defer notice.Stop()
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	if req.Waiting != nil {
		req.Waiting(guard.Waiting{ID: r.ID, Rule: req.Rule, Hold: req.Hold, Left: req.Hold})
	}
	cur := r
	for {
		if res, done := c.settled(ctx, cur); done {
			return res
		}
		select {
		case <-ctx.Done():
			return guard.ReviewResult{Outcome: guard.ReviewCancelled, ID: r.ID}
		case <-deadline.C:
			return guard.ReviewResult{Outcome: guard.ReviewPending, ID: r.ID}
		case <-notice.C:
			if req.Waiting != nil {
				req.Waiting(guard.Waiting{ID: r.ID, Rule: req.Rule, Hold: req.Hold, Left: max(0, req.Hold-c.cfg.Now().Sub(start))})
			}
		case u := <-ch:
			cur = u
		case <-poll.C:
			if rep, err := c.request(ctx, review.SubjectGet, review.GetRequest{ID: r.ID}); err == nil {
				cur = rep.Review
			}
		}
	}
}

// settled turns a decided review into the held request's result: an
// approval is used (once) before the request may run.
func (c *Client) settled(ctx context.Context, r *review.Review) (guard.ReviewResult, bool) {
	switch r.State {
	case review.Approved:
		if r.GrantOnce {
			if _, err := c.request(ctx, review.SubjectUse, review.UseRequest{ID: r.ID, Host: c.cfg.HostID}); err != nil {
				// Another session used the grant first, or the
				// collector went away: the request does not run.
				return guard.ReviewResult{Outcome: guard.ReviewUnavailable, ID: r.ID, Detail: err.Error()}, true
			}
		}
		return guard.ReviewResult{Outcome: guard.ReviewApproved, ID: r.ID}, true
	case review.Denied:
		d, _ := r.LastDecision()
		return guard.ReviewResult{Outcome: guard.ReviewDenied, ID: r.ID, By: d.By.Name(), Reason: d.Reason}, true
	case review.Expired:
		return guard.ReviewResult{Outcome: guard.ReviewPending, ID: r.ID}, true
	}
	return guard.ReviewResult{}, false
}

func (c *Client) unwait(id string, ch chan *review.Review) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiters[id] = slices.DeleteFunc(c.waiters[id], func(x chan *review.Review) bool { return x == ch })
	if len(c.waiters[id]) == 0 {
		delete(c.waiters, id)
	}
}

// requested records review.requested.
func (c *Client) requested(audit *proxy.Audit, r *review.Review, spec policy.ReviewSpec, hold time.Duration) error {
	reason := fmt.Sprintf("warden: review %s required by rule %q", r.ID, r.Rule)
	_, err := audit.Request(event.ReviewRequested, event.Decision{Action: event.Review, Rule: r.Rule, Reason: reason}, requestData(r, spec, hold))
	return err
}

// requestData is review.requested's data for r, opened under spec, with
// the client held for hold.
func requestData(r *review.Review, spec policy.ReviewSpec, hold time.Duration) event.ReviewRequest {
	return event.ReviewRequest{ID: r.ID, Kind: string(r.Kind), Rule: r.Rule, Statement: r.Statement, Fingerprint: r.Fingerprint,
		Reason: r.Reason, Approvers: r.Approvers, Require: string(r.Require), Grant: spec.Grant(), Hold: hold, ExpiresAt: r.ExpiresAt}
}

// update handles a review change the collector published.
func (c *Client) update(r *review.Review) {
	c.mu.Lock()
	for _, ch := range c.waiters[r.ID] {
		select {
		case ch <- r:
		default:
		}
	}
	changed := false
	if r.Kind == review.KindAccess {
		key := r.Requester.Sub + "\x00" + r.Target
		switch {
		case r.State == review.Pending:
			c.pending[key] = r.ID
		case r.Live(c.cfg.Now()):
			_, had := c.grants[r.ID]
			c.grants[r.ID], changed = *r, !had
			delete(c.pending, key)
		default:
			_, had := c.grants[r.ID]
			delete(c.grants, r.ID)
			changed = had
			if c.pending[key] == r.ID {
				delete(c.pending, key)
			}
		}
	}
	emit := r.State != review.Pending && c.decided[r.ID] != r.State
	if emit {
		c.decided[r.ID] = r.State
	}
	c.mu.Unlock()
	if emit {
		c.emitDecided(r)
	}
	if changed && c.cfg.GrantsChanged != nil {
		c.cfg.GrantsChanged()
	}
}

// emitDecided records review.decided, attributed to the requester.
func (c *Client) emitDecided(r *review.Review) {
	d := event.ReviewDecision{ID: r.ID, Kind: string(r.Kind), Rule: r.Rule, Outcome: string(r.State), Fingerprint: r.Fingerprint, RequestedAt: r.CreatedAt}
	if last, ok := r.LastDecision(); ok {
		d.Reviewer, d.Comment = last.By.Name(), last.Reason
	}
	for _, x := range r.Decisions {
		if x.Approve {
			d.Approvals = append(d.Approvals, x.By.Name())
		}
	}
	if r.DecidedAt != nil {
		d.DecidedAt = *r.DecidedAt
	}
	if r.GrantUntil != nil {
		d.GrantUntil = *r.GrantUntil
	}
	action := event.Deny
	if r.State == review.Approved {
		action = event.Allow
	}
	e := &event.Event{
		Type:     event.ReviewDecided,
		Identity: &event.Identity{Sub: r.Requester.Sub, Email: r.Requester.Email, Groups: r.Requester.Groups, SessionID: r.SessionID},
		Target:   &event.Target{Name: r.Target},
		Decision: &event.Decision{Action: action, Rule: r.Rule, Reason: fmt.Sprintf("review %s %s", r.ID, r.State)},
		Data:     d.Data(),
	}
	if err := c.cfg.Recorder.Emit(e); err != nil {
		c.log.Warn().Err(err).Str("review", r.ID).Msg("review.decided not recorded")
	}
}

// refreshGrants asks for the host's live access grants, which replace the
// ones held: an update missed while away is caught up here.
func (c *Client) refreshGrants(ctx context.Context) {
	rep, err := c.request(ctx, review.SubjectGrants, review.GrantsRequest{Host: c.cfg.HostID})
	if err != nil {
		c.log.Debug().Err(err).Msg("access grants not refreshed")
		return
	}
	now := c.cfg.Now()
	c.mu.Lock()
	fresh := map[string]review.Review{}
	for _, r := range rep.Reviews {
		if r.Kind == review.KindAccess && r.Host == c.cfg.HostID && r.Live(now) {
			fresh[r.ID] = r
		}
	}
	changed := len(fresh) != len(c.grants)
	for id := range fresh {
		if _, ok := c.grants[id]; !ok {
			changed = true
		}
	}
	c.grants = fresh
	c.mu.Unlock()
	for i := range rep.Reviews {
		c.update(&rep.Reviews[i])
	}
	if changed && c.cfg.GrantsChanged != nil {
		c.cfg.GrantsChanged()
	}
}

// expireGrants drops grants whose window ended; the kernel already refuses
// them, this keeps the table small.
func (c *Client) expireGrants() {
	now := c.cfg.Now()
	c.mu.Lock()
	changed := false
	for id, r := range c.grants {
		if !r.Live(now) {
			delete(c.grants, id)
			changed = true
		}
	}
	c.mu.Unlock()
	if changed && c.cfg.GrantsChanged != nil {
		c.cfg.GrantsChanged()
	}
}

// Grants returns the live access grants.
func (c *Client) Grants() []Grant {
	if c == nil {
		return nil
	}
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Grant
	for _, r := range c.grants {
		if r.Live(now) {
			out = append(out, Grant{ReviewID: r.ID, Sub: r.Requester.Sub, Target: r.Target, Until: *r.GrantUntil})
		}
	}
	return out
}

// PendingAccess returns the id of sub's pending access review of target,
// "" when there is none, for denial events.
func (c *Client) PendingAccess(sub, target string) string {
	if c == nil {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[sub+"\x00"+target]
}

// AccessRequest is a person's request for a just-in-time window.
type AccessRequest struct {
	Identity  *event.Identity
	SessionID string
	Target    string
	Reason    string
	// For is the window asked for; at most, and by default, the grant.
	For  time.Duration
	Spec policy.ReviewSpec
}

// RequestAccess opens an access review and records review.requested.
func (c *Client) RequestAccess(ctx context.Context, req AccessRequest) (*review.Review, error) {
	window := req.Spec.GrantFor
	if req.For > 0 {
		if req.For > window {
			return nil, fmt.Errorf("--for %s is longer than the %s the policy grants for %s", req.For, window, req.Target)
		}
		window = req.For
	}
	rep, err := c.request(ctx, review.SubjectOpen, review.OpenRequest{
		Kind: review.KindAccess, Host: c.cfg.HostID, Requester: person(req.Identity), SessionID: req.SessionID,
		Target: req.Target, Rule: review.AccessRule, Reason: req.Reason,
		Approvers: req.Spec.Approvers, Require: review.Require(req.Spec.Require), GrantFor: review.Duration(window),
	})
	if err != nil {
		return nil, err
	}
	r := rep.Review
	c.mu.Lock()
	if r.State == review.Pending {
		c.pending[r.Requester.Sub+"\x00"+r.Target] = r.ID
	}
	c.mu.Unlock()
	spec := req.Spec
	spec.GrantFor = window
	e := &event.Event{
		Type: event.ReviewRequested, Identity: req.Identity, Target: &event.Target{Name: req.Target},
		Decision: &event.Decision{Action: event.Review, Rule: review.AccessRule, Reason: fmt.Sprintf("warden: access review %s opened for %s", r.ID, req.Target)},
		Data:     requestData(r, spec, 0).Data(),
	}
	if err := c.cfg.Recorder.Emit(e); err != nil {
		return nil, fmt.Errorf("the audit log cannot record the request: %w", err)
	}
	return r, nil
}

func person(id *event.Identity) review.Person {
	return review.Person{Sub: id.Sub, Email: id.Email, Groups: id.Groups}
}
