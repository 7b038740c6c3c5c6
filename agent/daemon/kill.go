package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/wardenhq/warden/agent/lifetime"
	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/pkg/event"
)

// The daemon is the agent's lifetime.Handler.
var _ lifetime.Handler = (*Daemon)(nil)

// killTimeout bounds the wait for a killed session's processes to be gone.
const killTimeout = 5 * time.Second

// Kill ends the sessions req names, in the order that leaves the person no
// way back in:
//
//  1. a lock the request carries, first, so that a login racing the kill
//     is refused;
//  2. the kernel binding, so that no new connect starts;
//  3. every proxied connection of the sessions, in its protocol's words
//     (a running statement is cancelled upstream first);
//  4. every process in the sessions' cgroups (cgroup.kill: processes
//     under sudo included, since they stay in the cgroup);
//  5. the sessions' cgroups, now empty.
//
// One session.killed event reports it. A request that matches no session
// is not an error: the report is empty.
func (d *Daemon) Kill(ctx context.Context, req lifetime.KillRequest) (lifetime.KillReport, error) {
	var rep lifetime.KillReport
	if (req.SessionID == "") == (req.Sub == "") {
		return rep, errors.New("kill: name a session or a person (sub), exactly one")
	}
	by := req.By
	if by == "" {
		by = "unknown"
	}
	var targets []*session.Session
	if req.SessionID != "" {
		if s, ok := d.sessions.Get(req.SessionID); ok {
			targets = append(targets, s)
		}
	} else {
		for _, s := range d.sessions.List() {
			if s.Identity.Subject == req.Sub {
				targets = append(targets, s)
			}
		}
	}

	var lockedUntil time.Time
	lockSub := req.Sub
	if lockSub == "" && len(targets) > 0 {
		lockSub = targets[0].Identity.Subject
	}
	if req.Lock > 0 && lockSub != "" {
		lockedUntil = time.Now().Add(req.Lock)
		if err := d.Lock(ctx, lockSub, lockedUntil, req.Reason, by); err != nil {
			return rep, err
		}
	}
	if len(targets) == 0 {
		d.log.Info().Str("session", req.SessionID).Str("sub", req.Sub).Str("by", by).Msg("kill matched no session")
		return rep, nil
	}

	var errs []error
	ids := map[string]bool{}
	for _, s := range targets {
		ids[s.ID] = true
		rep.Sessions = append(rep.Sessions, s.ID)
		if _, err := d.sessions.End(s.ID); err != nil && !errors.Is(err, session.ErrNoSession) {
			// Ended meanwhile (expiry, logout) is fine: its processes
			// are still killed below.
			errs = append(errs, err)
		}
	}
	if err := d.syncAccess(); err != nil {
		d.log.Error().Err(err).Msg("sync access after kill")
	}

	// The processes are listed, with their binaries, before anything
	// ends: a client whose connection closes below (psql after its FATAL)
	// exits on its own before the cgroup is killed, and the kill ended it
	// all the same.
	type found struct {
		pids []int
		bins map[int]string
	}
	listed := make([]found, len(targets))
	for i, s := range targets {
		pids, err := cgroupv2.TreeProcs(s.Cgroup)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		listed[i] = found{pids: pids, bins: binaries(pids)}
	}

	reason := msgKilled(by, req.Reason)
	closed := d.proxy.Close(ctx, func(att *proxy.Attribution) (string, bool) { return reason, ids[att.SessionID] })
	rep.Connections = len(closed)

	kctx, cancel := context.WithTimeout(ctx, killTimeout)
	defer cancel()
	var procs []event.KilledProcess
	for i, s := range targets {
		killed, err := cgroupv2.Kill(kctx, s.Cgroup)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("session %s: %w", s.ID, err))
		}
		// Forked since the listing: its binary is read too late, if at
		// all.
		all := listed[i].pids
		for _, pid := range killed {
			if !slices.Contains(all, pid) {
				all = append(all, pid)
			}
		}
		for _, pid := range all {
			procs = append(procs, event.KilledProcess{PID: pid, Binary: listed[i].bins[pid]})
			rep.Processes = append(rep.Processes, pid)
		}
	}
	d.sessions.Reap()

	d.log.Warn().Strs("sessions", rep.Sessions).Str("by", by).Str("reason", req.Reason).
		Ints("processes", rep.Processes).Int("connections_closed", rep.Connections).Msg("sessions killed")
	d.emit(&event.Event{Type: event.SessionKilled, Identity: identityOf(targets[0]),
		Decision: &event.Decision{Action: event.Deny, Rule: "kill", Reason: reason},
		Data: event.Killed{By: by, Reason: req.Reason, Sessions: rep.Sessions, Processes: procs,
			ConnectionsClosed: closedConnections(closed), LockedUntil: lockedUntil}.Data()})
	return rep, errors.Join(errs...)
}

// Lock refuses logins of sub until until; see lifetime.Handler.
func (d *Daemon) Lock(ctx context.Context, sub string, until time.Time, reason, by string) error {
	if err := d.locks.Lock(sub, until, reason, by); err != nil {
		return err
	}
	d.log.Warn().Str("sub", sub).Time("until", until).Str("by", by).Str("reason", reason).Msg("logins locked")
	return nil
}

// Locks lists the locks in force.
func (d *Daemon) Locks() []lifetime.Lock { return d.locks.Active(time.Now()) }

// binaries reads the executables of pids from /proc; a process gone
// already has none.
func binaries(pids []int) map[int]string {
	out := make(map[int]string, len(pids))
	for _, pid := range pids {
		out[pid], _ = os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	}
	return out
}

// commandsSyncWait is how long after its start the agent holds logins
// back until the collector's pending kills and locks are applied. Past it
// (NATS unreachable, say) logins proceed under the locks already on disk:
// an agent cut off from the collector must stay usable.
const commandsSyncWait = 3 * time.Second

// awaitCommands holds a login back until the commands that waited for this
// agent are applied, or the start-up's grace ends.
func (d *Daemon) awaitCommands(ctx context.Context) {
	if d.commands == nil {
		return
	}
	wait := time.Until(d.syncDeadline)
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-d.commands.Synced():
	case <-t.C:
		d.log.Warn().Msg("collector commands not in sync; accepting logins under the locks on disk")
	case <-ctx.Done():
	}
}

// lockedMessage is what a locked person's 'warden login' answers.
func lockedMessage(lk lifetime.Lock) string {
	msg := fmt.Sprintf("warden: logins of %s are locked until %s by %s", lk.Sub, lk.Until.UTC().Format(time.RFC3339), lk.By)
	if lk.Reason != "" {
		msg += ": " + lk.Reason
	}
	return msg
}
