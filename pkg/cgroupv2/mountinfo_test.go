package cgroupv2

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Real lines, trimmed, from a hybrid host (the bastions), a unified host
// and a container.
const (
	hybridMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:13 - cgroup2 cgroup2 rw,nsdelegate
`
	unifiedMountinfo = `24 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	// No optional fields at all, as in a container's private mounts.
	containerMountinfo = `612 590 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
620 612 0:56 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
`
	escapedMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
50 22 0:40 / /mnt/my\040cgroups\011x\134y rw,relatime shared:20 - cgroup2 none rw
`
	v1OnlyMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
`
	// A cgroup v1 hierarchy mounted at a path named like the v2 type must
	// not be taken for it: only the fstype after "-" counts.
	trickyMountinfo = `32 31 0:29 / /cgroup2 rw,relatime shared:5 - cgroup cgroup2 rw,cpu
33 31 0:30 /cgroup2 /x rw,relatime - tmpfs cgroup2 rw
`
)

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		name, in, want string
		err            error
	}{
		{name: "hybrid", in: hybridMountinfo, want: "/sys/fs/cgroup/unified"},
		{name: "unified", in: unifiedMountinfo, want: "/sys/fs/cgroup"},
		{name: "container", in: containerMountinfo, want: "/sys/fs/cgroup"},
		{name: "escaped", in: escapedMountinfo, want: "/mnt/my cgroups\tx\\y"},
		{name: "first of two", in: unifiedMountinfo + hybridMountinfo, want: "/sys/fs/cgroup"},
		{name: "v1 only", in: v1OnlyMountinfo, err: ErrNotMounted},
		{name: "fstype only after dash", in: trickyMountinfo, err: ErrNotMounted},
		{name: "empty", in: "", err: ErrNotMounted},
		{name: "short lines", in: "- cgroup2\n1 2 - cgroup2 x\n\n", err: ErrNotMounted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMountinfo(tempFile(t, tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("mount = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUnescapeMountPath(t *testing.T) {
	tests := map[string]string{
		"/sys/fs/cgroup":         "/sys/fs/cgroup",
		`/a\040b`:                "/a b",
		`/a\040`:                 "/a ",
		`\040`:                   " ",
		`/a\012b\134`:            "/a\nb\\",
		`/a\04`:                  `/a\04`, // too short to be an escape
		`/a\999`:                 `/a\999`,
		`/a\`:                    `/a\`,
		`/x\040y\040z`:           "/x y z",
		`/\134040`:               `/\040`, // an escaped backslash is not re-read
		`/mnt/\303\251t\303\251`: "/mnt/été",
	}
	for in, want := range tests {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// tempFile returns an open file holding content; parseMountinfo reads an
// *os.File.
func tempFile(t *testing.T, content string) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
