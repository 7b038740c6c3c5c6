package event

import "time"

// Payload is the type-specific part of an event, its data member.
// Producers build one of the types below rather than a map, so that each
// event type's members are named in one place (and in docs/events.md).
type Payload interface {
	// Data returns the payload as Event.Data.
	Data() map[string]any
}

// Connect is the data of a net.connect event.
type Connect struct {
	// OriginalDst is the address the client dialled.
	OriginalDst string
	// Verdict is the kernel's verdict at connect().
	Verdict string
	// Via is "proxy" for connections the proxy served or refused, "kernel"
	// for those connect() refused with Errno.
	Via string
	// UpstreamLocal is the agent's own address toward the target.
	UpstreamLocal string
	// Errno is the error connect() returned (via kernel).
	Errno string
	// Error says why the target could not be reached.
	Error string
	// ReviewID names the person's pending access review of the target,
	// for a connect() refused while it waits.
	ReviewID string
	// Notes are attribution remarks, such as a lineage_warning when the
	// process's lineage does not back its identity.
	Notes map[string]any
}

// Data implements Payload.
func (c Connect) Data() map[string]any {
	d := map[string]any{"original_dst": c.OriginalDst, "verdict": c.Verdict, "via": c.Via}
	for k, v := range c.Notes {
		d[k] = v
	}
	setString(d, "upstream_local", c.UpstreamLocal)
	setString(d, "errno", c.Errno)
	setString(d, "review_id", c.ReviewID)
	setString(d, "error", c.Error)
	return d
}

// Query is the data of a db.query event: one statement, recorded with the
// decision on it before it reaches the server.
type Query struct {
	Database string
	DBUser   string
	// Statement is the statement with its literals replaced by
	// placeholders; "" when it could not be parsed.
	Statement   string
	Fingerprint string
	// Kind is the statement's top-level keyword (select, drop, ...).
	Kind   string
	Tables []string
	// Protocol is the wire protocol's way of sending it, e.g. "simple" or
	// "extended" for PostgreSQL.
	Protocol string
}

// Data implements Payload.
func (q Query) Data() map[string]any {
	d := map[string]any{"database": q.Database, "db_user": q.DBUser}
	if q.Statement == "" {
		d["statement"] = nil // unparsed: the text is not recorded
		return d
	}
	d["statement"] = q.Statement
	d["fingerprint"] = q.Fingerprint
	d["kind"] = q.Kind
	if len(q.Tables) > 0 {
		d["tables"] = q.Tables
	}
	setString(d, "protocol", q.Protocol)
	return d
}

// QueryResult is the data of a db.result event: how a statement recorded
// by a db.query event ended. RequestID links the two.
type QueryResult struct {
	// RequestID is the id of the statement's db.query event.
	RequestID  string
	DurationMS float64
	// Command is the server's completion tag (INSERT 0 1, SELECT 2, ...).
	Command string
	// Rows is the count the completion tag reports, -1 when it has none.
	Rows int64
	// RowsReturned counts the rows sent to the client.
	RowsReturned int64
	// Suspended is set when the portal was suspended (a row limit).
	Suspended bool
	// Error is the SQLSTATE of the server's error, if it failed.
	Error string
	// MaskedColumns are the result columns that were masked.
	MaskedColumns []string
}

// Data implements Payload.
func (r QueryResult) Data() map[string]any {
	d := map[string]any{"request_id": r.RequestID, "duration_ms": r.DurationMS}
	setString(d, "command", r.Command)
	if r.Rows >= 0 {
		d["rows"] = r.Rows
	}
	if r.RowsReturned > 0 {
		d["rows_returned"] = r.RowsReturned
	}
	if r.Suspended {
		d["suspended"] = true
	}
	setString(d, "error", r.Error)
	if len(r.MaskedColumns) > 0 {
		d["masked_columns"] = r.MaskedColumns
	}
	return d
}

// SpoolPressure is the data of an agent.spool_pressure event: the spool
// crossed its warning threshold (80% of MaxBytes) while filling up.
type SpoolPressure struct {
	// Bytes is how much the spool held when it crossed.
	Bytes int64
	// MaxBytes is the spool's bound (spool_max_bytes).
	MaxBytes int64
	// Percent is Bytes as a whole percentage of MaxBytes, rounded down.
	Percent int64
}

// Data implements Payload.
func (s SpoolPressure) Data() map[string]any {
	return map[string]any{"bytes": s.Bytes, "max_bytes": s.MaxBytes, "percent": s.Percent}
}

// Session is the data of session.login, session.logout and
// session.expired events for a bound session.
type Session struct {
	// UID is the user the session's shell runs as.
	UID uint32
	// Cgroup is the session's cgroup, relative to the cgroup root.
	Cgroup    string
	LoginTime time.Time
	Expires   time.Time
	// ConnectionsClosed lists the proxied connections the agent closed
	// because the session ended (session.logout, session.expired); nil
	// leaves the member out (session.login).
	ConnectionsClosed []ClosedConnection
}

// Data implements Payload.
func (s Session) Data() map[string]any {
	d := map[string]any{"uid": s.UID, "cgroup": s.Cgroup, "login_time": s.LoginTime, "expires": s.Expires}
	if s.ConnectionsClosed != nil {
		d["connections_closed"] = closedData(s.ConnectionsClosed)
	}
	return d
}

// ClosedConnection is one proxied connection the agent closed because its
// session ended or lost access to the connection's target.
type ClosedConnection struct {
	Target string
	// Client is the client's address as the proxy saw it; PID is the
	// client process's.
	Client string
	PID    uint32
	// Since is when the proxy accepted the connection.
	Since time.Time
}

func closedData(cs []ClosedConnection) []any {
	out := make([]any, 0, len(cs))
	for _, c := range cs {
		m := map[string]any{"target": c.Target, "pid": c.PID, "since": c.Since.UTC().Format(time.RFC3339Nano)}
		setString(m, "client", c.Client)
		out = append(out, m)
	}
	return out
}

// Revocation is the data of access.revoked, whose event names the
// session (identity) and the target it lost.
type Revocation struct {
	// PolicyDigest is the digest of the policy that no longer grants it.
	PolicyDigest      string
	ConnectionsClosed []ClosedConnection
}

// Data implements Payload.
func (a Revocation) Data() map[string]any {
	return map[string]any{"policy_digest": a.PolicyDigest, "connections_closed": closedData(a.ConnectionsClosed)}
}

// KilledProcess is a process a kill ended.
type KilledProcess struct {
	PID int
	// Binary is the process's executable, where the agent knew it.
	Binary string
}

// Killed is the data of session.killed.
type Killed struct {
	// By is who asked for the kill, Reason what they gave.
	By, Reason string
	// Sessions are the ids of the sessions ended.
	Sessions          []string
	Processes         []KilledProcess
	ConnectionsClosed []ClosedConnection
	// LockedUntil is the end of the lock the kill placed on the person's
	// logins; zero for none.
	LockedUntil time.Time
}

// Data implements Payload.
func (k Killed) Data() map[string]any {
	procs := make([]any, 0, len(k.Processes))
	for _, p := range k.Processes {
		m := map[string]any{"pid": p.PID}
		setString(m, "binary", p.Binary)
		procs = append(procs, m)
	}
	sessions := make([]any, 0, len(k.Sessions))
	for _, s := range k.Sessions {
		sessions = append(sessions, s)
	}
	d := map[string]any{"by": k.By, "reason": k.Reason, "sessions": sessions, "processes": procs,
		"connections_closed": closedData(k.ConnectionsClosed)}
	if !k.LockedUntil.IsZero() {
		d["locked_until"] = k.LockedUntil.UTC().Format(time.RFC3339Nano)
	}
	return d
}

// Start is the data of agent.start.
type Start struct {
	CgroupRoot string
	// Proxy is the proxy's listen address.
	Proxy string
	// PolicyDigest is the SHA-256 of the policy file in force.
	PolicyDigest string
}

// Data implements Payload.
func (a Start) Data() map[string]any {
	return map[string]any{"cgroup_root": a.CgroupRoot, "proxy": a.Proxy, "policy_digest": a.PolicyDigest}
}

// Loss is the data of agent.loss: Count events of one kind that the agent
// could not record, between First and Last.
type Loss struct {
	Count uint64
	// Reason and Source name the kind (see docs/events.md).
	Reason, Source string
	First, Last    time.Time
	// Types counts the lost events by type, where known.
	Types map[Type]uint64
}

// Data implements Payload.
func (l Loss) Data() map[string]any {
	d := map[string]any{
		"count":      l.Count,
		"reason":     l.Reason,
		"source":     l.Source,
		"first_time": l.First.UTC().Format(time.RFC3339Nano),
		"last_time":  l.Last.UTC().Format(time.RFC3339Nano),
	}
	if len(l.Types) > 0 {
		types := make(map[string]uint64, len(l.Types))
		for t, n := range l.Types {
			types[string(t)] = n
		}
		d["types"] = types
	}
	return d
}

func setString(d map[string]any, key, v string) {
	if v != "" {
		d[key] = v
	}
}
