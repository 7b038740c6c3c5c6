package policy

import (
	"reflect"
	"testing"
)

const lookupPolicy = `
targets:
  - {name: a, protocol: postgres, address: "10.0.0.1:5432"}
  - {name: b, protocol: redis, address: "10.0.0.2:6379"}
  - {name: c, protocol: ssh, address: "10.0.0.3:22"}
  - {name: d, protocol: tcp, address: "10.0.0.4:9000"}
access:
  - {groups: [eng, sre], targets: [c, a]}
  - {groups: [sre], targets: [b, a]}
  - {groups: [ops], targets: [d]}
rules:
  - {name: r1, targets: [a, b], when: {}, action: review, review: {approvers: [ops]}, except_groups: [dba]}
  - {name: r2, targets: [c], when: {commands: [rm]}, action: deny}
  - {name: r3, targets: [a], when: {statements: [drop]}, action: deny}
masking:
  - {name: m1, targets: [a], columns: [ssn]}
  - {name: m2, targets: [b, a], detectors: [email], except_groups: [pii]}
`

func mustParse(t *testing.T, doc string) *Policy {
	t.Helper()
	p, err := Parse([]byte(doc), "test.yaml", allCodecs)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestTargetsFor(t *testing.T) {
	p := mustParse(t, lookupPolicy)
	tests := []struct {
		groups []string
		want   []string
	}{
		{nil, nil},
		{[]string{"nobody"}, nil},
		{[]string{"eng"}, []string{"a", "c"}},
		{[]string{"sre"}, []string{"a", "b", "c"}},
		{[]string{"ops", "eng"}, []string{"a", "c", "d"}},
		{[]string{"ENG"}, nil}, // group names are compared exactly
	}
	for _, tt := range tests {
		if got := p.TargetsFor(tt.groups); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("TargetsFor(%q) = %q, want %q", tt.groups, got, tt.want)
		}
	}
}

func TestTargetLookup(t *testing.T) {
	p := mustParse(t, lookupPolicy)
	got, ok := p.Target("b")
	if !ok || got.Protocol != ProtocolRedis || got.Address != "10.0.0.2:6379" {
		t.Errorf("Target(b) = %+v, %v", got, ok)
	}
	if got, ok := p.Target("z"); ok {
		t.Errorf("Target(z) = %+v, true", got)
	}
}

func TestRulesAndMaskingFor(t *testing.T) {
	p := mustParse(t, lookupPolicy)
	names := func(rs []Rule) (n []string) {
		for _, r := range rs {
			n = append(n, r.Name)
		}
		return n
	}
	if got := names(p.RulesFor("a")); !reflect.DeepEqual(got, []string{"r1", "r3"}) {
		t.Errorf("RulesFor(a) = %q", got)
	}
	if got := names(p.RulesFor("d")); got != nil {
		t.Errorf("RulesFor(d) = %q", got)
	}
	var ms []string
	for _, m := range p.MaskingFor("a") {
		ms = append(ms, m.Name)
	}
	if !reflect.DeepEqual(ms, []string{"m1", "m2"}) {
		t.Errorf("MaskingFor(a) = %q", ms)
	}
	r1 := p.RulesFor("a")[0]
	if !r1.Exempt([]string{"eng", "dba"}) || r1.Exempt([]string{"eng"}) || r1.Exempt(nil) {
		t.Error("Rule.Exempt is wrong")
	}
	m2 := p.MaskingFor("b")[0]
	if !m2.Exempt([]string{"pii"}) || m2.Exempt([]string{"eng"}) {
		t.Error("Masking.Exempt is wrong")
	}
}
