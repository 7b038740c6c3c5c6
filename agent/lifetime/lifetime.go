// Package lifetime is the narrow interface between whoever asks an agent to
// end sessions (the collector's kill switch, delivered over NATS) and the
// agent that does it (agent/daemon). It holds types only, so a transport
// can depend on it without depending on the daemon.
package lifetime

import (
	"context"
	"time"
)

// KillRequest asks the agent to end sessions: one by id (SessionID), or
// all of a person's (Sub). Exactly one of the two is set.
type KillRequest struct {
	SessionID string
	Sub       string
	// Reason and By (who asked) are shown to the person whose connections
	// close and recorded in session.killed.
	Reason, By string
	// Lock, when positive, also refuses new logins of the person behind
	// the killed sessions (Sub, or each killed session's subject) for that
	// long.
	Lock time.Duration
}

// KillReport is what a kill ended on this agent.
type KillReport struct {
	// Sessions are the ids of the sessions ended.
	Sessions []string
	// Processes are the pids killed.
	Processes []int
	// Connections counts the proxied connections closed.
	Connections int
}

// Lock refuses new logins of Sub on the agent until Until.
type Lock struct {
	Sub, Reason, By string
	Until           time.Time
}

// Handler ends sessions and locks people out. agent/daemon implements it.
type Handler interface {
	// Kill revokes the sessions' kernel bindings, closes their proxied
	// connections, kills every process in their cgroups and removes them.
	// A request that matches no session is not an error: the report is
	// empty (a lock it carries still applies).
	Kill(ctx context.Context, req KillRequest) (KillReport, error)
	// Lock refuses logins of sub until until. It survives agent restarts.
	// A later lock of the same sub replaces the earlier one.
	Lock(ctx context.Context, sub string, until time.Time, reason, by string) error
	// Locks lists the locks in force.
	Locks() []Lock
}
