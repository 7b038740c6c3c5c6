package collectorclient

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wardenhq/warden/pkg/review"
)

// ReviewStats are the review service's delivery counters since start.
type ReviewStats struct {
	PublishFailed  uint64 `json:"publish_failed"`
	WebhookSent    uint64 `json:"webhook_sent"`
	WebhookFailed  uint64 `json:"webhook_failed"`
	WebhookDropped uint64 `json:"webhook_dropped"`
}

// ReviewList is the body of GET /v1/reviews: newest first.
type ReviewList struct {
	Reviews []review.Review `json:"reviews"`
}

// DecisionRequest is the body of POST /v1/reviews/{id}/approve and
// /deny.
type DecisionRequest struct {
	Reason string `json:"reason,omitempty"`
}

// ReviewQuery selects reviews for GET /v1/reviews.
type ReviewQuery struct {
	// State is pending (the collector's default when empty), approved,
	// denied, expired or all.
	State string
	// Kind is statement, access or empty for both.
	Kind  string
	Limit int
}

// Reviews lists the reviews the caller may see: a reader every one,
// anyone else those they requested or may decide.
func (c *Client) Reviews(ctx context.Context, q ReviewQuery) ([]review.Review, error) {
	v := url.Values{}
	if q.State != "" {
		v.Set("state", q.State)
	}
	if q.Kind != "" {
		v.Set("kind", q.Kind)
	}
	if q.Limit > 0 {
		v.Set("limit", fmt.Sprint(q.Limit))
	}
	var out ReviewList
	if err := c.get(ctx, "/v1/reviews", v, &out); err != nil {
		return nil, err
	}
	return out.Reviews, nil
}

// Review returns one review.
func (c *Client) Review(ctx context.Context, id string) (*review.Review, error) {
	var out review.Review
	if err := c.get(ctx, "/v1/reviews/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Approve approves review id; the answer is the review after the
// decision (still pending when require: all needs other groups).
func (c *Client) Approve(ctx context.Context, id, reason string) (*review.Review, error) {
	return c.decide(ctx, id, "approve", reason)
}

// Deny denies review id.
func (c *Client) Deny(ctx context.Context, id, reason string) (*review.Review, error) {
	return c.decide(ctx, id, "deny", reason)
}

func (c *Client) decide(ctx context.Context, id, verb, reason string) (*review.Review, error) {
	var out review.Review
	if err := c.post(ctx, "/v1/reviews/"+url.PathEscape(id)+"/"+verb, DecisionRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// WriteReviews prints reviews as a table: id, state, kind, requester,
// target, rule, age, and the statement (or the access reason) clipped.
func WriteReviews(w io.Writer, rs []review.Review, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tKIND\tREQUESTER\tTARGET\tRULE\tAGE\tSTATEMENT/REASON")
	for i := range rs {
		r := &rs[i]
		what := r.Statement
		if r.Kind == review.KindAccess {
			what = fmt.Sprintf("%s: %s", r.GrantFor.D(), r.Reason)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, stateText(r, now), r.Kind, clip(r.Requester.Name(), 32),
			clip(r.Target, 24), clip(r.Rule, 24), age(now.Sub(r.CreatedAt)), clip(what, 60))
	}
	return tw.Flush()
}

// stateText is the state with what matters about it now: a grant used
// or no longer live.
func stateText(r *review.Review, now time.Time) string {
	if r.State != review.Approved {
		return string(r.State)
	}
	switch {
	case r.GrantOnce && r.UsedAt != nil:
		return "approved,used"
	case !r.Live(now):
		return "approved,ended"
	}
	return "approved"
}

// age renders a duration coarsely: 45s, 12m, 3h, 2d.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// WriteReview prints one review in full, one field a line.
func WriteReview(w io.Writer, r *review.Review, now time.Time) error {
	var b strings.Builder
	line := func(k, format string, args ...any) {
		fmt.Fprintf(&b, "%-11s%s\n", k, fmt.Sprintf(format, args...))
	}
	ts := func(t time.Time) string { return t.Local().Format(time.RFC3339) }
	line("review", "%s", r.ID)
	switch r.State {
	case review.Pending:
		line("state", "pending, expires %s (in %s)", ts(r.ExpiresAt), r.ExpiresAt.Sub(now).Round(time.Second))
	case review.Approved:
		st := "approved"
		if r.GrantUntil != nil {
			if r.Live(now) {
				st += fmt.Sprintf(", grants until %s (%s left)", ts(*r.GrantUntil), r.GrantUntil.Sub(now).Round(time.Second))
			} else {
				st += fmt.Sprintf(", granted until %s", ts(*r.GrantUntil))
			}
		}
		if r.UsedAt != nil {
			st += ", used " + ts(*r.UsedAt)
		}
		line("state", "%s", st)
	default:
		line("state", "%s", r.State)
	}
	line("kind", "%s", r.Kind)
	who := r.Requester.Name()
	if r.Requester.Email != "" && r.Requester.Sub != r.Requester.Email {
		who += " (" + r.Requester.Sub + ")"
	}
	line("requester", "%s", who)
	where := r.Host
	if r.SessionID != "" {
		where += ", session " + r.SessionID
	}
	line("host", "%s", where)
	line("target", "%s", r.Target)
	line("rule", "%s", r.Rule)
	if r.Statement != "" {
		line("statement", "%s", strings.ReplaceAll(r.Statement, "\n", "\n"+strings.Repeat(" ", 11)))
	}
	if r.Reason != "" {
		line("reason", "%s", r.Reason)
	}
	line("approvers", "%s (require %s)", strings.Join(r.Approvers, ", "), r.Require)
	if r.GrantOnce {
		line("grant", "once, within %s of the approval", review.OnceWindow)
	} else {
		line("grant", "a window of %s", r.GrantFor.D())
	}
	line("created", "%s (%s ago)", ts(r.CreatedAt), age(now.Sub(r.CreatedAt)))
	if len(r.Decisions) > 0 {
		b.WriteString("decisions\n")
		for _, d := range r.Decisions {
			verb := "denied"
			if d.Approve {
				verb = "approved"
			}
			fmt.Fprintf(&b, "  %s  %s %s for %s", ts(d.At), d.By.Name(), verb, strings.Join(d.For, ", "))
			if d.Reason != "" {
				fmt.Fprintf(&b, ": %q", d.Reason)
			}
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
