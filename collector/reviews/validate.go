package reviews

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wardenhq/warden/pkg/review"
)

// Bounds of what an agent may ask the collector to store.
const (
	// maxName bounds host ids, subs, targets, rules, groups and session ids.
	maxName = 256
	// maxStatement bounds a held statement's normalised text.
	maxStatement = 64 << 10
	// maxApprovers bounds a rule's approver groups.
	maxApprovers = 32
	// MaxGrant is the longest window an access review may grant.
	MaxGrant = 7 * 24 * time.Hour
)

var fingerprintRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkText refuses text that is missing (unless optional), too long, not
// UTF-8 or, for names (multiline false), has control characters.
func checkText(field, v string, max int, optional bool, multiline ...bool) error {
	switch {
	case v == "" && !optional:
		return fail(ErrInvalid, "%s is required", field)
	case len(v) > max:
		return fail(ErrInvalid, "%s is longer than %d bytes", field, max)
	case !utf8.ValidString(v):
		return fail(ErrInvalid, "%s is not valid UTF-8", field)
	}
	ml := len(multiline) > 0 && multiline[0]
	for _, c := range v {
		if c == 0x7f || (c < ' ' && !(ml && (c == '\n' || c == '\t' || c == '\r'))) {
			return fail(ErrInvalid, "%s has a control character", field)
		}
	}
	return nil
}

// validateOpen checks an OpenRequest field by field and says which field
// is wrong. It trims the free text it keeps.
func validateOpen(req *review.OpenRequest) error {
	switch req.Kind {
	case review.KindStatement, review.KindAccess:
	case "":
		return fail(ErrInvalid, "kind is required (statement or access)")
	default:
		return fail(ErrInvalid, "kind %q: want statement or access", req.Kind)
	}
	for _, f := range []struct {
		name, v  string
		optional bool
	}{
		{"host_id", req.Host, false},
		{"requester.sub", req.Requester.Sub, false},
		{"requester.email", req.Requester.Email, true},
		{"session_id", req.SessionID, true},
		{"target", req.Target, false},
		{"rule", req.Rule, false},
	} {
		if err := checkText(f.name, f.v, maxName, f.optional); err != nil {
			return err
		}
	}
	if len(req.Requester.Groups) > 256 {
		return fail(ErrInvalid, "requester.groups has more than 256 groups")
	}
	for _, g := range req.Requester.Groups {
		if err := checkText("requester.groups", g, maxName, false); err != nil {
			return err
		}
	}
	if len(req.Approvers) == 0 {
		return fail(ErrInvalid, "approvers is empty: a review needs groups who may decide it")
	}
	if len(req.Approvers) > maxApprovers {
		return fail(ErrInvalid, "approvers has more than %d groups", maxApprovers)
	}
	for i, g := range req.Approvers {
		if err := checkText(fmt.Sprintf("approvers[%d]", i), g, maxName, false); err != nil {
			return err
		}
		if slices.Contains(req.Approvers[:i], g) {
			return fail(ErrInvalid, "approvers lists %q twice", g)
		}
	}
	switch req.Require {
	case review.RequireAny, review.RequireAll:
	case "":
		return fail(ErrInvalid, "require is required (any or all)")
	default:
		return fail(ErrInvalid, "require %q: want any or all", req.Require)
	}
	req.Reason = strings.TrimSpace(req.Reason)
	if req.GrantFor < 0 {
		return fail(ErrInvalid, "grant_for %s is negative", req.GrantFor.D())
	}

	if req.Kind == review.KindAccess {
		if req.Rule != review.AccessRule {
			return fail(ErrInvalid, "rule of an access review must be %q, not %q", review.AccessRule, req.Rule)
		}
		if req.Statement != "" || req.Fingerprint != "" {
			return fail(ErrInvalid, "an access review has no statement or fingerprint")
		}
		if req.GrantOnce {
			return fail(ErrInvalid, "an access review grants a window (grant_for), not once")
		}
		if req.GrantFor <= 0 || req.GrantFor.D() > MaxGrant {
			return fail(ErrInvalid, "grant_for %s: an access review needs a window of more than 0 and at most %s", req.GrantFor.D(), MaxGrant)
		}
		return checkText("reason", req.Reason, maxReason, false, true)
	}

	if err := checkText("statement", req.Statement, maxStatement, false, true); err != nil {
		return err
	}
	if !fingerprintRE.MatchString(req.Fingerprint) {
		return fail(ErrInvalid, "fingerprint %q: want 64 lowercase hex digits (SHA-256)", clip(req.Fingerprint, 80))
	}
	if req.GrantOnce == (req.GrantFor > 0) {
		return fail(ErrInvalid, "a statement review grants either once (grant_once) or a window (grant_for), exactly one")
	}
	if req.GrantFor.D() > MaxGrant {
		return fail(ErrInvalid, "grant_for %s is longer than %s", req.GrantFor.D(), MaxGrant)
	}
	return checkText("reason", req.Reason, maxReason, true, true)
}

// clip shortens s for a message.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
