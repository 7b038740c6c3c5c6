package collector_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector"
	cc "github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/tests/harness"
)

// The API never runs unauthenticated, and TLS needs both files: these
// are start-up errors, reported before anything is opened.
func TestNewRefusesBadAPIConfig(t *testing.T) {
	dir := t.TempDir()
	ca := harness.NewTestCA(t, "collector CA")
	crt := ca.Issue(t, "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	if err := os.WriteFile(certFile, crt.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, crt.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	oidc := idtoken.Config{Issuer: "http://127.0.0.1:1", ClientID: "warden"}
	for _, tc := range []struct {
		name string
		cfg  collector.Config
		want string
	}{
		{"no issuer", collector.Config{OIDC: idtoken.Config{ClientID: "warden"}}, "--oidc-issuer"},
		{"no client id", collector.Config{OIDC: idtoken.Config{Issuer: oidc.Issuer}}, "--oidc-client-id"},
		{"cert without key", collector.Config{OIDC: oidc, TLSCert: certFile}, "--api-tls-cert needs --api-tls-key"},
		{"key without cert", collector.Config{OIDC: oidc, TLSKey: keyFile}, "--api-tls-key needs --api-tls-cert"},
		{"cert and key swapped", collector.Config{OIDC: oidc, TLSCert: keyFile, TLSKey: certFile}, "api.key"},
		{"missing cert", collector.Config{OIDC: oidc, TLSCert: filepath.Join(dir, "nope.crt"), TLSKey: keyFile}, "nope.crt"},
	} {
		tc.cfg.StorePath = filepath.Join(dir, tc.name, "events.db")
		tc.cfg.EmbeddedNATS, tc.cfg.Keys, tc.cfg.Logger = true, event.StaticKeys{}, zerolog.Nop()
		c, err := collector.New(context.Background(), tc.cfg)
		if err == nil {
			c.Run(canceled())
			t.Errorf("%s: started", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %q; want one line naming %q", tc.name, err, tc.want)
		}
		if _, serr := os.Stat(tc.cfg.StorePath); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%s: the store was created before the API config was checked", tc.name)
		}
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// With a certificate the API speaks only TLS; a client trusting the CA
// reads with a reader's token.
func TestAPIOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca := harness.NewTestCA(t, "collector CA")
	crt := ca.Issue(t, "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	os.WriteFile(certFile, crt.CertPEM, 0o644)
	os.WriteFile(keyFile, crt.KeyPEM, 0o600)
	caFile := ca.WriteCA(t, filepath.Join(dir, "ca.pem"))

	ns := startNATS(t)
	idp := startIdP(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := collector.New(ctx, collector.Config{
		NATSURL: ns.ClientURL(), StorePath: harness.StoreLocation(t, dir), Listen: "127.0.0.1:0",
		Keys: event.StaticKeys{}, OIDC: idtoken.Config{Issuer: idp.Issuer(), ClientID: "warden"},
		Readers: []string{"auditors"}, TLSCert: certFile, TLSKey: keyFile, Logger: zerolog.Nop(),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("collector run: %v", err)
		}
	})
	if !strings.HasPrefix(c.APIURL(), "https://") {
		t.Fatalf("APIURL %s", c.APIURL())
	}
	tok, err := idp.Issue(devidp.IssueOptions{Sub: "audra", Groups: []string{"auditors"}})
	if err != nil {
		t.Fatal(err)
	}
	hc, err := cc.HTTPClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cc.New(c.APIURL(), hc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.WithToken(tok).Events(context.Background(), cc.Query{Limit: 1}); err != nil {
		t.Fatalf("events over TLS: %v", err)
	}
	if _, err := cl.Events(context.Background(), cc.Query{Limit: 1}); !cc.IsUnauthorized(err) {
		t.Fatalf("events over TLS without a token: %v", err)
	}
	// Without the CA the certificate is not trusted.
	untrusting, _ := cc.New(c.APIURL(), &http.Client{})
	if _, err := untrusting.WithToken(tok).Events(context.Background(), cc.Query{Limit: 1}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client without the CA: %v", err)
	}
	// Plain HTTP gets no answer from a TLS listener.
	plain, _ := cc.New("http://"+c.APIAddr(), nil)
	if _, err := plain.WithToken(tok).Events(context.Background(), cc.Query{Limit: 1}); err == nil {
		t.Fatal("plain HTTP answered by the TLS API")
	}
}
