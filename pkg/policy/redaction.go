package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Redaction is the policy's redaction: section. Warden redacts secrets
// from every text it records (process arguments, SSH exec command lines,
// HTTP request targets, logs) with built-in rules, on by default; this
// section adds to them and, for named groups, turns them off. pkg/redact
// applies it.
type Redaction struct {
	// Binaries add programs and the flags whose values are secrets.
	Binaries []RedactionBinary
	// Patterns add regular expressions applied to every argument.
	Patterns []RedactionPattern
	// Exemptions turn built-in rules off for members of groups.
	Exemptions []RedactionExemption
}

// RedactionBinary names programs and the flags whose values they redact.
type RedactionBinary struct {
	// Names are program names as run, without a directory (vault, psql).
	Names []string
	// Flags are written as typed: "-t" (value attached, -tVALUE, or the
	// next argument), "--token" and "-token" (--token=VALUE or the next
	// argument), or a flag ending in ':' whose value is attached
	// ("/p:").
	Flags []string
	// Kind names the values in their marker, [redacted:KIND]; ""
	// means DefaultRedactionKind.
	Kind string
}

// DefaultRedactionKind is the kind of a binary's flag values when the
// policy names none.
const DefaultRedactionKind = "secret"

// RedactionPattern is a regular expression whose matches are secrets: the
// first capture group if it has groups (so `api_key: (\S+)` keeps its
// prefix), the whole match otherwise.
type RedactionPattern struct {
	Name string
	// Regex is the expression as written (RE2 syntax); Regexp is it
	// compiled.
	Regex  string
	Regexp *regexp.Regexp
	// Kind names the matches in their marker; "" means Name.
	Kind string
}

// RedactionExemption turns built-in rules off for members of any of
// Groups: for forensic teams who must see commands verbatim. Reason is
// required, and every text recorded under the exemption names it, so the
// decision is on record.
type RedactionExemption struct {
	Name   string
	Groups []string
	// Builtins are names from RedactionBuiltins, or RedactionAll.
	Builtins []string
	Reason   string
}

// Applies reports whether the exemption covers any of groups.
func (e RedactionExemption) Applies(groups []string) bool { return intersects(e.Groups, groups) }

// RedactionAll in an exemption's builtins turns every built-in rule off.
const RedactionAll = "all"

// redactionBuiltins are the built-in rules' names; pkg/redact implements
// them and tests that the lists agree.
var redactionBuiltins = []string{"url", "keyvalue", "env", "flags", "clients", "headers", "sql",
	"jwt", "aws_access_key", "private_key", "credit_card"}

// RedactionBuiltins returns the names an exemption's builtins may list
// (besides RedactionAll).
func RedactionBuiltins() []string { return slices.Clone(redactionBuiltins) }

// kindRE is what a marker kind may be.
var kindRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// flagRE is a flag as the policy may name it.
var flagRE = regexp.MustCompile(`^(?:--?[A-Za-z0-9][A-Za-z0-9_.-]*|/[A-Za-z0-9][A-Za-z0-9_.-]*:)$`)

func (d *decoder) redaction(e entry) Redaction {
	var r Redaction
	m, ok := d.mapping(e.val, "redaction", "binaries", "patterns", "exemptions")
	if !ok {
		return r
	}
	if e, ok := m["binaries"]; ok {
		for i, n := range d.seq(e) {
			if b, ok := d.redactionBinary(n, fmt.Sprintf("redaction.binaries[%d]", i)); ok {
				r.Binaries = append(r.Binaries, b)
			}
		}
	}
	if e, ok := m["patterns"]; ok {
		seen := make(map[string]int)
		for i, n := range d.seq(e) {
			if p, ok := d.redactionPattern(n, label(n, "redaction pattern", "redaction.patterns", i), seen); ok {
				r.Patterns = append(r.Patterns, p)
			}
		}
	}
	if e, ok := m["exemptions"]; ok {
		seen := make(map[string]int)
		for i, n := range d.seq(e) {
			if x, ok := d.redactionExemption(n, label(n, "redaction exemption", "redaction.exemptions", i), seen); ok {
				r.Exemptions = append(r.Exemptions, x)
			}
		}
	}
	return r
}

// kind decodes an optional marker kind.
func (d *decoder) kind(m map[string]entry, where string) (string, bool) {
	e, found := m["kind"]
	if !found {
		return "", true
	}
	s, ok := d.str(e, where)
	if ok && !kindRE.MatchString(s) {
		d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("kind %q must be lower-case letters, digits, '_' or '-' (at most 32), starting with a letter or digit", s)))
		return "", false
	}
	return s, ok
}

func (d *decoder) redactionBinary(n *yaml.Node, where string) (RedactionBinary, bool) {
	m, ok := d.mapping(n, where, "names", "flags", "kind")
	if !ok {
		return RedactionBinary{}, false
	}
	ok = d.require(n, where, m, "names", "flags")
	var b RedactionBinary
	if e, found := m["names"]; found {
		for _, it := range d.list(e, where, true) {
			if strings.ContainsAny(it.value, "/ \t") {
				d.errorf(it.node, "%s", at(where, fmt.Sprintf("name %q: give the program's name as run, without a directory or blanks", it.value)))
				ok = false
				continue
			}
			b.Names = append(b.Names, it.value)
		}
		ok = ok && b.Names != nil
	}
	if e, found := m["flags"]; found {
		for _, it := range d.list(e, where, true) {
			if !flagRE.MatchString(it.value) {
				d.errorf(it.node, "%s", at(where, fmt.Sprintf("flag %q: write it as typed, -x, --long, -long or /x:, without a value", it.value)))
				ok = false
				continue
			}
			b.Flags = append(b.Flags, it.value)
		}
		ok = ok && b.Flags != nil
	}
	var good bool
	b.Kind, good = d.kind(m, where)
	return b, ok && good
}

func (d *decoder) redactionPattern(n *yaml.Node, where string, seen map[string]int) (RedactionPattern, bool) {
	m, ok := d.mapping(n, where, "name", "regex", "kind")
	if !ok {
		return RedactionPattern{}, false
	}
	ok = d.require(n, where, m, "name", "regex")
	var p RedactionPattern
	if e, found := m["name"]; found {
		var good bool
		p.Name, good = d.name(e, where, seen, "redaction pattern")
		ok = ok && good
		if good && !kindRE.MatchString(p.Name) {
			d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("name %q names the marker [redacted:NAME]: use at most 32 letters, digits, '_' or '-', or set kind", p.Name)))
			ok = false
		}
	}
	if e, found := m["regex"]; found {
		if s, good := d.nonEmptyStr(e, where); good {
			re, err := regexp.Compile(s)
			switch {
			case err != nil:
				d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("regex %q: %v", s, err)))
				ok = false
			case re.MatchString(""):
				// It would match everywhere and redact nothing, so the
				// author meant something else.
				d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("regex %q matches the empty string", s)))
				ok = false
			default:
				p.Regex, p.Regexp = s, re
			}
		} else {
			ok = false
		}
	}
	var good bool
	p.Kind, good = d.kind(m, where)
	return p, ok && good
}

func (d *decoder) redactionExemption(n *yaml.Node, where string, seen map[string]int) (RedactionExemption, bool) {
	m, ok := d.mapping(n, where, "name", "groups", "builtins", "reason")
	if !ok {
		return RedactionExemption{}, false
	}
	ok = d.require(n, where, m, "name", "groups", "builtins", "reason")
	var x RedactionExemption
	if e, found := m["name"]; found {
		var good bool
		x.Name, good = d.name(e, where, seen, "redaction exemption")
		ok = ok && good
	}
	if e, found := m["groups"]; found {
		x.Groups = values(d.list(e, where, true))
		ok = ok && x.Groups != nil
	}
	if e, found := m["builtins"]; found {
		for _, it := range d.list(e, where, true) {
			if it.value != RedactionAll && !slices.Contains(redactionBuiltins, it.value) {
				d.errorf(it.node, "%s", at(where, fmt.Sprintf("builtin %q is not %s or one of %s", it.value, RedactionAll, strings.Join(redactionBuiltins, ", "))))
				ok = false
				continue
			}
			x.Builtins = append(x.Builtins, it.value)
		}
		ok = ok && x.Builtins != nil
	}
	if e, found := m["reason"]; found {
		var good bool
		x.Reason, good = d.nonEmptyStr(e, where)
		if good && strings.TrimSpace(x.Reason) == "" {
			d.errorf(resolve(e.val), "%s", at(where, "reason must say why the group sees secrets"))
			good = false
		}
		ok = ok && good
	}
	return x, ok
}
