// Package redact keeps secrets out of everything Warden records: process
// arguments (every process.* event and every ancestor copy), SSH exec
// command lines, HTTP request targets and log lines. It is the one place
// every producer calls; codecs do not keep rules of their own.
//
// A secret is replaced by a marker that names its kind, "[redacted:KIND]",
// and everything around it stays, so a command stays attributable:
//
//	psql 'host=db user=app password=[redacted:password]'
//	mysql -uroot -p[redacted:password] -e 'select 1'
//	curl -u alice:[redacted:password] -H 'Authorization: Bearer [redacted:token]' https://api
//
// The built-in rules (see Builtins) know connection strings and URLs,
// secret-named flags, key/value pairs and environment assignments, the
// secret options of common clients (mysql -pSECRET, sshpass -p, redis-cli
// -a, curl -u, htpasswd -b), HTTP authorization headers, SQL password
// literals, and reuse pkg/masking's content detectors for JWTs, AWS access
// keys, PEM private keys and card numbers. Shell command lines (sh -c,
// su -c, ssh's remote command) are split into words and redacted as
// commands of their own. The policy's redaction: section adds programs with
// their flags and argument patterns, and may turn built-ins off for named
// groups (see policy.Redaction).
//
// Redaction is idempotent, never modifies its input, and costs little for
// arguments that hold nothing: every rule starts with a cheap check.
package redact

import (
	"regexp"
	"slices"
	"strings"

	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/policy"
)

// Names of the built-in rules, as the policy's redaction exemptions name
// them. policy.RedactionBuiltins lists the same names.
const (
	// BuiltinURL: the password in scheme://user:password@host, and a
	// token used as the user (https://TOKEN@github.com).
	BuiltinURL = "url"
	// BuiltinKeyValue: values of secret-named keys in key=value text:
	// libpq connection strings, JDBC and ODBC (;password=), query
	// strings, form data, Java properties, JSON fields.
	BuiltinKeyValue = "keyvalue"
	// BuiltinEnv: NAME=value arguments and shell assignments whose name
	// is secret (PGPASSWORD, MYSQL_PWD, AWS_SECRET_ACCESS_KEY).
	BuiltinEnv = "env"
	// BuiltinFlags: values of secret-named flags (--password, --token,
	// --api-key, --client-secret), as --flag=value and --flag value.
	BuiltinFlags = "flags"
	// BuiltinClients: the secret options and operands of known programs
	// (mysql -pSECRET, sshpass -p, redis-cli -a, curl -u, htpasswd -b).
	BuiltinClients = "clients"
	// BuiltinHeaders: HTTP authorization, cookie and secret-named headers.
	BuiltinHeaders = "headers"
	// BuiltinSQL: password literals in SQL (PASSWORD '…', IDENTIFIED BY
	// '…', SET PASSWORD … = '…').
	BuiltinSQL = "sql"
	// BuiltinJWT and the three below are pkg/masking's content
	// detectors, applied to every argument: JSON Web Tokens.
	BuiltinJWT = "jwt"
	// BuiltinAWSAccessKey: AWS access key ids (AKIA…, ASIA…).
	BuiltinAWSAccessKey = "aws_access_key"
	// BuiltinPrivateKey: PEM private keys, to their END line or the end.
	BuiltinPrivateKey = "private_key"
	// BuiltinCreditCard: card numbers whose Luhn digit checks.
	BuiltinCreditCard = "credit_card"
)

// rule indexes the built-ins in a bit set.
type rule uint8

const (
	ruleURL rule = iota
	ruleKeyValue
	ruleEnv
	ruleFlags
	ruleClients
	ruleHeaders
	ruleSQL
	ruleJWT
	ruleAWSAccessKey
	rulePrivateKey
	ruleCreditCard
	numRules
)

var ruleNames = [numRules]string{BuiltinURL, BuiltinKeyValue, BuiltinEnv, BuiltinFlags, BuiltinClients,
	BuiltinHeaders, BuiltinSQL, BuiltinJWT, BuiltinAWSAccessKey, BuiltinPrivateKey, BuiltinCreditCard}

// detectors are the masking detectors the rules reuse, by rule.
var detectors = func() map[rule]*masking.Detector {
	m := map[rule]*masking.Detector{}
	for r := ruleJWT; r < numRules; r++ {
		d, ok := masking.Lookup(ruleNames[r])
		if !ok {
			panic("redact: masking has no detector " + ruleNames[r])
		}
		m[r] = d
	}
	return m
}()

// Builtins returns the names of the built-in rules, in the order they
// apply.
func Builtins() []string { return slices.Clone(ruleNames[:]) }

// Redactor applies the built-in rules and those a policy adds. It is
// immutable and safe for concurrent use; a nil *Redactor applies the
// built-ins alone.
type Redactor struct {
	// binaries are the programs the policy adds flags for.
	binaries map[string]*client
	patterns []pattern
	// exemptions turn built-ins off for groups.
	exemptions []exemption
}

type pattern struct {
	name string
	re   *regexp.Regexp
	kind string
}

type exemption struct {
	name   string
	groups []string
	off    uint16
}

// Default returns a Redactor with the built-in rules alone.
func Default() *Redactor { return nil }

// New returns a Redactor for a policy's redaction section. The section was
// validated by the policy parser: flags, kinds and exemption names are
// well formed and regular expressions compiled.
func New(cfg policy.Redaction) *Redactor {
	r := &Redactor{binaries: map[string]*client{}}
	for _, b := range cfg.Binaries {
		kind := b.Kind
		if kind == "" {
			kind = policy.DefaultRedactionKind
		}
		for _, name := range b.Names {
			c := r.binaries[name]
			if c == nil {
				c = &client{}
				r.binaries[name] = c
			}
			for _, f := range b.Flags {
				// /p:VALUE has its value attached only; -x, --long and
				// -long take it attached or as the next argument.
				c.opts = append(c.opts, option{flag: f, attached: true, separate: !strings.HasSuffix(f, ":"), kind: kind})
			}
		}
	}
	for _, p := range cfg.Patterns {
		if p.Regexp == nil {
			continue
		}
		kind := p.Kind
		if kind == "" {
			kind = p.Name
		}
		r.patterns = append(r.patterns, pattern{name: p.Name, re: p.Regexp, kind: kind})
	}
	for _, e := range cfg.Exemptions {
		x := exemption{name: e.Name, groups: e.Groups}
		for _, b := range e.Builtins {
			if b == policy.RedactionAll {
				x.off = 1<<numRules - 1
				continue
			}
			if i := slices.Index(ruleNames[:], b); i >= 0 {
				x.off |= 1 << i
			}
		}
		r.exemptions = append(r.exemptions, x)
	}
	return r
}

// Result says what a redaction did.
type Result struct {
	// Changed is set when something was redacted.
	Changed bool
	// Exemptions names the policy exemptions that applied to the groups:
	// the built-ins they turn off were not applied. Callers record it
	// with the text, so a reader knows the text was left verbatim on
	// purpose, and by which entry.
	Exemptions []string
}

// config is a Redactor as it applies to one set of groups.
type config struct {
	r   *Redactor
	off uint16
}

func (c *config) on(r rule) bool { return c.off&(1<<r) == 0 }

func (r *Redactor) config(groups []string) (*config, []string) {
	c := &config{r: r}
	if r == nil {
		return c, nil
	}
	var names []string
	for _, e := range r.exemptions {
		if slices.ContainsFunc(e.groups, func(g string) bool { return slices.Contains(groups, g) }) {
			c.off |= e.off
			names = append(names, e.name)
		}
	}
	return c, names
}

// client returns what is known of the program called name: the built-in
// rules (unless turned off) and the policy's flags.
func (c *config) client(name string) (builtin, added *client) {
	if c.on(ruleClients) {
		builtin = clients[name]
	}
	if c.r != nil {
		added = c.r.binaries[name]
	}
	return builtin, added
}

// maxPasses bounds the passes to a fixed point. One pass settles every
// real command line; a second confirms it. The bound is for pathological
// input, where a later pass may still find a match an earlier replacement
// uncovered.
const maxPasses = 8

// Args redacts a process's arguments. binary is the executable's path (it
// names the program when argv[0] does not); groups are the groups of the
// person behind the process, for the policy's exemptions. The returned
// slice is args itself when nothing changed, and a new one otherwise;
// args is never modified.
func (r *Redactor) Args(binary string, args []string, groups []string) ([]string, Result) {
	c, ex := r.config(groups)
	out := args
	res := Result{Exemptions: ex}
	for range maxPasses {
		next, changed := c.argv(binary, out, 0)
		if !changed {
			break
		}
		out, res.Changed = next, true
	}
	return out, res
}

// CommandLine redacts a command line a shell will run, such as an SSH exec
// request: it is split into commands and words as a shell would, each
// command is redacted as Args redacts a process's arguments, and changed
// words are put back quoted.
func (r *Redactor) CommandLine(line string, groups []string) (string, Result) {
	c, ex := r.config(groups)
	res := Result{Exemptions: ex}
	for range maxPasses {
		next := c.commandLine(line, 0)
		next = c.content(next, false, 0)
		if next == line {
			break
		}
		line, res.Changed = next, true
	}
	return line, res
}

// Text redacts free text with every rule that reads text, with no
// exemptions: log messages, error texts, HTTP request targets (the
// userinfo of a URL, secret-named query parameters and any value a
// detector recognises).
func (r *Redactor) Text(s string) string {
	c := &config{r: r}
	for range maxPasses {
		next := c.content(s, false, 0)
		if next == s {
			break
		}
		s = next
	}
	return s
}
