// Package idtoken verifies OpenID Connect ID tokens for wardend and obtains
// them with the OAuth 2.0 device authorization grant for the warden CLI.
//
// Verification is built on github.com/coreos/go-oidc/v3: go-oidc fetches the
// discovery document and the JWKS (and refreshes the keys when it meets an
// unknown kid), and it has the final word on every token. This package adds
// what Warden needs on top: strict algorithm rules (no "none", no HMAC),
// a configurable groups claim, and errors that say exactly why a token was
// rejected, classified by the Err* sentinels and safe to show the user.
package idtoken

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Config configures a [Verifier]. It mirrors the "oidc" section of agent.yaml.
type Config struct {
	// Issuer is the IdP's issuer URL, exactly as it appears in the tokens'
	// "iss" claim and in its discovery document. It must be https, except on
	// a loopback host (the dev IdP).
	Issuer string
	// ClientID is the OAuth client id; tokens must carry it in "aud".
	ClientID string
	// GroupsClaim is the claim that holds group names. Default "groups".
	GroupsClaim string
	// CAFile is an optional PEM bundle used instead of the system roots to
	// verify the IdP's TLS certificate, for discovery and JWKS fetches. It
	// replaces rather than extends the system roots (like kube-apiserver's
	// --oidc-ca-file), so a private IdP is trusted only through its own CA.
	CAFile string
}

// Claims are the verified claims of an ID token that Warden uses.
type Claims struct {
	Subject  string
	Email    string
	Name     string
	Issuer   string
	Groups   []string
	Expiry   time.Time
	IssuedAt time.Time
	// Nonce is the "nonce" claim, which an authorization code flow
	// client compares with the one it sent; "" when absent.
	Nonce string
}

// defaultRetryEvery is the minimum time between two discovery attempts while
// the IdP is unreachable: a burst of logins must not become a burst of
// requests to an IdP that is down.
const defaultRetryEvery = 2 * time.Second

// maxTokenSize bounds the input; real ID tokens are a few KiB.
const maxTokenSize = 64 << 10

// nbfLeeway matches go-oidc's allowance for clock skew on "nbf".
const nbfLeeway = 5 * time.Minute

// asymmetricAlgs are the only algorithms Warden accepts. HMAC algorithms are
// excluded on purpose: their key is shared with every client of the IdP, and
// confusing an RSA public key with an HMAC secret is a classic forgery.
var asymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Verifier verifies ID tokens from one issuer for one client. It is safe for
// concurrent use.
//
// Discovery is lazy on failure: wardend may start before the IdP (both are
// services; boot order is not guaranteed), and refusing to start would leave
// the host without its agent, which is worse than refusing logins until the
// IdP answers. So [NewVerifier] tries discovery once and, if the IdP cannot be
// reached, returns a Verifier anyway; each [Verifier.Verify] then retries
// discovery (at most once every couple of seconds) and fails with
// [ErrUnavailable] until it succeeds. Fail closed: no token is ever accepted
// without discovery and a signature check against the published keys.
// Configuration mistakes (bad URL, unreadable CA file, an issuer whose
// discovery document names a different issuer) are still reported by
// NewVerifier.
type Verifier struct {
	cfg    Config
	client *http.Client
	// keyCtx carries client to go-oidc's background JWKS fetches.
	keyCtx context.Context

	ready atomic.Pointer[discovered]

	mu         sync.Mutex // serialises discovery attempts
	lastTry    time.Time
	lastErr    error
	retryEvery time.Duration
	now        func() time.Time
}

// discovered is the state built from a successful discovery.
type discovered struct {
	verifier *oidc.IDTokenVerifier
	algs     []string // algorithms the issuer signs with, ∩ asymmetricAlgs
	endpoint oauth2.Endpoint
}

// sigOutcome records what the key set said about one token's signature.
// go-oidc flattens errors to strings; recording the outcome where it happens
// lets diagnose classify a rejection without string matching and without
// checking the signature (and refetching the JWKS) a second time.
type sigOutcome struct {
	checked bool
	err     error
}

type sigOutcomeKey struct{}

// recordingKeySet passes signature checks to go-oidc's remote key set and
// records the outcome in the *sigOutcome carried by the context, if any.
type recordingKeySet struct{ inner oidc.KeySet }

// VerifySignature implements oidc.KeySet.
func (r recordingKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := r.inner.VerifySignature(ctx, jwt)
	if o, ok := ctx.Value(sigOutcomeKey{}).(*sigOutcome); ok {
		o.checked, o.err = true, err
	}
	return payload, err
}

// NewVerifier returns a Verifier for cfg. ctx bounds only the initial
// discovery attempt. See [Verifier] for what happens when the IdP is down.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := CheckIssuerURL(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("idtoken: oidc.issuer: %w", err)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("idtoken: oidc.client_id is required")
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	client, err := newHTTPClient(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("idtoken: oidc.ca_file: %w", err)
	}
	v := &Verifier{
		cfg:        cfg,
		client:     client,
		keyCtx:     oidc.ClientContext(context.Background(), client),
		retryEvery: defaultRetryEvery,
		now:        time.Now,
	}
	if err := v.Discover(ctx); err != nil {
		var mismatch *oidc.IssuerMismatchError
		if errors.As(err, &mismatch) {
			return nil, fmt.Errorf("idtoken: %w", err)
		}
		// Anything else may be transient; Verify retries.
	}
	return v, nil
}

// Issuer returns the configured issuer.
func (v *Verifier) Issuer() string { return v.cfg.Issuer }

// Discover fetches the issuer's discovery document if that has not succeeded
// yet. It returns nil once discovery has succeeded, and an [*Error] with
// Reason [ErrUnavailable] otherwise. wardend can call it at start-up to log
// whether the IdP is reachable; Verify calls it itself.
func (v *Verifier) Discover(ctx context.Context) error {
	_, err := v.discovered(ctx)
	return err
}

func (v *Verifier) discovered(ctx context.Context) (*discovered, error) {
	if d := v.ready.Load(); d != nil {
		return d, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if d := v.ready.Load(); d != nil {
		return d, nil
	}
	if v.lastErr != nil && v.now().Sub(v.lastTry) < v.retryEvery {
		return nil, v.lastErr
	}
	v.lastTry = v.now()
	d, err := v.discover(ctx)
	if err != nil && ctx.Err() != nil {
		// This caller gave up; that says nothing about the IdP, so do not
		// make other callers wait out the retry interval because of it.
		v.lastTry = time.Time{}
		return nil, &Error{Reason: ErrUnavailable, Msg: "identity provider discovery was cancelled: " + ctx.Err().Error(), Cause: ctx.Err()}
	}
	if err != nil {
		v.lastErr = &Error{
			Reason: ErrUnavailable,
			Msg:    fmt.Sprintf("cannot reach the identity provider %q: %s", v.cfg.Issuer, clip(err.Error(), 300)),
			Cause:  err,
		}
		return nil, v.lastErr
	}
	v.lastErr = nil
	v.ready.Store(d)
	return d, nil
}

func (v *Verifier) discover(ctx context.Context) (*discovered, error) {
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, v.client), v.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	var meta struct {
		JWKSURL string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, fmt.Errorf("decode discovery document: %w", err)
	}
	if meta.JWKSURL == "" {
		return nil, errors.New("discovery document has no jwks_uri")
	}
	var algs []string
	for _, a := range meta.Algs {
		if slices.Contains(asymmetricAlgs, a) {
			algs = append(algs, a)
		}
	}
	if len(meta.Algs) == 0 {
		// OIDC Discovery makes the field required; RS256 is the mandatory
		// default when an IdP leaves it out anyway.
		algs = []string{"RS256"}
	}
	if len(algs) == 0 {
		return nil, fmt.Errorf("the issuer signs ID tokens only with %v; Warden accepts only asymmetric algorithms %v", meta.Algs, asymmetricAlgs)
	}
	keys := recordingKeySet{oidc.NewRemoteKeySet(v.keyCtx, meta.JWKSURL)}
	return &discovered{
		verifier: oidc.NewVerifier(v.cfg.Issuer, keys, &oidc.Config{
			ClientID:             v.cfg.ClientID,
			SupportedSigningAlgs: algs,
		}),
		algs:     algs,
		endpoint: provider.Endpoint(),
	}, nil
}

// Endpoint returns the issuer's authorization and token endpoints, from
// its discovery document (the authorization code flow of the console).
func (v *Verifier) Endpoint(ctx context.Context) (oauth2.Endpoint, error) {
	d, err := v.discovered(ctx)
	if err != nil {
		return oauth2.Endpoint{}, err
	}
	if d.endpoint.AuthURL == "" || d.endpoint.TokenURL == "" {
		return oauth2.Endpoint{}, newError(ErrUnavailable, fmt.Sprintf("the discovery document of %q lacks authorization_endpoint or token_endpoint", v.cfg.Issuer))
	}
	return d.endpoint, nil
}

// ClientContext returns ctx carrying the HTTP client that trusts the
// issuer (Config.CAFile), for x/oauth2 calls to its token endpoint.
func (v *Verifier) ClientContext(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, v.client)
}

// Verify checks rawIDToken's signature against the issuer's JWKS, its
// issuer, audience (the client id) and validity window, and returns its
// claims. Every error is an [*Error]; classify it with errors.Is against the
// Err* sentinels. Error messages never contain the token.
func (v *Verifier) Verify(ctx context.Context, rawIDToken string) (*Claims, error) {
	raw := strings.TrimSpace(rawIDToken)
	// Cheap structural checks first: they give precise errors for tokens
	// that can never be valid, and a foreign issuer's token must not make us
	// fetch our issuer's JWKS (go-oidc refetches on every unknown kid).
	if err := v.precheck(raw); err != nil {
		return nil, err
	}
	d, err := v.discovered(ctx)
	if err != nil {
		return nil, err
	}
	alg, _ := headerAlg(raw) // precheck parsed it already
	if !slices.Contains(d.algs, alg) {
		return nil, newError(ErrSignature, fmt.Sprintf("token uses alg %q, but the issuer signs with %v", alg, d.algs))
	}
	sig := &sigOutcome{}
	tok, err := d.verifier.Verify(context.WithValue(ctx, sigOutcomeKey{}, sig), raw)
	if err != nil {
		return nil, v.diagnose(ctx, sig, raw, err)
	}
	return v.claims(tok)
}

// precheck rejects what is visibly wrong without any network access. Nothing
// it reads is trusted: it only ever rejects.
func (v *Verifier) precheck(raw string) error {
	if raw == "" {
		return newError(ErrMalformed, "token is empty")
	}
	if len(raw) > maxTokenSize {
		return newError(ErrMalformed, fmt.Sprintf("token is %d bytes, more than the %d an ID token may have", len(raw), maxTokenSize))
	}
	switch strings.Count(raw, ".") {
	case 2:
	case 4:
		return newError(ErrMalformed, "token is encrypted (JWE); an ID token signed by the issuer (JWS) is required")
	default:
		return newError(ErrMalformed, "token is not a JWT: expected three base64url parts separated by dots")
	}
	parts := strings.SplitN(raw, ".", 3)
	alg, err := headerAlg(raw)
	if err != nil {
		return err
	}
	switch up := strings.ToUpper(alg); {
	case alg == "":
		return newError(ErrMalformed, "token header has no \"alg\"")
	case up == "NONE":
		return newError(ErrSignature, fmt.Sprintf("token uses alg %q; unsigned tokens are rejected", clip(alg, 20)))
	case strings.HasPrefix(up, "HS"):
		return newError(ErrSignature, fmt.Sprintf("token uses alg %q; symmetric (HMAC) signatures are rejected, the issuer must sign with a private key", clip(alg, 20)))
	case !slices.Contains(asymmetricAlgs, alg):
		return newError(ErrSignature, fmt.Sprintf("token uses unsupported alg %q; accepted: %v", clip(alg, 20), asymmetricAlgs))
	}
	var payload struct {
		Iss any `json:"iss"`
	}
	if err := decodeSegment(parts[1], &payload); err != nil {
		return newError(ErrMalformed, "token payload is not base64url-encoded JSON")
	}
	iss, ok := payload.Iss.(string)
	switch {
	case payload.Iss == nil || (ok && iss == ""):
		return newError(ErrMalformed, "token has no \"iss\" claim")
	case !ok:
		return newError(ErrMalformed, "token claim \"iss\" is not a string")
	case iss != v.cfg.Issuer:
		return newError(ErrIssuer, fmt.Sprintf("token issuer %q is not the configured issuer %q", clip(iss, 200), v.cfg.Issuer))
	}
	if parts[2] == "" {
		return newError(ErrSignature, "token has no signature; unsigned tokens are rejected")
	}
	return nil
}

// headerAlg returns the "alg" of a compact JWS without verifying anything.
func headerAlg(raw string) (string, error) {
	head, _, _ := strings.Cut(raw, ".")
	var h struct {
		Alg any `json:"alg"`
	}
	if err := decodeSegment(head, &h); err != nil {
		return "", newError(ErrMalformed, "token header is not base64url-encoded JSON")
	}
	if h.Alg == nil {
		return "", nil
	}
	alg, ok := h.Alg.(string)
	if !ok {
		return "", newError(ErrMalformed, "token header \"alg\" is not a string")
	}
	return alg, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// diagnose turns a go-oidc rejection into a specific, classified error. It
// never accepts a token: it only explains why go-oidc did not.
func (v *Verifier) diagnose(ctx context.Context, sig *sigOutcome, raw string, oidcErr error) error {
	var expired *oidc.TokenExpiredError
	if errors.As(oidcErr, &expired) {
		// go-oidc checks expiry only after the signature, issuer and audience.
		if expired.Expiry.IsZero() {
			return newError(ErrMalformed, "token has no \"exp\" claim")
		}
		return newError(ErrExpired, fmt.Sprintf("token expired at %s", expired.Expiry.UTC().Format(time.RFC3339)))
	}
	if !sig.checked {
		// go-oidc gave up before the signature: it could not parse the JWS.
		return &Error{Reason: ErrMalformed, Msg: "token is not a valid signed JWT: " + clip(oidcErr.Error(), 200), Cause: oidcErr}
	}
	if err := sig.err; err != nil {
		if ctx.Err() != nil {
			return &Error{Reason: ErrUnavailable, Msg: "token verification was cancelled: " + ctx.Err().Error(), Cause: ctx.Err()}
		}
		// go-oidc wraps key-fetch failures ("fetching keys %w") and returns
		// a plain error when the keys were fetched but none verifies.
		if errors.Unwrap(err) != nil {
			return &Error{
				Reason: ErrUnavailable,
				Msg:    fmt.Sprintf("cannot fetch the signing keys of %q: %s", v.cfg.Issuer, clip(err.Error(), 300)),
				Cause:  err,
			}
		}
		return newError(ErrSignature, "token signature does not verify against the issuer's keys")
	}
	// The signature is good, so the claims are the issuer's: explain which
	// one go-oidc objected to. precheck decoded this segment already.
	payload, err := base64.RawURLEncoding.DecodeString(strings.SplitN(raw, ".", 3)[1])
	if err != nil {
		return newError(ErrMalformed, "token payload is not base64url-encoded")
	}
	var c struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
		Exp json.RawMessage `json:"exp"`
		Nbf json.RawMessage `json:"nbf"`
		Iat json.RawMessage `json:"iat"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return newError(ErrMalformed, "token claims are not a JSON object with a string \"iss\"")
	}
	if len(c.Exp) == 0 || string(c.Exp) == "null" {
		return newError(ErrMalformed, "token has no \"exp\" claim")
	}
	var exp, nbf, iat float64
	for _, n := range []struct {
		name string
		raw  json.RawMessage
		dst  *float64
	}{{"exp", c.Exp, &exp}, {"nbf", c.Nbf, &nbf}, {"iat", c.Iat, &iat}} {
		if len(n.raw) > 0 && string(n.raw) != "null" && json.Unmarshal(n.raw, n.dst) != nil {
			return newError(ErrMalformed, fmt.Sprintf("token claim %q is %s, not a number of seconds", n.name, jsonKind(n.raw)))
		}
	}
	if c.Iss != v.cfg.Issuer {
		return newError(ErrIssuer, fmt.Sprintf("token issuer %q is not the configured issuer %q", clip(c.Iss, 200), v.cfg.Issuer))
	}
	aud, err := audience(c.Aud)
	if err != nil {
		return err
	}
	if !slices.Contains(aud, v.cfg.ClientID) {
		shown := make([]string, 0, len(aud))
		for _, a := range aud {
			shown = append(shown, clip(a, 100))
		}
		return newError(ErrAudience, fmt.Sprintf("token audience %v does not include client id %q", shown, v.cfg.ClientID))
	}
	if nbf != 0 {
		t := time.Unix(int64(nbf), 0)
		if time.Now().Add(nbfLeeway).Before(t) {
			return newError(ErrExpired, fmt.Sprintf("token is not valid before %s", t.UTC().Format(time.RFC3339)))
		}
	}
	return &Error{Reason: ErrMalformed, Msg: "token rejected: " + clip(oidcErr.Error(), 300), Cause: oidcErr}
}

// audience decodes "aud", which is a string or an array of strings.
func audience(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, newError(ErrAudience, "token has no \"aud\" claim")
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		return many, nil
	}
	return nil, newError(ErrMalformed, "token claim \"aud\" is neither a string nor a list of strings")
}

// claims extracts Warden's claims from a verified token.
func (v *Verifier) claims(tok *oidc.IDToken) (*Claims, error) {
	if tok.Subject == "" {
		return nil, newError(ErrClaims, "token has no \"sub\" claim")
	}
	var all map[string]json.RawMessage
	if err := tok.Claims(&all); err != nil {
		return nil, newError(ErrMalformed, "token claims are not a JSON object")
	}
	c := &Claims{
		Subject:  tok.Subject,
		Issuer:   tok.Issuer,
		Expiry:   tok.Expiry,
		IssuedAt: tok.IssuedAt,
		Nonce:    tok.Nonce,
	}
	var err error
	if c.Email, err = optionalString(all, "email"); err != nil {
		return nil, err
	}
	if c.Name, err = optionalString(all, "name"); err != nil {
		return nil, err
	}
	if c.Groups, err = groups(all[v.cfg.GroupsClaim], v.cfg.GroupsClaim); err != nil {
		return nil, err
	}
	return c, nil
}

func optionalString(all map[string]json.RawMessage, name string) (string, error) {
	raw, ok := all[name]
	if !ok || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", newError(ErrClaims, fmt.Sprintf("token claim %q is %s, not a string", name, jsonKind(raw)))
	}
	return s, nil
}

// groups decodes the groups claim: a list of strings, or one string (some
// IdPs send a lone group that way). Absent or null means no groups.
func groups(raw json.RawMessage, name string) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, newError(ErrClaims, fmt.Sprintf("token claim %q must be a list of strings or a string, not %s", name, jsonKind(raw)))
	}
	out := make([]string, 0, len(elems))
	for i, e := range elems {
		var s string
		if err := json.Unmarshal(e, &s); err != nil {
			return nil, newError(ErrClaims, fmt.Sprintf("token claim %q must be a list of strings, but element %d is %s", name, i, jsonKind(e)))
		}
		out = append(out, s)
	}
	return out, nil
}

// jsonKind names the JSON type of raw for error messages.
func jsonKind(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	if s == "" {
		return "empty"
	}
	switch s[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// clip shortens attacker-controlled or verbose text for error messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// CheckIssuerURL reports whether issuer is an acceptable issuer URL: an
// absolute https URL with no query, fragment or user info (OpenID Connect
// Discovery 1.0, section 2). Plain http is accepted only for loopback hosts:
// the signing keys are fetched from the issuer, and over plain http anyone on
// the path could substitute their own. The agent config validates with it
// too, so a bad issuer is caught where it is written.
func CheckIssuerURL(issuer string) error {
	if issuer == "" {
		return errors.New("issuer URL is required")
	}
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%q is not an absolute URL", issuer)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q: an issuer URL has no query, fragment or user info (OpenID Connect Discovery 1.0, section 2)", issuer)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q must use https: the token signing keys are fetched from the issuer, and over plain http anyone on the path could substitute their own and forge identities (http is accepted only for loopback hosts, for local testing)", issuer)
	}
	return fmt.Errorf("%q must use https", issuer)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// newHTTPClient returns the client for discovery, JWKS and token requests.
func newHTTPClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %q contains no PEM certificates", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	// The timeout bounds one request; it keeps a hung IdP from stalling
	// logins forever even when the caller's context has no deadline.
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}, nil
}
