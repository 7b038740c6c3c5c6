package cgroupv2_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/tests/testenv"
)

// hang bounds waits for processes; nothing depends on how long they take.
const hang = 10 * time.Second

// startSleep starts a long sleep directly inside the cgroup dir and kills it
// when the test ends, if the test did not.
func startSleep(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	testenv.RequireCommand(t, "sleep")
	cmd := testenv.CommandIn(t, dir, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep in %s: %v", dir, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

func TestCreateAndID(t *testing.T) {
	root := testenv.Cgroup(t)
	dir := filepath.Join(root, "a", "b", "c")
	if err := cgroupv2.Create(dir); err != nil {
		t.Fatal(err)
	}
	// Creating again is fine: login may race with a restart's recovery.
	if err := cgroupv2.Create(dir); err != nil {
		t.Fatalf("second Create: %v", err)
	}
	for _, d := range []string{filepath.Join(root, "a"), filepath.Join(root, "a", "b"), dir} {
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err != nil {
			t.Errorf("%s is not a cgroup: %v", d, err)
		}
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		id, err := cgroupv2.ID(d)
		if err != nil {
			t.Fatal(err)
		}
		if ino := fi.Sys().(*syscall.Stat_t).Ino; id != ino || id == 0 {
			t.Errorf("ID(%s) = %d, inode %d", d, id, ino)
		}
	}
	a, _ := cgroupv2.ID(filepath.Join(root, "a"))
	c, _ := cgroupv2.ID(dir)
	if a == c {
		t.Error("two cgroups share an id")
	}
	if _, err := cgroupv2.ID(filepath.Join(root, "missing")); err == nil {
		t.Error("ID of a missing cgroup succeeded")
	}
}

// TestIDIsKernelCgroupID checks ID against the id the kernel reports for a
// cgroup through name_to_handle_at, which is the kernfs node id that
// bpf_get_current_cgroup_id() returns too.
func TestIDIsKernelCgroupID(t *testing.T) {
	dir := testenv.Cgroup(t)
	id, err := cgroupv2.ID(dir)
	if err != nil {
		t.Fatal(err)
	}
	fh, _, err := unix.NameToHandleAt(unix.AT_FDCWD, dir, 0)
	if err != nil {
		t.Skipf("name_to_handle_at on cgroup2: %v", err)
	}
	h := fh.Bytes()
	if len(h) != 8 {
		t.Skipf("cgroup file handle of %d bytes", len(h))
	}
	var kid uint64
	for i := 7; i >= 0; i-- { // host byte order: little-endian on our machines
		kid = kid<<8 | uint64(h[i])
	}
	if kid != id {
		t.Errorf("ID = %d, kernel cgroup id %d", id, kid)
	}
}

func TestMoveProcsPathOf(t *testing.T) {
	root := testenv.Cgroup(t)
	mount, err := cgroupv2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(root, mount+"/") {
		t.Fatalf("test cgroup %s is not under the mount %s", root, mount)
	}
	from, to := filepath.Join(root, "from"), filepath.Join(root, "to")
	for _, d := range []string{from, to} {
		if err := cgroupv2.Create(d); err != nil {
			t.Fatal(err)
		}
	}
	cmd := startSleep(t, from)
	pid := cmd.Process.Pid

	expectIn := func(dir string) {
		t.Helper()
		got, err := cgroupv2.PathOf(mount, pid)
		if err != nil {
			t.Fatal(err)
		}
		if got != dir {
			t.Errorf("PathOf(%d) = %s, want %s", pid, got, dir)
		}
		procs, err := cgroupv2.Procs(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(procs, []int{pid}) {
			t.Errorf("Procs(%s) = %v, want [%d]", dir, procs, pid)
		}
	}
	expectIn(from)
	if procs, err := cgroupv2.Procs(to); err != nil || len(procs) != 0 {
		t.Errorf("Procs(to) = %v, %v; want empty", procs, err)
	}

	if err := cgroupv2.Move(to, pid); err != nil {
		t.Fatal(err)
	}
	expectIn(to)
	if procs, err := cgroupv2.Procs(from); err != nil || len(procs) != 0 {
		t.Errorf("Procs(from) = %v, %v; want empty after the move", procs, err)
	}

	// Procs lists only direct members, not those of child cgroups.
	if procs, err := cgroupv2.Procs(root); err != nil || len(procs) != 0 {
		t.Errorf("Procs(root) = %v, %v; want empty", procs, err)
	}
}

func TestPathOfOwnProcess(t *testing.T) {
	testenv.RequireRoot(t)
	mount, err := cgroupv2.Mount()
	if err != nil {
		testenv.Unavailable(t, "cgroup2: %v", err)
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var rel string
	for _, l := range strings.Split(string(data), "\n") {
		if r, ok := strings.CutPrefix(l, "0::"); ok {
			rel = r
		}
	}
	got, err := cgroupv2.PathOf(mount, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(mount, rel); got != want {
		t.Errorf("PathOf(self) = %s, want %s", got, want)
	}
	if _, err := os.Stat(got); err != nil {
		t.Errorf("PathOf(self) does not exist: %v", err)
	}
}

func TestErrors(t *testing.T) {
	root := testenv.Cgroup(t)
	missing := filepath.Join(root, "missing")
	if err := cgroupv2.Move(missing, os.Getpid()); err == nil {
		t.Error("Move into a missing cgroup succeeded")
	}
	if err := cgroupv2.Move(root, 1<<22+12345); err == nil {
		t.Error("Move of a missing pid succeeded")
	}
	if _, err := cgroupv2.Procs(missing); err == nil {
		t.Error("Procs of a missing cgroup succeeded")
	}
	if _, err := cgroupv2.PathOf("/sys/fs/cgroup", 1<<22+12345); err == nil {
		t.Error("PathOf a missing pid succeeded")
	}
	if err := cgroupv2.Remove(missing); err != nil {
		t.Errorf("Remove of a missing cgroup: %v", err)
	}
}

// TestRemoveKillsNestedTree fills a tree with processes at several depths,
// including one that ignores SIGTERM, and checks Remove leaves nothing.
func TestRemoveKillsNestedTree(t *testing.T) {
	root := testenv.Cgroup(t)
	tree := filepath.Join(root, "session")
	dirs := []string{tree, filepath.Join(tree, "a"), filepath.Join(tree, "a", "b"), filepath.Join(tree, "c")}
	for _, d := range dirs {
		if err := cgroupv2.Create(d); err != nil {
			t.Fatal(err)
		}
	}
	var waits []chan error
	for _, d := range dirs[1:] { // processes in leaves and inner nodes, not the top
		cmd := startSleep(t, d)
		w := make(chan error, 1)
		go func() { w <- cmd.Wait() }()
		waits = append(waits, w)
	}
	testenv.RequireCommand(t, "sh")
	stubborn := testenv.CommandIn(t, filepath.Join(tree, "a", "b"), "sh", "-c", "trap '' TERM; sleep 600 & wait")
	if err := stubborn.Start(); err != nil {
		t.Fatal(err)
	}
	w := make(chan error, 1)
	go func() { w <- stubborn.Wait() }()
	waits = append(waits, w)

	if err := cgroupv2.Remove(tree); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(tree); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tree still there: %v", err)
	}
	for i, w := range waits {
		select {
		case err := <-w:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Errorf("process %d ended with %v, want SIGKILL", i, err)
			}
		case <-time.After(hang):
			t.Errorf("process %d survived Remove", i)
		}
	}
	// The parent is untouched.
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		t.Errorf("Remove took the parent too: %v", err)
	}
}

func TestRemoveEmptyTree(t *testing.T) {
	root := testenv.Cgroup(t)
	tree := filepath.Join(root, "x")
	if err := cgroupv2.Create(filepath.Join(tree, "y", "z")); err != nil {
		t.Fatal(err)
	}
	if err := cgroupv2.Remove(tree); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestMountMatchesProc(t *testing.T) {
	mount, err := cgroupv2.Mount()
	if errors.Is(err, cgroupv2.ErrNotMounted) {
		testenv.Unavailable(t, "no cgroup2 mount")
	}
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mount, &st); err != nil {
		t.Fatal(err)
	}
	const cgroup2SuperMagic = 0x63677270
	if st.Type != cgroup2SuperMagic {
		t.Errorf("%s has fs type %#x, want cgroup2", mount, st.Type)
	}
}
