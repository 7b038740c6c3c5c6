package policy

import (
	"reflect"
	"testing"
)

func TestParseRedaction(t *testing.T) {
	const yaml = `targets: []
redaction:
  binaries:
    - names: [vault, acmectl]
      flags: [-token, --license, -k, "/p:"]
      kind: license
    - names: [mytool]
      flags: [--login-key]
  patterns:
    - name: acme-key
      regex: 'acme_[A-Za-z0-9]{32}'
    - name: pin
      regex: 'pin: (\d+)'
      kind: pin-code
  exemptions:
    - name: forensics
      groups: [incident-response]
      builtins: [all]
      reason: "IR-2024-17: responders must see command lines verbatim"
    - name: dba-sql
      groups: [dba]
      builtins: [sql, keyvalue]
      reason: DBAs audit password rotation scripts
`
	p, err := Parse([]byte(yaml), "policy.yaml", pgOnly)
	if err != nil {
		t.Fatal(err)
	}
	r := p.Redaction
	if want := []RedactionBinary{
		{Names: []string{"vault", "acmectl"}, Flags: []string{"-token", "--license", "-k", "/p:"}, Kind: "license"},
		{Names: []string{"mytool"}, Flags: []string{"--login-key"}},
	}; !reflect.DeepEqual(r.Binaries, want) {
		t.Errorf("Binaries = %+v", r.Binaries)
	}
	if len(r.Patterns) != 2 || r.Patterns[0].Name != "acme-key" || r.Patterns[0].Kind != "" || r.Patterns[1].Kind != "pin-code" ||
		r.Patterns[1].Regexp == nil || r.Patterns[1].Regexp.String() != `pin: (\d+)` || r.Patterns[1].Regex != `pin: (\d+)` {
		t.Errorf("Patterns = %+v", r.Patterns)
	}
	if want := []RedactionExemption{
		{Name: "forensics", Groups: []string{"incident-response"}, Builtins: []string{"all"}, Reason: "IR-2024-17: responders must see command lines verbatim"},
		{Name: "dba-sql", Groups: []string{"dba"}, Builtins: []string{"sql", "keyvalue"}, Reason: "DBAs audit password rotation scripts"},
	}; !reflect.DeepEqual(r.Exemptions, want) {
		t.Errorf("Exemptions = %+v", r.Exemptions)
	}
	if !r.Exemptions[1].Applies([]string{"eng", "dba"}) || r.Exemptions[1].Applies([]string{"eng"}) {
		t.Error("Applies")
	}
}

// Without the section, nothing is added and nothing is turned off.
func TestParseNoRedaction(t *testing.T) {
	p, err := Parse([]byte("targets: []\n"), "policy.yaml", pgOnly)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.Redaction, Redaction{}) {
		t.Fatalf("Redaction = %+v", p.Redaction)
	}
}

func TestParseRedactionErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"not a mapping", "targets: []\nredaction: [a]\n", []string{`policy.yaml:2:12: redaction: want a mapping, got a list`}},
		{"unknown key", "targets: []\nredaction:\n  binary: []\n", []string{`policy.yaml:3:3: redaction: unknown key "binary" (want one of binaries, patterns, exemptions)`}},
		{"invalid regex", "targets: []\nredaction:\n  patterns:\n    - name: p\n      regex: 'a(b'\n",
			[]string{`policy.yaml:5:14: redaction pattern "p": regex "a(b": error parsing regexp: missing closing ): ` + "`a(b`"}},
		{"regex matches empty", "targets: []\nredaction:\n  patterns:\n    - name: p\n      regex: 'x*'\n",
			[]string{`policy.yaml:5:14: redaction pattern "p": regex "x*" matches the empty string`}},
		{"pattern without regex", "targets: []\nredaction:\n  patterns:\n    - name: p\n",
			[]string{`policy.yaml:4:7: redaction pattern "p": missing required key "regex"`}},
		{"duplicate pattern", "targets: []\nredaction:\n  patterns:\n    - {name: p, regex: a}\n    - {name: p, regex: b}\n",
			[]string{`policy.yaml:5:14: redaction pattern "p": name "p" is already used by the redaction pattern at line 4`}},
		{"bad kind", "targets: []\nredaction:\n  patterns:\n    - {name: p, regex: a, kind: 'Bad Kind'}\n",
			[]string{`policy.yaml:4:33: redaction pattern "p": kind "Bad Kind" must be lower-case letters`}},
		{"binary with a path", "targets: []\nredaction:\n  binaries:\n    - {names: [/usr/bin/vault], flags: [-token]}\n",
			[]string{`policy.yaml:4:16: redaction.binaries[0]: name "/usr/bin/vault": give the program's name as run`}},
		{"flag with a value", "targets: []\nredaction:\n  binaries:\n    - {names: [vault], flags: [--token=x, token]}\n", []string{
			`policy.yaml:4:32: redaction.binaries[0]: flag "--token=x": write it as typed`,
			`policy.yaml:4:43: redaction.binaries[0]: flag "token": write it as typed`,
		}},
		{"binary without flags", "targets: []\nredaction:\n  binaries:\n    - {names: [vault]}\n",
			[]string{`policy.yaml:4:7: redaction.binaries[0]: missing required key "flags"`}},
		{"unknown builtin", "targets: []\nredaction:\n  exemptions:\n    - {name: x, groups: [ir], builtins: [sql, passwords], reason: r}\n",
			[]string{`policy.yaml:4:47: redaction exemption "x": builtin "passwords" is not all or one of url, keyvalue, env, flags, clients, headers, sql, jwt, aws_access_key, private_key, credit_card`}},
		{"exemption without reason", "targets: []\nredaction:\n  exemptions:\n    - {name: x, groups: [ir], builtins: [all]}\n",
			[]string{`policy.yaml:4:7: redaction exemption "x": missing required key "reason"`}},
		{"blank reason", "targets: []\nredaction:\n  exemptions:\n    - {name: x, groups: [ir], builtins: [all], reason: ' '}\n",
			[]string{`policy.yaml:4:56: redaction exemption "x": reason must say why`}},
		{"exemption without groups", "targets: []\nredaction:\n  exemptions:\n    - {name: x, groups: [], builtins: [all], reason: r}\n",
			[]string{`policy.yaml:4:25: redaction exemption "x": groups must not be an empty list`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.yaml), "policy.yaml", pgOnly)
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want errors %q", p, tt.want)
			}
			checkErrors(t, err, tt.want)
		})
	}
}
