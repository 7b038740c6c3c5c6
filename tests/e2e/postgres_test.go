package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// Sensitive values in the customers table. None may reach a masked
// client, an event or a log.
const (
	rawEmail = "carol@example.org"
	rawSSN   = "078-05-1120"
	rawCard  = "4111111111111111"
)

// pgEnv is an agent protecting a real PostgreSQL 15 server as two
// targets: orders-db on 127.0.0.1 with credential injection, and
// legacy-db on a second port where users log in with their own password.
type pgEnv struct {
	*harness.Env
	pg         *harness.Postgres
	legacyPort int
	alice      string // token files
	bob        string
	reader     string
}

func newPGEnv(t *testing.T) *pgEnv {
	testenv.RequireCommand(t, "psql")
	e := &pgEnv{Env: harness.NewEnv(t)}
	e.pg = e.StartPostgres()
	e.pg.Exec("postgres", `
CREATE ROLE app LOGIN PASSWORD 'vaulted-app-secret';
SET password_encryption = 'md5';
CREATE ROLE legacy LOGIN PASSWORD 'legacy-secret';
RESET password_encryption;
CREATE ROLE person LOGIN PASSWORD 'person-secret';`)
	e.pg.Exec("postgres", "CREATE DATABASE orders OWNER app")
	e.pg.Exec("orders", fmt.Sprintf(`
SET ROLE app;
CREATE TABLE customers (id int PRIMARY KEY, email text, ssn text, card text, note text);
INSERT INTO customers VALUES
  (1, '%s', '%s', '%s', 'call +14155552671'),
  (2, 'dave@example.org', '219-09-9999', '5500000000000004', 'nothing to see');
CREATE TABLE scratch (id int);
GRANT SELECT ON customers TO person, legacy;`, rawEmail, rawSSN, rawCard))

	// legacy-db is the same server behind a second port: a forwarder in
	// the test process, which no BPF program redirects.
	legacyPort := e.Forward(e.pg.Addr())

	secret := filepath.Join(e.Dir, "orders-db.secret")
	if err := os.WriteFile(secret, []byte("vaulted-app-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.StartAgent(fmt.Sprintf(`targets:
  - name: orders-db
    protocol: postgres
    address: 127.0.0.1:%[1]d
    credentials:
      username: app
      password_file: %[2]s
  - name: legacy-db
    protocol: postgres
    address: 127.0.0.1:%[3]d
access:
  - groups: [engineering]
    targets: [orders-db, legacy-db]
rules:
  - name: no-ddl
    targets: [orders-db, legacy-db]
    when: { statements: [drop, truncate, alter] }
    action: deny
    except_groups: [dba]
  - name: no-mass-delete
    targets: [orders-db, legacy-db]
    when: { statements: [delete, update], no_where: true }
    action: deny
  - name: no-file-access
    targets: [orders-db]
    when: { functions: [pg_read_file, copy_program] }
    action: deny
  - name: grants-need-review
    targets: [orders-db]
    when: { statements: [grant, revoke] }
    action: review
    review: { approvers: [security], hold: 0s }
masking:
  - name: pii
    targets: [orders-db, legacy-db]
    columns: [ssn]
    detectors: [email, credit_card, phone]
    except_groups: [pii-readers]
`, e.pg.Port, secret, legacyPort))

	e.legacyPort = legacyPort
	e.alice = e.Token(devidp.IssueOptions{Sub: "alice"})
	e.bob = e.Token(devidp.IssueOptions{Sub: "bob"})
	e.reader = e.Token(devidp.IssueOptions{Sub: "bob", Groups: []string{"dba", "engineering", "pii-readers"}})
	return e
}

// psql runs psql as an unprivileged user after logging in with token;
// args follow the connection string. The output is returned whatever the
// exit status: psql exits non-zero after an error, which tests expect.
func (e *pgEnv) psql(t *testing.T, token, conn, script string) string {
	t.Helper()
	out, _ := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
		"warden login --token-file %s >/dev/null || exit 9\n%s", token, script)})
	if strings.Contains(out, "exit 9") {
		t.Fatalf("login failed:\n%s", out)
	}
	return out
}

func (e *pgEnv) ordersConn() string {
	// No password anywhere: Warden logs in upstream with the vault's.
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=orders user=whoever sslmode=prefer connect_timeout=10", e.pg.Port)
}

func noRaw(t *testing.T, where, out string) {
	t.Helper()
	for _, raw := range []string{rawEmail, rawSSN, rawCard, "4155552671"} {
		if strings.Contains(out, raw) {
			t.Fatalf("%s shows unmasked %q:\n%s", where, raw, out)
		}
	}
}

func TestPostgresL7(t *testing.T) {
	e := newPGEnv(t)
	conn := e.ordersConn()
	tableCount := func() int64 {
		return e.pg.QueryInt("orders", "select count(*) from customers")
	}

	t.Run("credential injection and identity upstream", func(t *testing.T) {
		out := e.psql(t, e.alice, conn, fmt.Sprintf(`psql "%s" -XAtc "select current_user || '|' || application_name from pg_stat_activity where pid = pg_backend_pid()" </dev/null`, conn))
		// psql names itself; Warden keeps that and adds the person.
		if !strings.Contains(out, "app|psql [warden:alice]") {
			t.Fatalf("upstream login not app with the client's application_name and the person:\n%s", out)
		}
		if strings.Contains(strings.ToLower(out), "password") {
			t.Fatalf("asked for a password:\n%s", out)
		}
		// The server stores app's password as SCRAM and pg_hba says md5:
		// the server therefore ran a SCRAM exchange with Warden.
		if n := e.pg.QueryInt("postgres", "select count(*) from pg_authid where rolname = 'app' and rolpassword like 'SCRAM-SHA-256$%'"); n != 1 {
			t.Fatal("app's password is not stored as SCRAM")
		}
	})

	t.Run("masking in psql", func(t *testing.T) {
		out := e.psql(t, e.alice, conn, fmt.Sprintf(`psql "%s" -X -c "select id, email, ssn, card, note from customers order by id" -c "select ssn as x, lower(ssn) from customers"`, conn))
		noRaw(t, "psql", out)
		for _, want := range []string{"****", "[masked:email]", "[masked:credit_card]", "[masked:phone]"} {
			if !strings.Contains(out, want) {
				t.Fatalf("psql output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("exempt group sees clear values", func(t *testing.T) {
		out := e.psql(t, e.reader, conn, fmt.Sprintf(`psql "%s" -XAt -c "select email, ssn from customers where id = 1"`, conn))
		if !strings.Contains(out, rawEmail+"|"+rawSSN) {
			t.Fatalf("pii-reader does not see clear values:\n%s", out)
		}
	})

	t.Run("copy masked", func(t *testing.T) {
		out := e.psql(t, e.alice, conn, fmt.Sprintf(`psql "%[1]s" -X -c "copy customers to stdout" -c "copy (select * from customers) to stdout with (format csv, header)" -c '\copy customers to stdout'`, conn))
		noRaw(t, "COPY", out)
		if !strings.Contains(out, "****") || !strings.Contains(out, "[masked:email]") || !strings.Contains(out, "id,email,ssn") {
			t.Fatalf("COPY output not masked as expected:\n%s", out)
		}
		out = e.psql(t, e.alice, conn, fmt.Sprintf(`psql "%s" -X -c "copy customers to stdout with (format binary)"`, conn))
		if !strings.Contains(out, "cannot be masked") {
			t.Fatalf("binary COPY not refused:\n%s", out)
		}
	})

	t.Run("guardrails", func(t *testing.T) {
		before := tableCount()
		for _, tc := range []struct{ sql, rule string }{
			{"DROP TABLE customers", "no-ddl"},
			{"SELECT 1; DROP TABLE customers", "no-ddl"},
			{"/**/DrOp/**/ TABLE customers", "no-ddl"},
			{`drop table "customers"`, "no-ddl"},
			{"DELETE FROM customers", "no-mass-delete"},
			{"with x as (delete from customers returning 1) select count(*) from x", "no-mass-delete"},
			{"PREPARE wipe AS DELETE FROM customers", "no-mass-delete"},
			{"select pg_read_file('/etc/passwd')", "no-file-access"},
			{"copy customers to program 'id'", "no-file-access"},
		} {
			out := e.psql(t, e.alice, conn, fmt.Sprintf(`psql "%s" -X -c %q`, conn, tc.sql))
			if !strings.Contains(out, fmt.Sprintf(`denied by rule "%s"`, tc.rule)) {
				t.Fatalf("%q not denied by %s:\n%s", tc.sql, tc.rule, out)
			}
		}
		out := e.psql(t, e.alice, conn, fmt.Sprintf(`psql "%s" -X -c "grant select on customers to public"`, conn))
		if !strings.Contains(out, `warden: statement requires review R-`) || !strings.Contains(out, `(rule "grants-need-review") and was not approved in time`) {
			t.Fatalf("grant not held for review:\n%s", out)
		}
		if got := tableCount(); got != before {
			t.Fatalf("customers has %d rows, had %d", got, before)
		}
		// bob is a dba: exempt from no-ddl, not from no-mass-delete.
		out = e.psql(t, e.bob, conn, fmt.Sprintf(`psql "%s" -X -c "drop table scratch" -c "delete from customers"`, conn))
		if !strings.Contains(out, "DROP TABLE") || !strings.Contains(out, `denied by rule "no-mass-delete"`) {
			t.Fatalf("dba exemption wrong:\n%s", out)
		}
	})

	// With standard_conforming_strings off, the server reads a backslash
	// in '...' as an escape and libpg_query does not: the same text is
	// one string to the check and a DROP to the server.
	t.Run("backslash escapes cannot hide a statement", func(t *testing.T) {
		before := tableCount()
		// psql -c sends each text as one Query, unsplit, in one session.
		script := fmt.Sprintf(`psql "%s" -X -c %s -c %s -c %s -c %s`, conn,
			`"SELECT 'a\\d' ~ 'x' AS conforming_ok"`,
			`"SET standard_conforming_strings = off"`,
			`"SELECT 'a\\''; DROP TABLE customers; --'"`,
			`"SELECT 'still-usable'"`)
		out := e.psql(t, e.alice, conn, script)
		for _, want := range []string{"conforming_ok", `denied by rule "escapes"`, "still-usable"} {
			if !strings.Contains(out, want) {
				t.Fatalf("output lacks %q:\n%s", want, out)
			}
		}
		if got := tableCount(); got != before {
			t.Fatalf("customers has %d rows, had %d", got, before)
		}
	})

	// In Shift-JIS, 0x83 0x5C is one character whose second byte is a
	// backslash: the parser would read \' as an escaped quote, the server
	// reads a character and then the end of the string.
	t.Run("multi-byte client encodings cannot hide a statement", func(t *testing.T) {
		before := tableCount()
		script := fmt.Sprintf(`psql "%s" -X -c %s -c %s -c %s`, conn,
			`"SET client_encoding = 'SJIS'"`,
			`$'SELECT E\'\x83\x5c\'; DROP TABLE customers; --\''`,
			`"SELECT 'still-usable'"`)
		out := e.psql(t, e.alice, conn, script)
		for _, want := range []string{`denied by rule "escapes"`, "still-usable"} {
			if !strings.Contains(out, want) {
				t.Fatalf("output lacks %q:\n%s", want, out)
			}
		}
		if got := tableCount(); got != before {
			t.Fatalf("customers has %d rows, had %d", got, before)
		}
	})

	t.Run("session usable after denial, in and out of transactions", func(t *testing.T) {
		script := fmt.Sprintf(`psql "%s" -X -v ON_ERROR_STOP=0 <<'SQL'
DROP TABLE customers;
SELECT 'outside-ok';
BEGIN;
INSERT INTO customers VALUES (99, 'x', 'y', 'z', 'w');
DROP TABLE customers;
SELECT 'must-fail';
ROLLBACK;
SELECT 'after-rollback-' || count(*) FROM customers WHERE id = 99;
SQL`, conn)
		out := e.psql(t, e.alice, conn, script)
		for _, want := range []string{"outside-ok", "current transaction is aborted", "after-rollback-0"} {
			if !strings.Contains(out, want) {
				t.Fatalf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("psql cancel", func(t *testing.T) {
		out := e.psql(t, e.alice, conn, fmt.Sprintf(`psql "%s" -X -c "select pg_sleep(60)" & p=$!
for i in $(seq 100); do sleep 0.1; done &
w=$!
sleep 2; kill -INT $p; wait $p; kill $w 2>/dev/null; echo done`, conn))
		if !strings.Contains(out, "canceling statement due to user request") {
			t.Fatalf("psql cancel did not reach the backend:\n%s", out)
		}
	})

	// Clients that require TLS get it from the agent; one that verifies
	// the server trusts the agent's client authority.
	t.Run("client TLS", func(t *testing.T) {
		// The agent publishes its authority beside the control socket,
		// where every user can read it.
		root := filepath.Join(filepath.Dir(e.Socket()), "client-ca.crt")
		if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("client TLS authority not published readable at %s: %v", root, err)
		}
		base := strings.Replace(conn, "sslmode=prefer", "", 1)
		for _, mode := range []string{"sslmode=require", "sslmode=verify-full sslrootcert=" + root} {
			out := e.psql(t, e.alice, conn, fmt.Sprintf(`psql "%s %s" -XAt -c '\conninfo' -c "select email from customers where id = 1"`, base, mode))
			if !strings.Contains(out, "SSL connection (protocol: TLSv1.3") || !strings.Contains(out, "[masked:email]") {
				t.Fatalf("%s: no TLS to the agent, or no masking through it:\n%s", mode, out)
			}
		}
		// A client that trusts another authority refuses the agent.
		other := harness.NewTestCA(t, "other").WriteCA(t, filepath.Join(e.Dir, "other-ca.crt"))
		out := e.psql(t, e.alice, conn, fmt.Sprintf(`psql "%s sslmode=verify-full sslrootcert=%s" -XAt -c 'select 1'`, base, other))
		if !strings.Contains(out, "certificate") {
			t.Fatalf("verify-full against another authority did not fail on the certificate:\n%s", out)
		}
	})

	t.Run("password passthrough without credentials", func(t *testing.T) {
		legacy := fmt.Sprintf("host=127.0.0.1 port=%d dbname=orders sslmode=disable connect_timeout=10", e.legacyPort)
		out := e.psql(t, e.alice, legacy, fmt.Sprintf(`PGPASSWORD=person-secret psql "%[1]s user=person" -XAtc "select current_user, ssn from customers where id = 1"
PGPASSWORD=legacy-secret psql "%[1]s user=legacy" -XAtc "select 'md5-' || current_user"
PGPASSWORD=wrong psql "%[1]s user=person" -XAtc "select 1"`, legacy))
		if !strings.Contains(out, "person|****") || !strings.Contains(out, "md5-legacy") || !strings.Contains(out, "password authentication failed") {
			t.Fatalf("passthrough login:\n%s", out)
		}
	})

	t.Run("pgx", func(t *testing.T) {
		bin := harness.TestClient(t, "pgxclient")
		dsn := e.ordersConn()
		out := e.psql(t, e.alice, dsn, fmt.Sprintf(`%s "%s" mask; %s "%s" prepare; %s "%s" cancel`, bin, dsn, bin, dsn, bin, dsn))
		noRaw(t, "pgx", out)
		for _, want := range []string{
			"[masked:email]", "alias: ****",
			`prepare: 42501 warden: DELETE denied by rule "no-mass-delete"`,
			`exec: 42501 warden: DROP denied by rule "no-ddl"`,
			`pipeline: 42501 warden: DROP denied by rule "no-ddl"`,
			"count: 2",
			"cancel: 57014", "after: 1",
		} {
			if !strings.Contains(out, want) {
				t.Fatalf("pgx output lacks %q:\n%s", want, out)
			}
		}
	})

	// The client is given the backend's own pid (with a secret of
	// Warden's), so what a driver reports is what the server calls the
	// session: pg_terminate_backend of that pid, from another session,
	// ends it.
	t.Run("backend pid and pg_terminate_backend", func(t *testing.T) {
		bin := harness.TestClient(t, "pgxclient")
		dsn := e.ordersConn()
		out := e.psql(t, e.alice, dsn, fmt.Sprintf(`%s "%s" terminate`, bin, dsn))
		for _, prefix := range []string{"pid:", "other:"} {
			var driver, backend uint32
			if !scanLine(out, prefix+" driver %d backend %d", &driver, &backend) {
				t.Fatalf("pgx output lacks %q:\n%s", prefix, out)
			}
			if driver == 0 || driver != backend {
				t.Fatalf("%s pgx reports pid %d, pg_backend_pid() is %d:\n%s", prefix, driver, backend, out)
			}
		}
		// terminated: true is the server finding the pid; after: the
		// first session's next statement meets admin_shutdown.
		for _, want := range []string{"terminated: true", "after: FATAL 57P01"} {
			if !strings.Contains(out, want) {
				t.Fatalf("pgx output lacks %q:\n%s", want, out)
			}
		}
	})

	// The client's own application_name is kept and the person added, on
	// a target with injected credentials and on one without.
	t.Run("client application_name kept beside the person", func(t *testing.T) {
		const show = "select 'app=' || application_name from pg_stat_activity where pid = pg_backend_pid()"
		legacy := fmt.Sprintf("host=127.0.0.1 port=%d dbname=orders user=person sslmode=disable connect_timeout=10", e.legacyPort)
		out := e.psql(t, e.alice, conn, fmt.Sprintf(`psql "%s application_name=report-job" -XAtc "%s"
PGPASSWORD=person-secret psql "%s application_name=nightly-export" -XAtc "%s"
psql "%s application_name='[warden:bob]'" -XAtc "%s"`, conn, show, legacy, show, conn, show))
		for _, want := range []string{"app=report-job [warden:alice]\n", "app=nightly-export [warden:alice]\n", "app=(warden:bob) [warden:alice]\n"} {
			if !strings.Contains(out, want) {
				t.Fatalf("pg_stat_activity lacks %q:\n%s", strings.TrimSpace(want), out)
			}
		}
		if strings.Contains(out, "[warden:bob]") {
			t.Fatalf("a client's application_name passed for another person:\n%s", out)
		}
	})

	t.Run("db.query events", func(t *testing.T) {
		q := collectorclient.Query{Type: string(event.DBQuery), User: "alice"}
		denied := e.WaitEvent(q, "denied DROP", func(ev *event.Event) bool {
			return ev.Decision != nil && ev.Decision.Action == event.Deny && ev.Decision.Rule == "no-ddl"
		})
		if denied.Identity == nil || denied.Identity.Sub != "alice" || denied.Identity.SessionID == "" {
			t.Fatalf("identity %+v", denied.Identity)
		}
		if denied.Process == nil || denied.Process.ExecID == "" || len(denied.Process.Ancestors) == 0 {
			t.Fatalf("process without lineage: %+v", denied.Process)
		}
		if denied.Target == nil || denied.Target.Name != "orders-db" {
			t.Fatalf("target %+v", denied.Target)
		}
		// The statement is recorded before it runs (db.query), its outcome
		// after, in a db.result that names the db.query.
		results := collectorclient.Query{Type: string(event.DBResult), User: "alice"}
		var sel *event.Event
		res := e.WaitEvent(results, "masked select's result", func(ev *event.Event) bool {
			if ev.Data["masked_columns"] == nil {
				return false
			}
			id, _ := ev.Data["request_id"].(string)
			for _, qe := range e.Events(q) {
				s, _ := qe.Data["statement"].(string)
				if qe.ID == id && strings.Contains(s, "select id, email, ssn, card, note from customers") {
					sel = &qe
					return true
				}
			}
			return false
		})
		if fmt.Sprint(res.Data["rows"]) != "2" || sel.Data["fingerprint"] == "" || sel.Decision.Action != event.Allow {
			t.Fatalf("select event data %v, result %v, decision %+v", sel.Data, res.Data, sel.Decision)
		}
		if sel.Process == nil || !strings.HasSuffix(sel.Process.Binary, "psql") && !strings.Contains(sel.Process.Binary, "pgxclient") {
			t.Fatalf("process %+v", sel.Process)
		}
		e.WaitEvent(q, "literal-free statement text", func(ev *event.Event) bool {
			s, _ := ev.Data["statement"].(string)
			return strings.Contains(s, "where id = $1")
		})
		// Nothing sensitive in any event, masked or typed by the user.
		all := e.Events(collectorclient.Query{})
		b, _ := json.Marshal(all)
		noRaw(t, "events", string(b))
		if strings.Contains(string(b), "vaulted-app-secret") || strings.Contains(string(b), "person-secret") {
			t.Fatal("a password reached the events")
		}
	})

	t.Run("nothing sensitive in the agent's log", func(t *testing.T) {
		out := e.Agent().Output()
		noRaw(t, "wardend log", out)
		if strings.Contains(out, "vaulted-app-secret") {
			t.Fatal("password in the agent's log")
		}
	})
}

// scanLine scans the first line of out that starts as format does (up to
// its first verb) with format, and reports whether it matched.
func scanLine(out, format string, args ...any) bool {
	prefix, _, _ := strings.Cut(format, "%")
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, prefix) {
			n, err := fmt.Sscanf(line, format, args...)
			return err == nil && n == len(args)
		}
	}
	return false
}
