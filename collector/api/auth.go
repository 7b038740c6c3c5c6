package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/wardenhq/warden/pkg/idtoken"
)

// Verifier verifies an OIDC ID token; *idtoken.Verifier is one.
type Verifier interface {
	Verify(ctx context.Context, rawIDToken string) (*idtoken.Claims, error)
}

// SessionAuth authenticates a request that carries no bearer token by the
// web console's session cookie (collector/console implements it), so that
// the console's pages may call the API as the person signed in.
type SessionAuth interface {
	// Authenticate returns the claims of the request's session. It returns
	// an error wrapping ErrNoSession when the request has no valid session
	// (no cookie, or a forged, unknown or expired one), and another error,
	// answered 403, when the session is valid but the request is refused:
	// a state-changing request without the session's CSRF token, or from
	// another site.
	Authenticate(r *http.Request) (*idtoken.Claims, error)
}

// ErrNoSession is a request without a valid console session.
var ErrNoSession = errors.New("no valid console session")

// access says who may call an endpoint. Every /v1 endpoint needs a
// verified person; only /healthz is open, for load balancers.
type access int

const (
	// accessPublic needs no token (/healthz, which then reveals nothing
	// but liveness).
	accessPublic access = iota
	// accessReaders needs a verified member of a Readers group; the
	// route's handler runs only after that check.
	accessReaders
	// accessHandler needs a verified person too, but the role depends on
	// the request (killers for kills, a rule's approvers for a review
	// decision), so the handler calls identify and decides itself.
	accessHandler
)

// route is one endpoint and who may call it.
type route struct {
	pattern string // http.ServeMux pattern, "GET /v1/events"
	access  access
	handler http.HandlerFunc
}

// realm names the collector in WWW-Authenticate challenges.
const realm = `Bearer realm="warden-collector"`

// identify verifies the request's bearer ID token and returns whom it
// names. On failure it has written the answer: 401 (with a
// WWW-Authenticate challenge) without a valid token, 503 when the issuer
// cannot be reached to check it. A collector without a Verifier refuses
// everyone: the API never serves unauthenticated.
func (s *Server) identify(w http.ResponseWriter, r *http.Request) (*idtoken.Claims, bool) {
	v := s.cfg.Verifier
	if v == nil {
		writeError(w, http.StatusServiceUnavailable, "this collector verifies no tokens (started without --oidc-issuer), so it serves nobody")
		return nil, false
	}
	tok, ok := bearer(r)
	if !ok && s.cfg.Sessions != nil {
		claims, err := s.cfg.Sessions.Authenticate(r)
		if err == nil {
			return claims, true
		}
		if !errors.Is(err, ErrNoSession) {
			s.log.Warn().Str("remote", r.RemoteAddr).Str("uri", r.URL.Path).Str("reason", err.Error()).Msg("console session request refused")
			writeError(w, http.StatusForbidden, err.Error())
			return nil, false
		}
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", realm)
		writeError(w, http.StatusUnauthorized, "no ID token: every call needs an OIDC ID token from "+s.issuer()+" (Authorization: Bearer)")
		return nil, false
	}
	claims, err := v.Verify(r.Context(), tok)
	if err != nil {
		if errors.Is(err, idtoken.ErrUnavailable) {
			s.log.Warn().Err(err).Msg("cannot verify a token: identity provider unavailable")
			writeError(w, http.StatusServiceUnavailable, "cannot verify the ID token now: "+err.Error())
			return nil, false
		}
		// The message is idtoken's, which never quotes the token.
		s.log.Info().Str("remote", r.RemoteAddr).Str("reason", err.Error()).Str("uri", r.URL.Path).Msg("ID token refused")
		w.Header().Set("WWW-Authenticate", realm+`, error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "ID token refused: "+oneLine(err.Error()))
		return nil, false
	}
	return claims, true
}

// bearer returns the request's bearer token, if it has one.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	// RFC 9110: the scheme is case-insensitive.
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// issuer names the expected issuer in messages, when known.
func (s *Server) issuer() string {
	if is, ok := s.cfg.Verifier.(interface{ Issuer() string }); ok && is.Issuer() != "" {
		return is.Issuer()
	}
	return "the collector's issuer"
}

// IsReader reports whether c names a member of a readers group (--readers):
// the role that may read events, lineage, sessions and every review.
func (s *Server) IsReader(c *idtoken.Claims) bool {
	return slices.ContainsFunc(c.Groups, func(g string) bool { return slices.Contains(s.cfg.Readers, g) })
}

// guard wraps a route's handler with its access check.
func (s *Server) guard(rt route) http.Handler {
	switch rt.access {
	case accessPublic, accessHandler:
		return rt.handler
	case accessReaders:
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			claims, ok := s.identify(w, r)
			if !ok {
				return
			}
			if !s.IsReader(claims) {
				s.log.Warn().Str("sub", claims.Subject).Strs("groups", claims.Groups).Str("uri", r.URL.Path).Msg("read refused: not a reader")
				writeError(w, http.StatusForbidden, s.NotReader(claims))
				return
			}
			rt.handler(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
		})
	}
	panic(fmt.Sprintf("api: route %s has no access rule", rt.pattern))
}

// NotReader is the 403 message for a verified person outside Readers.
func (s *Server) NotReader(c *idtoken.Claims) string {
	if len(s.cfg.Readers) == 0 {
		return fmt.Sprintf("%s may not read events: this collector has no --readers groups, so nobody may", c.Subject)
	}
	return fmt.Sprintf("%s may not read events, lineage or sessions: not a member of %s (--readers)", c.Subject, strings.Join(s.cfg.Readers, ", "))
}

// claimsKey carries the verified claims of a reader's request to its
// handler.
type claimsKey struct{}

// claimsOf returns the verified claims guard put in ctx, or nil.
func claimsOf(ctx context.Context) *idtoken.Claims {
	c, _ := ctx.Value(claimsKey{}).(*idtoken.Claims)
	return c
}

// oneLine keeps a message on one line for clients that print it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
