package devidp

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxBody caps request bodies; every legitimate request here is tiny.
const maxBody = 64 << 10

// maxDevTTL bounds the ttl accepted by POST /dev/token.
const maxDevTTL = 24 * time.Hour

const deviceCodeGrant = "urn:ietf:params:oauth:grant-type:device_code"

// Handler returns the HTTP handler serving all endpoints under the issuer's
// path. See the package documentation for the list.
func (p *IdP) Handler() http.Handler {
	mux := http.NewServeMux()
	b := p.basePath
	mux.HandleFunc("GET "+b+"/.well-known/openid-configuration", p.handleDiscovery)
	mux.HandleFunc("GET "+b+"/jwks", p.handleJWKS)
	mux.HandleFunc("POST "+b+"/device/code", p.handleDeviceCode)
	mux.HandleFunc("POST "+b+"/token", p.handleToken)
	mux.HandleFunc("GET "+b+"/device", p.handleDevicePage)
	mux.HandleFunc("POST "+b+"/device", p.handleDeviceApprove)
	mux.HandleFunc("POST "+b+"/dev/token", p.handleDevToken)
	mux.HandleFunc("GET "+b+"/authorize", p.handleAuthorize)
	mux.HandleFunc("POST "+b+"/authorize", p.handleAuthorizeChoice)
	mux.HandleFunc("GET "+b+"/{$}", p.handleIndex)
	return mux
}

func (p *IdP) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                p.issuer,
		"jwks_uri":                              p.issuer + "/jwks",
		"authorization_endpoint":                p.issuer + "/authorize",
		"token_endpoint":                        p.issuer + "/token",
		"device_authorization_endpoint":         p.issuer + "/device/code",
		"grant_types_supported":                 []string{deviceCodeGrant, authorizationCodeGrant},
		"response_types_supported":              []string{"code"},
		"code_challenge_methods_supported":      []string{"S256"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{string(p.alg)},
		"scopes_supported":                      []string{"openid", "profile", "email", "groups"},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "email", "email_verified", "name", "groups"},
		"warning":                               Warning,
	})
}

func (p *IdP) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, p.jwks)
}

func (p *IdP) handleDeviceCode(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if cid := r.PostForm.Get("client_id"); cid != p.clientID {
		oauthError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf("unknown client_id %q; this IdP only knows %q", cid, p.clientID))
		return
	}
	g, err := p.newDevice()
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	uc := displayUserCode(g.userCode)
	p.log.Info().Str("user_code", uc).Msg("device authorization started")
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code":               g.deviceCode,
		"user_code":                 uc,
		"verification_uri":          p.issuer + "/device",
		"verification_uri_complete": p.issuer + "/device?user_code=" + uc,
		"expires_in":                int64(p.codeTTL / time.Second),
		"interval":                  int64(p.interval / time.Second),
	})
}

func (p *IdP) handleToken(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	f := r.PostForm
	gt := f.Get("grant_type")
	if gt != deviceCodeGrant && gt != authorizationCodeGrant {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type",
			fmt.Sprintf("grant_type %q is not supported; this dev IdP supports %q and %q", gt, deviceCodeGrant, authorizationCodeGrant))
		return
	}
	if cid := f.Get("client_id"); cid != p.clientID {
		oauthError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf("unknown client_id %q; this IdP only knows %q", cid, p.clientID))
		return
	}
	if gt == authorizationCodeGrant {
		p.redeemCode(w, f)
		return
	}
	dc := f.Get("device_code")
	if dc == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "device_code is required")
		return
	}
	res := p.poll(dc)
	if res.errCode != "" {
		oauthError(w, http.StatusBadRequest, res.errCode, res.desc)
		return
	}
	p.writeTokens(w, res.user, nil, "openid profile email groups", "device flow")
}

// devTokenRequest is the JSON body of POST /dev/token.
type devTokenRequest struct {
	Sub string          `json:"sub"`
	TTL json.RawMessage `json:"ttl"`
}

func (p *IdP) handleDevToken(w http.ResponseWriter, r *http.Request) {
	var sub, ttlText, format string
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		var req devTokenRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", "JSON body: "+err.Error())
			return
		}
		sub = req.Sub
		if len(req.TTL) > 0 && string(req.TTL) != "null" {
			// ttl may be a number of seconds or a Go duration string.
			var s string
			if json.Unmarshal(req.TTL, &s) == nil {
				ttlText = s
			} else {
				ttlText = string(req.TTL)
			}
		}
		format = r.URL.Query().Get("format")
	} else {
		if err := parseForm(w, r); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		sub = r.Form.Get("sub")
		ttlText = r.Form.Get("ttl")
		format = r.Form.Get("format")
	}
	if sub == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "sub is required (one of: "+strings.Join(p.order, ", ")+")")
		return
	}
	u, ok := p.users[sub]
	if !ok {
		oauthError(w, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("no dev user with sub %q (known: %s)", sub, strings.Join(p.order, ", ")))
		return
	}
	var ttl time.Duration
	if ttlText != "" {
		var err error
		if ttl, err = parseTTL(ttlText); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
	}
	tok, err := p.issueFor(u, ttl)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	if ttl == 0 {
		ttl = time.Hour // Issue's default
	}
	p.log.Warn().Str("sub", u.Sub).Str("ttl", ttl.String()).Msg("dev token issued via /dev/token (NOT FOR PRODUCTION)")
	w.Header().Set("Cache-Control", "no-store")
	if format == "raw" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, tok)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id_token":   tok,
		"token_type": "Bearer",
		"expires_in": int64(ttl / time.Second),
	})
}

// parseTTL reads a ttl as whole seconds ("600") or a Go duration ("10m").
// Negative values give already-expired tokens, for demos of rejection.
func parseTTL(s string) (time.Duration, error) {
	var d time.Duration
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > int64(maxDevTTL/time.Second) || n < -int64(maxDevTTL/time.Second) {
			return 0, fmt.Errorf("ttl %q is out of range (at most %s either way)", s, maxDevTTL)
		}
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("ttl %q is neither a number of seconds nor a duration like \"10m\"", s)
	}
	if d == 0 || d > maxDevTTL || d < -maxDevTTL {
		return 0, fmt.Errorf("ttl %q must be non-zero and at most %s either way", s, maxDevTTL)
	}
	return d, nil
}

func (p *IdP) handleIndex(w http.ResponseWriter, _ *http.Request) {
	p.renderPage(w, http.StatusOK, pageData{Index: true})
}

func (p *IdP) handleDevicePage(w http.ResponseWriter, r *http.Request) {
	uc := normaliseUserCode(r.URL.Query().Get("user_code"))
	p.renderPage(w, http.StatusOK, pageData{Form: true, UserCode: displayUserCode(uc)})
}

func (p *IdP) handleDeviceApprove(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		p.renderPage(w, http.StatusBadRequest, pageData{Form: true, Error: err.Error()})
		return
	}
	uc := r.PostForm.Get("user_code")
	data := pageData{Form: true, UserCode: displayUserCode(normaliseUserCode(uc))}
	var err error
	if r.PostForm.Get("action") == "deny" {
		if err = p.DenyDevice(uc); err == nil {
			data = pageData{Done: "Denied. The device will not be signed in."}
		}
	} else {
		sub := r.PostForm.Get("sub")
		if err = p.ApproveDevice(uc, sub); err == nil {
			data = pageData{Done: fmt.Sprintf("Approved: the device is now signed in as %q. You can close this page.", sub)}
		}
	}
	if err != nil {
		data.Error = strings.TrimPrefix(err.Error(), "devidp: ")
		p.renderPage(w, http.StatusBadRequest, data)
		return
	}
	p.renderPage(w, http.StatusOK, data)
}

// parseForm parses a bounded urlencoded body.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		return fmt.Errorf("cannot parse form body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing useful to do
}

// oauthError writes an RFC 6749 §5.2 error response.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", errors.New("cannot generate access token")
	}
	return b64(b), nil
}

type pageData struct {
	Index    bool
	Form     bool
	UserCode string
	Done     string
	Error    string
	// Authorize is a checked authorization request: show the sign-in
	// buttons.
	Authorize *authRequest
	// Filled in by renderPage.
	Warning string
	Issuer  string
	Users   []User
}

func (p *IdP) renderPage(w http.ResponseWriter, status int, d pageData) {
	d.Warning = Warning
	d.Issuer = p.issuer
	for _, sub := range p.order {
		d.Users = append(d.Users, p.users[sub])
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = pageTmpl.Execute(w, d) // headers are sent; a failed write is the client's loss
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Warden dev IdP (NOT FOR PRODUCTION)</title>
<style>
body{font-family:sans-serif;max-width:44em;margin:2em auto;padding:0 1em}
.warn{background:#b00020;color:#fff;padding:1em;font-weight:bold}
.err{border:2px solid #b00020;padding:.5em}
.ok{border:2px solid #2e7d32;padding:.5em}
button{margin:.2em 0}
</style></head><body>
<p class="warn">{{.Warning}}</p>
<h1>Warden dev IdP</h1>
<p>Issuer: <code>{{.Issuer}}</code></p>
{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
{{if .Done}}<p class="ok">{{.Done}}</p>{{end}}
{{if .Index}}<p>Endpoints: <a href="{{.Issuer}}/.well-known/openid-configuration">discovery</a>,
<a href="{{.Issuer}}/jwks">JWKS</a>, <a href="{{.Issuer}}/device">device verification</a>.</p>{{end}}
{{with .Authorize}}
<form method="post" action="{{$.Issuer}}/authorize">
<input type="hidden" name="client_id" value="{{.ClientID}}">
<input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<input type="hidden" name="scope" value="{{.Scope}}">
<input type="hidden" name="state" value="{{.State}}">
<input type="hidden" name="nonce" value="{{.Nonce}}">
<input type="hidden" name="code_challenge" value="{{.Challenge}}">
<input type="hidden" name="code_challenge_method" value="{{.ChallengeMeth}}">
<p>Sign in to <code>{{.RedirectURI}}</code> as:</p>
{{range $.Users}}<div><button type="submit" name="sub" value="{{.Sub}}" data-testid="signin-{{.Sub}}">Sign in as {{.Sub}}</button>
{{.Name}} &lt;{{.Email}}&gt; groups: {{range $i, $g := .Groups}}{{if $i}}, {{end}}{{$g}}{{else}}(none){{end}}</div>
{{end}}
<p><button type="submit" name="action" value="deny">Cancel</button></p>
</form>
{{end}}
{{if .Form}}
<form method="post" action="{{.Issuer}}/device">
<p><label>Code shown by <code>warden login</code>:
<input name="user_code" value="{{.UserCode}}" autocomplete="off" required></label></p>
<p>Sign in as:</p>
{{range .Users}}<div><button type="submit" name="sub" value="{{.Sub}}">Approve as {{.Sub}}</button>
{{.Name}} &lt;{{.Email}}&gt; groups: {{range $i, $g := .Groups}}{{if $i}}, {{end}}{{$g}}{{else}}(none){{end}}</div>
{{end}}
<p><button type="submit" name="action" value="deny">Deny</button></p>
</form>
{{end}}
</body></html>
`))

// writeTokens answers a token request that succeeded with an ID token for u
// (with extra claims, such as the nonce) and an opaque access token, as
// RFC 6749 §5.1 describes. flow names the grant in the log.
func (p *IdP) writeTokens(w http.ResponseWriter, u User, claims map[string]any, scope, flow string) {
	idTok, err := p.Issue(IssueOptions{Sub: u.Sub, Email: u.Email, Name: u.Name, Groups: nonNil(u.Groups), Claims: claims})
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	access, err := randomToken()
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	p.log.Info().Str("sub", u.Sub).Msg(flow + ": ID token issued")
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": access,
		"token_type":   "Bearer",
		"expires_in":   int64(time.Hour / time.Second),
		"id_token":     idTok,
		"scope":        scope,
	})
}
