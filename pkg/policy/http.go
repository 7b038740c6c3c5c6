package policy

import (
	"fmt"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
)

// HTTP capabilities, named as error messages show them.
const (
	// CapMethods is when.methods: matching HTTP request methods.
	CapMethods Capability = "methods"
	// CapPaths is when.paths: matching the canonical request path against
	// patterns with * (one segment) and ** (any number of segments).
	CapPaths Capability = "paths"
	// CapUpgrade is when.upgrade: matching a protocol upgrade (WebSocket).
	// An upgrade goes through only when an allow rule with this condition
	// decides the request.
	CapUpgrade Capability = "upgrade"
	// CapHTTPSettings is a target's http block (max_body).
	CapHTTPSettings Capability = "http settings"
)

// Defaults and bounds of an http target's http block.
const (
	// DefaultMaxBody is the largest response body the HTTP codec holds in
	// memory to mask when the target sets no max_body.
	DefaultMaxBody = 1 << 20
	// MaxMaxBody bounds max_body: masking holds the whole body of a
	// text response, once per request in flight.
	MaxMaxBody = 64 << 20
)

// HTTP is an http or https target's http block.
type HTTP struct {
	// MaxBody is the largest text response body the codec masks, in
	// bytes; a larger one is refused with an error that names the
	// setting. 0 means DefaultMaxBody.
	MaxBody int64
}

// HTTPSettings returns the target's http block, with defaults filled in.
func (t Target) HTTPSettings() HTTP {
	h := HTTP{}
	if t.HTTP != nil {
		h = *t.HTTP
	}
	if h.MaxBody <= 0 {
		h.MaxBody = DefaultMaxBody
	}
	return h
}

// IsHTTP reports whether protocol is http or https.
func IsHTTP(protocol string) bool { return protocol == ProtocolHTTP || protocol == ProtocolHTTPS }

// MatchesHTTP reports whether an HTTP request satisfies the HTTP
// conditions of m (methods, paths, upgrade); conditions m does not set
// hold. method is compared ignoring case, path must be canonical (see
// pkg/protocol/http), and upgrade is the protocol the request asks to
// switch to, lower case, "" for none. A request that is not HTTP has no
// method or path, so an HTTP condition never matches it.
func (m Match) MatchesHTTP(method, path, upgrade string) bool {
	if len(m.Methods) > 0 && !slices.ContainsFunc(m.Methods, func(x string) bool { return strings.EqualFold(x, method) }) {
		return false
	}
	if len(m.Paths) > 0 && (path == "" || !slices.ContainsFunc(m.Paths, func(p string) bool { return MatchPath(p, path) })) {
		return false
	}
	if len(m.Upgrade) > 0 && (upgrade == "" || !slices.Contains(m.Upgrade, upgrade)) {
		return false
	}
	return true
}

// MatchPath reports whether the canonical path matches pattern. Both are
// cut into segments at '/'. In a pattern, a "**" segment matches any
// number of segments, none included ("/admin/**" matches "/admin",
// "/admin/" and "/admin/a/b"); a "*" inside a segment matches any run of
// characters other than '/' ("/api/v1/users/*" matches "/api/v1/users/42"
// but not "/api/v1/users/42/keys"). Everything else matches itself,
// case-sensitively, as URL paths are.
func MatchPath(pattern, path string) bool {
	return matchSegments(strings.Split(pattern, "/"), strings.Split(path, "/"))
}

func matchSegments(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			// A trailing "**" takes whatever is left, a trailing "/"
			// included.
			if len(rest) == 0 {
				return true
			}
			for i := 0; i <= len(segs); i++ {
				if matchSegments(rest, segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 || !matchSegment(pat[0], segs[0]) {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

// matchSegment matches one segment against a pattern segment in which
// '*' stands for any run of characters.
func matchSegment(pat, s string) bool {
	star := strings.IndexByte(pat, '*')
	if star < 0 {
		return pat == s
	}
	if !strings.HasPrefix(s, pat[:star]) {
		return false
	}
	s = s[star:]
	rest := pat[star+1:]
	for i := 0; i <= len(s); i++ {
		if matchSegment(rest, s[i:]) {
			return true
		}
	}
	return false
}

// checkPathPattern says what is wrong with a paths pattern, "" if
// nothing. Patterns are written as canonical paths, so that they can
// match: a pattern the codec would refuse as ambiguous in a request could
// never match one.
func checkPathPattern(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "must start with /"
	}
	if strings.ContainsAny(p, "?#;\\%") {
		return "must be a decoded path: no ?, #, ;, \\ or % (the codec matches the decoded, canonical path)"
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f || c == ' ' {
			return "must not contain spaces or control characters"
		}
	}
	for _, seg := range strings.Split(p, "/")[1:] {
		switch {
		case seg == "." || seg == "..":
			return "must not contain . or .. segments (requests with them are refused as ambiguous)"
		case strings.Contains(seg, "**") && seg != "**":
			return "** must be a whole segment (write /a/** or /a/*/b)"
		}
	}
	if strings.Contains(p, "//") {
		return "must not contain // (the codec collapses repeated slashes)"
	}
	return ""
}

// decodeMethods decodes when.methods, stored upper case.
func decodeMethods(d *decoder, e entry, where string, m *Match) bool {
	ok := true
	for _, it := range d.list(e, where, true) {
		s := strings.ToUpper(it.value)
		if !isToken(s) {
			d.errorf(it.node, "%s", at(where, fmt.Sprintf("methods: %q is not an HTTP method", it.value)))
			ok = false
			continue
		}
		m.Methods = append(m.Methods, s)
	}
	return ok && m.Methods != nil
}

// decodePaths decodes when.paths.
func decodePaths(d *decoder, e entry, where string, m *Match) bool {
	ok := true
	for _, it := range d.list(e, where, true) {
		if why := checkPathPattern(it.value); why != "" {
			d.errorf(it.node, "%s", at(where, fmt.Sprintf("paths: %q %s", it.value, why)))
			ok = false
			continue
		}
		m.Paths = append(m.Paths, it.value)
	}
	return ok && m.Paths != nil
}

// decodeUpgrade decodes when.upgrade, stored lower case.
func decodeUpgrade(d *decoder, e entry, where string, m *Match) bool {
	ok := true
	for _, it := range d.list(e, where, true) {
		s := strings.ToLower(it.value)
		if !isToken(s) {
			d.errorf(it.node, "%s", at(where, fmt.Sprintf("upgrade: %q is not a protocol name (write e.g. websocket)", it.value)))
			ok = false
			continue
		}
		m.Upgrade = append(m.Upgrade, s)
	}
	return ok && m.Upgrade != nil
}

// isToken reports whether s is an RFC 9110 token: what methods, header
// names and upgrade protocols are made of.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// reservedHeaders cannot carry an injected credential: they frame the
// message or route it, or are Warden's own.
var reservedHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Te", "Trailer", "Expect", "Keep-Alive", "Proxy-Connection"}

// httpCredentials decodes an http or https target's credentials block:
// a header the proxy sets upstream, with its value read from value_file
// at each request.
func (d *decoder) httpCredentials(e entry, where, protocol, address string) (*Credentials, bool) {
	where += ": credentials"
	m, ok := d.mapping(e.val, where, "header", "value_file", "tls")
	if !ok {
		return nil, false
	}
	ok = d.require(e.val, where, m, "header", "value_file")
	ok = d.enforces(e.key, where, thisTarget, protocol, CapCredentials) && ok
	c := &Credentials{}
	if he, found := m["header"]; found {
		s, good := d.nonEmptyStr(he, where)
		if good {
			canon := textproto.CanonicalMIMEHeaderKey(s)
			switch {
			case !isToken(s):
				d.errorf(resolve(he.val), "%s", at(where, fmt.Sprintf("header %q is not a header name", s)))
				good = false
			case strings.HasPrefix(canon, "X-Warden-"):
				d.errorf(resolve(he.val), "%s", at(where, fmt.Sprintf("header %q: X-Warden-* headers are Warden's own", s)))
				good = false
			case slices.Contains(reservedHeaders, canon):
				d.errorf(resolve(he.val), "%s", at(where, fmt.Sprintf("header %q frames or routes the request; it cannot carry a credential", s)))
				good = false
			}
			c.Header = canon
		}
		ok = ok && good
	}
	if ve, found := m["value_file"]; found {
		var good bool
		c.ValueFile, good = d.absPath(ve, where)
		ok = ok && good
	}
	if te, found := m["tls"]; found {
		var good bool
		c.TLS, good = d.upstreamTLS(te, where, protocol, address)
		ok = ok && good
	}
	return c, ok
}

// httpTarget checks what http and https targets add to a target: the
// http block, and that an https target's upstream hop is never plain.
func (d *decoder) httpTarget(m map[string]entry, where string, t *Target) bool {
	ok := true
	if e, found := m["http"]; found {
		if t.Protocol != "" && !IsHTTP(t.Protocol) {
			d.errorf(e.key, "%s", at(where, fmt.Sprintf("only http and https targets have an http block; this target is %s", t.Protocol)))
			return false
		}
		ok = d.enforces(e.key, where+": http", thisTarget, t.Protocol, CapHTTPSettings)
		var h HTTP
		if fields, good := d.mapping(e.val, where+": http", "max_body"); good {
			if be, found := fields["max_body"]; found {
				h.MaxBody, good = d.byteSize(be, where+": http", MaxMaxBody)
				ok = ok && good
			}
		} else {
			ok = false
		}
		t.HTTP = &h
	}
	if t.Protocol == ProtocolHTTPS && t.UpstreamTLS().Mode == TLSDisable {
		// An https target's clients believe their requests are encrypted
		// end to end; sending them on in the clear would betray that.
		n := m["tls"].key
		if n == nil {
			n = m["credentials"].key
		}
		d.errorf(n, "%s", at(where, "an https target speaks TLS upstream; tls mode disable is not allowed (use protocol: http)"))
		ok = false
	}
	return ok
}

// byteSize decodes a size: a number of bytes, or a number with KiB or
// MiB, between 1 and hi.
func (d *decoder) byteSize(e entry, where string, hi int64) (int64, bool) {
	s, ok := d.str(e, where)
	if !ok {
		return 0, false
	}
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}} {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > hi/mult {
		d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("%s %q is not a size between 1 and %dMiB (write bytes, or e.g. 512KiB, 8MiB)", e.key.Value, s, hi>>20)))
		return 0, false
	}
	return n * mult, true
}
