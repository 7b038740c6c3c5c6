package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wardenhq/warden/agent/lineage"
	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/pkg/event"
)

// Lineage tuning.
const (
	// lineageSyncTimeout bounds how long an attribution waits for the
	// kernel events that preceded the connection to be applied. Past it,
	// the table's current view is used as it is.
	lineageSyncTimeout = 250 * time.Millisecond
	// lineagePoll is how often the reader wakes when the ring is empty, to
	// mark the table caught up and to sweep it.
	lineagePoll = 50 * time.Millisecond
	// lineageCounterInterval is how often kernel lineage losses are read.
	lineageCounterInterval = 2 * time.Second
)

// lineagePinDir is where the lineage programs pin, below the enforcer's.
func lineagePinDir(pinDir string) string { return filepath.Join(pinDir, "lineage") }

// startLineage loads the lineage programs and seeds the process table from
// /proc. The ring buffer is opened before seeding, so a process that starts
// meanwhile is in one or the other (or both, which the table merges).
func (d *Daemon) startLineage(root string) error {
	mount, err := cgroupv2.Mount()
	if err != nil {
		return fmt.Errorf("find cgroup2 mount: %w", err)
	}
	sessionsDir := filepath.Join(root, sessionsCgroupName)
	if err := cgroupv2.Create(sessionsDir); err != nil {
		return err
	}
	sessionsID, err := cgroupv2.ID(sessionsDir)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(mount, sessionsDir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("sessions cgroup %s is not below the cgroup2 mount %s", sessionsDir, mount)
	}
	level := uint32(len(strings.Split(rel, "/")))

	d.lin, err = loader.LoadLineage(loader.LineageOptions{PinDir: lineagePinDir(d.cfg.BPFPinDir)})
	if err != nil {
		return err
	}
	if len(d.lin.Replaced) > 0 {
		d.log.Warn().Strs("programs", d.lin.Replaced).
			Msg("lineage programs of an older version replaced: process events between detach and attach were not seen")
	}
	if err := d.lin.SetSessionsCgroup(sessionsID, level); err != nil {
		return err
	}
	d.procs = lineage.New(lineage.Options{
		HostID: d.cfg.HostID, Kernel: d.lin, CgroupMount: mount, SessionsDir: sessionsDir,
		OnLoss: func(n uint64, reason string) { d.emitLoss(n, reason, "lineage") },
		Log:    d.log.With().Str("component", "lineage").Logger(),
	})
	if d.lineageRd, err = d.lin.Events(); err != nil {
		return err
	}
	n, err := d.procs.Seed()
	if err != nil {
		return err
	}
	d.log.Info().Int("processes", n).Msg("process table seeded from /proc")
	return nil
}

// registerLineageMetrics exposes the table's size and pressure.
func (d *Daemon) registerLineageMetrics() {
	stat := func(f func(lineage.Stats) float64) func() float64 {
		return func() float64 { return f(d.procs.Stats()) }
	}
	d.metrics.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warden_lineage_entries", Help: "Process images in the lineage table."},
			stat(func(s lineage.Stats) float64 { return float64(s.Entries) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warden_lineage_live", Help: "Live process images in the lineage table."},
			stat(func(s lineage.Stats) float64 { return float64(s.Live) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warden_lineage_evicted_early_total",
			Help: "Ended process images evicted before their grace period because the table was full (pressure)."},
			stat(func(s lineage.Stats) float64 { return float64(s.EvictedEarly) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warden_lineage_evicted_live_total",
			Help: "Live process images evicted because the table was full (each one reported as agent.loss)."},
			stat(func(s lineage.Stats) float64 { return float64(s.EvictedLive) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warden_lineage_stubs_total",
			Help: "Parent images known only by exec id (their events were lost or predate the agent)."},
			stat(func(s lineage.Stats) float64 { return float64(s.Stubs) })),
	)
	d.metrics.Registry.MustRegister(&lineageKernelCollector{d: d, desc: prometheus.NewDesc(
		"warden_lineage_kernel_total", "Counters kept by the lineage BPF programs.", []string{"counter"}, nil)})
}

type lineageKernelCollector struct {
	d    *Daemon
	desc *prometheus.Desc
}

func (c *lineageKernelCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lineageKernelCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := c.d.lin.Counters()
	if err != nil {
		return
	}
	for name, v := range counters {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), name)
	}
}

// readLineage applies the kernel's process events to the table and emits
// process.exec and process.exit for processes in bound sessions.
func (d *Daemon) readLineage(ctx context.Context) error {
	rd := d.lineageRd
	defer rd.Close()
	var ev loader.LineageEvent
	lastSweep := time.Now()
	immediate := false
	for ctx.Err() == nil {
		before := lineage.BootNow()
		if immediate {
			// Only look whether the ring is empty now, without waiting.
			rd.SetDeadline(time.Now())
		} else {
			rd.SetDeadline(time.Now().Add(lineagePoll))
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
			d.procs.Advance(before)
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		case err != nil:
			d.log.Error().Err(err).Msg("read lineage event")
			d.emitLoss(1, "lineage record unreadable", "bpf")
		default:
			u := d.procs.Apply(&ev)
			// Events are stamped right before they enter the ring, so
			// ring order and stamp order agree to within the time it takes
			// to copy one event; the margin covers that.
			if ev.TimeNs > uint64(time.Millisecond) {
				d.procs.Advance(ev.TimeNs - uint64(time.Millisecond))
			}
			d.lineageEvent(&ev, u)
		}
		if time.Since(lastSweep) >= time.Second {
			d.procs.Sweep()
			lastSweep = time.Now()
		}
	}
	return nil
}

// lineageEvent emits the event for one applied kernel record, if its
// process is in a bound session.
func (d *Daemon) lineageEvent(ev *loader.LineageEvent, u lineage.Update) {
	if u.Warning != "" {
		d.log.Debug().Str("warning", u.Warning).Msg("lineage")
	}
	switch u.Kind {
	case loader.LineageExec:
		s := d.sessionByCgroup(u.SessionCgroupID)
		if s == nil {
			return
		}
		d.reportExec(u.ExecID, s, u.Warning)
	case loader.LineageExit:
		if !u.Reported {
			return
		}
		p := d.procs.Describe(u.ExecID)
		if p == nil {
			return
		}
		var id *event.Identity
		if s := d.sessionByCgroup(u.SessionCgroupID); s != nil {
			id = identityOf(s)
		}
		status := uint32(ev.ExitCode)
		data := map[string]any{"exit_code": (status >> 8) & 0xff, "signal": status & 0x7f}
		if ev.TimeNs > ev.Self.StartNs && ev.Self.StartNs != 0 {
			data["duration_ms"] = float64(ev.TimeNs-ev.Self.StartNs) / 1e6 // the process's, since fork
		}
		d.emit(&event.Event{Type: event.ProcessExit, Identity: id, Process: p, Data: data})
	}
}

// reportExec emits process.exec for image execID once.
func (d *Daemon) reportExec(execID string, s *session.Session, warning string) {
	if execID == "" || !d.procs.MarkReported(execID) {
		return
	}
	info, ok := d.procs.Get(execID)
	p := d.procs.Describe(execID)
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
	var id *event.Identity
	if s != nil {
		id = identityOf(s)
	}
	d.emit(&event.Event{Type: event.ProcessExec, Identity: id, Process: p, Data: data})
}

// attribute describes the process behind a kernel record for an event. It
// waits until the table has applied the kernel's events up to the record's
// time, so an exec just before a connect is seen. A process that touches a
// target gets its process.exec reported, in a session or not.
func (d *Daemon) attribute(pid, uid uint32, bootNs, sessionCgroupID uint64) (*event.Process, map[string]any) {
	if bootNs == 0 {
		bootNs = lineage.BootNow()
	}
	caughtUp := d.procs.Wait(bootNs, lineageSyncTimeout, func() {
		if err := d.lineageRd.Flush(); err != nil {
			d.log.Debug().Err(err).Msg("hurry lineage reader")
		}
	})
	a := d.procs.Attribute(pid, uid, bootNs, sessionCgroupID)
	var data map[string]any
	if a.Warning != "" {
		if !caughtUp {
			a.Warning += " (the process table was still behind the kernel's events)"
		}
		d.log.Warn().Uint32("pid", pid).Str("warning", a.Warning).Msg("lineage and identity binding disagree")
		data = map[string]any{"lineage_warning": a.Warning}
	}
	d.reportExec(a.ExecID, d.sessionByCgroup(sessionCgroupID), a.Warning)
	return a.Process, data
}

// sessionByCgroup returns the bound session whose cgroup is id.
func (d *Daemon) sessionByCgroup(id uint64) *session.Session {
	if id == 0 {
		return nil
	}
	m := d.sessionCgroups.Load()
	if m == nil {
		return nil
	}
	return (*m)[id]
}

// setSessions refreshes the cgroup → session index the lineage reader
// consults for every event, so it never takes the session manager's lock.
func (d *Daemon) setSessions(list []*session.Session) {
	m := make(map[uint64]*session.Session, len(list))
	for _, s := range list {
		m[s.CgroupID] = s
	}
	d.sessionCgroups.Store(&m)
}

// watchLineageLosses reports lineage events the kernel could not deliver,
// once each, including those lost while no agent ran: what was reported is
// kept in a pinned map next to the counters.
func (d *Daemon) watchLineageLosses(ctx context.Context) error {
	kinds := []string{"fork", "exec", "exit"}
	t := time.NewTicker(lineageCounterInterval)
	defer t.Stop()
	for {
		d.reportLineageLosses(kinds)
		select {
		case <-ctx.Done():
			d.reportLineageLosses(kinds)
			return nil
		case <-t.C:
		}
	}
}

func (d *Daemon) reportLineageLosses(kinds []string) {
	c, err := d.lin.Counters()
	if err != nil {
		d.log.Error().Err(err).Msg("read lineage counters")
		return
	}
	reported, err := d.lin.Reported()
	if err != nil {
		d.log.Error().Err(err).Msg("read reported lineage counters")
		return
	}
	for _, k := range kinds {
		lost, inSession := k+"_lost", k+"_lost_session"
		n, ns := c[lost]-reported[lost], c[inSession]-reported[inSession]
		if c[lost] < reported[lost] || c[inSession] < reported[inSession] {
			// The maps were recreated (uninstall): start over.
			n, ns = c[lost], c[inSession]
		}
		if n == 0 {
			continue
		}
		reason := "lineage_" + lost
		d.log.Warn().Uint64("count", n).Uint64("in_session", ns).Str("reason", reason).Msg("process events lost")
		d.emit(&event.Event{Type: event.AgentLoss, Data: map[string]any{
			"count": n, "in_session": ns, "reason": reason, "source": "bpf", "kind": k,
		}})
		if err := d.lin.SetReported(lost, c[lost]); err != nil {
			d.log.Error().Err(err).Msg("store reported lineage counter")
		}
		if err := d.lin.SetReported(inSession, c[inSession]); err != nil {
			d.log.Error().Err(err).Msg("store reported lineage counter")
		}
	}
}

// UninstallLineage detaches the lineage programs and removes their pins.
func UninstallLineage(pinDir string) error {
	l, err := loader.LoadLineage(loader.LineageOptions{PinDir: lineagePinDir(pinDir)})
	if err != nil {
		return err
	}
	return l.Uninstall()
}
