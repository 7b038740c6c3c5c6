package session_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wardenhq/warden/agent/procinfo"
	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/tests/testenv"
)

// hang bounds waits on child processes; nothing depends on their speed.
const hang = 10 * time.Second

// fakeKernel is the binding map: it keeps bindings by cgroup id and logs
// every change as "put <id>" or "delete <id>".
type fakeKernel struct {
	mu       sync.Mutex
	bindings map[uint64]loader.Binding
	ops      []string
}

func newKernel(bs ...loader.Binding) *fakeKernel {
	k := &fakeKernel{bindings: map[uint64]loader.Binding{}}
	for _, b := range bs {
		k.bindings[b.CgroupID] = b
	}
	return k
}

func (k *fakeKernel) PutBinding(b loader.Binding) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.bindings[b.CgroupID] = b
	k.ops = append(k.ops, fmt.Sprint("put ", b.CgroupID))
	return nil
}

func (k *fakeKernel) DeleteBinding(id uint64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.bindings, id)
	k.ops = append(k.ops, fmt.Sprint("delete ", id))
	return nil
}

func (k *fakeKernel) Bindings() ([]loader.Binding, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []loader.Binding
	for _, b := range k.bindings {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b loader.Binding) int { return int(a.CgroupID - b.CgroupID) })
	return out, nil
}

// takeOps returns the operations logged since the last call, sorted.
func (k *fakeKernel) takeOps() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	ops := k.ops
	k.ops = nil
	slices.Sort(ops)
	return ops
}

func (k *fakeKernel) binding(id uint64) (loader.Binding, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.bindings[id]
	return b, ok
}

func bootNow() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return uint64(ts.Nano())
}

func cgroupID(t *testing.T, dir string) uint64 {
	t.Helper()
	id, err := cgroupv2.ID(dir)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var alice = session.Identity{Subject: "alice", Email: "alice@example.com", Issuer: "https://idp.example.com", Groups: []string{"engineering"}}
var bob = session.Identity{Subject: "bob", Issuer: "https://idp.example.com", Groups: []string{"dba"}}

func readState(t *testing.T, path string) (next uint32, ids []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		NextIdentityID uint32             `json:"next_identity_id"`
		Sessions       []*session.Session `json:"sessions"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("state file: %v\n%s", err, data)
	}
	for _, s := range st.Sessions {
		ids = append(ids, s.ID)
	}
	return st.NextIdentityID, ids
}

func writeState(t *testing.T, path string, next uint32, ss ...*session.Session) {
	t.Helper()
	data, err := json.Marshal(map[string]any{"next_identity_id": next, "sessions": ss})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOpenReconciles restarts the agent over a state file with a live
// session, an expired one, one whose cgroup was replaced and one whose
// cgroup is gone, and a kernel that still holds a binding nobody owns.
func TestOpenReconciles(t *testing.T) {
	root := testenv.Cgroup(t)
	dir := filepath.Join(root, "sessions")
	state := filepath.Join(t.TempDir(), "state", "sessions.json")
	now := time.Now().UTC()

	mk := func(id string, identity uint32, expires time.Time) *session.Session {
		cg := filepath.Join(dir, id)
		if err := cgroupv2.Create(cg); err != nil {
			t.Fatal(err)
		}
		return &session.Session{ID: id, IdentityID: identity, Identity: alice, UID: 1001, Cgroup: cg, CgroupID: cgroupID(t, cg), LoginTime: now.Add(-2 * time.Hour), Expires: expires}
	}
	live := mk("s-live", 3, now.Add(time.Hour))
	expired := mk("s-expired", 4, now.Add(-time.Minute))
	replaced := mk("s-replaced", 5, now.Add(time.Hour))
	replaced.CgroupID++ // the directory was removed and made again since
	gone := &session.Session{ID: "s-gone", IdentityID: 6, Cgroup: filepath.Join(dir, "s-gone"), CgroupID: 42, Expires: now.Add(time.Hour)}
	writeState(t, state, 7, live, expired, replaced, gone)

	const stale = 987654321
	k := newKernel(
		loader.Binding{CgroupID: stale, IdentityID: 99, ExpiresBootNs: bootNow() + uint64(time.Hour)},
		loader.Binding{CgroupID: expired.CgroupID, IdentityID: 4, ExpiresBootNs: 1},
		loader.Binding{CgroupID: live.CgroupID, IdentityID: 3, ExpiresBootNs: 1},
	)
	before := bootNow()
	m, gotExpired, err := session.Open(session.Options{Dir: dir, StateFile: state, Kernel: k})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}

	if len(gotExpired) != 1 || gotExpired[0].ID != expired.ID || gotExpired[0].Identity.Subject != "alice" {
		t.Errorf("expired = %+v, want only %s", gotExpired, expired.ID)
	}
	want := sorted(fmt.Sprint("put ", live.CgroupID), fmt.Sprint("delete ", stale), fmt.Sprint("delete ", expired.CgroupID))
	if ops := k.takeOps(); !slices.Equal(ops, want) {
		t.Errorf("kernel ops %q, want %q", ops, want)
	}
	b, ok := k.binding(live.CgroupID)
	if !ok || b.IdentityID != 3 || b.ExpiresBootNs <= before {
		t.Errorf("live binding %+v (present %v): want identity 3, expiring in the future", b, ok)
	}
	if l := m.List(); len(l) != 1 || l[0].ID != live.ID {
		t.Errorf("List = %+v, want only %s", l, live.ID)
	}
	if s, ok := m.ByIdentity(3); !ok || s.ID != live.ID {
		t.Errorf("ByIdentity(3) = %+v, %v", s, ok)
	}
	for _, id := range []uint32{4, 5, 6} {
		if s, ok := m.ByIdentity(id); ok {
			t.Errorf("ByIdentity(%d) = %+v; that session is not live", id, s)
		}
	}
	// The expired session's empty cgroup is removed; the live one's stays.
	if _, err := os.Stat(expired.Cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("expired session's cgroup: %v", err)
	}
	if _, err := os.Stat(live.Cgroup); err != nil {
		t.Errorf("live session's cgroup: %v", err)
	}
	next, ids := readState(t, state)
	if next != 7 || !slices.Equal(ids, []string{live.ID}) {
		t.Errorf("state file: next %d sessions %v; want 7 [%s]", next, ids, live.ID)
	}
}

func sorted(s ...string) []string { slices.Sort(s); return s }

func TestOpenFresh(t *testing.T) {
	root := testenv.Cgroup(t)
	dir := filepath.Join(root, "sessions")
	state := filepath.Join(t.TempDir(), "state", "sessions.json")
	k := newKernel(loader.Binding{CgroupID: 5, IdentityID: 1})
	m, expired, err := session.Open(session.Options{Dir: dir, StateFile: state, Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	if len(expired) != 0 || len(m.List()) != 0 {
		t.Errorf("fresh Open: expired %v, sessions %v", expired, m.List())
	}
	// Without a record, every kernel binding is someone else's: removed.
	if ops := k.takeOps(); !slices.Equal(ops, []string{"delete 5"}) {
		t.Errorf("kernel ops %q", ops)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		t.Errorf("session dir is not a cgroup: %v", err)
	}
	if _, err := os.Stat(state); err != nil {
		t.Errorf("state file not written: %v", err)
	}
}

func TestOpenBadState(t *testing.T) {
	root := testenv.Cgroup(t)
	state := filepath.Join(t.TempDir(), "sessions.json")
	os.WriteFile(state, []byte("{not json"), 0o600)
	_, _, err := session.Open(session.Options{Dir: filepath.Join(root, "s"), StateFile: state, Kernel: newKernel()})
	if err == nil || !strings.Contains(err.Error(), state) {
		t.Errorf("Open over a corrupt state file = %v, want an error naming it", err)
	}
}

// shell is a bash started inside a test cgroup that starts a sleep, in the
// background, each time it reads a line, and prints the sleep's pid.
type shell struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	waitc chan error
}

func startShell(t *testing.T, cgroup string) *shell {
	t.Helper()
	testenv.RequireCommand(t, "bash")
	testenv.RequireCommand(t, "sleep")
	cmd := testenv.CommandIn(t, cgroup, "bash", "-c", `while read -r _; do sleep 600 & echo $!; done`)
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
	// The test cgroup's cleanup kills whatever is left, sleeps included.
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		<-sh.waitc
	})
	return sh
}

func (sh *shell) pid() int { return sh.cmd.Process.Pid }

// spawn has the shell start a child and returns the child's pid.
func (sh *shell) spawn(t *testing.T) int {
	t.Helper()
	if _, err := io.WriteString(sh.in, "\n"); err != nil {
		t.Fatal(err)
	}
	type res struct {
		line string
		err  error
	}
	c := make(chan res, 1)
	go func() {
		l, err := sh.out.ReadString('\n')
		c <- res{l, err}
	}()
	select {
	case r := <-c:
		pid, err := strconv.Atoi(strings.TrimSpace(r.line))
		if err != nil {
			t.Fatalf("shell printed %q, %v", r.line, r.err)
		}
		return pid
	case <-time.After(hang):
		t.Fatal("shell did not start a child")
		return 0
	}
}

func pathOf(t *testing.T, pid int) string {
	t.Helper()
	mount, err := cgroupv2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	p, err := cgroupv2.PathOf(mount, pid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type fixture struct {
	root, dir, state string
	k                *fakeKernel
	m                *session.Manager
}

func open(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{root: testenv.Cgroup(t), state: filepath.Join(t.TempDir(), "sessions.json"), k: newKernel()}
	f.dir = filepath.Join(f.root, "sessions")
	m, _, err := session.Open(session.Options{Dir: f.dir, StateFile: f.state, Kernel: f.k})
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	return f
}

// TestLoginBindsParentShell runs the whole life of a session: login from a
// child of a shell, a refused login of someone else, a refresh, a child born
// into the session, a restart, and logout.
func TestLoginBindsParentShell(t *testing.T) {
	f := open(t)
	sh := startShell(t, f.root)
	login := sh.spawn(t) // stands in for the 'warden login' process

	expires := time.Now().Add(time.Hour)
	before := bootNow()
	s, refreshed, err := f.m.Login(session.Peer{PID: login, UID: 0}, alice, expires)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	after := bootNow()
	if refreshed {
		t.Error("first login reported as a refresh")
	}
	if s.Cgroup != filepath.Join(f.dir, s.ID) || s.UID != 0 || s.Identity.Subject != "alice" || s.IdentityID != 1 || !s.Expires.Equal(expires) {
		t.Errorf("session %+v", s)
	}
	if s.CgroupID != cgroupID(t, s.Cgroup) {
		t.Errorf("CgroupID %d, cgroup's id %d", s.CgroupID, cgroupID(t, s.Cgroup))
	}
	if got := pathOf(t, sh.pid()); got != s.Cgroup {
		t.Errorf("shell is in %s, want the session cgroup %s", got, s.Cgroup)
	}
	if got := pathOf(t, login); got != f.root {
		t.Errorf("login process moved to %s; processes that existed before stay put", got)
	}
	if ops := f.k.takeOps(); !slices.Equal(ops, []string{fmt.Sprint("put ", s.CgroupID)}) {
		t.Errorf("kernel ops %q", ops)
	}
	b, _ := f.k.binding(s.CgroupID)
	if b.IdentityID != 1 {
		t.Errorf("binding %+v, want identity 1", b)
	}
	// Expiry is on CLOCK_BOOTTIME: an hour after the login, give or take
	// the time Login took. A minute of slack only guards against reading
	// the two clocks at slightly different instants.
	if lo, hi := before+uint64(time.Hour-time.Minute), after+uint64(time.Hour+time.Minute); b.ExpiresBootNs < lo || b.ExpiresBootNs > hi || b.ExpiresBootNs <= after {
		t.Errorf("binding expires at boot ns %d, want about an hour after %d", b.ExpiresBootNs, before)
	}

	// Someone else's login from the same shell is refused, not replaced.
	if _, _, err := f.m.Login(session.Peer{PID: login, UID: 0}, bob, expires); err == nil || !strings.Contains(err.Error(), "alice") {
		t.Errorf("bob's login over alice's shell = %v, want a refusal naming alice", err)
	}
	if ops := f.k.takeOps(); len(ops) != 0 {
		t.Errorf("refused login changed the kernel: %q", ops)
	}
	if got := pathOf(t, sh.pid()); got != s.Cgroup {
		t.Errorf("refused login moved the shell to %s", got)
	}

	// The same subject logging in again refreshes the session.
	later := expires.Add(time.Hour)
	s2, refreshed, err := f.m.Login(session.Peer{PID: login, UID: 0}, alice, later)
	if err != nil || !refreshed || s2.ID != s.ID || !s2.Expires.Equal(later) {
		t.Errorf("refresh = %+v, %v, %v; want the same session, refreshed", s2, refreshed, err)
	}
	if ops := f.k.takeOps(); !slices.Equal(ops, []string{fmt.Sprint("put ", s.CgroupID)}) {
		t.Errorf("refresh kernel ops %q", ops)
	}
	if b2, _ := f.k.binding(s.CgroupID); b2.ExpiresBootNs <= b.ExpiresBootNs {
		t.Errorf("refresh did not extend the binding: %d then %d", b.ExpiresBootNs, b2.ExpiresBootNs)
	}

	// A process the shell starts now is born in the session.
	child := f.spawnIn(t, sh, s)
	if got, err := f.m.Of(child); err != nil || got.ID != s.ID {
		t.Errorf("Of(child) = %+v, %v", got, err)
	}
	if _, err := f.m.Of(login); !errors.Is(err, session.ErrNoSession) {
		t.Errorf("Of(pre-login process) = %v, want ErrNoSession", err)
	}

	// A restart keeps the session and binds it again.
	k2 := newKernel()
	m2, expired, err := session.Open(session.Options{Dir: f.dir, StateFile: f.state, Kernel: k2})
	if err != nil {
		t.Fatal(err)
	}
	if len(expired) != 0 || len(m2.List()) != 1 || m2.List()[0].ID != s.ID {
		t.Errorf("after restart: sessions %+v, expired %+v", m2.List(), expired)
	}
	if b, ok := k2.binding(s.CgroupID); !ok || b.IdentityID != 1 {
		t.Errorf("restart did not rebind: %+v", b)
	}

	// Logout from inside the session unbinds it; its processes stay.
	out, err := f.m.Logout(session.Peer{PID: child, UID: 0})
	if err != nil || out.ID != s.ID {
		t.Fatalf("Logout = %+v, %v", out, err)
	}
	if ops := f.k.takeOps(); !slices.Equal(ops, []string{fmt.Sprint("delete ", s.CgroupID)}) {
		t.Errorf("logout kernel ops %q", ops)
	}
	if len(f.m.List()) != 0 {
		t.Errorf("sessions after logout: %+v", f.m.List())
	}
	if _, ids := readState(t, f.state); len(ids) != 0 {
		t.Errorf("state after logout: %v", ids)
	}
	if got := pathOf(t, sh.pid()); got != s.Cgroup {
		t.Errorf("logout moved the shell to %s", got)
	}
	if _, err := f.m.Logout(session.Peer{PID: child, UID: 0}); !errors.Is(err, session.ErrNoSession) {
		t.Errorf("second Logout = %v, want ErrNoSession", err)
	}
	// Reap leaves a cgroup that still has processes.
	f.m.Reap()
	if _, err := os.Stat(s.Cgroup); err != nil {
		t.Errorf("Reap removed a cgroup with processes in it: %v", err)
	}

	// Logging in again makes a new session with a new identity id.
	s3, _, err := f.m.Login(session.Peer{PID: child, UID: 0}, bob, expires)
	if err != nil {
		t.Fatalf("login after logout: %v", err)
	}
	if s3.ID == s.ID || s3.IdentityID != 2 || pathOf(t, sh.pid()) != s3.Cgroup {
		t.Errorf("new session %+v; shell in %s", s3, pathOf(t, sh.pid()))
	}
}

// spawnIn starts a child of sh and checks it was born in s's cgroup.
func (f *fixture) spawnIn(t *testing.T, sh *shell, s *session.Session) int {
	t.Helper()
	pid := sh.spawn(t)
	if got := pathOf(t, pid); got != s.Cgroup {
		t.Errorf("child %d born in %s, want %s", pid, got, s.Cgroup)
	}
	return pid
}

func TestLoginRefusals(t *testing.T) {
	f := open(t)
	sh := startShell(t, f.root)
	login := sh.spawn(t)
	future := time.Now().Add(time.Hour)
	tests := []struct {
		name    string
		peer    session.Peer
		expires time.Time
		want    string
	}{
		{"expired token", session.Peer{PID: login, UID: 0}, time.Now().Add(-time.Second), "expired"},
		{"shell of another user", session.Peer{PID: login, UID: 1001}, future, "uid"},
		{"missing process", session.Peer{PID: 1<<22 + 4321, UID: 0}, future, "parent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := f.m.Login(tt.peer, alice, tt.expires)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Login = %v, want an error about %q", err, tt.want)
			}
		})
	}
	if ops := f.k.takeOps(); len(ops) != 0 {
		t.Errorf("refused logins changed the kernel: %q", ops)
	}
	if got := pathOf(t, sh.pid()); got != f.root {
		t.Errorf("refused logins moved the shell to %s", got)
	}
	if entries, _ := os.ReadDir(f.dir); countDirs(entries) != 0 {
		t.Errorf("refused logins left %d session cgroups", countDirs(entries))
	}
}

// TestLoginFromInitChild checks a process whose parent is init cannot log
// in: binding init would bind every process on the host.
func TestLoginFromInitChild(t *testing.T) {
	f := open(t)
	testenv.RequireCommand(t, "sh")
	// sh forks a sleep into the background and exits, so init (or the
	// nearest subreaper) adopts it.
	cmd := testenv.CommandIn(t, f.root, "sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	ppid := parentOf(t, orphan)
	if ppid != 1 {
		t.Skipf("orphans are adopted by subreaper %d here, not init", ppid)
	}
	if _, _, err := f.m.Login(session.Peer{PID: orphan, UID: 0}, alice, time.Now().Add(time.Hour)); err == nil {
		t.Error("login with init as the shell succeeded")
	}
}

func parentOf(t *testing.T, pid int) int {
	t.Helper()
	st, err := procinfo.ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	return st.PPID
}

func countDirs(es []os.DirEntry) int {
	n := 0
	for _, e := range es {
		if e.IsDir() {
			n++
		}
	}
	return n
}

func TestExpire(t *testing.T) {
	f := open(t)
	short, long := startShell(t, f.root), startShell(t, f.root)
	now := time.Now()
	s1, _, err := f.m.Login(session.Peer{PID: short.spawn(t), UID: 0}, alice, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s2, _, err := f.m.Login(session.Peer{PID: long.spawn(t), UID: 0}, bob, now.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	f.k.takeOps()

	if out, err := f.m.Expire(now); err != nil || len(out) != 0 {
		t.Errorf("Expire(now) = %+v, %v; nothing has expired", out, err)
	}
	out, err := f.m.Expire(now.Add(2 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].ID != s1.ID {
		t.Errorf("Expire = %+v, want only %s", out, s1.ID)
	}
	if ops := f.k.takeOps(); !slices.Equal(ops, []string{fmt.Sprint("delete ", s1.CgroupID)}) {
		t.Errorf("kernel ops %q", ops)
	}
	if l := f.m.List(); len(l) != 1 || l[0].ID != s2.ID {
		t.Errorf("List after expiry = %+v", l)
	}
	if _, ids := readState(t, f.state); !slices.Equal(ids, []string{s2.ID}) {
		t.Errorf("state after expiry: %v", ids)
	}
	// Exactly at the expiry instant the session is expired.
	out, err = f.m.Expire(s2.Expires)
	if err != nil || len(out) != 1 || out[0].ID != s2.ID {
		t.Errorf("Expire at the instant = %+v, %v", out, err)
	}

	// Once the expired session's processes are gone, Reap removes its cgroup.
	short.in.Close()
	short.cmd.Process.Kill()
	<-short.waitc
	short.waitc <- nil // for the cleanup
	f.m.Reap()
	if _, err := os.Stat(s1.Cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reap left the empty cgroup of an ended session: %v", err)
	}
}

func TestListOrder(t *testing.T) {
	f := open(t)
	var want []string
	for range 3 {
		sh := startShell(t, f.root)
		s, _, err := f.m.Login(session.Peer{PID: sh.spawn(t), UID: 0}, alice, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, s.ID)
	}
	var got []string
	for _, s := range f.m.List() {
		got = append(got, s.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("List order %v, want login order %v", got, want)
	}
}

// TestRefreshDoesNotMutateHandedOutSessions demonstrates a data race.
//
// ByIdentity, List and Of return the Manager's own *Session values, and
// callers read them without the Manager's lock (the daemon's authorize
// reads s.Expires and s.Identity.Groups on every proxied connection).
// A refreshing Login assigns s.Identity and s.Expires in place
// (session.go, Login: "s.Identity, s.Expires = id, expires"), under m.mu
// only, so those readers race with it: under -race this test's concurrent
// half reports it, and a torn read of the Groups slice header or of the
// time.Time is possible without -race. A fix either replaces the *Session
// in the map on refresh (copy-on-write) or hands out copies; with either,
// a session obtained before the refresh keeps the values it had.
func TestRefreshDoesNotMutateHandedOutSessions(t *testing.T) {
	f := open(t)
	sh := startShell(t, f.root)
	login := sh.spawn(t)
	first := time.Now().Add(time.Hour)
	s, _, err := f.m.Login(session.Peer{PID: login, UID: 0}, alice, first)
	if err != nil {
		t.Fatal(err)
	}
	held, ok := f.m.ByIdentity(s.IdentityID)
	if !ok {
		t.Fatal("no session by identity")
	}
	groups := slices.Clone(held.Identity.Groups)

	// Readers like the daemon's authorize, concurrent with refreshes.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if s, ok := f.m.ByIdentity(held.IdentityID); ok {
				_ = time.Now().Before(s.Expires)
				_ = slices.Contains(s.Identity.Groups, "dba")
			}
		}
	}()
	promoted := alice
	promoted.Groups = []string{"engineering", "dba"}
	later := first.Add(time.Hour)
	for i := range 20 {
		if _, refreshed, err := f.m.Login(session.Peer{PID: login, UID: 0}, promoted, later.Add(time.Duration(i))); err != nil || !refreshed {
			t.Fatalf("refresh: %v, %v", refreshed, err)
		}
	}
	close(stop)
	wg.Wait()

	if now, _ := f.m.ByIdentity(s.IdentityID); !slices.Equal(now.Identity.Groups, promoted.Groups) || !now.Expires.After(first) {
		t.Errorf("refresh not visible: %+v", now)
	}
	if !held.Expires.Equal(first) || !slices.Equal(held.Identity.Groups, groups) {
		t.Errorf("BUG: a *Session handed out before the refresh was modified in place (expires %v -> %v, groups %v -> %v); "+
			"callers read it without the Manager's lock, so this is a data race", first, held.Expires, groups, held.Identity.Groups)
	}
}
