package policy

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Capability is one thing a protocol codec can enforce.
//
// The policy file can express more than the agent enforces: only some
// protocols have a codec, and a codec may implement part of the language.
// Parse rejects every rule, masking entry and target setting that needs a
// capability the target's codec lacks, because a setting that is accepted
// but not applied is the worst outcome for a security policy: the author
// believes something is protected that is not (fail open).
type Capability string

// Capabilities, named as error messages show them.
const (
	// CapStatements is when.statements: matching SQL statement keywords.
	CapStatements Capability = "statements"
	// CapTables is when.tables: matching the tables a statement touches.
	CapTables Capability = "tables"
	// CapFunctions is when.functions: matching the functions a statement
	// calls.
	CapFunctions Capability = "functions"
	// CapNoWhere is when.no_where: matching UPDATE and DELETE without WHERE.
	CapNoWhere Capability = "no_where"
	// CapCommands is when.commands: matching protocol commands (Redis
	// commands, SSH exec programs, HTTP methods).
	CapCommands Capability = "commands"
	// CapReview is action: review: holding a command until a reviewer
	// approves it. Without a reviewer the codec refuses the command.
	CapReview Capability = "review"
	// CapColumnMasking is masking.columns: masking result columns by name.
	CapColumnMasking Capability = "column masking"
	// CapContentMasking is masking.detectors: masking any result value a
	// detector recognises.
	CapContentMasking Capability = "content masking"
	// CapCredentials is targets[].credentials: injecting a vaulted login
	// upstream.
	CapCredentials Capability = "credentials"
	// CapUpstreamTLS is targets[].tls and targets[].credentials.tls: TLS
	// from the proxy to the target.
	CapUpstreamTLS Capability = "upstream tls"
)

// Enforcement says, per target protocol (a Protocol* constant), what that
// protocol's codec enforces. A protocol that is absent has no codec: its
// targets take access only (the kernel's connect() check), and any rule,
// masking entry, credentials or tls on them is a parse error.
//
// The agent builds it from its codec registry, so the policy accepts
// exactly what the running binary can enforce. A nil Enforcement means no
// codec at all: the strictest reading, never "anything goes".
type Enforcement map[string][]Capability

// Has reports whether the codec for protocol enforces c. It is false for a
// protocol without a codec, and for every protocol of a nil Enforcement.
func (e Enforcement) Has(protocol string, c Capability) bool {
	return slices.Contains(e[protocol], c)
}

// hasAny reports whether the codec for protocol enforces any of cs.
func (e Enforcement) hasAny(protocol string, cs []Capability) bool {
	for _, c := range cs {
		if e.Has(protocol, c) {
			return true
		}
	}
	return false
}

// conditionCaps are the capabilities of the rule conditions under "when",
// in the order of matchKeys. A codec with none of them never looks at
// individual commands, so no rule can apply on its targets.
func conditionCaps() []Capability {
	cs := make([]Capability, len(matchKeys))
	for i, k := range matchKeys {
		cs[i] = k.capability
	}
	return cs
}

// enforces checks that the codec of a target enforces c, and reports at n
// when it does not (or when protocol has no codec at all). subject names
// the target in the message, where says which part of the policy n is.
// A target whose protocol was invalid ("") is skipped: it has its own
// error already.
func (d *decoder) enforces(n *yaml.Node, where, subject, protocol string, c Capability) bool {
	if protocol == "" || d.enf.Has(protocol, c) {
		return true
	}
	d.unenforced(n, where, subject, protocol, string(c))
	return false
}

// unenforced reports that nothing enforces what on protocol's targets.
func (d *decoder) unenforced(n *yaml.Node, where, subject, protocol, what string) {
	d.errorf(n, "%s", at(where, fmt.Sprintf("%s is %s, and no codec enforces %s on %s targets (%s)",
		subject, protocol, what, protocol, d.enforcedOn(protocol))))
}

// enforcedOn says what protocol's targets do get, to end an error message:
// the operator learns what the policy can say there instead.
func (d *decoder) enforcedOn(protocol string) string {
	caps, ok := d.enf[protocol]
	switch {
	case !ok && protocol == ProtocolTCP:
		return "tcp targets are relayed as raw bytes and take access only"
	case !ok:
		return protocol + " targets take access only until one does"
	case len(caps) == 0:
		return "the " + protocol + " codec enforces access only"
	}
	names := make([]string, len(caps))
	for i, c := range caps {
		names[i] = string(c)
	}
	return fmt.Sprintf("the %s codec enforces %s", protocol, strings.Join(names, ", "))
}

// targetSubject names target t in a message about a rule or masking entry.
func targetSubject(t string) string { return fmt.Sprintf("target %q", t) }

// thisTarget names the target in a message about one of its own keys,
// which are already prefixed with the target's name.
const thisTarget = "this target"
