package idtoken

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/devidp"
)

var userCodeRE = regexp.MustCompile(`\b[B-Z]{4}-[B-Z]{4}\b`)

type loginResult struct {
	token string
	err   error
}

// startLogin runs DeviceLogin in a goroutine and returns the user code it
// printed and a channel with its result. The goroutine ends when DeviceLogin
// returns; the test waits for it (or cancels ctx) in every path.
func startLogin(t *testing.T, ctx context.Context, issuer string) (string, <-chan loginResult) {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan loginResult, 1)
	go func() {
		tok, err := DeviceLogin(ctx, issuer, "warden", "", pw)
		pw.CloseWithError(io.EOF)
		done <- loginResult{tok, err}
	}()
	var prompt strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		prompt.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "Waiting for approval") {
			break
		}
	}
	// Drain the rest so DeviceLogin never blocks on the pipe.
	go io.Copy(io.Discard, pr)
	code := userCodeRE.FindString(prompt.String())
	if code == "" {
		r := <-done
		t.Fatalf("no user code in prompt %q (DeviceLogin: %v)", prompt.String(), r.err)
	}
	if !strings.Contains(prompt.String(), issuer+"/device") {
		t.Errorf("prompt %q does not show the verification URL", prompt.String())
	}
	return code, done
}

// TestDeviceLoginEndToEnd approves through the IdP's real HTML form, the way
// a person would, and checks that the agent-side verifier accepts the token.
func TestDeviceLoginEndToEnd(t *testing.T) {
	_, srv := startIdP(t, devidp.Options{PollInterval: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	code, done := startLogin(t, ctx, srv.URL)
	resp, err := http.PostForm(srv.URL+"/device", url.Values{"user_code": {code}, "sub": {"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("approval form: status %d", resp.StatusCode)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("DeviceLogin: %v", r.err)
	}

	v := newVerifier(t, Config{Issuer: srv.URL, ClientID: "warden"})
	c, err := v.Verify(ctx, r.token)
	if err != nil {
		t.Fatalf("Verify(device flow token): %v", err)
	}
	if c.Subject != "bob" || c.Email != "bob@example.com" || strings.Join(c.Groups, ",") != "dba,engineering" {
		t.Errorf("claims %+v", c)
	}
}

func TestDeviceLoginApproveDevice(t *testing.T) {
	p, srv := startIdP(t, devidp.Options{PollInterval: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code, done := startLogin(t, ctx, srv.URL)
	if err := p.ApproveDevice(code, "alice"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("DeviceLogin: %v", r.err)
	}
	c, err := newVerifier(t, Config{Issuer: srv.URL, ClientID: "warden"}).Verify(ctx, r.token)
	if err != nil || c.Subject != "alice" {
		t.Fatalf("Verify: %v %+v", err, c)
	}
}

func TestDeviceLoginDenied(t *testing.T) {
	p, srv := startIdP(t, devidp.Options{PollInterval: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code, done := startLogin(t, ctx, srv.URL)
	if err := p.DenyDevice(code); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err == nil || !strings.Contains(r.err.Error(), "denied") {
		t.Fatalf("DeviceLogin after denial: token=%t err=%v", r.token != "", r.err)
	}
}

func TestDeviceLoginCancelled(t *testing.T) {
	_, srv := startIdP(t, devidp.Options{PollInterval: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	_, done := startLogin(t, ctx, srv.URL)
	cancel()
	r := <-done
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("DeviceLogin after cancel: %v, want context.Canceled", r.err)
	}
}

func TestDeviceLoginSetupErrors(t *testing.T) {
	// An IdP without a device endpoint: serve only a discovery document.
	mux := http.NewServeMux()
	var issuer string
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"issuer":"`+issuer+`","jwks_uri":"`+issuer+`/jwks","token_endpoint":"`+issuer+`/token","authorization_endpoint":"`+issuer+`/auth"}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	issuer = srv.URL

	_, err := DeviceLogin(context.Background(), issuer, "warden", "", io.Discard)
	if err == nil || !strings.Contains(err.Error(), "device_authorization_endpoint") {
		t.Errorf("IdP without device flow: err = %v", err)
	}
	_, err = DeviceLogin(context.Background(), "http://idp.example.com", "warden", "", io.Discard)
	if err == nil || !strings.Contains(err.Error(), "plain http") {
		t.Errorf("plain http issuer: err = %v", err)
	}

	_, idp := startIdP(t, devidp.Options{ClientID: "warden"})
	_, err = DeviceLogin(context.Background(), idp.URL, "someone-else", "", io.Discard)
	if err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("unknown client: err = %v", err)
	}
}
