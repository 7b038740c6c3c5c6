package review

import "time"

// NATS subjects. The collector answers the request subjects (core NATS
// request/reply, JSON bodies, a Reply back) and publishes every change of
// a review on SubjectUpdates, which agents and the SOC subscribe to.
const (
	// SubjectOpen opens a review (OpenRequest). For a statement, an
	// approved grant of the same requester, target, rule and fingerprint
	// that is still live is used instead, and the reply says so.
	SubjectOpen = "warden.review.open"
	// SubjectUse marks an approved grant: once review used (UseRequest),
	// so an agent runs a held statement only if it wins the grant.
	SubjectUse = "warden.review.use"
	// SubjectGet returns one review (GetRequest).
	SubjectGet = "warden.review.get"
	// SubjectGrants returns a host's live access grants (GrantsRequest),
	// for an agent that starts or reconnects and may have missed updates.
	SubjectGrants = "warden.review.grants"
	// SubjectUpdates prefixes the collector's publication of every review
	// change: warden.reviews.<host>.<id>, the body a Review.
	SubjectUpdates = "warden.reviews"
)

// UpdateSubject is where the collector publishes changes to r.
func UpdateSubject(host, id string) string { return SubjectUpdates + "." + Token(host) + "." + id }

// HostUpdates is the filter an agent subscribes to for its host's reviews.
func HostUpdates(host string) string { return SubjectUpdates + "." + Token(host) + ".*" }

// Token makes s usable as one NATS subject token: characters with a
// meaning in subjects become '_'.
func Token(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '.' || c == '*' || c == '>' || c <= ' ' || c >= 0x7f {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// OpenRequest asks the collector for a review.
type OpenRequest struct {
	Kind        Kind     `json:"kind"`
	Host        string   `json:"host_id"`
	Requester   Person   `json:"requester"`
	SessionID   string   `json:"session_id,omitempty"`
	Target      string   `json:"target"`
	Rule        string   `json:"rule"`
	Statement   string   `json:"statement,omitempty"`
	Fingerprint string   `json:"fingerprint,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	Approvers   []string `json:"approvers"`
	Require     Require  `json:"require"`
	GrantOnce   bool     `json:"grant_once,omitempty"`
	GrantFor    Duration `json:"grant_for,omitempty"`
}

// UseRequest uses an approved grant: once review.
type UseRequest struct {
	ID   string `json:"id"`
	Host string `json:"host_id"`
}

// GetRequest asks for one review.
type GetRequest struct {
	ID string `json:"id"`
}

// GrantsRequest asks for a host's live access grants.
type GrantsRequest struct {
	Host string `json:"host_id"`
}

// Reply answers every request subject. Error is set, alone, when the
// request was refused or failed; otherwise Review (Open, Use, Get) or
// Reviews (Grants) is.
type Reply struct {
	Error   string   `json:"error,omitempty"`
	Review  *Review  `json:"review,omitempty"`
	Reviews []Review `json:"reviews,omitempty"`
	// Used is set by Open when it used a live grant rather than opening a
	// review: the statement may run now.
	Used bool `json:"used,omitempty"`
	// Now is the collector's clock, so agents can turn GrantUntil into
	// their own monotonic deadlines without trusting clock sync blindly.
	Now time.Time `json:"now"`
}
