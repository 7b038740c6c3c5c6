package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// Open connections follow the binding (docs/sessions.md): expiry, logout
// and a policy that takes a target away close what is open, in the
// protocol's words, within a second; nothing sent afterwards reaches the
// server.

// lifeEnv is an agent in front of a real PostgreSQL server (orders-db,
// with injected credentials, logging every statement it receives), a
// line echo server (echo, relayed as tcp) and a real OpenSSH server (ssh,
// declared as a tcp target so it is relayed as bytes: its client logs in
// with a key of its own, which the SSH codec would not pass on), all open
// to engineering.
type lifeEnv struct {
	*harness.Env
	pg     *harness.Postgres
	echo   *harness.Server
	sshd   *harness.SSHD
	secret string
	shells int
}

func newLifeEnv(t *testing.T) *lifeEnv {
	testenv.RequireCommand(t, "psql")
	testenv.RequireCommand(t, "ssh")
	e := &lifeEnv{Env: harness.NewEnv(t)}
	e.pg = e.StartPostgres()
	e.secret = e.VaultedApp(e.pg)
	e.pg.LogStatements()
	e.echo = e.Serve("tcp4", "127.0.0.1:0")
	e.sshd = e.StartSSHD(nobody, nobody)
	e.StartCollector()
	e.StartAgent(e.policy(true))
	return e
}

// policy gives engineering echo and ssh, and orders-db too if orders.
func (e *lifeEnv) policy(orders bool) string {
	reach := "[echo, ssh]"
	if orders {
		reach = "[orders-db, echo, ssh]"
	}
	return fmt.Sprintf(`targets:
  - name: orders-db
    protocol: postgres
    address: 127.0.0.1:%d
    credentials:
      username: app
      password_file: %s
  - name: echo
    protocol: tcp
    address: 127.0.0.1:%d
  - name: ssh
    protocol: tcp
    address: %s
access:
  - groups: [engineering]
    targets: %s
`, e.pg.Port, e.secret, e.echo.Port(), e.sshd.Addr(), reach)
}

// appBackends counts the server's sessions of the injected user: the
// psql connections through Warden.
func (e *lifeEnv) appBackends() int64 {
	return e.pg.QueryInt("postgres", "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
}

// boundShell is a shell of nobody's, logged in with a token, holding open
// a psql fed from a FIFO and a bash /dev/tcp connection to echo, and, if
// asked, an ssh session to the sshd running a long command. On the test's
// signal it runs an action (e.g. warden logout), then says whether the tcp
// connection still answers.
type boundShell struct {
	t    *testing.T
	dir  string
	in   *os.File // psql's stdin
	ctl  *os.File // the signal
	once sync.Once
	done chan error
	mu   sync.Mutex
	out  strings.Builder
}

func (e *lifeEnv) startShell(t *testing.T, token, action string) *boundShell {
	t.Helper()
	return e.startShellWith(t, token, action, false)
}

// startShellWith is startShell, with an ssh session open too if withSSH:
// its output goes to ssh.out, its exit status to ssh.rc when it ends.
func (e *lifeEnv) startShellWith(t *testing.T, token, action string, withSSH bool) *boundShell {
	t.Helper()
	e.shells++
	dir := filepath.Join(e.Dir, fmt.Sprintf("life-%d", e.shells))
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	sh := &boundShell{t: t, dir: dir, done: make(chan error, 1)}
	for _, f := range []struct {
		name string
		to   **os.File
	}{{"psql.in", &sh.in}, {"ctl", &sh.ctl}} {
		p := filepath.Join(dir, f.name)
		if err := syscall.Mkfifo(p, 0o666); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, 0o666)
		// Read-write, so that opening never waits for the shell; psql
		// sees EOF once this, the only writer, closes.
		w, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		*f.to = w
		t.Cleanup(func() { w.Close() })
	}
	conn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=orders user=whoever sslmode=disable connect_timeout=10", e.pg.Port)
	ssh := ":"
	if withSSH {
		// The remote command never ends by itself: only a closed
		// connection ends the session.
		ssh = fmt.Sprintf(`{ %s </dev/null >%s/ssh.out 2>&1; echo $? >%[2]s/ssh.rc; } &`,
			e.sshd.ClientCommand("echo ssh-up; exec sleep 1000"), dir)
	}
	script := fmt.Sprintf(`warden login --token-file %[1]s >/dev/null || exit 9
psql "%[2]s" -X -At < %[3]s/psql.in > %[3]s/psql.out 2>&1 &
exec 3<>/dev/tcp/127.0.0.1/%[4]d || exit 8
echo hello >&3
read -r line <&3 && echo "$line" > %[3]s/tcp.ready
%[6]s
read -r _ < %[3]s/ctl
%[5]s
echo again >&3 2>/dev/null
if read -t 5 -r line <&3; then echo "open:$line"; else echo "closed:$?"; fi > %[3]s/tcp.after
wait
`, token, conn, dir, e.echo.Port(), action, ssh)
	cmd := e.Command(harness.Shell{UID: nobody, GID: nobody, Script: script})
	cmd.Stdout, cmd.Stderr = lockedBuilder{&sh.mu, &sh.out}, lockedBuilder{&sh.mu, &sh.out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { sh.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-sh.done:
		case <-time.After(10 * time.Second):
		}
	})
	e.Eventually("shell logged in, psql connected and tcp echoed", func() error {
		select {
		case err := <-sh.done:
			sh.done <- err
			t.Fatalf("shell ended early (%v):\n%s", err, sh.output())
		default:
		}
		if b, err := os.ReadFile(filepath.Join(dir, "tcp.ready")); err != nil || strings.TrimSpace(string(b)) != "echo:hello" {
			return fmt.Errorf("tcp not ready: %q %v", b, err)
		}
		if n := e.appBackends(); n != 1 {
			return fmt.Errorf("%d psql backends", n)
		}
		if withSSH {
			if rc, err := os.ReadFile(filepath.Join(dir, "ssh.rc")); err == nil {
				out, _ := os.ReadFile(filepath.Join(dir, "ssh.out"))
				t.Fatalf("ssh ended before the test began (exit %s):\n%s\nsshd:\n%s", bytes.TrimSpace(rc), out, e.sshd.Output())
			}
			if out, err := os.ReadFile(filepath.Join(dir, "ssh.out")); err != nil || !strings.Contains(string(out), "ssh-up") {
				return fmt.Errorf("ssh not up: %q %v", out, err)
			}
		}
		return nil
	})
	return sh
}

// sshEnded waits up to within for the shell's ssh client to end and
// returns its exit status and output.
func (sh *boundShell) sshEnded(within time.Duration) (rc, out string) {
	sh.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if b, err := os.ReadFile(filepath.Join(sh.dir, "ssh.rc")); err == nil && len(bytes.TrimSpace(b)) > 0 {
			o, _ := os.ReadFile(filepath.Join(sh.dir, "ssh.out"))
			return string(bytes.TrimSpace(b)), string(o)
		}
		if time.Now().After(deadline) {
			o, _ := os.ReadFile(filepath.Join(sh.dir, "ssh.out"))
			sh.t.Fatalf("the ssh client still runs %v later:\n%s", within, o)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lockedBuilder struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedBuilder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (sh *boundShell) output() string {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.out.String()
}

// sql sends psql a statement.
func (sh *boundShell) sql(stmt string) {
	sh.t.Helper()
	if _, err := sh.in.WriteString(stmt + "\n"); err != nil {
		sh.t.Fatal(err)
	}
}

// signal has the shell run its action (once).
func (sh *boundShell) signal() {
	sh.t.Helper()
	sh.once.Do(func() {
		if _, err := sh.ctl.WriteString("go\n"); err != nil {
			sh.t.Fatal(err)
		}
	})
}

// finish ends psql's input, signals the shell if that is still to do and
// waits for it; it returns psql's output and what the tcp check found.
func (sh *boundShell) finish() (psqlOut, tcpAfter string) {
	sh.t.Helper()
	sh.in.Close()
	sh.signal()
	select {
	case <-sh.done:
	case <-time.After(time.Minute):
		sh.t.Fatalf("shell did not end:\n%s", sh.output())
	}
	p, _ := os.ReadFile(filepath.Join(sh.dir, "psql.out"))
	tc, _ := os.ReadFile(filepath.Join(sh.dir, "tcp.after"))
	return string(p), strings.TrimSpace(string(tc))
}

// tokenExpiry reads the exp claim of the token in file.
func tokenExpiry(t *testing.T, file string) time.Time {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.TrimSpace(string(raw)), ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWS: %q", raw)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return time.Unix(claims.Exp, 0)
}

// backendGone polls the server until the psql backend is gone and
// returns when it saw it gone.
func (e *lifeEnv) backendGone(what string) time.Time {
	e.T.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if e.appBackends() == 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("%s: the psql backend is still connected", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closedEvent waits for the event of type typ of the session of sub whose
// connections_closed lists n connections, and returns their targets.
func (e *lifeEnv) closedEvent(typ event.Type, sub string, n int) []string {
	e.T.Helper()
	ev := e.WaitEvent(collectorclient.Query{Type: string(typ), Limit: 100}, string(typ)+" of "+sub, func(ev *event.Event) bool {
		cs, _ := ev.Data["connections_closed"].([]any)
		return ev.Identity != nil && ev.Identity.Sub == sub && len(cs) == n
	})
	var targets []string
	for _, c := range ev.Data["connections_closed"].([]any) {
		targets = append(targets, c.(map[string]any)["target"].(string))
	}
	return targets
}

func TestLifetime(t *testing.T) {
	e := newLifeEnv(t)

	t.Run("expiry closes psql and tcp within a second, with the message", func(t *testing.T) {
		token := e.Token(devidp.IssueOptions{Sub: "alice", TTL: 8 * time.Second})
		exp := tokenExpiry(t, token)
		sh := e.startShell(t, token, ":")
		sh.sql("select 'before-expiry';")
		e.Eventually("before-expiry at the server", func() error {
			if !strings.Contains(e.pg.Log(), "before-expiry") {
				return fmt.Errorf("not logged")
			}
			return nil
		})
		if time.Now().After(exp.Add(-time.Second)) {
			t.Fatalf("setup took past the token's expiry (%s); the test cannot tell what closed the connection", exp)
		}
		gone := e.backendGone("expiry")
		if gone.Before(exp) {
			t.Fatalf("psql's backend went at %s, before the expiry %s", gone.Format(time.RFC3339Nano), exp)
		}
		if late := gone.Sub(exp); late > time.Second {
			t.Errorf("psql's backend went %v after the expiry, want within 1s", late)
		}
		sh.sql("select 'after-expiry';")
		psqlOut, tcpAfter := sh.finish()
		if !strings.Contains(psqlOut, "warden: session expired; run 'warden login'") {
			t.Errorf("psql did not show the expiry message:\n%s", psqlOut)
		}
		if strings.Contains(e.pg.Log(), "after-expiry") {
			t.Errorf("the statement sent after the expiry reached the server:\n%s", e.pg.Log())
		}
		if !strings.HasPrefix(tcpAfter, "closed") {
			t.Errorf("the relayed tcp connection survived the expiry: %q", tcpAfter)
		}
		targets := e.closedEvent(event.SessionExpired, "alice", 2)
		if !(slices.Contains(targets, "orders-db") && slices.Contains(targets, "echo")) {
			t.Errorf("session.expired lists %v, want orders-db and echo", targets)
		}
	})

	t.Run("logout closes the shell's psql, ssh and tcp", func(t *testing.T) {
		token := e.Token(devidp.IssueOptions{Sub: "bob"})
		sh := e.startShellWith(t, token, "warden logout >/dev/null", true)
		start := time.Now()
		sh.signal() // warden logout
		// ssh is relayed as tcp: the relay just closes, and the client, whose
		// remote command would run for 1000 s, ends on the lost
		// connection with its own error status, 255.
		rc, sshOut := sh.sshEnded(10 * time.Second)
		t.Logf("ssh ended %v after the signal to log out:\n%s", time.Since(start).Round(time.Millisecond), sshOut)
		if rc != "255" {
			t.Errorf("ssh exited %s, want 255 (connection lost):\n%s", rc, sshOut)
		}
		e.backendGone("logout")
		sh.sql("select 'after-logout';")
		psqlOut, tcpAfter := sh.finish()
		if !strings.Contains(psqlOut, "warden: you logged out") {
			t.Errorf("psql did not show the logout message:\n%s", psqlOut)
		}
		if strings.Contains(e.pg.Log(), "after-logout") {
			t.Errorf("a statement sent after the logout reached the server")
		}
		if !strings.HasPrefix(tcpAfter, "closed") {
			t.Errorf("the relayed tcp connection survived the logout: %q", tcpAfter)
		}
		targets := e.closedEvent(event.SessionLogout, "bob", 3)
		if !(slices.Contains(targets, "orders-db") && slices.Contains(targets, "echo") && slices.Contains(targets, "ssh")) {
			t.Errorf("session.logout lists %v, want orders-db, echo and ssh", targets)
		}
	})

	t.Run("a policy that takes the target away closes it, not the others", func(t *testing.T) {
		token := e.Token(devidp.IssueOptions{Sub: "alice"})
		sh := e.startShell(t, token, ":")
		e.WritePolicy(e.policy(false))
		e.backendGone("revocation")
		sh.sql("select 'after-revocation';")
		psqlOut, tcpAfter := sh.finish()
		if !strings.Contains(psqlOut, "warden: access to target orders-db revoked by policy") {
			t.Errorf("psql did not show the revocation:\n%s", psqlOut)
		}
		if strings.Contains(e.pg.Log(), "after-revocation") {
			t.Errorf("a statement sent after the revocation reached the server")
		}
		if tcpAfter != "open:echo:again" {
			t.Errorf("the connection to echo, still allowed, did not stay open: %q", tcpAfter)
		}
		targets := e.closedEvent(event.AccessRevoked, "alice", 1)
		if len(targets) != 1 || targets[0] != "orders-db" {
			t.Errorf("access.revoked lists %v", targets)
		}
	})
}
