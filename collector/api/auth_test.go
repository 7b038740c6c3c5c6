package api

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector/store"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/tests/harness"
)

const clientID = "warden"

// serveIdP runs a dev OIDC issuer (real keys, real discovery) on
// loopback for one test.
func serveIdP(t *testing.T) *devidp.IdP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	idp, err := devidp.New(devidp.Options{Issuer: "http://" + ln.Addr().String(), ClientID: clientID})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = idp.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return idp
}

func issue(t *testing.T, idp *devidp.IdP, o devidp.IssueOptions) string {
	t.Helper()
	tok, err := idp.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// nopCommander accepts commands and sends them nowhere.
type nopCommander struct{}

func (nopCommander) Publish(context.Context, *event.Command) error { return nil }

// authEnv is an API with a real go-oidc verifier for a dev IdP, readers
// "soc" and killers "ir", served over loopback HTTP.
type authEnv struct {
	idp, other *devidp.IdP
	srv        *Server
	base       string
}

func newAuthEnv(t *testing.T) *authEnv {
	t.Helper()
	idp, other := serveIdP(t), serveIdP(t)
	v, err := idtoken.NewVerifier(context.Background(), idtoken.Config{Issuer: idp.Issuer(), ClientID: clientID})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(harness.StoreLocation(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(Config{Store: st, Verifier: v, Readers: []string{"soc"},
		Kill:   KillConfig{Killers: []string{"ir"}, Commands: nopCommander{}, Collector: "test"},
		Logger: zerolog.Nop()})
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return &authEnv{idp: idp, other: other, srv: s, base: hs.URL}
}

// call sends one request for a route pattern ("GET /v1/events/{id}"),
// with path wildcards filled in and, unless token is "", a bearer token.
// It returns the status, the WWW-Authenticate header and the error
// message of the answer.
func (e *authEnv) call(t *testing.T, pattern, token string) (int, string, string) {
	t.Helper()
	method, path, _ := strings.Cut(pattern, " ")
	for strings.Contains(path, "{") {
		i, j := strings.Index(path, "{"), strings.Index(path, "}")
		path = path[:i] + "01J00000000000000000000000" + path[j+1:]
	}
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{}`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", pattern, err)
	}
	defer resp.Body.Close()
	var eb cc.ErrorBody
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &eb); err != nil {
			t.Fatalf("%s: answer %d is not a JSON error: %q", pattern, resp.StatusCode, b)
		}
	}
	// A follow stream's 200 comes with its headers; cancel ends it.
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), eb.Error
}

// forbidden says, for each route whose handler decides the role itself
// (accessHandler), which verified person it must refuse with 403. A new
// route of that kind fails TestEveryEndpointRefuses until it is listed;
// nil means no group is refused by the route as such, so only the 401
// cases apply here.
var forbidden = map[string][]string{
	"POST /v1/sessions/kill": {"soc", "engineering"}, // readers are not killers
	// Anyone verified lists their own reviews (readers all of them).
	"GET /v1/reviews": nil,
	// Who may see or decide depends on the review itself (its requester
	// and approver groups): reviews_test.go checks those 403s.
	"GET /v1/reviews/{id}":          nil,
	"POST /v1/reviews/{id}/approve": nil,
	"POST /v1/reviews/{id}/deny":    nil,
}

func TestEveryEndpointRefuses(t *testing.T) {
	e := newAuthEnv(t)
	tokens := []struct {
		name, token, want string
	}{
		{"no token", "", "no ID token"},
		{"not a JWT", "not-a-token", "ID token refused"},
		{"another audience", issue(t, e.idp, devidp.IssueOptions{Sub: "sam", Groups: []string{"soc", "ir"}, Audience: []string{"grafana"}}), `does not include client id "warden"`},
		{"another issuer", issue(t, e.other, devidp.IssueOptions{Sub: "sam", Groups: []string{"soc", "ir"}}), "is not the configured issuer"},
		{"issuer claim forged", issue(t, e.other, devidp.IssueOptions{Sub: "sam", Groups: []string{"soc", "ir"}, Issuer: e.idp.Issuer()}), "signature"},
		{"expired", issue(t, e.idp, devidp.IssueOptions{Sub: "sam", Groups: []string{"soc", "ir"}, TTL: -time.Minute}), "expired"},
	}
	reader := issue(t, e.idp, devidp.IssueOptions{Sub: "sam", Groups: []string{"soc"}})
	outsider := issue(t, e.idp, devidp.IssueOptions{Sub: "alice", Groups: []string{"engineering"}})

	routes := e.srv.routes()
	if len(routes) < 12 {
		t.Fatalf("only %d routes; the list lost some", len(routes))
	}
	for _, rt := range routes {
		if rt.access == accessPublic {
			if rt.pattern != "GET /healthz" {
				t.Errorf("%s is open to anyone; only /healthz may be", rt.pattern)
			}
			continue
		}
		t.Run(rt.pattern, func(t *testing.T) {
			for _, tc := range tokens {
				status, challenge, msg := e.call(t, rt.pattern, tc.token)
				if status != http.StatusUnauthorized || !strings.HasPrefix(challenge, "Bearer") || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
					t.Errorf("%s: %d %q %q; want 401, a Bearer challenge and one line with %q", tc.name, status, challenge, msg, tc.want)
				}
			}
			switch rt.access {
			case accessReaders:
				status, _, msg := e.call(t, rt.pattern, outsider)
				if status != http.StatusForbidden || !strings.Contains(msg, "alice may not read") || !strings.Contains(msg, "soc") {
					t.Errorf("engineering: %d %q; want 403 naming the readers groups", status, msg)
				}
				if status, _, msg := e.call(t, rt.pattern, reader); status == http.StatusUnauthorized || status == http.StatusForbidden {
					t.Errorf("reader refused: %d %q", status, msg)
				}
			case accessHandler:
				groups, ok := forbidden[rt.pattern]
				if !ok {
					t.Fatalf("%s decides its own role: list who it must refuse in forbidden", rt.pattern)
				}
				for _, g := range groups {
					tok := issue(t, e.idp, devidp.IssueOptions{Sub: "eve", Groups: []string{g}})
					if status, _, msg := e.call(t, rt.pattern, tok); status != http.StatusForbidden || !strings.Contains(msg, "eve may not") {
						t.Errorf("group %s: %d %q; want 403 saying eve may not", g, status, msg)
					}
				}
			default:
				t.Fatalf("access %d unknown to the test", rt.access)
			}
		})
	}
}

// A killer gets past the role check to the body's validation, so the 403
// above is the role's, not a blanket refusal.
func TestKillerPassesRoleCheck(t *testing.T) {
	e := newAuthEnv(t)
	tok := issue(t, e.idp, devidp.IssueOptions{Sub: "ivy", Groups: []string{"ir"}})
	status, _, msg := e.call(t, "POST /v1/sessions/kill", tok)
	if status != http.StatusBadRequest || !strings.Contains(msg, "session_id") {
		t.Fatalf("killer: %d %q; want 400 about the body", status, msg)
	}
}

// /healthz stays open for load balancers but tells an anonymous caller
// nothing beyond liveness; a reader gets the counters.
func TestHealthRevealsCountersOnlyToReaders(t *testing.T) {
	e := newAuthEnv(t)
	get := func(token string) map[string]any {
		req, _ := http.NewRequest(http.MethodGet, e.base+"/healthz", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz: %d", resp.StatusCode)
		}
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for name, tok := range map[string]string{
		"anonymous": "",
		"garbage":   "x.y.z",
		"outsider":  issue(t, e.idp, devidp.IssueOptions{Sub: "alice", Groups: []string{"engineering"}}),
	} {
		if m := get(tok); len(m) != 1 || m["status"] != "ok" {
			t.Errorf("%s: %v; want only the status", name, m)
		}
	}
	if m := get(issue(t, e.idp, devidp.IssueOptions{Sub: "sam", Groups: []string{"soc"}})); m["status"] != "ok" || m["stored"] == nil || m["ingest"] == nil {
		t.Errorf("reader: %v; want the counters", m)
	}
}

// Without a verifier the API refuses everyone rather than serve anyone.
func TestNoVerifierRefusesAll(t *testing.T) {
	st, err := store.Open(harness.StoreLocation(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(Config{Store: st, Readers: []string{"soc"}, Logger: zerolog.Nop()})
	for _, rt := range s.routes() {
		if rt.access == accessPublic {
			continue
		}
		method, path, _ := strings.Cut(rt.pattern, " ")
		path = strings.ReplaceAll(path, "{id}", "x")
		req := httptest.NewRequest(method, path, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer a.b.c")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != http.StatusServiceUnavailable {
			t.Errorf("%s without a verifier: %d %s", rt.pattern, w.Code, w.Body)
		}
	}
}

// A follow stream ends when the token that opened it expires, with a
// line saying so.
func TestFollowEndsWhenTokenExpires(t *testing.T) {
	e := newAuthEnv(t)
	tok := issue(t, e.idp, devidp.IssueOptions{Sub: "sam", Groups: []string{"soc"}, TTL: 2 * time.Second})
	cl, err := cc.New(e.base, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The deadline bounds a hang; it is not a speed assertion.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = cl.WithToken(tok).Follow(ctx, cc.Query{}, func(json.RawMessage) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "your ID token expired at") || ctx.Err() != nil {
		t.Fatalf("follow: %v", err)
	}
}
