package policy

import (
	"fmt"
	"slices"
	"time"

	"gopkg.in/yaml.v3"
)

// Review quorums, as policy files spell them.
const (
	RequireAny = "any"
	RequireAll = "all"
)

// Defaults and bounds of a review block.
const (
	// DefaultHold is how long a held command waits when hold is not given.
	DefaultHold = 2 * time.Minute
	// MaxHold bounds hold: a client waiting longer than this is better
	// told to come back.
	MaxHold = 30 * time.Minute
	// MaxGrant bounds an access grant's window.
	MaxGrant = 7 * 24 * time.Hour
)

// ReviewSpec is a rule's or access entry's review block: who decides, how
// many must approve, how long the client is held, and what an approval
// grants.
type ReviewSpec struct {
	// Approvers are the groups whose members may decide. The requester
	// never decides their own review, whatever their groups.
	Approvers []string
	// Require is RequireAny or RequireAll.
	Require string
	// Hold is how long the client waits for a decision before it gets an
	// error naming the review. Access reviews never hold: 0.
	Hold time.Duration
	// GrantOnce: an approval lets the reviewed statement (by fingerprint)
	// run once. Otherwise it grants GrantFor: the same statement that long
	// (rules) or connect() access that long (access entries).
	GrantOnce bool
	GrantFor  time.Duration
}

// Grant returns the grant as the policy file spells it: "once" or a
// duration.
func (s ReviewSpec) Grant() string {
	if s.GrantOnce {
		return "once"
	}
	return s.GrantFor.String()
}

// review decodes a review block. forAccess selects the access entry's
// form: the grant must be a window, and hold can only be 0.
func (d *decoder) review(e entry, where string, forAccess bool) (ReviewSpec, bool) {
	where += ": review"
	m, ok := d.mapping(e.val, where, "approvers", "require", "hold", "grant")
	if !ok {
		return ReviewSpec{}, false
	}
	ok = d.require(e.val, where, m, "approvers")
	s := ReviewSpec{Require: RequireAny, Hold: DefaultHold, GrantOnce: true}
	if forAccess {
		s.Hold, s.GrantOnce = 0, false
		ok = d.require(e.val, where, m, "grant") && ok
	}
	if a, found := m["approvers"]; found {
		s.Approvers = values(d.list(a, where, true))
		ok = ok && s.Approvers != nil
	}
	if r, found := m["require"]; found {
		v, good := d.str(r, where)
		if good && v != RequireAny && v != RequireAll {
			d.errorf(resolve(r.val), "%s", at(where, fmt.Sprintf("require %q is not one of any, all", v)))
			good = false
		}
		s.Require, ok = v, ok && good
	}
	if h, found := m["hold"]; found {
		v, good := d.duration(h, where, 0, MaxHold)
		if good && forAccess && v != 0 {
			d.errorf(resolve(h.val), "%s", at(where, "hold: an access review cannot hold a connect(); leave hold out or write 0s"))
			good = false
		}
		s.Hold, ok = v, ok && good
	}
	if g, found := m["grant"]; found {
		if v := resolve(g.val); !forAccess && v.Kind == yaml.ScalarNode && v.Value == "once" {
			s.GrantOnce = true
		} else {
			dur, good := d.duration(g, where, time.Second, MaxGrant)
			s.GrantOnce, s.GrantFor, ok = false, dur, ok && good
		}
	}
	return s, ok
}

// duration decodes a Go duration ("90s", "2m", "1h") within [lo, hi].
func (d *decoder) duration(e entry, where string, lo, hi time.Duration) (time.Duration, bool) {
	s, ok := d.str(e, where)
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(s)
	switch {
	case err != nil:
		d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("%s %q is not a duration (write e.g. 90s, 2m, 1h)", e.key.Value, s)))
		return 0, false
	case v < lo || v > hi:
		d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("%s %s is outside %s to %s", e.key.Value, v, lo, hi)))
		return 0, false
	}
	return v, true
}

// AccessReview returns the review block under which members of groups
// may reach target only inside an approved window. It returns false when
// they reach it without one (a plain access entry) or not at all: a plain
// entry wins, since it grants more.
func (p *Policy) AccessReview(groups []string, target string) (ReviewSpec, bool) {
	var spec *ReviewSpec
	for i, a := range p.Access {
		if !intersects(a.Groups, groups) || !slices.Contains(a.Targets, target) {
			continue
		}
		if a.Review == nil {
			return ReviewSpec{}, false
		}
		if spec == nil {
			spec = p.Access[i].Review
		}
	}
	if spec == nil {
		return ReviewSpec{}, false
	}
	return *spec, true
}
