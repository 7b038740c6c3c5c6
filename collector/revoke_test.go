package collector_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/collector"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/natsauth"
	"github.com/wardenhq/warden/tests/harness"
)

// With the embedded server, a collector refuses anonymous clients, takes
// an enrolled agent, and applies warden-collector revoke while it runs.
func TestEmbeddedAuthAndLiveRevocation(t *testing.T) {
	dir := t.TempDir()
	authDir := filepath.Join(dir, "nats-auth")
	auth, err := natsauth.Open(authDir)
	if err != nil {
		t.Fatal(err)
	}
	creds, _, err := auth.Issue(natsauth.RoleAgent, "bastion-1", "")
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(dir, "b1.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	idp := startIdP(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := collector.New(ctx, collector.Config{
		EmbeddedNATS: true, NATSListen: "127.0.0.1:0", NATSStore: filepath.Join(dir, "js"), NATSAuthDir: authDir,
		StorePath: harness.StoreLocation(t, dir), Listen: "127.0.0.1:0", Keys: event.StaticKeys{}, Logger: zerolog.Nop(),
		OIDC: idtoken.Config{Issuer: idp.Issuer(), ClientID: "warden"},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	url := c.NATSURL()

	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected to the embedded server")
	}
	closed := make(chan struct{})
	agent, err := nats.Connect(url, nats.UserCredentials(credsFile), nats.NoReconnect(), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("enrolled agent: %v", err)
	}
	defer agent.Close()

	if _, _, err := auth.Revoke(natsauth.RoleAgent, "bastion-1", false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second): // a hang guard: the check runs every 2 s
		t.Fatal("the revoked agent is still connected")
	}
	if nc, err := nats.Connect(url, nats.UserCredentials(credsFile)); err == nil {
		nc.Close()
		t.Fatal("revoked creds connected again")
	}
}
