// Package collectorclient is the HTTP client of the warden-collector query
// API, and the home of the API's wire types, which the collector's server
// shares so that the two cannot drift apart.
package collectorclient

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wardenhq/warden/pkg/event"
)

// EventList is the body of GET /v1/events.
type EventList struct {
	// Events are the stored events, byte for byte as the agent sent them,
	// so that a client can re-verify hashes and signatures.
	Events []json.RawMessage `json:"events"`
	// Integrity maps the id of each listed event that failed verification
	// to its problem kinds (event.ProblemKind values and "malformed",
	// "subject_mismatch", "duplicate_id").
	Integrity map[string][]string `json:"integrity,omitempty"`
	// NextAfterID is set when the page is full: pass it as after_id to get
	// the next page.
	NextAfterID string `json:"next_after_id,omitempty"`
}

// Lineage is the body of GET /v1/lineage/{id}: who, through which chain of
// processes, caused an event.
type Lineage struct {
	// Event is the event asked for, or for an exec id the process.exec
	// event of that process (absent if the collector never saw it).
	Event json.RawMessage `json:"event,omitempty"`
	// Integrity lists the problems of Event, if it failed verification.
	Integrity []string `json:"integrity,omitempty"`
	// Identity is the verified human behind the process, or null.
	Identity *event.Identity `json:"identity"`
	// Host is the agent's host.
	Host event.Host `json:"host"`
	// Login is the session.login event of Identity.SessionID, if stored.
	Login *Login `json:"login,omitempty"`
	// Chain runs from the oldest known ancestor down to the process itself
	// (the last element).
	Chain []Step `json:"chain"`
}

// Login is when and where a terminal session was bound to an identity.
type Login struct {
	EventID   string    `json:"event_id"`
	Time      time.Time `json:"time"`
	SessionID string    `json:"session_id"`
	HostID    string    `json:"host_id"`
}

// Step is one process of a lineage chain.
type Step struct {
	ExecID       string   `json:"exec_id"`
	PID          uint32   `json:"pid"`
	UID          uint32   `json:"uid"`
	Binary       string   `json:"binary"`
	Args         []string `json:"args,omitempty"`
	ParentExecID string   `json:"parent_exec_id,omitempty"`
	// ExecEventID and ExecTime come from the process.exec event of this
	// process, when the collector has it.
	ExecEventID string     `json:"exec_event_id,omitempty"`
	ExecTime    *time.Time `json:"exec_time,omitempty"`
}

// SessionList is the body of GET /v1/sessions.
type SessionList struct {
	Sessions []Session `json:"sessions"`
}

// Session is one terminal session bound to an identity.
type Session struct {
	SessionID    string     `json:"session_id"`
	Sub          string     `json:"sub"`
	Email        string     `json:"email,omitempty"`
	Name         string     `json:"name,omitempty"`
	HostID       string     `json:"host_id"`
	Login        *time.Time `json:"login,omitempty"` // nil if the login event is not stored
	LoginEventID string     `json:"login_event_id,omitempty"`
	End          *time.Time `json:"end,omitempty"`      // nil while the session is open
	EndType      string     `json:"end_type,omitempty"` // session.logout or session.expired
	// Targets are the distinct targets touched by events of the session.
	Targets []string `json:"targets"`
	// Flagged lists ids of this session's login/logout/expired events that
	// failed verification; a session built from them is not trustworthy.
	Flagged []string `json:"flagged,omitempty"`
}

// Health is the body of GET /healthz.
type Health struct {
	Status string      `json:"status"`
	Stored int64       `json:"stored"`
	Ingest IngestStats `json:"ingest"`
	// Reviews are the review service's delivery counters.
	Reviews *ReviewStats `json:"reviews,omitempty"`
}

// IngestStats are the ingester's counters since start.
type IngestStats struct {
	Consumer    string `json:"consumer"`
	ChainCheck  string `json:"chain_check"`
	Received    uint64 `json:"received"`
	Stored      uint64 `json:"stored"`
	Violations  uint64 `json:"violations"`
	Redelivered uint64 `json:"redelivered"`
	LastError   string `json:"last_error,omitempty"`
}

// ErrorBody is the body of every non-2xx answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// Query selects events for GET /v1/events and GET /v1/follow.
type Query struct {
	Type    string
	User    string // sub or email
	Target  string
	Since   time.Time
	Until   time.Time
	Limit   int
	AfterID string
	// Desc lists newest first (order=desc); AfterID then continues
	// towards older events.
	Desc bool
}

// Values encodes q as query parameters.
func (q Query) Values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("type", q.Type)
	set("user", q.User)
	set("target", q.Target)
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	set("after_id", q.AfterID)
	if q.Desc {
		v.Set("order", "desc")
	}
	return v
}

// ParseTime reads a point in time as the API and CLI accept it: an RFC 3339
// timestamp, or a duration back from now such as "90s", "1h30m" or "7d".
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("empty time")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 1h or 7d", s)
	}
	if d < 0 {
		return time.Time{}, fmt.Errorf("duration %q is negative", s)
	}
	return now.Add(-d), nil
}

// parseDuration is time.ParseDuration plus a whole-days form ("7d"), which
// is how people ask for audit windows.
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
