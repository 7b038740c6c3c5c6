// Package console is the collector's web console for SOC analysts and
// auditors: a live event stream, search with export, sessions, process
// lineage, SSH replay, the review queue and the integrity of each agent.
//
// It is served on the API's listener at / (the JSON API keeps /v1). People
// sign in through the same OIDC issuer as the API, with the authorization
// code flow and PKCE; the session lives on the server, named by an
// HttpOnly, SameSite=Strict cookie. Every POST carries the session's CSRF
// token. Roles are the API's: its code decides who may read and who may
// decide a review (collector/api), the console only renders.
//
// Pages are html/template, which escapes everything, event content
// included; a strict Content-Security-Policy allows scripts only from the
// console's own embedded files (web/dist, rebuilt by `make ui`).
package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/wardenhq/warden/collector/api"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/idtoken"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed web/dist
var distFS embed.FS

// Verifier verifies ID tokens and knows the issuer's endpoints;
// *idtoken.Verifier is one (the API's own).
type Verifier interface {
	Verify(ctx context.Context, rawIDToken string) (*idtoken.Claims, error)
	Endpoint(ctx context.Context) (oauth2.Endpoint, error)
	ClientContext(ctx context.Context) context.Context
}

// Config configures the console.
type Config struct {
	// API serves /v1 and /healthz and holds the shared queries and roles.
	API *api.Server
	// Store is the event store the API reads.
	Store *store.Store
	// Sessions is the session store, also given to the API
	// (api.Config.Sessions) so that it accepts the console's cookie.
	Sessions *Sessions
	// Verifier is the API's ID token verifier.
	Verifier Verifier
	// ClientID is the OIDC client id (the API's --oidc-client-id).
	ClientID string
	// URL is the console's public base URL, as the browser sees it; the
	// IdP redirects to URL + /auth/callback.
	URL string
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger zerolog.Logger
}

// Server serves the console, and the API under /v1 and /healthz.
type Server struct {
	cfg      Config
	sessions *Sessions
	logins   logins
	mux      *http.ServeMux
	pages    map[string]*template.Template
	static   http.Handler
	log      zerolog.Logger
}

// New returns the console.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.API == nil || cfg.Store == nil || cfg.Sessions == nil || cfg.Verifier == nil:
		return nil, errors.New("console: API, Store, Sessions and Verifier are required")
	case cfg.ClientID == "":
		return nil, errors.New("console: the OIDC client id is required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("console: URL %q must be an http(s) URL of the listener, with no path (--console-url)", cfg.URL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, sessions: cfg.Sessions, logins: logins{m: map[string]*pendingLogin{}}, mux: http.NewServeMux(),
		log: cfg.Logger.With().Str("component", "console").Logger()}
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	dist, err := fs.Sub(distFS, "web/dist")
	if err != nil {
		return nil, fmt.Errorf("console: embedded assets: %w", err)
	}
	s.static = http.StripPrefix("/static/", http.FileServerFS(dist))
	s.routes()
	return s, nil
}

func (s *Server) now() time.Time { return s.cfg.Now() }

func (s *Server) routes() {
	m := s.mux
	m.Handle("/v1/", s.cfg.API)
	m.Handle("/healthz", s.cfg.API)
	m.HandleFunc("GET /static/", s.assets)
	m.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	m.HandleFunc("GET /login", s.login)
	m.HandleFunc("GET "+callbackPath, s.callback)
	m.HandleFunc("POST /logout", s.logout)
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/live", http.StatusSeeOther) })
	m.HandleFunc("GET /live", s.reader(s.live))
	m.HandleFunc("GET /live/stream", s.reader(s.stream))
	m.HandleFunc("GET /search", s.reader(s.search))
	m.HandleFunc("GET /search/export", s.reader(s.export))
	m.HandleFunc("GET /sessions", s.reader(s.sessionList))
	m.HandleFunc("GET /sessions/{id}", s.reader(s.sessionPage))
	m.HandleFunc("GET /lineage/{id}", s.reader(s.lineage))
	m.HandleFunc("GET /replay/{id}", s.reader(s.replay))
	m.HandleFunc("GET /replay/{id}/cast", s.reader(s.cast))
	m.HandleFunc("GET /integrity", s.reader(s.integrity))
	m.HandleFunc("GET /reviews", s.signed(s.reviews))
	m.HandleFunc("POST /reviews/{id}/approve", s.signed(func(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) { s.decide(w, r, c, true) }))
	m.HandleFunc("POST /reviews/{id}/deny", s.signed(func(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) { s.decide(w, r, c, false) }))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("No such page: %s %s", r.Method, r.URL.Path))
	})
}

// csp allows scripts and styles only from the console's own files.
// 'wasm-unsafe-eval' lets asciinema-player compile its terminal emulator
// (WebAssembly); it does not allow eval of JavaScript.
const csp = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	if !strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.Path != "/healthz" {
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if s.sessions.secure {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
	}
	s.mux.ServeHTTP(w, r)
}

// assets serves the embedded files of web/dist.
func (s *Server) assets(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	s.static.ServeHTTP(w, r)
}

// handler is a page handler for a signed-in person.
type handler func(w http.ResponseWriter, r *http.Request, c *idtoken.Claims)

// signed runs h for a signed-in person; anyone else is sent to sign in.
// A POST also needs the session's CSRF token from the console's origin.
func (s *Server) signed(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.sessions.Authenticate(r)
		if errors.Is(err, api.ErrNoSession) {
			s.toLogin(w, r)
			return
		}
		if err != nil {
			s.refuse(w, r, err)
			return
		}
		h(w, r, c)
	}
}

// reader is signed for pages that only the API's readers may see.
func (s *Server) reader(h handler) http.HandlerFunc {
	return s.signed(func(w http.ResponseWriter, r *http.Request, c *idtoken.Claims) {
		if !s.cfg.API.IsReader(c) {
			s.log.Warn().Str("sub", c.Subject).Str("uri", r.URL.Path).Msg("console read refused: not a reader")
			s.errorPageAs(w, r, c, http.StatusForbidden, s.cfg.API.NotReader(c))
			return
		}
		h(w, r, c)
	})
}

// toLogin sends a browser without a session to sign in, and back here
// afterwards. The event stream and the cast are fetched by scripts,
// which cannot follow a sign-in: they get 401.
func (s *Server) toLogin(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/live/stream" || strings.HasSuffix(r.URL.Path, "/cast") {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	next := "/live"
	if r.Method == http.MethodGet {
		next = r.URL.RequestURI()
	}
	http.Redirect(w, r, "/login?next="+url.QueryEscape(next), http.StatusSeeOther)
}

// refuse answers a request refused for its session (CSRF, cross-site).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Warn().Str("remote", r.RemoteAddr).Str("uri", r.URL.Path).Str("reason", err.Error()).Msg("console request refused")
	s.errorPage(w, r, http.StatusForbidden, "Refused: "+err.Error())
}

// page is what every template gets; each page fills its own part.
type page struct {
	Title  string
	Nav    string
	Who    string
	CSRF   string
	Reader bool
	Next   string
	Notice string
	Error  string

	Filter     filterView
	Events     []eventRow
	NextPage   string
	FirstPage  string
	ExportCSV  string
	ExportJSON string
	Stream     string

	SessionList []sessionRow
	Session     *sessionRow
	Tree        *treeNode
	Replay      *replayView
	Pending     []reviewRow
	History     []reviewRow
	Agents      []agentRow
	Violations  []eventRow
}

// base is the page frame for the signed-in person c (nil: nobody).
func (s *Server) base(r *http.Request, c *idtoken.Claims, title, nav string) *page {
	p := &page{Title: title, Nav: nav}
	if c != nil {
		p.Who = c.Email
		if p.Who == "" {
			p.Who = c.Subject
		}
		p.Reader = s.cfg.API.IsReader(c)
		if sess := s.sessions.lookup(r); sess != nil {
			p.CSRF = sess.csrf
		}
	}
	return p
}

// render writes a page; a template error is logged and answered 500
// before anything is sent, since the page is rendered into a buffer.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page) {
	t, ok := s.pages[name]
	if !ok {
		panic("console: no page template " + name)
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout", p); err != nil {
		s.log.Error().Err(err).Str("page", name).Str("uri", r.URL.Path).Msg("render page")
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// errorPage answers with an error page, naming the signed-in person if
// any.
func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	var c *idtoken.Claims
	if sess := s.sessions.lookup(r); sess != nil {
		c = sess.claims
	}
	s.errorPageAs(w, r, c, status, msg)
}

func (s *Server) errorPageAs(w http.ResponseWriter, r *http.Request, c *idtoken.Claims, status int, msg string) {
	p := s.base(r, c, http.StatusText(status), "")
	p.Error = msg
	s.render(w, r, status, "error", p)
}

// internal logs err and answers 500.
func (s *Server) internal(w http.ResponseWriter, r *http.Request, c *idtoken.Claims, err error) {
	s.log.Error().Err(err).Str("uri", r.URL.Path).Msg("console request failed")
	s.errorPageAs(w, r, c, http.StatusInternalServerError, "Internal error: "+err.Error())
}

// pageNames are the templates/*.html files besides layout.html.
var pageNames = []string{"error", "continue", "signedout", "live", "search", "sessions", "session", "lineage", "replay", "reviews", "integrity"}

func parsePages() (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, n := range pageNames {
		t, err := template.New(n).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/rows.html", "templates/"+n+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		out[n] = t
	}
	return out, nil
}

// funcs are the templates' helpers; none returns template.HTML.
var funcs = template.FuncMap{
	"join": strings.Join,
}
