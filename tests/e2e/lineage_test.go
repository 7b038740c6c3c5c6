package e2e

import (
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

// connectEvent waits for alice's net.connect from pid.
func connectEvent(e *identityEnv, pid int) *event.Event {
	return e.WaitEvent(collectorclient.Query{Type: string(event.NetConnect), User: "alice"}, fmt.Sprintf("net.connect of pid %d", pid), func(ev *event.Event) bool {
		return ev.Process != nil && int(ev.Process.PID) == pid
	})
}

func binaries(p *event.Process) []string {
	var out []string
	for _, a := range p.Ancestors {
		out = append(out, filepath.Base(a.Binary))
	}
	return out
}

// A bound root shell runs a client through sudo to another user and an
// exec chain. The connection's event carries the whole chain, with the
// right binaries and arguments, and alice's identity across the setuid.
func TestLineageThroughSudoAndExecChain(t *testing.T) {
	testenv.RequireCommand(t, "sudo")
	e := newIdentityEnv(t)
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	inner := filepath.Join(e.Dir, "client.sh")
	if err := os.WriteFile(inner, []byte(talk("127.0.0.1", e.target.Port())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := e.MustRun(harness.Shell{Script: e.login(alice) + fmt.Sprintf(
		`bash -c 'sudo -u nobody sh -c "exec bash %s"'; echo "shell=$$"`, inner)})
	if !strings.Contains(out, "reply=echo:pid=") {
		t.Fatalf("no echo through the proxy:\n%s", out)
	}
	pid := regexpInt(t, out, "reply=echo:pid=")
	shellPID := regexpInt(t, out, "shell=")

	ev := connectEvent(e, pid)
	if ev.Identity == nil || ev.Identity.Sub != "alice" {
		t.Fatalf("identity did not survive sudo: %+v", ev.Identity)
	}
	p := ev.Process
	if p.UID != nobody || filepath.Base(p.Binary) != "bash" || strings.Join(p.Args, " ") != "bash "+inner {
		t.Fatalf("process %+v", p)
	}
	if _, ok := ev.Data["lineage_warning"]; ok {
		t.Fatalf("unexpected lineage warning: %v", ev.Data["lineage_warning"])
	}
	if len(p.Ancestors) < 4 || p.ParentExecID != p.Ancestors[0].ExecID {
		t.Fatalf("ancestors %v, parent %s", binaries(p), p.ParentExecID)
	}
	// sh -c "exec bash ...": the same pid, two exec ids linked by parent.
	sh := p.Ancestors[0]
	if sh.PID != p.PID || sh.ExecID == p.ExecID || filepath.Base(sh.Binary) != "sh" ||
		strings.Join(sh.Args, " ") != "sh -c exec bash "+inner {
		t.Fatalf("exec chain parent %+v of %+v", sh, p)
	}
	// Up the chain: sudo (as root), the bash -c that ran it, and the
	// login shell the session was bound to.
	var sudo, loginShell *event.Ancestor
	for i := range p.Ancestors {
		a := &p.Ancestors[i]
		if filepath.Base(a.Binary) == "sudo" && sudo == nil {
			sudo = a
		}
		if int(a.PID) == shellPID && loginShell == nil {
			loginShell = a // the newest image of that pid; nsenter exec'd it
		}
	}
	if sudo == nil || sudo.UID != 0 || strings.Join(sudo.Args, " ") != "sudo -u nobody sh -c exec bash "+inner {
		t.Fatalf("no sudo ancestor in %v: %+v", binaries(p), sudo)
	}
	if loginShell == nil || filepath.Base(loginShell.Binary) != "bash" {
		t.Fatalf("login shell %d not among ancestors %+v", shellPID, p.Ancestors)
	}
	login := e.WaitEvent(collectorclient.Query{Type: string(event.SessionLogin), User: "alice"}, "session.login", func(ev *event.Event) bool {
		return ev.Decision == nil
	})
	if login.Process == nil || login.Process.ExecID != loginShell.ExecID || len(login.Process.Ancestors) == 0 {
		t.Fatalf("session.login process %+v, want the login shell %s with its ancestors", login.Process, loginShell.ExecID)
	}

	// process.exec events for the chain, in the session, with identity.
	execs := map[string]*event.Event{}
	e.Eventually("process.exec for the chain", func() error {
		for _, ev := range e.Events(collectorclient.Query{Type: string(event.ProcessExec), User: "alice"}) {
			execs[ev.Process.ExecID] = &ev
		}
		for _, id := range []string{p.ExecID, sh.ExecID, sudo.ExecID, loginShell.ExecID} {
			if execs[id] == nil {
				return fmt.Errorf("no process.exec for %s among %d", id, len(execs))
			}
		}
		return nil
	})
	if got := execs[p.ExecID]; got.Process.ParentExecID != sh.ExecID || got.Identity == nil || got.Identity.Sub != "alice" {
		t.Fatalf("process.exec of the client: %+v %+v", got.Process, got.Identity)
	}
	exit := e.WaitEvent(collectorclient.Query{Type: string(event.ProcessExit), User: "alice"}, "process.exit of the client", func(ev *event.Event) bool {
		return ev.Process != nil && ev.Process.ExecID == p.ExecID
	})
	if fmt.Sprint(exit.Data["exit_code"]) != "0" {
		t.Fatalf("exit data %v", exit.Data)
	}
}

// A shell that started before wardend has a lineage once it logs in.
func TestLineageOfProcessStartedBeforeAgent(t *testing.T) {
	e := &identityEnv{Env: harness.NewEnv(t)}
	e.target = e.Serve("tcp4", "127.0.0.1:0")
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	gate := filepath.Join(e.Dir, "agent-up")
	shell := e.Command(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(`
while [ ! -e %s ]; do sleep 0.05; done
warden login --token-file %s || exit 9
%s`, gate, alice, talk("127.0.0.1", e.target.Port()))})
	var out syncBuffer
	shell.Stdout, shell.Stderr = &out, &out
	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { shell.Process.Kill(); shell.Wait() }()
	e.StartAgent(fmt.Sprintf("targets:\n  - name: echo\n    protocol: tcp\n    address: 127.0.0.1:%d\naccess:\n  - groups: [engineering]\n    targets: [echo]\n", e.target.Port()))
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := shell.Wait(); err != nil {
		t.Fatalf("shell: %v\n%s", err, out.String())
	}
	pid := regexpInt(t, out.String(), "reply=echo:pid=")
	if pid != shell.Process.Pid {
		t.Fatalf("the connection came from pid %d, want the shell %d", pid, shell.Process.Pid)
	}
	ev := connectEvent(e, pid)
	p := ev.Process
	if p.ExecID == "" || filepath.Base(p.Binary) != "bash" || len(p.Ancestors) == 0 || p.Ancestors[len(p.Ancestors)-1].PID != 1 {
		t.Fatalf("pre-agent shell without lineage: %+v", p)
	}
	if ev.Identity == nil || ev.Identity.Sub != "alice" {
		t.Fatalf("identity %+v", ev.Identity)
	}
	if w, ok := ev.Data["lineage_warning"]; ok {
		t.Fatalf("unexpected lineage warning: %v", w)
	}
	shellExec := e.WaitEvent(collectorclient.Query{Type: string(event.ProcessExec), User: "alice"}, "the login shell's process.exec", func(ev *event.Event) bool {
		return ev.Process != nil && ev.Process.ExecID == p.ExecID
	})
	if shellExec.Data["source"] != "proc" {
		t.Fatalf("login shell source %v, want proc (seeded)", shellExec.Data["source"])
	}
}

// Root moves a process that never ran in the session into a session
// cgroup. The kernel binds it to alice; the lineage does not back that,
// and the event says so instead of silently trusting the cgroup.
func TestLineageWarningForProcessMovedIntoSession(t *testing.T) {
	e := newIdentityEnv(t)
	cgroup := e.sessionInBackground(t, nobody, e.Token(devidp.IssueOptions{Sub: "alice"}))
	out := e.MustRun(harness.Shell{Script: fmt.Sprintf(`echo $$ > %s/cgroup.procs && %s`, cgroup, talk("127.0.0.1", e.target.Port()))})
	pid := regexpInt(t, out, "reply=echo:pid=")
	ev := connectEvent(e, pid)
	w, _ := ev.Data["lineage_warning"].(string)
	if !strings.Contains(w, "neither it nor any ancestor") {
		t.Fatalf("no lineage warning for a process moved into the session: data %v", ev.Data)
	}
}
