package lineage

import (
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/agent/procinfo"
	"github.com/wardenhq/warden/bpf/loader"
)

const tick = nsPerTick

// Synthetic kernel events for pids far above pid_max, so /proc never
// answers for them and the table works from events alone.
const (
	shellPID = 4_000_001
	childPID = 4_000_002
)

func ref(pid uint32, startTicks uint64, image uint32) loader.ImageRef {
	return loader.ImageRef{TGID: pid, StartNs: startTicks * tick, Image: image}
}

func decode(t *testing.T, id string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestExecIDFormat(t *testing.T) {
	got := decode(t, ExecID("h1", Ref{PID: 42, StartTicks: 1234}))
	if !strings.HasPrefix(got, "h1:") || !strings.HasSuffix(got, ":42:1234") {
		t.Fatalf("image 0: %q", got)
	}
	// Named as /proc's reader names it (seeding, the login shell).
	if id := ExecID("h1", Ref{PID: 42, StartTicks: 1234}); id != procinfo.ExecID("h1", 42, 1234) {
		t.Fatalf("image 0 %q, procinfo names it %q", id, procinfo.ExecID("h1", 42, 1234))
	}
	got2 := decode(t, ExecID("h1", Ref{PID: 42, StartTicks: 1234, Image: 3}))
	if got2 != got+":3" {
		t.Fatalf("image 3: %q, want %q", got2, got+":3")
	}
	// The kernel's ns and /proc's ticks name the same process.
	if RefOf(loader.ImageRef{TGID: 42, StartNs: 1234*tick + tick - 1}) != (Ref{PID: 42, StartTicks: 1234}) {
		t.Fatal("ns to ticks conversion does not truncate like /proc")
	}
}

// shellTable holds a shell image (pid shellPID) that forked childPID, which
// exec'd sh and then, in an exec chain, psql.
func shellTable(t *testing.T, opts Options) (*Table, []Update) {
	t.Helper()
	opts.HostID = "h"
	tb := New(opts)
	evs := []loader.LineageEvent{
		{Kind: loader.LineageExec, TGID: shellPID, Self: ref(shellPID, 100, 1), Parent: ref(shellPID, 100, 0), Path: "/bin/bash", Args: []string{"bash"}, SessionCgroupID: 7},
		{Kind: loader.LineageFork, TGID: childPID, PPID: shellPID, Self: ref(childPID, 200, 0), Parent: ref(shellPID, 100, 1), SessionCgroupID: 7},
		{Kind: loader.LineageExec, TGID: childPID, Self: ref(childPID, 200, 1), Parent: ref(shellPID, 100, 1), Path: "/bin/sh", Args: []string{"sh", "-c", "exec psql"}, SessionCgroupID: 7},
		{Kind: loader.LineageExec, TGID: childPID, Self: ref(childPID, 200, 2), Parent: ref(childPID, 200, 1), Path: "/usr/bin/psql", Args: []string{"psql", "-h", "db"}, UID: 1000, SessionCgroupID: 7},
	}
	var us []Update
	for i := range evs {
		evs[i].TimeNs = uint64(i+1) * tick
		us = append(us, tb.Apply(&evs[i]))
	}
	return tb, us
}

func TestExecChainAndAncestors(t *testing.T) {
	tb, us := shellTable(t, Options{})
	// The shell's own parent (image 0, never seen) is a stub, with a warning.
	if us[0].Warning == "" {
		t.Error("no warning for the shell's unknown parent")
	}
	fork, sh, psql := us[1], us[2], us[3]
	if fork.Warning != "" || sh.Warning != "" || psql.Warning != "" {
		t.Fatalf("warnings: %q %q %q", fork.Warning, sh.Warning, psql.Warning)
	}
	p := tb.Describe(psql.ExecID)
	if p.Binary != "/usr/bin/psql" || p.UID != 1000 || strings.Join(p.Args, " ") != "psql -h db" {
		t.Fatalf("psql %+v", p)
	}
	// sh -c 'exec psql': two exec ids of one pid, linked by parent.
	if p.ParentExecID != sh.ExecID || p.ParentExecID == psql.ExecID {
		t.Fatalf("psql's parent %s, want sh %s", p.ParentExecID, sh.ExecID)
	}
	var bins []string
	for _, a := range p.Ancestors {
		bins = append(bins, a.Binary)
	}
	// The forked copy is not an ancestor: sh's parent is the shell.
	if got := strings.Join(bins, ","); got != "/bin/sh,/bin/bash," {
		t.Fatalf("ancestors %q", got)
	}
	// The replaced images have ended; the newest image answers for the pid.
	if got, ok := tb.Lookup(childPID, 0); !ok || got.ExecID != psql.ExecID {
		t.Fatalf("lookup pid: %+v", got)
	}
	if got, _ := tb.Get(sh.ExecID); !got.Ended || got.Exited {
		t.Fatalf("sh image should have ended by exec: %+v", got)
	}
	if got, _ := tb.Get(fork.ExecID); !got.Forked || got.Binary != "/bin/bash" {
		t.Fatalf("fork image %+v", got)
	}

	exit := tb.Apply(&loader.LineageEvent{Kind: loader.LineageExit, TGID: childPID, Self: ref(childPID, 200, 2), ExitCode: 3 << 8})
	if exit.ExecID != psql.ExecID || exit.Reported {
		t.Fatalf("exit %+v", exit)
	}
	if got, _ := tb.Get(psql.ExecID); !got.Exited || got.ExitCode != 3<<8 {
		t.Fatalf("exited %+v", got)
	}
}

func TestAttributeChecksSession(t *testing.T) {
	tb, us := shellTable(t, Options{})
	if a := tb.Attribute(childPID, 1000, 1000*tick, 7); a.Warning != "" || a.ExecID != us[3].ExecID {
		t.Fatalf("in its session: %+v", a)
	}
	// The kernel puts the process in session 9, the lineage never went there.
	if a := tb.Attribute(childPID, 1000, 1000*tick, 9); !strings.Contains(a.Warning, "neither it nor any ancestor") {
		t.Fatalf("foreign session: %q", a.Warning)
	}
	if a := tb.Attribute(4_000_999, 1000, 1000*tick, 7); !strings.Contains(a.Warning, "no exec record") || a.Process.PID != 4_000_999 {
		t.Fatalf("unknown pid: %+v", a)
	}
	// A pid that started after the instant asked about is a reuse.
	if _, ok := tb.Lookup(childPID, 150*tick); ok {
		t.Fatal("lookup before the process started found it")
	}
}

func TestEvictionAndPressure(t *testing.T) {
	var lost uint64
	tb, us := shellTable(t, Options{MaxEntries: 5, OnLoss: func(n uint64, _ string) { lost += n }})
	// 5 entries: stub, shell, fork, sh, psql; fork and sh have ended.
	ev := loader.LineageEvent{Kind: loader.LineageFork, TGID: 4_000_010, Self: ref(4_000_010, 300, 0), Parent: ref(shellPID, 100, 1)}
	tb.Apply(&ev)
	s := tb.Stats()
	if s.Entries != 5 || s.EvictedEarly != 1 || s.EvictedLive != 0 || lost != 0 {
		t.Fatalf("after one insert into a full table: %+v lost %d", s, lost)
	}
	// Fill with live processes until ended ones are gone and a live one goes.
	for i := range uint32(4) {
		ev := loader.LineageEvent{Kind: loader.LineageFork, TGID: 4_000_020 + i, Self: ref(4_000_020+i, 400, 0), Parent: ref(shellPID, 100, 1)}
		tb.Apply(&ev)
	}
	s = tb.Stats()
	if s.EvictedLive == 0 || lost != s.EvictedLive || s.Entries != 5 {
		t.Fatalf("live eviction not reported as loss: %+v lost %d", s, lost)
	}
	// A child of an evicted image still names its parent, by exec id only.
	if p := tb.Describe(ExecID("h", RefOf(ref(4_000_023, 400, 0)))); p == nil || len(p.Ancestors) == 0 || p.Ancestors[0].ExecID != us[0].ExecID {
		t.Fatalf("parent's name lost with eviction: %+v", p)
	}
}

func TestSweepAfterGrace(t *testing.T) {
	tb, us := shellTable(t, Options{Grace: time.Nanosecond})
	tb.Apply(&loader.LineageEvent{Kind: loader.LineageExit, Self: ref(childPID, 200, 2), TimeNs: 1})
	tb.Sweep()
	if _, ok := tb.Get(us[3].ExecID); ok {
		t.Fatal("exited image not evicted after its grace period")
	}
	if _, ok := tb.Get(us[0].ExecID); !ok {
		t.Fatal("live shell evicted")
	}
	if s := tb.Stats(); s.EvictedExpired == 0 || s.EvictedLive != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWaitWatermark(t *testing.T) {
	tb := New(Options{HostID: "h"})
	if tb.Wait(100, time.Millisecond, nil) {
		t.Fatal("caught up without any event applied")
	}
	kicked := false
	go tb.Advance(200)
	if !tb.Wait(150, time.Minute, func() { kicked = true }) {
		t.Fatal("not caught up after advance")
	}
	_ = kicked
}

// fakeKernel answers for the kernel's task records by pid (read from the
// pidfd's fdinfo) and records what the table marks.
type fakeKernel struct {
	tracked map[int]loader.TaskLineage
	marks   map[int]bool // pid -> inherit, as last marked
}

func pidOfFD(fd int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, _ := strconv.Atoi(strings.TrimSpace(v))
			return pid
		}
	}
	return -1
}

func (k *fakeKernel) Task(fd int) (loader.TaskLineage, bool, error) {
	rec, ok := k.tracked[pidOfFD(fd)]
	return rec, ok, nil
}

func (k *fakeKernel) Track(fd int, inherit bool) (loader.TaskLineage, error) {
	pid := pidOfFD(fd)
	rec := k.tracked[pid]
	rec.Tracked, rec.Inherit = true, rec.Inherit || inherit
	k.tracked[pid] = rec
	k.marks[pid] = rec.Inherit
	return rec, nil
}

// Seeding reads only what the kernel tracks (or what runs in a login
// session) and its ancestors, and marks them; any other process is read
// and marked when asked about, with its descendants when it touches a
// target.
func TestSeedFromProc(t *testing.T) {
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	self := selfPID()
	k := &fakeKernel{tracked: map[int]loader.TaskLineage{self: {Tracked: true, Inherit: true}}, marks: map[int]bool{}}
	tb := New(Options{HostID: "h", Kernel: k})
	n, err := tb.Seed()
	if err != nil || n != 1 {
		t.Fatalf("seeded %d, want 1 (this process): %v", n, err)
	}
	// This test process has a lineage up to pid 1, whose members are
	// tracked for their own events only.
	p, ok := tb.Lookup(uint32(self), 0)
	if !ok || p.Source != SourceProc {
		t.Fatalf("self %+v", p)
	}
	d := tb.Describe(p.ExecID)
	if len(d.Ancestors) == 0 || d.Ancestors[len(d.Ancestors)-1].PID != 1 {
		t.Fatalf("ancestors do not reach pid 1: %+v", d.Ancestors)
	}
	if inherit, ok := k.marks[self]; !ok || !inherit {
		t.Errorf("self marked %v %v, want tracked with its descendants", ok, inherit)
	}
	for _, a := range d.Ancestors {
		if inherit, ok := k.marks[int(a.PID)]; !ok || inherit {
			t.Errorf("ancestor %d marked %v inherit %v, want tracked for itself", a.PID, ok, inherit)
		}
	}
	pid := other.Process.Pid
	tb.mu.Lock()
	_, seeded := tb.byPID[uint32(pid)]
	tb.mu.Unlock()
	if seeded {
		t.Fatalf("untracked process %d seeded", pid)
	}
	// Touching a target: read from /proc on demand, tracked from then on.
	a := tb.Attribute(uint32(pid), 0, 0, 0)
	if a.ExecID == "" || a.Process.Binary == "" {
		t.Fatalf("attribution of %d: %+v", pid, a)
	}
	if inherit := k.marks[pid]; !inherit {
		t.Errorf("process that touched a target not tracked with its descendants: %v", k.marks)
	}
}

// The kernel reports only tracked processes: once a tracked process has
// exited, its pid may belong to one the table never saw, so a lookup at a
// later instant does not answer with the exited image; one at an earlier
// instant (a late denial) still does.
func TestExitedPIDNotReused(t *testing.T) {
	tb, us := shellTable(t, Options{})
	tb.Apply(&loader.LineageEvent{Kind: loader.LineageExit, TGID: childPID, Self: ref(childPID, 200, 2), TimeNs: 2000 * tick})
	if got, ok := tb.Lookup(childPID, 1000*tick); !ok || got.ExecID != us[3].ExecID {
		t.Fatalf("lookup before the exit: %+v %v", got, ok)
	}
	if got, ok := tb.Lookup(childPID, 3000*tick); ok {
		t.Fatalf("lookup after the exit found the exited image %+v", got)
	}
	if got, ok := tb.Lookup(childPID, 0); ok {
		t.Fatalf("lookup now found the exited image %+v", got)
	}
}
