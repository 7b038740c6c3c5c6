package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/wardenhq/warden/collector/api"
	"github.com/wardenhq/warden/pkg/idtoken"
)

// Cookie names and limits of sessions.
const (
	// CookieName is the session cookie: HttpOnly, SameSite=Strict, Path=/,
	// Secure when the listener is TLS. Its value is a random 32-byte id;
	// everything else stays on the server.
	CookieName = "warden_console"
	// MaxSession bounds a session, whatever the ID token's lifetime.
	MaxSession = 8 * time.Hour
	// maxSessions bounds the store: a flood of sign-ins cannot exhaust
	// memory (the oldest sessions go first).
	maxSessions = 10000
	// maxFormBody bounds a console form (a review reason, a CSRF token).
	maxFormBody = 64 << 10
)

// session is one signed-in browser.
type session struct {
	claims  *idtoken.Claims
	csrf    string
	expires time.Time
	// done is closed when the session ends, which ends its live streams.
	done chan struct{}
}

// Sessions is the console's server-side session store. It implements
// api.SessionAuth, so the JSON API accepts the console's cookie too.
// Sessions live in memory: a collector restart signs everybody out, and
// collectors behind one load balancer need sticky sessions.
type Sessions struct {
	// secure marks the cookie Secure (the listener is TLS).
	secure bool
	// origins are the origins a state-changing request may come from
	// besides the request's own Host.
	origins []string
	now     func() time.Time

	mu sync.Mutex
	// m is keyed by the SHA-256 of the cookie value, so the lookup's
	// timing says nothing about valid ids.
	m map[[32]byte]*session
}

// NewSessions returns an empty store. secure marks the cookie Secure;
// publicURL (the console's URL, may be "") is an origin state-changing
// requests may come from, besides the request's own host.
func NewSessions(secure bool, publicURL string, now func() time.Time) *Sessions {
	if now == nil {
		now = time.Now
	}
	ss := &Sessions{secure: secure, now: now, m: map[[32]byte]*session{}}
	if u, err := url.Parse(publicURL); err == nil && u.Scheme != "" && u.Host != "" {
		ss.origins = append(ss.origins, u.Scheme+"://"+u.Host)
	}
	return ss
}

// randomID is 32 random bytes, base64url.
func randomID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// create starts a session for verified claims, lasting until the ID
// token expires (at most MaxSession), and returns its cookie.
func (ss *Sessions) create(c *idtoken.Claims) (*http.Cookie, error) {
	now := ss.now()
	exp := now.Add(MaxSession)
	if !c.Expiry.IsZero() && c.Expiry.Before(exp) {
		exp = c.Expiry
	}
	if !exp.After(now) {
		return nil, fmt.Errorf("the ID token expired at %s", c.Expiry.UTC().Format(time.RFC3339))
	}
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	csrf, err := randomID()
	if err != nil {
		return nil, err
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.pruneLocked(now)
	ss.m[sha256.Sum256([]byte(id))] = &session{claims: c, csrf: csrf, expires: exp, done: make(chan struct{})}
	return &http.Cookie{Name: CookieName, Value: id, Path: "/", Expires: exp, HttpOnly: true, Secure: ss.secure, SameSite: http.SameSiteStrictMode}, nil
}

// pruneLocked drops expired sessions and, over maxSessions, the ones
// closest to expiry.
func (ss *Sessions) pruneLocked(now time.Time) {
	for k, s := range ss.m {
		if !now.Before(s.expires) {
			ss.deleteLocked(k)
		}
	}
	for len(ss.m) >= maxSessions {
		var oldest [32]byte
		var t time.Time
		for k, s := range ss.m {
			if t.IsZero() || s.expires.Before(t) {
				oldest, t = k, s.expires
			}
		}
		ss.deleteLocked(oldest)
	}
}

// deleteLocked ends session k.
func (ss *Sessions) deleteLocked(k [32]byte) {
	if s := ss.m[k]; s != nil {
		close(s.done)
		delete(ss.m, k)
	}
}

// lookup returns the request's live session, or nil: no cookie, a forged
// or unknown id, or an expired session are all "no session".
func (ss *Sessions) lookup(r *http.Request) *session {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return nil
	}
	k := sha256.Sum256([]byte(ck.Value))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[k]
	if s == nil {
		return nil
	}
	if !ss.now().Before(s.expires) {
		ss.deleteLocked(k)
		return nil
	}
	return s
}

// end deletes the request's session, if any.
func (ss *Sessions) end(r *http.Request) {
	if ck, err := r.Cookie(CookieName); err == nil {
		ss.mu.Lock()
		ss.deleteLocked(sha256.Sum256([]byte(ck.Value)))
		ss.mu.Unlock()
	}
}

// clearCookie is the Set-Cookie that removes the session cookie.
func (ss *Sessions) clearCookie() *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: ss.secure, SameSite: http.SameSiteStrictMode}
}

// Authenticate implements api.SessionAuth: the claims of the request's
// session; for anything but GET and HEAD, only with the session's CSRF
// token from the same origin.
func (ss *Sessions) Authenticate(r *http.Request) (*idtoken.Claims, error) {
	s := ss.lookup(r)
	if s == nil {
		return nil, api.ErrNoSession
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := ss.checkCSRF(r, s); err != nil {
			return nil, err
		}
	}
	return s.claims, nil
}

// checkCSRF refuses a state-changing request from another site or
// without the session's token (form field csrf or header X-CSRF-Token).
// SameSite=Strict alone keeps the cookie off cross-site requests in
// current browsers; the token and the origin check do not rely on it.
func (ss *Sessions) checkCSRF(r *http.Request, s *session) error {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return fmt.Errorf("cross-site request refused (Sec-Fetch-Site: %s)", site)
	}
	if o := r.Header.Get("Origin"); o != "" && !ss.sameOrigin(r, o) {
		return fmt.Errorf("request from origin %q refused: the console accepts changes only from its own pages", o)
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		ct := r.Header.Get("Content-Type")
		if ct == "application/x-www-form-urlencoded" || len(ct) > 19 && ct[:19] == "multipart/form-data" {
			r.Body = http.MaxBytesReader(nil, r.Body, maxFormBody)
			tok = r.PostFormValue("csrf")
		}
	}
	if tok == "" {
		return fmt.Errorf("missing CSRF token (form field csrf or header X-CSRF-Token): reload the page and try again")
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.csrf)) != 1 {
		return fmt.Errorf("wrong CSRF token: reload the page and try again")
	}
	return nil
}

// sameOrigin reports whether origin is the request's own (its Host, by
// the listener's scheme) or the console's configured URL.
func (ss *Sessions) sameOrigin(r *http.Request, origin string) bool {
	scheme := "http"
	if r.TLS != nil || ss.secure {
		scheme = "https"
	}
	if origin == scheme+"://"+r.Host {
		return true
	}
	for _, o := range ss.origins {
		if origin == o {
			return true
		}
	}
	return false
}
