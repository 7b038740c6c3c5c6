package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

// myEnv is an agent protecting a real MariaDB 10.11 server as three
// targets: shop-db with credential injection for a mysql_native_password
// account, ed-db (the same server behind a second port) injecting an
// ed25519 account's credential, and legacy-my (a third port) where users
// log in with their own password.
type myEnv struct {
	*harness.Env
	db         *harness.MariaDB
	edPort     int
	legacyPort int
	alice      string // token files
	reader     string
}

func newMyEnv(t *testing.T) *myEnv {
	e := &myEnv{Env: harness.NewEnv(t)}
	e.db = e.StartMariaDB()
	e.db.Exec(fmt.Sprintf(`
CREATE DATABASE shop;
CREATE USER app@'%%' IDENTIFIED VIA mysql_native_password USING PASSWORD('vaulted-app-secret');
CREATE USER app_ed@'%%' IDENTIFIED VIA ed25519 USING PASSWORD('vaulted-ed-secret');
CREATE USER person@'%%' IDENTIFIED BY 'person-secret';
GRANT ALL ON shop.* TO app@'%%', app_ed@'%%';
GRANT SELECT ON shop.* TO person@'%%';
GRANT PROCESS ON *.* TO app@'%%';
GRANT SELECT ON performance_schema.* TO app@'%%';
CREATE TABLE shop.customers (id int PRIMARY KEY, email varchar(100), ssn varchar(20), card varchar(20), note text);
INSERT INTO shop.customers VALUES
  (1, '%s', '%s', '%s', 'call +14155552671'),
  (2, 'dave@example.org', '219-09-9999', '5500000000000004', 'nothing to see');
CREATE TABLE shop.scratch (id int);`, rawEmail, rawSSN, rawCard))
	e.edPort = e.Forward(e.db.Addr())
	e.legacyPort = e.Forward(e.db.Addr())
	secret := filepath.Join(e.Dir, "shop-db.secret")
	edSecret := filepath.Join(e.Dir, "ed-db.secret")
	os.WriteFile(secret, []byte("vaulted-app-secret\n"), 0o600)
	os.WriteFile(edSecret, []byte("vaulted-ed-secret\n"), 0o600)
	e.StartAgent(fmt.Sprintf(`targets:
  - name: shop-db
    protocol: mysql
    address: 127.0.0.1:%[1]d
    credentials:
      username: app
      password_file: %[2]s
  - name: ed-db
    protocol: mysql
    address: 127.0.0.1:%[3]d
    credentials:
      username: app_ed
      password_file: %[4]s
  - name: legacy-my
    protocol: mysql
    address: 127.0.0.1:%[5]d
access:
  - groups: [engineering]
    targets: [shop-db, ed-db, legacy-my]
rules:
  - name: no-ddl
    targets: [shop-db, ed-db, legacy-my]
    when: { statements: [drop, truncate, alter] }
    action: deny
  - name: no-mass-delete
    targets: [shop-db, ed-db, legacy-my]
    when: { statements: [delete, update], no_where: true }
    action: deny
  - name: no-file-access
    targets: [shop-db, ed-db]
    when: { functions: [load_file, into_outfile, into_dumpfile, sys_exec] }
    action: deny
  - name: no-refunds
    targets: [shop-db]
    when: { functions: [refund] }
    action: deny
masking:
  - name: pii
    targets: [shop-db, ed-db, legacy-my]
    columns: [ssn]
    detectors: [email, credit_card, phone]
    except_groups: [pii-readers]
`, e.db.Port, secret, e.edPort, edSecret, e.legacyPort))
	e.alice = e.Token(devidp.IssueOptions{Sub: "alice"})
	e.reader = e.Token(devidp.IssueOptions{Sub: "bob", Groups: []string{"dba", "engineering", "pii-readers"}})
	return e
}

// sh runs a script as an unprivileged user after logging in with token.
// The output is returned whatever the exit status: clients exit non-zero
// after an error, which tests expect.
func (e *myEnv) sh(t *testing.T, token, script string) string {
	t.Helper()
	out, _ := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
		"warden login --token-file %s >/dev/null || exit 9\n%s", token, script)})
	if strings.Contains(out, "exit 9") {
		t.Fatalf("login failed:\n%s", out)
	}
	return out
}

// cli is the mariadb command line to shop-db: no password anywhere.
func (e *myEnv) cli(port int) string {
	return fmt.Sprintf("mariadb --no-defaults -h 127.0.0.1 -P %d -u whoever --connect-timeout=10 shop", port)
}

func TestMariaDBL7(t *testing.T) {
	e := newMyEnv(t)
	cli := e.cli(e.db.Port)
	tableCount := func() int64 { return e.db.QueryInt("select count(*) from shop.customers") }

	t.Run("credential injection", func(t *testing.T) {
		out := e.sh(t, e.alice, fmt.Sprintf(`%s -N -e "select concat('user=', current_user()); select concat('person=', attr_value) from performance_schema.session_connect_attrs where processlist_id = connection_id() and attr_name = 'warden'; use information_schema; select concat('db=', database())" </dev/null`, cli))
		// The server sees the vaulted account, and the person behind it
		// beside the client's own name, as application_name does on
		// PostgreSQL; COM_INIT_DB (the client's use) goes through.
		for _, want := range []string{"user=app@%", "person=mysql [warden:alice]", "db=information_schema"} {
			if !strings.Contains(out, want) {
				t.Fatalf("output lacks %q:\n%s", want, out)
			}
		}
		out = e.sh(t, e.alice, fmt.Sprintf(`%s -N -e "select concat('user=', current_user())" </dev/null`, e.cli(e.edPort)))
		if !strings.Contains(out, "user=app_ed@%") {
			t.Fatalf("ed25519 login through Warden failed:\n%s", out)
		}
		if n := e.db.QueryInt("select count(*) from mysql.global_priv where user = 'app_ed' and json_value(priv, '$.plugin') = 'ed25519'"); n != 1 {
			t.Fatal("app_ed is not an ed25519 account")
		}
	})

	// A shell without warden login reaches the proxy too, to read why it
	// cannot go on, in the protocol's own terms.
	t.Run("unbound client refused with the reason", func(t *testing.T) {
		out, _ := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: cli + ` -e "select 1"; echo "rc=$?"`})
		if !strings.Contains(out, "ERROR 1045 (28000): warden: no verified identity for this session; run 'warden login'") || !strings.Contains(out, "rc=1") {
			t.Fatalf("unbound client:\n%s", out)
		}
	})

	t.Run("masking in the mariadb client", func(t *testing.T) {
		out := e.sh(t, e.alice, fmt.Sprintf(`%s -e "select id, email, ssn, card, note from customers order by id; select ssn as x, lower(ssn) as y from customers"`, cli))
		noRaw(t, "mariadb", out)
		for _, want := range []string{"****", "[masked:email]", "[masked:credit_card]", "[masked:phone]"} {
			if !strings.Contains(out, want) {
				t.Fatalf("mariadb output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("exempt group sees clear values", func(t *testing.T) {
		out := e.sh(t, e.reader, fmt.Sprintf(`%s -N -e "select concat(email, '|', ssn) from customers where id = 1"`, cli))
		if !strings.Contains(out, rawEmail+"|"+rawSSN) {
			t.Fatalf("pii-reader does not see clear values:\n%s", out)
		}
	})

	t.Run("guardrails", func(t *testing.T) {
		before := tableCount()
		for _, tc := range []struct{ sql, want string }{
			{"DROP TABLE customers", `denied by rule "no-ddl"`},
			{"/*!50000 DROP TABLE customers */", `denied by rule "no-ddl"`},
			{"/*M!100100 DROP TABLE customers */", `denied by rule "no-ddl"`},
			{"DELETE FROM customers", `denied by rule "no-mass-delete"`},
			{"select load_file('/etc/passwd')", `denied by rule "no-file-access"`},
			{"select * from customers into outfile '/tmp/warden-out'", `denied by rule "no-file-access"`},
			{"call refund(1)", `denied by rule "no-refunds"`},
			{"create or replace table scratch (id int)", "statement refused: the MySQL grammar"},
			{"prepare s from 'delete from customers'", `denied by rule "no-mass-delete"`},
		} {
			out := e.sh(t, e.alice, fmt.Sprintf(`%s -e %q`, cli, tc.sql))
			if !strings.Contains(out, tc.want) {
				t.Fatalf("%q: output lacks %s:\n%s", tc.sql, tc.want, out)
			}
		}
		// The client splits at ";" itself; with another DELIMITER the
		// server gets one text holding two statements.
		out := e.sh(t, e.alice, fmt.Sprintf(`%s --force <<'SQL'
DELIMITER //
select 1; drop table customers//
DELIMITER ;
select 'still-usable';
SQL`, cli))
		if !strings.Contains(out, `denied by rule "no-ddl"`) || !strings.Contains(out, "still-usable") {
			t.Fatalf("multi-statement text:\n%s", out)
		}
		if got := tableCount(); got != before {
			t.Fatalf("customers has %d rows, had %d", got, before)
		}
		if n := e.db.QueryInt("select count(*) from information_schema.tables where table_schema = 'shop'"); n != 2 {
			t.Fatalf("shop has %d tables, want 2", n)
		}
	})

	t.Run("backslash escapes follow sql_mode", func(t *testing.T) {
		before := tableCount()
		out := e.sh(t, e.alice, fmt.Sprintf(`%s --force --comments <<'SQL'
SET sql_mode = 'NO_BACKSLASH_ESCAPES';
DELIMITER //
select 'a\'; drop table customers; # '
//
DELIMITER ;
select 'still-usable';
SQL`, cli))
		// Under NO_BACKSLASH_ESCAPES 'a\' ends the string: the DROP is code.
		if !strings.Contains(out, `denied by rule "no-ddl"`) || !strings.Contains(out, "still-usable") {
			t.Fatalf("NO_BACKSLASH_ESCAPES:\n%s", out)
		}
		out = e.sh(t, e.alice, fmt.Sprintf(`%s --force <<'SQL'
SET NAMES gbk;
select 'still-usable';
SQL
printf "select '\xbf\\\\'; drop table customers; -- '\n" | %s --default-character-set=gbk`, cli, cli))
		if !strings.Contains(out, "backslash and non-ASCII") || !strings.Contains(out, "still-usable") {
			t.Fatalf("gbk:\n%s", out)
		}
		if got := tableCount(); got != before {
			t.Fatalf("customers has %d rows, had %d", got, before)
		}
	})

	t.Run("load data local infile", func(t *testing.T) {
		out := e.sh(t, e.alice, fmt.Sprintf(`%s --local-infile=1 -e "load data local infile '/etc/passwd' into table scratch"`, cli))
		if !strings.Contains(out, `denied by rule "local-infile"`) {
			t.Fatalf("LOAD DATA LOCAL not denied:\n%s", out)
		}
		if n := e.db.QueryInt("select count(*) from shop.scratch"); n != 0 {
			t.Fatalf("scratch has %d rows", n)
		}
	})

	t.Run("ctrl-c kills the query", func(t *testing.T) {
		out := e.sh(t, e.alice, fmt.Sprintf(`start=$(date +%%s)
%s -e "select sleep(30)" & p=$!
sleep 3; kill -INT $p; wait $p
echo "elapsed=$(( $(date +%%s) - start ))"`, cli))
		var elapsed int
		if !scanLine(out, "elapsed=%d", &elapsed) || elapsed >= 20 {
			t.Fatalf("SELECT SLEEP(30) not stopped by Ctrl-C:\n%s", out)
		}
		// The client says "query killed" whether or not its KILL worked;
		// the server's error says it did.
		if !strings.Contains(out, "Query execution was interrupted") {
			t.Fatalf("no sign of the kill:\n%s", out)
		}
		// Someone else's connection cannot be killed through the
		// shared account.
		out = e.sh(t, e.alice, fmt.Sprintf(`%s -e "kill query 1"`, cli))
		if !strings.Contains(out, `was not opened through Warden`) {
			t.Fatalf("KILL of a foreign connection:\n%s", out)
		}
	})

	// The agent ends the session's connections on logout: the client is
	// told why, and the statement it was running is killed on the server,
	// which would otherwise run it on to its end.
	t.Run("logout ends a running statement", func(t *testing.T) {
		out := e.sh(t, e.alice, fmt.Sprintf(`start=$(date +%%s)
%s -e "select benchmark(1000000000000, md5('warden')) as warden_sleeper" & p=$!
sleep 3; warden logout >/dev/null; wait $p
echo "elapsed=$(( $(date +%%s) - start ))"`, cli))
		var elapsed int
		if !scanLine(out, "elapsed=%d", &elapsed) || elapsed >= 20 || !strings.Contains(out, "ERROR 1053") {
			t.Fatalf("logout did not end the statement's connection with a reason:\n%s", out)
		}
		// Killed, it is gone at once. BENCHMARK, unlike SLEEP, never
		// looks at its connection: left alone, it would run for hours.
		for i := 0; ; i++ {
			n := e.db.QueryInt("select count(*) from information_schema.processlist where info like '%warden_sleeper%' and info not like '%processlist%'")
			if n == 0 {
				break
			}
			if i == 50 {
				id := e.db.QueryInt("select id from information_schema.processlist where info like '%warden_sleeper%' and info not like '%processlist%' limit 1")
				e.db.Query(fmt.Sprintf("KILL QUERY %d", id)) // not to burn the CPU for the rest of the test
				t.Fatalf("the statement still runs on the server 5 s after the logout")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("client TLS", func(t *testing.T) {
		root := filepath.Join(filepath.Dir(e.Socket()), "client-ca.crt")
		out := e.sh(t, e.alice, fmt.Sprintf(`%[1]s --ssl -e "status" | grep -i "ssl"
%[1]s --ssl --ssl-verify-server-cert --ssl-ca=%[2]s -N -e "select email from customers where id = 1"`, cli, root))
		if !strings.Contains(out, "Cipher in use") || !strings.Contains(out, "[masked:email]") {
			t.Fatalf("no TLS to the agent, or no masking through it:\n%s", out)
		}
		other := harness.NewTestCA(t, "other").WriteCA(t, filepath.Join(e.Dir, "other-ca.crt"))
		out = e.sh(t, e.alice, fmt.Sprintf(`%s --ssl --ssl-verify-server-cert --ssl-ca=%s -e "select 1"`, cli, other))
		if !strings.Contains(strings.ToLower(out), "certificate") {
			t.Fatalf("verification against another authority did not fail on the certificate:\n%s", out)
		}
	})

	t.Run("password passthrough without credentials", func(t *testing.T) {
		legacy := fmt.Sprintf("mariadb --no-defaults -h 127.0.0.1 -P %d --connect-timeout=10 shop", e.legacyPort)
		out := e.sh(t, e.alice, fmt.Sprintf(`%[1]s -u person -pperson-secret -N -e "select current_user(), ssn from customers where id = 1"
%[1]s -u person -pwrong -e "select 1"`, legacy))
		if !strings.Contains(out, "person@%\t****") || !strings.Contains(out, "Access denied") {
			t.Fatalf("passthrough login:\n%s", out)
		}
	})

	t.Run("go-sql-driver", func(t *testing.T) {
		bin := harness.TestClient(t, "mysqlclient")
		root := filepath.Join(filepath.Dir(e.Socket()), "client-ca.crt")
		dsn := fmt.Sprintf("whoever@tcp(127.0.0.1:%d)/shop", e.db.Port)
		out := e.sh(t, e.alice, fmt.Sprintf(`%[1]s "%[2]s" mask; %[1]s "%[2]s" deny; %[1]s "%[2]s?multiStatements=true" multi; %[1]s "%[2]s?tls=warden" whoami %[3]s; %[1]s "%[2]s?tls=skip-verify" whoami; %[1]s "whoever@tcp(127.0.0.1:%[4]d)/shop" whoami`,
			bin, dsn, root, e.edPort))
		noRaw(t, "go-sql-driver", out)
		for _, want := range []string{
			"binary: 1|[masked:email]|****|[masked:credit_card]|call [masked:phone]|2",
			"alias: ****", "text: [masked:email]",
			`prepare: Error 1227 (42000): warden: DELETE denied by rule "no-mass-delete"`,
			`exec: Error 1227 (42000): warden: DROP denied by rule "no-ddl"`,
			"count: 2 <nil>",
			`multi: Error 1227 (42000): warden: DROP denied by rule "no-ddl"`,
			"user: app_ed@%",
		} {
			if !strings.Contains(out, want) {
				t.Fatalf("go-sql-driver output lacks %q:\n%s", want, out)
			}
		}
		// TLS verifying the agent's name (VERIFY_IDENTITY), and TLS
		// without verification (REQUIRED), both logged in as app.
		if n := strings.Count(out, "user: app@%"); n != 2 {
			t.Fatalf("go-sql-driver over TLS: %d logins as app, want 2:\n%s", n, out)
		}
	})

	t.Run("db.query events", func(t *testing.T) {
		q := collectorclient.Query{Type: string(event.DBQuery), User: "alice"}
		denied := e.WaitEvent(q, "denied DROP", func(ev *event.Event) bool {
			return ev.Decision != nil && ev.Decision.Action == event.Deny && ev.Decision.Rule == "no-ddl" && ev.Target != nil && ev.Target.Name == "shop-db"
		})
		if denied.Identity == nil || denied.Identity.Sub != "alice" || denied.Identity.SessionID == "" {
			t.Fatalf("identity %+v", denied.Identity)
		}
		if denied.Process == nil || denied.Process.ExecID == "" || len(denied.Process.Ancestors) == 0 {
			t.Fatalf("process without lineage: %+v", denied.Process)
		}
		results := collectorclient.Query{Type: string(event.DBResult), User: "alice"}
		var sel *event.Event
		res := e.WaitEvent(results, "masked select's result", func(ev *event.Event) bool {
			if ev.Data["masked_columns"] == nil {
				return false
			}
			id, _ := ev.Data["request_id"].(string)
			for _, qe := range e.Events(q) {
				s, _ := qe.Data["statement"].(string)
				if qe.ID == id && strings.Contains(s, "select `id` , `email` , `ssn` , `card` , `note` from `customers`") {
					sel = &qe
					return true
				}
			}
			return false
		})
		if fmt.Sprint(res.Data["rows_returned"]) != "2" || sel.Data["fingerprint"] == "" || sel.Decision.Action != event.Allow || sel.Data["db_user"] != "app" {
			t.Fatalf("select event data %v, result %v, decision %+v", sel.Data, res.Data, sel.Decision)
		}
		if sel.Process == nil || !strings.HasSuffix(sel.Process.Binary, "mariadb") {
			t.Fatalf("process %+v", sel.Process)
		}
		all := e.Events(collectorclient.Query{})
		b, _ := json.Marshal(all)
		noRaw(t, "events", string(b))
		for _, pw := range []string{"vaulted-app-secret", "vaulted-ed-secret", "person-secret"} {
			if strings.Contains(string(b), pw) {
				t.Fatal("a password reached the events")
			}
		}
	})

	t.Run("nothing sensitive in the agent's log", func(t *testing.T) {
		out := e.Agent().Output()
		noRaw(t, "wardend log", out)
		if strings.Contains(out, "vaulted-app-secret") || strings.Contains(out, "vaulted-ed-secret") {
			t.Fatal("password in the agent's log")
		}
	})
}

// TestMariaDBUpstreamTLS runs the login over TLS to a real MariaDB with
// TLS on, its certificate issued by a CA made up for the test:
//
//	tls-my    127.0.0.1:port  credentials, verify-full with the right CA
//	rogue-my  forwarder       credentials, verify-full against another CA
//	own-my    forwarder       no credentials, target-level tls verify-full:
//	                          the client's own login, over TLS both hops
func TestMariaDBUpstreamTLS(t *testing.T) {
	e := &myEnv{Env: harness.NewEnv(t)}
	ca := harness.NewTestCA(t, "warden e2e CA")
	rogue := harness.NewTestCA(t, "rogue CA")
	e.db = e.StartMariaDBWith(harness.MariaDBOptions{TLS: ca.Issue(t, "127.0.0.1", "my.test")})
	e.db.Exec(`CREATE DATABASE shop;
CREATE USER app@'%' IDENTIFIED BY 'vaulted-app-secret';
CREATE USER person@'%' IDENTIFIED BY 'person-secret';
GRANT ALL ON shop.* TO app@'%', person@'%';`)
	caFile := ca.WriteCA(t, filepath.Join(e.Dir, "ca.pem"))
	rogueFile := rogue.WriteCA(t, filepath.Join(e.Dir, "rogue.pem"))
	secret := filepath.Join(e.Dir, "app.secret")
	os.WriteFile(secret, []byte("vaulted-app-secret\n"), 0o600)
	rogueAt, ownAt := e.Forward(e.db.Addr()), e.Forward(e.db.Addr())
	e.StartAgent(fmt.Sprintf(`targets:
  - name: tls-my
    protocol: mysql
    address: 127.0.0.1:%[1]d
    credentials:
      username: app
      password_file: %[2]s
      tls: {mode: verify-full, ca_file: %[3]s}
  - name: rogue-my
    protocol: mysql
    address: 127.0.0.1:%[4]d
    credentials:
      username: app
      password_file: %[2]s
      tls: {mode: verify-full, ca_file: %[5]s}
  - name: own-my
    protocol: mysql
    address: 127.0.0.1:%[6]d
    tls: {mode: verify-full, ca_file: %[3]s}
access:
  - groups: [engineering]
    targets: [tls-my, rogue-my, own-my]
`, e.db.Port, secret, caFile, rogueAt, rogueFile, ownAt))
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	const show = `-N -e "select concat(current_user(), ' ', variable_value) from information_schema.session_status where variable_name = 'Ssl_version'"`
	out := e.sh(t, alice, fmt.Sprintf(`%s %s
%s %s
%s --skip-ssl %s
%s -u person -pperson-secret %s`,
		e.cli(e.db.Port), show, e.cli(rogueAt), show, e.cli(rogueAt), show,
		fmt.Sprintf("mariadb --no-defaults -h 127.0.0.1 -P %d --connect-timeout=10 shop", ownAt), show))
	for _, want := range []string{"app@% TLSv1.3", "person@% TLSv1.3", "cannot open a verified TLS connection to target rogue-my"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}
