package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

const nobody = 65534

// identityEnv is an agent protecting one TCP target ("echo") reachable by
// group engineering, with a second server that is not a target.
type identityEnv struct {
	*harness.Env
	target, other *harness.Server
}

func newIdentityEnv(t *testing.T) *identityEnv {
	e := &identityEnv{Env: harness.NewEnv(t)}
	e.target = e.Serve("tcp4", "127.0.0.1:0")
	e.other = e.Serve("tcp4", "127.0.0.1:0")
	e.StartAgent(fmt.Sprintf(`targets:
  - name: echo
    protocol: tcp
    address: 127.0.0.1:%d
access:
  - groups: [engineering]
    targets: [echo]
`, e.target.Port()))
	return e
}

// talk is a bash fragment that connects to host:port, sends its own pid
// and prints the reply.
func talk(host string, port int) string {
	return fmt.Sprintf(`exec 3<>/dev/tcp/%s/%d && echo "pid=$BASHPID" >&3 && read -r reply <&3 && echo "reply=$reply"`, host, port)
}

func (e *identityEnv) login(token string) string {
	return fmt.Sprintf(`warden login --token-file %s && `, token)
}

// refused runs script and checks that it failed to connect and that the
// target never saw a byte.
func (e *identityEnv) refused(t *testing.T, s harness.Shell, wantOutput string) string {
	t.Helper()
	before := e.target.Bytes()
	out, err := e.Run(s)
	if err == nil {
		t.Fatalf("script succeeded, want refusal:\n%s", out)
	}
	if !strings.Contains(out, wantOutput) {
		t.Fatalf("output lacks %q:\n%s", wantOutput, out)
	}
	if got := e.target.Bytes(); got != before {
		t.Fatalf("target received %d bytes", got-before)
	}
	return out
}

func TestLoginBindsSessionAndRedirectsThroughProxy(t *testing.T) {
	e := newIdentityEnv(t)
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	out := e.MustRun(harness.Shell{UID: nobody, GID: nobody, Script: e.login(alice) +
		`warden whoami --json > /tmp/whoami-$$.json; cat /tmp/whoami-$$.json; rm /tmp/whoami-$$.json; ` + talk("127.0.0.1", e.target.Port())})
	if !strings.Contains(out, "reply=echo:pid=") {
		t.Fatalf("no echo through the proxy:\n%s", out)
	}
	pid := regexpInt(t, out, "reply=echo:pid=")
	if e.target.Conns() != 1 {
		t.Fatalf("target saw %d connections", e.target.Conns())
	}

	ev := e.WaitEvent(collectorclient.Query{Type: string(event.NetConnect), User: "alice"}, "alice's net.connect", func(ev *event.Event) bool {
		return ev.Process != nil && int(ev.Process.PID) == pid
	})
	if ev.Identity == nil || ev.Identity.Sub != "alice" || ev.Identity.Email != "alice@corp.example" ||
		strings.Join(ev.Identity.Groups, ",") != "engineering" || ev.Identity.Issuer != e.IdP.Issuer() || ev.Identity.SessionID == "" {
		t.Fatalf("identity %+v", ev.Identity)
	}
	if ev.Process.UID != nobody {
		t.Fatalf("uid %d, want %d", ev.Process.UID, nobody)
	}
	if ev.Decision == nil || ev.Decision.Action != event.Allow {
		t.Fatalf("decision %+v", ev.Decision)
	}
	if ev.Target == nil || ev.Target.Name != "echo" || ev.Target.Protocol != "tcp" {
		t.Fatalf("target %+v", ev.Target)
	}
	if got, want := ev.Data["original_dst"], fmt.Sprintf("127.0.0.1:%d", e.target.Port()); got != want {
		t.Fatalf("original_dst %v, want %s", got, want)
	}
	if ev.Process.ExecID == "" || len(ev.Process.Ancestors) == 0 {
		t.Fatalf("process without lineage: %+v", ev.Process)
	}

	login := e.WaitEvent(collectorclient.Query{Type: string(event.SessionLogin), User: "alice"}, "session.login", func(ev *event.Event) bool {
		return ev.Decision == nil || ev.Decision.Action != event.Deny
	})
	if login.Identity.SessionID != ev.Identity.SessionID {
		t.Fatalf("login session %s, connect session %s", login.Identity.SessionID, ev.Identity.SessionID)
	}
}

// sessionInBackground starts a shell as uid that logs in with token and
// stays, and returns its session cgroup. The shell ends with the test.
func (e *identityEnv) sessionInBackground(t *testing.T, uid int, token string) string {
	t.Helper()
	marker := filepath.Join(e.Dir, fmt.Sprintf("session-%d.json", time.Now().UnixNano()))
	shell := e.Command(harness.Shell{UID: uid, GID: uid, Script: e.login(token) +
		fmt.Sprintf(`warden whoami --json > %s.tmp && mv %s.tmp %s; sleep 60`, marker, marker, marker)})
	os.Chmod(e.Dir, 0o777) // the shell's user writes its marker there
	defer os.Chmod(e.Dir, 0o755)
	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shell.Process.Kill(); shell.Wait() })
	var sess struct {
		Cgroup string `json:"cgroup"`
	}
	e.Eventually("background session logged in", func() error {
		data, err := os.ReadFile(marker)
		if err != nil {
			return err
		}
		return json.Unmarshal(data, &sess)
	})
	return sess.Cgroup
}

func regexpInt(t *testing.T, out, prefix string) int {
	t.Helper()
	i := strings.Index(out, prefix)
	rest := out[i+len(prefix):]
	j := strings.IndexAny(rest, "\n ")
	if j >= 0 {
		rest = rest[:j]
	}
	n, err := strconv.Atoi(rest)
	if err != nil {
		t.Fatalf("no number after %q in:\n%s", prefix, out)
	}
	return n
}

func TestBypassAttempts(t *testing.T) {
	e := newIdentityEnv(t)
	port := e.target.Port()

	t.Run("no binding", func(t *testing.T) {
		e.refused(t, harness.Shell{UID: nobody, GID: nobody, Script: talk("127.0.0.1", port)}, "Operation not permitted")
	})

	t.Run("process started before login", func(t *testing.T) {
		alice := e.Token(devidp.IssueOptions{Sub: "alice"})
		// The background job exists before the login and must stay unbound;
		// the shell itself, bound by the login, connects fine afterwards.
		out, _ := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(`
( while [ ! -e /tmp/go-$$ ]; do sleep 0.05; done; %s ) > /tmp/early-$$ 2>&1 &
early=$!
warden login --token-file %s || exit 9
touch /tmp/go-$$
wait $early; echo "early_exit=$?"; cat /tmp/early-$$; rm -f /tmp/go-$$ /tmp/early-$$
%s`, talk("127.0.0.1", port), alice, talk("127.0.0.1", port))})
		if !strings.Contains(out, "early_exit=1") || !strings.Contains(out, "Operation not permitted") {
			t.Fatalf("pre-login process was not refused:\n%s", out)
		}
		if !strings.Contains(out, "reply=echo:pid=") {
			t.Fatalf("the logged-in shell itself could not connect:\n%s", out)
		}
	})

	// Same algorithm as the issuer's key, so only the signature can fail.
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherIdP, err := devidp.New(devidp.Options{Issuer: "http://127.0.0.1:1", ClientID: harness.ClientID, Users: harness.Users})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherIdP.Issue(devidp.IssueOptions{Sub: "alice", Groups: []string{"engineering"}})
	if err != nil {
		t.Fatal(err)
	}
	foreignPath := filepath.Join(e.Dir, "foreign-token")
	os.WriteFile(foreignPath, []byte(foreign), 0o644)
	badTokens := []struct {
		name, path, want string
	}{
		{"expired", e.Token(devidp.IssueOptions{Sub: "alice", IssuedAt: time.Now().Add(-2 * time.Hour), TTL: time.Hour}), "expired"},
		{"wrong audience", e.Token(devidp.IssueOptions{Sub: "alice", Audience: []string{"someone-else"}}), "audience"},
		{"bad signature", e.Token(devidp.IssueOptions{Sub: "alice", SignWith: otherKey}), "signature"},
		{"alg none", e.Token(devidp.IssueOptions{Sub: "alice", AlgNone: true}), "none"},
		{"other issuer", foreignPath, "issuer"},
	}
	for _, bt := range badTokens {
		t.Run("token "+bt.name, func(t *testing.T) {
			out := e.refused(t, harness.Shell{UID: nobody, GID: nobody, Script: e.login(bt.path) + talk("127.0.0.1", port)}, "warden login:")
			if !strings.Contains(strings.ToLower(out), bt.want) {
				t.Fatalf("login error does not mention %q:\n%s", bt.want, out)
			}
			tok, _ := os.ReadFile(bt.path)
			if strings.Contains(out, string(tok)) {
				t.Fatal("the token was echoed back")
			}
		})
	}

	t.Run("groups lack access", func(t *testing.T) {
		mallory := e.Token(devidp.IssueOptions{Sub: "mallory"})
		e.refused(t, harness.Shell{UID: nobody, GID: nobody, Script: e.login(mallory) + talk("127.0.0.1", port)}, "Operation not permitted")
		ev := e.WaitEvent(collectorclient.Query{Type: string(event.NetConnect), User: "mallory"}, "mallory's denial", func(ev *event.Event) bool {
			return ev.Decision != nil && ev.Decision.Action == event.Deny
		})
		if !strings.Contains(ev.Decision.Reason, "no access") || ev.Data["errno"] != "EPERM" {
			t.Fatalf("decision %+v data %v", ev.Decision, ev.Data)
		}
	})

	t.Run("ipv4-mapped ipv6", func(t *testing.T) {
		e.refused(t, harness.Shell{UID: nobody, GID: nobody, Script: talk("::ffff:127.0.0.1", port)}, "Operation not permitted")
		// Bound, the same mapped address goes through the proxy.
		alice := e.Token(devidp.IssueOptions{Sub: "alice"})
		out := e.MustRun(harness.Shell{UID: nobody, GID: nobody, Script: e.login(alice) + talk("::ffff:127.0.0.1", port)})
		if !strings.Contains(out, "reply=echo:") {
			t.Fatalf("mapped connection not relayed:\n%s", out)
		}
	})

	t.Run("other local address of the target", func(t *testing.T) {
		// 127.0.0.2 and 0.0.0.0 reach a server bound to 127.0.0.1's port
		// only if it listens on the wildcard; either way the kernel must
		// treat them as the target and refuse unbound callers.
		for _, host := range []string{"127.0.0.2", "0.0.0.0"} {
			e.refused(t, harness.Shell{UID: nobody, GID: nobody, Script: talk(host, port)}, "Operation not permitted")
		}
	})

	t.Run("stolen binding", func(t *testing.T) {
		cgroup := e.sessionInBackground(t, 1000, e.Token(devidp.IssueOptions{Sub: "alice"}))
		out := e.refused(t, harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
			`echo $$ > %s/cgroup.procs; echo "move_exit=$?"; %s`, cgroup, talk("127.0.0.1", port))}, "Operation not permitted")
		if !strings.Contains(out, "Permission denied") || strings.Contains(out, "move_exit=0") {
			t.Fatalf("moving into another session's cgroup was not refused:\n%s", out)
		}
		// The same uid as the victim cannot move either: cgroup files
		// are root's.
		e.refused(t, harness.Shell{UID: 1000, GID: 1000, Script: fmt.Sprintf(
			`echo $$ > %s/cgroup.procs; %s`, cgroup, talk("127.0.0.1", port))}, "Permission denied")
	})

	t.Run("expired binding", func(t *testing.T) {
		short := e.Token(devidp.IssueOptions{Sub: "alice", TTL: 3 * time.Second})
		before := e.target.Bytes()
		out, err := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: e.login(short) +
			talk("127.0.0.1", port) + ` && sleep 4 && ` + talk("127.0.0.1", port)})
		if err == nil || !strings.Contains(out, "Operation not permitted") || strings.Count(out, "reply=echo:") != 1 {
			t.Fatalf("want one connection before expiry and a refusal after:\n%s", out)
		}
		first := fmt.Sprintf("pid=%d\n", regexpInt(t, out, "reply=echo:pid="))
		if got := e.target.Bytes() - before; got != int64(len(first)) {
			t.Fatalf("target received %d bytes, want only the %d of the first connection", got, len(first))
		}
		e.WaitEvent(collectorclient.Query{Type: string(event.SessionExpired), User: "alice"}, "session.expired", func(*event.Event) bool { return true })
	})

	t.Run("non-targets untouched", func(t *testing.T) {
		out := e.MustRun(harness.Shell{UID: nobody, GID: nobody, Script: talk("127.0.0.1", e.other.Port())})
		if !strings.Contains(out, "reply=echo:pid=") {
			t.Fatalf("non-target connection failed:\n%s", out)
		}
	})
}
