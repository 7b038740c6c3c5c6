package policy

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseProductExample(t *testing.T) {
	p, err := Load("testdata/product.yaml", pgOnly)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Policy{
		Targets: []Target{{
			Name: "orders-db", Protocol: "postgres", Address: "10.0.0.5:5432",
			Credentials: &Credentials{Username: "app", PasswordFile: "/etc/warden/secrets/orders-db"},
		}},
		Access: []Access{{Groups: []string{"engineering"}, Targets: []string{"orders-db"}},
			{Groups: []string{"contractors"}, Targets: []string{"orders-db"}, Review: &ReviewSpec{Approvers: []string{"dba"}, Require: RequireAny, GrantFor: time.Hour}}},
		Rules: []Rule{{
			Name: "no-ddl", Targets: []string{"orders-db"},
			When:   Match{Statements: []string{"drop", "truncate", "alter"}},
			Action: Deny, ExceptGroups: []string{"dba"},
		}, {
			Name: "unbounded-writes", Targets: []string{"orders-db"},
			When:   Match{Statements: []string{"update", "delete"}, NoWhere: true},
			Action: Review,
			Review: &ReviewSpec{Approvers: []string{"dba", "security"}, Require: RequireAny, Hold: 2 * time.Minute, GrantOnce: true},
		}},
		Masking: []Masking{{
			Name: "pii", Targets: []string{"orders-db"},
			Columns:      []string{"email", "ssn", "card_number"},
			Detectors:    []string{"email", "credit_card", "ssn", "iban", "phone", "jwt", "aws_access_key", "private_key"},
			ExceptGroups: []string{"pii-readers"},
		}},
		Source: "testdata/product.yaml",
		Digest: p.Digest,
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", p, want)
	}
	if len(p.Digest) != 64 {
		t.Errorf("Digest = %q, want 64 hex digits", p.Digest)
	}
}

// The shipped example must stay valid as the format evolves, and hold
// nothing that today's agent (PostgreSQL the only codec) does not enforce.
func TestParseDeployExample(t *testing.T) {
	p, err := Load(filepath.Join("..", "..", "deploy", "examples", "policy.yaml"), pgOnly)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(p.Targets) == 0 || len(p.Rules) == 0 || len(p.Masking) == 0 || len(p.Access) == 0 {
		t.Errorf("example policy is missing a section: %+v", p)
	}
	// Its non-postgres targets are there to show access-only targets.
	protos := make(map[string]bool)
	for _, tg := range p.Targets {
		protos[tg.Protocol] = true
	}
	if len(protos) < 3 || !protos[ProtocolPostgres] || !protos[ProtocolTCP] {
		t.Errorf("example policy covers protocols %v; want postgres, tcp and others", protos)
	}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, p *Policy)
		enf   Enforcement // nil means pgOnly
	}{
		{"no targets", "targets: []\n", func(t *testing.T, p *Policy) {
			if len(p.Targets) != 0 {
				t.Errorf("Targets = %v", p.Targets)
			}
		}, nil},
		{"empty sections", "targets: []\naccess: []\nrules: []\nmasking: []\n", nil, nil},
		{"statements lower-cased", `
targets: [{name: db, protocol: postgres, address: "db.internal:5432"}]
rules:
  - {name: r, targets: [db], when: {statements: [DROP, Truncate]}, action: review, review: {approvers: [dba]}}
`, func(t *testing.T, p *Policy) {
			if got := p.Rules[0].When.Statements; !reflect.DeepEqual(got, []string{"drop", "truncate"}) {
				t.Errorf("Statements = %v", got)
			}
			if p.Rules[0].Action != Review {
				t.Errorf("Action = %q", p.Rules[0].Action)
			}
		}, nil},
		{"every sql condition", `
targets: [{name: db, protocol: postgres, address: "10.0.0.0/24:5432"}]
rules:
  - name: r
    targets: [db]
    when: {statements: [update, delete], tables: [public.users], functions: [PG_READ_FILE, pg_catalog.lo_export], no_where: true}
    action: deny
`, func(t *testing.T, p *Policy) {
			want := Match{
				Statements: []string{"update", "delete"}, Tables: []string{"public.users"},
				Functions: []string{"pg_read_file", "pg_catalog.lo_export"}, NoWhere: true,
			}
			if !reflect.DeepEqual(p.Rules[0].When, want) {
				t.Errorf("When = %+v, want %+v", p.Rules[0].When, want)
			}
		}, nil},
		{"commands for redis ssh http", `
targets:
  - {name: cache, protocol: redis, address: "[2001:db8::/64]:6379"}
  - {name: jump, protocol: ssh, address: "Jump.Example.COM.:22"}
  - {name: api, protocol: http, address: "[2001:db8::1]:8080"}
rules:
  - {name: r, targets: [cache, jump, api], when: {commands: [flushall, rm, DELETE]}, action: deny}
`, func(t *testing.T, p *Policy) {
			if got := p.Rules[0].When.Commands; !reflect.DeepEqual(got, []string{"flushall", "rm", "DELETE"}) {
				t.Errorf("Commands = %v", got)
			}
		}, allCodecs},
		{"access-only targets of every protocol", `
targets:
  - {name: my, protocol: mysql, address: "10.0.0.2:3306"}
  - {name: jump, protocol: ssh, address: "10.0.0.3:22"}
  - {name: api, protocol: http, address: "api.internal:80"}
  - {name: apis, protocol: https, address: "api.internal:443"}
  - {name: cache, protocol: redis, address: "10.0.0.5:6379"}
  - {name: desk, protocol: rdp, address: "[2001:db8::/64]:3389"}
  - {name: raw, protocol: tcp, address: "10.0.0.7:9000"}
access:
  - {groups: [eng], targets: [my, jump, api, apis, cache, desk, raw]}
`, func(t *testing.T, p *Policy) {
			got := make([]string, len(p.Targets))
			for i, tg := range p.Targets {
				got[i] = tg.Protocol
			}
			want := []string{ProtocolMySQL, ProtocolSSH, ProtocolHTTP, ProtocolHTTPS, ProtocolRedis, ProtocolRDP, ProtocolTCP}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("protocols = %v, want %v", got, want)
			}
			if ep, err := p.Targets[5].Endpoint(); err != nil || ep.Port != 3389 || ep.Prefix.Bits() != 64 {
				t.Errorf("rdp endpoint = %+v, %v", ep, err)
			}
		}, nil},
		{"empty when matches everything", `
targets: [{name: db, protocol: postgres, address: "10.0.0.5:5432"}]
rules: [{name: all, targets: [db], when: {}, action: review, review: {approvers: [dba]}}]
`, func(t *testing.T, p *Policy) {
			if !p.Rules[0].When.IsZero() {
				t.Errorf("When = %+v, want zero", p.Rules[0].When)
			}
		}, nil},
		{"anchors and aliases", `
targets:
  - {name: a, protocol: postgres, address: "10.0.0.1:5432"}
  - {name: b, protocol: postgres, address: "10.0.0.2:5432"}
access:
  - groups: &eng [engineering, sre]
    targets: &dbs [a, b]
rules:
  - {name: r, targets: *dbs, when: {statements: [drop]}, action: deny, except_groups: *eng}
`, func(t *testing.T, p *Policy) {
			if got := p.Rules[0].ExceptGroups; !reflect.DeepEqual(got, []string{"engineering", "sre"}) {
				t.Errorf("ExceptGroups = %v", got)
			}
		}, nil},
		{"masking with detectors only", `
targets: [{name: api, protocol: http, address: "api.internal:443"}]
masking: [{name: m, targets: [api], detectors: [jwt]}]
`, nil, allCodecs},
		{"credentials on ssh", `
targets:
  - name: jump
    protocol: ssh
    address: jump.internal:22
    credentials: {username: ops, password_file: /etc/warden/secrets/jump}
`, func(t *testing.T, p *Policy) {
			if c := p.Targets[0].Credentials; c == nil || c.Username != "ops" {
				t.Errorf("Credentials = %+v", c)
			}
		}, allCodecs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enf := tt.enf
			if enf == nil {
				enf = pgOnly
			}
			p, err := Parse([]byte(tt.yaml), "policy.yaml", enf)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

// base declares one target of each kind the bad cases refer to; cases
// append to it, so their own lines start at 11.
const base = `targets:
  - name: db
    protocol: postgres
    address: 10.0.0.5:5432
  - name: cache
    protocol: redis
    address: cache.internal:6379
  - name: raw
    protocol: tcp
    address: 10.0.0.9:9000
`

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must be in its own error line, and no other errors
	}{
		// Whole file.
		{"empty", "", []string{`policy.yaml: policy is empty`}},
		{"only comments", "# nothing yet\n", []string{`policy.yaml: policy is empty`}},
		{"syntax: flow list", "targets:\n  - name: [db\n", []string{`policy.yaml:2: invalid YAML: did not find expected ',' or ']'`}},
		{"syntax: block list", "targets:\n  - name: db\n  protocol: postgres\n", []string{`policy.yaml:2: invalid YAML: did not find expected '-' indicator`}},
		{"syntax: tab", "targets:\n\t- name: db\n", []string{`policy.yaml:2: invalid YAML: found character that cannot start any token`}},
		{"syntax: mapping value", "targets: []\naccess: a: b\n", []string{`policy.yaml:2: invalid YAML: mapping values are not allowed`}},
		{"two documents", "targets: []\n---\ntargets: []\n", []string{`policy.yaml:2: more than one YAML document`}},
		{"root is a list", "- targets\n", []string{`policy.yaml:1:1: policy: want a mapping, got a list`}},
		{"unknown top-level key", base + "rule: []\n", []string{`policy.yaml:11:1: policy: unknown key "rule"`}},
		{"missing targets", "access: []\n", []string{`policy.yaml:1:1: policy: missing required key "targets"`}},
		{"targets not a list", "targets: {name: db}\n", []string{`policy.yaml:1:10: targets: want a list, got a mapping`}},
		{"null sections", "targets:\nrules:\n", []string{
			`policy.yaml:1:9: targets: want a list, got null (write targets: [] for none)`,
			`policy.yaml:2:7: rules: want a list, got null`,
		}},
		{"repeated top-level key", "targets: []\ntargets: []\n", []string{`policy.yaml:2:1: policy: key "targets" is repeated (first at line 1)`}},

		// Targets.
		{"bad protocol", "targets:\n  - name: orders-db\n    protocol: mongo\n    address: 10.0.0.5:5432\n",
			[]string{`policy.yaml:3:15: target "orders-db": protocol "mongo" is not one of postgres, mysql, ssh, http, https, redis, rdp, tcp`}},
		{"protocol case", "targets:\n  - name: db\n    protocol: Postgres\n    address: 10.0.0.5:5432\n",
			[]string{`policy.yaml:3:15: target "db": protocol "Postgres" is not one of`}},
		{"misspelt key", "targets:\n  - name: db\n    protocol: postgres\n    adress: 10.0.0.5:5432\n", []string{
			`policy.yaml:2:5: target "db": missing required key "address"`,
			`policy.yaml:4:5: target "db": unknown key "adress" (want one of name, protocol, address, credentials, tls, rdp, http, ssh)`,
		}},
		{"missing name", "targets:\n  - protocol: postgres\n    address: 10.0.0.5:5432\n",
			[]string{`policy.yaml:2:5: targets[0]: missing required key "name"`}},
		{"bad name", "targets:\n  - name: Orders DB\n    protocol: postgres\n    address: 10.0.0.5:5432\n",
			[]string{`policy.yaml:2:11: target "Orders DB": name "Orders DB" must be lower-case letters`}},
		{"empty name", "targets:\n  - name: \"\"\n    protocol: postgres\n    address: 10.0.0.5:5432\n",
			[]string{`policy.yaml:2:11: targets[0]: name must not be empty`}},
		{"name not a string", "targets:\n  - name: [db]\n    protocol: postgres\n    address: 10.0.0.5:5432\n",
			[]string{`policy.yaml:2:11: targets[0]: name: want a string, got a list`}},
		{"duplicate target", base + "  - name: db\n    protocol: mysql\n    address: 10.0.0.6:3306\n",
			[]string{`policy.yaml:11:11: target "db": name "db" is already used by the target at line 2`}},
		{"duplicate address", base + "  - name: db2\n    protocol: postgres\n    address: 10.0.0.5:5432\n",
			[]string{`policy.yaml:13:14: target "db2": address 10.0.0.5:5432 is already used by target "db" (line 4)`}},
		{"address without port", "targets:\n  - name: db\n    protocol: postgres\n    address: 10.0.0.5\n",
			[]string{`policy.yaml:4:14: target "db": address "10.0.0.5": missing :port`}},
		{"address host bits", "targets:\n  - name: db\n    protocol: postgres\n    address: 10.0.0.5/24:5432\n",
			[]string{`policy.yaml:4:14: target "db": address "10.0.0.5/24:5432": prefix "10.0.0.5/24" has host bits set; did you mean 10.0.0.0/24?`}},
		{"address null", "targets:\n  - name: db\n    protocol: postgres\n    address:\n",
			[]string{`policy.yaml:4:13: target "db": address: want a string, got null`}},
		{"repeated key", "targets:\n  - name: db\n    protocol: postgres\n    protocol: mysql\n    address: 10.0.0.5:5432\n",
			[]string{`policy.yaml:4:5: target "db": key "protocol" is repeated (first at line 3)`}},
		{"target not a mapping", "targets:\n  - db\n", []string{`policy.yaml:2:5: targets[0]: want a mapping, got "db"`}},
		{"relative password file", "targets:\n  - name: db\n    protocol: postgres\n    address: 10.0.0.5:5432\n    credentials:\n      username: app\n      password_file: secrets/db\n",
			[]string{`policy.yaml:7:22: target "db": credentials: password_file "secrets/db" must be an absolute path`}},
		{"credentials missing username", "targets:\n  - name: db\n    protocol: postgres\n    address: 10.0.0.5:5432\n    credentials:\n      password_file: /s\n",
			[]string{`policy.yaml:6:7: target "db": credentials: missing required key "username"`}},
		{"credentials on tcp", "targets:\n  - name: raw\n    protocol: tcp\n    address: 10.0.0.9:9000\n    credentials: {username: a, password_file: /s}\n",
			[]string{`policy.yaml:5:5: target "raw": credentials: this target is tcp, and no codec enforces credentials on tcp targets`}},

		// Access.
		{"access unknown target", base + "access:\n  - groups: [eng]\n    targets: [db, orders]\n",
			[]string{`policy.yaml:13:19: access[0]: unknown target "orders" (not declared under targets)`}},
		{"access groups scalar", base + "access:\n  - groups: eng\n    targets: [db]\n",
			[]string{`policy.yaml:12:13: access[0]: groups: want a list of strings, got "eng" (write [eng] for one item)`}},
		{"access empty groups", base + "access:\n  - groups: []\n    targets: [db]\n",
			[]string{`policy.yaml:12:13: access[0]: groups must not be an empty list`}},
		{"access missing targets", base + "access:\n  - groups: [eng]\n",
			[]string{`policy.yaml:12:5: access[0]: missing required key "targets"`}},
		{"access misspelt key", base + "access:\n  - group: [eng]\n    targets: [db]\n", []string{
			`policy.yaml:12:5: access[0]: unknown key "group" (want one of groups, targets, review)`,
			`policy.yaml:12:5: access[0]: missing required key "groups"`,
		}},
		{"access review without grant", base + "access:\n  - groups: [eng]\n    targets: [db]\n    review: {approvers: [dba]}\n",
			[]string{`policy.yaml:14:13: access[0]: review: missing required key "grant"`}},
		{"access review grant once", base + "access:\n  - groups: [eng]\n    targets: [db]\n    review: {approvers: [dba], grant: once}\n",
			[]string{`policy.yaml:14:39: access[0]: review: grant "once" is not a duration (write e.g. 90s, 2m, 1h)`}},
		{"access review holds", base + "access:\n  - groups: [eng]\n    targets: [db]\n    review: {approvers: [dba], grant: 1h, hold: 2m}\n",
			[]string{`policy.yaml:14:49: access[0]: review: hold: an access review cannot hold a connect(); leave hold out or write 0s`}},
		{"review without block", base + "rules:\n  - name: r\n    targets: [db]\n    when: {statements: [delete]}\n    action: review\n",
			[]string{`policy.yaml:12:5: rule "r": action: review needs a review block naming its approvers (review: {approvers: [GROUP]})`}},
		{"review block on deny", base + "rules:\n  - name: r\n    targets: [db]\n    when: {statements: [delete]}\n    action: deny\n    review: {approvers: [dba]}\n",
			[]string{`policy.yaml:16:5: rule "r": review: only a rule with action: review has a review block (this one's action is deny)`}},
		{"review bad require", base + "rules:\n  - name: r\n    targets: [db]\n    when: {statements: [delete]}\n    action: review\n    review: {approvers: [dba], require: most}\n",
			[]string{`policy.yaml:16:41: rule "r": review: require "most" is not one of any, all`}},
		{"review empty approvers", base + "rules:\n  - name: r\n    targets: [db]\n    when: {statements: [delete]}\n    action: review\n    review: {approvers: []}\n",
			[]string{`policy.yaml:16:25: rule "r": review: approvers must not be an empty list`}},
		{"review hold too long", base + "rules:\n  - name: r\n    targets: [db]\n    when: {statements: [delete]}\n    action: review\n    review: {approvers: [dba], hold: 2h}\n",
			[]string{`policy.yaml:16:38: rule "r": review: hold 2h0m0s is outside 0s to 30m0s`}},
		{"review misspelt key", base + "rules:\n  - name: r\n    targets: [db]\n    when: {statements: [delete]}\n    action: review\n    review: {approver: [dba]}\n", []string{
			`policy.yaml:16:13: rule "r": review: missing required key "approvers"`,
			`policy.yaml:16:14: rule "r": review: unknown key "approver" (want one of approvers, require, hold, grant)`,
		}},
		{"access null group", base + "access:\n  - groups: [eng, ~]\n    targets: [db]\n",
			[]string{`policy.yaml:12:19: access[0]: groups: want a string, got null`}},

		// Rules.
		{"bad action", base + "rules:\n  - name: r\n    targets: [db]\n    when: {statements: [drop]}\n    action: block\n",
			[]string{`policy.yaml:15:13: rule "r": action "block" is not one of deny, review, allow`}},
		{"misspelt statement", base + "rules:\n  - name: r\n    targets: [db]\n    when: {statements: [drop, trunacte]}\n    action: deny\n",
			[]string{`policy.yaml:14:31: rule "r": when: statements: "trunacte" is not a SQL statement keyword`}},
		{"misspelt condition", base + "rules:\n  - name: r\n    targets: [db]\n    when: {statement: [drop]}\n    action: deny\n",
			[]string{`policy.yaml:14:12: rule "r": when: unknown key "statement" (want one of statements, tables, functions, no_where, commands, methods, paths, upgrade)`}},
		{"statements on redis", base + "rules:\n  - name: r\n    targets: [db, cache]\n    when: {statements: [drop]}\n    action: deny\n",
			[]string{`policy.yaml:14:12: rule "r": when: statements: target "cache" is redis, and no codec enforces statements on redis targets`}},
		{"commands on postgres", base + "rules:\n  - name: r\n    targets: [db]\n    when: {commands: [flushall]}\n    action: deny\n",
			[]string{`policy.yaml:14:12: rule "r": when: commands: target "db" is postgres, and no codec enforces commands on postgres targets`}},
		{"rule on tcp", base + "rules:\n  - name: r\n    targets: [raw]\n    when: {}\n    action: deny\n",
			[]string{`policy.yaml:13:15: rule "r": target "raw" is tcp, and no codec enforces rules on tcp targets`}},
		{"rule unknown target", base + "rules:\n  - name: r\n    targets: [dbx]\n    when: {}\n    action: deny\n",
			[]string{`policy.yaml:13:15: rule "r": unknown target "dbx"`}},
		{"duplicate rule", base + "rules:\n  - {name: r, targets: [db], when: {}, action: deny}\n  - {name: r, targets: [db], when: {}, action: allow}\n",
			[]string{`policy.yaml:13:12: rule "r": name "r" is already used by the rule at line 12`}},
		{"missing when", base + "rules:\n  - name: r\n    targets: [db]\n    action: deny\n",
			[]string{`policy.yaml:12:5: rule "r": missing required key "when"`}},
		{"when not a mapping", base + "rules:\n  - name: r\n    targets: [db]\n    when: [drop]\n    action: deny\n",
			[]string{`policy.yaml:14:11: rule "r": when: want a mapping, got a list`}},
		{"no_where not bool", base + "rules:\n  - {name: r, targets: [db], when: {no_where: yes}, action: deny}\n",
			[]string{`policy.yaml:12:47: rule "r": when: no_where: want true or false, got "yes"`}},
		{"no_where false", base + "rules:\n  - {name: r, targets: [db], when: {no_where: false}, action: deny}\n",
			[]string{`policy.yaml:12:47: rule "r": when: no_where: false is not a condition`}},
		{"empty statements", base + "rules:\n  - {name: r, targets: [db], when: {statements: []}, action: deny}\n",
			[]string{`policy.yaml:12:49: rule "r": when: statements must not be an empty list`}},
		{"function with parens", base + "rules:\n  - {name: r, targets: [db], when: {functions: [\"pg_read_file()\"]}, action: deny}\n",
			[]string{`policy.yaml:12:49: rule "r": when: functions: "pg_read_file()" is not a function name`}},
		{"rule name invalid", base + "rules:\n  - {name: No DDL, targets: [db], when: {}, action: deny}\n",
			[]string{`policy.yaml:12:12: rule "No DDL": name "No DDL" must be lower-case`}},

		// Masking.
		{"unknown detector", base + "masking:\n  - name: m\n    targets: [db]\n    detectors: [email, passport]\n",
			[]string{`policy.yaml:14:24: masking "m": detector "passport" is not one of email, credit_card, ssn, iban, phone, jwt, aws_access_key, private_key`}},
		{"columns on redis", base + "masking:\n  - name: m\n    targets: [cache]\n    columns: [email]\n",
			[]string{`policy.yaml:14:5: masking "m": columns: target "cache" is redis, and no codec enforces column masking on redis targets`}},
		{"masking on tcp", base + "masking:\n  - name: m\n    targets: [raw]\n    detectors: [email]\n",
			[]string{`policy.yaml:14:5: masking "m": detectors: target "raw" is tcp, and no codec enforces content masking on tcp targets`}},
		{"masks nothing", base + "masking:\n  - name: m\n    targets: [db]\n",
			[]string{`policy.yaml:12:5: masking "m": masks nothing: give columns, detectors or both`}},
		{"masking misspelt key", base + "masking:\n  - name: m\n    targets: [db]\n    column: [email]\n", []string{
			`policy.yaml:12:5: masking "m": masks nothing`,
			`policy.yaml:14:5: masking "m": unknown key "column"`,
		}},
		{"duplicate masking", base + "masking:\n  - {name: m, targets: [db], columns: [a]}\n  - {name: m, targets: [db], columns: [b]}\n",
			[]string{`policy.yaml:13:12: masking "m": name "m" is already used by the masking entry at line 12`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.yaml), "policy.yaml", pgOnly)
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want errors %q", p, tt.want)
			}
			if p != nil {
				t.Errorf("Parse returned a policy along with the error")
			}
			checkErrors(t, err, tt.want)
		})
	}
}

// checkErrors asserts that err has exactly one line per want, each
// containing the corresponding want, in order.
func checkErrors(t *testing.T, err error, want []string) {
	t.Helper()
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("error %d = %q\n        want it to contain %q", i, lines[i], w)
		}
	}
	if got := Errors(err); len(got) != len(want) {
		t.Errorf("Errors returned %d errors, want %d", len(got), len(want))
	}
}

func TestParseReportsAllErrors(t *testing.T) {
	const doc = `rules:
  - name: r
    targets: [nope]
    when: {statements: [dorp]}
    action: maybe
targets:
  - name: db
    protocol: oracle
    address: db:0
access:
  - groups: [eng]
    targets: [db, other]
masking:
  - name: m
    targets: [db]
    detectors: [dna]
`
	_, err := Parse([]byte(doc), "p.yaml", pgOnly)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	// Rules come before targets in the file and are still checked against
	// them; the errors come out in file order.
	checkErrors(t, err, []string{
		`p.yaml:3:15: rule "r": unknown target "nope"`,
		`p.yaml:4:25: rule "r": when: statements: "dorp"`,
		`p.yaml:5:13: rule "r": action "maybe"`,
		`p.yaml:8:15: target "db": protocol "oracle"`,
		`p.yaml:9:14: target "db": address "db:0": port "0" is not a number from 1 to 65535`,
		`p.yaml:12:19: access[0]: unknown target "other"`,
		`p.yaml:16:17: masking "m": detector "dna"`,
	})
	var pe *Error
	if !errors.As(err, &pe) || pe.Source != "p.yaml" || pe.Line != 3 || pe.Column != 15 {
		t.Errorf("errors.As first *Error = %+v", pe)
	}
}

func TestParseDoesNotEchoSecrets(t *testing.T) {
	// Someone pastes the password instead of a file name. The value must
	// not end up in the agent's log via the error.
	const doc = base + `  - name: x
    protocol: mysql
    address: 10.0.0.7:3306
    credentials: {username: app, password: hunter2-secret}
`
	_, err := Parse([]byte(doc), "policy.yaml", allCodecs)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error reveals the secret: %v", err)
	}
	checkErrors(t, err, []string{
		`policy.yaml:14:18: target "x": credentials: missing required key "password_file"`,
		`policy.yaml:14:34: target "x": credentials: unknown key "password"`,
	})
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path, pgOnly)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(missing) = %v, want a not-exist error naming %s", err, path)
	}
}

func TestLoadTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, pgOnly); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v, want a size error", err)
	}
}
