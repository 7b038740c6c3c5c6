package loader

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ensureBPFFS makes dir a directory on a bpffs. If it is not on one, a
// private bpffs instance is mounted on dir itself: pins then live exactly as
// long as that mount, independent of whatever else uses /sys/fs/bpf.
func ensureBPFFS(dir string) error {
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

func isBPFFS(dir string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Type == unix.BPF_FS_MAGIC, nil
}

// unmountPrivateBPFFS unmounts dir if it is a bpffs mount point of its own.
func unmountPrivateBPFFS(dir string) error {
	err := unix.Unmount(dir, 0)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		// EINVAL: dir is not a mount point, the pins lived on a shared bpffs.
		return nil
	}
	return fmt.Errorf("unmount bpffs %s: %w", dir, err)
}
