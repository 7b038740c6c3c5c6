// Package devidp is a development OpenID Provider.
//
// NOT FOR PRODUCTION. It has no passwords, no sessions and no consent: anyone
// who can reach it can mint a signed ID token for any configured user, either
// by approving a device code on the /device page, by choosing a user on the
// /authorize page or by calling POST /dev/token.
// It exists so that `make demo` and the end-to-end tests can run against a real
// OIDC issuer (discovery, JWKS, signed RS256 tokens and the RFC 8628 device
// authorization grant) without an external IdP.
//
// The endpoints, all relative to the issuer URL:
//
//	GET  /.well-known/openid-configuration  discovery document
//	GET  /jwks                              the public signing key, with a kid
//	POST /device/code                       device authorization endpoint (RFC 8628 §3.1)
//	GET  /authorize                         sign-in page of the authorization code flow (PKCE S256 required)
//	POST /authorize                         the chosen user: 303 to redirect_uri with code and state
//	POST /token                             token endpoint: device_code (RFC 8628 §3.4) and
//	                                        authorization_code with code_verifier (RFC 7636) grants
//	GET  /device                            verification page: pick a dev user and approve
//	POST /device                            approve (user_code, sub) or deny (user_code, action=deny)
//	POST /dev/token                         dev only: sub (+ optional ttl) -> signed ID token
//
// [IdP.Issue] additionally mints tokens that are deliberately wrong (expired,
// foreign audience or issuer, signed by a key that is not in the JWKS, or
// unsigned with alg "none") so that tests can check that verifiers reject them.
package devidp

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"
)

// Warning is the banner shown on every HTML page, in the startup log and in
// the discovery document, so nobody mistakes this IdP for a real one.
const Warning = "DEV IdP — NOT FOR PRODUCTION: anyone who can reach it can obtain tokens for any user"

// User is a dev user the IdP can issue tokens for.
type User struct {
	// Sub is the stable subject identifier (the "sub" claim). Required and unique.
	Sub string `yaml:"sub" json:"sub"`
	// Email is the "email" claim.
	Email string `yaml:"email" json:"email"`
	// Name is the "name" claim.
	Name string `yaml:"name" json:"name"`
	// Groups are emitted in the "groups" claim.
	Groups []string `yaml:"groups" json:"groups"`
}

// DefaultUsers returns the built-in dev users used by the demo and the tests:
// alice (engineering), bob (dba, engineering) and mallory (contractors).
func DefaultUsers() []User {
	return []User{
		{Sub: "alice", Email: "alice@example.com", Name: "Alice Example", Groups: []string{"engineering"}},
		{Sub: "bob", Email: "bob@example.com", Name: "Bob Example", Groups: []string{"dba", "engineering"}},
		{Sub: "mallory", Email: "mallory@example.com", Name: "Mallory Example", Groups: []string{"contractors"}},
	}
}

// Options configure a dev IdP.
type Options struct {
	// Issuer is the public base URL, exactly as verifiers are configured with
	// it (for example "http://127.0.0.1:5556"). A trailing slash is removed.
	// If it has a path, the endpoints are served under that path.
	Issuer string
	// ClientID is the only client the IdP knows; it is the default audience.
	// Default "warden".
	ClientID string
	// Users are the identities the IdP can issue tokens for. Default DefaultUsers().
	Users []User
	// Key signs the tokens and is published in the JWKS. Default: a fresh
	// RSA-2048 key. RSA, ECDSA (P-256/384/521) and Ed25519 keys are supported.
	Key crypto.Signer
	// DeviceCodeTTL is how long a device code stays valid. Default 10 minutes.
	DeviceCodeTTL time.Duration
	// PollInterval is the polling interval advertised to device-flow clients,
	// in whole seconds (RFC 8628 clients cannot poll faster than 1s).
	// Default 5s, the RFC's default.
	PollInterval time.Duration
	// Now is the clock. Default time.Now. Tests set it to expire device codes
	// without sleeping.
	Now func() time.Time
	// RedirectURIs, when set, are the only redirect URIs the authorization
	// code flow accepts. Default: any absolute http(s) URL (a dev IdP has
	// no client registration).
	RedirectURIs []string
	// Logger receives structured logs. Default: no logging.
	Logger *zerolog.Logger
}

// IdP is a development OpenID Provider. It is safe for concurrent use.
type IdP struct {
	issuer   string
	basePath string // path of the issuer URL, "" or "/something"
	clientID string
	users    map[string]User
	order    []string // user subs in configured order, for the /device page
	key      crypto.Signer
	alg      jose.SignatureAlgorithm
	kid      string
	jwks     jose.JSONWebKeySet
	codeTTL  time.Duration
	interval time.Duration
	now      func() time.Time
	log      zerolog.Logger

	mu      sync.Mutex
	devices map[string]*deviceGrant // by device_code
	byUser  map[string]*deviceGrant // by normalised user_code
	codes   map[string]*authCode    // authorization codes, by code

	redirects []string
}

// New builds a dev IdP. It does not listen; serve [IdP.Handler] or call
// [IdP.Serve].
func New(opts Options) (*IdP, error) {
	issuer := strings.TrimRight(opts.Issuer, "/")
	if issuer == "" {
		return nil, errors.New("devidp: Options.Issuer is required (the public base URL, e.g. http://127.0.0.1:5556)")
	}
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, fmt.Errorf("devidp: issuer %q: %w", issuer, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("devidp: issuer %q must be an http(s) URL with a host and no query or fragment", issuer)
	}
	p := &IdP{
		issuer:   issuer,
		basePath: u.Path,
		clientID: opts.ClientID,
		users:    make(map[string]User),
		key:      opts.Key,
		codeTTL:  opts.DeviceCodeTTL,
		interval: opts.PollInterval,
		now:      opts.Now,
		log:      zerolog.Nop(),
		devices:  make(map[string]*deviceGrant),
		byUser:   make(map[string]*deviceGrant),
		codes:    make(map[string]*authCode),
	}
	for _, r := range opts.RedirectURIs {
		if err := p.checkRedirect(r); err != nil {
			return nil, fmt.Errorf("devidp: Options.RedirectURIs: %w", err)
		}
	}
	p.redirects = opts.RedirectURIs
	if opts.Logger != nil {
		p.log = *opts.Logger
	}
	if p.clientID == "" {
		p.clientID = "warden"
	}
	if p.codeTTL <= 0 {
		p.codeTTL = 10 * time.Minute
	}
	if p.interval <= 0 {
		p.interval = 5 * time.Second
	}
	// The wire format is whole seconds; round up so clients never poll
	// faster than we advertise.
	p.interval = ((p.interval + time.Second - 1) / time.Second) * time.Second
	if p.now == nil {
		p.now = time.Now
	}

	users := opts.Users
	if users == nil {
		users = DefaultUsers()
	}
	for i, usr := range users {
		if usr.Sub == "" {
			return nil, fmt.Errorf("devidp: user #%d has an empty sub", i+1)
		}
		if _, dup := p.users[usr.Sub]; dup {
			return nil, fmt.Errorf("devidp: user #%d: duplicate sub %q", i+1, usr.Sub)
		}
		p.users[usr.Sub] = usr
		p.order = append(p.order, usr.Sub)
	}

	if p.key == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("devidp: generate RSA signing key: %w", err)
		}
		p.key = k
	}
	p.alg, err = algFor(p.key.Public())
	if err != nil {
		return nil, fmt.Errorf("devidp: signing key: %w", err)
	}
	pub := jose.JSONWebKey{Key: p.key.Public(), Algorithm: string(p.alg), Use: "sig"}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("devidp: key thumbprint: %w", err)
	}
	// The RFC 7638 thumbprint is a stable kid: the same key always gets the
	// same id, so a restarted IdP with a persisted key keeps its kid.
	p.kid = b64(thumb)
	pub.KeyID = p.kid
	p.jwks = jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}}
	return p, nil
}

// Issuer returns the issuer URL the IdP puts in tokens and discovery.
func (p *IdP) Issuer() string { return p.issuer }

// ClientID returns the client id the IdP accepts and uses as default audience.
func (p *IdP) ClientID() string { return p.clientID }

// KeyID returns the kid of the signing key published in the JWKS.
func (p *IdP) KeyID() string { return p.kid }

// PublicKey returns the public half of the signing key.
func (p *IdP) PublicKey() crypto.PublicKey { return p.key.Public() }

// Serve serves the IdP on ln until ctx is cancelled, then shuts down
// gracefully. The issuer URL must point at ln (build the IdP with
// Issuer: "http://"+ln.Addr().String()). It returns nil after a clean shutdown.
func (p *IdP) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           p.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	p.log.Warn().Str("issuer", p.issuer).Str("addr", ln.Addr().String()).Msg(Warning)
	select {
	case err := <-errc:
		return fmt.Errorf("devidp: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	// A fresh context: ctx is already done, but in-flight requests (a device
	// flow poll, say) deserve a moment to finish.
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
		<-errc
		return fmt.Errorf("devidp: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("devidp: serve %s: %w", ln.Addr(), err)
	}
	return nil
}
