// Package procinfo describes processes from /proc for events: binary,
// arguments, owner and the chain of ancestors.
//
// This is a point-in-time read. A process that exits before it is read is
// reported with what the kernel recorded (pid, uid) and an empty binary;
// kernel exec tracking closes that gap.
package procinfo

import (
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/wardenhq/warden/pkg/event"
)

// MaxAncestors bounds the walk up the process tree.
const MaxAncestors = 64

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
	raw := fmt.Sprintf("%s:%s:%d:%d", hostID, bootID(), pid, startTime)
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// Describe returns the event view of process pid and its ancestors up to
// pid 1. uid is what the kernel recorded, used if /proc is already gone.
func Describe(hostID string, pid int, uid uint32) *event.Process {
	p := &event.Process{PID: uint32(pid), UID: uid, Ancestors: []event.Ancestor{}}
	st, err := ReadStat(pid)
	if err != nil {
		return p
	}
	p.ExecID = ExecID(hostID, pid, st.StartTime)
	p.Binary, p.Args = image(pid)
	if u, ok := RealUID(pid); ok {
		p.UID = u
	}
	parent := st.PPID
	for range MaxAncestors {
		if parent <= 0 {
			break
		}
		pst, err := ReadStat(parent)
		if err != nil {
			break
		}
		a := event.Ancestor{PID: uint32(parent), ExecID: ExecID(hostID, parent, pst.StartTime)}
		a.Binary, a.Args = image(parent)
		a.UID, _ = RealUID(parent)
		if p.ParentExecID == "" {
			p.ParentExecID = a.ExecID
		}
		p.Ancestors = append(p.Ancestors, a)
		if parent == 1 {
			break
		}
		parent = pst.PPID
	}
	return p
}

func image(pid int) (string, []string) {
	bin, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	if len(args) == 1 && args[0] == "" {
		args = []string{}
	}
	return bin, args
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
