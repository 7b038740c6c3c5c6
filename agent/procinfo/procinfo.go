// Package procinfo reads what /proc says about a process: start time,
// parent, image, credentials and cgroup. The lineage table seeds itself from
// it at start-up and builds exec ids with it; after that the kernel's exec
// events are the source.
package procinfo

import (
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

var bootID = sync.OnceValue(func() string {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return strings.ReplaceAll(strings.TrimSpace(string(data)), "-", "")[:12]
})

// Stat is the part of /proc/<pid>/stat Warden uses.
type Stat struct {
	PPID      int
	StartTime uint64 // clock ticks since boot
}

// ReadStat parses /proc/<pid>/stat. The comm field may hold spaces and
// parentheses, so fields are counted from the last ')'.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("parse /proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(s[i+1:])
	// After comm: state(0) ppid(1) ... starttime is field 22 of the line, 19 here.
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("parse ppid of %d: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("parse start time of %d: %w", pid, err)
	}
	return Stat{PPID: ppid, StartTime: start}, nil
}

// ExecID names one process image uniquely across hosts, boots and pid
// reuse: host, boot, pid and start time.
func ExecID(hostID string, pid int, startTime uint64) string {
	var buf [128]byte
	return base64.RawURLEncoding.EncodeToString(AppendExecName(buf[:0], hostID, pid, startTime))
}

// AppendExecName appends the name ExecID encodes, "host:bootid:pid:start",
// to dst. The process table names an image for every kernel event, so this
// avoids fmt.
func AppendExecName(dst []byte, hostID string, pid int, startTime uint64) []byte {
	dst = append(dst, hostID...)
	dst = append(dst, ':')
	dst = append(dst, bootID()...)
	dst = append(dst, ':')
	dst = strconv.AppendInt(dst, int64(pid), 10)
	dst = append(dst, ':')
	return strconv.AppendUint(dst, startTime, 10)
}

// Image returns the binary and arguments process pid runs now.
func Image(pid int) (string, []string) {
	bin, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	cmdline := fmt.Sprintf("/proc/%d/cmdline", pid)
	data, err := os.ReadFile(cmdline)
	// Inside execve, between installing the new image (its exe already
	// shows) and laying out its arguments, a process reads as an empty
	// command line: not even the NUL of an empty argv[0]. That lasts
	// microseconds; read again briefly rather than record no arguments.
	for i := 0; err == nil && len(data) == 0 && bin != "" && i < 50; i++ {
		time.Sleep(100 * time.Microsecond)
		data, err = os.ReadFile(cmdline)
	}
	args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	if len(args) == 1 && args[0] == "" {
		args = []string{}
	}
	return bin, args
}

// Creds are the ids a process runs with.
type Creds struct {
	UID, EUID, GID, EGID uint32
}

// ReadCreds returns the real and effective user and group ids of pid.
func ReadCreds(pid int) (Creds, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Creds{}, false
	}
	var c Creds
	found := 0
	for _, line := range strings.Split(string(data), "\n") {
		for _, f := range []struct {
			prefix    string
			real, eff *uint32
		}{{"Uid:", &c.UID, &c.EUID}, {"Gid:", &c.GID, &c.EGID}} {
			rest, ok := strings.CutPrefix(line, f.prefix)
			if !ok {
				continue
			}
			v := strings.Fields(rest)
			if len(v) < 2 {
				return Creds{}, false
			}
			r, err1 := strconv.ParseUint(v[0], 10, 32)
			e, err2 := strconv.ParseUint(v[1], 10, 32)
			if err1 != nil || err2 != nil {
				return Creds{}, false
			}
			*f.real, *f.eff = uint32(r), uint32(e)
			found++
		}
	}
	return c, found == 2
}

// CgroupPath returns pid's cgroup v2 path relative to the cgroup2 mount,
// starting with "/".
func CgroupPath(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return rest, nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 entry in /proc/%d/cgroup", pid)
}

// RealUID returns the real uid of process pid.
func RealUID(pid int) (uint32, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				v, err := strconv.ParseUint(f[0], 10, 32)
				return uint32(v), err == nil
			}
		}
	}
	return 0, false
}
