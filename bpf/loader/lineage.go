package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
)

// LineageKind is what happened to a process, mirrored from enum
// lineage_kind in lineage.h.
type LineageKind uint32

// Lineage event kinds.
const (
	LineageFork LineageKind = 1
	LineageExec LineageKind = 2
	LineageExit LineageKind = 3
)

// String names the kind as used in metrics and loss reports.
func (k LineageKind) String() string {
	switch k {
	case LineageFork:
		return "fork"
	case LineageExec:
		return "exec"
	case LineageExit:
		return "exit"
	}
	return fmt.Sprintf("kind%d", uint32(k))
}

// Lineage event flags, mirrored from lineage.h.
const (
	LineageArgsTruncated uint32 = 1
	LineagePathTruncated uint32 = 2
	// LineageNoForkRecord: the process predates the programs, so its
	// previous image is the one seeded from /proc.
	LineageNoForkRecord uint32 = 4
	// LineageNoStorage: the kernel could not keep the process's record;
	// its image numbering restarted.
	LineageNoStorage uint32 = 8
	// LineageThreadExec: a non-leader thread exec'd; the leader's record
	// was lost with it.
	LineageThreadExec uint32 = 16
	// LineageInherit: the process is tracked with its descendants (it
	// runs in a login session, descends from one that does, or touched a
	// target), not only for its own events as a session's ancestor is.
	LineageInherit uint32 = 32
)

// Task record flags, mirrored from lineage.h.
const (
	taskForked  uint32 = 1
	taskTracked uint32 = 2
	taskInherit uint32 = 4
	taskThread  uint32 = 8
)

// Bounds on what one exec event carries, mirrored from lineage.h.
const (
	LineagePathMax = 256
	LineageArgsMax = 1024
)

// Lineage counter names, in the order of enum lineage_counter. The
// *_lost_session counters are the part of *_lost whose process was in a
// login session.
var lineageCounterNames = []string{
	"fork_lost", "exec_lost", "exit_lost",
	"fork_lost_session", "exec_lost_session", "exit_lost_session",
	"storage_failed", "events",
}

// ImageRef names one process image: the process (tgid and start time in
// CLOCK_BOOTTIME ns) and the number of execs it made since the programs
// first saw it.
type ImageRef struct {
	TGID    uint32
	Image   uint32
	StartNs uint64
}

// LineageEvent is one fork, exec or exit as the kernel reported it.
type LineageEvent struct {
	Kind            LineageKind
	Flags           uint32
	PID             uint32 // thread that triggered the event
	TGID            uint32
	PPID            uint32 // real parent's tgid
	UID, GID        uint32
	EUID, EGID      uint32
	ExitCode        int32 // wait status
	CgroupID        uint64
	SessionCgroupID uint64
	TimeNs          uint64 // CLOCK_BOOTTIME
	Self, Parent    ImageRef
	Path            string   // exec only: the path execve was given
	Args            []string // exec only
}

// TaskLineage is the kernel's record of one live process.
type TaskLineage struct {
	ForkParent ImageRef
	Image      uint32
	// Forked: the programs saw the process fork, so image 0 is a copy of
	// ForkParent rather than an image of its own.
	Forked bool
	// Tracked: the programs report the process's execs and exit (and its
	// forks); Inherit: its children are tracked too.
	Tracked, Inherit bool
}

// LineageOptions configure LoadLineage.
type LineageOptions struct {
	// PinDir is a directory on a bpffs (a private one is mounted if not)
	// where the lineage maps and links are pinned, so the kernel keeps
	// numbering images and buffering events while the agent is down.
	PinDir string
}

// Lineage owns the process-lineage programs, their maps and links.
type Lineage struct {
	objs  lineageObjects
	links []link.Link
	opts  LineageOptions
	// Replaced lists the pinned links of an older program version that
	// were swapped out: between detaching them and attaching the new ones
	// events may have been missed.
	Replaced []string
}

var lineageAttachments = []struct {
	name string
	prog func(*lineageObjects) *ebpf.Program
}{
	{"fork", func(o *lineageObjects) *ebpf.Program { return o.LineageFork }},
	{"exec", func(o *lineageObjects) *ebpf.Program { return o.LineageExec }},
	{"exit", func(o *lineageObjects) *ebpf.Program { return o.LineageExit }},
}

// dataOffset is where the variable part of an event starts.
const dataOffset = int(unsafe.Offsetof(lineageLineageEvent{}.Data))

// LoadLineage loads the lineage programs, reusing maps pinned by an earlier
// run, and attaches them to the scheduler's process tracepoints. Links
// pinned by an earlier run of the same programs are kept as they are, so
// no event is missed or seen twice across an agent restart.
func LoadLineage(opts LineageOptions) (*Lineage, error) {
	if opts.PinDir == "" {
		return nil, errors.New("load lineage bpf: pin dir is required")
	}
	if err := ensureBPFFS(opts.PinDir); err != nil {
		return nil, err
	}
	spec, err := loadLineage()
	if err != nil {
		return nil, fmt.Errorf("load lineage bpf spec: %w", err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinByName
	}
	l := &Lineage{opts: opts}
	err = spec.LoadAndAssign(&l.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinDir}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("load lineage bpf objects: maps pinned in %s come from an incompatible version; run 'wardend uninstall' to remove them: %w", opts.PinDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("load lineage bpf objects: %w", err)
	}
	for _, a := range lineageAttachments {
		lk, err := l.attach(a.name, a.prog(&l.objs))
		if err != nil {
			l.Close()
			return nil, err
		}
		l.links = append(l.links, lk)
	}
	return l, nil
}

func (l *Lineage) attach(name string, prog *ebpf.Program) (link.Link, error) {
	pin := filepath.Join(l.opts.PinDir, "link_lineage_"+name)
	old, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil:
		same, err := sameProgram(old, prog)
		if err != nil {
			old.Close()
			return nil, fmt.Errorf("inspect pinned lineage %s link %s: %w", name, pin, err)
		}
		if same {
			return old, nil
		}
		// Tracing links cannot switch programs in place. Running old and
		// new side by side would count every exec twice, so the old one
		// goes first; the caller reports the gap.
		if err := old.Unpin(); err != nil {
			old.Close()
			return nil, fmt.Errorf("unpin outdated lineage %s link: %w", name, err)
		}
		old.Close()
		l.Replaced = append(l.Replaced, name)
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("load pinned lineage %s link %s: %w", name, pin, err)
	}
	lk, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return nil, fmt.Errorf("attach lineage %s program: %w", name, err)
	}
	if err := lk.Pin(pin); err != nil {
		lk.Close()
		return nil, fmt.Errorf("pin lineage %s link to %s: %w", name, pin, err)
	}
	return lk, nil
}

// sameProgram reports whether the pinned link runs a program with the same
// instructions (tag) as prog.
func sameProgram(lk link.Link, prog *ebpf.Program) (bool, error) {
	li, err := lk.Info()
	if err != nil {
		return false, err
	}
	running, err := ebpf.NewProgramFromID(li.Program)
	if err != nil {
		return false, err
	}
	defer running.Close()
	ri, err := running.Info()
	if err != nil {
		return false, err
	}
	ni, err := prog.Info()
	if err != nil {
		return false, err
	}
	return ri.Tag == ni.Tag, nil
}

// Close releases the agent's handles. Pinned programs stay attached.
func (l *Lineage) Close() error {
	var errs []error
	for _, lk := range l.links {
		errs = append(errs, lk.Close())
	}
	l.links = nil
	errs = append(errs, l.objs.Close())
	return errors.Join(errs...)
}

// Uninstall detaches the programs and removes their pins.
func (l *Lineage) Uninstall() error {
	var errs []error
	for _, lk := range l.links {
		errs = append(errs, lk.Unpin())
	}
	for _, m := range []*ebpf.Map{l.objs.LineageConf, l.objs.LineageCounters, l.objs.LineageEvents,
		l.objs.LineageReported, l.objs.LineageScratch, l.objs.LineageTasks} {
		if m != nil {
			errs = append(errs, m.Unpin())
		}
	}
	errs = append(errs, l.Close())
	errs = append(errs, unmountPrivateBPFFS(l.opts.PinDir))
	// The pin directory may sit inside the enforcer's bpffs; leave no
	// empty directory behind there.
	if err := os.Remove(l.opts.PinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove lineage pin dir: %w", err))
	}
	return errors.Join(errs...)
}

// SetSessionsCgroup tells the programs which cgroup holds the login
// sessions (its id and depth in the cgroup v2 tree), so events carry the
// session cgroup of their process.
func (l *Lineage) SetSessionsCgroup(id uint64, level uint32) error {
	c := lineageLineageConfig{SessionsCgroupId: id, SessionsLevel: level}
	if err := l.objs.LineageConf.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("set lineage sessions cgroup: %w", err)
	}
	return nil
}

// Task returns the kernel's record of the process pidfd refers to; ok is
// false if the programs never saw it fork or exec.
func (l *Lineage) Task(pidfd int) (TaskLineage, bool, error) {
	var v lineageTaskLineage
	err := l.objs.LineageTasks.Lookup(int32(pidfd), &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return TaskLineage{}, false, nil
	}
	if err != nil {
		return TaskLineage{}, false, fmt.Errorf("look up task lineage: %w", err)
	}
	return taskOf(&v), true, nil
}

func taskOf(v *lineageTaskLineage) TaskLineage {
	return TaskLineage{
		ForkParent: ImageRef{TGID: v.ForkParent.Tgid, Image: v.ForkParent.Image, StartNs: v.ForkParent.StartNs},
		Image:      v.Image,
		Forked:     v.Flags&taskForked != 0,
		Tracked:    v.Flags&taskTracked != 0,
		Inherit:    v.Flags&taskInherit != 0,
	}
}

// Track marks the process pidfd refers to as tracked, so the programs
// report its execs and exit from now on; with inherit, its children are
// tracked too. A process the programs already know keeps its record (its
// image number); a new record starts at image 0, the image running now.
// It returns the record as it stands after marking.
func (l *Lineage) Track(pidfd int, inherit bool) (TaskLineage, error) {
	want := taskTracked
	if inherit {
		want |= taskInherit
	}
	for range 3 {
		var v lineageTaskLineage
		err := l.objs.LineageTasks.Lookup(int32(pidfd), &v)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			v = lineageTaskLineage{Flags: want}
			err = l.objs.LineageTasks.Update(int32(pidfd), &v, ebpf.UpdateNoExist)
			if errors.Is(err, ebpf.ErrKeyExist) {
				continue // the process forked or exec'd meanwhile: mark that record
			}
		case err != nil:
		case v.Flags&taskThread == 0 && v.Flags&want == want:
			return taskOf(&v), nil
		default:
			// The programs update the record in place only when the
			// process execs; an exec between this read and write would be
			// undone (its image number reused). Only a record the
			// programs kept without tracking (a session's ancestor now
			// touching a target) is rewritten, so that is the rare case.
			v.Flags = (v.Flags &^ taskThread) | want
			err = l.objs.LineageTasks.Update(int32(pidfd), &v, ebpf.UpdateExist)
		}
		if err != nil {
			return TaskLineage{}, fmt.Errorf("mark task tracked: %w", err)
		}
		return taskOf(&v), nil
	}
	return TaskLineage{}, errors.New("mark task tracked: its record kept changing")
}

// Counters sums the per-CPU lineage counters by name.
func (l *Lineage) Counters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(lineageCounterNames))
	for i, name := range lineageCounterNames {
		var perCPU []uint64
		if err := l.objs.LineageCounters.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read lineage counter %s: %w", name, err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

// Reported returns, by counter name, the values an agent already reported.
// They are pinned, so they survive agent restarts.
func (l *Lineage) Reported() (map[string]uint64, error) {
	out := make(map[string]uint64, len(lineageCounterNames))
	for i, name := range lineageCounterNames {
		var v uint64
		if err := l.objs.LineageReported.Lookup(uint32(i), &v); err != nil {
			return nil, fmt.Errorf("read reported lineage counter %s: %w", name, err)
		}
		out[name] = v
	}
	return out, nil
}

// SetReported records that counter name was reported up to v.
func (l *Lineage) SetReported(name string, v uint64) error {
	for i, n := range lineageCounterNames {
		if n == name {
			if err := l.objs.LineageReported.Put(uint32(i), v); err != nil {
				return fmt.Errorf("store reported lineage counter %s: %w", name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("unknown lineage counter %q", name)
}

// LineageReader reads lineage events in the order the kernel produced them.
type LineageReader struct {
	rd  *ringbuf.Reader
	rec ringbuf.Record
}

// Events opens a reader on the lineage ring buffer. Events produced while
// no agent ran are still in the (pinned) ring, up to its size.
func (l *Lineage) Events() (*LineageReader, error) {
	rd, err := ringbuf.NewReader(l.objs.LineageEvents)
	if err != nil {
		return nil, fmt.Errorf("open lineage ring buffer: %w", err)
	}
	return &LineageReader{rd: rd}, nil
}

// SetDeadline makes Read return os.ErrDeadlineExceeded once t has passed
// and the ring is empty. The zero time waits forever.
func (r *LineageReader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Read blocks for the next event and decodes it into ev. It returns
// ringbuf.ErrClosed after Close and os.ErrDeadlineExceeded when the ring
// was found empty after the deadline.
func (r *LineageReader) Read(ev *LineageEvent) error {
	if err := r.rd.ReadInto(&r.rec); err != nil {
		return err
	}
	return decodeLineage(r.rec.RawSample, ev)
}

// Close unblocks Read.
func (r *LineageReader) Close() error { return r.rd.Close() }

// decodeLineage decodes by hand: this runs for every process on the host,
// and reflection-based decoding would cost more than the rest together.
func decodeLineage(b []byte, ev *LineageEvent) error {
	if len(b) < dataOffset {
		return fmt.Errorf("decode lineage event: %d bytes, want at least %d", len(b), dataOffset)
	}
	ne := binary.NativeEndian
	u32 := func(off int) uint32 { return ne.Uint32(b[off:]) }
	u64 := func(off int) uint64 { return ne.Uint64(b[off:]) }
	ref := func(off int) ImageRef { return ImageRef{TGID: u32(off), Image: u32(off + 4), StartNs: u64(off + 8)} }
	*ev = LineageEvent{
		Kind: LineageKind(u32(0)), Flags: u32(4), PID: u32(8), TGID: u32(12), PPID: u32(16),
		UID: u32(20), GID: u32(24), EUID: u32(28), EGID: u32(32), ExitCode: int32(u32(36)),
		CgroupID: u64(40), SessionCgroupID: u64(48), TimeNs: u64(56),
		Self: ref(64), Parent: ref(80),
	}
	pathLen, argsLen := int(ne.Uint16(b[96:])), int(ne.Uint16(b[98:]))
	data := b[dataOffset:]
	if pathLen+argsLen > len(data) {
		return fmt.Errorf("decode lineage event: %d+%d data bytes announced, %d present", pathLen, argsLen, len(data))
	}
	ev.Path = string(data[:pathLen])
	if argsLen > 0 {
		args := data[pathLen : pathLen+argsLen]
		// argv is NUL-terminated strings; a cut one has no final NUL.
		args = bytes.TrimSuffix(args, []byte{0})
		for a := range bytes.SplitSeq(args, []byte{0}) {
			ev.Args = append(ev.Args, string(a))
		}
	}
	return nil
}

// Flush makes a blocked Read return what is in the ring now, followed by
// ringbuf.ErrFlushed.
func (r *LineageReader) Flush() error { return r.rd.Flush() }
