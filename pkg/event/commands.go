package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// The JetStream stream that carries commands from the collector to the
// agents (kill switch and locks). The collector publishes a command for one
// host on CommandSubject(host) and one for every host on CommandSubjectAll;
// each agent reads both through a durable consumer of its own
// (CommandConsumer), so a command sent while it is away is delivered when it
// comes back.
const (
	CommandStreamName     = "WARDEN_COMMANDS"
	CommandStreamSubjects = "warden.commands.>"
	CommandSubjectPrefix  = "warden.commands."
	CommandSubjectAll     = CommandSubjectPrefix + "all"
	// CommandSchema is the value of Command.Schema.
	CommandSchema = "warden.command/v1"
)

// Bounds of commands. A kill is a reaction to something seen now: applied
// hours later to a person who has since logged in again legitimately, it
// would do harm, so an agent that comes back after KillMaxAge drops it.
// A lock applies until its end, and locks are bounded by MaxLock, which
// is also how long the stream keeps commands.
const (
	KillMaxAge = time.Hour
	MaxLock    = 30 * 24 * time.Hour
	// CommandStreamMaxAge is how long the stream keeps a command: long
	// enough that the longest lock still reaches an agent installed or
	// restarted during it.
	CommandStreamMaxAge = MaxLock + 24*time.Hour
)

// Event types the collector raises itself (never an agent) when a person
// asks it to kill or lock: who asked, what and when, stored like an
// integrity violation, unsigned.
const (
	// CommandKill records a kill request (data: the Command).
	CommandKill Type = "command.kill"
	// CommandLock records a lock (data: the Command); the collector's list
	// of locks is built from these events.
	CommandLock Type = "command.lock"
)

// CommandKind says what a Command asks of an agent.
type CommandKind string

// Command kinds.
const (
	// KindKill ends a session (SessionID) or every session of a person
	// (Sub): binding revoked, connections closed, processes killed.
	KindKill CommandKind = "kill"
	// KindLock refuses new logins of Sub until Until.
	KindLock CommandKind = "lock"
)

// Command is one message on the WARDEN_COMMANDS stream.
type Command struct {
	Schema string      `json:"schema"`
	ID     string      `json:"id"` // ULID; agents apply an id once
	Kind   CommandKind `json:"kind"`
	// Issued is when the collector accepted the request.
	Issued time.Time `json:"issued"`
	// By is the requester's OIDC sub (with email, if any, in ByEmail).
	By      string `json:"by"`
	ByEmail string `json:"by_email,omitempty"`
	Reason  string `json:"reason"`
	// Host is the agent the command is for; empty means every agent.
	Host string `json:"host,omitempty"`
	// SessionID (kill only) names one session; else Sub names a person.
	SessionID string `json:"session_id,omitempty"`
	Sub       string `json:"sub,omitempty"`
	// Until is when a lock ends (lock only).
	Until time.Time `json:"until,omitzero"`
	// Lock is the lock duration a kill asked for, recorded for the reader
	// of the kill's report; the lock itself travels as its own command.
	Lock Duration `json:"lock,omitempty"`
}

// Duration is a time.Duration that encodes in JSON as Go duration text
// ("1h0m0s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"1h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Subject returns the subject the command is published on.
func (c *Command) Subject() string {
	if c.Host == "" {
		return CommandSubjectAll
	}
	return CommandSubject(c.Host)
}

// CommandSubject returns the subject of commands for one host.
func CommandSubject(hostID string) string { return CommandSubjectPrefix + CommandHostToken(hostID) }

// CommandConsumer returns the durable consumer name of a host's agent.
func CommandConsumer(hostID string) string { return "warden-agent-" + CommandHostToken(hostID) }

// CommandHostToken turns a host id into one subject token that is also
// valid in a consumer name: host ids are often FQDNs, and a '.' would split
// the subject, while NATS forbids '.', '*', '>', slashes and whitespace in
// consumer names. Those characters and '%' are escaped as %XX, reversibly,
// and a host named "all" becomes "%61ll" so that it cannot receive the
// commands for every host as its own.
func CommandHostToken(hostID string) string {
	if hostID == "all" {
		return "%61ll"
	}
	var b strings.Builder
	for i := 0; i < len(hostID); i++ {
		c := hostID[i]
		switch {
		case c == '%' || c == '.' || c == '*' || c == '>' || c == '/' || c == '\\' || c <= ' ' || c == 0x7f:
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ValidCommandHost reports whether a host id can receive commands: it is
// not empty and has no control characters.
func ValidCommandHost(hostID string) error {
	if hostID == "" {
		return errors.New("empty host id")
	}
	for _, r := range hostID {
		if r < ' ' || r == 0x7f {
			return fmt.Errorf("host id %q has a control character", hostID)
		}
	}
	return nil
}

// Expired reports whether the command must no longer be applied at now: a
// kill older than KillMaxAge, or a lock past its end.
func (c *Command) Expired(now time.Time) bool {
	switch c.Kind {
	case KindKill:
		return now.Sub(c.Issued) > KillMaxAge
	case KindLock:
		return !now.Before(c.Until)
	}
	return true
}

// Validate checks a command's fields for its kind.
func (c *Command) Validate() error {
	if c.Schema != CommandSchema {
		return fmt.Errorf("command schema %q, want %q", c.Schema, CommandSchema)
	}
	if _, err := ulid.ParseStrict(c.ID); err != nil {
		return fmt.Errorf("command id %q: %w", c.ID, err)
	}
	if c.Issued.IsZero() {
		return errors.New("command has no issued time")
	}
	if c.By == "" {
		return errors.New("command has no requester (by)")
	}
	if strings.TrimSpace(c.Reason) == "" {
		return errors.New("command has no reason")
	}
	if c.Host != "" {
		if err := ValidCommandHost(c.Host); err != nil {
			return fmt.Errorf("command host: %w", err)
		}
	}
	switch c.Kind {
	case KindKill:
		if (c.SessionID == "") == (c.Sub == "") {
			return errors.New("kill command needs exactly one of session_id and sub")
		}
		if !c.Until.IsZero() {
			return errors.New("kill command has an until; locks travel as their own command")
		}
	case KindLock:
		if c.Sub == "" || c.SessionID != "" {
			return errors.New("lock command needs a sub and no session_id")
		}
		if !c.Until.After(c.Issued) {
			return errors.New("lock command ends before it is issued")
		}
		if c.Until.Sub(c.Issued) > MaxLock {
			return fmt.Errorf("lock command lasts %s, more than %s", c.Until.Sub(c.Issued), MaxLock)
		}
	default:
		return fmt.Errorf("unknown command kind %q", c.Kind)
	}
	return nil
}

// EncodeCommand validates c and returns its JSON.
func EncodeCommand(c *Command) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command %s: %w", c.ID, err)
	}
	return b, nil
}

// DecodeCommand parses and validates one command message. Unknown fields
// are refused: a command from a newer collector that this agent does not
// fully understand must not be half applied.
func DecodeCommand(data []byte) (*Command, error) {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	var c Command
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decode command: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode command: trailing data")
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("decode command: %w", err)
	}
	return &c, nil
}
