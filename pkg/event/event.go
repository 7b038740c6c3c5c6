// Package event defines the warden.event/v2 schema shared by the agent, the
// collector and the CLI, the per-agent hash chain and Merkle log, and the
// signed checkpoints that make the event log tamper-evident. Events of
// warden.event/v1 (signed one by one) still decode and verify.
package event

import (
	"time"
)

// Schema is the value of Event.Schema for every event of this version.
// From v2 an event carries no signature of its own: the agent signs
// checkpoints of its Merkle log instead (see checkpoint.go).
const Schema = "warden.event/v2"

// SchemaV1 is the previous schema, whose events carry an ed25519 signature
// each (Sig). Stored v1 events, and v1 agents, are still verified.
const SchemaV1 = "warden.event/v1"

// Type names an event kind. Subjects on NATS are "warden.events.<host>.<type>".
type Type string

// Event types. The list is the contract in PRODUCT.md; extend, never rename.
const (
	SessionLogin   Type = "session.login"
	SessionLogout  Type = "session.logout"
	SessionExpired Type = "session.expired"
	ProcessExec    Type = "process.exec"
	ProcessExit    Type = "process.exit"
	NetConnect     Type = "net.connect"
	DBQuery        Type = "db.query"
	// DBResult is how a statement recorded by a db.query event ended.
	DBResult   Type = "db.result"
	SSHSession Type = "ssh.session"
	SSHExec    Type = "ssh.exec"
	// SSHSFTP is one file operation of an SFTP session through the SSH codec.
	SSHSFTP         Type = "ssh.sftp"
	HTTPRequest     Type = "http.request"
	RedisCommand    Type = "redis.command"
	RDPSession      Type = "rdp.session"
	ReviewRequested Type = "review.requested"
	ReviewDecided   Type = "review.decided"
	AgentStart      Type = "agent.start"
	AgentStop       Type = "agent.stop"
	AgentLoss       Type = "agent.loss"
	// AgentSpoolPressure warns that the agent's spool passed 80% of its
	// bound. A full spool loses events, and with audit_failure: deny the
	// proxy refuses every request it cannot record.
	AgentSpoolPressure Type = "agent.spool_pressure"
	// AccessRevoked reports that a policy change took a target away from
	// a session, and the session's connections to it that the agent
	// closed.
	AccessRevoked Type = "access.revoked"
	// SessionKilled reports a kill switch applied on the agent: who asked,
	// why, the processes killed and the connections closed.
	SessionKilled Type = "session.killed"
	// IntegrityViolation is raised by the collector, never by an agent, when
	// a chain or signature check fails.
	IntegrityViolation Type = "integrity.violation"
)

// Event is one record of the audit trail.
type Event struct {
	Schema   string    `json:"schema"`
	ID       string    `json:"id"`   // ULID
	Time     time.Time `json:"time"` // RFC 3339 with nanoseconds
	Type     Type      `json:"type"`
	Host     Host      `json:"host"`
	Identity *Identity `json:"identity"` // null when unattributed
	Process  *Process  `json:"process,omitempty"`
	Target   *Target   `json:"target,omitempty"`
	Decision *Decision `json:"decision,omitempty"`
	// Data carries the type-specific payload (see docs/events.md).
	Data map[string]any `json:"data,omitempty"`

	// Chain fields, set by the agent's sealer.
	Seq      uint64 `json:"seq"`
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
	// Sig is the v1 per-event signature; absent from v2 events.
	Sig string `json:"sig,omitempty"`
}

// Host identifies the agent that produced an event.
type Host struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Identity is the verified human behind a session.
type Identity struct {
	Sub       string   `json:"sub"`
	Email     string   `json:"email,omitempty"`
	Name      string   `json:"name,omitempty"`
	Groups    []string `json:"groups"`
	Issuer    string   `json:"issuer"`
	SessionID string   `json:"session_id"`
}

// Process describes the process an event is attributed to.
type Process struct {
	ExecID       string     `json:"exec_id"`
	PID          uint32     `json:"pid"`
	UID          uint32     `json:"uid"`
	Binary       string     `json:"binary"`
	Args         []string   `json:"args"`
	ParentExecID string     `json:"parent_exec_id"`
	Ancestors    []Ancestor `json:"ancestors"`
	CgroupID     uint64     `json:"cgroup_id,omitempty"`
}

// Ancestor is one step of a process's lineage, nearest parent first.
type Ancestor struct {
	ExecID string   `json:"exec_id"`
	PID    uint32   `json:"pid"`
	UID    uint32   `json:"uid"`
	Binary string   `json:"binary"`
	Args   []string `json:"args,omitempty"`
}

// Target is the privileged target an event concerns.
type Target struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
}

// Action is a policy decision.
type Action string

// Decision actions.
const (
	Allow  Action = "allow"
	Deny   Action = "deny"
	Review Action = "review"
)

// Decision records what policy decided and why.
type Decision struct {
	Action Action `json:"action"`
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// The JetStream stream every event travels on, fixed by the product
// contract: agents publish event e on warden.events.<host>.<type> (Subject),
// and the stream StreamName holds StreamSubjects. The host token lets the
// NATS server confine each agent to its own host's subjects.
const (
	StreamName     = "WARDEN_EVENTS"
	StreamSubjects = "warden.events.>"
	SubjectPrefix  = "warden.events."
)

// Subject returns the NATS subject an event is published on:
// warden.events.<HostToken(host.id)>.<type>.
func (e *Event) Subject() string { return SubjectPrefix + HostToken(e.Host.ID) + "." + string(e.Type) }

// HostToken is a host id as one subject token (CommandHostToken's
// escaping): events of host h are published on
// SubjectPrefix+HostToken(h)+"."+type.
func HostToken(hostID string) string { return CommandHostToken(hostID) }

// HostSubjects is the filter of every event of one host: what an agent's
// NATS user may publish to.
func HostSubjects(hostID string) string { return SubjectPrefix + HostToken(hostID) + ".>" }
