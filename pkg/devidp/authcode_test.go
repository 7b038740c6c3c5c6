package devidp

import (
	"crypto/sha256"
	"html"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

const testVerifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-extra" // 47 chars

func challengeOf(v string) string {
	s := sha256.Sum256([]byte(v))
	return b64(s[:])
}

func authParams(redirect string) url.Values {
	return url.Values{
		"response_type": {"code"}, "client_id": {"warden"}, "redirect_uri": {redirect},
		"scope": {"openid email groups"}, "state": {"st-1"}, "nonce": {"n-1"},
		"code_challenge": {challengeOf(testVerifier)}, "code_challenge_method": {"S256"},
	}
}

// signIn walks the sign-in page as a browser would: GET /authorize, then
// the chosen user's button, and returns the redirect's query.
func signIn(t *testing.T, base string, params url.Values, sub string) url.Values {
	t.Helper()
	resp, err := http.Get(base + "/authorize?" + params.Encode())
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `data-testid="signin-`+sub+`"`) || !strings.Contains(string(page), "NOT FOR PRODUCTION") {
		t.Fatalf("GET /authorize: %d\n%s", resp.StatusCode, page)
	}
	form := url.Values{}
	for k, v := range params {
		if k != "response_type" {
			form[k] = v
		}
	}
	form.Set("sub", sub)
	resp, err = noRedirect.PostForm(base+"/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST /authorize: status %d, want 303", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc.Query()
}

func TestAuthorizationCodeFlow(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	_, srv := start(t, Options{Now: clock.Now})
	redirect := "http://127.0.0.1:9/auth/callback"
	q := signIn(t, srv.URL, authParams(redirect), "bob")
	if q.Get("state") != "st-1" || q.Get("code") == "" {
		t.Fatalf("redirect query %v: want state st-1 and a code", q)
	}
	tokenReq := func(code, verifier, redir string) (int, map[string]any) {
		return postForm(t, srv.URL+"/token", url.Values{"grant_type": {"authorization_code"}, "client_id": {"warden"},
			"code": {code}, "code_verifier": {verifier}, "redirect_uri": {redir}})
	}

	// A wrong verifier is refused, and burns the code.
	status, body := tokenReq(q.Get("code"), strings.Repeat("a", 43), redirect)
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_grant", "code_verifier does not match")
	status, body = tokenReq(q.Get("code"), testVerifier, redirect)
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_grant", "already used")

	// The right verifier gets an ID token with the nonce, once.
	q = signIn(t, srv.URL, authParams(redirect), "bob")
	status, body = tokenReq(q.Get("code"), testVerifier, redirect)
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, body)
	}
	claims := payload(t, body["id_token"].(string))
	if claims["sub"] != "bob" || claims["nonce"] != "n-1" || claims["email"] != "bob@example.com" {
		t.Fatalf("claims %v: want bob with nonce n-1", claims)
	}
	status, body = tokenReq(q.Get("code"), testVerifier, redirect)
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_grant", "already used")

	// Another redirect_uri than the request's is refused.
	q = signIn(t, srv.URL, authParams(redirect), "alice")
	status, body = tokenReq(q.Get("code"), testVerifier, "http://127.0.0.1:9/other")
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_grant", "redirect_uri differs")

	// An expired code is refused.
	q = signIn(t, srv.URL, authParams(redirect), "alice")
	clock.Advance(authCodeTTL + time.Second)
	status, body = tokenReq(q.Get("code"), testVerifier, redirect)
	wantOAuthError(t, status, body, http.StatusBadRequest, "invalid_grant", "expired")

	// Cancel sends the browser back with access_denied and the state.
	form := authParams(redirect)
	form.Set("action", "deny")
	resp, err := noRedirect.PostForm(srv.URL+"/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "error=access_denied") || !strings.Contains(loc, "state=st-1") {
		t.Fatalf("deny: Location %q", loc)
	}
}

func TestAuthorizeRefusals(t *testing.T) {
	_, srv := start(t, Options{RedirectURIs: []string{"http://127.0.0.1:9/cb"}})
	for name, tc := range map[string]struct {
		key, value, want string
	}{
		"no PKCE":         {"code_challenge_method", "", "PKCE with S256 is required"},
		"plain PKCE":      {"code_challenge_method", "plain", "PKCE with S256 is required"},
		"short challenge": {"code_challenge", "abc", "43-character"},
		"foreign client":  {"client_id", "other", `unknown client_id "other"`},
		"unregistered":    {"redirect_uri", "http://evil.example/cb", "not one of the registered"},
		"implicit":        {"response_type", "token", `response_type "token"`},
		"no openid":       {"scope", "email", `lacks "openid"`},
	} {
		t.Run(name, func(t *testing.T) {
			p := authParams("http://127.0.0.1:9/cb")
			p.Set(tc.key, tc.value)
			resp, err := noRedirect.Get(srv.URL + "/authorize?" + p.Encode())
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(html.UnescapeString(string(page)), tc.want) {
				t.Fatalf("status %d, want 400 mentioning %q:\n%s", resp.StatusCode, tc.want, page)
			}
		})
	}
	// A hostile state is shown escaped, not as markup.
	p := authParams("http://127.0.0.1:9/cb")
	p.Set("state", `"><script>alert(1)</script>`)
	resp, err := http.Get(srv.URL + "/authorize?" + p.Encode())
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(page), "<script>") {
		t.Fatalf("state rendered as markup:\n%s", page)
	}
}
