package reviews

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/pkg/review"
)

// Webhook events.
const (
	EventRequested = "review.requested"
	EventDecided   = "review.decided"
)

// Webhook delivery bounds.
const (
	// WebhookTimeout bounds one POST.
	WebhookTimeout = 5 * time.Second
	// webhookAttempts is how many times a delivery is tried.
	webhookAttempts = 3
	// webhookQueue bounds the deliveries waiting; beyond it they are
	// dropped and counted, so that a dead receiver never slows decisions.
	webhookQueue = 256
)

// WebhookPayload is the JSON body POSTed to --webhook: Slack-compatible
// (Slack shows Text), with the review for machines.
type WebhookPayload struct {
	// Text is one readable line, escaped for Slack's mrkdwn.
	Text string `json:"text"`
	// Event is EventRequested or EventDecided.
	Event  string         `json:"event"`
	Review *review.Review `json:"review"`
}

type webhook struct {
	url string
	// where names the receiver in logs: scheme and host only, since
	// webhook URLs (Slack's) carry their secret in the path.
	where   string
	client  *http.Client
	backoff time.Duration
	q       chan WebhookPayload
	log     zerolog.Logger

	sent, failed, dropped atomic.Uint64
}

// CheckWebhook reports what is wrong with a --webhook URL, if anything;
// "" is fine (no webhook). Its messages never repeat the URL's path, which
// holds the secret of Slack's webhooks.
func CheckWebhook(raw string) error {
	if raw == "" {
		return nil
	}
	_, err := parseWebhook(raw)
	return err
}

func parseWebhook(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("--webhook: not a URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--webhook: want an http or https URL with a host, not %s://%s…", u.Scheme, u.Host)
	}
	return u, nil
}

func newWebhook(raw string, client *http.Client, backoff time.Duration, log zerolog.Logger) (*webhook, error) {
	u, err := parseWebhook(raw)
	if err != nil {
		return nil, err
	}
	if client == nil {
		client = &http.Client{Timeout: WebhookTimeout}
	}
	if backoff <= 0 {
		backoff = time.Second
	}
	where := u.Scheme + "://" + u.Host
	return &webhook{url: raw, where: where, client: client, backoff: backoff,
		q: make(chan WebhookPayload, webhookQueue), log: log.With().Str("webhook", where).Logger()}, nil
}

// notify queues a webhook delivery about r; it never blocks.
func (s *Service) notify(event string, r *review.Review, text string) {
	if s.hook == nil {
		return
	}
	cp := *r
	select {
	case s.hook.q <- WebhookPayload{Text: slackEscape(text), Event: event, Review: &cp}:
	default:
		s.hook.dropped.Add(1)
		s.hook.log.Warn().Str("review", r.ID).Str("event", event).Msg("webhook queue full: delivery dropped")
	}
}

// run delivers queued payloads one at a time until ctx ends.
func (h *webhook) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			if n := len(h.q); n > 0 {
				h.log.Warn().Int("undelivered", n).Msg("webhook deliveries left at shutdown")
			}
			return
		case p := <-h.q:
			h.deliver(ctx, p)
		}
	}
}

func (h *webhook) deliver(ctx context.Context, p WebhookPayload) {
	body, err := json.Marshal(p)
	if err != nil {
		h.failed.Add(1)
		h.log.Error().Err(err).Msg("encode webhook payload")
		return
	}
	wait := h.backoff
	for attempt := 1; ; attempt++ {
		err = h.post(ctx, body)
		if err == nil {
			h.sent.Add(1)
			return
		}
		if attempt == webhookAttempts || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		wait *= 2
	}
	h.failed.Add(1)
	h.log.Warn().Err(err).Str("review", p.Review.ID).Str("event", p.Event).Int("attempts", webhookAttempts).Msg("webhook delivery failed")
}

// post sends one attempt. Its errors never carry the URL.
func (h *webhook) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return errors.New("build request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "warden-collector")
	resp, err := h.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // *url.Error's text repeats the URL
		}
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("receiver answered %s", resp.Status)
	}
	return nil
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// requestedText is the webhook line of a new review.
func requestedText(r *review.Review) string {
	quorum := strings.Join(r.Approvers, " or ")
	if r.Require == review.RequireAll && len(r.Approvers) > 1 {
		quorum = "each of " + strings.Join(r.Approvers, ", ")
	}
	var what string
	if r.Kind == review.KindAccess {
		what = fmt.Sprintf("%s asks for %s of access to %s on %s: %q", r.Requester.Name(), r.GrantFor.D(), r.Target, r.Host, clip(r.Reason, 200))
	} else {
		what = fmt.Sprintf("%s asks to run on %s (rule %q, host %s): %s", r.Requester.Name(), r.Target, r.Rule, r.Host, clip(r.Statement, 200))
	}
	return fmt.Sprintf("warden: %s. Approvers: %s. Review %s: warden review approve %s", what, quorum, r.ID, r.ID)
}

// decidedText is the webhook line of a decision d on r.
func decidedText(r *review.Review, d review.Decision) string {
	subject := fmt.Sprintf("%s's %s on %s", r.Requester.Name(), clip(r.Statement, 120), r.Target)
	if r.Kind == review.KindAccess {
		subject = fmt.Sprintf("%s of access to %s for %s", r.GrantFor.D(), r.Target, r.Requester.Name())
	}
	verb := "denied"
	if d.Approve {
		verb = "approved"
	}
	why := ""
	if d.Reason != "" {
		why = fmt.Sprintf(": %q", clip(d.Reason, 200))
	}
	line := fmt.Sprintf("warden: review %s %s by %s (%s)%s. %s", r.ID, verb, d.By.Name(), strings.Join(d.For, ", "), why, subject)
	if r.State == review.Pending {
		var missing []string
		got := map[string]bool{}
		for _, prev := range r.Decisions {
			for _, g := range prev.For {
				got[g] = true
			}
		}
		for _, g := range r.Approvers {
			if !got[g] {
				missing = append(missing, g)
			}
		}
		line += fmt.Sprintf(". Still pending: needs %s", strings.Join(missing, ", "))
	}
	return line
}
