package loader

import (
	"errors"
	"os"
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
	sessionsID, _ := cgroupv2.ID(sessions)
	sessionID, _ := cgroupv2.ID(session)
	level := uint32(strings.Count(strings.TrimPrefix(sessions, mustMount(t)), "/"))
	if err := l.SetSessionsCgroup(sessionsID, level); err != nil {
		t.Fatal(err)
	}
	rd, err := l.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	long := strings.Repeat("x", 2000)
	cmd := testenv.CommandIn(t, session, "/bin/sh", "-c", `exec /bin/sh -c "sleep 0.3" `+long)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	// While it sleeps, the kernel's record is readable by pidfd.
	time.Sleep(100 * time.Millisecond)
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
