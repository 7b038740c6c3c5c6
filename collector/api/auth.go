package api

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/wardenhq/warden/pkg/idtoken"
)

// identify verifies the request's bearer ID token and returns whom it
// names. On failure it has written the answer: 401 without a valid token,
// 503 when the issuer cannot be reached to check it.
func (s *Server) identify(w http.ResponseWriter, r *http.Request) (*idtoken.Claims, bool) {
	v := s.cfg.Kill.Verifier
	if v == nil {
		writeError(w, http.StatusServiceUnavailable, "this collector verifies no tokens (no --oidc-issuer)")
		return nil, false
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(tok) == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="warden-collector"`)
		writeError(w, http.StatusUnauthorized, "an OIDC ID token is required (Authorization: Bearer)")
		return nil, false
	}
	claims, err := v.Verify(r.Context(), strings.TrimSpace(tok))
	if err != nil {
		if errors.Is(err, idtoken.ErrUnavailable) {
			writeError(w, http.StatusServiceUnavailable, "cannot verify the token now: "+err.Error())
			return nil, false
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="warden-collector", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "token refused: "+err.Error())
		return nil, false
	}
	return claims, true
}

// isReader reports whether c names a member of a readers group.
func (s *Server) isReader(c *idtoken.Claims) bool {
	return slices.ContainsFunc(c.Groups, func(g string) bool { return slices.Contains(s.cfg.Readers, g) })
}
