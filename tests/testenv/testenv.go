// Package testenv gives Warden's privileged tests their own cgroup subtree
// and network namespace, and enforces the CI rule that a test which cannot
// run fails instead of skipping.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/wardenhq/warden/pkg/cgroupv2"
)

// InCI reports whether the tests run under CI (CI=true), where nothing that
// needs root, BPF or a server may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips the test outside CI and fails it in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required in CI: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot stops the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (run 'sudo make test')")
	}
}

// RequireCommand stops the test unless name is on PATH, and returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "needs %s on PATH", name)
	}
	return p
}

// RandomName returns prefix followed by random hex, for cgroups, netns and
// pin directories that must not collide with a parallel run.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Cgroup creates a fresh cgroup subtree for the test under the cgroup2
// mount and removes it, with every process inside, when the test ends.
func Cgroup(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	mount, err := cgroupv2.Mount()
	if err != nil {
		Unavailable(t, "cgroup2: %v", err)
	}
	dir := filepath.Join(mount, RandomName("warden-test-"))
	if err := cgroupv2.Create(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cgroupv2.Remove(dir); err != nil {
			t.Errorf("clean up test cgroup: %v", err)
		}
	})
	return dir
}

// CommandIn returns a command that starts directly inside the cgroup at
// dir (clone3 CLONE_INTO_CGROUP), so it never runs a moment outside it.
func CommandIn(t testing.TB, dir, name string, args ...string) *exec.Cmd {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatalf("open cgroup %s: %v", dir, err)
	}
	t.Cleanup(func() { f.Close() })
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	return cmd
}
