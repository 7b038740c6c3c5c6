package redis

import (
	"fmt"

	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/policy"
	resp "github.com/wardenhq/warden/pkg/protocol/redis"
)

// plan says how to mask one command's reply. Detectors apply to every
// reply whatever the plan; the plan adds whole masking by key.
type plan struct {
	// whole masks every bulk string of the reply.
	whole bool
	// elems masks the reply's elements by position (MGET: element i is
	// key i's value).
	elems []bool
	// tx are the plans of a transaction's commands, for EXEC's reply.
	tx []*plan
}

// planFor is how to mask the reply to a command that reads keys. nil
// when no key of it is masked.
func (ss *session) planFor(name string, args, keys [][]byte) *plan {
	if len(ss.keys) == 0 {
		return nil
	}
	switch name {
	case "mget":
		p := &plan{elems: make([]bool, len(keys))}
		any := false
		for i, k := range keys {
			p.elems[i] = ss.maskedKey(k)
			any = any || p.elems[i]
		}
		if !any {
			return nil
		}
		return p
	case "sort", "sort_ro":
		// SORT ... BY/GET pattern reads other keys than its own, by
		// pattern: mask the reply whenever it may.
		for _, a := range args[1:] {
			if s := string(a); equalFold(s, "get") || equalFold(s, "by") {
				return &plan{whole: true}
			}
		}
	}
	for _, k := range keys {
		if ss.maskedKey(k) {
			return &plan{whole: true}
		}
	}
	return nil
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

// maskedKey reports whether key matches a masking entry's keys pattern.
func (ss *session) maskedKey(key []byte) bool {
	for _, pat := range ss.keys {
		if policy.MatchKey(pat, string(key)) {
			return true
		}
	}
	return false
}

// apply masks rep as p says, then through the detectors.
func (p *plan) apply(ss *session, rep *resp.Reply) {
	switch {
	case p.whole:
		wholeMask(rep)
	case p.elems != nil && rep.Kind == resp.KindArray:
		for i := range rep.Elems {
			if i < len(p.elems) && p.elems[i] {
				wholeMask(&rep.Elems[i])
			}
		}
	case p.tx != nil && rep.Kind == resp.KindArray:
		for i := range rep.Elems {
			if i < len(p.tx) && p.tx[i] != nil {
				p.tx[i].apply(ss, &rep.Elems[i])
			}
		}
	}
	ss.maskDetect(rep)
}

// wholeMask replaces every bulk string of rep with masking.Whole. Status
// replies (OK), integers and errors stay: they are not the key's value.
func wholeMask(rep *resp.Reply) {
	rep.Walk(func(r *resp.Reply) {
		if r.Kind == resp.KindBulk {
			r.Str = []byte(masking.Whole)
		}
	})
}

// maskDetect replaces what the detectors find in every string of rep.
func (ss *session) maskDetect(rep *resp.Reply) {
	if ss.masker == nil {
		return
	}
	rep.Walk(func(r *resp.Reply) {
		if out, hit := ss.masker.Redact(r.Str); hit {
			r.Str = out
		}
	})
}

// Commands that would give away a masked key's value other than in a
// bulk reply, which is all key masking rewrites.
var (
	// oracles answer with numbers or yes/no about the value itself, so
	// a client could read it bit by bit or confirm guesses.
	oracles = map[string]bool{
		"getbit": true, "bitcount": true, "bitpos": true, "bitfield": true, "bitfield_ro": true, "lcs": true,
		"sismember": true, "smismember": true, "lpos": true, "zscore": true, "zmscore": true, "zrank": true,
		"zrevrank": true, "sintercard": true, "zintercard": true,
	}
	// copiers write a key's value under another name, whose replies
	// would not be masked unless it matches a pattern too.
	copiers = map[string]bool{
		"copy": true, "rename": true, "renamenx": true, "sinterstore": true, "sunionstore": true, "sdiffstore": true,
		"zunionstore": true, "zinterstore": true, "zdiffstore": true, "lmove": true, "blmove": true, "rpoplpush": true,
		"brpoplpush": true, "smove": true, "geosearchstore": true, "pfmerge": true, "bitop": true,
	}
	// storing copy only with a STORE option, whose key the server's
	// legacy key positions do not show.
	storing = map[string]bool{"sort": true, "georadius": true, "georadiusbymember": true}
)

// leaks says why a command on masked keys is refused, "" when it is not:
// an oracle on any masked key, or a copy between masked and unmasked
// names (a copy among masked names stays masked).
func (ss *session) leaks(name, what string, args, keys [][]byte) string {
	if len(ss.keys) == 0 {
		return ""
	}
	masked, unmasked := "", false
	for _, k := range keys {
		if ss.maskedKey(k) {
			if masked == "" {
				masked = string(k)
			}
		} else {
			unmasked = true
		}
	}
	switch {
	case masked == "":
		return ""
	case oracles[name]:
		return fmt.Sprintf("warden: %s on masked key %s would give its value away; refused", what, masked)
	case copiers[name] && unmasked, storing[name] && hasStore(args):
		return fmt.Sprintf("warden: %s would copy masked key %s to a name that is not masked; refused", what, masked)
	}
	return ""
}

// hasStore reports whether a SORT or GEORADIUS stores its result.
func hasStore(args [][]byte) bool {
	for _, a := range args[1:] {
		if s := string(a); equalFold(s, "store") || equalFold(s, "storedist") {
			return true
		}
	}
	return false
}
