package collectorclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// DefaultURL is the collector API address when neither --collector nor
// $WARDEN_COLLECTOR is given.
const DefaultURL = "http://127.0.0.1:8181"

// EnvURL names the environment variable that holds the collector URL.
const EnvURL = "WARDEN_COLLECTOR"

// EnvCA names the environment variable that holds the PEM bundle of the
// CA that signed an https collector's certificate.
const EnvCA = "WARDEN_COLLECTOR_CA"

// HTTPClient returns the HTTP client for a collector. caFile, if not
// empty, is a PEM bundle used instead of the system roots to verify an
// https collector (a private CA, as with the IdP's --oidc-ca-file): the
// collector is then trusted only through its own CA. The client has no
// timeout, since Follow streams for as long as it is wanted.
func HTTPClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return http.DefaultClient, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("collector CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("collector CA %s: no PEM certificate in it", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}

// ResolveURL picks the collector URL: flag value, else $WARDEN_COLLECTOR,
// else DefaultURL.
func ResolveURL(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := os.Getenv(EnvURL); v != "" {
		return v
	}
	return DefaultURL
}

// Error is a non-2xx answer from the collector, or (Status 0) an error
// line that ended a follow stream.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return "collector: " + e.Message
	}
	return fmt.Sprintf("collector: %s (HTTP %d)", e.Message, e.Status)
}

// IsUnauthorized reports whether err is a 401 from the collector: no
// token, or one it refused (expired, forged, for another issuer or
// audience).
func IsUnauthorized(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusUnauthorized
}

// IsForbidden reports whether err is a 403 from the collector: a
// verified person outside the groups the call needs.
func IsForbidden(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusForbidden
}

// IsNotFound reports whether err is a 404 from the collector.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// Client talks to one collector. Every API call except Health needs an
// OIDC ID token: give it with WithToken, and the client sends it with
// every request.
type Client struct {
	base *url.URL
	http *http.Client
	// token, if set, is sent as "Authorization: Bearer" (see WithToken).
	token string
}

// New returns a client for the collector at baseURL (http or https).
// httpClient may be nil for http.DefaultClient; it must not have a
// timeout if Follow is used, since following never ends on its own.
func New(baseURL string, httpClient *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("collector URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("collector URL %q: scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("collector URL %q: no host", baseURL)
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: u, http: httpClient}, nil
}

// Events lists stored events matching q (one page; see EventList.NextAfterID).
func (c *Client) Events(ctx context.Context, q Query) (*EventList, error) {
	var out EventList
	if err := c.get(ctx, "/v1/events", q.Values(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Event returns one stored event, raw.
func (c *Client) Event(ctx context.Context, id string) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.get(ctx, "/v1/events/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Lineage returns the process chain and identity behind an event id or an
// exec id.
func (c *Client) Lineage(ctx context.Context, id string) (*Lineage, error) {
	var out Lineage
	if err := c.get(ctx, "/v1/lineage/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SessionQuery selects sessions for GET /v1/sessions.
type SessionQuery struct {
	User  string
	Since string // RFC 3339 or a duration back from now; see ParseTime
	Limit int
}

// Sessions lists terminal sessions, newest first.
func (c *Client) Sessions(ctx context.Context, q SessionQuery) ([]Session, error) {
	v := url.Values{}
	if q.User != "" {
		v.Set("user", q.User)
	}
	if q.Since != "" {
		v.Set("since", q.Since)
	}
	if q.Limit > 0 {
		v.Set("limit", fmt.Sprint(q.Limit))
	}
	var out SessionList
	if err := c.get(ctx, "/v1/sessions", v, &out); err != nil {
		return nil, err
	}
	return out.Sessions, nil
}

// Health returns the collector's health and counters.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var out Health
	if err := c.get(ctx, "/healthz", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Follow streams events matching q as the collector stores them, calling fn
// for each, until ctx ends, fn returns an error, or the connection drops.
// q.Since replays stored events from that time first. q.Limit, q.AfterID and
// q.Desc are ignored.
func (c *Client) Follow(ctx context.Context, q Query, fn func(json.RawMessage) error) error {
	q.Limit, q.AfterID, q.Desc = 0, "", false
	resp, err := c.do(ctx, "/v1/follow", q.Values())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue // keep-alive
		}
		if bytes.HasPrefix(line, []byte(`{"error"`)) {
			var eb ErrorBody
			if json.Unmarshal(line, &eb) == nil && eb.Error != "" {
				return &Error{Message: eb.Error} // the stream itself was a 200
			}
		}
		if err := fn(json.RawMessage(bytes.Clone(line))); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("collector: follow stream: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return io.ErrUnexpectedEOF
}

func (c *Client) get(ctx context.Context, path string, v url.Values, out any) error {
	resp, err := c.do(ctx, path, v)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("collector: decode answer of %s: %w", path, err)
	}
	return nil
}

// do sends a GET and turns non-2xx answers into *Error.
func (c *Client) do(ctx context.Context, path string, v url.Values) (*http.Response, error) {
	return c.send(ctx, http.MethodGet, path, v, nil)
}

// send sends a request and turns non-2xx answers into *Error.
func (c *Client) send(ctx context.Context, method, path string, v url.Values, body io.Reader) (*http.Response, error) {
	// path is already escaped (ids go through url.PathEscape), so build
	// RawPath from it and derive Path, keeping a "/" inside an id escaped.
	u := *c.base
	u.RawPath = strings.TrimSuffix(u.EscapedPath(), "/") + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("collector: bad request path %q: %w", path, err)
	}
	u.Path = p
	if len(v) > 0 {
		u.RawQuery = v.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("collector: build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("collector at %s: %w", c.base.Redacted(), err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	var eb ErrorBody
	msg := strings.TrimSpace(string(answer))
	if json.Unmarshal(answer, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	}
	// One line: whatever the answer held, it is printed as one message.
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > 1024 {
		msg = strings.ToValidUTF8(msg[:1024], "") + "…"
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return nil, &Error{Status: resp.StatusCode, Message: msg}
}
