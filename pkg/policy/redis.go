package policy

import (
	"fmt"
	"strings"
)

// Redis capabilities, named as error messages show them.
const (
	// CapKeyMasking is masking.keys: masking whole replies to commands
	// that read a key matching one of the entry's glob patterns.
	CapKeyMasking Capability = "key masking"
)

// MatchKey reports whether key matches the Redis glob pattern, as the
// server's own KEYS and SCAN MATCH read it: '*' is any run of bytes
// (including ':'), '?' any one byte, [abc], [^abc] and [a-z] a class, and a
// backslash makes the next byte literal. Case matters, as it does for
// Redis keys.
func MatchKey(pattern, key string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for len(pattern) > 1 && pattern[1] == '*' {
				pattern = pattern[1:]
			}
			if len(pattern) == 1 {
				return true
			}
			for i := 0; i <= len(key); i++ {
				if MatchKey(pattern[1:], key[i:]) {
					return true
				}
			}
			return false
		case '?':
			if len(key) == 0 {
				return false
			}
			key = key[1:]
			pattern = pattern[1:]
		case '[':
			if len(key) == 0 {
				return false
			}
			n, ok := matchClass(pattern, key[0])
			if !ok {
				return false
			}
			pattern = pattern[n:]
			key = key[1:]
		case '\\':
			if len(pattern) >= 2 {
				pattern = pattern[1:]
			}
			fallthrough
		default:
			if len(key) == 0 || key[0] != pattern[0] {
				return false
			}
			key = key[1:]
			pattern = pattern[1:]
		}
	}
	return len(key) == 0
}

// matchClass matches c against the class at the start of pattern ("[...]")
// and returns the class's length. An unterminated class runs to the end of
// the pattern, as in Redis.
func matchClass(pattern string, c byte) (int, bool) {
	i := 1
	negate := i < len(pattern) && pattern[i] == '^'
	if negate {
		i++
	}
	match := false
	for i < len(pattern) && pattern[i] != ']' {
		switch {
		case pattern[i] == '\\' && i+1 < len(pattern):
			i++
			match = match || pattern[i] == c
		case i+2 < len(pattern) && pattern[i+1] == '-' && pattern[i+2] != ']':
			lo, hi := pattern[i], pattern[i+2]
			if lo > hi {
				lo, hi = hi, lo
			}
			match = match || (c >= lo && c <= hi)
			i += 2
		default:
			match = match || pattern[i] == c
		}
		i++
	}
	if i < len(pattern) {
		i++ // the closing ']'
	}
	return i, match != negate
}

// maskKeys decodes a masking entry's keys: Redis glob patterns. Each must
// be usable on every target of the entry.
func (d *decoder) maskKeys(e entry, where string, targets []item) ([]string, bool) {
	items := d.list(e, where, false)
	ok := true
	for _, it := range items {
		if strings.ContainsAny(it.value, "\r\n") {
			d.errorf(it.node, "%s", at(where, fmt.Sprintf("keys: %q contains a line break", it.value)))
			ok = false
		}
	}
	if len(items) > 0 {
		for _, t := range targets {
			ok = d.enforces(e.key, where+": keys", targetSubject(t.value), d.targets[t.value], CapKeyMasking) && ok
		}
	}
	return values(items), ok
}
