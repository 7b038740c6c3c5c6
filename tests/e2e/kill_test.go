package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// killEnv is an agent protecting a PostgreSQL target for engineering, and
// a collector whose --killers is harness.KillerGroup.
type killEnv struct {
	*harness.Env
	pg       *harness.Postgres
	alice    string // token files
	sam      string // a SOC analyst, in the killers group
	mallory  string // outside it
	sessions int
}

func newKillEnv(t *testing.T) *killEnv {
	testenv.RequireCommand(t, "psql")
	testenv.RequireCommand(t, "sudo")
	e := &killEnv{Env: harness.NewEnv(t)}
	e.pg = e.StartPostgres()
	secret := e.VaultedApp(e.pg)
	e.StartAgent(fmt.Sprintf(`targets:
  - name: orders-db
    protocol: postgres
    address: 127.0.0.1:%d
    credentials:
      username: app
      password_file: %s
access:
  - groups: [engineering]
    targets: [orders-db]
`, e.pg.Port, secret))
	e.alice = e.Token(devidp.IssueOptions{Sub: "alice"})
	e.sam = e.Token(devidp.IssueOptions{Sub: "sam", Email: "sam@corp.example", Groups: []string{"engineering", harness.KillerGroup}})
	e.mallory = e.Token(devidp.IssueOptions{Sub: "mallory"})
	return e
}

func (e *killEnv) conn() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=orders user=whoever sslmode=disable connect_timeout=10", e.pg.Port)
}

// session is a root shell bound to a person, left running.
type session struct {
	ID, Cgroup string
	Shell      *exec.Cmd
	done       chan error
}

// Ended reports whether the shell exited.
func (s *session) Ended() bool {
	select {
	case err := <-s.done:
		s.done <- err
		return true
	default:
		return false
	}
}

// startSession logs in with token in a root shell and runs script in it,
// in the background; it returns once the login is done.
func (e *killEnv) startSession(t *testing.T, token, script string) *session {
	t.Helper()
	e.sessions++
	marker := filepath.Join(e.Dir, fmt.Sprintf("kill-session-%d.json", e.sessions))
	shell := e.Command(harness.Shell{Script: fmt.Sprintf("warden login --token-file %s >/dev/null || exit 9\n"+
		"warden whoami --json > %s.tmp && mv %s.tmp %s\n%s", token, marker, marker, marker, script)})
	var out strings.Builder
	shell.Stdout, shell.Stderr = &out, &out
	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	s := &session{Shell: shell, done: make(chan error, 1)}
	go func() { s.done <- shell.Wait() }()
	t.Cleanup(func() {
		shell.Process.Kill()
		if s.Cgroup != "" {
			if pids, err := harness.CgroupPIDs(s.Cgroup); err == nil {
				for _, p := range pids {
					exec.Command("kill", "-9", fmt.Sprint(p)).Run()
				}
			}
		}
	})
	var who struct {
		ID     string `json:"session_id"`
		Cgroup string `json:"cgroup"`
	}
	e.Eventually("session logged in", func() error {
		if s.Ended() {
			t.Fatalf("shell ended before logging in:\n%s", out.String())
		}
		data, err := os.ReadFile(marker)
		if err != nil {
			return err
		}
		return json.Unmarshal(data, &who)
	})
	s.ID, s.Cgroup = who.ID, who.Cgroup
	if s.ID == "" || s.Cgroup == "" {
		t.Fatalf("whoami without id or cgroup: %+v", who)
	}
	// The collector finds a session's host in its session.login.
	e.WaitEvent(collectorclient.Query{Type: string(event.SessionLogin), Desc: true, Limit: 20}, "session.login of "+s.ID, func(ev *event.Event) bool {
		return ev.Identity != nil && ev.Identity.SessionID == s.ID
	})
	return s
}

// killed waits for the session.killed event naming session id.
func (e *killEnv) killed(t *testing.T, id string) *event.Event {
	t.Helper()
	return e.WaitEvent(collectorclient.Query{Type: string(event.SessionKilled), Limit: 100}, "session.killed of "+id, func(ev *event.Event) bool {
		ss, _ := ev.Data["sessions"].([]any)
		return slices.Contains(ss, any(id))
	})
}

func killedPIDs(ev *event.Event) []int {
	var out []int
	ps, _ := ev.Data["processes"].([]any)
	for _, p := range ps {
		if m, ok := p.(map[string]any); ok {
			// Numbers may come as float64 or json.Number.
			if n, err := strconv.Atoi(fmt.Sprint(m["pid"])); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func TestKill(t *testing.T) {
	e := newKillEnv(t)

	t.Run("outside the killers gets 403", func(t *testing.T) {
		out, err := e.Warden("sessions", "kill", "--user", "alice", "--reason", "not mine to do", "--token-file", e.mallory)
		if err == nil || !strings.Contains(out, "HTTP 403") {
			t.Fatalf("mallory's kill: %v\n%s", err, out)
		}
		out, err = e.Warden("sessions", "kill", "--user", "alice", "--reason", "no token", "--token-file", "/dev/null")
		if err == nil {
			t.Fatalf("kill without a token succeeded:\n%s", out)
		}
	})

	t.Run("kill ends the shell, psql, a sudo child and the backend", func(t *testing.T) {
		s := e.startSession(t, e.alice, fmt.Sprintf(`sudo -u nobody sleep 1000 &
psql "%s" -Xc "select pg_sleep(1000)" &
sleep 1000`, e.conn()))
		sleeping := func() int64 {
			return e.pg.QueryInt("postgres", "select count(*) from pg_stat_activity where query like 'select pg_sleep(1000)%'")
		}
		var pids []int
		e.Eventually("psql's pg_sleep running and sudo's child started", func() error {
			if n := sleeping(); n != 1 {
				return fmt.Errorf("%d pg_sleep backends", n)
			}
			var err error
			if pids, err = harness.CgroupPIDs(s.Cgroup); err != nil {
				return err
			}
			for _, p := range pids {
				if harness.UIDOf(p) == nobody && harness.CommOf(p) == "sleep" {
					return nil
				}
			}
			return fmt.Errorf("no sleep as nobody among %v", pids)
		})
		var comms []string
		for _, p := range pids {
			comms = append(comms, fmt.Sprintf("%d:%s", p, harness.CommOf(p)))
		}
		t.Logf("session %s: %v", s.ID, comms)

		start := time.Now()
		out, err := e.Warden("sessions", "kill", s.ID, "--reason", "e2e: intrusion", "--token-file", e.sam)
		if err != nil {
			t.Fatalf("kill: %v\n%s", err, out)
		}
		queued := time.Now()
		var left []int
		var backends int64
		for {
			left = slices.DeleteFunc(slices.Clone(pids), func(p int) bool { return !harness.Alive(p) })
			backends = sleeping()
			if len(left) == 0 && backends == 0 && s.Ended() {
				break
			}
			if time.Since(queued) > 5*time.Second {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(queued)
		t.Logf("everything ended %s after the kill was queued (%s after the CLI started)", took, time.Since(start))
		if len(left) > 0 || backends > 0 || !s.Ended() {
			t.Fatalf("after %s: alive %v, %d pg_sleep backends, shell ended %v", took, left, backends, s.Ended())
		}
		if took > time.Second {
			t.Fatalf("the kill took %s, want within 1 s", took)
		}

		ev := e.killed(t, s.ID)
		if ev.Data["by"] != "sam" || ev.Data["reason"] != "e2e: intrusion" {
			t.Fatalf("session.killed by/reason: %v", ev.Data)
		}
		listed := killedPIDs(ev)
		for _, p := range pids {
			if !slices.Contains(listed, p) {
				t.Errorf("session.killed does not list pid %d; lists %v in %v", p, listed, ev.Data)
			}
		}
		if cs, _ := ev.Data["connections_closed"].([]any); len(cs) == 0 {
			t.Errorf("session.killed lists no closed connection: %v", ev.Data)
		}
		// The kill request itself is recorded with its requester.
		e.WaitEvent(collectorclient.Query{Type: string(event.CommandKill), User: "sam"}, "command.kill by sam", func(ev *event.Event) bool {
			return ev.Data["session_id"] == s.ID
		})

		// A leftover in the session's cgroup, if the cgroup remains,
		// connects nowhere: the binding is gone.
		if _, err := os.Stat(s.Cgroup); err == nil {
			cmd := testenv.CommandIn(t, s.Cgroup, "nsenter", "--net="+e.NS.Path, "--", "psql", e.conn(), "-Xc", "select 1")
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("a leftover in the killed session's cgroup connected:\n%s", out)
			}
			t.Logf("leftover refused: %s", strings.TrimSpace(string(out)))
		} else {
			t.Logf("the session's cgroup is gone: nothing can be left in it")
		}
	})

	t.Run("lock refuses login with the reason until it ends", func(t *testing.T) {
		out, err := e.Warden("sessions", "kill", "--user", "alice", "--reason", "e2e: locked out", "--lock", "6s", "--token-file", e.sam)
		if err != nil {
			t.Fatalf("kill --lock: %v\n%s", err, out)
		}
		out, err = e.Warden("locks", "--json")
		if err != nil || !strings.Contains(out, `"sub":"alice"`) || !strings.Contains(out, "e2e: locked out") {
			t.Fatalf("warden locks: %v\n%s", err, out)
		}
		var l collectorclient.Lock
		if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &l); err != nil {
			t.Fatal(err)
		}
		// Not the last command of the script: bash would exec it, and the
		// login would bind the shell's parent, the test itself.
		login := fmt.Sprintf("warden login --token-file %s && echo logged-in", e.alice)
		e.Eventually("alice's login refused", func() error {
			out, err := e.Run(harness.Shell{Script: login})
			if err == nil {
				return fmt.Errorf("login accepted:\n%s", out)
			}
			if !strings.Contains(out, "e2e: locked out") {
				t.Fatalf("refusal without the reason:\n%s", out)
			}
			return nil
		})
		// Refused until the end, accepted after it.
		for time.Now().Before(l.Until.Add(-time.Second)) {
			if out, err := e.Run(harness.Shell{Script: login}); err == nil {
				t.Fatalf("login accepted at %s, before the lock's end %s:\n%s", time.Now().Format(time.RFC3339Nano), l.Until, out)
			}
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(time.Until(l.Until) + 200*time.Millisecond)
		if out, err := e.Run(harness.Shell{Script: login}); err != nil || !strings.Contains(out, "logged-in") {
			t.Fatalf("login after the lock's end: %v\n%s", err, out)
		}
		if out, err := e.Warden("locks"); err != nil || strings.Contains(out, "alice") {
			t.Fatalf("warden locks after the end: %v\n%s", err, out)
		}
	})

	t.Run("a kill sent while the agent's NATS link is down applies when it is back", func(t *testing.T) {
		s := e.startSession(t, e.alice, "sleep 1000")
		// The embedded NATS server moves to another port: the agent's link
		// is down, the collector and its stream are up.
		e.StartCollectorWith("--nats-listen", "127.0.0.1:4223")
		out, err := e.Warden("sessions", "kill", s.ID, "--reason", "e2e: while away", "--token-file", e.sam)
		if err != nil {
			t.Fatalf("kill: %v\n%s", err, out)
		}
		time.Sleep(2 * time.Second)
		if s.Ended() {
			t.Fatal("the session ended without a link to NATS: the test proves nothing")
		}
		e.StartCollectorWith()
		e.Eventually("the kill applied after the link came back", func() error {
			if !s.Ended() {
				return fmt.Errorf("the shell still runs")
			}
			return nil
		})
		e.killed(t, s.ID)
	})
}
