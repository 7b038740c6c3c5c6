package daemon

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/lifetime"
	"github.com/wardenhq/warden/agent/metrics"
	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/tests/testenv"
)

// hang bounds waits on processes; nothing depends on their speed.
const hang = 10 * time.Second

// fakeKernel is the binding and access maps.
type fakeKernel struct {
	mu       sync.Mutex
	bindings map[uint64]loader.Binding
	access   map[uint32]map[uint32]uint64
}

func (k *fakeKernel) PutBinding(b loader.Binding) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.bindings[b.CgroupID] = b
	return nil
}

func (k *fakeKernel) DeleteBinding(id uint64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.bindings, id)
	return nil
}

func (k *fakeKernel) Bindings() ([]loader.Binding, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []loader.Binding
	for _, b := range k.bindings {
		out = append(out, b)
	}
	return out, nil
}

func (k *fakeKernel) SyncAccess(m map[uint32]map[uint32]uint64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.access = m
	return nil
}

func (k *fakeKernel) bound(cgroupID uint64) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.bindings[cgroupID]
	return ok
}

// lifetimeDaemon is a Daemon with what Kill and Lock use: sessions in a
// cgroup subtree of the test's own, a fake kernel, a proxy with nothing
// open, locks in a temporary state dir.
func lifetimeDaemon(t *testing.T) (*Daemon, *fakeKernel, *fakeRecorder, string) {
	t.Helper()
	testenv.RequireRoot(t)
	root := testenv.Cgroup(t)
	k := &fakeKernel{bindings: map[uint64]loader.Binding{}}
	state := t.TempDir()
	sessions, _, err := session.Open(session.Options{Dir: filepath.Join(root, "sessions"), StateFile: filepath.Join(state, "sessions.json"), Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	locks, err := session.OpenLocks(filepath.Join(state, "locks.json"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &fakeRecorder{}
	d := &Daemon{
		log: zerolog.Nop(), rec: rec, sessions: sessions, locks: locks, access: k,
		proxy:   proxy.New(proxy.Options{Log: zerolog.Nop()}),
		metrics: metrics.New(func() (map[string]uint64, error) { return map[string]uint64{}, nil }),
		policy:  &policy.Policy{}, expiryWake: make(chan struct{}, 1),
	}
	return d, k, rec, root
}

// shell is a bash in the test's cgroup that starts commands on request
// and prints their pids.
type shell struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	waitc chan error
}

func startShell(t *testing.T, cgroup string) *shell {
	t.Helper()
	testenv.RequireCommand(t, "bash")
	cmd := testenv.CommandIn(t, cgroup, "bash", "-c", `while read -r line; do eval "$line &"; echo $!; done`)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sh := &shell{cmd: cmd, in: in, out: bufio.NewReader(out), waitc: make(chan error, 1)}
	go func() { sh.waitc <- cmd.Wait() }()
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		<-sh.waitc
	})
	return sh
}

// run has the shell start line in the background and returns its pid.
func (sh *shell) run(t *testing.T, line string) int {
	t.Helper()
	if _, err := io.WriteString(sh.in, line+"\n"); err != nil {
		t.Fatal(err)
	}
	l, err := sh.out.ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(l))
	if err != nil || perr != nil {
		t.Fatalf("shell printed %q, %v", l, err)
	}
	return pid
}

// login binds a session of id to sh, as 'warden login' run from it would.
func login(t *testing.T, d *Daemon, sh *shell, id session.Identity) *session.Session {
	t.Helper()
	peer := sh.run(t, "sleep 1000")
	s, _, err := d.sessions.Login(session.Peer{PID: peer, UID: uint32(os.Getuid())}, id, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil && !zombie(pid) }

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func TestKillSession(t *testing.T) {
	d, k, rec, root := lifetimeDaemon(t)
	alice := session.Identity{Subject: "alice", Issuer: "https://idp.test", Groups: []string{"dba"}}
	bob := session.Identity{Subject: "bob", Issuer: "https://idp.test", Groups: []string{"dba"}}
	ash, bsh := startShell(t, root), startShell(t, root)
	as := login(t, d, ash, alice)
	bs := login(t, d, bsh, bob)
	// Born in the session: a sleep, and a sh that ignores TERM with a
	// child of its own.
	sleepPID := ash.run(t, "sleep 1000")
	shPID := ash.run(t, "sh -c 'trap \"\" TERM; sleep 1000 & wait'")
	bobSleep := bsh.run(t, "sleep 1000")
	var inSession []int
	for deadline := time.Now().Add(hang); len(inSession) < 4; time.Sleep(5 * time.Millisecond) {
		// bash, sleep, sh and sh's child; the login's own peer started
		// before the login and stays outside.
		inSession, _ = cgroupv2.TreeProcs(as.Cgroup)
		if time.Now().After(deadline) {
			t.Fatalf("session cgroup holds %v, want 4 processes", inSession)
		}
	}

	rep, err := d.Kill(context.Background(), lifetime.KillRequest{SessionID: as.ID, Reason: "incident 42", By: "soc@example.com", Lock: time.Hour})
	if err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if !slices.Equal(rep.Sessions, []string{as.ID}) || rep.Connections != 0 {
		t.Errorf("report %+v", rep)
	}
	slices.Sort(rep.Processes)
	slices.Sort(inSession)
	if !slices.Equal(rep.Processes, inSession) {
		t.Errorf("report lists processes %v, want %v", rep.Processes, inSession)
	}
	// Kill returns once the processes are gone: no waiting here.
	for _, pid := range []int{ash.cmd.Process.Pid, sleepPID, shPID} {
		if alive(pid) {
			t.Errorf("process %d survived the kill", pid)
		}
	}
	if procs, err := cgroupv2.TreeProcs(as.Cgroup); err == nil && len(procs) != 0 {
		t.Errorf("session cgroup still holds %v", procs)
	}
	if _, err := os.Stat(as.Cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed session's cgroup is still there: %v", err)
	}
	if k.bound(as.CgroupID) {
		t.Error("the killed session is still bound in the kernel")
	}
	if _, ok := d.sessions.Get(as.ID); ok {
		t.Error("the killed session is still live")
	}
	// Bob is untouched.
	if !alive(bobSleep) || !k.bound(bs.CgroupID) {
		t.Error("the kill reached another person's session")
	}
	// Alice is locked out, with the reason.
	locks := d.Locks()
	if len(locks) != 1 || locks[0].Sub != "alice" || locks[0].Reason != "incident 42" || locks[0].By != "soc@example.com" {
		t.Fatalf("Locks = %+v", locks)
	}
	if lk, ok := d.locks.Check("alice", time.Now()); !ok || !strings.Contains(lockedMessage(lk), "incident 42") {
		t.Errorf("alice's login would not be refused with the reason: %+v %v", lk, ok)
	}

	var killed []*event.Event
	for _, e := range rec.events {
		if e.Type == event.SessionKilled {
			killed = append(killed, e)
		}
	}
	if len(killed) != 1 {
		t.Fatalf("%d session.killed events", len(killed))
	}
	e := killed[0]
	if e.Identity == nil || e.Identity.Sub != "alice" || e.Identity.SessionID != as.ID {
		t.Errorf("session.killed identity %+v", e.Identity)
	}
	if e.Data["by"] != "soc@example.com" || e.Data["reason"] != "incident 42" || e.Data["locked_until"] == nil {
		t.Errorf("session.killed data %+v", e.Data)
	}
	procs := e.Data["processes"].([]any)
	bins := map[string]bool{}
	for _, p := range procs {
		bins[filepath.Base(p.(map[string]any)["binary"].(string))] = true
	}
	if len(procs) != 4 || !bins["bash"] || !bins["sleep"] || !(bins["sh"] || bins["dash"]) {
		t.Errorf("session.killed processes %v, want 4 with their binaries", procs)
	}
}

func TestKillBySubject(t *testing.T) {
	d, _, _, root := lifetimeDaemon(t)
	alice := session.Identity{Subject: "alice", Issuer: "https://idp.test"}
	bob := session.Identity{Subject: "bob", Issuer: "https://idp.test"}
	one, two, other := startShell(t, root), startShell(t, root), startShell(t, root)
	s1, s2 := login(t, d, one, alice), login(t, d, two, alice)
	login(t, d, other, bob)

	rep, err := d.Kill(context.Background(), lifetime.KillRequest{Sub: "alice", Reason: "offboarding", By: "hr"})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.Sessions)
	want := []string{s1.ID, s2.ID}
	slices.Sort(want)
	if !slices.Equal(rep.Sessions, want) {
		t.Errorf("killed %v, want both of alice's %v", rep.Sessions, want)
	}
	if alive(one.cmd.Process.Pid) || alive(two.cmd.Process.Pid) {
		t.Error("one of alice's shells survived")
	}
	if !alive(other.cmd.Process.Pid) {
		t.Error("bob's shell was killed")
	}
	if l := d.sessions.List(); len(l) != 1 || l[0].Identity.Subject != "bob" {
		t.Errorf("live sessions after the kill: %+v", l)
	}
	if len(d.Locks()) != 0 {
		t.Errorf("a kill without Lock locked: %+v", d.Locks())
	}
	// Nothing left to kill is not an error.
	if rep, err := d.Kill(context.Background(), lifetime.KillRequest{Sub: "alice", By: "hr"}); err != nil || len(rep.Sessions) != 0 {
		t.Errorf("second kill: %+v, %v", rep, err)
	}
	if _, err := d.Kill(context.Background(), lifetime.KillRequest{Sub: "alice", SessionID: s1.ID}); err == nil {
		t.Error("a kill naming both a session and a person was accepted")
	}
}
