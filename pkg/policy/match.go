package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Match is the condition of a rule (the "when" key). Every condition that is
// set must hold for the rule to match; a list condition holds when any of
// its elements does. An empty Match (when: {}) matches every command.
//
// Each condition needs a Capability, and a rule that uses a condition on a
// target whose codec does not enforce it is rejected (see Enforcement): a
// condition that is never checked would silently leave the rule unapplied.
// To add a condition, add a field here, a Capability and a row to
// matchKeys; codecs then declare the capability when they implement it.
type Match struct {
	// Statements are SQL statement keywords (select, drop, ...), stored in
	// lower case; the SQL codecs compare case-insensitively.
	Statements []string
	// Tables are table names, optionally schema-qualified, as written.
	Tables []string
	// Functions are SQL function names (pg_read_file, ...), stored in
	// lower case.
	Functions []string
	// NoWhere matches UPDATE and DELETE statements without a WHERE clause.
	NoWhere bool
	// Commands are protocol commands: Redis command names, the program an
	// SSH exec request runs, or HTTP request methods, as written; the codec
	// for each protocol defines how it compares them.
	Commands []string
	// Methods, Paths and Upgrade are the HTTP conditions: request
	// methods (upper case), canonical path patterns and upgrade
	// protocols (lower case); see MatchesHTTP.
	Methods, Paths, Upgrade []string
}

// IsZero reports whether m has no conditions, so it matches everything.
func (m Match) IsZero() bool {
	return len(m.Statements) == 0 && len(m.Tables) == 0 && len(m.Functions) == 0 && !m.NoWhere && len(m.Commands) == 0 &&
		len(m.Methods) == 0 && len(m.Paths) == 0 && len(m.Upgrade) == 0
}

// matchKey describes one condition under "when".
type matchKey struct {
	name string
	// capability is what a target's codec must enforce for the condition
	// to be used on that target.
	capability Capability
	// decode parses and validates the value into m, reporting problems
	// through d, and says whether it succeeded.
	decode func(d *decoder, e entry, where string, m *Match) bool
}

// matchKeys is the table of conditions, in the order messages list them.
var matchKeys = []matchKey{
	{"statements", CapStatements, func(d *decoder, e entry, where string, m *Match) bool {
		ok := true
		for _, it := range d.list(e, where, true) {
			s := strings.ToLower(it.value)
			if !slices.Contains(sqlStatements, s) {
				d.errorf(it.node, "%s", at(where, fmt.Sprintf("statements: %q is not a SQL statement keyword (see docs/policy.md for the list)", it.value)))
				ok = false
				continue
			}
			m.Statements = append(m.Statements, s)
		}
		return ok && m.Statements != nil
	}},
	{"tables", CapTables, func(d *decoder, e entry, where string, m *Match) bool {
		ok := true
		for _, it := range d.list(e, where, true) {
			if strings.ContainsAny(it.value, " \t\r\n") {
				d.errorf(it.node, "%s", at(where, fmt.Sprintf("tables: %q contains white space", it.value)))
				ok = false
				continue
			}
			m.Tables = append(m.Tables, it.value)
		}
		return ok && m.Tables != nil
	}},
	{"functions", CapFunctions, func(d *decoder, e entry, where string, m *Match) bool {
		ok := true
		for _, it := range d.list(e, where, true) {
			s := strings.ToLower(it.value)
			if !sqlIdentRE.MatchString(s) {
				d.errorf(it.node, "%s", at(where, fmt.Sprintf("functions: %q is not a function name (write it without parentheses)", it.value)))
				ok = false
				continue
			}
			m.Functions = append(m.Functions, s)
		}
		return ok && m.Functions != nil
	}},
	{"no_where", CapNoWhere, func(d *decoder, e entry, where string, m *Match) bool {
		v := resolve(e.val)
		if v.Tag != "!!bool" {
			d.errorf(v, "%s", at(where, fmt.Sprintf("no_where: want true or false, got %s", kindName(v))))
			return false
		}
		if v.Value != "true" {
			// Alone it would leave "when" empty, and an empty "when"
			// matches every statement: the opposite of what it reads as.
			d.errorf(v, "%s", at(where, "no_where: false is not a condition; remove the key"))
			return false
		}
		m.NoWhere = true
		return true
	}},
	{"commands", CapCommands, func(d *decoder, e entry, where string, m *Match) bool {
		m.Commands = values(d.list(e, where, true))
		return m.Commands != nil
	}},
	{"methods", CapMethods, decodeMethods},
	{"paths", CapPaths, decodePaths},
	{"upgrade", CapUpgrade, decodeUpgrade},
}

// sqlIdentRE matches a possibly schema-qualified SQL function name.
var sqlIdentRE = regexp.MustCompile(`^[a-z_][a-z0-9_$]*(\.[a-z_][a-z0-9_$]*)?$`)

// sqlStatements are the statement keywords a rule may name: the first
// keyword of PostgreSQL and MySQL statements. Anything else is rejected
// because a misspelt keyword would make the rule never match.
var sqlStatements = []string{
	"select", "insert", "update", "delete", "merge", "replace", "values", "table",
	"create", "alter", "drop", "truncate", "rename", "comment",
	"grant", "revoke",
	"copy", "load", "import",
	"call", "do", "execute", "prepare", "deallocate",
	"begin", "start", "commit", "rollback", "savepoint", "release", "end", "abort",
	"set", "reset", "show", "explain", "describe", "desc", "use",
	"analyze", "vacuum", "reindex", "cluster", "refresh", "checkpoint",
	"lock", "unlock", "listen", "notify", "unlisten", "discard",
	"flush", "kill", "optimize", "repair", "check", "checksum",
	"install", "uninstall", "shutdown", "handler",
}

// match decodes a "when" mapping for a rule over targets, and checks that
// the codec of every target enforces each condition used; those problems
// are reported at the condition's key.
func (d *decoder) match(e entry, where string, targets []item) (Match, bool) {
	where += ": when"
	names := make([]string, len(matchKeys))
	for i, k := range matchKeys {
		names[i] = k.name
	}
	fields, ok := d.mapping(e.val, where, names...)
	if !ok {
		return Match{}, false
	}
	var m Match
	for _, k := range matchKeys {
		f, found := fields[k.name]
		if !found {
			continue
		}
		ok = k.decode(d, f, where, &m) && ok
		for _, t := range targets {
			ok = d.enforces(f.key, where+": "+k.name, targetSubject(t.value), d.targets[t.value], k.capability) && ok
		}
	}
	return m, ok
}
