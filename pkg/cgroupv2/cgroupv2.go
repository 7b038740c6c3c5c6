// Package cgroupv2 finds the cgroup v2 hierarchy and creates, fills and
// removes cgroups in it. Warden uses one cgroup per login session: a process
// cannot leave it without write access to cgroup files that only root has,
// and every child it starts is born inside it.
package cgroupv2

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotMounted means no cgroup2 file system is mounted.
var ErrNotMounted = errors.New("no cgroup2 file system is mounted")

// Mount returns the mount point of the cgroup2 file system, read from
// /proc/self/mountinfo (never assumed: hybrid hosts mount it at
// /sys/fs/cgroup/unified, unified hosts at /sys/fs/cgroup).
func Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	return parseMountinfo(f)
}

func parseMountinfo(f *os.File) (string, error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Fields: id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && i >= 4 {
				if fields[i+1] == "cgroup2" {
					return unescapeMountPath(fields[4]), nil
				}
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	return "", ErrNotMounted
}

// unescapeMountPath undoes the octal escapes mountinfo uses for spaces and
// the like.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ID returns the kernel's id for the cgroup at path: the inode number of
// its directory, which is what bpf_get_current_cgroup_id() reports.
func ID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", path, err)
	}
	return st.Ino, nil
}

// Create makes the cgroup at path (and missing parents) with the given
// mode for the directory. Files inside are owned by root and writable only
// by root, so unprivileged processes cannot move themselves in or out.
func Create(path string) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("create cgroup %s: %w", path, err)
	}
	return nil
}

// Move moves the process pid into the cgroup at path.
func Move(path string, pid int) error {
	if err := os.WriteFile(filepath.Join(path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("move pid %d into %s: %w", pid, path, err)
	}
	return nil
}

// Procs lists the processes directly in the cgroup at path.
func Procs(path string) ([]int, error) {
	data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("list processes of %s: %w", path, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s/cgroup.procs: %q: %w", path, f, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// PathOf returns the cgroup v2 directory of process pid, under mount.
func PathOf(mount string, pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mount, rest), nil
		}
	}
	return "", fmt.Errorf("pid %d has no cgroup v2 entry", pid)
}

// Remove kills every process in the cgroup tree at path and removes the
// tree, deepest first. A missing path is not an error.
func Remove(path string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var dirs []string
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk cgroup %s: %w", path, err)
	}
	kill(path)
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := rmdirWhenEmpty(dirs[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// kill ends every process below path: cgroup.kill where the kernel has it
// (5.14+), SIGKILL per pid otherwise.
func kill(path string) {
	if os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0) == nil {
		return
	}
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			pids, _ := Procs(p)
			for _, pid := range pids {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		return nil
	})
}

// rmdirWhenEmpty retries while killed processes are still being reaped;
// the cgroup becomes removable only once they are gone.
func rmdirWhenEmpty(dir string) error {
	var err error
	for i := 0; i < 100; i++ {
		err = unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}
