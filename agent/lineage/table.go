// Package lineage keeps the agent's process table: every process image on
// the host, fed by the kernel's fork, exec and exit events and seeded from
// /proc at start-up, so each event can name its process and the chain of
// ancestors back to the login shell and pid 1.
//
// A process image is named by an exec id (see ExecID). A process that execs
// keeps its pid but gets a new exec id whose parent is the image it replaced;
// a forked child that has not exec'd yet is an image of its own whose binary
// and arguments are its parent's. Entries of processes that exited, or
// images that were replaced, stay for a grace period so late events can
// still be attributed; the table has a bounded size and reports pressure.
package lineage

import (
	"container/list"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/wardenhq/warden/agent/procinfo"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/redact"
)

// MaxAncestors bounds the ancestors listed for one process.
const MaxAncestors = 64

// Defaults for Options.
const (
	DefaultMaxEntries = 65536
	DefaultGrace      = 30 * time.Second
)

// nsPerTick converts CLOCK_BOOTTIME ns to the clock ticks /proc/<pid>/stat
// reports start times in. USER_HZ is 100 on every Linux architecture: it
// is part of the user-space ABI, independent of the kernel's CONFIG_HZ.
const nsPerTick = 1_000_000_000 / 100

// Source says where the table learnt about an image.
type Source string

// Sources.
const (
	SourceKernel Source = "kernel" // a fork or exec event
	SourceProc   Source = "proc"   // read from /proc (seeding, or a missed event)
	SourceStub   Source = "stub"   // only its exec id is known: the name of a gone parent
)

// Ref names one process image.
type Ref struct {
	PID        uint32
	StartTicks uint64 // process start, clock ticks since boot as in /proc/<pid>/stat
	Image      uint32 // execs since the kernel first saw the process
}

// RefOf converts the kernel's image reference.
func RefOf(r loader.ImageRef) Ref {
	return Ref{PID: r.TGID, StartTicks: r.StartNs / nsPerTick, Image: r.Image}
}

// ExecID names one process image uniquely across hosts, boots, pid reuse
// and execs: base64url (no padding) of "host:bootid:pid:start" for image 0
// and "host:bootid:pid:start:image" for later images. start is in clock
// ticks since boot, identical for /proc and the kernel's events, so the id
// of a process does not depend on how the agent learnt about it.
func ExecID(hostID string, r Ref) string {
	var buf [128]byte
	raw := procinfo.AppendExecName(buf[:0], hostID, int(r.PID), r.StartTicks)
	if r.Image != 0 {
		raw = append(raw, ':')
		raw = strconv.AppendUint(raw, uint64(r.Image), 10)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// Kernel reads and marks the kernel's per-process lineage records. The
// programs report only tracked processes; the table marks the processes
// it reads from /proc, so what they do next reaches it from the kernel.
type Kernel interface {
	Task(pidfd int) (loader.TaskLineage, bool, error)
	// Track marks the process tracked (with inherit, its descendants
	// too) and returns its record after marking.
	Track(pidfd int, inherit bool) (loader.TaskLineage, error)
}

// mark is how a process read from /proc is tracked in the kernel.
type mark int

const (
	// markSelf: its own execs and exit are reported, not its children's.
	// For the ancestors of the processes that matter: tracking pid 1's
	// children would track the whole host.
	markSelf mark = iota
	// markInherit: it and every process it starts from now on are
	// tracked. For processes in login sessions and those that touch a
	// target.
	markInherit
)

// Options configure New.
type Options struct {
	HostID string
	// Kernel, if set, names seeded processes exactly as the kernel's
	// events do, after an agent restart too.
	Kernel Kernel
	// CgroupMount is the cgroup2 mount; SessionsDir the cgroup directory
	// whose children are login sessions. Both are absolute paths.
	CgroupMount, SessionsDir string
	// MaxEntries bounds the table. Default DefaultMaxEntries.
	MaxEntries int
	// Grace is how long ended images stay. Default DefaultGrace.
	Grace time.Duration
	// OnLoss is told about live entries evicted because the table was full:
	// their later events lose their lineage.
	OnLoss func(count uint64, reason string)
	// Redact redacts an image's arguments as it enters the table, once,
	// so every event and every ancestor copy carries the redacted form;
	// it returns them with the names of the policy exemptions that left
	// secrets in (see redact.Result). nil applies the built-in rules.
	Redact func(binary string, args []string, sessionCgroupID uint64) (redacted, exemptions []string)
	Log    zerolog.Logger
}

// Process is what the table knows about one image.
type Process struct {
	Ref
	ExecID, ParentExecID string
	PPID                 uint32
	UID, GID, EUID, EGID uint32
	Binary               string
	Args                 []string // redacted (see Options.Redact); shared, never modified
	ArgsTruncated        bool
	// RedactionExemptions names the policy exemptions under which Args
	// were left unredacted, for the process.exec event to record.
	RedactionExemptions []string
	CgroupID            uint64
	// SessionCgroupID is the login-session cgroup the image ran in when
	// it started, or the session its shell logged in to; 0 = none.
	SessionCgroupID uint64
	Source          Source
	Forked          bool   // a forked copy of its parent that has not exec'd
	StartBootNs     uint64 // when the image began (fork, exec or seeding)
	Ended           bool   // exited, or replaced by an exec
	Exited          bool
	ExitCode        int32 // wait status
	EndBootNs       uint64
}

type entry struct {
	Process
	parent   *entry
	depth    int
	reported bool // its process.exec event was emitted
	// login marks the shell that ran 'warden login': the root of its
	// session's lineage, where the ancestors of session processes stop.
	login bool
	// inherit: the kernel tracks the process's children (LineageInherit),
	// so they reach the table as they start.
	inherit bool
	elem    *list.Element
}

// Stats are the table's gauges and counters.
type Stats struct {
	Entries, Live int
	// EvictedExpired: ended entries removed after their grace period.
	// EvictedEarly: ended entries removed before it, because the table was
	// full (pressure). EvictedLive: live entries removed because the table
	// was full (a loss: their later events have no lineage).
	EvictedExpired, EvictedEarly, EvictedLive uint64
	Stubs                                     uint64
}

// Table is the process table. It is safe for concurrent use.
type Table struct {
	opts Options

	mu    sync.Mutex
	byID  map[string]*entry
	byPID map[uint32]*entry // the newest image seen for each pid
	live  *list.List        // oldest first
	ended *list.List        // in the order they ended
	stats Stats
	// seeding is set while Seed runs (with mu held): only then is a
	// process found in a login session its parent is not in taken for
	// the shell that logged in.
	seeding bool

	watermark atomic.Uint64 // every event stamped before this was applied
	notify    chan struct{} // closed and replaced when watermark moves
	notifyMu  sync.Mutex
}

// New returns an empty table.
func New(opts Options) *Table {
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Redact == nil {
		opts.Redact = func(binary string, args []string, _ uint64) ([]string, []string) {
			out, _ := redact.Default().Args(binary, args, nil)
			return out, nil
		}
	}
	return &Table{
		opts: opts, byID: map[string]*entry{}, byPID: map[uint32]*entry{},
		live: list.New(), ended: list.New(), notify: make(chan struct{}),
	}
}

// Update is what Apply did.
type Update struct {
	Kind loader.LineageKind
	// ExecID is the image the event is about: the new image for fork and
	// exec, the exiting one for exit. Empty if an exit's image is unknown.
	ExecID          string
	SessionCgroupID uint64
	// Reported tells, for an exit, whether the image's process.exec was
	// emitted (so its process.exit should be too).
	Reported bool
	// Warning is set when the event does not fit what the table knows,
	// e.g. its parent is unknown because events were lost.
	Warning string
}

// Apply records one kernel event.
func (t *Table) Apply(ev *loader.LineageEvent) Update {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := Update{Kind: ev.Kind, SessionCgroupID: ev.SessionCgroupID}
	switch ev.Kind {
	case loader.LineageFork, loader.LineageExec:
		self := RefOf(ev.Self)
		p := Process{
			Ref: self, ExecID: ExecID(t.opts.HostID, self), PPID: ev.PPID,
			UID: ev.UID, GID: ev.GID, EUID: ev.EUID, EGID: ev.EGID,
			CgroupID: ev.CgroupID, SessionCgroupID: ev.SessionCgroupID,
			Source: SourceKernel, StartBootNs: ev.TimeNs,
		}
		parentRef := RefOf(ev.Parent)
		parent, warn := t.resolveLocked(parentRef, 0)
		u.Warning = warn
		if ev.Kind == loader.LineageFork {
			p.Forked = true
			if parent != nil {
				// Already redacted when the parent entered the table.
				p.Binary, p.Args, p.ArgsTruncated = parent.Binary, parent.Args, parent.ArgsTruncated
				p.RedactionExemptions = parent.RedactionExemptions
			}
		} else {
			p.Binary, p.Args = ev.Path, ev.Args
			p.ArgsTruncated = ev.Flags&(loader.LineageArgsTruncated|loader.LineagePathTruncated) != 0
			// The image this exec replaced has ended, whether it was a
			// forked copy or an image of its own.
			if prev := t.byPID[self.PID]; prev != nil && prev.StartTicks == self.StartTicks && prev.Image < self.Image {
				t.endLocked(prev, ev.TimeNs, false, 0)
			}
		}
		e := t.insertLocked(p, parent)
		e.inherit = ev.Flags&loader.LineageInherit != 0
		u.ExecID = e.ExecID
	case loader.LineageExit:
		self := RefOf(ev.Self)
		e := t.byID[ExecID(t.opts.HostID, self)]
		if e == nil {
			u.Warning = fmt.Sprintf("exit of pid %d with no record of its image", self.PID)
			return u
		}
		t.endLocked(e, ev.TimeNs, true, ev.ExitCode)
		u.ExecID, u.Reported = e.ExecID, e.reported
		if e.SessionCgroupID != 0 {
			u.SessionCgroupID = e.SessionCgroupID
		}
	}
	return u
}

// resolveLocked finds the entry of image r, reading /proc for a live
// process the table missed, or leaves a stub that carries only its name.
func (t *Table) resolveLocked(r Ref, depth int) (*entry, string) {
	if r.PID == 0 {
		return nil, ""
	}
	id := ExecID(t.opts.HostID, r)
	if e := t.byID[id]; e != nil {
		return e, ""
	}
	if depth < MaxAncestors {
		if e := t.seedLocked(int(r.PID), depth+1, markSelf); e != nil && e.ExecID == id {
			return e, ""
		}
	}
	return t.stubLocked(r, id)
}

// stubLocked records an image known only by name: a parent that ended
// before the table could read it.
func (t *Table) stubLocked(r Ref, id string) (*entry, string) {
	if e := t.byID[id]; e != nil {
		return e, ""
	}
	t.stats.Stubs++
	e := t.insertLocked(Process{Ref: r, ExecID: id, Source: SourceStub}, nil)
	t.endLocked(e, bootNow(), false, 0)
	return e, fmt.Sprintf("parent image of pid %d (exec_id %s) unknown: its events were lost or it ended before the agent started", r.PID, id)
}

// insertLocked adds or replaces the entry for p.ExecID. Its arguments are
// redacted here, the one way into the table: read from an exec event or
// from /proc (a forked copy shares its parent's, redacted already).
func (t *Table) insertLocked(p Process, parent *entry) *entry {
	if len(p.Args) > 0 && !(p.Source == SourceKernel && p.Forked) {
		p.Args, p.RedactionExemptions = t.opts.Redact(p.Binary, p.Args, p.SessionCgroupID)
	}
	if old := t.byID[p.ExecID]; old != nil {
		// Seeding and events overlap at start-up: the kernel's view wins,
		// the table keeps one entry.
		if old.Source == SourceKernel && p.Source != SourceKernel {
			return old
		}
		t.removeLocked(old)
	}
	for len(t.byID) >= t.opts.MaxEntries {
		t.evictOneLocked()
	}
	e := &entry{Process: p}
	if parent != nil {
		e.parent, e.depth, e.ParentExecID = parent, parent.depth+1, parent.ExecID
		if e.depth > 4*MaxAncestors {
			t.cutLocked(e)
		}
	}
	t.byID[e.ExecID] = e
	if cur := t.byPID[e.PID]; cur == nil || cur.StartTicks < e.StartTicks || (cur.StartTicks == e.StartTicks && cur.Image <= e.Image) {
		t.byPID[e.PID] = e
	}
	if p.Ended {
		e.elem = t.ended.PushBack(e)
	} else {
		e.elem = t.live.PushBack(e)
	}
	return e
}

// cutLocked ends the pointer chain MaxAncestors above e, so a process that
// execs in a loop does not keep every image it ever ran in memory. Only
// images further up than any event lists are dropped.
func (t *Table) cutLocked(e *entry) {
	a := e
	for i := 0; i < MaxAncestors && a.parent != nil; i++ {
		a = a.parent
	}
	a.parent = nil
	a.depth = 0
	e.depth = MaxAncestors
}

func (t *Table) endLocked(e *entry, at uint64, exited bool, code int32) {
	if e.Ended {
		if exited && !e.Exited {
			e.Exited, e.ExitCode = true, code
		}
		return
	}
	e.Ended, e.Exited, e.ExitCode, e.EndBootNs = true, exited, code, at
	t.live.Remove(e.elem)
	e.elem = t.ended.PushBack(e)
}

func (t *Table) removeLocked(e *entry) {
	delete(t.byID, e.ExecID)
	if t.byPID[e.PID] == e {
		delete(t.byPID, e.PID)
	}
	if e.Ended {
		t.ended.Remove(e.elem)
	} else {
		t.live.Remove(e.elem)
	}
}

// evictOneLocked makes room: the oldest ended entry if there is one
// (pressure), else the oldest live one (a loss).
func (t *Table) evictOneLocked() {
	if front := t.ended.Front(); front != nil {
		t.removeLocked(front.Value.(*entry))
		t.stats.EvictedEarly++
		if t.stats.EvictedEarly&(t.stats.EvictedEarly-1) == 0 { // log at powers of two, not per entry
			t.opts.Log.Warn().Uint64("evicted_early", t.stats.EvictedEarly).Int("max_entries", t.opts.MaxEntries).
				Msg("process table full: ended processes evicted before their grace period")
		}
		return
	}
	e := t.live.Front().Value.(*entry)
	t.removeLocked(e)
	t.stats.EvictedLive++
	t.opts.Log.Error().Uint32("pid", e.PID).Str("exec_id", e.ExecID).Int("max_entries", t.opts.MaxEntries).
		Msg("process table full of live processes: evicted one, its later events lose their lineage")
	if t.opts.OnLoss != nil {
		t.opts.OnLoss(1, "lineage_table_full")
	}
}

// Sweep evicts ended entries whose grace period has passed.
func (t *Table) Sweep() {
	cutoff := bootNow() - uint64(t.opts.Grace)
	t.mu.Lock()
	defer t.mu.Unlock()
	for front := t.ended.Front(); front != nil; front = t.ended.Front() {
		e := front.Value.(*entry)
		if e.EndBootNs > cutoff {
			return
		}
		t.removeLocked(e)
		t.stats.EvictedExpired++
	}
}

// Stats returns the table's current numbers.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.Entries, s.Live = len(t.byID), t.live.Len()
	return s
}

// Seed reads the processes that matter from /proc into the table, so
// those that started before the agent have a lineage too, and marks them
// tracked in the kernel: every process in a login session (with what it
// starts), every process the kernel already tracks (from an earlier agent
// run), and their ancestors (their own events only). Any other process is
// read from /proc when it touches a target (see Attribute). It returns
// how many processes it seeded, ancestors not counted.
func (t *Table) Seed() (int, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("seed process table: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seeding = true
	defer func() { t.seeding = false }()
	n := 0
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if t.byPID[uint32(pid)] != nil {
			continue // read already, as an ancestor of one seeded before
		}
		m, ok := t.seedMark(pid)
		if ok && t.seedLocked(pid, 0, m) != nil {
			n++
		}
	}
	return n, nil
}

// seedMark tells whether Seed reads process pid, and how it is tracked:
// with its descendants if it runs in a login session or the kernel tracks
// its descendants already, for itself if the kernel tracks it so.
func (t *Table) seedMark(pid int) (mark, bool) {
	if t.opts.Kernel != nil {
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			rec, ok, _ := t.opts.Kernel.Task(fd)
			unix.Close(fd)
			if ok && rec.Tracked {
				if rec.Inherit {
					return markInherit, true
				}
				return markSelf, true
			}
		}
	}
	if _, session := t.cgroupsOf(pid); session != 0 {
		return markInherit, true
	}
	return markSelf, false
}

// seedLocked reads process pid from /proc, with its parent chain, marks it
// tracked in the kernel as m says (its ancestors for their own events),
// and returns its current image, or nil if it is gone. Images already in
// the table are left as they are.
func (t *Table) seedLocked(pid, depth int, m mark) *entry {
	// Marked before /proc is read: an exec after the mark is reported by
	// the kernel as the next image, an exec before it is what /proc shows.
	var rec loader.TaskLineage
	haveRec := false
	if t.opts.Kernel != nil {
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			var err error
			rec, err = t.opts.Kernel.Track(fd, m == markInherit)
			unix.Close(fd)
			if err != nil {
				t.opts.Log.Debug().Err(err).Int("pid", pid).Msg("process not tracked in the kernel")
				rec, haveRec, _ = t.kernelTask(pid)
			} else {
				haveRec = true
			}
		}
	}
	st, err := procinfo.ReadStat(pid)
	if err != nil {
		return nil
	}
	self := Ref{PID: uint32(pid), StartTicks: st.StartTime}
	if haveRec {
		self.Image = rec.Image
	}
	id := ExecID(t.opts.HostID, self)
	if e := t.byID[id]; e != nil {
		e.inherit = e.inherit || (haveRec && rec.Inherit)
		return e
	}
	bin, args := procinfo.Image(pid)
	creds, _ := procinfo.ReadCreds(pid)
	p := Process{
		Ref: self, ExecID: id, PPID: uint32(st.PPID),
		UID: creds.UID, GID: creds.GID, EUID: creds.EUID, EGID: creds.EGID,
		Binary: bin, Args: args, Source: SourceProc, StartBootNs: bootNow(),
		Forked: haveRec && rec.Forked && rec.Image == 0,
	}
	p.CgroupID, p.SessionCgroupID = t.cgroupsOf(pid)
	// The image's parent, named as the kernel named it.
	var parent *entry
	switch {
	case haveRec && rec.Forked && rec.Image <= 1:
		parent, _ = t.resolveLocked(RefOf(rec.ForkParent), depth+1)
	case haveRec && rec.Image >= 1:
		// The image this one replaced is gone; only its name is known.
		prev := self
		prev.Image--
		parent, _ = t.stubLocked(prev, ExecID(t.opts.HostID, prev))
	case st.PPID > 0 && depth < MaxAncestors:
		parent = t.seedLocked(st.PPID, depth+1, markSelf)
	}
	if depth >= MaxAncestors {
		parent = nil
	}
	// Found in a session its parent is not in: at start-up, the shell
	// that logged in (moved there by 'warden login' before the agent
	// restarted). Later, a process the kernel never reported from a
	// session: every process that starts in one is tracked from birth,
	// so this one was moved there and did not start in it.
	moved := p.SessionCgroupID != 0 && (parent == nil || parent.SessionCgroupID != p.SessionCgroupID)
	if moved && !t.seeding {
		p.SessionCgroupID = 0
	}
	e := t.insertLocked(p, parent)
	e.inherit = haveRec && rec.Inherit
	e.login = moved && t.seeding
	return e
}

// kernelTask reads the kernel's record of process pid.
func (t *Table) kernelTask(pid int) (loader.TaskLineage, bool, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return loader.TaskLineage{}, false, err
	}
	defer unix.Close(fd)
	return t.opts.Kernel.Task(fd)
}

// trackLocked marks e's process tracked with its descendants, if it is
// not already: a process the table knew as an ancestor only, now touching
// a target.
func (t *Table) trackLocked(e *entry) {
	if e.inherit || e.Ended || e.Source == SourceStub || t.opts.Kernel == nil {
		return
	}
	fd, err := unix.PidfdOpen(int(e.PID), 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	// The pidfd names whatever process has the pid now: make sure it is
	// e's before marking it.
	if st, err := procinfo.ReadStat(int(e.PID)); err != nil || st.StartTime != e.StartTicks {
		return
	}
	if _, err := t.opts.Kernel.Track(fd, true); err != nil {
		t.opts.Log.Debug().Err(err).Uint32("pid", e.PID).Msg("process not tracked in the kernel")
		return
	}
	e.inherit = true
}

// cgroupsOf returns pid's cgroup id and, if it is in a login session, the
// session cgroup's id.
func (t *Table) cgroupsOf(pid int) (cgroupID, sessionID uint64) {
	if t.opts.CgroupMount == "" {
		return 0, 0
	}
	rel, err := procinfo.CgroupPath(pid)
	if err != nil {
		return 0, 0
	}
	abs := filepath.Join(t.opts.CgroupMount, rel)
	cgroupID = inode(abs)
	if t.opts.SessionsDir != "" {
		if rest, ok := strings.CutPrefix(abs, t.opts.SessionsDir+"/"); ok {
			first, _, _ := strings.Cut(rest, "/")
			sessionID = inode(filepath.Join(t.opts.SessionsDir, first))
		}
	}
	return cgroupID, sessionID
}

// inode returns a cgroup directory's id: its inode number on cgroup2.
func inode(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// Advance records that every event stamped before ns has been applied.
func (t *Table) Advance(ns uint64) {
	for {
		cur := t.watermark.Load()
		if ns <= cur {
			return
		}
		if t.watermark.CompareAndSwap(cur, ns) {
			break
		}
	}
	t.notifyMu.Lock()
	close(t.notify)
	t.notify = make(chan struct{})
	t.notifyMu.Unlock()
}

// Wait blocks until every kernel event stamped before bootNs has been
// applied, or until timeout. It reports whether the table caught up. A
// connection's attribution waits for the exec that preceded it. kick, if
// not nil, is called once if the table is behind, to hurry the reader.
func (t *Table) Wait(bootNs uint64, timeout time.Duration, kick func()) bool {
	if t.watermark.Load() >= bootNs {
		return true
	}
	if kick != nil {
		kick()
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		t.notifyMu.Lock()
		ch := t.notify
		t.notifyMu.Unlock()
		if t.watermark.Load() >= bootNs {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return t.watermark.Load() >= bootNs
		}
	}
}

// Lookup returns the image process pid ran at bootNs (CLOCK_BOOTTIME), if
// the table knows it. A pid the table never saw is read from /proc.
func (t *Table) Lookup(pid uint32, bootNs uint64) (Process, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.lookupLocked(pid, bootNs, markSelf)
	if e == nil {
		return Process{}, false
	}
	return e.Process, true
}

// lookupLocked finds the image pid ran at bootNs (0 = now), reading /proc
// for a process the table has no live record of, and tracks it in the
// kernel as m says.
func (t *Table) lookupLocked(pid uint32, bootNs uint64, m mark) *entry {
	e := t.byPID[pid]
	// The kernel reports only tracked processes, so the newest image the
	// table has of a pid may belong to a process that exited before the
	// instant asked about; the pid may have been reused since by one the
	// table never saw.
	if e == nil || (e.Exited && (bootNs == 0 || e.EndBootNs <= bootNs)) {
		if s := t.seedLocked(int(pid), 0, m); s != nil {
			e = s
		} else if e != nil && e.Exited {
			return nil
		}
	} else if m == markInherit {
		t.trackLocked(e)
	}
	if e == nil || e.Source == SourceStub {
		return nil
	}
	// A process that started after the instant asked about is a reuse of
	// the pid; the one asked about is gone from the index.
	if bootNs != 0 && e.StartTicks > bootNs/nsPerTick {
		return nil
	}
	return e
}

// Get returns the image named execID.
func (t *Table) Get(execID string) (Process, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[execID]
	if e == nil {
		return Process{}, false
	}
	return e.Process, true
}

// MarkReported records that execID's process.exec was emitted and reports
// whether it was the first time.
func (t *Table) MarkReported(execID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[execID]
	if e == nil || e.reported {
		return false
	}
	e.reported = true
	return true
}

// JoinSession records that pid's current image was moved into the login
// session cgroup sessionCgroupID: 'warden login' moves the calling shell.
func (t *Table) JoinSession(pid uint32, sessionCgroupID uint64) (Process, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.lookupLocked(pid, 0, markInherit)
	if e == nil {
		return Process{}, false
	}
	e.SessionCgroupID, e.login = sessionCgroupID, true
	return e.Process, true
}

// Describe returns the event view of image execID: the process and its
// ancestors, nearest first, up to its session's login shell, pid 1 or
// MaxAncestors, whichever comes first. The login shell's own event view
// (in session.login) continues to pid 1, so the chain to the person is
// complete without repeating it in every event of the session.
func (t *Table) Describe(execID string) *event.Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[execID]
	if e == nil {
		return nil
	}
	return describeLocked(e)
}

func describeLocked(e *entry) *event.Process {
	p := &event.Process{
		ExecID: e.ExecID, PID: e.PID, UID: e.UID, Binary: e.Binary, Args: e.Args,
		ParentExecID: e.ParentExecID, CgroupID: e.CgroupID, Ancestors: []event.Ancestor{},
	}
	if p.Args == nil {
		p.Args = []string{}
	}
	for a := e.parent; a != nil && len(p.Ancestors) < MaxAncestors; a = a.parent {
		p.Ancestors = append(p.Ancestors, event.Ancestor{ExecID: a.ExecID, PID: a.PID, UID: a.UID, Binary: a.Binary, Args: a.Args})
		if a.PID == 1 || a.login {
			break
		}
	}
	return p
}

// Attribution is a process as an event carries it, with what the table
// found doubtful about it.
type Attribution struct {
	Process *event.Process
	// Warning is set when the lineage does not back the identity binding:
	// the process has no exec record, or it sits in a session cgroup that
	// none of its ancestors joined. Never resolved by guessing.
	Warning string
	// ExecID is empty if the table has no record.
	ExecID string
}

// Attribute describes process pid as it was at bootNs for an event, and
// checks its lineage against the login session sessionCgroupID (0 = none)
// the kernel placed it in.
func (t *Table) Attribute(pid, uid uint32, bootNs uint64, sessionCgroupID uint64) Attribution {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.lookupLocked(pid, bootNs, markInherit)
	if e == nil {
		a := Attribution{Process: &event.Process{PID: pid, UID: uid, Args: []string{}, Ancestors: []event.Ancestor{}}}
		if sessionCgroupID != 0 {
			a.Warning = fmt.Sprintf("pid %d is in login session cgroup %d but has no exec record", pid, sessionCgroupID)
		}
		return a
	}
	a := Attribution{Process: describeLocked(e), ExecID: e.ExecID}
	if sessionCgroupID == 0 {
		return a
	}
	for x := e; x != nil; x = x.parent {
		if x.SessionCgroupID == sessionCgroupID {
			return a
		}
	}
	a.Warning = fmt.Sprintf("pid %d (exec_id %s) is in login session cgroup %d, but neither it nor any ancestor started in or logged in to that session",
		pid, e.ExecID, sessionCgroupID)
	return a
}

// bootNow reads CLOCK_BOOTTIME, the clock the kernel stamps events with.
func bootNow() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return uint64(ts.Nano())
}

// BootNow reads CLOCK_BOOTTIME in ns.
func BootNow() uint64 { return bootNow() }
