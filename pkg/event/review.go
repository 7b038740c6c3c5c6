package event

import "time"

// ReviewRequest is the data of review.requested: a request held for
// review, or a just-in-time access request, as the agent opened it.
type ReviewRequest struct {
	ID string
	// Kind is "statement" or "access".
	Kind string
	Rule string
	// Statement is the held command, literals taken out; Fingerprint binds
	// an approval to its exact text.
	Statement, Fingerprint string
	// Reason is the requester's own words (access requests).
	Reason    string
	Approvers []string
	Require   string
	// Grant is "once" or the window an approval opens.
	Grant string
	// Hold is how long the client waits; 0 when it cannot wait.
	Hold      time.Duration
	ExpiresAt time.Time
}

// Data implements Payload.
func (r ReviewRequest) Data() map[string]any {
	d := map[string]any{"review_id": r.ID, "kind": r.Kind, "rule": r.Rule, "approvers": r.Approvers,
		"require": r.Require, "grant": r.Grant, "hold_s": r.Hold.Seconds()}
	setString(d, "statement", r.Statement)
	setString(d, "fingerprint", r.Fingerprint)
	setString(d, "reason", r.Reason)
	if !r.ExpiresAt.IsZero() {
		d["expires_at"] = r.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return d
}

// ReviewDecision is the data of review.decided: how a review of a person
// on this agent ended. The event's identity is the requester's.
type ReviewDecision struct {
	ID   string
	Kind string
	Rule string
	// Outcome is "approved", "denied" or "expired".
	Outcome string
	// Reviewer is the deciding approver (the last decision), Comment their
	// reason; Approvals lists every approver who approved.
	Reviewer, Comment string
	Approvals         []string
	Fingerprint       string
	RequestedAt       time.Time
	DecidedAt         time.Time
	// GrantUntil ends what an approval grants.
	GrantUntil time.Time
}

// Data implements Payload.
func (r ReviewDecision) Data() map[string]any {
	d := map[string]any{"review_id": r.ID, "kind": r.Kind, "rule": r.Rule, "outcome": r.Outcome,
		"requested_at": r.RequestedAt.UTC().Format(time.RFC3339Nano)}
	setString(d, "reviewer", r.Reviewer)
	setString(d, "comment", r.Comment)
	setString(d, "fingerprint", r.Fingerprint)
	if len(r.Approvals) > 0 {
		d["approvals"] = r.Approvals
	}
	if !r.DecidedAt.IsZero() {
		d["decided_at"] = r.DecidedAt.UTC().Format(time.RFC3339Nano)
	}
	if !r.GrantUntil.IsZero() {
		d["grant_until"] = r.GrantUntil.UTC().Format(time.RFC3339Nano)
	}
	return d
}
