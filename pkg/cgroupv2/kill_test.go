package cgroupv2_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/tests/testenv"
)

// TestKill fills a session-like tree (a shell-like parent with a child in
// a nested cgroup, and a sleep) and checks that Kill ends all of them,
// reports their pids and leaves the cgroups and a sibling alone; once with
// cgroup.kill and once without.
func TestKill(t *testing.T) {
	for _, withKillFile := range []bool{true, false} {
		name := "cgroup.kill"
		if !withKillFile {
			name = "SIGKILL fallback"
		}
		t.Run(name, func(t *testing.T) {
			if !withKillFile {
				saved := *cgroupv2.WriteKill
				*cgroupv2.WriteKill = func(string) error { return fs.ErrNotExist }
				t.Cleanup(func() { *cgroupv2.WriteKill = saved })
			}
			root := testenv.Cgroup(t)
			tree, nested, sibling := filepath.Join(root, "session"), filepath.Join(root, "session", "sub"), filepath.Join(root, "other")
			for _, d := range []string{tree, nested, sibling} {
				if err := cgroupv2.Create(d); err != nil {
					t.Fatal(err)
				}
			}
			testenv.RequireCommand(t, "sh")
			// sh ignores TERM and waits on its child: both must die.
			parent := testenv.CommandIn(t, tree, "sh", "-c", "trap '' TERM; sleep 1000 & wait")
			sleeper := startSleep(t, nested)
			bystander := startSleep(t, sibling)
			if err := parent.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { parent.Process.Kill(); parent.Wait() })
			waits := map[string]chan error{}
			for n, c := range map[string]*exec.Cmd{"sh": parent, "sleep": sleeper} {
				w := make(chan error, 1)
				go func() { w <- c.Wait() }()
				waits[n] = w
			}
			// The sh's child is in the tree once its cgroup.procs lists
			// two processes.
			for deadline := time.Now().Add(hang); ; time.Sleep(5 * time.Millisecond) {
				pids, err := cgroupv2.Procs(tree)
				if err != nil {
					t.Fatal(err)
				}
				if len(pids) == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the sh never started its child: %v", pids)
				}
			}

			ctx, cancel := context.WithTimeout(context.Background(), hang)
			defer cancel()
			killed, err := cgroupv2.Kill(ctx, tree)
			if err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if len(killed) != 3 || !slices.Contains(killed, parent.Process.Pid) || !slices.Contains(killed, sleeper.Process.Pid) {
				t.Errorf("Kill reported %v, want sh %d, its child and sleep %d", killed, parent.Process.Pid, sleeper.Process.Pid)
			}
			for _, d := range []string{tree, nested} {
				if pids, err := cgroupv2.Procs(d); err != nil || len(pids) != 0 {
					t.Errorf("%s still has %v (%v) after Kill returned", d, pids, err)
				}
			}
			for n, w := range waits {
				err := <-w
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Errorf("%s ended with %v, want SIGKILL", n, err)
				}
			}
			if err := bystander.Process.Signal(syscall.Signal(0)); err != nil {
				t.Errorf("the sibling cgroup's process died: %v", err)
			}
			if _, err := os.Stat(filepath.Join(tree, "cgroup.procs")); err != nil {
				t.Errorf("Kill removed the cgroup: %v", err)
			}
		})
	}
}
