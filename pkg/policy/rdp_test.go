package policy

import (
	"strings"
	"testing"
	"time"
)

func TestRDPBlock(t *testing.T) {
	enf := Enforcement{ProtocolRDP: {CapRDPSession}}
	p, err := Parse([]byte(`targets:
  - {name: desk, protocol: rdp, address: "10.0.0.9:3389"}
  - name: kiosk
    protocol: rdp
    address: "10.0.0.10:3389"
    rdp: { require_nla: false, max_duration: 2h }
  - {name: lab, protocol: rdp, address: "10.0.0.11:3389", rdp: {max_duration: 30m}}
`), "policy.yaml", enf)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]RDP{"desk": {RequireNLA: true}, "kiosk": {MaxDuration: 2 * time.Hour}, "lab": {RequireNLA: true, MaxDuration: 30 * time.Minute}}
	for name, w := range want {
		tgt, _ := p.Target(name)
		if got := tgt.RDPSettings(); got != w {
			t.Errorf("%s: %+v, want %+v", name, got, w)
		}
	}
	for name, tt := range map[string]struct {
		enf       Enforcement
		proto, rd string
		want      string
	}{
		"on postgres":     {Enforcement{ProtocolPostgres: nil}, "postgres", "{require_nla: true}", "only rdp targets have an rdp block; this target is postgres"},
		"no codec":        {nil, "rdp", "{require_nla: true}", "no codec enforces rdp session control on rdp targets"},
		"not a bool":      {enf, "rdp", "{require_nla: maybe}", `require_nla: want true or false, got "maybe"`},
		"bad duration":    {enf, "rdp", "{max_duration: forever}", `max_duration "forever" is not a duration`},
		"too long":        {enf, "rdp", "{max_duration: 800h}", "max_duration 800h0m0s is outside 1s to 168h0m0s"},
		"unknown setting": {enf, "rdp", "{record: true}", `unknown key "record" (want one of require_nla, max_duration)`},
	} {
		doc := "targets:\n  - {name: t, protocol: " + tt.proto + ", address: \"10.0.0.9:3389\", rdp: " + tt.rd + "}\n"
		_, err := Parse([]byte(doc), "policy.yaml", tt.enf)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", name, err, tt.want)
		}
	}
}
