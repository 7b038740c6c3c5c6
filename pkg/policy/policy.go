// Package policy parses and validates the Warden policy file
// (/etc/warden/policy.yaml): the privileged targets, which groups may reach
// them, the L7 rules the proxy applies, which fields it masks, and how
// secrets are redacted from what Warden records.
//
// Parsing is strict. Unknown keys, wrong types, dangling references and
// invalid values are all errors, because a typo in a security policy must not
// silently disable a rule. Every error carries file:line:column, and Parse
// reports all the problems it finds at once rather than the first one.
// Parsing also fails closed against the agent: a rule, masking entry or
// target setting that the target's protocol codec cannot enforce is an
// error too (see Enforcement), never a setting silently not applied.
//
// The package does no I/O beyond reading the policy file: DNS names in target
// addresses are resolved by the agent, and credential files are read by the
// proxy when it dials, never here.
package policy

import "slices"

// Protocols a target can speak. The proxy picks its wire-protocol codec from
// this. What a protocol's targets may have beyond access depends on its
// codec (see Enforcement); "tcp" never has one: the agent only enforces
// access and records connections.
const (
	ProtocolPostgres = "postgres"
	ProtocolMySQL    = "mysql"
	ProtocolSSH      = "ssh"
	ProtocolHTTP     = "http"
	ProtocolHTTPS    = "https"
	ProtocolRedis    = "redis"
	ProtocolRDP      = "rdp"
	ProtocolTCP      = "tcp"
)

// protocols is the accepted set, in the order error messages list it.
var protocols = []string{ProtocolPostgres, ProtocolMySQL, ProtocolSSH, ProtocolHTTP, ProtocolHTTPS, ProtocolRedis, ProtocolRDP, ProtocolTCP}

// Action is what the proxy does when a rule matches.
type Action string

// Rule actions.
const (
	// Deny rejects the command with the protocol's own error message.
	Deny Action = "deny"
	// Review holds the command until a reviewer approves it.
	Review Action = "review"
	// Allow lets the command through; useful to exempt a narrow case ahead
	// of a broader deny, since the first matching rule wins.
	Allow Action = "allow"
)

var actions = []string{string(Deny), string(Review), string(Allow)}

// Policy is a parsed, validated policy file. Treat it as immutable: the
// watcher hands the same value to every consumer.
type Policy struct {
	// Targets are the privileged endpoints whose connections are redirected
	// to the proxy.
	Targets []Target
	// Access lists which groups may reach which targets at all.
	Access []Access
	// Rules are the L7 rules, in file order; the first match wins.
	Rules []Rule
	// Masking lists the fields the proxy masks in results.
	Masking []Masking
	// Redaction adds to and, for named groups, turns off the built-in
	// redaction of secrets in what Warden records (see pkg/redact).
	Redaction Redaction

	// Source names the file the policy came from, for log messages.
	Source string
	// Digest is the hex SHA-256 of the file's bytes. Events can carry it so
	// an auditor knows exactly which policy made a decision.
	Digest string
}

// Target is a privileged endpoint.
type Target struct {
	// Name identifies the target in access, rules, masking and events.
	Name string
	// Protocol is one of the Protocol* constants.
	Protocol string
	// Address is the endpoint as written in the file; see Endpoint for the
	// parsed form and ParseAddress for the accepted syntax.
	Address string
	// Credentials, when set, are injected upstream by the proxy.
	Credentials *Credentials
	// TLS says how the proxy secures the upstream hop, with or without
	// Credentials. The file may give it here or as credentials.tls, not
	// both; see UpstreamTLS.
	TLS UpstreamTLS
	// RDP is an rdp target's rdp block; see RDPSettings for the defaults.
	RDP *RDP
	// SSH is an ssh target's ssh block (see SSHTarget); nil when absent.
	SSH *SSHTarget
	// HTTP is an http or https target's http block; see HTTPSettings.
	HTTP *HTTP
}

// UpstreamTLS is how the proxy secures its connection to the target: the
// target's tls, or its credentials' tls. The zero value is TLSDisable.
func (t Target) UpstreamTLS() UpstreamTLS {
	if t.TLS.Mode == "" && t.Credentials != nil {
		return t.Credentials.TLS
	}
	return t.TLS
}

// Endpoint returns the parsed Address. It cannot fail for a target that came
// from Parse; the error exists for targets built by hand.
func (t Target) Endpoint() (Endpoint, error) {
	return ParseAddress(t.Address)
}

// Credentials name the upstream login the proxy injects. The password itself
// stays in PasswordFile and is read by the proxy when it dials, so that it is
// never held in a Policy value that might be logged or copied around.
type Credentials struct {
	Username     string
	PasswordFile string
	// KeyFile and UserCAKeyFile are an ssh target's alternatives to
	// PasswordFile: a private key to log in with, or a user CA key with
	// which the proxy signs a short-lived certificate per session.
	KeyFile, UserCAKeyFile string
	// TLS says how the proxy protects the upstream hop that carries the
	// injected login. The zero value is TLSDisable.
	TLS UpstreamTLS
	// ApplicationName is the template for the application_name the proxy
	// sets upstream (see ExpandApplicationName); "" means
	// DefaultApplicationName.
	ApplicationName string
	// Header and ValueFile are an http or https target's credential: the
	// request header the proxy sets upstream (canonical form), and the
	// file its value is read from at each request. Username and
	// PasswordFile are then empty.
	Header, ValueFile string
}

// TLSMode is how the proxy secures its connection to a target.
type TLSMode string

// TLS modes. There is deliberately no mode that encrypts without checking
// the server's certificate: it would protect only against passive
// eavesdroppers, while anyone who can intercept the hop could collect the
// vaulted credential's login (and every query) by presenting any
// certificate.
const (
	// TLSDisable speaks plain TCP upstream.
	TLSDisable TLSMode = "disable"
	// TLSRequire encrypts and checks that the server's certificate chains
	// to a trusted CA (CAFile, or the system roots), but not which host
	// it was issued to. Use it for servers whose certificates do not name
	// the address Warden dials; prefer TLSVerifyFull.
	TLSRequire TLSMode = "require"
	// TLSVerifyFull also checks that the certificate was issued to the
	// server: ServerName, or the target's host.
	TLSVerifyFull TLSMode = "verify-full"
)

var tlsModes = []string{string(TLSDisable), string(TLSRequire), string(TLSVerifyFull)}

// UpstreamTLS configures TLS from the proxy to a target.
type UpstreamTLS struct {
	// Mode is one of the TLS* constants; "" means TLSDisable.
	Mode TLSMode
	// CAFile is an absolute path to PEM CA certificates that the server's
	// chain must end in; "" means the system roots. Like PasswordFile it
	// is read by the proxy when it dials, so a rotated CA needs no reload.
	CAFile string
	// ServerName is the host name the certificate must be issued to in
	// TLSVerifyFull mode, and the SNI the proxy sends; "" means the
	// target's host (see Target.TLSServerName).
	ServerName string
}

// Enabled reports whether the proxy speaks TLS to the target.
func (t UpstreamTLS) Enabled() bool { return t.Mode != "" && t.Mode != TLSDisable }

// TLSServerName is the name the target's certificate must carry in
// verify-full mode: credentials.tls.server_name if set, else the DNS name
// or the IP address of the target's address. It returns "" when there is
// none, for a prefix target without server_name (Parse rejects that
// combination) or a target without credentials.
func (t Target) TLSServerName() string {
	if t.Credentials != nil && t.Credentials.TLS.ServerName != "" {
		return t.Credentials.TLS.ServerName
	}
	ep, err := t.Endpoint()
	switch {
	case err != nil:
		return ""
	case ep.IsName():
		return ep.Host
	case ep.Prefix.IsSingleIP():
		return ep.Prefix.Addr().String()
	}
	return ""
}

// Access grants the members of any of Groups the right to connect to any of
// Targets. Group names are compared exactly, as the IdP spells them.
//
// With Review set, the entry grants nothing by itself: a member gets
// connect() access to a target only inside a window that a review of
// theirs opened (just-in-time access).
type Access struct {
	Groups  []string
	Targets []string
	Review  *ReviewSpec
}

// Rule is an L7 rule: when a command to one of Targets matches When, the
// proxy applies Action, unless the identity is in one of ExceptGroups.
type Rule struct {
	Name         string
	Targets      []string
	When         Match
	Action       Action
	ExceptGroups []string
	// Review is the review block of an action: review rule.
	Review *ReviewSpec
}

// Exempt reports whether any of groups is in the rule's except_groups.
func (r Rule) Exempt(groups []string) bool { return intersects(r.ExceptGroups, groups) }

// Masking tells the proxy to mask result fields for Targets: whole columns
// by name, and any value a detector recognises, unless the identity is in
// one of ExceptGroups.
type Masking struct {
	Name      string
	Targets   []string
	Columns   []string
	Detectors []string
	// Keys are Redis key glob patterns (see MatchKey): a reply to a
	// command that reads a matching key is masked whole.
	Keys         []string
	ExceptGroups []string
}

// Exempt reports whether any of groups is in the masking's except_groups.
func (m Masking) Exempt(groups []string) bool { return intersects(m.ExceptGroups, groups) }

// Detectors that masking entries may name. The masking package implements
// them; the list lives here so the policy can be validated without it.
var detectors = []string{"email", "credit_card", "ssn", "iban", "phone", "jwt", "aws_access_key", "private_key"}

// Target returns the target called name.
func (p *Policy) Target(name string) (Target, bool) {
	for _, t := range p.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// TargetsFor returns the names of the targets that members of any of groups
// may reach through access entries without a review, in the order the targets are declared.
// It returns nil when the groups reach nothing.
func (p *Policy) TargetsFor(groups []string) []string {
	allowed := make(map[string]bool)
	for _, a := range p.Access {
		if a.Review == nil && intersects(a.Groups, groups) {
			for _, t := range a.Targets {
				allowed[t] = true
			}
		}
	}
	var names []string
	for _, t := range p.Targets {
		if allowed[t.Name] {
			names = append(names, t.Name)
		}
	}
	return names
}

// RulesFor returns the rules that apply to target, in file order, so the
// caller can apply the first match.
func (p *Policy) RulesFor(target string) []Rule {
	var rules []Rule
	for _, r := range p.Rules {
		if slices.Contains(r.Targets, target) {
			rules = append(rules, r)
		}
	}
	return rules
}

// MaskingFor returns the masking entries that apply to target, in file order.
func (p *Policy) MaskingFor(target string) []Masking {
	var ms []Masking
	for _, m := range p.Masking {
		if slices.Contains(m.Targets, target) {
			ms = append(ms, m)
		}
	}
	return ms
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
