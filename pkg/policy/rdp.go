package policy

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// RDP capabilities, named as error messages show them.
const (
	// CapRDPSession is a target's rdp block: refusing sessions that do not
	// negotiate Network Level Authentication, and ending sessions after
	// max_duration.
	CapRDPSession Capability = "rdp session control"
)

// MaxRDPDuration bounds an RDP target's max_duration.
const MaxRDPDuration = 7 * 24 * time.Hour

// RDP is an rdp target's rdp block.
type RDP struct {
	// RequireNLA refuses a session whose negotiated protocol is not
	// CredSSP (HYBRID or HYBRID_EX): without it the server shows its
	// login screen to anyone who reaches it. Default true.
	RequireNLA bool
	// MaxDuration ends a session that long after it started; 0 means no
	// limit.
	MaxDuration time.Duration
}

// RDPSettings returns the target's rdp block, or the defaults (NLA
// required, no time limit) when it has none.
func (t Target) RDPSettings() RDP {
	if t.RDP != nil {
		return *t.RDP
	}
	return RDP{RequireNLA: true}
}

// rdpBlock decodes a target's rdp block.
func (d *decoder) rdpBlock(e entry, where, protocol string) (*RDP, bool) {
	where += ": rdp"
	m, ok := d.mapping(e.val, where, "require_nla", "max_duration")
	if !ok {
		return nil, false
	}
	if protocol != "" && protocol != ProtocolRDP {
		d.errorf(e.key, "%s", at(where, fmt.Sprintf("only rdp targets have an rdp block; this target is %s", protocol)))
		return nil, false
	}
	ok = d.enforces(e.key, where, thisTarget, protocol, CapRDPSession)
	r := &RDP{RequireNLA: true}
	if be, found := m["require_nla"]; found {
		v := resolve(be.val)
		if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" || v.Decode(&r.RequireNLA) != nil {
			d.errorf(v, "%s", at(where, fmt.Sprintf("require_nla: want true or false, got %s", kindName(v))))
			ok = false
		}
	}
	if de, found := m["max_duration"]; found {
		dur, good := d.duration(de, where, time.Second, MaxRDPDuration)
		r.MaxDuration, ok = dur, ok && good
	}
	return r, ok
}
