package policy

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultApplicationName is the application_name template used when the
// credentials block sets none: the name the client asked for, then the
// person, so that pg_stat_activity and server logs still show the tool
// (psql, a BI client) and also name who is behind the shared account.
const DefaultApplicationName = "{client} [warden:{sub}]"

// MaxApplicationNameLen is PostgreSQL's limit on application_name
// (NAMEDATALEN-1 bytes): pg_stat_activity and the server's logs show no
// more than this, so ExpandApplicationName fits its result to it.
const MaxApplicationNameLen = 63

// applicationNamePlaceholders are the names a template may use in braces.
var applicationNamePlaceholders = []string{"sub", "email", "session", "client"}

// personPlaceholders name the person; a template must use one of them,
// since naming the person is what the setting is for.
var personPlaceholders = []string{"sub", "email"}

// ApplicationNameValues fill an application_name template. An empty Sub,
// Email or Session expands to "unknown", so the position of every field
// stays readable; an empty Client expands to "", since a client that sent
// no application_name has nothing to show.
type ApplicationNameValues struct {
	Sub, Email, Session string
	// Client is the application_name the client itself sent. It is the
	// client's claim, not verified: only the person placeholders are, and
	// its square brackets become round ones so it cannot imitate them.
	Client string
}

// clientName is the client's own application_name with square brackets
// made round, so that a client cannot write a "[warden:someone]" of its
// own ahead of the real one.
func clientName(s string) string {
	return strings.NewReplacer("[", "(", "]", ")").Replace(s)
}

// Ranks of template parts, in the order ExpandApplicationName shortens
// them when the result is too long: the client's own name first, the
// person last.
const (
	rankClient = iota
	rankSession
	rankEmail // {email} when the template also has {sub}
	rankText
	rankPerson
)

// ExpandApplicationName fills template's {sub}, {email}, {session} and
// {client} placeholders ("" means DefaultApplicationName), and trims
// leading and trailing spaces (a client without a name leaves none behind).
// Bytes outside printable ASCII become '?', as PostgreSQL 15 itself does;
// doing it here keeps the value the same whatever the server version (16
// and later escape such bytes as \xNN, which would change the length).
//
// The result is at most MaxApplicationNameLen bytes, and the cap never
// drops the person: the {client} part is shortened first, then {session},
// then {email} if the template also has {sub}, then the template's own
// text; each from its end, the last one first. {sub} (or {email} without
// {sub}) is kept whole unless it alone is longer than the limit, in which
// case it is cut to the limit too.
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
	segs := splitTemplate(template)
	hasSub := slices.ContainsFunc(segs, func(s templateSegment) bool { return s.placeholder == "sub" })
	type part struct {
		text []byte
		rank int
	}
	parts := make([]part, 0, len(segs))
	for _, seg := range segs {
		p := part{rank: rankText}
		switch seg.placeholder {
		case "sub":
			p = part{[]byte(orUnknown(v.Sub)), rankPerson}
		case "email":
			p = part{[]byte(orUnknown(v.Email)), rankPerson}
			if hasSub {
				p.rank = rankEmail
			}
		case "session":
			p = part{[]byte(orUnknown(v.Session)), rankSession}
		case "client":
			p = part{[]byte(clientName(v.Client)), rankClient}
		default:
			// Literal text; and for a hand-built template with an
			// unknown placeholder (Parse rejects those), its text
			// rather than silently nothing.
			p.text = []byte(seg.text)
		}
		for i, c := range p.text {
			if c < 0x20 || c > 0x7e {
				p.text[i] = '?'
			}
		}
		parts = append(parts, p)
	}
	for {
		var b strings.Builder
		for _, p := range parts {
			b.Write(p.text)
		}
		out := strings.Trim(b.String(), " ")
		excess := len(out) - MaxApplicationNameLen
		if excess <= 0 {
			return out
		}
		// Cut excess bytes, lowest rank first and, within a rank, the
		// last part first. Trimming can make a cut worth less than its
		// length (it may only expose a space), hence the loop; every
		// round removes at least one byte, as out is not empty.
		for rank := rankClient; rank <= rankPerson && excess > 0; rank++ {
			for i := len(parts) - 1; i >= 0 && excess > 0; i-- {
				if parts[i].rank != rank {
					continue
				}
				n := min(excess, len(parts[i].text))
				parts[i].text = parts[i].text[:len(parts[i].text)-n]
				excess -= n
			}
		}
	}
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
	if IsHTTP(protocol) && d.enf.Has(protocol, CapCredentials) {
		return d.httpCredentials(e, where, protocol, address)
	}
	where += ": credentials"
	m, ok := d.mapping(e.val, where, "username", "password_file", "tls", "application_name", "key_file", "user_ca_key_file")
	if !ok {
		return nil, false
	}
	c := &Credentials{}
	if protocol == ProtocolSSH {
		ok = d.require(e.val, where, m, "username") && d.sshCredentials(e.val, where, m, c)
	} else {
		ok = d.require(e.val, where, m, "username", "password_file") && d.noSSHCredentials(where, protocol, m)
	}
	credOK := d.enforces(e.key, where, thisTarget, protocol, CapCredentials)
	ok = ok && credOK
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
		c.ApplicationName, good = d.applicationName(e, where, protocol, credOK)
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

// upstreamTLS decodes a target's tls, or its credentials.tls. Ignoring it
// on a target whose codec cannot secure the hop would leave, say, a login
// the author believes encrypted going out in the clear, so that is an
// error at the key.
func (d *decoder) upstreamTLS(e entry, where, protocol, address string) (UpstreamTLS, bool) {
	where += ": tls"
	var t UpstreamTLS
	m, ok := d.mapping(e.val, where, "mode", "ca_file", "server_name")
	if !ok {
		return t, false
	}
	ok = d.enforces(e.key, where, thisTarget, protocol, CapUpstreamTLS)
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
// credOK says whether the target's codec injects credentials at all; if
// not, that is reported once, at the credentials key.
func (d *decoder) applicationName(e entry, where, protocol string, credOK bool) (string, bool) {
	s, ok := d.nonEmptyStr(e, where)
	if !ok {
		return "", false
	}
	if credOK && protocol != "" && protocol != ProtocolPostgres {
		// Not a codec capability but what the setting is: a PostgreSQL
		// startup parameter, which other protocols do not have.
		d.errorf(e.key, "%s", at(where, fmt.Sprintf("application_name is a PostgreSQL setting; this target is %s", protocol)))
		ok = false
	}
	v := resolve(e.val)
	literal, ascii, person := 0, true, false
	for _, seg := range splitTemplate(s) {
		switch {
		case seg.bad != "":
			d.errorf(v, "%s", at(where, fmt.Sprintf("application_name %q: %s", s, seg.bad)))
			ok = false
		case slices.Contains(personPlaceholders, seg.placeholder):
			person = true
		case seg.placeholder == "":
			literal += len(seg.text)
			for _, c := range []byte(seg.text) {
				ascii = ascii && c >= 0x20 && c <= 0x7e
			}
		}
	}
	if !person {
		// Naming the person behind the shared account is the point of
		// the setting; a template without them would hide who it is.
		d.errorf(v, "%s", at(where, fmt.Sprintf("application_name %q names no person: use {sub} or {email}", s)))
		ok = false
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
