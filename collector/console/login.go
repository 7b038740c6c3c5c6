package console

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/wardenhq/warden/collector/api"
)

// Limits of sign-ins in progress.
const (
	// loginTTL is how long a sign-in may take at the IdP.
	loginTTL = 10 * time.Minute
	// maxPending bounds sign-ins in progress (each is a few hundred bytes,
	// made by an unauthenticated GET /login).
	maxPending = 10000
	// stateCookie binds a sign-in to the browser that started it, so a
	// callback URL planted in someone else's browser (login CSRF) fails.
	// SameSite=Lax: the IdP's redirect back is a cross-site navigation.
	stateCookie = "warden_console_login"
	// callbackPath is where the IdP sends the browser back.
	callbackPath = "/auth/callback"
)

// pendingLogin is a sign-in between GET /login and the callback.
type pendingLogin struct {
	verifier, nonce, next string
	expires               time.Time
}

// logins holds the sign-ins in progress, by state.
type logins struct {
	mu sync.Mutex
	m  map[string]*pendingLogin
}

func (l *logins) put(state string, p *pendingLogin, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, v := range l.m {
		if now.After(v.expires) {
			delete(l.m, k)
		}
	}
	if len(l.m) >= maxPending {
		for k := range l.m { // arbitrary victims: all are unauthenticated
			delete(l.m, k)
			if len(l.m) < maxPending {
				break
			}
		}
	}
	l.m[state] = p
}

// take removes and returns the sign-in of state: a state is good once.
func (l *logins) take(state string, now time.Time) *pendingLogin {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.m[state]
	delete(l.m, state)
	if p == nil || now.After(p.expires) {
		return nil
	}
	return p
}

// oauthConfig is the code flow's client configuration; the endpoints come
// from the issuer's discovery document.
func (s *Server) oauthConfig(r *http.Request) (*oauth2.Config, error) {
	ep, err := s.cfg.Verifier.Endpoint(r.Context())
	if err != nil {
		return nil, err
	}
	// A public client with PKCE: no secret, client_id in the form.
	ep.AuthStyle = oauth2.AuthStyleInParams
	return &oauth2.Config{
		ClientID:    s.cfg.ClientID,
		Endpoint:    ep,
		RedirectURL: strings.TrimRight(s.cfg.URL, "/") + callbackPath,
		Scopes:      []string{oidc.ScopeOpenID, "profile", "email", "groups"},
	}, nil
}

// safeNext keeps a post-sign-in target on this site: a path, never
// //host or an absolute URL (an open redirect).
//
// Browsers drop tabs and newlines from URLs and read a backslash as a
// slash, so "/\t/evil.example" would become "//evil.example": any control
// character or backslash makes next refused.
func safeNext(next string) string {
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || strings.ContainsRune(next, '\\') ||
		strings.ContainsFunc(next, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "/live"
	}
	return next
}

// login starts the authorization code flow with PKCE (S256), state and
// nonce.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	oc, err := s.oauthConfig(r)
	if err != nil {
		s.log.Warn().Err(err).Msg("sign-in: identity provider unavailable")
		s.errorPage(w, r, http.StatusServiceUnavailable, "Cannot reach the identity provider to sign in: "+err.Error())
		return
	}
	state, err1 := randomID()
	nonce, err2 := randomID()
	if err := errors.Join(err1, err2); err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	p := &pendingLogin{verifier: oauth2.GenerateVerifier(), nonce: nonce, next: safeNext(r.URL.Query().Get("next")), expires: s.now().Add(loginTTL)}
	s.logins.put(state, p, s.now())
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: state, Path: callbackPath, MaxAge: int(loginTTL / time.Second),
		HttpOnly: true, Secure: s.sessions.secure, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, oc.AuthCodeURL(state, oauth2.S256ChallengeOption(p.verifier), oidc.Nonce(nonce)), http.StatusFound)
}

// callback finishes the flow: the state must be this browser's, the code
// is exchanged with the PKCE verifier, and the ID token is verified
// (signature, issuer, audience, expiry) by the API's verifier and must
// carry the nonce sent.
func (s *Server) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	ck, _ := r.Cookie(stateCookie)
	// The state cookie is spent whatever happens next.
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: "", Path: callbackPath, MaxAge: -1, HttpOnly: true, Secure: s.sessions.secure, SameSite: http.SameSiteLaxMode})
	if state == "" || ck == nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(state)) != 1 {
		s.log.Warn().Str("remote", r.RemoteAddr).Msg("sign-in refused: state does not match this browser's")
		s.errorPage(w, r, http.StatusBadRequest, "Sign-in refused: the state does not match the sign-in this browser started. Sign in again.")
		return
	}
	p := s.logins.take(state, s.now())
	if p == nil {
		s.errorPage(w, r, http.StatusBadRequest, "Sign-in refused: unknown, used or expired state. Sign in again.")
		return
	}
	if e := q.Get("error"); e != "" {
		s.errorPage(w, r, http.StatusForbidden, "The identity provider did not sign you in: "+e+" "+q.Get("error_description"))
		return
	}
	oc, err := s.oauthConfig(r)
	if err != nil {
		s.errorPage(w, r, http.StatusServiceUnavailable, "Cannot reach the identity provider: "+err.Error())
		return
	}
	tok, err := oc.Exchange(s.cfg.Verifier.ClientContext(r.Context()), q.Get("code"), oauth2.VerifierOption(p.verifier))
	if err != nil {
		s.log.Warn().Str("reason", oauthErr(err)).Msg("sign-in refused: code exchange failed")
		s.errorPage(w, r, http.StatusBadRequest, "Sign-in refused: the identity provider did not exchange the code: "+oauthErr(err))
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		s.errorPage(w, r, http.StatusBadGateway, "Sign-in refused: the identity provider's answer has no ID token.")
		return
	}
	claims, err := s.cfg.Verifier.Verify(r.Context(), raw)
	if err != nil {
		s.log.Warn().Str("reason", err.Error()).Msg("sign-in refused: ID token")
		s.errorPage(w, r, http.StatusForbidden, "Sign-in refused: "+err.Error())
		return
	}
	if subtle.ConstantTimeCompare([]byte(claims.Nonce), []byte(p.nonce)) != 1 {
		s.log.Warn().Str("sub", claims.Subject).Msg("sign-in refused: nonce mismatch")
		s.errorPage(w, r, http.StatusForbidden, "Sign-in refused: the ID token's nonce is not this sign-in's.")
		return
	}
	// A new session id at every sign-in; the browser's previous session,
	// if any, ends (no session fixation, no forgotten sessions).
	s.sessions.end(r)
	cookie, err := s.sessions.create(claims)
	if err != nil {
		s.errorPage(w, r, http.StatusForbidden, "Sign-in refused: "+err.Error())
		return
	}
	http.SetCookie(w, cookie)
	s.log.Info().Str("sub", claims.Subject).Strs("groups", claims.Groups).Msg("console sign-in")
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		// A SameSite=Strict cookie is not sent on a redirect chain that
		// began on another site (the IdP's page): continue from a page of
		// our own, whose navigation is same-site.
		s.render(w, r, http.StatusOK, "continue", &page{Title: "Signed in", Next: p.next})
		return
	}
	http.Redirect(w, r, p.next, http.StatusSeeOther)
}

// oauthErr describes an x/oauth2 error without response bodies.
func oauthErr(err error) string {
	if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok && re.ErrorCode != "" {
		return strings.TrimSpace(re.ErrorCode + ": " + re.ErrorDescription)
	}
	return err.Error()
}

// logout ends the session (CSRF-checked).
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	_, err := s.sessions.Authenticate(r)
	switch {
	case errors.Is(err, api.ErrNoSession):
		// Nothing to end; say so rather than refuse.
	case err != nil:
		s.refuse(w, r, err)
		return
	default:
		s.sessions.end(r)
	}
	http.SetCookie(w, s.sessions.clearCookie())
	s.render(w, r, http.StatusOK, "signedout", &page{Title: "Signed out"})
}
