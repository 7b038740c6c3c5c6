package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// BPFFSRoot is where the shared bpffs lives by convention. systemd mounts it
// at boot; without systemd nothing may be mounted there, and /sys/fs/bpf is
// then a plain sysfs directory in which nothing can be created.
const BPFFSRoot = "/sys/fs/bpf"

// ensureBPFFS makes dir a directory on a bpffs.
//
// A dir below BPFFSRoot is meant to live on the shared bpffs, so if nothing
// is mounted at BPFFSRoot a bpffs is mounted there first, as systemd and
// cilium do (mode 0700, nosuid, nodev, noexec); the mount stays after the
// agent ends, like systemd's, since other BPF tools may pin there too.
//
// Any other dir that is not on a bpffs gets a private bpffs instance mounted
// on dir itself: pins then live exactly as long as that mount, independent
// of whatever else uses /sys/fs/bpf.
func ensureBPFFS(dir string) error {
	dir = filepath.Clean(dir)
	if underBPFFSRoot(dir) {
		if err := mountBPFFSRoot(); err != nil {
			return fmt.Errorf("pin dir %s: %w", dir, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir %s: %w", dir, err)
	}
	onBPFFS, err := isBPFFS(dir)
	if err != nil {
		return err
	}
	if onBPFFS {
		return nil
	}
	if err := unix.Mount("bpffs", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return nil
}

// underBPFFSRoot reports whether the clean path dir is BPFFSRoot or below it.
func underBPFFSRoot(dir string) bool {
	return dir == BPFFSRoot || strings.HasPrefix(dir, BPFFSRoot+"/")
}

// mountBPFFSRoot mounts a bpffs at BPFFSRoot unless one is there already.
func mountBPFFSRoot() error {
	onBPFFS, err := isBPFFS(BPFFSRoot)
	if err != nil {
		return err
	}
	if onBPFFS {
		return nil
	}
	// systemd's flags and mode for the same mount (mount-setup.c).
	if err := unix.Mount("bpffs", BPFFSRoot, "bpf", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		return fmt.Errorf("no bpffs mounted at %s, and mounting one failed: %w", BPFFSRoot, err)
	}
	return nil
}

func isBPFFS(dir string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Type == unix.BPF_FS_MAGIC, nil
}

// unmountPrivateBPFFS unmounts dir if it is a bpffs mount point of its own.
// The shared bpffs at BPFFSRoot is never unmounted: other tools may pin
// there. A pin dir below it is removed instead once empty, so an uninstall
// leaves nothing behind there.
func unmountPrivateBPFFS(dir string) error {
	dir = filepath.Clean(dir)
	if dir == BPFFSRoot {
		return nil
	}
	err := unix.Unmount(dir, 0)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		// EINVAL: dir is not a mount point, the pins lived on a shared bpffs.
		return fmt.Errorf("unmount bpffs %s: %w", dir, err)
	}
	if !underBPFFSRoot(dir) {
		return nil
	}
	err = os.Remove(dir)
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		// Not empty: the lineage pins below the enforcer's go first (see
		// wardend uninstall), and the enforcer's dir then goes with it.
		return nil
	}
	return fmt.Errorf("remove pin dir %s: %w", dir, err)
}
