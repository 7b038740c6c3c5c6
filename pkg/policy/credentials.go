package policy

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultApplicationName is the application_name template used when the
// credentials block sets none: the person and the Warden session, so that
// pg_stat_activity and server logs name who is behind a shared account.
const DefaultApplicationName = "warden:{sub}:{session}"

// MaxApplicationNameLen is PostgreSQL's limit on application_name
// (NAMEDATALEN-1 bytes): pg_stat_activity and the server's logs show no
// more than this, so ExpandApplicationName cuts its result to it.
const MaxApplicationNameLen = 63

// applicationNamePlaceholders are the names a template may use in braces.
var applicationNamePlaceholders = []string{"sub", "email", "session"}

// ApplicationNameValues fill an application_name template. An empty value
// expands to "unknown", so the position of every field stays readable.
type ApplicationNameValues struct {
	Sub, Email, Session string
}

// ExpandApplicationName fills template's {sub}, {email} and {session}
// placeholders ("" means DefaultApplicationName). Bytes outside printable
// ASCII become '?', as PostgreSQL 15 itself does; doing it here keeps the
// value the same whatever the server version (16 and later escape such
// bytes as \xNN, which would change the length). The result is cut to
// MaxApplicationNameLen bytes, so put what matters most first.
func ExpandApplicationName(template string, v ApplicationNameValues) string {
	if template == "" {
		template = DefaultApplicationName
	}
	orUnknown := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return s
	}
	var b strings.Builder
	for _, seg := range splitTemplate(template) {
		switch seg.placeholder {
		case "":
			b.WriteString(seg.text)
		case "sub":
			b.WriteString(orUnknown(v.Sub))
		case "email":
			b.WriteString(orUnknown(v.Email))
		case "session":
			b.WriteString(orUnknown(v.Session))
		default:
			// Parse rejects unknown placeholders; a hand-built template
			// keeps the text rather than silently dropping it.
			b.WriteString(seg.text)
		}
	}
	out := []byte(b.String())
	for i, c := range out {
		if c < 0x20 || c > 0x7e {
			out[i] = '?'
		}
	}
	if len(out) > MaxApplicationNameLen {
		out = out[:MaxApplicationNameLen]
	}
	return string(out)
}

// templateSegment is literal text, or a placeholder with its braces in text.
type templateSegment struct {
	text        string
	placeholder string // without braces; "" for literal text
	bad         string // why the segment is malformed, for Parse
}

// splitTemplate cuts an application_name template into literal text and
// {name} placeholders. A brace that does not form a {name} is reported in
// the segment's bad field: there is no escape syntax, because braces in an
// application_name are far likelier a typo than intended.
func splitTemplate(s string) []templateSegment {
	var segs []templateSegment
	for s != "" {
		i := strings.IndexAny(s, "{}")
		switch {
		case i < 0:
			return append(segs, templateSegment{text: s})
		case i > 0:
			segs = append(segs, templateSegment{text: s[:i]})
			s = s[i:]
			continue
		case s[0] == '}':
			segs = append(segs, templateSegment{text: "}", bad: `"}" without a matching "{"`})
			s = s[1:]
			continue
		}
		end := strings.IndexAny(s[1:], "{}")
		if end < 0 || s[1+end] != '}' {
			segs = append(segs, templateSegment{text: "{", bad: `"{" without a matching "}"`})
			s = s[1:]
			continue
		}
		name := s[1 : 1+end]
		seg := templateSegment{text: s[:end+2], placeholder: name}
		if !slices.Contains(applicationNamePlaceholders, name) {
			seg.bad = fmt.Sprintf("unknown placeholder {%s} (want {%s})", name, strings.Join(applicationNamePlaceholders, "}, {"))
		}
		segs = append(segs, seg)
		s = s[end+2:]
	}
	return segs
}

// credentials decodes a target's credentials block. protocol and address
// are the target's (either may be "" when invalid), for the checks that
// depend on them.
func (d *decoder) credentials(e entry, where, protocol, address string) (*Credentials, bool) {
	where += ": credentials"
	m, ok := d.mapping(e.val, where, "username", "password_file", "tls", "application_name")
	if !ok {
		return nil, false
	}
	ok = d.require(e.val, where, m, "username", "password_file")
	c := &Credentials{}
	if protocol == ProtocolTCP {
		d.errorf(e.key, "%s", at(where, "tcp targets are forwarded as raw bytes, so there is nowhere to inject credentials"))
		ok = false
	}
	if e, found := m["username"]; found {
		var good bool
		c.Username, good = d.nonEmptyStr(e, where)
		ok = ok && good
	}
	if e, found := m["password_file"]; found {
		var good bool
		c.PasswordFile, good = d.absPath(e, where)
		ok = ok && good
	}
	if e, found := m["tls"]; found {
		var good bool
		c.TLS, good = d.upstreamTLS(e, where, protocol, address)
		ok = ok && good
	}
	if e, found := m["application_name"]; found {
		var good bool
		c.ApplicationName, good = d.applicationName(e, where, protocol)
		ok = ok && good
	}
	return c, ok
}

// absPath decodes a file path that must be absolute: wardend runs from /,
// not from the policy's directory, so a relative path would point
// somewhere unexpected.
func (d *decoder) absPath(e entry, where string) (string, bool) {
	s, ok := d.nonEmptyStr(e, where)
	if ok && !filepath.IsAbs(s) {
		d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("%s %q must be an absolute path", e.key.Value, s)))
		ok = false
	}
	return s, ok
}

// postgresOnly reports, at the key, a credentials setting that only the
// PostgreSQL codec implements. Ignoring it on another protocol would leave,
// say, a login the author believes encrypted going out in the clear.
func (d *decoder) postgresOnly(e entry, where, protocol string) bool {
	// tcp already has its own error for the whole credentials block.
	if protocol == "" || protocol == ProtocolPostgres || protocol == ProtocolTCP {
		return true
	}
	d.errorf(e.key, "%s", at(where, fmt.Sprintf("%s is implemented for postgres targets only; this target is %s", e.key.Value, protocol)))
	return false
}

// upstreamTLS decodes a target's tls, or its credentials.tls.
func (d *decoder) upstreamTLS(e entry, where, protocol, address string) (UpstreamTLS, bool) {
	where += ": tls"
	var t UpstreamTLS
	m, ok := d.mapping(e.val, where, "mode", "ca_file", "server_name")
	if !ok {
		return t, false
	}
	ok = d.postgresOnly(e, strings.TrimSuffix(where, ": tls"), protocol)
	// No default mode: "tls: {ca_file: ...}" is as likely to mean
	// verify-full as anything, and guessing disable would be a silent
	// downgrade.
	ok = d.require(e.val, where, m, "mode") && ok
	if me, found := m["mode"]; found {
		if s, good := d.str(me, where); good {
			if slices.Contains(tlsModes, s) {
				t.Mode = TLSMode(s)
			} else {
				d.errorf(resolve(me.val), "%s", at(where, fmt.Sprintf("mode %q is not one of %s", s, strings.Join(tlsModes, ", "))))
				ok = false
			}
		} else {
			ok = false
		}
	}
	if ce, found := m["ca_file"]; found {
		var good bool
		t.CAFile, good = d.absPath(ce, where)
		ok = ok && good
		if good && t.Mode == TLSDisable {
			d.errorf(ce.key, "%s", at(where, "ca_file has no effect with mode disable; set mode: verify-full (or require)"))
			ok = false
		}
	}
	if se, found := m["server_name"]; found {
		s, good := d.nonEmptyStr(se, where)
		if good {
			if _, err := netip.ParseAddr(s); err != nil {
				if _, err := parseDNSName(s); err != nil {
					d.errorf(resolve(se.val), "%s", at(where, fmt.Sprintf("server_name: %v", err)))
					good = false
				}
			}
		}
		t.ServerName = s
		ok = ok && good
		if good && t.Mode != "" && t.Mode != TLSVerifyFull {
			// Only verify-full checks the name; accepting it elsewhere
			// would let the author believe it is checked.
			d.errorf(se.key, "%s", at(where, fmt.Sprintf("server_name is checked only with mode verify-full, not %s", t.Mode)))
			ok = false
		}
	}
	if t.Mode == TLSVerifyFull && t.ServerName == "" {
		if ep, err := ParseAddress(address); err == nil && !ep.IsName() && !ep.Prefix.IsSingleIP() {
			d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("verify-full needs server_name: address %s is a range, so there is no single host name to check", address)))
			ok = false
		}
	}
	return t, ok
}

// applicationName decodes and checks credentials.application_name.
func (d *decoder) applicationName(e entry, where, protocol string) (string, bool) {
	s, ok := d.nonEmptyStr(e, where)
	if !ok {
		return "", false
	}
	ok = d.postgresOnly(e, where, protocol)
	v := resolve(e.val)
	literal, ascii := 0, true
	for _, seg := range splitTemplate(s) {
		switch {
		case seg.bad != "":
			d.errorf(v, "%s", at(where, fmt.Sprintf("application_name %q: %s", s, seg.bad)))
			ok = false
		case seg.placeholder == "":
			literal += len(seg.text)
			for _, c := range []byte(seg.text) {
				ascii = ascii && c >= 0x20 && c <= 0x7e
			}
		}
	}
	if !ascii {
		d.errorf(v, "%s", at(where, fmt.Sprintf("application_name %q: only printable ASCII is allowed (PostgreSQL would turn anything else into '?')", s)))
		ok = false
	}
	if literal > MaxApplicationNameLen {
		// The fixed text alone fills PostgreSQL's limit, so every
		// placeholder would be cut off.
		d.errorf(v, "%s", at(where, fmt.Sprintf("application_name %q: the text outside placeholders is %d bytes; PostgreSQL keeps %d", s, literal, MaxApplicationNameLen)))
		ok = false
	}
	return s, ok
}
