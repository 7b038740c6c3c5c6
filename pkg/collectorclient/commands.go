package collectorclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"
)

// KillRequest is the body of POST /v1/sessions/kill: exactly one of
// SessionID and User, an optional Host (with User: only that host), a
// Reason, and an optional Lock (Go duration text, "1h") that refuses the
// person's new logins for that long.
type KillRequest struct {
	SessionID string `json:"session_id,omitempty"`
	User      string `json:"user,omitempty"`
	Host      string `json:"host,omitempty"`
	Reason    string `json:"reason"`
	Lock      string `json:"lock,omitempty"`
}

// KillResult is the answer to a kill: the commands the collector recorded
// and queued for the agents. Agents apply them when they receive them; the
// outcome is their session.killed events.
type KillResult struct {
	// KillID is the kill command's id (also the id of its command.kill
	// event at the collector).
	KillID string `json:"kill_id"`
	// Sub is the person whose sessions are killed.
	Sub string `json:"sub"`
	// SessionID is the session killed, when one was named.
	SessionID string `json:"session_id,omitempty"`
	// Host is the agent the kill went to; empty means every agent.
	Host string `json:"host,omitempty"`
	// Lock is the lock that came with the kill, if any.
	Lock *Lock `json:"lock,omitempty"`
}

// Lock refuses new logins of one person until Until.
type Lock struct {
	ID     string    `json:"id"`
	Sub    string    `json:"sub"`
	Host   string    `json:"host,omitempty"` // empty: every host
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	Issued time.Time `json:"issued"`
	Until  time.Time `json:"until"`
}

// LockList is the body of GET /v1/locks: the locks in force, newest first.
type LockList struct {
	Locks []Lock `json:"locks"`
}

// WithToken returns a copy of the client that sends token (an OIDC ID
// token) as a bearer token with every request; the collector requires it
// on every /v1 call and checks the person's groups against the call.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// Kill asks the collector to kill a session or a person's sessions. The
// client needs a token (WithToken) of a member of the collector's
// --killers groups; anyone else gets a 403 *Error.
func (c *Client) Kill(ctx context.Context, req KillRequest) (*KillResult, error) {
	var out KillResult
	if err := c.post(ctx, "/v1/sessions/kill", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Locks lists the locks in force.
func (c *Client) Locks(ctx context.Context) ([]Lock, error) {
	var out LockList
	if err := c.get(ctx, "/v1/locks", nil, &out); err != nil {
		return nil, err
	}
	return out.Locks, nil
}

// post sends a JSON body and decodes the JSON answer.
func (c *Client) post(ctx context.Context, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("collector: encode request to %s: %w", path, err)
	}
	resp, err := c.send(ctx, http.MethodPost, path, nil, bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("collector: decode answer of %s: %w", path, err)
	}
	return nil
}

// WriteLocks prints locks as a table.
func WriteLocks(w io.Writer, locks []Lock, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUB\tHOST\tUNTIL\tLEFT\tBY\tREASON\tID")
	for _, l := range locks {
		host := l.Host
		if host == "" {
			host = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Sub, host, l.Until.Local().Format(time.RFC3339),
			l.Until.Sub(now).Round(time.Second), l.By, l.Reason, l.ID)
	}
	return tw.Flush()
}
