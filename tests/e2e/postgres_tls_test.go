package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// TestPostgresUpstreamTLS runs credential injection over TLS to a real
// PostgreSQL 15 server with ssl on, its certificate issued by a CA made up
// for the test. One server stands for several targets, each with its own
// address and credentials.tls:
//
//	tls-db      127.0.0.1:port  verify-full, the right CA, a custom application_name
//	chain-db    127.0.0.2:port  require: the certificate does not name 127.0.0.2
//	rogue-db    forwarder       verify-full against another CA
//	misnamed-db forwarder       verify-full for a name the certificate lacks
//	plain-db    forwarder       no tls block: plain TCP, as before
//	own-db      forwarder       no credentials, target-level tls verify-full:
//	                            the client's own login, over TLS both hops
func TestPostgresUpstreamTLS(t *testing.T) {
	testenv.RequireCommand(t, "psql")
	e := &pgEnv{Env: harness.NewEnv(t)}

	ca := harness.NewTestCA(t, "warden e2e CA")
	rogue := harness.NewTestCA(t, "rogue CA")
	e.pg = e.StartPostgresWith(harness.PostgresOptions{TLS: ca.Issue(t, "127.0.0.1", "pg.test")})
	e.pg.Exec("postgres", `CREATE ROLE app LOGIN PASSWORD 'vaulted-app-secret';`)

	caFile := ca.WriteCA(t, filepath.Join(e.Dir, "ca.pem"))
	rogueFile := rogue.WriteCA(t, filepath.Join(e.Dir, "rogue.pem"))
	secret := filepath.Join(e.Dir, "app.secret")
	if err := os.WriteFile(secret, []byte("vaulted-app-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rogueAt, misnamedAt, plainAt, ownAt := e.Forward(e.pg.Addr()), e.Forward(e.pg.Addr()), e.Forward(e.pg.Addr()), e.Forward(e.pg.Addr())
	e.StartAgent(fmt.Sprintf(`targets:
  - name: tls-db
    protocol: postgres
    address: 127.0.0.1:%[1]d
    credentials:
      username: app
      password_file: %[2]s
      tls: {mode: verify-full, ca_file: %[3]s}
      application_name: "pg:{email}:{sub}:{session}"
  - name: chain-db
    protocol: postgres
    address: 127.0.0.2:%[1]d
    credentials:
      username: app
      password_file: %[2]s
      tls: {mode: require, ca_file: %[3]s}
  - name: rogue-db
    protocol: postgres
    address: 127.0.0.1:%[4]d
    credentials:
      username: app
      password_file: %[2]s
      tls: {mode: verify-full, ca_file: %[5]s}
  - name: misnamed-db
    protocol: postgres
    address: 127.0.0.1:%[6]d
    credentials:
      username: app
      password_file: %[2]s
      tls: {mode: verify-full, ca_file: %[3]s, server_name: elsewhere.test}
  - name: plain-db
    protocol: postgres
    address: 127.0.0.1:%[7]d
    credentials: {username: app, password_file: %[2]s}
  - name: own-db
    protocol: postgres
    address: 127.0.0.1:%[8]d
    tls: {mode: verify-full, ca_file: %[3]s}
access:
  - groups: [engineering]
    targets: [tls-db, chain-db, rogue-db, misnamed-db, plain-db, own-db]
`, e.pg.Port, secret, caFile, rogueAt, rogueFile, misnamedAt, plainAt, ownAt))
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})

	// The client's own hop is its own: psql asks for TLS (prefer) and gets
	// it from the agent; the upstream hop follows the target's tls.
	conn := func(host string, port int) string {
		return fmt.Sprintf("host=%s port=%d dbname=postgres user=whoever sslmode=prefer connect_timeout=10", host, port)
	}
	query := func(c string) string {
		return e.psql(t, alice, c, fmt.Sprintf(`psql "%s" -XAt -c "select 'ssl=' || ssl from pg_stat_ssl where pid = pg_backend_pid()" -c "select 'user=' || current_user" -c "select 'app=' || current_setting('application_name')" </dev/null`, c))
	}

	t.Run("verify-full with the right CA", func(t *testing.T) {
		out := query(conn("127.0.0.1", e.pg.Port))
		for _, want := range []string{"ssl=true", "user=app"} {
			if !strings.Contains(out, want) {
				t.Fatalf("output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(strings.ToLower(out), "password") {
			t.Fatalf("asked for a password:\n%s", out)
		}
		// The template, filled from alice's verified identity.
		if !regexp.MustCompile(`(?m)^app=pg:alice@corp\.example:alice:[0-9A-Za-z]+$`).MatchString(out) {
			t.Fatalf("application_name template not applied:\n%s", out)
		}
	})

	t.Run("require checks the chain, not the name", func(t *testing.T) {
		out := query(conn("127.0.0.2", e.pg.Port))
		if !strings.Contains(out, "ssl=true") || !strings.Contains(out, "user=app") {
			t.Fatalf("require mode did not log in over TLS:\n%s", out)
		}
		// No template: the default format, psql's own name and the person.
		if !regexp.MustCompile(`(?m)^app=psql \[warden:alice\]$`).MatchString(out) {
			t.Fatalf("default application_name not applied:\n%s", out)
		}
	})

	t.Run("wrong CA refused", func(t *testing.T) {
		out := query(conn("127.0.0.1", rogueAt))
		if !strings.Contains(out, "warden: cannot open a verified TLS connection to target rogue-db") ||
			!strings.Contains(out, "certificate signed by unknown authority") {
			t.Fatalf("rogue CA not refused with Warden's error:\n%s", out)
		}
		t.Logf("client saw:\n%s", out)
		if strings.Contains(out, "user=app") {
			t.Fatalf("logged in despite the wrong CA:\n%s", out)
		}
	})

	t.Run("wrong server name refused", func(t *testing.T) {
		out := query(conn("127.0.0.1", misnamedAt))
		if !strings.Contains(out, "target misnamed-db") || !strings.Contains(out, "not elsewhere.test") {
			t.Fatalf("name mismatch not refused with Warden's error:\n%s", out)
		}
		if strings.Contains(out, "user=app") {
			t.Fatalf("logged in despite the name mismatch:\n%s", out)
		}
	})

	t.Run("no tls block stays plain", func(t *testing.T) {
		out := query(conn("127.0.0.1", plainAt))
		if !strings.Contains(out, "ssl=false") || !strings.Contains(out, "user=app") {
			t.Fatalf("plain target:\n%s", out)
		}
	})

	// Without credentials the client logs in itself, with SCRAM, and the
	// agent reaches the server over TLS. Channel binding cannot span the
	// proxy: the server's SCRAM-SHA-256-PLUS offer is taken out, and the
	// agent keeps the loopback hop in the clear (a SCRAM client on TLS
	// would announce binding support, which the server rejects).
	t.Run("own login over target-level tls", func(t *testing.T) {
		c := strings.Replace(conn("127.0.0.1", ownAt), "user=whoever", "user=app", 1)
		out := e.psql(t, alice, c, fmt.Sprintf(`PGPASSWORD=vaulted-app-secret psql "%s" -XAt -c '\conninfo' -c "select 'ssl=' || ssl from pg_stat_ssl where pid = pg_backend_pid()" -c "select 'user=' || current_user" </dev/null`, c))
		for _, want := range []string{"ssl=true", "user=app"} {
			if !strings.Contains(out, want) {
				t.Fatalf("output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "SSL connection") {
			t.Fatalf("the loopback hop used TLS:\n%s", out)
		}
		out = e.psql(t, alice, c, fmt.Sprintf(`PGPASSWORD=vaulted-app-secret psql "%s channel_binding=require" -XAt -c 'select 1' </dev/null`, c))
		if !strings.Contains(out, "channel binding") {
			t.Fatalf("channel_binding=require did not fail on channel binding:\n%s", out)
		}
	})

	t.Run("cancel over TLS", func(t *testing.T) {
		c := conn("127.0.0.1", e.pg.Port)
		out := e.psql(t, alice, c, fmt.Sprintf(`psql "%s" -X -c "select pg_sleep(60)" & p=$!
sleep 2; kill -INT $p; wait $p; echo done`, c))
		if !strings.Contains(out, "canceling statement due to user request") {
			t.Fatalf("psql cancel did not reach the backend:\n%s", out)
		}
	})

	t.Run("nothing secret in the agent's log", func(t *testing.T) {
		if strings.Contains(e.Agent().Output(), "vaulted-app-secret") {
			t.Fatal("password in the agent's log")
		}
	})
}
