package devidp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// fakeClock is a settable clock so device codes expire without sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// start serves a dev IdP on 127.0.0.1 with the issuer set to its address.
func start(t *testing.T, opts Options) (*IdP, *httptest.Server) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	opts.Issuer = "http://" + srv.Listener.Addr().String() + opts.Issuer // opts.Issuer may carry a path
	p, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv.Config.Handler = p.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	return p, srv
}

func postForm(t *testing.T, u string, v url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(u, v)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("POST %s: decode JSON response: %v", u, err)
	}
	return resp.StatusCode, body
}

func wantOAuthError(t *testing.T, status int, body map[string]any, wantStatus int, wantCode, descPart string) {
	t.Helper()
	if status != wantStatus || body["error"] != wantCode {
		t.Fatalf("got %d %v, want %d error %q", status, body, wantStatus, wantCode)
	}
	if desc, _ := body["error_description"].(string); !strings.Contains(desc, descPart) {
		t.Fatalf("error_description %q does not mention %q", desc, descPart)
	}
}

// payload decodes a compact JWT's claims without verifying them.
func payload(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("payload: %v", err)
	}
	return m
}

func TestDiscoveryAndJWKS(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, srv := start(t, Options{Key: ec})

	resp, err := http.Get(srv.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var disc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&disc); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for k, want := range map[string]string{
		"issuer":                        srv.URL,
		"jwks_uri":                      srv.URL + "/jwks",
		"token_endpoint":                srv.URL + "/token",
		"device_authorization_endpoint": srv.URL + "/device/code",
	} {
		if disc[k] != want {
			t.Errorf("discovery %s = %v, want %q", k, disc[k], want)
		}
	}
	if algs, _ := disc["id_token_signing_alg_values_supported"].([]any); len(algs) != 1 || algs[0] != "ES256" {
		t.Errorf("algs = %v, want [ES256] for a P-256 key", disc["id_token_signing_alg_values_supported"])
	}

	resp, err = http.Get(srv.URL + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	keys := set.Key(p.KeyID())
	if len(keys) != 1 || !keys[0].IsPublic() {
		t.Fatalf("JWKS has %d public keys with kid %q, want 1: %+v", len(keys), p.KeyID(), set)
	}

	// A token from Issue verifies against the published key and names it.
	tok, err := p.Issue(IssueOptions{Sub: "alice", Groups: []string{"engineering"}})
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if kid := jws.Signatures[0].Header.KeyID; kid != p.KeyID() {
		t.Errorf("token kid %q, want %q", kid, p.KeyID())
	}
	if _, err := jws.Verify(keys[0]); err != nil {
		t.Errorf("token does not verify against the JWKS key: %v", err)
	}
}

func TestIssueForgeries(t *testing.T) {
	p, err := New(Options{Issuer: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	pub := jose.JSONWebKey{Key: p.PublicKey()}

	none, err := p.Issue(IssueOptions{Sub: "alice", AlgNone: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(none, ".") || strings.Count(none, ".") != 2 {
		t.Errorf("alg none token %q should have an empty signature part", none)
	}
	head, _ := base64.RawURLEncoding.DecodeString(strings.Split(none, ".")[0])
	if !strings.Contains(string(head), `"alg":"none"`) {
		t.Errorf("alg none header = %s", head)
	}

	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := p.Issue(IssueOptions{Sub: "alice", SignWith: other})
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(forged, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if jws.Signatures[0].Header.KeyID != p.KeyID() {
		t.Errorf("forged token should carry the IdP's kid")
	}
	if _, err := jws.Verify(&pub); err == nil {
		t.Errorf("token signed with another key verifies against the IdP key")
	}

	iat := time.Unix(1_700_000_000, 0)
	tok, err := p.Issue(IssueOptions{Sub: "x", Audience: []string{"a", "b"}, Issuer: "https://elsewhere", IssuedAt: iat, TTL: time.Minute,
		Claims: map[string]any{"groups": 42}})
	if err != nil {
		t.Fatal(err)
	}
	c := payload(t, tok)
	if c["iss"] != "https://elsewhere" || c["iat"] != float64(iat.Unix()) || c["exp"] != float64(iat.Unix()+60) || c["groups"] != float64(42) {
		t.Errorf("claims = %v", c)
	}
	if aud, _ := c["aud"].([]any); len(aud) != 2 {
		t.Errorf("aud = %v, want [a b]", c["aud"])
	}

	if _, err := p.Issue(IssueOptions{}); err == nil {
		t.Error("Issue without Sub succeeded")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string]Options{
		"no issuer":     {},
		"not a URL":     {Issuer: "127.0.0.1:5556"},
		"query":         {Issuer: "http://127.0.0.1:5556?x=1"},
		"empty sub":     {Issuer: "http://127.0.0.1:5556", Users: []User{{Email: "a@b"}}},
		"duplicate sub": {Issuer: "http://127.0.0.1:5556", Users: []User{{Sub: "a"}, {Sub: "a"}}},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestDevToken(t *testing.T) {
	p, srv := start(t, Options{})
	u := srv.URL + "/dev/token"

	status, body := postForm(t, u, url.Values{"sub": {"bob"}})
	if status != http.StatusOK {
		t.Fatalf("status %d: %v", status, body)
	}
	tok, _ := body["id_token"].(string)
	c := payload(t, tok)
	if c["sub"] != "bob" || c["iss"] != p.Issuer() || c["aud"] != "warden" || c["email"] != "bob@example.com" {
		t.Errorf("claims = %v", c)
	}
	if g, _ := c["groups"].([]any); len(g) != 2 || g[0] != "dba" || g[1] != "engineering" {
		t.Errorf("groups = %v", c["groups"])
	}

	// JSON body, ttl as a duration string.
	resp, err := http.Post(u, "application/json", strings.NewReader(`{"sub":"alice","ttl":"10m"}`))
	if err != nil {
		t.Fatal(err)
	}
	body = nil
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	c = payload(t, body["id_token"].(string))
	if c["exp"].(float64)-c["iat"].(float64) != 600 {
		t.Errorf("ttl 10m gave exp-iat = %v", c["exp"].(float64)-c["iat"].(float64))
	}

	// format=raw is for shell scripts: the bare token.
	resp, err = http.PostForm(u, url.Values{"sub": {"mallory"}, "ttl": {"120"}, "format": {"raw"}})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c = payload(t, strings.TrimSpace(string(raw)))
	if c["sub"] != "mallory" || c["exp"].(float64)-c["iat"].(float64) != 120 {
		t.Errorf("raw token claims = %v", c)
	}

	status, body = postForm(t, u, url.Values{"sub": {"eve"}})
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_request", `no dev user with sub "eve"`)
	status, body = postForm(t, u, url.Values{})
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_request", "sub is required")
	status, body = postForm(t, u, url.Values{"sub": {"alice"}, "ttl": {"soon"}})
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_request", `ttl "soon"`)
	status, body = postForm(t, u, url.Values{"sub": {"alice"}, "ttl": {"48h"}})
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_request", `ttl "48h"`)

	resp, err = http.Post(u, "application/json", strings.NewReader(`{"sub":"alice","bogus":1}`))
	if err != nil {
		t.Fatal(err)
	}
	body = nil
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	wantOAuthError(t, resp.StatusCode, body, http.StatusBadRequest, "invalid_request", "bogus")

	resp, err = http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /dev/token: status %d, want 405", resp.StatusCode)
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	_, srv := start(t, Options{})
	u := srv.URL + "/token"
	status, body := postForm(t, u, url.Values{"grant_type": {"password"}, "client_id": {"warden"}, "username": {"alice"}})
	wantOAuthError(t, status, body, http.StatusBadRequest, "unsupported_grant_type", `"password"`)
	status, body = postForm(t, u, url.Values{"grant_type": {deviceCodeGrant}, "client_id": {"other"}, "device_code": {"x"}})
	wantOAuthError(t, status, body, http.StatusUnauthorized, "invalid_client", `"other"`)
	status, body = postForm(t, u, url.Values{"grant_type": {deviceCodeGrant}, "client_id": {"warden"}})
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_request", "device_code is required")
	status, body = postForm(t, u, url.Values{"grant_type": {deviceCodeGrant}, "client_id": {"warden"}, "device_code": {"nope"}})
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_grant", "unknown")

	status, body = postForm(t, srv.URL+"/device/code", url.Values{"client_id": {"other"}})
	wantOAuthError(t, status, body, http.StatusUnauthorized, "invalid_client", `"other"`)
}

// deviceCode starts a device authorization and returns device and user code.
func deviceCode(t *testing.T, srv *httptest.Server) (string, string, map[string]any) {
	t.Helper()
	status, body := postForm(t, srv.URL+"/device/code", url.Values{"client_id": {"warden"}, "scope": {"openid groups"}})
	if status != http.StatusOK {
		t.Fatalf("/device/code: %d %v", status, body)
	}
	dc, _ := body["device_code"].(string)
	uc, _ := body["user_code"].(string)
	if dc == "" || len(uc) != 9 || uc[4] != '-' {
		t.Fatalf("/device/code response %v", body)
	}
	return dc, uc, body
}

func TestDeviceFlowStates(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	p, srv := start(t, Options{Now: clock.Now, DeviceCodeTTL: 5 * time.Minute, PollInterval: 1500 * time.Millisecond})
	poll := func(dc string) (int, map[string]any) {
		return postForm(t, srv.URL+"/token", url.Values{"grant_type": {deviceCodeGrant}, "client_id": {"warden"}, "device_code": {dc}})
	}

	dc, uc, body := deviceCode(t, srv)
	if body["interval"] != float64(2) || body["expires_in"] != float64(300) {
		t.Errorf("interval/expires_in = %v/%v, want 2 (1.5s rounded up)/300", body["interval"], body["expires_in"])
	}
	if body["verification_uri"] != srv.URL+"/device" || body["verification_uri_complete"] != srv.URL+"/device?user_code="+uc {
		t.Errorf("verification URIs = %v / %v", body["verification_uri"], body["verification_uri_complete"])
	}

	status, body := poll(dc)
	wantOAuthError(t, status, body, http.StatusBadRequest, "authorization_pending", "/device")
	status, body = poll(dc) // no time has passed
	wantOAuthError(t, status, body, http.StatusBadRequest, "slow_down", "2s")
	clock.Advance(2 * time.Second)
	status, body = poll(dc)
	wantOAuthError(t, status, body, http.StatusBadRequest, "authorization_pending", "")

	if err := p.ApproveDevice(uc, "eve"); err == nil || !strings.Contains(err.Error(), `"eve"`) {
		t.Errorf("approving as an unknown user: err = %v", err)
	}
	if err := p.ApproveDevice("BBBB-BBBB", "alice"); err == nil {
		t.Error("approving an unknown user code succeeded")
	}
	// People type codes in lower case and without the dash.
	if err := p.ApproveDevice(strings.ToLower(strings.ReplaceAll(uc, "-", "")), "bob"); err != nil {
		t.Fatalf("ApproveDevice: %v", err)
	}
	if err := p.ApproveDevice(uc, "alice"); err == nil {
		t.Error("approving twice succeeded")
	}
	clock.Advance(2 * time.Second)
	status, body = poll(dc)
	if status != http.StatusOK {
		t.Fatalf("poll after approval: %d %v", status, body)
	}
	if c := payload(t, body["id_token"].(string)); c["sub"] != "bob" {
		t.Errorf("id_token sub = %v, want bob", c["sub"])
	}
	clock.Advance(2 * time.Second)
	status, body = poll(dc)
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_grant", "already used")

	// Expiry.
	dc, uc, _ = deviceCode(t, srv)
	clock.Advance(5*time.Minute + time.Second)
	if err := p.ApproveDevice(uc, "alice"); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("approving an expired code: err = %v", err)
	}
	status, body = poll(dc)
	wantOAuthError(t, status, body, http.StatusBadRequest, "expired_token", "expired")

	// Denial through the HTML form.
	dc, uc, _ = deviceCode(t, srv)
	resp, err := http.PostForm(srv.URL+"/device", url.Values{"user_code": {uc}, "action": {"deny"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("deny: status %d", resp.StatusCode)
	}
	status, body = poll(dc)
	wantOAuthError(t, status, body, http.StatusBadRequest, "access_denied", "denied")
}

func TestDevicePage(t *testing.T) {
	_, srv := start(t, Options{Issuer: "/idp"})
	base := srv.URL + "/idp"

	resp, err := http.Get(base + "/device?user_code=<script>")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"NOT FOR PRODUCTION", "Approve as alice", "Approve as bob", "Approve as mallory", `action="` + base + `/device"`} {
		if !strings.Contains(string(page), want) {
			t.Errorf("GET /device page lacks %q", want)
		}
	}
	if strings.Contains(string(page), "<SCRIPT>") {
		t.Error("user_code is reflected unescaped")
	}

	_, uc, _ := deviceCode(t, &httptest.Server{URL: base})
	post := func(v url.Values) (int, string) {
		resp, err := http.PostForm(base+"/device", v)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, page := post(url.Values{"user_code": {uc}, "sub": {"eve"}}); status != http.StatusBadRequest || !strings.Contains(page, "no dev user with sub &#34;eve&#34;") {
		t.Errorf("unknown sub: %d %s", status, page)
	}
	if status, page := post(url.Values{"user_code": {"ZZZZ-ZZZZ"}, "sub": {"alice"}}); status != http.StatusBadRequest || !strings.Contains(page, "unknown user code") {
		t.Errorf("unknown user code: %d %s", status, page)
	}
	if status, page := post(url.Values{"user_code": {uc}, "sub": {"alice"}}); status != http.StatusOK || !strings.Contains(page, "Approved") {
		t.Errorf("approve: %d %s", status, page)
	}

	resp, err = http.Get(srv.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("discovery outside the issuer path: status %d, want 404", resp.StatusCode)
	}
}
