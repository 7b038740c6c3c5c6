package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// apiSecret is the vaulted credential Warden injects toward nginx. No
// client may ever see it.
const apiSecret = "Bearer vaulted-api-token-7f3a"

// httpEnv is an agent protecting a real nginx as two targets: api, in
// the clear with an injected Authorization header, and api-tls, TLS on
// both hops (the agent's client authority toward curl, verified TLS
// toward nginx).
type httpEnv struct {
	*harness.Env
	nginx  *harness.Nginx
	alice  string // token files
	reader string // alice, also in pii-readers: nothing masked
	bob    string // a dba: approves reviews
}

func newHTTPEnv(t *testing.T) *httpEnv {
	testenv.RequireCommand(t, "curl")
	e := &httpEnv{Env: harness.NewEnv(t)}
	ca := harness.NewTestCA(t, "nginx test CA")
	e.nginx = e.StartNginxWith(harness.NginxOptions{TLS: ca.Issue(t, "127.0.0.1")})
	caFile := ca.WriteCA(t, filepath.Join(e.Dir, "nginx-ca.pem"))
	secret := filepath.Join(e.Dir, "api.secret")
	if err := os.WriteFile(secret, []byte(apiSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.StartAgent(fmt.Sprintf(`targets:
  - name: api
    protocol: http
    address: 127.0.0.1:%[1]d
    credentials: {header: Authorization, value_file: %[2]s}
  - name: api-tls
    protocol: https
    address: 127.0.0.1:%[3]d
    tls: {mode: verify-full, ca_file: %[4]s}
access:
  - groups: [engineering]
    targets: [api, api-tls]
rules:
  - name: no-admin-writes
    targets: [api, api-tls]
    when: {methods: [POST, PUT, DELETE], paths: ["/admin/**", "/api/v1/users/*"]}
    action: deny
  - name: exports-need-review
    targets: [api]
    when: {methods: [POST], paths: ["/exports/**"]}
    action: review
    review: {approvers: [dba], hold: 0s}
masking:
  - name: pii
    targets: [api, api-tls]
    columns: [ssn]
    detectors: [email, credit_card]
    except_groups: [pii-readers]
`, e.nginx.Port, secret, e.nginx.TLSPort, caFile))
	e.alice = e.Token(devidp.IssueOptions{Sub: "alice"})
	e.reader = e.Token(devidp.IssueOptions{Sub: "alice", Email: "alice@corp.example", Groups: []string{"engineering", "pii-readers"}})
	e.bob = e.Token(devidp.IssueOptions{Sub: "bob"})
	return e
}

// sh runs script as an unprivileged user logged in as alice, and returns
// its output whatever its exit status.
func (e *httpEnv) sh(t *testing.T, script string) string {
	t.Helper()
	return e.shAs(t, e.alice, script)
}

// shAs is sh logged in with another token.
func (e *httpEnv) shAs(t *testing.T, token, script string) string {
	t.Helper()
	out, _ := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
		"warden login --token-file %s >/dev/null || { echo LOGIN FAILED; exit 9; }\n%s", token, script)})
	if strings.Contains(out, "LOGIN FAILED") {
		t.Fatalf("login failed:\n%s", out)
	}
	return out
}

// logged reports whether nginx's access log has a line containing s.
func (e *httpEnv) logged(s string) bool {
	for _, l := range e.nginx.AccessLog() {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func TestHTTPL7(t *testing.T) {
	e := newHTTPEnv(t)
	base := "http://" + e.nginx.Addr()

	t.Run("allowed GET, masked JSON", func(t *testing.T) {
		out := e.sh(t, fmt.Sprintf("curl -sS -i %s/users", base))
		if !strings.Contains(out, "HTTP/1.1 200") {
			t.Fatalf("GET /users:\n%s", out)
		}
		for _, raw := range []string{"carol@example.org", "4111 1111 1111 1111", "078-05-1120"} {
			if strings.Contains(out, raw) {
				t.Fatalf("curl shows unmasked %q:\n%s", raw, out)
			}
		}
		for _, want := range []string{`"email":"[masked:email]"`, `"card":"[masked:credit_card]"`, `"ssn":"****"`, `"name":"Carol"`} {
			if !strings.Contains(out, want) {
				t.Fatalf("curl output lacks %s:\n%s", want, out)
			}
		}
		// Masking asked nginx for an unencoded body.
		if !e.logged(`GET /users 200`) || !e.logged(`ae="identity"`) {
			t.Fatalf("access log: %q", e.nginx.AccessLog())
		}
	})

	t.Run("denied DELETE is a 403 JSON", func(t *testing.T) {
		out := e.sh(t, fmt.Sprintf("curl -sS -i -X DELETE %s/admin/x", base))
		if !strings.Contains(out, "HTTP/1.1 403") || !strings.Contains(out, `"rule":"no-admin-writes"`) ||
			!strings.Contains(out, `"error":"warden: DELETE /admin/x denied by rule \"no-admin-writes\""`) {
			t.Fatalf("DELETE /admin/x:\n%s", out)
		}
		if e.logged("DELETE") {
			t.Fatalf("nginx saw the DELETE: %q", e.nginx.AccessLog())
		}
	})

	t.Run("ambiguous paths refused", func(t *testing.T) {
		for _, p := range []string{"/admin%2Fx", "/public/../admin/x", "/public/%2e%2e/admin/x", "/admin;x/y", "/admin%252Fx"} {
			out := e.sh(t, fmt.Sprintf("curl -sS -i --path-as-is -X DELETE '%s%s'", base, p))
			if !strings.Contains(out, "HTTP/1.1 400") || !strings.Contains(out, `"rule":"ambiguous"`) {
				t.Fatalf("DELETE %s:\n%s", p, out)
			}
		}
		if e.logged("DELETE") || e.logged("%2") {
			t.Fatalf("nginx saw an ambiguous request: %q", e.nginx.AccessLog())
		}
	})

	t.Run("smuggling refused before nginx", func(t *testing.T) {
		// bash's /dev/tcp is a plain client that sends exactly these bytes.
		addr := strings.Replace(e.nginx.Addr(), ":", "/", 1)
		for _, head := range []string{
			`POST /smuggle-te HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled-te HTTP/1.1\r\nHost: api\r\n\r\n`,
			`POST /smuggle-cl HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /smuggled-cl HTTP/1.1\r\nHost: api\r\n\r\n`,
		} {
			out := e.sh(t, fmt.Sprintf("exec 3<>/dev/tcp/%s; printf '%s' >&3; timeout 20 cat <&3", addr, head))
			if !strings.Contains(out, "HTTP/1.1 400") || !strings.Contains(out, "request smuggling") {
				t.Fatalf("smuggling pair not refused:\n%s", out)
			}
		}
		if e.logged("smuggle") {
			t.Fatalf("nginx saw a smuggling attempt: %q", e.nginx.AccessLog())
		}
	})

	t.Run("identity headers and a JWT that verifies", func(t *testing.T) {
		// As a member of pii-readers: the answer holds an email address,
		// which masking would hide from anyone else.
		out := e.shAs(t, e.reader, fmt.Sprintf("curl -sS -H 'X-Warden-User: mallory@contractor.example' -H 'X-Warden-Groups: admins' %s/whoami", base))
		var got struct{ User, Groups, Identity string }
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &got); err != nil {
			t.Fatalf("whoami: %v\n%s", err, out)
		}
		if got.User != "alice@corp.example" || got.Groups != "engineering,pii-readers" {
			t.Fatalf("nginx got user %q groups %q: the client's own X-Warden-* must be dropped", got.User, got.Groups)
		}
		// The key set is published beside the agent's socket.
		jwks, err := os.ReadFile(filepath.Join(filepath.Dir(e.Socket()), "identity-jwks.json"))
		if err != nil {
			t.Fatal(err)
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(jwks, &set); err != nil {
			t.Fatalf("key set: %v\n%s", err, jwks)
		}
		tok, err := josejwt.ParseSigned(got.Identity, []jose.SignatureAlgorithm{jose.EdDSA})
		if err != nil {
			t.Fatalf("X-Warden-Identity %q: %v", got.Identity, err)
		}
		keys := set.Key(tok.Headers[0].KeyID)
		if len(keys) != 1 {
			t.Fatalf("kid %q not in the key set", tok.Headers[0].KeyID)
		}
		var claims josejwt.Claims
		var extra struct {
			Email  string   `json:"email"`
			Groups []string `json:"groups"`
		}
		if err := tok.Claims(keys[0].Key, &claims, &extra); err != nil {
			t.Fatalf("signature: %v", err)
		}
		if err := claims.Validate(josejwt.Expected{Issuer: "warden:" + harness.HostID, Subject: "alice", AnyAudience: []string{"api"}}); err != nil {
			t.Fatal(err)
		}
		if extra.Email != "alice@corp.example" || strings.Join(extra.Groups, ",") != "engineering,pii-readers" {
			t.Fatalf("claims %+v", extra)
		}
	})

	t.Run("injected credential reaches nginx, never the client", func(t *testing.T) {
		out := e.sh(t, fmt.Sprintf("curl -sS -v -H 'Authorization: Basic dXNlcjpwdw==' %s/anything 2>&1", base))
		if strings.Contains(out, "vaulted-api-token") {
			t.Fatalf("the client saw the credential:\n%s", out)
		}
		if !e.logged(`GET /anything 200 auth="` + apiSecret + `"`) {
			t.Fatalf("nginx did not get the injected header: %q", e.nginx.AccessLog())
		}
	})

	t.Run("https with curl trusting the agent authority, h2", func(t *testing.T) {
		clientCA := filepath.Join(filepath.Dir(e.Socket()), "client-ca.crt")
		url := fmt.Sprintf("https://api.internal:%d", e.nginx.TLSPort)
		resolve := fmt.Sprintf("--resolve api.internal:%d:127.0.0.1", e.nginx.TLSPort)
		out := e.sh(t, fmt.Sprintf("curl -sS --cacert %s %s -w '\\n%%{http_version}\\n' %s/users; curl -sS --cacert %s %s -i -X DELETE %s/admin/y",
			clientCA, resolve, url, clientCA, resolve, url))
		if !strings.Contains(out, `"email":"[masked:email]"`) || strings.Contains(out, "carol@example.org") {
			t.Fatalf("https GET /users:\n%s", out)
		}
		if !strings.Contains(out, "\n2\n") {
			t.Fatalf("curl did not speak HTTP/2 to the agent:\n%s", out)
		}
		if !strings.Contains(out, "HTTP/2 403") || !strings.Contains(out, `"rule":"no-admin-writes"`) {
			t.Fatalf("https DELETE /admin/y:\n%s", out)
		}
	})

	t.Run("review: 403 naming it, then the approved request once", func(t *testing.T) {
		post := fmt.Sprintf("curl -sS -i -X POST -d '{}' '%s/exports/all?fmt=csv'", base)
		out := e.sh(t, post)
		m := regexp.MustCompile(`"review":"(R-[^"]+)"`).FindStringSubmatch(out)
		if !strings.Contains(out, "HTTP/1.1 403") || m == nil || !strings.Contains(out, `"rule":"exports-need-review"`) {
			t.Fatalf("POST /exports/all:\n%s", out)
		}
		if e.logged("/exports") {
			t.Fatalf("nginx saw the held request: %q", e.nginx.AccessLog())
		}
		if out, err := e.WardenEnv([]string{"WARDEN_TOKEN_FILE=" + e.bob}, "review", "approve", m[1], "--reason", "monthly export"); err != nil {
			t.Fatalf("warden review approve: %v\n%s", err, out)
		}
		e.Eventually("the approved request goes through", func() error {
			if out := e.sh(t, post); !strings.Contains(out, "HTTP/1.1 200") {
				return fmt.Errorf("not yet:\n%s", out)
			}
			return nil
		})
		if !e.logged("POST /exports/all?fmt=csv 200") {
			t.Fatalf("nginx did not get the approved request: %q", e.nginx.AccessLog())
		}
		// grant: once (the default): the next one needs a review again.
		if out := e.sh(t, post); !strings.Contains(out, "HTTP/1.1 403") {
			t.Fatalf("a second POST after a one-time approval:\n%s", out)
		}
	})

	t.Run("events", func(t *testing.T) {
		e.sh(t, fmt.Sprintf("curl -sS '%s/search?q=carol@example.org&token=s3cr3t'", base))
		req := e.WaitEvent(collectorclient.Query{Type: string(event.HTTPRequest), Target: "api"}, "http.request for /search", func(ev *event.Event) bool {
			return ev.Data["path"] == "/search"
		})
		if req.Data["query"] != "q=*&token=*" || req.Decision == nil || req.Decision.Action != event.Allow || req.Identity == nil || req.Identity.Sub != "alice" {
			t.Fatalf("http.request %+v decision %+v", req.Data, req.Decision)
		}
		res := e.WaitEvent(collectorclient.Query{Type: string(event.HTTPResponse), Target: "api"}, "http.response for /search", func(ev *event.Event) bool {
			return ev.Data["request_id"] == req.ID
		})
		if fmt.Sprint(res.Data["status"]) != "200" || fmt.Sprint(res.Data["bytes_out"]) == "0" {
			t.Fatalf("http.response %+v", res.Data)
		}
		denied := e.WaitEvent(collectorclient.Query{Type: string(event.HTTPRequest), Target: "api"}, "denied DELETE", func(ev *event.Event) bool {
			return ev.Data["method"] == "DELETE" && ev.Data["path"] == "/admin/x"
		})
		if denied.Decision.Action != event.Deny || denied.Decision.Rule != "no-admin-writes" || fmt.Sprint(denied.Data["status"]) != "403" {
			t.Fatalf("denied request recorded as %+v %+v", denied.Decision, denied.Data)
		}
		// The codec's records; the process's own arguments are the
		// lineage's, with their own redaction.
		for _, ev := range e.Events(collectorclient.Query{Target: "api"}) {
			if ev.Type != event.HTTPRequest && ev.Type != event.HTTPResponse {
				continue
			}
			b, _ := json.Marshal(ev.Data)
			if strings.Contains(string(b), "vaulted-api-token") || strings.Contains(string(b), "s3cr3t") || strings.Contains(string(b), "carol@example.org") {
				t.Fatalf("an event holds a secret: %s", b)
			}
		}
	})
}
