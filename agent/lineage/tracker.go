package lineage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/redact"
)

// Tracker tuning.
const (
	// syncTimeout bounds how long an attribution waits for the kernel
	// events that preceded the connection to be applied. Past it, the
	// table's current view is used as it is.
	syncTimeout = 250 * time.Millisecond
	// pollInterval is how often the reader wakes when the ring is empty,
	// to mark the table caught up, sweep it and look at the loss counters.
	pollInterval = 50 * time.Millisecond
	// sweepInterval is how often ended images past their grace are evicted.
	sweepInterval = time.Second
	// counterInterval is how often the kernel's lineage losses are read.
	counterInterval = 2 * time.Second
)

// Loss sources and reasons the tracker reports through Recorder.Lost.
const (
	// SourceLineage: the process table (reason ReasonTableFull).
	SourceLineage = "lineage"
	// SourceBPF: the lineage programs and their ring buffer.
	SourceBPF = "bpf"

	// ReasonTableFull: a live image was evicted because the table was full.
	ReasonTableFull = "lineage_table_full"
	// ReasonUnreadable: a record in the ring could not be decoded.
	ReasonUnreadable = "lineage_record_unreadable"
)

// kernelLossKinds are the event kinds whose losses the programs count, as
// <kind>_lost and <kind>_lost_session (the share in a login session).
var kernelLossKinds = []string{"fork", "exec", "exit"}

// Recorder receives the tracker's events and the losses it counts.
// *recorder.Recorder is one.
type Recorder interface {
	// Emit stores e; an error means it was not stored, and the recorder
	// has counted it as lost (reported later in agent.loss).
	Emit(*event.Event) error
	Lost(source, reason string, n uint64)
}

// Events is the kernel's stream of lineage events; *loader.LineageReader
// is one.
type Events interface {
	Read(*loader.LineageEvent) error
	SetDeadline(time.Time)
	Flush() error
	Close() error
}

// Programs are the loaded lineage programs; *loader.Lineage is one.
type Programs interface {
	Kernel
	Counters() (map[string]uint64, error)
	Reported() (map[string]uint64, error)
	SetReported(name string, v uint64) error
	Close() error
}

// TrackerOptions configure NewTracker.
type TrackerOptions struct {
	// Table configures the process table. Its OnLoss and Log are the
	// tracker's, and its Kernel defaults to Programs.
	Table Options
	// Programs are the kernel side; their handles are the tracker's to
	// close.
	Programs Programs
	// Events is the ring the tracker reads; it is the tracker's to close.
	Events Events
	// Recorder receives process.exec, process.exit and every loss.
	Recorder Recorder
	// Sessions returns the identity bound to the login-session cgroup with
	// the given id, or nil. It is asked for every event, so it must be
	// cheap and never block.
	Sessions func(sessionCgroupID uint64) *event.Identity
	// Redactor returns the redactor of the policy in force (nil: the
	// built-in rules), which redacts every image's arguments as it
	// enters the table, with the groups of the session it runs in. It
	// must be cheap and never block.
	Redactor func() *redact.Redactor
	Log      zerolog.Logger
}

// Tracker is the agent's lineage component: it applies the kernel's
// process events to the process table, emits process.exec and
// process.exit for processes in bound sessions (and for any process that
// touches a target), and reports what the kernel or the table lost.
type Tracker struct {
	opts  TrackerOptions
	table *Table
	log   zerolog.Logger

	closeEvents sync.Once
	closeAll    sync.Once
	closeErr    error
}

// NewTracker returns a tracker over opts.Programs and opts.Events. Seed
// the table, then Run it.
func NewTracker(opts TrackerOptions) *Tracker {
	if opts.Sessions == nil {
		opts.Sessions = func(uint64) *event.Identity { return nil }
	}
	t := &Tracker{opts: opts, log: opts.Log}
	topts := opts.Table
	if topts.Kernel == nil && opts.Programs != nil {
		topts.Kernel = opts.Programs
	}
	topts.Log = opts.Log
	topts.OnLoss = func(n uint64, reason string) { opts.Recorder.Lost(SourceLineage, reason, n) }
	if topts.Redact == nil {
		topts.Redact = t.redact
	}
	t.table = New(topts)
	return t
}

// redact redacts an image's arguments for the table, exempting what the
// policy exempts for the person of its session.
func (t *Tracker) redact(binary string, args []string, sessionCgroupID uint64) ([]string, []string) {
	var groups []string
	if sessionCgroupID != 0 {
		if id := t.opts.Sessions(sessionCgroupID); id != nil {
			groups = id.Groups
		}
	}
	var r *redact.Redactor
	if t.opts.Redactor != nil {
		r = t.opts.Redactor()
	}
	out, res := r.Args(binary, args, groups)
	return out, res.Exemptions
}

// StartOptions configure Start.
type StartOptions struct {
	HostID string
	// PinDir is the agent's bpf_pin_dir; the lineage programs pin below it
	// (see PinDir).
	PinDir string
	// CgroupMount is the cgroup2 mount; SessionsDir the cgroup whose
	// children are login sessions. It is created if missing.
	CgroupMount, SessionsDir string
	Recorder                 Recorder
	Sessions                 func(sessionCgroupID uint64) *event.Identity
	// Redactor is TrackerOptions.Redactor.
	Redactor func() *redact.Redactor
	Log      zerolog.Logger
}

// PinDir is where the lineage programs pin, below the agent's bpf_pin_dir.
func PinDir(bpfPinDir string) string { return filepath.Join(bpfPinDir, "lineage") }

// Start loads the lineage programs, tells them which cgroup holds the login
// sessions, opens their ring buffer and seeds the process table from /proc
// with the processes that matter, marking them tracked in the kernel (see
// Table.Seed). The ring is opened before seeding, so a process that starts
// meanwhile is in one or the other (or both, which the table merges). On
// error nothing stays open.
func Start(opts StartOptions) (_ *Tracker, err error) {
	if err := cgroupv2.Create(opts.SessionsDir); err != nil {
		return nil, fmt.Errorf("create sessions cgroup: %w", err)
	}
	sessionsID, err := cgroupv2.ID(opts.SessionsDir)
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(opts.CgroupMount, opts.SessionsDir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("sessions cgroup %s is not below the cgroup2 mount %s", opts.SessionsDir, opts.CgroupMount)
	}
	level := uint32(len(strings.Split(rel, "/")))

	progs, err := loader.LoadLineage(loader.LineageOptions{PinDir: PinDir(opts.PinDir)})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			progs.Close()
		}
	}()
	if len(progs.Replaced) > 0 {
		opts.Log.Warn().Strs("programs", progs.Replaced).
			Msg("lineage programs of an older version replaced: process events between detach and attach were not seen")
	}
	if err := progs.SetSessionsCgroup(sessionsID, level); err != nil {
		return nil, err
	}
	events, err := progs.Events()
	if err != nil {
		return nil, err
	}
	t := NewTracker(TrackerOptions{
		Table:    Options{HostID: opts.HostID, CgroupMount: opts.CgroupMount, SessionsDir: opts.SessionsDir},
		Programs: progs, Events: events, Recorder: opts.Recorder, Sessions: opts.Sessions, Redactor: opts.Redactor, Log: opts.Log,
	})
	n, err := t.table.Seed()
	if err != nil {
		events.Close()
		return nil, err
	}
	opts.Log.Info().Int("processes", n).Msg("process table seeded from /proc")
	return t, nil
}

// Uninstall detaches the lineage programs pinned below bpfPinDir and removes
// their pins.
func Uninstall(bpfPinDir string) error {
	l, err := loader.LoadLineage(loader.LineageOptions{PinDir: PinDir(bpfPinDir)})
	if err != nil {
		return err
	}
	return l.Uninstall()
}

// Table is the tracker's process table.
func (t *Tracker) Table() *Table { return t.table }

// Seed reads every process in /proc into the table (see Table.Seed).
func (t *Tracker) Seed() (int, error) { return t.table.Seed() }

// Run reads the kernel's events into the table until ctx is done, and
// reports the kernel's losses on the way, once more before it returns. It
// closes the event reader when it returns.
func (t *Tracker) Run(ctx context.Context) error {
	defer t.closeReader()
	rd := t.opts.Events
	var ev loader.LineageEvent
	lastSweep, lastCount := time.Now(), time.Time{}
	immediate := false
	for ctx.Err() == nil {
		if time.Since(lastCount) >= counterInterval {
			t.reportKernelLosses()
			lastCount = time.Now()
		}
		before := BootNow()
		if immediate {
			// Only look whether the ring is empty now, without waiting.
			rd.SetDeadline(time.Now())
		} else {
			rd.SetDeadline(time.Now().Add(pollInterval))
		}
		immediate = false
		err := rd.Read(&ev)
		switch {
		case errors.Is(err, ringbuf.ErrFlushed):
			// An attribution asked to catch up: what was in the ring at
			// its request has been applied; one more look without
			// waiting marks the table caught up to now.
			immediate = true
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The ring was empty after before: every event stamped
			// earlier has been applied.
			t.table.Advance(before)
		case errors.Is(err, ringbuf.ErrClosed):
			t.reportKernelLosses()
			return nil
		case err != nil:
			t.log.Error().Err(err).Msg("read lineage event")
			t.opts.Recorder.Lost(SourceBPF, ReasonUnreadable, 1)
		default:
			u := t.table.Apply(&ev)
			// Events are stamped right before they enter the ring, so
			// ring order and stamp order agree to within the time it takes
			// to copy one event; the margin covers that.
			if ev.TimeNs > uint64(time.Millisecond) {
				t.table.Advance(ev.TimeNs - uint64(time.Millisecond))
			}
			t.applied(&ev, u)
		}
		if time.Since(lastSweep) >= sweepInterval {
			t.table.Sweep()
			lastSweep = time.Now()
		}
	}
	t.reportKernelLosses()
	return nil
}

// Close releases the event reader and the programs' handles; the pinned
// programs stay attached. Call it after Run has returned, or instead of
// Run.
func (t *Tracker) Close() error {
	t.closeAll.Do(func() {
		t.closeReader()
		if t.opts.Programs != nil {
			t.closeErr = t.opts.Programs.Close()
		}
	})
	return t.closeErr
}

func (t *Tracker) closeReader() {
	t.closeEvents.Do(func() {
		if t.opts.Events != nil {
			t.opts.Events.Close()
		}
	})
}

// applied emits the event for one applied kernel record, if its process is
// in a bound session.
func (t *Tracker) applied(ev *loader.LineageEvent, u Update) {
	if u.Warning != "" {
		t.log.Debug().Str("warning", u.Warning).Msg("lineage")
	}
	switch u.Kind {
	case loader.LineageExec:
		id := t.opts.Sessions(u.SessionCgroupID)
		if id == nil {
			return
		}
		t.reportExec(u.ExecID, id, u.Warning)
	case loader.LineageExit:
		if !u.Reported {
			return
		}
		p := t.table.Describe(u.ExecID)
		if p == nil {
			return
		}
		status := uint32(ev.ExitCode)
		data := map[string]any{"exit_code": (status >> 8) & 0xff, "signal": status & 0x7f}
		if ev.TimeNs > ev.Self.StartNs && ev.Self.StartNs != 0 {
			data["duration_ms"] = float64(ev.TimeNs-ev.Self.StartNs) / 1e6 // the process's, since fork
		}
		t.emit(&event.Event{Type: event.ProcessExit, Identity: t.opts.Sessions(u.SessionCgroupID), Process: p, Data: data})
	}
}

// reportExec emits process.exec for image execID once.
func (t *Tracker) reportExec(execID string, id *event.Identity, warning string) {
	if execID == "" || !t.table.MarkReported(execID) {
		return
	}
	info, ok := t.table.Get(execID)
	p := t.table.Describe(execID)
	if !ok || p == nil {
		return
	}
	kind := "exec"
	if info.Forked {
		kind = "fork" // a forked copy that has not exec'd, reported because it touched a target
	}
	data := map[string]any{
		"kind": kind, "source": string(info.Source), "gid": info.GID, "euid": info.EUID, "egid": info.EGID,
		"session_cgroup_id": info.SessionCgroupID, "args_truncated": info.ArgsTruncated,
	}
	if warning != "" {
		data["lineage_warning"] = warning
	}
	if len(info.RedactionExemptions) > 0 {
		// Secrets were left in on purpose: name the policy's decision.
		data["redaction_exemptions"] = info.RedactionExemptions
	}
	t.emit(&event.Event{Type: event.ProcessExec, Identity: id, Process: p, Data: data})
}

// emit records a process event. One that cannot be stored is the
// recorder's to count and report; logging each would flood the log when
// the spool is full.
func (t *Tracker) emit(e *event.Event) {
	if err := t.opts.Recorder.Emit(e); err != nil {
		t.log.Debug().Err(err).Str("type", string(e.Type)).Msg("event not recorded")
	}
}

// Attribute describes the process behind a kernel record for an event: pid
// (with uid) at bootNs (CLOCK_BOOTTIME; 0 = now), which the kernel placed
// in login session sessionCgroupID (0 = none). It waits until the table
// has applied the kernel's events up to bootNs, so an exec just before a
// connect is seen. A process that touches a target gets its process.exec
// reported, in a session or not; one outside any session is read from
// /proc (the kernel does not report it) and tracked in the kernel from
// then on, with what it starts. data holds a lineage_warning when the
// lineage does not back the session binding.
func (t *Tracker) Attribute(pid, uid uint32, bootNs, sessionCgroupID uint64) (p *event.Process, data map[string]any) {
	if bootNs == 0 {
		bootNs = BootNow()
	}
	caughtUp := t.table.Wait(bootNs, syncTimeout, func() {
		if err := t.opts.Events.Flush(); err != nil {
			t.log.Debug().Err(err).Msg("hurry lineage reader")
		}
	})
	a := t.table.Attribute(pid, uid, bootNs, sessionCgroupID)
	if a.Warning != "" {
		if !caughtUp {
			a.Warning += " (the process table was still behind the kernel's events)"
		}
		t.log.Warn().Uint32("pid", pid).Str("warning", a.Warning).Msg("lineage and identity binding disagree")
		data = map[string]any{"lineage_warning": a.Warning}
	}
	t.reportExec(a.ExecID, t.opts.Sessions(sessionCgroupID), a.Warning)
	return a.Process, data
}

// LoginShell records that the shell which ran 'warden login' (the parent
// of the login command peer, as Attribute described it) joined the session
// with cgroup sessionCgroupID and identity id: lineage and binding agree
// from here on for it and everything it starts. It returns the shell's
// event view, with its ancestors up to pid 1, and reports its process.exec:
// the root of the session's lineage. The error says why the shell could
// not be joined; peer is then all there is.
func (t *Tracker) LoginShell(peer *event.Process, sessionCgroupID uint64, id *event.Identity) (*event.Process, error) {
	if len(peer.Ancestors) == 0 {
		return peer, fmt.Errorf("login shell of pid %d not in the process table", peer.PID)
	}
	parent := peer.Ancestors[0]
	shell, ok := t.table.JoinSession(parent.PID, sessionCgroupID)
	if !ok || shell.ExecID != parent.ExecID {
		return peer, fmt.Errorf("login shell pid %d changed during login", parent.PID)
	}
	t.reportExec(shell.ExecID, id, "")
	return t.table.Describe(shell.ExecID), nil
}

// reportKernelLosses reports lineage events the kernel could not deliver,
// once each, including those lost while no agent ran: what was reported
// is kept in a pinned map next to the counters. Losses of processes in a
// login session and outside one are reported under their own reasons,
// lineage_<kind>_lost_in_session and lineage_<kind>_lost, so the counts
// add up to what the kernel lost.
func (t *Tracker) reportKernelLosses() {
	if t.opts.Programs == nil {
		return
	}
	c, err := t.opts.Programs.Counters()
	if err != nil {
		t.log.Error().Err(err).Msg("read lineage counters")
		return
	}
	reported, err := t.opts.Programs.Reported()
	if err != nil {
		t.log.Error().Err(err).Msg("read reported lineage counters")
		return
	}
	for _, k := range kernelLossKinds {
		lost, inSession := k+"_lost", k+"_lost_session"
		base, baseIn := reported[lost], reported[inSession]
		if c[lost] < base || c[inSession] < baseIn {
			// The maps were recreated (uninstall): start over.
			base, baseIn = 0, 0
		}
		n, ns := c[lost]-base, c[inSession]-baseIn
		if n == 0 {
			continue
		}
		// The two counters are read one after the other while the
		// programs run: never report more in sessions than in all; the
		// rest is reported next time.
		ns = min(ns, n)
		if n > ns {
			t.opts.Recorder.Lost(SourceBPF, "lineage_"+lost, n-ns)
		}
		if ns > 0 {
			t.opts.Recorder.Lost(SourceBPF, "lineage_"+lost+"_in_session", ns)
		}
		if err := t.opts.Programs.SetReported(lost, c[lost]); err != nil {
			t.log.Error().Err(err).Msg("store reported lineage counter")
		}
		if err := t.opts.Programs.SetReported(inSession, baseIn+ns); err != nil {
			t.log.Error().Err(err).Msg("store reported lineage counter")
		}
	}
}

// Collectors are the tracker's metrics: the table's size and pressure and
// the programs' counters.
func (t *Tracker) Collectors() []prometheus.Collector {
	stat := func(f func(Stats) float64) func() float64 {
		return func() float64 { return f(t.table.Stats()) }
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warden_lineage_entries", Help: "Process images in the lineage table."},
			stat(func(s Stats) float64 { return float64(s.Entries) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warden_lineage_live", Help: "Live process images in the lineage table."},
			stat(func(s Stats) float64 { return float64(s.Live) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warden_lineage_evicted_early_total",
			Help: "Ended process images evicted before their grace period because the table was full (pressure)."},
			stat(func(s Stats) float64 { return float64(s.EvictedEarly) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warden_lineage_evicted_live_total",
			Help: "Live process images evicted because the table was full (each one reported as agent.loss)."},
			stat(func(s Stats) float64 { return float64(s.EvictedLive) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warden_lineage_stubs_total",
			Help: "Parent images known only by exec id (their events were lost or predate the agent)."},
			stat(func(s Stats) float64 { return float64(s.Stubs) })),
	}
	if t.opts.Programs != nil {
		cs = append(cs, &kernelCollector{progs: t.opts.Programs, desc: prometheus.NewDesc(
			"warden_lineage_kernel_total", "Counters kept by the lineage BPF programs.", []string{"counter"}, nil)})
	}
	return cs
}

type kernelCollector struct {
	progs Programs
	desc  *prometheus.Desc
}

func (c *kernelCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *kernelCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := c.progs.Counters()
	if err != nil {
		return
	}
	for name, v := range counters {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), name)
	}
}
