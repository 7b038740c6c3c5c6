package policy

import (
	"strings"
	"testing"
)

// pgOnly mirrors what the agent enforces today: the PostgreSQL codec, and
// no other. Tests use it wherever they are about the policy as shipped.
var pgOnly = Enforcement{
	ProtocolPostgres: {
		CapStatements, CapTables, CapFunctions, CapNoWhere, CapReview,
		CapColumnMasking, CapContentMasking, CapCredentials, CapUpstreamTLS,
	},
}

// allCodecs gives every protocol but tcp a codec that enforces every
// capability, for tests about the policy language rather than about what
// the agent enforces today.
var allCodecs = func() Enforcement {
	all := []Capability{
		CapStatements, CapTables, CapFunctions, CapNoWhere, CapCommands, CapReview,
		CapColumnMasking, CapContentMasking, CapCredentials, CapUpstreamTLS,
	}
	e := make(Enforcement)
	for _, p := range protocols {
		if p != ProtocolTCP {
			e[p] = all
		}
	}
	return e
}()

func TestEnforcementHas(t *testing.T) {
	e := Enforcement{ProtocolPostgres: {CapStatements}, ProtocolMySQL: {}}
	tests := []struct {
		e        Enforcement
		protocol string
		c        Capability
		want     bool
	}{
		{e, ProtocolPostgres, CapStatements, true},
		{e, ProtocolPostgres, CapReview, false},
		{e, ProtocolMySQL, CapStatements, false}, // a codec that enforces nothing yet
		{e, ProtocolRedis, CapStatements, false}, // no codec
		{e, "", CapStatements, false},
		{nil, ProtocolPostgres, CapStatements, false},
		{pgOnly, ProtocolPostgres, CapCommands, false},
		{pgOnly, ProtocolPostgres, CapColumnMasking, true},
	}
	for _, tt := range tests {
		if got := tt.e.Has(tt.protocol, tt.c); got != tt.want {
			t.Errorf("%v.Has(%q, %q) = %v, want %v", tt.e, tt.protocol, tt.c, got, tt.want)
		}
	}
}

// One target of each protocol; cases append to it, so their own lines
// start at 13 (rule cases) or 14 (masking cases, after "rules: []").
const capBase = `targets:
  - {name: db, protocol: postgres, address: "10.0.0.1:5432"}
  - {name: my, protocol: mysql, address: "10.0.0.2:3306"}
  - {name: jump, protocol: ssh, address: "10.0.0.3:22"}
  - {name: api, protocol: http, address: "10.0.0.4:80"}
  - {name: apis, protocol: https, address: "10.0.0.4:443"}
  - {name: cache, protocol: redis, address: "10.0.0.5:6379"}
  - {name: desk, protocol: rdp, address: "10.0.0.6:3389"}
  - {name: raw, protocol: tcp, address: "10.0.0.7:9000"}
access:
  - {groups: [eng], targets: [db, my, jump, api, apis, cache, desk, raw]}
rules:
`

// The message tail for a protocol without a codec.
func accessOnly(p string) string {
	return "(" + p + " targets take access only until one does)"
}

const pgTail = "(the postgres codec enforces statements, tables, functions, no_where, review, column masking, content masking, credentials, upstream tls)"

// Every capability the policy language needs is checked, at the most
// precise node, against the PostgreSQL-only enforcement.
func TestParseCapabilityErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"statements on mysql", "  - name: r\n    targets: [my]\n    when: {statements: [drop]}\n    action: deny\n",
			[]string{`policy.yaml:15:12: rule "r": when: statements: target "my" is mysql, and no codec enforces statements on mysql targets ` + accessOnly("mysql")}},
		{"tables on mysql", "  - name: r\n    targets: [my]\n    when: {tables: [payments]}\n    action: deny\n",
			[]string{`policy.yaml:15:12: rule "r": when: tables: target "my" is mysql, and no codec enforces tables on mysql targets`}},
		{"functions on mysql", "  - name: r\n    targets: [my]\n    when: {functions: [load_file]}\n    action: deny\n",
			[]string{`policy.yaml:15:12: rule "r": when: functions: target "my" is mysql, and no codec enforces functions on mysql targets`}},
		{"no_where on mysql", "  - name: r\n    targets: [my]\n    when: {statements: [update], no_where: true}\n    action: deny\n", []string{
			`policy.yaml:15:12: rule "r": when: statements: target "my" is mysql`,
			`policy.yaml:15:34: rule "r": when: no_where: target "my" is mysql, and no codec enforces no_where on mysql targets`,
		}},
		{"commands on redis", "  - name: no-flush\n    targets: [cache]\n    when: {commands: [flushall]}\n    action: deny\n",
			[]string{`policy.yaml:15:12: rule "no-flush": when: commands: target "cache" is redis, and no codec enforces commands on redis targets ` + accessOnly("redis")}},
		{"commands on ssh http https", "  - name: r\n    targets: [jump, api, apis]\n    when: {commands: [rm]}\n    action: deny\n", []string{
			`policy.yaml:15:12: rule "r": when: commands: target "jump" is ssh`,
			`policy.yaml:15:12: rule "r": when: commands: target "api" is http`,
			`policy.yaml:15:12: rule "r": when: commands: target "apis" is https, and no codec enforces commands on https targets ` + accessOnly("https"),
		}},
		{"commands on postgres", "  - name: r\n    targets: [db]\n    when: {commands: [flushall]}\n    action: deny\n",
			[]string{`policy.yaml:15:12: rule "r": when: commands: target "db" is postgres, and no codec enforces commands on postgres targets ` + pgTail}},
		{"only the unenforced target is named", "  - name: r\n    targets: [db, cache]\n    when: {statements: [drop]}\n    action: deny\n",
			[]string{`policy.yaml:15:12: rule "r": when: statements: target "cache" is redis`}},
		{"empty when on rdp", "  - name: r\n    targets: [db, desk]\n    when: {}\n    action: deny\n",
			[]string{`policy.yaml:14:19: rule "r": target "desk" is rdp, and no codec enforces rules on rdp targets ` + accessOnly("rdp")}},
		{"empty when on tcp", "  - name: r\n    targets: [raw]\n    when: {}\n    action: allow\n",
			[]string{`policy.yaml:14:15: rule "r": target "raw" is tcp, and no codec enforces rules on tcp targets (tcp targets are relayed as raw bytes and take access only)`}},
		{"review on redis", "  - name: r\n    targets: [db, cache]\n    when: {}\n    action: review\n    review: {approvers: [dba]}\n", []string{
			`policy.yaml:14:19: rule "r": target "cache" is redis, and no codec enforces rules on redis targets`,
			`policy.yaml:16:13: rule "r": action: target "cache" is redis, and no codec enforces review on redis targets ` + accessOnly("redis"),
		}},
		{"columns on redis", "masking:\n  - name: m\n    targets: [db, cache]\n    columns: [email]\n",
			[]string{`policy.yaml:17:5: masking "m": columns: target "cache" is redis, and no codec enforces column masking on redis targets ` + accessOnly("redis")}},
		{"detectors on http", "masking:\n  - name: m\n    targets: [api]\n    detectors: [jwt]\n",
			[]string{`policy.yaml:17:5: masking "m": detectors: target "api" is http, and no codec enforces content masking on http targets`}},
		{"both on mysql", "masking:\n  - name: m\n    targets: [my]\n    columns: [ssn]\n    detectors: [ssn]\n", []string{
			`policy.yaml:17:5: masking "m": columns: target "my" is mysql, and no codec enforces column masking`,
			`policy.yaml:18:5: masking "m": detectors: target "my" is mysql, and no codec enforces content masking`,
		}},
		{"masking on tcp", "masking:\n  - name: m\n    targets: [raw]\n    detectors: [email]\n",
			[]string{`policy.yaml:17:5: masking "m": detectors: target "raw" is tcp, and no codec enforces content masking on tcp targets (tcp targets are relayed as raw bytes and take access only)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := capBase + tt.yaml
			if strings.HasPrefix(tt.yaml, "masking:") {
				doc = capBase + "  []\n" + tt.yaml
			}
			p, err := Parse([]byte(doc), "policy.yaml", pgOnly)
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want errors %q", p, tt.want)
			}
			checkErrors(t, err, tt.want)
		})
	}
}

// tgt is a target of protocol with the given extra keys, indented under
// it; extra's first line is line 5.
func tgt(protocol, address, extra string) string {
	return "targets:\n  - name: t\n    protocol: " + protocol + "\n    address: " + address + "\n" + extra
}

const creds = "    credentials:\n      username: app\n      password_file: /etc/warden/secrets/t\n"

func TestParseTargetCapabilityErrors(t *testing.T) {
	tests := []struct {
		name string
		enf  Enforcement
		yaml string
		want []string
	}{
		{"credentials on mysql", pgOnly, tgt("mysql", "10.0.0.5:3306", creds),
			[]string{`policy.yaml:5:5: target "t": credentials: this target is mysql, and no codec enforces credentials on mysql targets ` + accessOnly("mysql")}},
		{"credentials on ssh", pgOnly, tgt("ssh", "10.0.0.5:22", creds),
			[]string{`policy.yaml:5:5: target "t": credentials: this target is ssh, and no codec enforces credentials on ssh targets`}},
		{"credentials on tcp", pgOnly, tgt("tcp", "10.0.0.5:22", creds),
			[]string{`policy.yaml:5:5: target "t": credentials: this target is tcp, and no codec enforces credentials on tcp targets (tcp targets are relayed as raw bytes and take access only)`}},
		{"tls on mysql", pgOnly, tgt("mysql", "10.0.0.5:3306", "    tls: {mode: require}\n"),
			[]string{`policy.yaml:5:5: target "t": tls: this target is mysql, and no codec enforces upstream tls on mysql targets ` + accessOnly("mysql")}},
		{"tls on tcp", pgOnly, tgt("tcp", "10.0.0.5:9000", "    tls: {mode: require}\n"),
			[]string{`policy.yaml:5:5: target "t": tls: this target is tcp, and no codec enforces upstream tls on tcp targets`}},
		{"credentials and their tls on https", pgOnly, tgt("https", "api.internal:443", creds+"      tls: {mode: verify-full}\n"), []string{
			`policy.yaml:5:5: target "t": credentials: this target is https, and no codec enforces credentials on https targets`,
			`policy.yaml:8:7: target "t": credentials: tls: this target is https, and no codec enforces upstream tls on https targets`,
		}},
		// A codec may implement part of the language; the message then
		// lists what it does enforce.
		{"credentials without tls", Enforcement{ProtocolMySQL: {CapCredentials}}, tgt("mysql", "10.0.0.5:3306", creds+"      tls: {mode: require}\n"),
			[]string{`policy.yaml:8:7: target "t": credentials: tls: this target is mysql, and no codec enforces upstream tls on mysql targets (the mysql codec enforces credentials)`}},
		{"application_name is PostgreSQL's", Enforcement{ProtocolMySQL: {CapCredentials}}, tgt("mysql", "10.0.0.5:3306", creds+"      application_name: \"{sub}\"\n"),
			[]string{`policy.yaml:8:7: target "t": credentials: application_name is a PostgreSQL setting; this target is mysql`}},
		{"application_name reported once without credentials", pgOnly, tgt("mysql", "10.0.0.5:3306", creds+"      application_name: \"{sub}\"\n"),
			[]string{`policy.yaml:5:5: target "t": credentials: this target is mysql, and no codec enforces credentials`}},
		{"a codec with no capabilities", Enforcement{ProtocolRedis: nil}, tgt("redis", "10.0.0.5:6379", "    tls: {mode: require}\n"),
			[]string{`policy.yaml:5:5: target "t": tls: this target is redis, and no codec enforces upstream tls on redis targets (the redis codec enforces access only)`}},
		{"review without CapReview", Enforcement{ProtocolMySQL: {CapStatements}},
			tgt("mysql", "10.0.0.5:3306", "rules:\n  - {name: r, targets: [t], when: {statements: [drop]}, action: review, review: {approvers: [dba]}}\n"),
			[]string{`policy.yaml:6:65: rule "r": action: target "t" is mysql, and no codec enforces review on mysql targets (the mysql codec enforces statements)`}},
		{"empty when needs a condition capability", Enforcement{ProtocolSSH: {CapCredentials}},
			tgt("ssh", "10.0.0.5:22", "rules:\n  - {name: r, targets: [t], when: {}, action: deny}\n"),
			[]string{`policy.yaml:6:25: rule "r": target "t" is ssh, and no codec enforces rules on ssh targets (the ssh codec enforces credentials)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.yaml), "policy.yaml", tt.enf)
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want errors %q", p, tt.want)
			}
			checkErrors(t, err, tt.want)
		})
	}
}

// What a codec declares is accepted on its targets: the checks above
// reject for the missing capability, not for the protocol.
func TestParseAcceptsDeclaredCapabilities(t *testing.T) {
	doc := capBase + `  - {name: no-flush, targets: [cache], when: {commands: [flushall]}, action: review, review: {approvers: [dba]}}
  - {name: no-rm, targets: [jump], when: {commands: [rm]}, action: deny}
  - {name: all-rdp, targets: [desk], when: {}, action: review, review: {approvers: [dba]}}
masking:
  - {name: m, targets: [api, apis], detectors: [jwt]}
`
	enf := Enforcement{
		ProtocolRedis: {CapCommands, CapReview},
		ProtocolSSH:   {CapCommands},
		ProtocolRDP:   {CapCommands, CapReview},
		ProtocolHTTP:  {CapContentMasking},
		ProtocolHTTPS: {CapContentMasking},
	}
	p, err := Parse([]byte(doc), "policy.yaml", enf)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(p.Rules) != 3 || len(p.Masking) != 1 {
		t.Errorf("got %d rules, %d masking entries; want 3, 1", len(p.Rules), len(p.Masking))
	}
	// The same file against today's agent fails on every one of them.
	_, err = Parse([]byte(doc), "policy.yaml", pgOnly)
	checkErrors(t, err, []string{
		`policy.yaml:13:47: rule "no-flush": when: commands: target "cache" is redis`,
		`policy.yaml:13:78: rule "no-flush": action: target "cache" is redis`,
		`policy.yaml:14:43: rule "no-rm": when: commands: target "jump" is ssh`,
		`policy.yaml:15:31: rule "all-rdp": target "desk" is rdp, and no codec enforces rules`,
		`policy.yaml:15:56: rule "all-rdp": action: target "desk" is rdp, and no codec enforces review`,
		`policy.yaml:17:37: masking "m": detectors: target "api" is http`,
		`policy.yaml:17:37: masking "m": detectors: target "apis" is https`,
	})
}

// nil means no codec at all: access only, for every protocol.
func TestParseNilEnforcement(t *testing.T) {
	accessOnlyDoc := `targets:
  - {name: db, protocol: postgres, address: "10.0.0.1:5432"}
  - {name: raw, protocol: tcp, address: "10.0.0.7:9000"}
access:
  - {groups: [eng], targets: [db, raw]}
rules: []
masking: []
`
	p, err := Parse([]byte(accessOnlyDoc), "policy.yaml", nil)
	if err != nil {
		t.Fatalf("Parse of an access-only policy: %v", err)
	}
	if len(p.Targets) != 2 || len(p.Access) != 1 {
		t.Errorf("got %+v", p)
	}

	for _, tt := range []struct{ name, extra, want string }{
		{"deny rule", "rules:\n  - {name: r, targets: [db], when: {statements: [drop]}, action: deny}\n",
			`policy.yaml:7:37: rule "r": when: statements: target "db" is postgres, and no codec enforces statements on postgres targets ` + accessOnly("postgres")},
		{"allow everything", "rules:\n  - {name: r, targets: [db], when: {}, action: allow}\n",
			`policy.yaml:7:25: rule "r": target "db" is postgres, and no codec enforces rules on postgres targets`},
		{"masking", "masking:\n  - {name: m, targets: [db], columns: [ssn]}\n",
			`policy.yaml:7:30: masking "m": columns: target "db" is postgres, and no codec enforces column masking`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(accessOnlyDoc, "rules: []\nmasking: []\n", "", 1) + tt.extra
			_, err := Parse([]byte(doc), "policy.yaml", nil)
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			checkErrors(t, err, []string{tt.want})
		})
	}
	_, err = Parse([]byte(tgt("postgres", "10.0.0.5:5432", creds)), "policy.yaml", nil)
	if err == nil {
		t.Fatal("Parse accepted credentials with nil Enforcement")
	}
	checkErrors(t, err, []string{`policy.yaml:5:5: target "t": credentials: this target is postgres, and no codec enforces credentials`})
}
