package loader

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/tests/testenv"
)

func TestLineageEventLayout(t *testing.T) {
	var e lineageLineageEvent
	offsets := map[string][2]uintptr{
		"exit_code": {unsafe.Offsetof(e.ExitCode), 36},
		"cgroup_id": {unsafe.Offsetof(e.CgroupId), 40},
		"time_ns":   {unsafe.Offsetof(e.TimeNs), 56},
		"self":      {unsafe.Offsetof(e.Self), 64},
		"parent":    {unsafe.Offsetof(e.Parent), 80},
		"path_len":  {unsafe.Offsetof(e.PathLen), 96},
		"args_len":  {unsafe.Offsetof(e.ArgsLen), 98},
		"data":      {unsafe.Offsetof(e.Data), 104},
	}
	for name, o := range offsets {
		if o[0] != o[1] {
			t.Errorf("%s at offset %d, decodeLineage reads it at %d", name, o[0], o[1])
		}
	}
}

// TestLineageKernel runs a real fork+exec+exec chain in a session cgroup of
// the test's own and checks what the kernel reports about it.
func TestLineageKernel(t *testing.T) {
	root := testenv.Cgroup(t)
	sessions := filepath.Join(root, "warden.sessions")
	session := filepath.Join(sessions, "s1")
	if err := cgroupv2.Create(session); err != nil {
		t.Fatal(err)
	}
	l, rd := startLineage(t, sessions)
	sessionID, _ := cgroupv2.ID(session)

	long := strings.Repeat("x", 2000)
	cmd := testenv.CommandIn(t, session, "/bin/sh", "-c", `exec /bin/sh -c "sleep 0.3" `+long)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	// While it sleeps, the kernel's record is readable by pidfd.
	waitChild(t, pid)
	pidfd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		t.Fatal(err)
	}
	task, ok, err := l.Task(pidfd)
	unix.Close(pidfd)
	if err != nil || !ok || task.Image != 2 || !task.Forked || task.ForkParent.TGID != uint32(os.Getpid()) {
		t.Fatalf("task record %+v ok=%v err=%v, want image 2 forked by %d", task, ok, err, os.Getpid())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}

	var got []LineageEvent
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < 4 {
		rd.SetDeadline(time.Now().Add(time.Second))
		var ev LineageEvent
		err := rd.Read(&ev)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if time.Now().After(deadline) {
				t.Fatalf("got %d of 4 events for pid %d: %+v", len(got), pid, got)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.TGID == pid {
			got = append(got, ev)
		}
	}
	fork, sh, sleep, exit := got[0], got[1], got[2], got[3]
	if fork.Kind != LineageFork || sh.Kind != LineageExec || sleep.Kind != LineageExec || exit.Kind != LineageExit {
		t.Fatalf("kinds %v %v %v %v", fork.Kind, sh.Kind, sleep.Kind, exit.Kind)
	}
	for _, ev := range got {
		if ev.SessionCgroupID != sessionID || ev.CgroupID != sessionID {
			t.Errorf("%v: cgroup %d session %d, want %d", ev.Kind, ev.CgroupID, ev.SessionCgroupID, sessionID)
		}
	}
	if fork.Parent.TGID != uint32(os.Getpid()) || fork.Self.Image != 0 {
		t.Errorf("fork %+v", fork)
	}
	// sh's parent is the image that forked, not the forked copy.
	if sh.Path != "/bin/sh" || sh.Self.Image != 1 || sh.Parent != fork.Parent {
		t.Errorf("sh exec %+v", sh)
	}
	// The exec chain: sleep's parent is sh, same pid.
	if sleep.Path != "/bin/sh" || sleep.Self.Image != 2 || sleep.Parent != sh.Self {
		t.Errorf("sleep exec %+v", sleep)
	}
	if sleep.Flags&LineageArgsTruncated == 0 || len(sleep.Args) < 3 || sleep.Args[0] != "/bin/sh" || sleep.Args[2] != "sleep 0.3" {
		t.Errorf("sleep args %q flags %d", sleep.Args, sleep.Flags)
	}
	if exit.Self != sleep.Self || exit.ExitCode != 0 {
		t.Errorf("exit %+v", exit)
	}
	if sh.Self.StartNs != fork.Self.StartNs || fork.Self.StartNs == 0 {
		t.Errorf("start times differ: fork %d exec %d", fork.Self.StartNs, sh.Self.StartNs)
	}
	c, err := l.Counters()
	if err != nil || c["events"] < 4 {
		t.Fatalf("counters %v %v", c, err)
	}
}

func mustMount(t *testing.T) string {
	m, err := cgroupv2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestLineageFilter checks that only tracked processes reach the ring: a
// process outside any session sends nothing; one marked for itself sends
// its own exec and exit but not its children's; one marked with its
// descendants sends its children's too.
func TestLineageFilter(t *testing.T) {
	root := testenv.Cgroup(t)
	sessions := filepath.Join(root, "warden.sessions")
	if err := cgroupv2.Create(sessions); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(root, "outside")
	if err := cgroupv2.Create(outside); err != nil {
		t.Fatal(err)
	}
	l, rd := startLineage(t, sessions)

	// Each shell sleeps first (forked before it is marked, so unseen),
	// then runs a child and execs a last image.
	script := "sleep 0.4; /bin/true; exec /bin/sleep 0.1"
	start := func() (*exec.Cmd, uint32) {
		cmd := testenv.CommandIn(t, outside, "/bin/sh", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, uint32(cmd.Process.Pid)
	}
	untracked, untrackedPID := start()
	self, selfPID := start()
	inherit, inheritPID := start()
	for pid, inh := range map[uint32]bool{selfPID: false, inheritPID: true} {
		// Marked once the first sleep runs, so the shell's one fork
		// seen is /bin/true's.
		waitChild(t, pid)
		fd, err := unix.PidfdOpen(int(pid), 0)
		if err != nil {
			t.Fatal(err)
		}
		task, err := l.Track(fd, inh)
		if err != nil || !task.Tracked || task.Inherit != inh || task.Image != 0 {
			t.Fatalf("track %d: %+v %v", pid, task, err)
		}
		// Marking again keeps the record.
		if again, err := l.Track(fd, inh); err != nil || again != task {
			t.Fatalf("track %d again: %+v %v", pid, again, err)
		}
		unix.Close(fd)
	}
	for _, c := range []*exec.Cmd{untracked, self, inherit} {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
	}

	type seen struct{ forks, execs, exits, childExecs int }
	got := map[uint32]*seen{untrackedPID: {}, selfPID: {}, inheritPID: {}}
	children := map[uint32]uint32{} // child tgid -> shell
	deadline := time.Now().Add(10 * time.Second)
	for got[selfPID].exits == 0 || got[inheritPID].exits == 0 {
		rd.SetDeadline(time.Now().Add(time.Second))
		var ev LineageEvent
		err := rd.Read(&ev)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if time.Now().After(deadline) {
				t.Fatalf("tracked shells' exits not seen: %+v %+v", *got[selfPID], *got[inheritPID])
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if s := got[ev.PPID]; s != nil && ev.Kind == LineageFork {
			s.forks++
			children[ev.TGID] = ev.PPID
		}
		if sh, ok := children[ev.TGID]; ok && ev.Kind == LineageExec {
			got[sh].childExecs++
		}
		if s := got[ev.TGID]; s != nil {
			switch ev.Kind {
			case LineageExec:
				s.execs++
				if ev.Flags&LineageInherit != 0 != (ev.TGID == inheritPID) {
					t.Errorf("exec of %d flags %#x", ev.TGID, ev.Flags)
				}
			case LineageExit:
				s.exits++
			}
		}
	}
	if s := got[untrackedPID]; *s != (seen{}) {
		t.Errorf("untracked shell reported: %+v", *s)
	}
	if s := got[selfPID]; *s != (seen{execs: 1, exits: 1}) {
		t.Errorf("shell tracked for itself: %+v, want its exec and exit only", *s)
	}
	if s := got[inheritPID]; *s != (seen{forks: 1, execs: 1, exits: 1, childExecs: 1}) {
		t.Errorf("shell tracked with its descendants: %+v, want its child's fork and exec too", *s)
	}
}

// waitChild waits until process pid has a child: a shell has started its
// first command.
func waitChild(t *testing.T, pid uint32) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if len(strings.TrimSpace(string(b))) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never started a child", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLineageThreadExec: a thread of a tracked process carries the
// tracking, so an exec from it (not the leader) is still reported; the
// same exec in an untracked process is not.
func TestLineageThreadExec(t *testing.T) {
	python := testenv.RequireCommand(t, "python3")
	root := testenv.Cgroup(t)
	l, rd := startLineage(t, "")

	// The thread starts once the process reads a line, after it was marked.
	const script = `import os, sys, threading
sys.stdin.readline()
t = threading.Thread(target=os.execv, args=("/bin/true", ["/bin/true"]))
t.start()
t.join()
`
	start := func(track bool) (*exec.Cmd, uint32) {
		cmd := testenv.CommandIn(t, root, python, "-c", script)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := uint32(cmd.Process.Pid)
		if track {
			fd, err := unix.PidfdOpen(int(pid), 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Track(fd, false); err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		}
		// Wait until the interpreter runs the script (a shim may exec it).
		for deadline := time.Now().Add(10 * time.Second); ; {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if strings.Contains(string(b), "threading") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("python %d did not start", pid)
			}
			time.Sleep(5 * time.Millisecond)
		}
		in.Write([]byte("\n"))
		in.Close()
		return cmd, pid
	}
	untracked, untrackedPID := start(false)
	tracked, trackedPID := start(true)
	for _, c := range []*exec.Cmd{untracked, tracked} {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	var threadExec *LineageEvent
	deadline := time.Now().Add(10 * time.Second)
	for exited := false; !exited; {
		rd.SetDeadline(time.Now().Add(time.Second))
		var ev LineageEvent
		err := rd.Read(&ev)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if time.Now().After(deadline) {
				t.Fatalf("exit of the tracked process %d not seen (thread exec %+v)", trackedPID, threadExec)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case ev.TGID == untrackedPID:
			t.Errorf("untracked process reported: %+v", ev)
		case ev.TGID == trackedPID && ev.Kind == LineageExec && ev.Flags&LineageThreadExec != 0:
			threadExec = &ev
		case ev.TGID == trackedPID && ev.Kind == LineageExit:
			exited = true
		}
	}
	if threadExec == nil || threadExec.Path != "/bin/true" || threadExec.Self.Image != 1 {
		t.Fatalf("thread exec of the tracked process: %+v", threadExec)
	}
}

// startLineage loads the lineage programs with a private pin directory and
// opens their events, all undone when the test ends. sessions, unless "",
// is the cgroup whose children the programs treat as login sessions.
func startLineage(t *testing.T, sessions string) (*Lineage, *LineageReader) {
	t.Helper()
	pins := filepath.Join(t.TempDir(), "pins")
	// Runs last: a failed load must not leave the private bpffs mounted.
	t.Cleanup(func() { unix.Unmount(pins, 0) })
	l, err := LoadLineage(LineageOptions{PinDir: pins})
	if err != nil {
		t.Fatalf("load lineage: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Uninstall(); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	if sessions != "" {
		id, _ := cgroupv2.ID(sessions)
		level := uint32(strings.Count(strings.TrimPrefix(sessions, mustMount(t)), "/"))
		if err := l.SetSessionsCgroup(id, level); err != nil {
			t.Fatal(err)
		}
	}
	rd, err := l.Events()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return l, rd
}
