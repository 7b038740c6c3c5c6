package http

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
)

// recorder keeps the events a stream records.
type recorder struct {
	mu  sync.Mutex
	evs []*event.Event
	n   int
}

func (r *recorder) Emit(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	e.ID = fmt.Sprintf("E%d", r.n)
	r.evs = append(r.evs, e)
	return nil
}

// wait returns the events of type typ once there are n of them: a
// response is recorded after the client has it. It gives up after a
// minute (a hang, not a speed limit).
func (r *recorder) wait(t *testing.T, typ event.Type, n int) []*event.Event {
	t.Helper()
	for i := 0; i < 6000; i++ {
		if evs := r.of(typ); len(evs) >= n {
			return evs
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("fewer than %d %s events", n, typ)
	return nil
}

func (r *recorder) of(typ event.Type) []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*event.Event
	for _, e := range r.evs {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// upstream is the target: it answers every request with what it saw.
type upstream struct {
	mu   sync.Mutex
	seen []*nethttp.Request
	srv  *httptest.Server
}

func newUpstream(t *testing.T, h nethttp.HandlerFunc) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Clone(context.Background()))
		u.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		h(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) requests() []*nethttp.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*nethttp.Request(nil), u.seen...)
}

const testPolicy = `targets:
  - name: api
    protocol: http
    address: %s
    credentials: {header: Authorization, value_file: %s}
rules:
  - name: no-admin-writes
    targets: [api]
    when: {methods: [POST, PUT, DELETE], paths: ["/admin/**", "/api/v1/users/*"]}
    action: deny
  - name: sockets
    targets: [api]
    when: {paths: ["/ws"], upgrade: [websocket]}
    action: allow
masking:
  - name: pii
    targets: [api]
    columns: [ssn]
    detectors: [email, credit_card]
    except_groups: [pii-readers]
`

// harness runs the codec on one client connection to u.
type harness struct {
	t      *testing.T
	rec    *recorder
	client *nethttp.Client
	key    ed25519.PrivateKey
	raw    func() net.Conn // a raw client connection through the codec
}

func start(t *testing.T, u *upstream, groups []string) *harness {
	t.Helper()
	return startWith(t, u, groups, nil, "")
}

// startWith is start with a reviewer and extra rules, put first.
func startWith(t *testing.T, u *upstream, groups []string, rev guard.Reviewer, rules string) *harness {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("Bearer s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(u.srv.Listener.Addr().String())
	enf := policy.Enforcement{policy.ProtocolHTTP: New(Options{}).Enforces()}
	src := strings.Replace(fmt.Sprintf(testPolicy, addr, secret), "rules:\n", "rules:"+rules+"\n", 1)
	pol, err := policy.Parse([]byte(src), "policy.yaml", enf)
	if err != nil {
		t.Fatal(err)
	}
	tp, _ := pol.Target("api")
	_, key, _ := ed25519.GenerateKey(nil)
	codec := New(Options{Identity: NewSigner(key, "bastion-1")})
	h := &harness{t: t, rec: &recorder{}, key: key}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr.String())
			if err != nil {
				c.Close()
				continue
			}
			att := &proxy.Attribution{
				Kernel:       loader.ConnInfo{OrigDst: addr},
				Target:       event.Target{Name: "api", Protocol: "http", Address: addr.String()},
				Policy:       pol,
				TargetPolicy: tp,
				Identity:     &event.Identity{Sub: "alice", Email: "alice@example.com", Groups: groups, Issuer: "https://idp"},
				Decision:     event.Decision{Action: event.Allow},
			}
			s := &proxy.Stream{Client: c, Upstream: up, Attribution: att, Log: zerolog.Nop(),
				Guard: guard.New(pol, "api", groups, rev), Audit: proxy.NewAudit(h.rec, att, proxy.FailClosed)}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				defer up.Close()
				codec.Serve(ctx, s)
			}()
		}
	}()
	h.client = &nethttp.Client{Transport: &nethttp.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("tcp", ln.Addr().String())
	}}}
	h.raw = func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return h
}

func (h *harness) do(method, path string, body io.Reader, hdr ...string) (*nethttp.Response, string) {
	h.t.Helper()
	req, err := nethttp.NewRequest(method, "http://api.internal"+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp, string(b)
}

func TestAllowDenyAndRecord(t *testing.T) {
	u := newUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) { io.WriteString(w, "ok "+r.URL.Path) })
	h := start(t, u, []string{"eng"})

	resp, body := h.do("GET", "/admin/x?token=abc&page=2", nil)
	if resp.StatusCode != 200 || body != "ok /admin/x" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	resp, body = h.do("DELETE", "/admin/x", nil)
	var d denial
	if resp.StatusCode != 403 || json.Unmarshal([]byte(body), &d) != nil || d.Rule != "no-admin-writes" || !strings.HasPrefix(d.Error, "warden: DELETE /admin/x denied") {
		t.Fatalf("DELETE: %d %q", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("denial content type %q", ct)
	}
	// Encoded letters decode to the same path: still denied.
	if resp, body := h.do("POST", "/%61dmin//x", nil); resp.StatusCode != 403 {
		t.Errorf("POST /%%61dmin//x: %d %q", resp.StatusCode, body)
	}
	if resp, _ := h.do("POST", "/api/v1/users/42", nil); resp.StatusCode != 403 {
		t.Errorf("POST /api/v1/users/42: %d", resp.StatusCode)
	}
	if resp, _ := h.do("POST", "/api/v1/users/42/keys", nil); resp.StatusCode != 200 {
		t.Errorf("POST /api/v1/users/42/keys: %d, want it allowed (* is one segment)", resp.StatusCode)
	}
	if n := len(u.requests()); n != 2 {
		t.Errorf("upstream saw %d requests, want the 2 allowed", n)
	}

	reqs := h.rec.of(event.HTTPRequest)
	if len(reqs) != 5 {
		t.Fatalf("%d http.request events, want 5", len(reqs))
	}
	if q := reqs[0].Data["query"]; q != "token=*&page=*" {
		t.Errorf("query recorded as %v, want values redacted", q)
	}
	if reqs[1].Decision.Action != event.Deny || reqs[1].Decision.Rule != "no-admin-writes" || reqs[1].Data["status"] != 403 {
		t.Errorf("denied request recorded as %+v %v", reqs[1].Decision, reqs[1].Data)
	}
	resps := h.rec.wait(t, event.HTTPResponse, 2)
	if len(resps) != 2 || resps[0].Data["request_id"] != reqs[0].ID || resps[0].Data["status"] != 200 || resps[0].Data["bytes_out"] != int64(len("ok /admin/x")) {
		t.Errorf("http.response events: %+v", resps)
	}
}

func TestAmbiguousAndSmuggling(t *testing.T) {
	u := newUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) { io.WriteString(w, "ok") })
	h := start(t, u, []string{"eng"})
	for _, p := range []string{"/admin%2Fx", "/public/..%2Fadmin", "/public/%2e%2e/admin", "/admin;x=1", "/admin%252F"} {
		c := h.raw()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: api\r\n\r\n", p)
		resp, err := nethttp.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 400 || !strings.Contains(string(b), `"rule":"ambiguous"`) {
			t.Errorf("GET %s: %d %s, want 400 ambiguous", p, resp.StatusCode, b)
		}
	}
	// A smuggling pair after a good request on the same connection: the
	// first is answered, the second refused, and nothing of it (or of the
	// request hidden in its body) reaches the target.
	c := h.raw()
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: api\r\n\r\n"+
		"POST /x HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: api\r\n\r\n")
	br := bufio.NewReader(c)
	first, err := nethttp.ReadResponse(br, nil)
	if err != nil || first.StatusCode != 200 {
		t.Fatalf("first: %v %v", first, err)
	}
	io.Copy(io.Discard, first.Body)
	second, err := nethttp.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(second.Body)
	if second.StatusCode != 400 || !strings.Contains(string(b), "both Content-Length and Transfer-Encoding") {
		t.Errorf("smuggling pair: %d %s", second.StatusCode, b)
	}
	old := h.raw()
	io.WriteString(old, "POST /x HTTP/1.0\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	if resp, err := nethttp.ReadResponse(bufio.NewReader(old), nil); err != nil || resp.StatusCode != 400 {
		t.Errorf("chunked HTTP/1.0: %v %v", resp, err)
	}
	dup := h.raw()
	io.WriteString(dup, "POST /x HTTP/1.1\r\nHost: api\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
	resp, err := nethttp.ReadResponse(bufio.NewReader(dup), nil)
	if err != nil || resp.StatusCode != 400 {
		t.Errorf("duplicate Content-Length: %v %v", resp, err)
	}
	for _, r := range u.requests() {
		if r.URL.Path != "/first" {
			t.Errorf("target saw %s %s", r.Method, r.URL.Path)
		}
	}
	if n := len(u.requests()); n != 1 {
		t.Errorf("target saw %d requests, want 1", n)
	}
}

func TestIdentityCredentialsAndMasking(t *testing.T) {
	u := newUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Authorization", r.Header.Get("Authorization")) // a careless echo
		io.WriteString(w, `{"users":[{"name":"Al","email":"al@example.com","ssn":{"n":"078-05-1120"},"card":"4111 1111 1111 1111","n":4111111111111111,"ok":true,"x":null}]}`)
	})
	h := start(t, u, []string{"eng"})
	resp, body := h.do("GET", "/users", nil, "X-Warden-User", "mallory", "X-Warden-Whatever", "1", "Authorization", "Basic client")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	want := `{"users":[{"name":"Al","email":"[masked:email]","ssn":"****","card":"[masked:credit_card]","n":"[masked:credit_card]","ok":true,"x":null}]}`
	if body != want {
		t.Errorf("masked body\n got %s\nwant %s", body, want)
	}
	if a := resp.Header.Get("Authorization"); a != "" {
		t.Errorf("the client saw the credential header %q", a)
	}
	seen := u.requests()[0]
	if seen.Header.Get("Authorization") != "Bearer s3cret-token" {
		t.Errorf("target got Authorization %q", seen.Header.Get("Authorization"))
	}
	if seen.Header.Get("X-Warden-User") != "alice@example.com" || seen.Header.Get("X-Warden-Groups") != "eng" || seen.Header.Get("X-Warden-Whatever") != "" {
		t.Errorf("identity headers: %v", seen.Header)
	}
	if ae := seen.Header.Get("Accept-Encoding"); ae != "identity" {
		t.Errorf("Accept-Encoding %q, want identity while masking", ae)
	}
	// The token verifies against the published key set, with another
	// JOSE implementation.
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(JWKS(h.key.Public().(ed25519.PublicKey)), &set); err != nil {
		t.Fatal(err)
	}
	tok, err := josejwt.ParseSigned(seen.Header.Get("X-Warden-Identity"), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var claims josejwt.Claims
	var extra struct {
		Groups []string `json:"groups"`
		Email  string   `json:"email"`
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q not in the key set", tok.Headers[0].KeyID)
	}
	if err := tok.Claims(keys[0].Key, &claims, &extra); err != nil {
		t.Fatal(err)
	}
	if err := claims.Validate(josejwt.Expected{Issuer: "warden:bastion-1", Subject: "alice", AnyAudience: []string{"api"}}); err != nil {
		t.Error(err)
	}
	if extra.Email != "alice@example.com" || len(extra.Groups) != 1 {
		t.Errorf("claims %+v", extra)
	}
	// Tampering breaks it.
	parts := strings.Split(seen.Header.Get("X-Warden-Identity"), ".")
	forged, _ := json.Marshal(map[string]any{"sub": "root", "aud": "api"})
	bad, err := josejwt.ParseSigned(parts[0]+"."+base64.RawURLEncoding.EncodeToString(forged)+"."+parts[2], []jose.SignatureAlgorithm{jose.EdDSA})
	if err == nil && bad.Claims(keys[0].Key, &claims) == nil {
		t.Error("a forged token verified")
	}

	res := h.rec.wait(t, event.HTTPResponse, 1)
	if len(res) != 1 || res[0].Data["detected"] != true || fmt.Sprint(res[0].Data["masked_keys"]) != "[ssn]" {
		t.Errorf("response record %v", res[0].Data)
	}
}

func TestMaskingExemptAndText(t *testing.T) {
	u := newUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "mail al@example.com\n")
	})
	h := start(t, u, []string{"pii-readers"})
	if _, body := h.do("GET", "/t", nil); body != "mail al@example.com\n" {
		t.Errorf("exempt group got %q", body)
	}
	h2 := start(t, u, []string{"eng"})
	if _, body := h2.do("GET", "/t", nil); body != "mail [masked:email]\n" {
		t.Errorf("text body %q", body)
	}
}

func TestUpgradeNeedsARule(t *testing.T) {
	u := newUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		c, brw, err := nethttp.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString(10)
		io.WriteString(c, "echo "+line)
	})
	h := start(t, u, []string{"eng"})
	c := h.raw()
	io.WriteString(c, "GET /other HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	resp, err := nethttp.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 403 {
		t.Fatalf("upgrade without a rule: %v %v", resp, err)
	}
	c = h.raw()
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err = nethttp.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("allowed upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "hello\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo hello\n" {
		t.Errorf("after the upgrade: %q %v", line, err)
	}
}

// reviewer answers every review with outcome.
type reviewer struct {
	mu      sync.Mutex
	outcome guard.ReviewOutcome
	asked   []guard.ReviewRequest
}

func (r *reviewer) Review(ctx context.Context, req guard.ReviewRequest) guard.ReviewResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, req)
	return guard.ReviewResult{Outcome: r.outcome, ID: "R-42", By: "bob", Reason: "not today"}
}

func TestReview(t *testing.T) {
	u := newUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) { io.WriteString(w, "done") })
	rev := &reviewer{}
	h := startWith(t, u, []string{"eng"}, rev, `
  - name: exports-need-review
    targets: [api]
    when: {methods: [POST], paths: ["/exports/**"]}
    action: review
    review: {approvers: [security], hold: 90s}
`)
	for _, tc := range []struct {
		outcome guard.ReviewOutcome
		status  int
		want    string
	}{
		{guard.ReviewPending, 403, `requires review R-42 (rule \"exports-need-review\") and was not approved in time`},
		{guard.ReviewDenied, 403, `review R-42 denied by bob: not today`},
		{guard.ReviewApproved, 200, `done`},
	} {
		rev.mu.Lock()
		rev.outcome = tc.outcome
		rev.mu.Unlock()
		resp, body := h.do("POST", "/exports/all?fmt=csv", strings.NewReader("x"))
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("outcome %d: %d %s", tc.outcome, resp.StatusCode, body)
		}
		if tc.status == 403 && !strings.Contains(body, `"review":"R-42"`) {
			t.Errorf("outcome %d: the denial does not name the review: %s", tc.outcome, body)
		}
	}
	rev.mu.Lock()
	defer rev.mu.Unlock()
	if len(rev.asked) != 3 || rev.asked[0].Hold != 90*time.Second || rev.asked[0].Request.Exact != "POST /exports/all?fmt=csv" {
		t.Errorf("review requests: %+v", rev.asked)
	}
	if n := len(u.requests()); n != 1 {
		t.Errorf("target saw %d requests, want only the approved one", n)
	}
	reqs := h.rec.of(event.HTTPRequest)
	if len(reqs) != 3 || reqs[0].Decision.Action != event.Review || reqs[0].Data["review_id"] != "R-42" || reqs[2].Decision.Action != event.Allow {
		t.Errorf("records: %+v", reqs)
	}
}

func TestChunkedAndContinue(t *testing.T) {
	u := newUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		fmt.Fprintf(w, "%s %v", r.Header.Get("X-Len"), r.TransferEncoding)
	})
	h := start(t, u, []string{"eng"})
	// A chunked upload with a trailer, then a second request on the
	// same connection: the re-chunked body ends where it should.
	c := h.raw()
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nX-Len: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n"+
		"POST /up HTTP/1.1\r\nHost: api\r\nContent-Length: 3\r\nX-Len: 3\r\n\r\nabc")
	br := bufio.NewReader(c)
	for _, want := range []string{"chunked [chunked]", "3 []"} {
		resp, err := nethttp.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != want {
			t.Errorf("got %d %q, want %q", resp.StatusCode, b, want)
		}
	}
	// Expect: 100-continue: the client waits for 100 before its body.
	c = h.raw()
	io.WriteString(c, "PUT /up HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\nExpect: 100-continue\r\nX-Len: 4\r\n\r\n")
	br = bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("interim response %q %v", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "body")
	resp, err := nethttp.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "4 []" {
		t.Errorf("after 100-continue: %d %q", resp.StatusCode, b)
	}
	if n := h.rec.wait(t, event.HTTPResponse, 3)[0].Data["bytes_in"]; n != int64(11) {
		t.Errorf("bytes_in of the chunked upload = %v, want 11", n)
	}
}

func TestRefuse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		att := &proxy.Attribution{Target: event.Target{Name: "api", Protocol: "http"},
			Decision: event.Decision{Action: event.Deny, Rule: "identity", Reason: "warden: no verified identity for this session; run 'warden login'"}}
		done <- New(Options{}).Refuse(context.Background(), c, att)
	}()
	resp, err := nethttp.Get("http://" + ln.Addr().String() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), `"error":"warden: no verified identity for this session; run 'warden login'"`) || !strings.Contains(string(b), `"rule":"identity"`) {
		t.Errorf("refusal: %d %s", resp.StatusCode, b)
	}
	if err := <-done; err != nil {
		t.Errorf("Refuse: %v", err)
	}
}

// A client cannot have Warden's headers removed by naming them in
// Connection, which makes them hop-by-hop.
func TestConnectionCannotDropWardenHeaders(t *testing.T) {
	u := newUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {})
	h := start(t, u, []string{"pii-readers"})
	c := h.raw()
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: api\r\nConnection: X-Warden-Identity, X-Warden-User, Authorization\r\nX-Warden-User: mallory\r\n\r\n")
	if resp, err := nethttp.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	seen := u.requests()[0]
	if seen.Header.Get("X-Warden-Identity") == "" || seen.Header.Get("X-Warden-User") != "alice@example.com" || seen.Header.Get("Authorization") != "Bearer s3cret-token" {
		t.Errorf("target got %v", seen.Header)
	}
}

// An upgrade the target declines ends the connection after its answer:
// the screen stopped reading requests there, so none may follow unscreened.
func TestDeclinedUpgradeClosesTheConnection(t *testing.T) {
	u := newUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) { io.WriteString(w, "no") })
	h := start(t, u, []string{"eng"})
	c := h.raw()
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"+
		"POST /x HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := nethttp.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("declined upgrade: %+v %v; want 200 and Connection: close", resp, err)
	}
	io.ReadAll(resp.Body)
	if resp, err := nethttp.ReadResponse(br, nil); err == nil {
		t.Errorf("a second response on the connection: %d", resp.StatusCode)
	}
	if n := len(u.requests()); n != 1 {
		t.Errorf("target saw %d requests, want 1", n)
	}
}
