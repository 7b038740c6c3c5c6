package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wardenhq/warden/tests/testenv"
)

// MountNS is a mount namespace of the test's own in which nothing is
// mounted at /sys/fs/bpf, as on a host without systemd. Every mount in it
// is private: what wardend mounts there never reaches the host. It lives,
// kept by a bind mount of its nsfs file, until the test ends; the bpffs a
// wardend mounts in it, and every pin on that bpffs, go with it.
type MountNS struct {
	// Path is the namespace's file, for nsenter --mount.
	Path string
}

// NewMountNS creates the namespace and removes it when the test ends.
// Register it before anything that runs in it, so it goes last.
func NewMountNS(t testing.TB) *MountNS {
	t.Helper()
	testenv.RequireRoot(t)
	unshare := testenv.RequireCommand(t, "unshare")
	testenv.RequireCommand(t, "nsenter")
	testenv.RequireCommand(t, "umount")
	testenv.RequireCommand(t, "stat")
	dir, err := os.MkdirTemp("", "warden-mntns-")
	if err != nil {
		t.Fatal(err)
	}
	// The nsfs file must sit on a private mount: on a shared one it would
	// propagate into the namespace it names, which the kernel refuses.
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("bind %s: %v", dir, err)
	}
	m := &MountNS{Path: filepath.Join(dir, "mnt")}
	t.Cleanup(func() {
		if err := unix.Unmount(m.Path, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			t.Errorf("release mount namespace %s: %v", m.Path, err)
		}
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		os.RemoveAll(dir)
	})
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make %s private: %v", dir, err)
	}
	if err := os.WriteFile(m.Path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Whatever the host has at /sys/fs/bpf (systemd's bpffs, stacked
	// ones), the namespace has none.
	script := `while [ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ]; do umount -l /sys/fs/bpf || exit 1; done`
	if out, err := exec.Command(unshare, "--mount="+m.Path, "--propagation", "private", "--", "sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("unshare --mount: %v: %s", err, out)
	}
	if fs := m.FSType(t, "/sys/fs/bpf"); fs == "bpf_fs" {
		t.Fatalf("/sys/fs/bpf is still a bpffs in the test's mount namespace")
	}
	return m
}

// Command returns a command that runs inside the namespace.
func (m *MountNS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--mount=" + m.Path, "--", name}, args...)...)
}

// FSType is the type of the file system at path inside the namespace, as
// stat -f names it ("bpf_fs", "sysfs").
func (m *MountNS) FSType(t testing.TB, path string) string {
	t.Helper()
	out, err := m.Command("stat", "-f", "-c", "%T", path).CombinedOutput()
	if err != nil {
		t.Fatalf("stat -f %s in the test's mount namespace: %v: %s", path, err, out)
	}
	return strings.TrimSpace(string(out))
}
