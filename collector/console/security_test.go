package console

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/review"
)

// Without a session, a page sends the browser to sign in (keeping where
// it was going) and the API answers 401.
func TestNoSessionRedirectsAndAPIRefuses(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	for _, path := range []string{"/live", "/search?type=db.query", "/sessions", "/reviews", "/integrity", "/lineage/x", "/replay/x"} {
		resp, err := b.noFollow().Get(e.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := "/login?next=" + url.QueryEscape(path)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
			t.Errorf("GET %s: %d Location %q, want 303 to %s", path, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
	// /login itself goes to the IdP with PKCE S256, state and nonce.
	resp, err := b.noFollow().Get(e.base + "/login?next=/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	q := loc.Query()
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc.String(), e.idp.Issuer()+"/authorize") ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" || q.Get("nonce") == "" ||
		q.Get("redirect_uri") != e.base+"/auth/callback" {
		t.Fatalf("/login: %d %s", resp.StatusCode, loc)
	}
	for _, path := range []string{"/v1/events", "/v1/reviews", "/v1/lineage/x"} {
		resp, err := http.Get(e.base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("GET %s without a token or cookie: %d %s", path, resp.StatusCode, body)
		}
	}
	// The live stream, fetched by a script, gets 401 rather than a page.
	if st, _ := b.get("/live/stream"); st != http.StatusUnauthorized {
		t.Errorf("/live/stream without a session: %d, want 401", st)
	}
}

// The whole code flow: sign in through the dev IdP, land where the
// browser was going, see who is signed in; the cookie is HttpOnly and
// SameSite=Strict; the same cookie serves the API.
func TestSignInCodeFlow(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	cb := b.choose(b.startSignIn("/search?type=db.query"), "alice")
	resp, err := b.noFollow().Get(cb.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/search?type=db.query" {
		t.Fatalf("callback: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == CookieName {
			ck = c
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || len(ck.Value) < 43 {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ and a 32-byte id", ck)
	}
	st, page := b.get("/search?type=db.query")
	if st != http.StatusOK || !strings.Contains(page, `<span data-testid="whoami">alice@example.com</span>`) {
		t.Fatalf("after sign-in: %d\n%s", st, page)
	}
	if st, body := b.get("/v1/events"); st != http.StatusOK || !strings.Contains(body, `"events"`) {
		t.Fatalf("API with the console's cookie: %d %s", st, body)
	}
	// A reader's pages all render.
	for _, path := range []string{"/live", "/sessions", "/reviews", "/integrity"} {
		if st, page := b.get(path); st != http.StatusOK || !strings.Contains(page, "alice@example.com") {
			t.Errorf("GET %s: %d", path, st)
		}
	}
	// Signing out ends the session on the server: the old cookie is
	// worth nothing afterwards.
	if st, _, _ := b.post("/logout", url.Values{"csrf": {csrfOf(t, page)}}, nil); st != http.StatusOK {
		t.Fatalf("logout: %d", st)
	}
	req, _ := http.NewRequest(http.MethodGet, e.base+"/v1/events", nil)
	req.AddCookie(&http.Cookie{Name: CookieName, Value: ck.Value})
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API with a signed-out cookie: %d, want 401", resp.StatusCode)
	}
}

// The flow's defences: a state that is not this browser's, a code
// replayed, a code redeemed without its PKCE verifier, an open
// redirect in next.
func TestCodeFlowRefusals(t *testing.T) {
	e := newEnv(t)

	t.Run("state mismatch", func(t *testing.T) {
		b := e.browser()
		cb := b.choose(b.startSignIn("/live"), "alice")
		q := cb.Query()
		q.Set("state", "not-the-state-this-browser-started")
		cb.RawQuery = q.Encode()
		if st, page := b.get(cb.String()); st != http.StatusBadRequest || !strings.Contains(page, "state does not match") {
			t.Fatalf("callback with another state: %d\n%s", st, page)
		}
		// Another browser's genuine callback (login CSRF) fails too: the
		// state is bound to the browser that started the sign-in.
		victim := e.browser()
		cb = b.choose(b.startSignIn("/live"), "mallory")
		if st, _ := victim.get(cb.String()); st != http.StatusBadRequest {
			t.Fatalf("someone else's callback URL: %d, want 400", st)
		}
		if st, _ := victim.get("/v1/events"); st != http.StatusUnauthorized {
			t.Fatalf("the victim got a session: %d", st)
		}
	})

	t.Run("replayed code", func(t *testing.T) {
		b := e.browser()
		form := b.startSignIn("/live")
		cb := b.choose(form, "alice")
		if st, _ := b.get(cb.String()); st != http.StatusOK {
			t.Fatalf("first callback: %d", st)
		}
		// The same callback again: its state is spent.
		b2 := e.browser()
		b2.startSignIn("/live") // a state cookie of its own
		if st, _ := b.get(cb.String()); st != http.StatusBadRequest {
			t.Fatalf("replayed callback: %d, want 400", st)
		}
		// And at the IdP the code is spent, whatever the verifier.
		resp, err := http.PostForm(e.idp.Issuer()+"/token", url.Values{"grant_type": {"authorization_code"}, "client_id": {"warden"},
			"code": {cb.Query().Get("code")}, "redirect_uri": {e.base + "/auth/callback"}, "code_verifier": {strings.Repeat("v", 43)}})
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Fatalf("replayed code at the IdP: %d %v", resp.StatusCode, body)
		}
	})

	t.Run("wrong verifier", func(t *testing.T) {
		// Someone who intercepts the code, without the console's verifier,
		// cannot redeem it; and the stolen attempt burns it.
		b := e.browser()
		cb := b.choose(b.startSignIn("/live"), "bob")
		resp, err := http.PostForm(e.idp.Issuer()+"/token", url.Values{"grant_type": {"authorization_code"}, "client_id": {"warden"},
			"code": {cb.Query().Get("code")}, "redirect_uri": {e.base + "/auth/callback"}, "code_verifier": {strings.Repeat("x", 43)}})
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body["error_description"], "code_verifier does not match") {
			t.Fatalf("stolen code with a wrong verifier: %d %v", resp.StatusCode, body)
		}
		if st, page := b.get(cb.String()); st != http.StatusBadRequest || !strings.Contains(page, "did not exchange the code") {
			t.Fatalf("callback with a burnt code: %d\n%s", st, page)
		}
	})

	t.Run("open redirect", func(t *testing.T) {
		for _, next := range []string{"//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil.example", "/\n/evil.example", "javascript:alert(1)"} {
			b := e.browser()
			resp, err := b.noFollow().Get(e.base + "/login?next=" + url.QueryEscape(next))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			cb := b.choose(idpFormFrom(t, b, resp.Header.Get("Location")), "alice")
			resp, err = b.noFollow().Get(cb.String())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.Header.Get("Location") != "/live" {
				t.Errorf("next=%s: Location %q, want /live", next, resp.Header.Get("Location"))
			}
		}
	})
}

// idpFormFrom loads the IdP's sign-in page at u and reads its form.
func idpFormFrom(t *testing.T, b *browser, u string) url.Values {
	t.Helper()
	_, page := b.get(u)
	return idpForm(t, page)
}

// A forged cookie, and one whose session expired (with its ID token),
// are no session: pages redirect, the API answers 401.
func TestForgedAndExpiredCookieRefused(t *testing.T) {
	e := newEnv(t)
	forged := e.browser()
	u, _ := url.Parse(e.base)
	forged.jr.SetCookies(u, []*http.Cookie{{Name: CookieName, Value: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Path: "/"}})
	check := func(b *browser, what string) {
		t.Helper()
		resp, err := b.noFollow().Get(e.base + "/live")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
			t.Errorf("%s: /live %d %q, want a redirect to sign in", what, resp.StatusCode, resp.Header.Get("Location"))
		}
		if st, _ := b.get("/v1/events"); st != http.StatusUnauthorized {
			t.Errorf("%s: /v1/events %d, want 401", what, st)
		}
	}
	check(forged, "forged cookie")

	b := e.browser()
	b.signIn("alice", "/live")
	if st, _ := b.get("/v1/events"); st != http.StatusOK {
		t.Fatalf("fresh session: %d", st)
	}
	// The dev IdP's tokens live an hour; the session ends with the token.
	e.clock.advance(time.Hour + time.Second)
	check(b, "expired session")
}

// A state-changing request needs the session's CSRF token and must come
// from the console's own origin, on the pages and on the API.
func TestCrossSitePostRefused(t *testing.T) {
	e := newEnv(t)
	rv := e.openReview("carol", "dba")
	b := e.browser()
	page := b.signIn("bob", "/reviews")
	tok := csrfOf(t, page)
	path := "/reviews/" + rv.ID + "/approve"
	for _, tc := range []struct {
		name   string
		form   url.Values
		header map[string]string
	}{
		{"no token", url.Values{"reason": {"ok"}}, nil},
		{"wrong token", url.Values{"reason": {"ok"}, "csrf": {"forged"}}, nil},
		{"other origin", url.Values{"reason": {"ok"}, "csrf": {tok}}, map[string]string{"Origin": "http://evil.example"}},
		{"cross-site fetch", url.Values{"reason": {"ok"}, "csrf": {tok}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
	} {
		st, body, _ := b.post(path, tc.form, tc.header)
		if st != http.StatusForbidden {
			t.Errorf("%s: %d, want 403\n%s", tc.name, st, body)
		}
	}
	// The API with the cookie but without X-CSRF-Token is refused too.
	req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/reviews/"+rv.ID+"/approve", strings.NewReader(`{"reason":"ok"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("API POST with the cookie and no CSRF header: %d, want 403", resp.StatusCode)
	}
	if got, _ := e.svc.Get(context.Background(), rv.ID); got.State != review.Pending {
		t.Fatalf("a refused request decided the review: %s", got.State)
	}
	// Logout is a POST like any other.
	if st, _, _ := b.post("/logout", url.Values{}, nil); st != http.StatusForbidden {
		t.Errorf("logout without the token: %d, want 403", st)
	}
	// With the token, from the page's origin, it goes through.
	st, _, resp2 := b.post(path, url.Values{"reason": {"looks right"}, "csrf": {tok}}, map[string]string{"Origin": e.base, "Sec-Fetch-Site": "same-origin"})
	if st != http.StatusSeeOther || !strings.HasPrefix(resp2.Header.Get("Location"), "/reviews") {
		t.Fatalf("approve with the token: %d %q", st, resp2.Header.Get("Location"))
	}
	if got, _ := e.svc.Get(context.Background(), rv.ID); got.State != review.Approved {
		t.Fatalf("review after approval: %s", got.State)
	}
}

// A reader outside the rule's approver groups sees Approve disabled, and
// the server refuses the POST (403) anyway; an approver decides.
func TestApproveOnlyForApprovers(t *testing.T) {
	e := newEnv(t)
	rv := e.openReview("carol", "dba")
	alice := e.browser()
	page := alice.signIn("alice", "/reviews")
	row := rowOf(t, page, rv.ID)
	if !strings.Contains(row, `data-testid="approve" disabled`) || !strings.Contains(row, `data-testid="deny" disabled`) {
		t.Fatalf("alice (not dba) sees enabled buttons:\n%s", row)
	}
	st, body, _ := alice.post("/reviews/"+rv.ID+"/approve", url.Values{"csrf": {csrfOf(t, page)}, "reason": {"me"}}, nil)
	if st != http.StatusForbidden || !strings.Contains(body, "dba") {
		t.Fatalf("alice approves: %d, want 403 naming the approvers\n%s", st, body)
	}
	if got, _ := e.svc.Get(context.Background(), rv.ID); got.State != review.Pending {
		t.Fatalf("alice's refused approval changed the review: %s", got.State)
	}

	bob := e.browser()
	page = bob.signIn("bob", "/reviews")
	row = rowOf(t, page, rv.ID)
	if strings.Contains(row, `data-testid="approve" disabled`) || strings.Contains(row, `data-testid="deny" disabled`) || strings.Contains(row, `name="reason" placeholder="reason" aria-label="reason" size="16" disabled`) ||
		!strings.Contains(row, "DELETE FROM orders WHERE id = $1") || !strings.Contains(row, "carol@example.com") {
		t.Fatalf("bob's row:\n%s", row)
	}
	st, _, _ = bob.post("/reviews/"+rv.ID+"/deny", url.Values{"csrf": {csrfOf(t, page)}, "reason": {"not during the freeze"}}, nil)
	if st != http.StatusSeeOther {
		t.Fatalf("bob denies: %d", st)
	}
	_, page = bob.get("/reviews")
	if strings.Contains(page, `data-testid="review-row" data-review-id="`+rv.ID) || !strings.Contains(page, "not during the freeze") {
		t.Fatalf("after the denial the review should be history:\n%s", page)
	}
	// mallory is no reader: the reader pages are refused, the review
	// queue shows nothing of others.
	m := e.browser()
	m.signIn("mallory", "/reviews")
	if st, _ := m.get("/live"); st != http.StatusForbidden {
		t.Fatalf("mallory on /live: %d, want 403", st)
	}
	if _, page := m.get("/reviews"); strings.Contains(page, rv.ID) {
		t.Fatal("mallory sees a review she neither asked for nor may decide")
	}
}

// rowOf cuts the review row of id out of a page.
func rowOf(t *testing.T, page, id string) string {
	t.Helper()
	i := strings.Index(page, `data-review-id="`+id+`"`)
	if i < 0 {
		t.Fatalf("no row for review %s:\n%s", id, page)
	}
	j := strings.Index(page[i:], "</tr>")
	return page[i : i+j]
}

// hostile is event content that would run as script if the console
// inserted it as markup.
const hostile = `<script>alert("xss")</script><img src=x onerror=alert(1)>`

// Stored XSS: event content with markup is shown as text on Live,
// Search, Sessions and Lineage, and in the live stream.
func TestEventContentIsText(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn("alice", "/live")
	id := &event.Identity{Sub: "eve", Email: `eve"><script>alert(2)</script>@example.com`, Groups: []string{"engineering"}, SessionID: "S1"}
	login := &event.Event{Type: event.SessionLogin, Host: event.Host{ID: "bastion-1"}, Identity: id}
	exec := &event.Event{Type: event.ProcessExec, Host: event.Host{ID: "bastion-1"}, Identity: id,
		Process: &event.Process{ExecID: "X1", PID: 7, Binary: "/usr/bin/psql", Args: []string{"psql", hostile}}}
	q := &event.Event{Type: event.DBQuery, Host: event.Host{ID: "bastion-1"}, Identity: id,
		Process: &event.Process{ExecID: "X1", PID: 7, Binary: "/usr/bin/psql"}, Target: &event.Target{Name: "orders-db", Protocol: "postgres"},
		Decision: &event.Decision{Action: event.Deny, Rule: "no-drop", Reason: hostile},
		Data:     map[string]any{"statement": "SELECT '" + hostile + "'"}}
	e.insert(login, exec, q)

	check := func(what, page string) {
		t.Helper()
		for _, bad := range []string{"<script>alert", "<img src=x", "<script>alert(2)"} {
			if strings.Contains(page, bad) {
				t.Errorf("%s renders event content as markup (%q):\n%s", what, bad, page)
			}
		}
		if !strings.Contains(page, "&lt;script&gt;alert(") {
			t.Errorf("%s does not show the content as text:\n%s", what, page)
		}
	}
	for _, path := range []string{"/live", "/search", "/sessions/S1", "/lineage/" + q.ID, "/sessions"} {
		st, page := b.get(path)
		if st != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", path, st, page)
		}
		check(path, page)
	}
	// The stream sends rows rendered by the same template.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/live/stream", nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, ct)
	}
	more := &event.Event{Type: event.DBQuery, Host: event.Host{ID: "bastion-1"}, Identity: id, Data: map[string]any{"statement": hostile}}
	e.insert(more)
	msg := readSSE(t, resp.Body, "event")
	if !strings.Contains(msg, `data-event-id="`+more.ID+`"`) {
		t.Fatalf("stream message is not the new event's row:\n%s", msg)
	}
	check("the live stream", msg)
	// The page's headers forbid inline script altogether.
	r2, err := b.c.Get(e.base + "/live")
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if c := r2.Header.Get("Content-Security-Policy"); !strings.Contains(c, "script-src 'self'") || strings.Contains(c, "unsafe-inline") ||
		r2.Header.Get("X-Frame-Options") != "DENY" || r2.Header.Get("X-Content-Type-Options") != "nosniff" || r2.Header.Get("Referrer-Policy") == "" {
		t.Fatalf("security headers: %v", r2.Header)
	}
}

// readSSE reads the stream up to the first message of type name and
// returns its data lines joined.
func readSSE(t *testing.T, r io.Reader, name string) string {
	t.Helper()
	var typ string
	var data []string
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	eof := false
	for {
		for {
			i := strings.IndexByte(string(buf), '\n')
			if i < 0 {
				break
			}
			line := string(buf[:i])
			buf = buf[i+1:]
			switch {
			case line == "":
				if typ == name {
					return strings.Join(data, "\n")
				}
				typ, data = "", nil
			case strings.HasPrefix(line, "event: "):
				typ = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = append(data, strings.TrimPrefix(line, "data: "))
			}
		}
		if eof {
			t.Fatalf("stream ended before a %q message", name)
		}
		n, err := r.Read(tmp)
		buf = append(buf, tmp[:n]...)
		eof = err != nil // the data read with it is parsed first
	}
}

// otherNonce verifies like the real verifier, then reports another nonce:
// an ID token minted for a different sign-in.
type otherNonce struct{ Verifier }

func (o otherNonce) Verify(ctx context.Context, raw string) (*idtoken.Claims, error) {
	c, err := o.Verifier.Verify(ctx, raw)
	if err == nil {
		c.Nonce = "a-nonce-of-another-sign-in"
	}
	return c, err
}

// An ID token whose nonce is not the sign-in's starts no session.
func TestNonceMismatchRefused(t *testing.T) {
	e := newEnvWith(t, func(v Verifier) Verifier { return otherNonce{v} })
	b := e.browser()
	cb := b.choose(b.startSignIn("/live"), "alice")
	if st, page := b.get(cb.String()); st != http.StatusForbidden || !strings.Contains(page, "nonce") {
		t.Fatalf("callback with a foreign nonce: %d\n%s", st, page)
	}
	if st, _ := b.get("/v1/events"); st != http.StatusUnauthorized {
		t.Fatalf("a session was started anyway: %d", st)
	}
}

// A callback reached from the IdP's site (Sec-Fetch-Site: cross-site)
// continues from a page of the console's own, since a SameSite=Strict
// cookie is not sent on a redirect chain that began on another site.
func TestCrossSiteCallbackContinuesFromOwnPage(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	cb := b.choose(b.startSignIn("/sessions"), "alice")
	req, _ := http.NewRequest(http.MethodGet, cb.String(), nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := b.noFollow().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `<meta http-equiv="refresh" content="0;url=/sessions">`) {
		t.Fatalf("cross-site callback: %d\n%s", resp.StatusCode, page)
	}
	if st, _ := b.get("/sessions"); st != http.StatusOK {
		t.Fatalf("after the continue page: %d", st)
	}
}

// Signing out ends the live streams of the session at once.
func TestSignOutEndsLiveStream(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	page := b.signIn("alice", "/live")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/live/stream", nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if st, _, _ := b.post("/logout", url.Values{"csrf": {csrfOf(t, page)}}, nil); st != http.StatusOK {
		t.Fatalf("logout: %d", st)
	}
	if msg := readSSE(t, resp.Body, "expired"); !strings.Contains(msg, "session ended") {
		t.Fatalf("stream's last message: %q", msg)
	}
}

// Signing in again gives a new session id and ends the browser's old
// session: an old cookie value is worth nothing.
func TestSignInAgainEndsOldSession(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn("alice", "/live")
	u, _ := url.Parse(e.base)
	old := b.jr.Cookies(u)
	b.signIn("bob", "/login?next=%2Flive") // a signed-in browser may sign in again
	if st, page := b.get("/live"); st != http.StatusOK || !strings.Contains(page, "bob@example.com") {
		t.Fatalf("after the second sign-in: %d", st)
	}
	for _, c := range old {
		if c.Name != CookieName {
			continue
		}
		req, _ := http.NewRequest(http.MethodGet, e.base+"/v1/events", nil)
		req.AddCookie(c)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("the first session's cookie after signing in again: %d, want 401", resp.StatusCode)
		}
		return
	}
	t.Fatal("no session cookie after the first sign-in")
}
