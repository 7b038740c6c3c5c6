package policy

import (
	"github.com/wardenhq/warden/pkg/yamlpos"

	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds the policy file Load reads. Real policies are a few
// kilobytes; the bound keeps a mistaken path (a log file, a device) from
// eating the agent's memory.
const MaxFileSize = 8 << 20

// Load reads and parses the policy file at path, accepting only what enf
// says the agent's codecs enforce (see Parse). Errors name the file.
func Load(path string, enf Enforcement) (*Policy, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path, enf)
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("policy: read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("policy: %s is larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}

// Parse parses and validates a policy. source names the data in error
// messages (normally the file path). enf says what the codec of each
// protocol enforces: a rule condition, review action, masking entry,
// credentials or tls on a target whose codec does not enforce it is an
// error, and so is any of them on a protocol enf does not list (nil enf
// allows access only, everywhere). On failure the error lists every problem
// found, one per line, each as source:line:column: message; see Error and
// Errors.
func Parse(data []byte, source string, enf Enforcement) (*Policy, error) {
	d := &decoder{source: source, enf: enf}
	root := d.document(data)
	if root == nil {
		return nil, joinErrors(d.errs)
	}
	p := d.policy(root)
	if err := joinErrors(d.errs); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	p.Source = source
	p.Digest = hex.EncodeToString(sum[:])
	return p, nil
}

// decoder walks the YAML node tree, collecting every problem instead of
// stopping at the first, so one edit-and-reload cycle shows them all.
type decoder struct {
	source string
	errs   []*Error
	// enf is what each protocol's codec enforces.
	enf Enforcement

	// targets maps each declared target name to its protocol ("" if the
	// protocol was invalid), for checking references.
	targets map[string]string
}

// entry is a key and its value in a mapping.
type entry struct{ key, val *yaml.Node }

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, &Error{Source: d.source, Line: n.Line, Column: n.Column, Msg: fmt.Sprintf(format, args...)})
}

// document parses the YAML and returns the root node, or nil after
// recording why there is none.
func (d *decoder) document(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			// An empty policy would stop protecting every target. A
			// half-written file is the likeliest cause, so refuse it.
			d.errs = append(d.errs, &Error{Source: d.source, Msg: "policy is empty; write \"targets: []\" if no target should be protected"})
		} else {
			d.syntaxError(err)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := 0
		if err == nil {
			line = extra.Line
		}
		d.errs = append(d.errs, &Error{Source: d.source, Line: line, Msg: "more than one YAML document; a policy is a single document"})
		return nil
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			d.errs = append(d.errs, &Error{Source: d.source, Msg: "policy is empty"})
			return nil
		}
		root = resolve(root.Content[0])
	}
	return root
}

func (d *decoder) syntaxError(err error) {
	line, msg := yamlpos.SyntaxError(err)
	d.errs = append(d.errs, &Error{Source: d.source, Line: line, Msg: "invalid YAML: " + msg})
}

// resolve follows aliases so that anchors work anywhere in the file.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

// at prefixes a message with where it applies, if anywhere.
func at(where, msg string) string {
	if where == "" {
		return msg
	}
	return where + ": " + msg
}

// mapping checks that n is a mapping whose keys are all in known, at most
// once each, and returns its entries by key. where says which part of the
// policy n is, for messages.
func (d *decoder) mapping(n *yaml.Node, where string, known ...string) (map[string]entry, bool) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s", at(where, "want a mapping, got "+kindName(n)))
		return nil, false
	}
	m := make(map[string]entry, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		name := k.Value
		switch {
		case k.Kind != yaml.ScalarNode:
			d.errorf(k, "%s", at(where, "keys must be plain strings"))
		case !slices.Contains(known, name):
			// Strict on purpose: a misspelt key would otherwise drop a
			// condition or a whole rule without a word.
			d.errorf(k, "%s", at(where, fmt.Sprintf("unknown key %q (want one of %s)", name, strings.Join(known, ", "))))
		case m[name].key != nil:
			d.errorf(k, "%s", at(where, fmt.Sprintf("key %q is repeated (first at line %d)", name, m[name].key.Line)))
		default:
			m[name] = entry{key: k, val: v}
		}
	}
	return m, true
}

// require reports each of keys that m lacks, at the mapping n, and whether
// all were there.
func (d *decoder) require(n *yaml.Node, where string, m map[string]entry, keys ...string) bool {
	all := true
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			d.errorf(resolve(n), "%s", at(where, fmt.Sprintf("missing required key %q", k)))
			all = false
		}
	}
	return all
}

// str decodes a scalar string value. It reports and returns false for
// lists, mappings and null.
func (d *decoder) str(e entry, where string) (string, bool) {
	v := resolve(e.val)
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		d.errorf(v, "%s", at(where, fmt.Sprintf("%s: want a string, got %s", e.key.Value, kindName(v))))
		return "", false
	}
	return v.Value, true
}

// nonEmptyStr is str for values that must not be "".
func (d *decoder) nonEmptyStr(e entry, where string) (string, bool) {
	s, ok := d.str(e, where)
	if ok && s == "" {
		d.errorf(resolve(e.val), "%s", at(where, e.key.Value+" must not be empty"))
		return "", false
	}
	return s, ok
}

// item is one string in a list, with its node for error positions.
type item struct {
	value string
	node  *yaml.Node
}

// list decodes a list of non-empty strings. If required is set, an empty
// list is an error: it would make the entry match nothing, which is never
// what the author meant.
func (d *decoder) list(e entry, where string, required bool) []item {
	v := resolve(e.val)
	if v.Kind != yaml.SequenceNode {
		d.errorf(v, "%s", at(where, fmt.Sprintf("%s: want a list of strings, got %s (write [%s] for one item)", e.key.Value, kindName(v), v.Value)))
		return nil
	}
	if required && len(v.Content) == 0 {
		d.errorf(v, "%s", at(where, e.key.Value+" must not be an empty list"))
		return nil
	}
	items := make([]item, 0, len(v.Content))
	for _, c := range v.Content {
		c = resolve(c)
		switch {
		case c.Kind != yaml.ScalarNode || c.Tag == "!!null":
			d.errorf(c, "%s", at(where, fmt.Sprintf("%s: want a string, got %s", e.key.Value, kindName(c))))
		case c.Value == "":
			d.errorf(c, "%s", at(where, e.key.Value+": empty string in list"))
		default:
			items = append(items, item{c.Value, c})
		}
	}
	return items
}

func values(items []item) []string {
	if len(items) == 0 {
		return nil
	}
	s := make([]string, len(items))
	for i, it := range items {
		s[i] = it.value
	}
	return s
}

// label names list element i for messages: `target "orders-db"` when it has
// a usable name, `targets[2]` otherwise.
func label(n *yaml.Node, kind, list string, i int) string {
	n = resolve(n)
	if n.Kind == yaml.MappingNode {
		for j := 0; j+1 < len(n.Content); j += 2 {
			if v := resolve(n.Content[j+1]); n.Content[j].Value == "name" && v.Kind == yaml.ScalarNode && v.Value != "" {
				return fmt.Sprintf("%s %q", kind, v.Value)
			}
		}
	}
	return fmt.Sprintf("%s[%d]", list, i)
}

// seq returns the elements of a top-level list, or reports why it is not one.
func (d *decoder) seq(e entry) []*yaml.Node {
	v := resolve(e.val)
	if v.Kind != yaml.SequenceNode {
		// Null too: "rules:" with nothing under it is as likely a file cut
		// short as a deliberate empty list, and "[]" says the latter.
		d.errorf(v, "%s: want a list, got %s (write %s: [] for none)", e.key.Value, kindName(v), e.key.Value)
		return nil
	}
	return v.Content
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// name decodes and checks the name of a target, rule or masking entry and
// that it is unique among seen (name to line).
func (d *decoder) name(e entry, where string, seen map[string]int, what string) (string, bool) {
	s, ok := d.nonEmptyStr(e, where)
	if !ok {
		return "", false
	}
	v := resolve(e.val)
	if !nameRE.MatchString(s) {
		d.errorf(v, "%s", at(where, fmt.Sprintf("name %q must be lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", s)))
		ok = false
	}
	if line, dup := seen[s]; dup {
		d.errorf(v, "%s", at(where, fmt.Sprintf("name %q is already used by the %s at line %d", s, what, line)))
		return s, false
	}
	seen[s] = v.Line
	return s, ok
}

func (d *decoder) policy(root *yaml.Node) *Policy {
	m, ok := d.mapping(root, "policy", "targets", "access", "rules", "masking", "redaction")
	if !ok {
		return nil
	}
	d.require(root, "policy", m, "targets")
	p := &Policy{}
	// Targets first whatever the key order, so references can be checked.
	d.targets = make(map[string]string)
	if e, ok := m["targets"]; ok {
		p.Targets = d.targetList(e)
	}
	if e, ok := m["access"]; ok {
		for i, n := range d.seq(e) {
			if a, ok := d.access(n, fmt.Sprintf("access[%d]", i)); ok {
				p.Access = append(p.Access, a)
			}
		}
	}
	if e, ok := m["rules"]; ok {
		seen := make(map[string]int)
		for i, n := range d.seq(e) {
			if r, ok := d.rule(n, label(n, "rule", "rules", i), seen); ok {
				p.Rules = append(p.Rules, r)
			}
		}
	}
	if e, ok := m["masking"]; ok {
		seen := make(map[string]int)
		for i, n := range d.seq(e) {
			if mk, ok := d.masking(n, label(n, "masking", "masking", i), seen); ok {
				p.Masking = append(p.Masking, mk)
			}
		}
	}
	if e, ok := m["redaction"]; ok {
		p.Redaction = d.redaction(e)
	}
	return p
}

func (d *decoder) targetList(e entry) []Target {
	var out []Target
	names := make(map[string]int)
	endpoints := make(map[string]string) // canonical endpoint -> label
	for i, n := range d.seq(e) {
		where := label(n, "target", "targets", i)
		m, ok := d.mapping(n, where, "name", "protocol", "address", "credentials", "tls", "rdp", "http", "ssh")
		if !ok {
			continue
		}
		valid := d.require(n, where, m, "name", "protocol", "address")
		var t Target
		if e, ok := m["name"]; ok {
			t.Name, ok = d.name(e, where, names, "target")
			valid = valid && ok
		}
		if e, ok := m["protocol"]; ok {
			if s, ok := d.str(e, where); ok {
				if slices.Contains(protocols, s) {
					t.Protocol = s
				} else {
					d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("protocol %q is not one of %s", s, strings.Join(protocols, ", "))))
				}
			}
			valid = valid && t.Protocol != ""
		}
		if t.Name != "" {
			// Register even a target with other errors, so references to
			// it do not add noise.
			if _, dup := d.targets[t.Name]; !dup {
				d.targets[t.Name] = t.Protocol
			}
		}
		if e, ok := m["address"]; ok {
			if s, ok := d.str(e, where); ok {
				t.Address = s
				ep, err := ParseAddress(s)
				switch {
				case err != nil:
					d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("address %q: %v", s, err)))
					valid = false
				case endpoints[ep.String()] != "":
					d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("address %s is already used by %s", ep, endpoints[ep.String()])))
					valid = false
				default:
					endpoints[ep.String()] = fmt.Sprintf("%s (line %d)", where, resolve(e.val).Line)
				}
			} else {
				valid = false
			}
		}
		if e, ok := m["credentials"]; ok {
			t.Credentials, ok = d.credentials(e, where, t.Protocol, t.Address)
			valid = valid && ok
		}
		if e, ok := m["tls"]; ok {
			t.TLS, ok = d.upstreamTLS(e, where, t.Protocol, t.Address)
			valid = valid && ok
			if t.Credentials != nil && t.Credentials.TLS.Mode != "" {
				d.errorf(e.key, "%s", at(where, "tls is set both here and under credentials; keep one"))
				valid = false
			}
		}
		valid = d.httpTarget(m, where, &t) && valid
		if e, ok := m["rdp"]; ok {
			t.RDP, ok = d.rdpBlock(e, where, t.Protocol)
			valid = valid && ok
		}
		if e, ok := m["ssh"]; ok {
			t.SSH, ok = d.sshBlock(e, where, t.Protocol)
			valid = valid && ok
		}
		if valid {
			out = append(out, t)
		}
	}
	return out
}

// refs checks that every item names a declared target.
func (d *decoder) refs(items []item, where string) bool {
	ok := true
	for _, it := range items {
		if _, found := d.targets[it.value]; !found {
			d.errorf(it.node, "%s", at(where, fmt.Sprintf("unknown target %q (not declared under targets)", it.value)))
			ok = false
		}
	}
	return ok
}

func (d *decoder) access(n *yaml.Node, where string) (Access, bool) {
	m, ok := d.mapping(n, where, "groups", "targets", "review")
	if !ok {
		return Access{}, false
	}
	ok = d.require(n, where, m, "groups", "targets")
	var a Access
	if e, found := m["groups"]; found {
		a.Groups = values(d.list(e, where, true))
		ok = ok && a.Groups != nil
	}
	if e, found := m["targets"]; found {
		items := d.list(e, where, true)
		ok = d.refs(items, where) && ok && items != nil
		a.Targets = values(items)
	}
	if e, found := m["review"]; found {
		spec, good := d.review(e, where, true)
		a.Review, ok = &spec, ok && good
	}
	return a, ok
}

func (d *decoder) rule(n *yaml.Node, where string, seen map[string]int) (Rule, bool) {
	m, ok := d.mapping(n, where, "name", "targets", "when", "action", "except_groups", "review")
	if !ok {
		return Rule{}, false
	}
	ok = d.require(n, where, m, "name", "targets", "when", "action")
	var r Rule
	if e, found := m["name"]; found {
		var good bool
		r.Name, good = d.name(e, where, seen, "rule")
		ok = ok && good
	}
	var targets []item
	if e, found := m["targets"]; found {
		targets = d.list(e, where, true)
		ok = d.refs(targets, where) && ok && targets != nil
		r.Targets = values(targets)
	}
	if e, found := m["when"]; found {
		var good bool
		r.When, good = d.match(e, where, targets)
		ok = ok && good
		if v := resolve(e.val); v.Kind == yaml.MappingNode && len(v.Content) == 0 {
			// when: {} matches every command, which only a codec that
			// looks at each command can act on. Conditions that are
			// present were checked by match, at their keys.
			conds := conditionCaps()
			for _, t := range targets {
				if p := d.targets[t.value]; p != "" && !d.enf.hasAny(p, conds) {
					d.unenforced(t.node, where, targetSubject(t.value), p, "rules")
					ok = false
				}
			}
		}
	}
	if e, found := m["action"]; found {
		if s, good := d.str(e, where); good && slices.Contains(actions, s) {
			r.Action = Action(s)
			if r.Action == Review {
				for _, t := range targets {
					ok = d.enforces(resolve(e.val), where+": action", targetSubject(t.value), d.targets[t.value], CapReview) && ok
				}
			}
		} else {
			if good {
				d.errorf(resolve(e.val), "%s", at(where, fmt.Sprintf("action %q is not one of %s", s, strings.Join(actions, ", "))))
			}
			ok = false
		}
	}
	if e, found := m["except_groups"]; found {
		r.ExceptGroups = values(d.list(e, where, false))
	}
	// A review rule without approvers could never be approved: refusing
	// it at load is clearer than a review nobody may decide.
	e, found := m["review"]
	switch {
	case found && r.Action != Review:
		d.errorf(e.key, "%s", at(where, fmt.Sprintf("review: only a rule with action: review has a review block (this one's action is %s)", r.Action)))
		ok = false
	case found:
		spec, good := d.review(e, where, false)
		r.Review, ok = &spec, ok && good
	case r.Action == Review:
		d.errorf(resolve(n), "%s", at(where, "action: review needs a review block naming its approvers (review: {approvers: [GROUP]})"))
		ok = false
	}
	return r, ok
}

func (d *decoder) masking(n *yaml.Node, where string, seen map[string]int) (Masking, bool) {
	m, ok := d.mapping(n, where, "name", "targets", "columns", "detectors", "keys", "except_groups")
	if !ok {
		return Masking{}, false
	}
	ok = d.require(n, where, m, "name", "targets")
	var mk Masking
	if e, found := m["name"]; found {
		var good bool
		mk.Name, good = d.name(e, where, seen, "masking entry")
		ok = ok && good
	}
	var targets []item
	if e, found := m["targets"]; found {
		targets = d.list(e, where, true)
		ok = d.refs(targets, where) && ok && targets != nil
		mk.Targets = values(targets)
	}
	if e, found := m["columns"]; found {
		cols := d.list(e, where, false)
		mk.Columns = values(cols)
		if len(cols) > 0 {
			for _, t := range targets {
				ok = d.enforces(e.key, where+": columns", targetSubject(t.value), d.targets[t.value], CapColumnMasking) && ok
			}
		}
	}
	if e, found := m["detectors"]; found {
		dets := d.list(e, where, false)
		if len(dets) > 0 {
			for _, t := range targets {
				ok = d.enforces(e.key, where+": detectors", targetSubject(t.value), d.targets[t.value], CapContentMasking) && ok
			}
		}
		for _, it := range dets {
			if !slices.Contains(detectors, it.value) {
				d.errorf(it.node, "%s", at(where, fmt.Sprintf("detector %q is not one of %s", it.value, strings.Join(detectors, ", "))))
				ok = false
				continue
			}
			mk.Detectors = append(mk.Detectors, it.value)
		}
	}
	if e, found := m["keys"]; found {
		var good bool
		mk.Keys, good = d.maskKeys(e, where, targets)
		ok = ok && good
	}
	if ok && len(mk.Columns) == 0 && len(mk.Detectors) == 0 && len(mk.Keys) == 0 {
		d.errorf(resolve(n), "%s", at(where, "masks nothing: give columns, detectors or both"))
		ok = false
	}
	if e, found := m["except_groups"]; found {
		mk.ExceptGroups = values(d.list(e, where, false))
	}
	return mk, ok
}
