package lineage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/event"
)

// fakeEvents behaves like the lineage ring buffer's reader: Read blocks
// until a record, a flush, Close or the deadline.
type fakeEvents struct {
	mu       sync.Mutex
	queue    []fakeRecord
	flushed  bool
	closed   bool
	deadline time.Time
	wake     chan struct{} // closed and replaced on every change
}

type fakeRecord struct {
	ev  loader.LineageEvent
	err error
}

func newFakeEvents() *fakeEvents { return &fakeEvents{wake: make(chan struct{})} }

func (f *fakeEvents) changed() {
	close(f.wake)
	f.wake = make(chan struct{})
}

func (f *fakeEvents) push(ev loader.LineageEvent, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, fakeRecord{ev, err})
	f.changed()
}

func (f *fakeEvents) Read(ev *loader.LineageEvent) error {
	for {
		f.mu.Lock()
		switch {
		case f.closed:
			f.mu.Unlock()
			return ringbuf.ErrClosed
		case len(f.queue) > 0:
			r := f.queue[0]
			f.queue = f.queue[1:]
			f.mu.Unlock()
			*ev = r.ev
			return r.err
		case f.flushed:
			f.flushed = false
			f.mu.Unlock()
			return ringbuf.ErrFlushed
		}
		wait, wake := time.Until(f.deadline), f.wake
		f.mu.Unlock()
		if wait <= 0 {
			return os.ErrDeadlineExceeded
		}
		timer := time.NewTimer(wait)
		select {
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (f *fakeEvents) SetDeadline(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deadline = t
	f.changed()
}

func (f *fakeEvents) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushed = true
	f.changed()
	return nil
}

func (f *fakeEvents) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.changed()
	return nil
}

func (f *fakeEvents) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// fakePrograms holds the kernel's loss counters and what was reported.
type fakePrograms struct {
	mu       sync.Mutex
	counters map[string]uint64
	reported map[string]uint64
	closed   bool
}

func newFakePrograms() *fakePrograms {
	return &fakePrograms{counters: map[string]uint64{}, reported: map[string]uint64{}}
}

func (p *fakePrograms) Task(int) (loader.TaskLineage, bool, error) {
	return loader.TaskLineage{}, false, nil
}

// Track tracks nothing: the fake kernel sends no events of its own.
func (p *fakePrograms) Track(int, bool) (loader.TaskLineage, error) {
	return loader.TaskLineage{}, nil
}

func (p *fakePrograms) Counters() (map[string]uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]uint64{}
	for k, v := range p.counters {
		out[k] = v
	}
	return out, nil
}

func (p *fakePrograms) Reported() (map[string]uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]uint64{}
	for k, v := range p.reported {
		out[k] = v
	}
	return out, nil
}

func (p *fakePrograms) SetReported(name string, v uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reported[name] = v
	return nil
}

func (p *fakePrograms) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

// fakeRecorder keeps what the tracker emitted and lost.
type fakeRecorder struct {
	mu     sync.Mutex
	events []event.Event
	losses map[string]uint64 // "source/reason"
}

func (r *fakeRecorder) Emit(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, *e)
	return nil
}

func (r *fakeRecorder) Lost(source, reason string, n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.losses == nil {
		r.losses = map[string]uint64{}
	}
	r.losses[source+"/"+reason] += n
}

func (r *fakeRecorder) snapshot() ([]event.Event, map[string]uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	losses := map[string]uint64{}
	for k, v := range r.losses {
		losses[k] = v
	}
	return append([]event.Event(nil), r.events...), losses
}

var alice = &event.Identity{Sub: "alice", Groups: []string{"engineering"}}

type trackerFixture struct {
	tr     *Tracker
	events *fakeEvents
	progs  *fakePrograms
	rec    *fakeRecorder
}

func newTrackerFixture(table Options) *trackerFixture {
	f := &trackerFixture{events: newFakeEvents(), progs: newFakePrograms(), rec: &fakeRecorder{}}
	table.HostID = "h"
	f.tr = NewTracker(TrackerOptions{
		Table: table, Programs: f.progs, Events: f.events, Recorder: f.rec,
		Sessions: func(id uint64) *event.Identity {
			if id == 7 {
				return alice
			}
			return nil
		},
		Log: zerolog.Nop(),
	})
	return f
}

// run runs the tracker until the returned stop is called; stop returns
// Run's error.
func (f *trackerFixture) run(t *testing.T) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.tr.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

// waitFor polls cond until it holds; the minute bounds a hang, it is not
// a speed assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func ofType(evs []event.Event, typ event.Type) []event.Event {
	var out []event.Event
	for _, e := range evs {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// The tracker applies the kernel's events and reports process.exec and
// process.exit for processes in bound sessions only, each once.
func TestTrackerReportsSessionProcesses(t *testing.T) {
	f := newTrackerFixture(Options{})
	const outsider = 4_000_050
	for i, ev := range []loader.LineageEvent{
		{Kind: loader.LineageExec, TGID: shellPID, Self: ref(shellPID, 100, 1), Parent: ref(shellPID, 100, 0), Path: "/bin/bash", Args: []string{"bash"}, SessionCgroupID: 7},
		{Kind: loader.LineageFork, TGID: childPID, PPID: shellPID, Self: ref(childPID, 200, 0), Parent: ref(shellPID, 100, 1), SessionCgroupID: 7},
		{Kind: loader.LineageExec, TGID: childPID, Self: ref(childPID, 200, 1), Parent: ref(shellPID, 100, 1), Path: "/usr/bin/psql", Args: []string{"psql"}, UID: 1000, SessionCgroupID: 7},
		{Kind: loader.LineageExec, TGID: outsider, Self: ref(outsider, 300, 1), Parent: ref(outsider, 300, 0), Path: "/usr/sbin/cron", Args: []string{"cron"}},
		{Kind: loader.LineageExit, TGID: childPID, Self: ref(childPID, 200, 1), ExitCode: 3 << 8, SessionCgroupID: 7},
		{Kind: loader.LineageExit, TGID: outsider, Self: ref(outsider, 300, 1)},
	} {
		ev.TimeNs = uint64(i+1) * tick
		f.events.push(ev, nil)
	}
	stop := f.run(t)
	waitFor(t, "process.exit", func() bool {
		evs, _ := f.rec.snapshot()
		return len(ofType(evs, event.ProcessExit)) > 0
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !f.events.isClosed() {
		t.Error("Run returned without closing the event reader")
	}

	evs, _ := f.rec.snapshot()
	var execs []string
	for _, e := range ofType(evs, event.ProcessExec) {
		if e.Identity != alice {
			t.Errorf("process.exec of %s has identity %+v, want alice", e.Process.Binary, e.Identity)
		}
		execs = append(execs, e.Process.Binary)
	}
	if got := fmt.Sprint(execs); got != "[/bin/bash /usr/bin/psql]" {
		t.Fatalf("process.exec for %s, want bash and psql once each, not cron", got)
	}
	exits := ofType(evs, event.ProcessExit)
	if len(exits) != 1 || exits[0].Process.Binary != "/usr/bin/psql" || exits[0].Identity != alice ||
		fmt.Sprint(exits[0].Data["exit_code"]) != "3" {
		t.Fatalf("process.exit: %+v", exits)
	}
}

// A process outside any session is reported when it touches a target
// (Attribute), once; the login shell becomes the root of its session.
func TestTrackerAttributeAndLoginShell(t *testing.T) {
	f := newTrackerFixture(Options{})
	const outsider = 4_000_050
	f.events.push(loader.LineageEvent{Kind: loader.LineageExec, TGID: shellPID, Self: ref(shellPID, 100, 1), Parent: ref(shellPID, 100, 0), Path: "/bin/bash", Args: []string{"bash"}, TimeNs: tick}, nil)
	f.events.push(loader.LineageEvent{Kind: loader.LineageExec, TGID: outsider, Self: ref(outsider, 300, 1), Parent: ref(shellPID, 100, 1), Path: "/usr/bin/nc", Args: []string{"nc"}, TimeNs: 2 * tick}, nil)
	stop := f.run(t)
	defer stop()

	p, data := f.tr.Attribute(outsider, 0, 0, 0)
	if p.Binary != "/usr/bin/nc" || len(p.Ancestors) == 0 || p.Ancestors[0].Binary != "/bin/bash" || data != nil {
		t.Fatalf("Attribute = %+v, %v", p, data)
	}
	f.tr.Attribute(outsider, 0, 0, 0)
	evs, _ := f.rec.snapshot()
	if execs := ofType(evs, event.ProcessExec); len(execs) != 1 || execs[0].Process.Binary != "/usr/bin/nc" || execs[0].Identity != nil {
		t.Fatalf("process.exec after two attributions: %+v", execs)
	}

	// 'warden login' run by nc's parent, the shell: the shell joins.
	shell, err := f.tr.LoginShell(p, 7, alice)
	if err != nil || shell.Binary != "/bin/bash" || shell.ExecID != p.Ancestors[0].ExecID {
		t.Fatalf("LoginShell = %+v, %v", shell, err)
	}
	evs, _ = f.rec.snapshot()
	if execs := ofType(evs, event.ProcessExec); len(execs) != 2 || execs[1].Process.Binary != "/bin/bash" || execs[1].Identity != alice {
		t.Fatalf("login shell's process.exec: %+v", execs)
	}
	// A peer whose parent is not the image the table knows is refused.
	changed := *p
	changed.Ancestors = []event.Ancestor{{PID: shellPID, ExecID: "something-else"}}
	if got, err := f.tr.LoginShell(&changed, 7, alice); err == nil || got != &changed {
		t.Fatalf("LoginShell with a changed parent = %+v, %v", got, err)
	}
	if _, err := f.tr.LoginShell(&event.Process{PID: 1}, 7, alice); err == nil {
		t.Fatal("LoginShell with no ancestors succeeded")
	}
}

// Kernel losses are reported once each, across agent runs (the reported
// counts are the programs' to keep), split into losses in and outside
// login sessions.
func TestTrackerReportsKernelLossesOnce(t *testing.T) {
	f := newTrackerFixture(Options{})
	f.progs.counters = map[string]uint64{"exec_lost": 5, "exec_lost_session": 2, "fork_lost": 1}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	runOnce := func() map[string]uint64 {
		t.Helper()
		if err := f.tr.Run(cancelled); err != nil {
			t.Fatal(err)
		}
		_, losses := f.rec.snapshot()
		f.rec.losses = nil
		return losses
	}
	want := map[string]uint64{"bpf/lineage_exec_lost": 3, "bpf/lineage_exec_lost_in_session": 2, "bpf/lineage_fork_lost": 1}
	if got := runOnce(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("first run lost %v, want %v", got, want)
	}
	if got := runOnce(); len(got) != 0 {
		t.Fatalf("second run reported again: %v", got)
	}
	f.progs.counters["exec_lost"] = 6
	if got := runOnce(); fmt.Sprint(got) != fmt.Sprint(map[string]uint64{"bpf/lineage_exec_lost": 1}) {
		t.Fatalf("after one more loss: %v", got)
	}
	// Counters below what was reported: the maps were recreated.
	f.progs.counters = map[string]uint64{"exit_lost": 2, "exit_lost_session": 2}
	f.progs.reported = map[string]uint64{"exit_lost": 9, "exit_lost_session": 9}
	if got := runOnce(); fmt.Sprint(got) != fmt.Sprint(map[string]uint64{"bpf/lineage_exit_lost_in_session": 2}) {
		t.Fatalf("after the maps were recreated: %v", got)
	}
}

// An unreadable record and a live image evicted from a full table are
// losses, reported through the recorder.
func TestTrackerReportsReadAndTableLosses(t *testing.T) {
	f := newTrackerFixture(Options{MaxEntries: 2})
	f.events.push(loader.LineageEvent{}, errors.New("short record"))
	for i := range uint32(4) {
		pid := 4_000_100 + i
		f.events.push(loader.LineageEvent{Kind: loader.LineageFork, TGID: pid, Self: ref(pid, 100, 0), Parent: ref(shellPID, 100, 1), TimeNs: uint64(i+1) * tick}, nil)
	}
	stop := f.run(t)
	waitFor(t, "table loss", func() bool {
		_, losses := f.rec.snapshot()
		return losses[SourceLineage+"/"+ReasonTableFull] > 0
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_, losses := f.rec.snapshot()
	if losses[SourceBPF+"/"+ReasonUnreadable] != 1 {
		t.Fatalf("unreadable record not reported: %v", losses)
	}
	if s := f.tr.Table().Stats(); losses[SourceLineage+"/"+ReasonTableFull] != s.EvictedLive {
		t.Fatalf("table losses %v, evicted live %d", losses, s.EvictedLive)
	}
	if err := f.tr.Close(); err != nil || !f.progs.closed {
		t.Fatalf("Close: %v, programs closed %v", err, f.progs.closed)
	}
}
