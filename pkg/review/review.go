// Package review is the contract that agents, the collector and the CLI
// share for reviews: a command held until people approve it, and
// just-in-time access to a target inside an approved window.
//
// Reviews live at the collector, so that the reviews of many bastions meet
// in one queue. An agent opens one over NATS request/reply (SubjectOpen)
// and learns of decisions from the collector's publications on
// SubjectUpdates; people list and decide them through the collector's
// authenticated HTTP API. The rule that asked for the review travels with
// it (Approvers, Require, grant), so the collector enforces who may decide
// without holding the agents' policies.
package review

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Kind is what a review is about.
type Kind string

// Review kinds.
const (
	// KindStatement holds one command (a SQL statement, an SSH exec, ...)
	// until it is approved.
	KindStatement Kind = "statement"
	// KindAccess asks for a window of connect() access to a target.
	KindAccess Kind = "access"
)

// State is where a review is in its life.
type State string

// Review states. Pending is the only state a decision changes; the others
// are final.
const (
	Pending  State = "pending"
	Approved State = "approved"
	Denied   State = "denied"
	// Expired: pending past ExpiresAt with nobody deciding, or approved
	// once and not used before GrantUntil.
	Expired State = "expired"
)

// States lists every state, in the order the CLI documents them.
var States = []State{Pending, Approved, Denied, Expired}

// Require says how many approvals a review needs.
type Require string

// Approval quorums.
const (
	// RequireAny: one approval from a member of any approver group.
	RequireAny Require = "any"
	// RequireAll: one approval from a member of each approver group.
	RequireAll Require = "all"
)

// Lifetimes the contract fixes, so that agents and the collector agree.
const (
	// PendingLifetime is how long a review waits for a decision before it
	// expires. It outlives the client's hold on purpose: an approval that
	// comes after the client gave up still grants the statement once.
	PendingLifetime = time.Hour
	// OnceWindow is how long an approved grant: once may be used.
	OnceWindow = 15 * time.Minute
)

// Person is someone as their verified ID token named them.
type Person struct {
	Sub    string   `json:"sub"`
	Email  string   `json:"email,omitempty"`
	Groups []string `json:"groups,omitempty"`
}

// Name is how messages name the person: the email when known, else sub.
func (p Person) Name() string {
	if p.Email != "" {
		return p.Email
	}
	return p.Sub
}

// Decision is one approver's approval or denial.
type Decision struct {
	By      Person    `json:"by"`
	Approve bool      `json:"approve"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
	// For are the approver groups this decision counts for: those of the
	// review's Approvers the decider is a member of.
	For []string `json:"for"`
}

// Review is one review as the collector keeps it.
type Review struct {
	// ID is "R-" followed by a ULID.
	ID    string `json:"id"`
	Kind  Kind   `json:"kind"`
	State State  `json:"state"`
	// Host is the agent's host id: where the requester is, and where an
	// access grant is installed.
	Host      string `json:"host_id"`
	Requester Person `json:"requester"`
	// SessionID is the requester's login session on Host.
	SessionID string `json:"session_id,omitempty"`
	Target    string `json:"target"`
	// Rule names the policy rule that asked for the review; for access
	// reviews it is AccessRule.
	Rule string `json:"rule"`
	// Statement is the held command's normalised text, every literal taken
	// out (statement reviews only), safe to show and store. Fingerprint is
	// the Fingerprint of the command exactly as the client sent it,
	// literals included, so that an approval cannot carry other values.
	Statement   string `json:"statement,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// Reason is the requester's own words (access reviews).
	Reason string `json:"reason,omitempty"`

	Approvers []string `json:"approvers"`
	Require   Require  `json:"require"`
	// GrantOnce: the approval lets the statement run once within
	// OnceWindow. Otherwise it opens a window of GrantFor.
	GrantOnce bool     `json:"grant_once,omitempty"`
	GrantFor  Duration `json:"grant_for,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt ends the pending state.
	ExpiresAt time.Time  `json:"expires_at"`
	Decisions []Decision `json:"decisions,omitempty"`
	DecidedAt *time.Time `json:"decided_at,omitempty"`
	// GrantUntil is when an approval stops granting anything.
	GrantUntil *time.Time `json:"grant_until,omitempty"`
	// UsedAt is when an agent ran the statement a grant: once approval
	// granted; it can be used only once.
	UsedAt *time.Time `json:"used_at,omitempty"`
}

// AccessRule is the Rule of access reviews.
const AccessRule = "access"

// Fingerprint identifies a statement for grants: the SHA-256 of its exact
// text (the agent hashes what the client sent, literals included). The
// collector also compares requester, host, target and rule, so a
// fingerprint alone grants nothing.
func Fingerprint(normalised string) string {
	sum := sha256.Sum256([]byte(normalised))
	return hex.EncodeToString(sum[:])
}

// Live reports whether r grants something at now: approved, not used if
// it grants once, and within its window.
func (r *Review) Live(now time.Time) bool {
	if r.State != Approved || r.GrantUntil == nil || !now.Before(*r.GrantUntil) {
		return false
	}
	return !r.GrantOnce || r.UsedAt == nil
}

// Decider reports which of r's approver groups p may decide for. It is
// empty for the requester, who never decides their own review.
func (r *Review) Decider(p Person) []string {
	if p.Sub == "" || p.Sub == r.Requester.Sub {
		return nil
	}
	var for_ []string
	for _, g := range r.Approvers {
		if slices.Contains(p.Groups, g) {
			for_ = append(for_, g)
		}
	}
	return for_
}

// Settle applies the decisions recorded so far: any denial denies; enough
// approvals (by Require) approve and open the grant. It returns whether
// the state changed. Call it after appending a Decision.
func (r *Review) Settle(now time.Time) bool {
	if r.State != Pending {
		return false
	}
	approvedFor := map[string]bool{}
	for _, d := range r.Decisions {
		if !d.Approve {
			r.State = Denied
			r.DecidedAt = &now
			return true
		}
		for _, g := range d.For {
			approvedFor[g] = true
		}
	}
	enough := len(approvedFor) > 0
	if r.Require == RequireAll {
		for _, g := range r.Approvers {
			enough = enough && approvedFor[g]
		}
	}
	if !enough {
		return false
	}
	r.State = Approved
	r.DecidedAt = &now
	until := now.Add(OnceWindow)
	if !r.GrantOnce {
		until = now.Add(r.GrantFor.D())
	}
	r.GrantUntil = &until
	return true
}

// Expire moves a pending review past ExpiresAt, or an unused once-grant
// past GrantUntil, to Expired. It returns whether the state changed.
func (r *Review) Expire(now time.Time) bool {
	switch {
	case r.State == Pending && !now.Before(r.ExpiresAt):
	case r.State == Approved && r.GrantOnce && r.UsedAt == nil && r.GrantUntil != nil && !now.Before(*r.GrantUntil):
	default:
		return false
	}
	r.State = Expired
	return true
}

// LastDecision returns the latest decision, for messages such as
// "denied by alice@example.com: reason".
func (r *Review) LastDecision() (Decision, bool) {
	if len(r.Decisions) == 0 {
		return Decision{}, false
	}
	return r.Decisions[len(r.Decisions)-1], true
}

// Duration is a time.Duration that travels as Go duration text ("1h0m0s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// ValidID reports whether id has the form of a review id, so that an id
// from a command line or URL can be checked before it reaches a store.
func ValidID(id string) bool {
	rest, ok := strings.CutPrefix(id, "R-")
	if !ok || len(rest) != 26 {
		return false
	}
	for _, c := range rest {
		if !strings.ContainsRune("0123456789ABCDEFGHJKMNPQRSTVWXYZ", c) {
			return false
		}
	}
	return true
}
