package cgroupv2

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// writeKill writes the cgroup's kill switch; tests replace it to take the
// path of kernels without one.
var writeKill = func(path string) error {
	return os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
}

// killPoll is how often Kill looks whether the killed processes are gone.
const killPoll = 5 * time.Millisecond

// Kill ends every process in the cgroup tree at path, and returns once
// none is left, or with ctx's error when ctx is done first. The pids it
// returns are the ones it found in the tree before killing: the kernel
// kills any process forked since too.
//
// cgroup.kill (Linux 5.14 and later) kills the whole tree at once, forks
// in progress included, and reaches processes that changed user (sudo)
// since they stay in the cgroup. Without it, every pid in the tree's
// cgroup.procs gets SIGKILL, again and again until the tree is empty, so
// that a process forked between the listing and the signal does not
// escape. The cgroup itself stays; see Remove.
func Kill(ctx context.Context, path string) ([]int, error) {
	pids, err := TreeProcs(path)
	if err != nil {
		return nil, err
	}
	kill := writeKill(path)
	if kill != nil && !errors.Is(kill, fs.ErrNotExist) {
		return pids, fmt.Errorf("kill cgroup %s: %w", path, kill)
	}
	for {
		left, err := TreeProcs(path)
		if err != nil {
			return pids, err
		}
		if len(left) == 0 {
			return pids, nil
		}
		if kill != nil { // no cgroup.kill
			for _, pid := range left {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		select {
		case <-ctx.Done():
			return pids, fmt.Errorf("kill cgroup %s: %d processes left: %w", path, len(left), ctx.Err())
		case <-time.After(killPoll):
		}
	}
}

// TreeProcs lists the processes of the cgroup at path and of every cgroup
// below it.
func TreeProcs(path string) ([]int, error) {
	var all []int
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != path && errors.Is(err, fs.ErrNotExist) {
				return nil // a child removed while we walk
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		pids, err := Procs(p)
		if err != nil {
			if p != path && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		all = append(all, pids...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", path, err)
	}
	return all, nil
}
