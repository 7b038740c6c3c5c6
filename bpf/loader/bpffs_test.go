package loader

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/wardenhq/warden/agent/config"
	"github.com/wardenhq/warden/tests/testenv"
)

// bpffsChildEnv, when set, makes TestDefaultPinDirWithoutBPFFS the child
// half of itself: it runs in a mount namespace of its own, and its value is
// the parent's mount namespace, which the child must not be in.
const bpffsChildEnv = "WARDEN_LOADER_TEST_BPFFS_CHILD"

// On a host without systemd nothing is mounted at /sys/fs/bpf, and sysfs
// refuses mkdir there. The shipped default pin dir must still work: a bpffs
// is mounted at /sys/fs/bpf (mode 0700) and the dir created on it, not on a
// private mount of its own. The test runs in a mount namespace of its own
// with /sys/fs/bpf unmounted; the host's mounts must be unchanged after.
func TestDefaultPinDirWithoutBPFFS(t *testing.T) {
	if parentNS := os.Getenv(bpffsChildEnv); parentNS != "" {
		defaultPinDirChild(t, parentNS)
		return
	}
	testenv.RequireRoot(t)
	before := bpffsMounts(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestDefaultPinDirWithoutBPFFS$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), bpffsChildEnv+"="+mountNS(t))
	// A new mount namespace; Go also makes every mount in it private
	// before the child runs, as unshare(1) does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child in a private mount namespace: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestDefaultPinDirWithoutBPFFS") {
		t.Fatalf("child did not run the checks:\n%s", out)
	}
	if after := bpffsMounts(t); !slices.Equal(before, after) {
		t.Fatalf("mounts leaked to the host's namespace:\nbefore %q\nafter  %q", before, after)
	}
}

func defaultPinDirChild(t *testing.T, parentNS string) {
	if ns := mountNS(t); ns == parentNS {
		t.Fatalf("child shares the test's mount namespace %s; refusing to touch /sys/fs/bpf", ns)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	// Whatever the host has at /sys/fs/bpf (systemd's mount, stacked
	// ones), this namespace has none.
	for {
		on, err := isBPFFS(BPFFSRoot)
		if err != nil {
			t.Fatal(err)
		}
		if !on {
			break
		}
		if err := unix.Unmount(BPFFSRoot, unix.MNT_DETACH); err != nil {
			t.Fatalf("unmount %s: %v", BPFFSRoot, err)
		}
	}
	if got := bpffsMounts(t); len(got) != 0 {
		t.Fatalf("mounts left under %s: %q", BPFFSRoot, got)
	}

	dir := config.Default().BPFPinDir
	if !underBPFFSRoot(dir) {
		t.Fatalf("the shipped bpf_pin_dir %s is not below %s; this test checks that case", dir, BPFFSRoot)
	}
	if err := ensureBPFFS(dir); err != nil {
		t.Fatalf("ensureBPFFS(%s): %v", dir, err)
	}
	// Idempotent: a second call (a restart) stacks no second mount.
	if err := ensureBPFFS(dir); err != nil {
		t.Fatalf("ensureBPFFS(%s) again: %v", dir, err)
	}
	if got, want := bpffsMounts(t), []string{BPFFSRoot + " bpf"}; !slices.Equal(got, want) {
		t.Fatalf("mounts under %s = %q, want %q (one bpffs at the root, none on the pin dir)", BPFFSRoot, got, want)
	}
	st, err := os.Stat(BPFFSRoot)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("%s mode %v, want 0700", BPFFSRoot, st.Mode().Perm())
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("pin dir %s: %v", dir, err)
	}

	// The dir takes pins.
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(dir, "probe")); err != nil {
		t.Fatalf("pin into %s: %v", dir, err)
	}
	if err := m.Unpin(); err != nil {
		t.Fatal(err)
	}

	// Uninstall removes the emptied pin dir and leaves the shared bpffs.
	if err := unmountPrivateBPFFS(dir); err != nil {
		t.Fatalf("unmountPrivateBPFFS(%s): %v", dir, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("pin dir %s still there after uninstall: %v", dir, err)
	}
	if on, err := isBPFFS(BPFFSRoot); err != nil || !on {
		t.Errorf("%s no longer a bpffs after uninstall: %v", BPFFSRoot, err)
	}

	// Elsewhere the pin dir gets a private bpffs of its own, as before.
	private := filepath.Join(t.TempDir(), "pins")
	if err := ensureBPFFS(private); err != nil {
		t.Fatalf("ensureBPFFS(%s): %v", private, err)
	}
	if !slices.Contains(mountsAt(t, private), "bpf") {
		t.Fatalf("no private bpffs on %s: %q", private, mountsAt(t, private))
	}
	if err := unmountPrivateBPFFS(private); err != nil {
		t.Fatal(err)
	}
	if got := mountsAt(t, private); len(got) != 0 {
		t.Fatalf("private bpffs on %s still mounted: %q", private, got)
	}
}

func mountNS(t *testing.T) string {
	t.Helper()
	ns, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// bpffsMounts lists "mountpoint fstype" for every mount at or below
// BPFFSRoot, in mount order.
func bpffsMounts(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, m := range mountInfo(t) {
		if underBPFFSRoot(m[0]) {
			out = append(out, m[0]+" "+m[1])
		}
	}
	return out
}

// mountsAt lists the fstypes mounted at exactly path.
func mountsAt(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, m := range mountInfo(t) {
		if m[0] == path {
			out = append(out, m[1])
		}
	}
	return out
}

// mountInfo returns {mountpoint, fstype} for every mount this process sees.
func mountInfo(t *testing.T) [][2]string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			t.Fatalf("mountinfo line %q", sc.Text())
		}
		out = append(out, [2]string{unescapeMount(fields[4]), fields[sep+1]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
