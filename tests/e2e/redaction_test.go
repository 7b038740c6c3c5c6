package e2e

import (
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// secretForm is one way a secret reaches a command line.
type secretForm struct {
	name string
	// cmd is a bash command line; %[1]s is the secret, %[2]d the
	// PostgreSQL target's port.
	cmd string
	// binary is the base name of the program whose process.exec must
	// show want, in this order (binary, flags and markers stay
	// attributable).
	binary string
	want   []string
}

// A closed port: clients that need no server fail fast, after their exec.
const closedPort = "1"

var secretForms = []secretForm{
	// Connection strings and URLs, through the proxy to a real server.
	{"libpq password=", `psql 'host=127.0.0.1 port=%[2]d user=app password=%[1]s dbname=postgres' -c 'select 1'`,
		"psql", []string{"host=127.0.0.1 port=%[2]d user=app password=[redacted:password] dbname=postgres", "-c", "select 1"}},
	{"postgres URL", `psql postgresql://app:%[1]s@127.0.0.1:%[2]d/postgres -c 'select 2'`,
		"psql", []string{"postgresql://app:[redacted:password]@127.0.0.1:%[2]d/postgres"}},
	{"JDBC ;password=", `/bin/echo 'jdbc:sqlserver://db:1433;user=etl;password=%[1]s;encrypt=true'`,
		"echo", []string{"jdbc:sqlserver://db:1433;user=etl;password=[redacted:password];encrypt=true"}},
	{"redis URL", `redis-cli -u redis://default:%[1]s@127.0.0.1:` + closedPort + ` ping`,
		"redis-cli", []string{"-u", "redis://default:[redacted:password]@127.0.0.1:" + closedPort}},

	// Well-known secret flags.
	{"mariadb -pSECRET", `mariadb --protocol=tcp -h 127.0.0.1 -P ` + closedPort + ` -uroot -p%[1]s -e 'select 1'`,
		"mariadb", []string{"-uroot", "-p[redacted:password]", "-e", "select 1"}},
	{"mariadb --password=", `mariadb --protocol=tcp -h 127.0.0.1 -P ` + closedPort + ` --password=%[1]s -e 'select 1'`,
		"mariadb", []string{"--password=[redacted:password]"}},
	{"mariadb --password next", `timeout 20 mariadb --protocol=tcp -h 127.0.0.1 -P ` + closedPort + ` --password %[1]s </dev/null`,
		"mariadb", []string{"--password", "[redacted:password]"}},
	{"sshpass -p", `sshpass -p %[1]s true`,
		"sshpass", []string{"-p", "[redacted:password]", "true"}},
	{"redis-cli -a", `redis-cli -h 127.0.0.1 -p ` + closedPort + ` -a %[1]s --no-auth-warning ping`,
		"redis-cli", []string{"-a", "[redacted:password]", "--no-auth-warning", "ping"}},
	{"redis-cli --pass", `redis-cli -h 127.0.0.1 -p ` + closedPort + ` --pass %[1]s ping`,
		"redis-cli", []string{"--pass", "[redacted:password]", "ping"}},
	{"curl -u", `curl -s -u alice:%[1]s http://127.0.0.1:` + closedPort + `/`,
		"curl", []string{"-u", "alice:[redacted:password]"}},
	{"curl --user", `curl -s --user bob:%[1]s http://127.0.0.1:` + closedPort + `/`,
		"curl", []string{"--user", "bob:[redacted:password]"}},
	{"curl -H Authorization", `curl -s -H 'Authorization: Bearer %[1]s' http://127.0.0.1:` + closedPort + `/`,
		"curl", []string{"-H", "Authorization: Bearer [redacted:token]"}},
	{"curl --header", `curl -s --header 'X-Api-Key: %[1]s' http://127.0.0.1:` + closedPort + `/`,
		"curl", []string{"--header", "X-Api-Key: [redacted:key]"}},
	{"htpasswd -b", `htpasswd -nbB bob %[1]s`,
		"htpasswd", []string{"-nbB", "bob", "[redacted:password]"}},
	{"--token next", `/bin/echo --token %[1]s`, "echo", []string{"--token", "[redacted:token]"}},
	{"--secret=", `/bin/echo --secret=%[1]s`, "echo", []string{"--secret=[redacted:secret]"}},
	{"--api-key next", `/bin/echo --api-key %[1]s`, "echo", []string{"--api-key", "[redacted:key]"}},
	{"--db-password=", `/bin/echo --db-password=%[1]s`, "echo", []string{"--db-password=[redacted:password]"}},

	// Environment assignments as arguments.
	{"env PGPASSWORD", `env PGPASSWORD=%[1]s true`, "env", []string{"PGPASSWORD=[redacted:password]", "true"}},
	{"env MYSQL_PWD", `env MYSQL_PWD=%[1]s true`, "env", []string{"MYSQL_PWD=[redacted:password]"}},
	{"env AWS_SECRET_ACCESS_KEY", `env AWS_SECRET_ACCESS_KEY=%[1]s true`, "env", []string{"AWS_SECRET_ACCESS_KEY=[redacted:secret]"}},
	{"sh -c assignment", `sh -c 'PGPASSWORD=%[1]s psql -h 127.0.0.1 -p %[2]d -U app -d postgres -c "select 3"'`,
		"sh", []string{"-c", `PGPASSWORD=[redacted:password] psql -h 127.0.0.1 -p %[2]d -U app -d postgres -c "select 3"`}},

	// SQL inside -c, --command, -e and --execute.
	{"PASSWORD in -c", `psql -h 127.0.0.1 -p %[2]d -U app -d postgres -c "create role r_e2e login password '%[1]s'"`,
		"psql", []string{"-c", "create role r_e2e login password '[redacted:password]'"}},
	{"ENCRYPTED PASSWORD in --command", `psql -h 127.0.0.1 -p %[2]d -U app -d postgres --command="alter role r_e2e with encrypted password '%[1]s'"`,
		"psql", []string{"--command=alter role r_e2e with encrypted password '[redacted:password]'"}},
	{"IDENTIFIED BY in -e", `mariadb --protocol=tcp -h 127.0.0.1 -P ` + closedPort + ` -e "CREATE USER u IDENTIFIED BY '%[1]s'"`,
		"mariadb", []string{"-e", "CREATE USER u IDENTIFIED BY '[redacted:password]'"}},
	{"SET PASSWORD in --execute", `mariadb --protocol=tcp -h 127.0.0.1 -P ` + closedPort + ` --execute="SET PASSWORD FOR u = '%[1]s'"`,
		"mariadb", []string{"--execute=SET PASSWORD FOR u = '[redacted:password]'"}},
}

// detectorSecrets are values pkg/masking's detectors recognise, given to
// /bin/echo one an argument; the secret strings must not appear, the
// markers must.
var detectorSecrets = []struct{ arg, marker string }{
	{"eyJhbGciOiJIUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"redact-e2e-jwt"}`)) + ".cmVkYWN0LWUyZS1zaWduYXR1cmU", "[redacted:jwt]"},
	{"AKIAREDACTE2E0TEST42", "[redacted:aws_access_key]"},
	{"-----BEGIN RSA PRIVATE KEY-----\ncmVkYWN0LWUyZS1wcml2YXRlLWtleQ==\n-----END RSA PRIVATE KEY-----", "[redacted:private_key]"},
	{"4929172803594180", "[redacted:credit_card]"},
}

// Every form of secret on a command line, run for real in a bound shell:
// not one secret reaches an event (queried through the CLI), the spool
// or the agent's log, and the commands stay attributable.
func TestSecretsNeverReachTheAuditLog(t *testing.T) {
	for _, c := range []string{"psql", "mariadb", "redis-cli", "curl", "sshpass", "htpasswd", "timeout"} {
		testenv.RequireCommand(t, c)
	}
	e := &identityEnv{Env: harness.NewEnv(t)}
	pg := e.StartPostgres()
	pg.Exec("postgres", "CREATE ROLE app LOGIN CREATEROLE PASSWORD 'vaulted-app-secret'")
	vault := filepath.Join(e.Dir, "pg.secret")
	if err := os.WriteFile(vault, []byte("vaulted-app-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A program of the site's own, whose --license the policy says is a
	// secret; a script, so the kernel runs it as /bin/sh PATH ARGS.
	acmectl := filepath.Join(e.Dir, "bin", "acmectl")
	if err := os.MkdirAll(filepath.Dir(acmectl), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(acmectl, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.StartAgent(fmt.Sprintf(`targets:
  - name: pg
    protocol: postgres
    address: %s
    credentials:
      username: app
      password_file: %s
access:
  - groups: [engineering]
    targets: [pg]
redaction:
  binaries:
    - names: [acmectl]
      flags: [--license]
      kind: license
  patterns:
    - name: acme-key
      regex: 'acme_[a-z0-9]{12}'
`, pg.Addr(), vault))
	forms := append(slices.Clone(secretForms),
		secretForm{"policy binary flag", acmectl + " --license %[1]s", "acmectl", []string{"--license", "[redacted:license]"}},
		secretForm{"policy pattern", "/bin/echo key=acme_%[1]s", "echo", []string{"key=[redacted:acme-key]"}},
	)

	// Each form gets a secret of its own, so a leak names its form.
	var script strings.Builder
	secrets := map[string]string{}
	for i, f := range forms {
		s := fmt.Sprintf("s3cr3t%02dxqzz", i) // 12 of [a-z0-9], for the policy pattern too
		secrets[s] = f.name
		fmt.Fprintf(&script, "%s\n", fmt.Sprintf(f.cmd, s, pg.Port))
	}
	for _, d := range detectorSecrets {
		fmt.Fprintf(&script, "/bin/echo %s\n", shellQuote(d.arg))
		for _, part := range strings.FieldsFunc(d.arg, func(r rune) bool { return r == '.' || r == '\n' }) {
			if !strings.HasPrefix(part, "-----") && part != "eyJhbGciOiJIUzI1NiJ9" {
				secrets[part] = "detector"
			}
		}
	}
	script.WriteString("/bin/echo redaction-e2e-done\n")
	formsFile := filepath.Join(e.Dir, "forms.sh")
	if err := os.WriteFile(formsFile, []byte(script.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	out := e.MustRun(harness.Shell{UID: nobody, GID: nobody, Script: e.login(alice) + "export PGCONNECT_TIMEOUT=10; . " + formsFile})
	for _, want := range []string{"CREATE ROLE", "ALTER ROLE", "redaction-e2e-done"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the shell's output lacks %q: a command did not run as meant:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "(1 row)"); n != 3 {
		t.Fatalf("%d of the 3 selects through the proxy answered:\n%s", n, out)
	}

	// The last command's exit follows every other event in the chain.
	e.WaitEvent(collectorclient.Query{Type: string(event.ProcessExit), User: "alice", Limit: 1000}, "exit of the last command", func(ev *event.Event) bool {
		return ev.Process != nil && slices.Contains(ev.Process.Args, "redaction-e2e-done")
	})
	raw := e.cli(t, "events", "--json", "--limit", "10000")
	evs := decodeLines(t, raw)

	// Nowhere: not in the events, the spool or the agent's log.
	places := map[string]string{"warden events --json": raw, "the agent's log": e.Agent().Output()}
	filepath.WalkDir(filepath.Join(e.Dir, "spool"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(path)
			places["spool file "+filepath.Base(path)] = string(b)
		}
		return nil
	})
	if len(places) < 3 {
		t.Fatalf("no spool files under %s", filepath.Join(e.Dir, "spool"))
	}
	for where, text := range places {
		for s, form := range secrets {
			if strings.Contains(text, s) {
				i := strings.Index(text, s)
				t.Errorf("the secret of %q is in %s: …%s…", form, where, text[max(0, i-120):min(len(text), i+len(s)+40)])
			}
		}
	}

	// Attributable: each form's process.exec shows its binary, flags and
	// markers.
	execs := map[string][][]string{}
	queries := 0
	for _, ev := range evs {
		switch {
		case ev.Type == event.ProcessExec && ev.Process != nil:
			b := filepath.Base(ev.Process.Binary)
			execs[b] = append(execs[b], ev.Process.Args)
		case ev.Type == event.DBQuery && ev.Process != nil && filepath.Base(ev.Process.Binary) == "psql":
			queries++
			for _, a := range ev.Process.Ancestors {
				if a.Binary == "" {
					t.Errorf("db.query ancestor without a binary: %+v", ev.Process.Ancestors)
				}
			}
		}
	}
	if queries < 4 {
		t.Errorf("%d db.query events from psql; the forms through the proxy did not all run", queries)
	}
	for _, f := range forms {
		want := make([]string, len(f.want))
		for i, w := range f.want {
			want[i] = strings.ReplaceAll(w, "%[2]d", fmt.Sprint(pg.Port))
		}
		if !slices.ContainsFunc(execs[f.binary], func(args []string) bool { return inOrder(args, want) }) {
			t.Errorf("%s: no process.exec of %s with %q; got %q", f.name, f.binary, want, execs[f.binary])
		}
	}
	for _, d := range detectorSecrets {
		if !slices.ContainsFunc(execs["echo"], func(args []string) bool { return slices.Contains(args, d.marker) }) {
			t.Errorf("no process.exec of echo with %s", d.marker)
		}
	}
}

// inOrder reports whether want appears in args in order.
func inOrder(args, want []string) bool {
	i := 0
	for _, a := range args {
		if i < len(want) && a == want[i] {
			i++
		}
	}
	return i == len(want)
}

// shellQuote single-quotes s for bash; newlines stay literal.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// pprof is off unless the agent config turns it on; /metrics is served
// either way.
func TestPprofOptIn(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("pprof %v", on), func(t *testing.T) {
			e := harness.NewEnv(t)
			opts := harness.AgentOptions{}
			if on {
				opts.Config = "pprof: true\n"
			}
			e.StartAgentWith("targets: []\n", opts)
			c := &http.Client{Transport: &http.Transport{DialContext: e.NS.DialContext}, Timeout: 30 * time.Second}
			want := map[string]int{"/metrics": http.StatusOK, "/debug/pprof/": http.StatusNotFound, "/debug/pprof/goroutine?debug=1": http.StatusNotFound}
			if on {
				want["/debug/pprof/"], want["/debug/pprof/goroutine?debug=1"] = http.StatusOK, http.StatusOK
			}
			for path, code := range want {
				var got int
				// The metrics listener starts beside the control socket
				// StartAgentWith waited for.
				e.Eventually("metrics listener", func() error {
					resp, err := c.Get("http://" + harness.MetricsAddr + path)
					if err != nil {
						return err
					}
					resp.Body.Close()
					got = resp.StatusCode
					return nil
				})
				if got != code {
					t.Errorf("GET %s: %d, want %d", path, got, code)
				}
			}
		})
	}
}
