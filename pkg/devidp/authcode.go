package devidp

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// authCodeTTL is how long an authorization code may wait to be redeemed;
// RFC 6749 §4.1.2 recommends at most ten minutes, a browser needs seconds.
const authCodeTTL = time.Minute

const authorizationCodeGrant = "authorization_code"

// pkceRE is RFC 7636 §4.1's code_verifier (and, base64url, §4.2's S256
// challenge, which is always 43 characters).
var pkceRE = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)

// authRequest is a checked authorization request (GET or POST /authorize).
type authRequest struct {
	ClientID      string
	RedirectURI   string
	Scope         string
	State         string
	Nonce         string
	Challenge     string
	ChallengeMeth string
}

// authCode is an issued authorization code, redeemable once at /token.
type authCode struct {
	req     authRequest
	user    User
	expires time.Time
}

// parseAuthRequest reads and checks an authorization request. The dev IdP
// requires PKCE with S256 (OAuth 2.1): a code without a challenge would be
// redeemable by anyone who sees it.
func (p *IdP) parseAuthRequest(v url.Values) (authRequest, error) {
	a := authRequest{
		ClientID:      v.Get("client_id"),
		RedirectURI:   v.Get("redirect_uri"),
		Scope:         v.Get("scope"),
		State:         v.Get("state"),
		Nonce:         v.Get("nonce"),
		Challenge:     v.Get("code_challenge"),
		ChallengeMeth: v.Get("code_challenge_method"),
	}
	if a.ClientID != p.clientID {
		return a, fmt.Errorf("unknown client_id %q; this IdP only knows %q", a.ClientID, p.clientID)
	}
	if err := p.checkRedirect(a.RedirectURI); err != nil {
		return a, err
	}
	if rt := v.Get("response_type"); rt != "code" {
		return a, fmt.Errorf("response_type %q is not supported; this IdP answers only \"code\"", rt)
	}
	if !strings.Contains(" "+a.Scope+" ", " openid ") {
		return a, fmt.Errorf("scope %q lacks \"openid\": this IdP issues ID tokens only", a.Scope)
	}
	if a.ChallengeMeth != "S256" {
		return a, fmt.Errorf("code_challenge_method %q: PKCE with S256 is required", a.ChallengeMeth)
	}
	if len(a.Challenge) != 43 || !pkceRE.MatchString(a.Challenge) {
		return a, fmt.Errorf("code_challenge must be the 43-character base64url SHA-256 of the code_verifier (RFC 7636)")
	}
	if len(a.State) > 512 || len(a.Nonce) > 512 {
		return a, fmt.Errorf("state and nonce may have at most 512 characters")
	}
	return a, nil
}

// checkRedirect accepts an absolute http(s) redirect URI without a fragment,
// and, when Options.RedirectURIs lists some, only those.
func (p *IdP) checkRedirect(raw string) error {
	if raw == "" {
		return fmt.Errorf("redirect_uri is required")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("redirect_uri %q must be an absolute http(s) URL without a fragment", raw)
	}
	if len(p.redirects) == 0 {
		return nil
	}
	for _, r := range p.redirects {
		if r == raw {
			return nil
		}
	}
	return fmt.Errorf("redirect_uri %q is not one of the registered %s", raw, strings.Join(p.redirects, ", "))
}

// handleAuthorize shows the sign-in page: one button per dev user. Errors
// are shown, never redirected: the redirect URI may be the very thing that
// is wrong.
func (p *IdP) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	a, err := p.parseAuthRequest(r.URL.Query())
	if err != nil {
		p.renderPage(w, http.StatusBadRequest, pageData{Error: "Sign-in request refused: " + err.Error()})
		return
	}
	p.renderPage(w, http.StatusOK, pageData{Authorize: &a})
}

// handleAuthorizeChoice issues a code for the user chosen on the sign-in
// page and sends the browser back to the client.
func (p *IdP) handleAuthorizeChoice(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		p.renderPage(w, http.StatusBadRequest, pageData{Error: err.Error()})
		return
	}
	f := r.PostForm
	f.Set("response_type", "code")
	a, err := p.parseAuthRequest(f)
	if err != nil {
		p.renderPage(w, http.StatusBadRequest, pageData{Error: "Sign-in request refused: " + err.Error()})
		return
	}
	back, _ := url.Parse(a.RedirectURI) // checked by parseAuthRequest
	q := back.Query()
	if a.State != "" {
		q.Set("state", a.State)
	}
	if f.Get("action") == "deny" {
		q.Set("error", "access_denied")
		back.RawQuery = q.Encode()
		http.Redirect(w, r, back.String(), http.StatusSeeOther)
		return
	}
	u, ok := p.users[f.Get("sub")]
	if !ok {
		p.renderPage(w, http.StatusBadRequest, pageData{Error: fmt.Sprintf("no dev user %q", f.Get("sub"))})
		return
	}
	code, err := p.newAuthCode(a, u)
	if err != nil {
		p.renderPage(w, http.StatusInternalServerError, pageData{Error: err.Error()})
		return
	}
	q.Set("code", code)
	back.RawQuery = q.Encode()
	p.log.Info().Str("sub", u.Sub).Str("redirect_uri", a.RedirectURI).Msg("authorization code issued")
	http.Redirect(w, r, back.String(), http.StatusSeeOther)
}

func (p *IdP) newAuthCode(a authRequest, u User) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("authorization code: %w", err)
	}
	code := b64(b)
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c, ac := range p.codes {
		if now.After(ac.expires) {
			delete(p.codes, c)
		}
	}
	p.codes[code] = &authCode{req: a, user: u, expires: now.Add(authCodeTTL)}
	return code, nil
}

// redeemCode serves the authorization_code grant of POST /token. A code is
// removed at its first presentation, right or wrong, so it can never be
// replayed nor its verifier guessed over several tries.
func (p *IdP) redeemCode(w http.ResponseWriter, f url.Values) {
	code := f.Get("code")
	if code == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "code is required")
		return
	}
	p.mu.Lock()
	ac, ok := p.codes[code]
	delete(p.codes, code)
	p.mu.Unlock()
	switch {
	case !ok:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown or already used authorization code")
		return
	case p.now().After(ac.expires):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the authorization code expired")
		return
	case f.Get("redirect_uri") != ac.req.RedirectURI:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri differs from the authorization request's")
		return
	}
	verifier := f.Get("code_verifier")
	if !pkceRE.MatchString(verifier) {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier is missing or not 43-128 characters of [A-Za-z0-9._~-] (RFC 7636)")
		return
	}
	sum := sha256.Sum256([]byte(verifier))
	if subtle.ConstantTimeCompare([]byte(b64(sum[:])), []byte(ac.req.Challenge)) != 1 {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match the code_challenge (PKCE S256)")
		return
	}
	var claims map[string]any
	if ac.req.Nonce != "" {
		claims = map[string]any{"nonce": ac.req.Nonce}
	}
	p.writeTokens(w, ac.user, claims, ac.req.Scope, "authorization code flow")
}
