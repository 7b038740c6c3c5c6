package idtoken

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/wardenhq/warden/pkg/devidp"
)

// startIdP serves a real dev IdP on 127.0.0.1; its issuer is its address.
func startIdP(t *testing.T, opts devidp.Options) (*devidp.IdP, *httptest.Server) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	opts.Issuer = "http://" + srv.Listener.Addr().String()
	p, err := devidp.New(opts)
	if err != nil {
		t.Fatalf("devidp.New: %v", err)
	}
	srv.Config.Handler = p.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	return p, srv
}

func newVerifier(t *testing.T, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func issue(t *testing.T, p *devidp.IdP, o devidp.IssueOptions) string {
	t.Helper()
	tok, err := p.Issue(o)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return tok
}

var sentinels = []error{ErrMalformed, ErrSignature, ErrIssuer, ErrAudience, ErrExpired, ErrClaims, ErrUnavailable}

// checkRejected asserts err is an *Error of exactly the reason want, that its
// message contains msgPart, and that no part of the token leaks into it.
func checkRejected(t *testing.T, err error, want error, msgPart, token string) {
	t.Helper()
	if err == nil {
		t.Fatalf("token accepted, want %v", want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %q is not an *idtoken.Error", err, err)
	}
	for _, s := range sentinels {
		if got := errors.Is(err, s); got != (s == want) {
			t.Errorf("errors.Is(err, %v) = %v for %q", s, got, err)
		}
	}
	if !strings.Contains(err.Error(), msgPart) {
		t.Errorf("error %q does not contain %q", err, msgPart)
	}
	assertNoLeak(t, err, token)
}

// assertNoLeak checks that neither the token nor its payload or signature
// segment appears in the error. (The header segment is shared by every token
// of a key, so it is no secret; it is too short to matter anyway.)
func assertNoLeak(t *testing.T, err error, token string) {
	t.Helper()
	if token == "" {
		return
	}
	msg := err.Error()
	if strings.Contains(msg, token) {
		t.Errorf("error contains the token: %q", msg)
	}
	for i, part := range strings.Split(token, ".") {
		if i > 0 && len(part) >= 8 && strings.Contains(msg, part) {
			t.Errorf("error contains token segment %d: %q", i, msg)
		}
	}
}

func TestVerifyGoodToken(t *testing.T) {
	p, srv := startIdP(t, devidp.Options{})
	v := newVerifier(t, Config{Issuer: srv.URL, ClientID: "warden"})

	iat := time.Now().Add(-time.Minute).Truncate(time.Second)
	tok := issue(t, p, devidp.IssueOptions{
		Sub: "bob", Email: "bob@example.com", Name: "Bob Example",
		Groups: []string{"dba", "engineering"}, IssuedAt: iat, TTL: 30 * time.Minute,
	})
	c, err := v.Verify(context.Background(), tok+"\n") // as read from a file
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := Claims{
		Subject: "bob", Email: "bob@example.com", Name: "Bob Example", Issuer: srv.URL,
		Groups: []string{"dba", "engineering"}, IssuedAt: iat, Expiry: iat.Add(30 * time.Minute),
	}
	if c.Subject != want.Subject || c.Email != want.Email || c.Name != want.Name || c.Issuer != want.Issuer ||
		!slices.Equal(c.Groups, want.Groups) || !c.IssuedAt.Equal(want.IssuedAt) || !c.Expiry.Equal(want.Expiry) {
		t.Errorf("claims = %+v, want %+v", *c, want)
	}

	// Several audiences are fine as long as ours is among them.
	tok = issue(t, p, devidp.IssueOptions{Sub: "alice", Audience: []string{"kubernetes", "warden"}})
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Errorf("multi-audience token: %v", err)
	}
	// No groups claim at all means no groups.
	tok = issue(t, p, devidp.IssueOptions{Sub: "alice"})
	if c, err := v.Verify(context.Background(), tok); err != nil || len(c.Groups) != 0 {
		t.Errorf("token without groups: %v, %+v", err, c)
	}
}

func TestVerifyRejects(t *testing.T) {
	p, srv := startIdP(t, devidp.Options{})
	other, otherSrv := startIdP(t, devidp.Options{})
	v := newVerifier(t, Config{Issuer: srv.URL, ClientID: "warden"})

	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	expiredAt := time.Now().Add(-time.Hour).Truncate(time.Second)

	// The classic key-confusion forgery: HS256 keyed with the RSA public key.
	pubDER, err := x509.MarshalPKIXPublicKey(p.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	hmacSigner, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hmacJWS, err := hmacSigner.Sign([]byte(`{"iss":"` + srv.URL + `","sub":"alice","aud":"warden","exp":4102444800}`))
	if err != nil {
		t.Fatal(err)
	}
	hmacTok, err := hmacJWS.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}

	good := issue(t, p, devidp.IssueOptions{Sub: "alice"})
	goodParts := strings.Split(good, ".")

	cases := []struct {
		name  string
		token string
		want  error
		msg   string
	}{
		{"expired", issue(t, p, devidp.IssueOptions{Sub: "alice", IssuedAt: expiredAt.Add(-time.Hour), TTL: time.Hour}),
			ErrExpired, "token expired at " + expiredAt.UTC().Format(time.RFC3339)},
		{"wrong audience", issue(t, p, devidp.IssueOptions{Sub: "alice", Audience: []string{"grafana"}}),
			ErrAudience, `token audience [grafana] does not include client id "warden"`},
		{"bad signature", issue(t, p, devidp.IssueOptions{Sub: "alice", SignWith: otherKey}),
			ErrSignature, "token signature does not verify against the issuer's keys"},
		{"tampered payload", goodParts[0] + "." + strings.Split(issue(t, p, devidp.IssueOptions{Sub: "bob", Groups: []string{"dba"}}), ".")[1] + "x." + goodParts[2],
			ErrMalformed, ""}, // extra base64 char: not even decodable
		{"swapped payload", goodParts[0] + "." + strings.Split(issue(t, p, devidp.IssueOptions{Sub: "bob", Groups: []string{"dba"}}), ".")[1] + "." + goodParts[2],
			ErrSignature, "does not verify"},
		{"alg none", issue(t, p, devidp.IssueOptions{Sub: "alice", AlgNone: true}),
			ErrSignature, `token uses alg "none"; unsigned tokens are rejected`},
		{"HMAC", hmacTok, ErrSignature, `token uses alg "HS256"`},
		{"other issuer", issue(t, other, devidp.IssueOptions{Sub: "alice"}),
			ErrIssuer, `token issuer "` + otherSrv.URL + `" is not the configured issuer "` + srv.URL + `"`},
		{"forged issuer claim", issue(t, other, devidp.IssueOptions{Sub: "alice", Issuer: srv.URL}),
			ErrSignature, "does not verify"},
		{"empty", "", ErrMalformed, "token is empty"},
		{"not a JWT", "hello-world", ErrMalformed, "not a JWT"},
		{"JWE", "a.b.c.d.e", ErrMalformed, "encrypted (JWE)"},
		{"garbage header", "!!!." + goodParts[1] + "." + goodParts[2], ErrMalformed, "header"},
		{"no signature", goodParts[0] + "." + goodParts[1] + ".", ErrSignature, "no signature"},
		{"garbage signature", goodParts[0] + "." + goodParts[1] + ".!!!", ErrMalformed, "not a valid signed JWT"},
		{"groups wrong type", issue(t, p, devidp.IssueOptions{Sub: "alice", Claims: map[string]any{"groups": 42}}),
			ErrClaims, `token claim "groups" must be a list of strings or a string, not a number`},
		{"groups element wrong type", issue(t, p, devidp.IssueOptions{Sub: "alice", Claims: map[string]any{"groups": []any{"ok", true}}}),
			ErrClaims, `token claim "groups" must be a list of strings, but element 1 is a boolean`},
		{"no sub", issue(t, p, devidp.IssueOptions{Sub: "alice", Claims: map[string]any{"sub": nil}}),
			ErrClaims, `token has no "sub" claim`},
		{"no exp", issue(t, p, devidp.IssueOptions{Sub: "alice", Claims: map[string]any{"exp": nil}}),
			ErrMalformed, `token has no "exp" claim`},
		{"exp not a number", issue(t, p, devidp.IssueOptions{Sub: "alice", Claims: map[string]any{"exp": "tomorrow"}}),
			ErrMalformed, `token claim "exp" is a string, not a number of seconds`},
		{"not yet valid", issue(t, p, devidp.IssueOptions{Sub: "alice", Claims: map[string]any{"nbf": time.Now().Add(time.Hour).Unix()}}),
			ErrExpired, "token is not valid before"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.token)
			checkRejected(t, err, tc.want, tc.msg, tc.token)
		})
	}
}

func TestGroupsClaim(t *testing.T) {
	p, srv := startIdP(t, devidp.Options{})
	v := newVerifier(t, Config{Issuer: srv.URL, ClientID: "warden", GroupsClaim: "roles"})

	tok := issue(t, p, devidp.IssueOptions{Sub: "alice", Groups: []string{"ignored"}, Claims: map[string]any{"roles": "admin"}})
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Groups, []string{"admin"}) {
		t.Errorf("groups from a single-string claim = %q, want [admin]", c.Groups)
	}
	tok = issue(t, p, devidp.IssueOptions{Sub: "alice", Claims: map[string]any{"roles": map[string]any{"a": 1}}})
	_, err = v.Verify(context.Background(), tok)
	checkRejected(t, err, ErrClaims, `token claim "roles" must be a list of strings or a string, not an object`, tok)
}

// TestLazyDiscovery starts the verifier before the IdP exists, as wardend may
// at boot, and checks that it recovers once the IdP is up.
func TestLazyDiscovery(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused

	p, err := devidp.New(devidp.Options{Issuer: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(context.Background(), Config{Issuer: p.Issuer(), ClientID: "warden"})
	if err != nil {
		t.Fatalf("NewVerifier must not fail while the IdP is down: %v", err)
	}
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	v.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

	tok := issue(t, p, devidp.IssueOptions{Sub: "alice"})
	_, err = v.Verify(context.Background(), tok)
	checkRejected(t, err, ErrUnavailable, "cannot reach the identity provider", tok)
	if v.Discover(context.Background()) == nil {
		t.Fatal("Discover succeeded with the IdP down")
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	srv := &http.Server{Handler: p.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// Within the retry interval the failure is remembered, so a burst of
	// logins does not hammer the IdP...
	_, err = v.Verify(context.Background(), tok)
	checkRejected(t, err, ErrUnavailable, "cannot reach", tok)
	// ...after it, discovery is tried again and succeeds.
	mu.Lock()
	now = now.Add(defaultRetryEvery)
	mu.Unlock()
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify after the IdP came up: %v", err)
	}
	if c.Subject != "alice" {
		t.Errorf("subject %q", c.Subject)
	}
}

// TestKeysUnavailable: discovery worked, then the IdP went away before its
// keys were fetched. That is not the token's fault.
func TestKeysUnavailable(t *testing.T) {
	p, srv := startIdP(t, devidp.Options{})
	v := newVerifier(t, Config{Issuer: srv.URL, ClientID: "warden"})
	if err := v.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	tok := issue(t, p, devidp.IssueOptions{Sub: "alice"})
	_, err := v.Verify(context.Background(), tok)
	checkRejected(t, err, ErrUnavailable, "cannot fetch the signing keys", tok)
}

func TestNewVerifierConfigErrors(t *testing.T) {
	_, srv := startIdP(t, devidp.Options{})
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The IdP says its issuer is http://127.0.0.1:port; localhost is a
	// different string, and issuers must match exactly.
	mismatched := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)

	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"no issuer":        {Config{ClientID: "warden"}, "issuer URL is required"},
		"plain http":       {Config{Issuer: "http://idp.example.com", ClientID: "warden"}, "plain http"},
		"no client id":     {Config{Issuer: srv.URL}, "client_id is required"},
		"missing CA file":  {Config{Issuer: srv.URL, ClientID: "warden", CAFile: filepath.Join(dir, "nope.pem")}, "nope.pem"},
		"CA file not PEM":  {Config{Issuer: srv.URL, ClientID: "warden", CAFile: notPEM}, "contains no PEM certificates"},
		"issuer mismatch":  {Config{Issuer: mismatched, ClientID: "warden"}, "did not match"},
		"query in issuer":  {Config{Issuer: "https://idp.example.com/?tenant=1", ClientID: "warden"}, "no query"},
		"ftp issuer":       {Config{Issuer: "ftp://idp.example.com", ClientID: "warden"}, "must use https"},
		"issuer not a URL": {Config{Issuer: "idp.example.com", ClientID: "warden"}, "absolute URL"},
	} {
		_, err := NewVerifier(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
}

// TestCAFile serves the IdP over TLS with a certificate from a private CA.
func TestCAFile(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	issuer := "https://" + srv.Listener.Addr().String()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := devidp.New(devidp.Options{Issuer: issuer, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = p.Handler()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusting client's handshake failure is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := issue(t, p, devidp.IssueOptions{Sub: "alice", Groups: []string{"engineering"}})

	v := newVerifier(t, Config{Issuer: issuer, ClientID: "warden", CAFile: caFile})
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify with the CA file: %v", err)
	}
	if c.Subject != "alice" || !slices.Equal(c.Groups, []string{"engineering"}) {
		t.Errorf("claims %+v", c)
	}

	// Without the CA, the IdP's certificate is not trusted.
	v = newVerifier(t, Config{Issuer: issuer, ClientID: "warden"})
	_, err = v.Verify(context.Background(), tok)
	checkRejected(t, err, ErrUnavailable, "certificate", tok)
}
