package console

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/collector/api"
	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/collector/reviews"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/review"
	"github.com/wardenhq/warden/tests/harness"
)

// clock is a settable clock for session expiry.
type clock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.d)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.d += d
	c.mu.Unlock()
}

// env is the console as the collector wires it: a real dev IdP serving
// the code flow, the API's real verifier, a real store and review
// service (embedded NATS), over loopback HTTP. Readers are
// "engineering" (alice, bob); reviews here name "dba" (bob) as approvers;
// mallory is neither.
type env struct {
	t        *testing.T
	idp      *devidp.IdP
	st       *store.Store
	notifier *api.Notifier
	svc      *reviews.Service
	recs     *recording.MemoryStore
	clock    *clock
	base     string
}

func newEnv(t *testing.T) *env { return newEnvWith(t, nil) }

// newEnvWith is newEnv whose console verifies ID tokens with wrap(the
// API's verifier), for tests of what the console does with a token.
func newEnvWith(t *testing.T, wrap func(Verifier) Verifier) *env {
	t.Helper()
	e := &env{t: t, notifier: api.NewNotifier(), recs: recording.NewMemoryStore(), clock: &clock{}}
	idpSrv := httptest.NewUnstartedServer(nil)
	var err error
	e.idp, err = devidp.New(devidp.Options{Issuer: "http://" + idpSrv.Listener.Addr().String(), ClientID: "warden"})
	if err != nil {
		t.Fatal(err)
	}
	idpSrv.Config.Handler = e.idp.Handler()
	idpSrv.Start()
	t.Cleanup(idpSrv.Close)

	v, err := idtoken.NewVerifier(context.Background(), idtoken.Config{Issuer: e.idp.Issuer(), ClientID: "warden"})
	if err != nil {
		t.Fatal(err)
	}
	if e.st, err = store.Open(harness.StoreLocation(t, t.TempDir())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.st.Close() })
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: zerolog.Nop(), AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if e.svc, err = reviews.New(reviews.Config{Store: e.st, NATS: nc, Logger: zerolog.Nop()}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	srv := httptest.NewUnstartedServer(nil)
	e.base = "http://" + srv.Listener.Addr().String()
	sessions := NewSessions(false, e.base, e.clock.now)
	a := api.New(api.Config{Store: e.st, Notifier: e.notifier, Verifier: v, Sessions: sessions, Readers: []string{"engineering"},
		Reviews: e.svc, Recordings: e.recs, Logger: zerolog.Nop()})
	var cv Verifier = v
	if wrap != nil {
		cv = wrap(v)
	}
	con, err := New(Config{API: a, Store: e.st, Sessions: sessions, Verifier: cv, ClientID: "warden", URL: e.base, Now: e.clock.now, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = con
	srv.Start()
	t.Cleanup(srv.Close)
	return e
}

// browser is a cookie-keeping HTTP client, like a browser without
// JavaScript; it follows redirects.
type browser struct {
	e  *env
	c  *http.Client
	jr *cookiejar.Jar
}

func (e *env) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &browser{e: e, c: &http.Client{Jar: jar, Timeout: 30 * time.Second}, jr: jar}
}

// noFollow is b's client without following redirects.
func (b *browser) noFollow() *http.Client {
	return &http.Client{Jar: b.jr, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches path (or an absolute URL) and returns status and body.
func (b *browser) get(path string) (int, string) {
	b.e.t.Helper()
	u := path
	if strings.HasPrefix(path, "/") {
		u = b.e.base + path
	}
	resp, err := b.c.Get(u)
	if err != nil {
		b.e.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// post sends a form as the console's own page would (same origin).
func (b *browser) post(path string, form url.Values, header map[string]string) (int, string, *http.Response) {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.e.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.noFollow().Do(req)
	if err != nil {
		b.e.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// idpForm reads the hidden fields of the dev IdP's sign-in page.
func idpForm(t *testing.T, page string) url.Values {
	t.Helper()
	v := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(page, -1) {
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	if v.Get("state") == "" || v.Get("code_challenge") == "" || v.Get("nonce") == "" {
		t.Fatalf("the IdP's sign-in page lacks state, nonce or code_challenge:\n%s", page)
	}
	return v
}

// startSignIn opens next without a session and follows the redirects to
// the IdP's sign-in page, returning its form.
func (b *browser) startSignIn(next string) url.Values {
	b.e.t.Helper()
	st, page := b.get(next)
	if st != http.StatusOK || !strings.Contains(page, "NOT FOR PRODUCTION") {
		b.e.t.Fatalf("GET %s without a session: %d, want the IdP's sign-in page:\n%s", next, st, page)
	}
	return idpForm(b.e.t, page)
}

// choose presses the IdP's button for sub and returns the redirect back
// to the console (the callback URL with code and state), not followed.
func (b *browser) choose(form url.Values, sub string) *url.URL {
	b.e.t.Helper()
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	f.Set("sub", sub)
	resp, err := b.noFollow().PostForm(b.e.idp.Issuer()+"/authorize", f)
	if err != nil {
		b.e.t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil || loc.Query().Get("code") == "" {
		b.e.t.Fatalf("IdP sign-in as %s: %d Location %q", sub, resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc
}

// signIn signs in as sub through the IdP and returns the page next.
func (b *browser) signIn(sub, next string) string {
	b.e.t.Helper()
	cb := b.choose(b.startSignIn(next), sub)
	st, page := b.get(cb.String())
	if st != http.StatusOK {
		b.e.t.Fatalf("callback: %d\n%s", st, page)
	}
	return page
}

// csrf is the token of the page's <meta name="csrf-token">.
func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("page has no csrf-token meta:\n%s", page)
	}
	return m[1]
}

// insert stores events as the ingester would and wakes the streams.
func (e *env) insert(evs ...*event.Event) {
	e.t.Helper()
	var recs []store.Record
	for _, ev := range evs {
		if ev.ID == "" {
			ev.ID = ulid.Make().String()
		}
		if ev.Time.IsZero() {
			ev.Time = time.Now().UTC()
		}
		ev.Schema = event.Schema
		raw, err := json.Marshal(ev)
		if err != nil {
			e.t.Fatal(err)
		}
		recs = append(recs, store.Record{Event: ev, Raw: raw})
	}
	if _, err := e.st.Insert(context.Background(), recs); err != nil {
		e.t.Fatal(err)
	}
	e.notifier.Notify()
}

// openReview opens a statement review by requester, decided by approvers.
func (e *env) openReview(requester string, approvers ...string) *review.Review {
	e.t.Helper()
	st := "DELETE FROM orders WHERE id = $1"
	r, _, err := e.svc.Open(context.Background(), review.OpenRequest{Kind: review.KindStatement, Host: "bastion-1",
		Requester: review.Person{Sub: requester, Email: requester + "@example.com"}, Target: "orders-db", Rule: "unbounded-writes",
		Statement: st, Fingerprint: review.Fingerprint(st), GrantOnce: true, Approvers: approvers, Require: review.RequireAny})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}
