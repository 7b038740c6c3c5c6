package codecs

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/policy"
)

// A policy the codecs can enforce, and one line that each bad variant adds.
const good = `targets:
  - name: orders-db
    protocol: postgres
    address: 10.0.0.5:5432
  - name: cache
    protocol: tcp
    address: 10.0.0.6:6379
  - name: billing-db
    protocol: mysql
    address: 10.0.0.7:3306
  - name: jump
    protocol: ssh
    address: 10.0.0.8:22
access:
  - groups: [engineering]
    targets: [orders-db, cache, billing-db, jump]
rules:
  - name: no-ddl
    targets: [orders-db]
    when: { statements: [drop] }
    action: deny
`

// Rules, masks and credentials on targets whose protocol has no codec are
// rejected with the registry's real capabilities, each at its position.
func TestUnenforceablePolicyRejected(t *testing.T) {
	enf := New(Options{}).Enforcement()
	if _, err := policy.Parse([]byte(good), "policy.yaml", enf); err != nil {
		t.Fatalf("enforceable policy rejected: %v", err)
	}
	tests := []struct {
		name, add string
		want      *regexp.Regexp
	}{
		{"redis command rule", `  - name: no-flush
    targets: [cache]
    when: { commands: [flushall] }
    action: deny
`, regexp.MustCompile(`^policy\.yaml:24:13: rule "no-flush": when: commands: target "cache" is tcp, and no codec enforces commands on tcp targets`)},
		{"ssh statement rule", `  - name: ssh-ddl
    targets: [jump]
    when: { statements: [drop] }
    action: deny
`, regexp.MustCompile(`^policy\.yaml:24:13: rule "ssh-ddl": when: statements: target "jump" is ssh`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.Parse([]byte(good+tt.add), "policy.yaml", enf)
			if err == nil {
				t.Fatal("accepted a policy no codec can enforce")
			}
			if !tt.want.MatchString(err.Error()) {
				t.Fatalf("error %q does not match %s", err, tt.want)
			}
		})
	}
}

// MySQL targets take statement rules, masking and credentials: their codec
// enforces them.
func TestMySQLEnforced(t *testing.T) {
	add := `  - name: mysql-ddl
    targets: [billing-db]
    when: { statements: [drop], functions: [load_file] }
    action: deny
masking:
  - name: pii
    targets: [billing-db]
    columns: [email]
    detectors: [email]
`
	if _, err := policy.Parse([]byte(good+add), "policy.yaml", New(Options{}).Enforcement()); err != nil {
		t.Fatalf("mysql rules rejected: %v", err)
	}
}

// A reload to an unenforceable policy is rejected with its position, and
// the policy in force stays.
func TestUnenforceableReloadKeepsPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	var reported []error
	w, err := policy.NewWatcher(path, policy.WatchOptions{
		Enforcement: New(Options{}).Enforcement(),
		OnError:     func(err error) { reported = append(reported, err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	before := w.Policy()
	bad := good + "  - name: no-flush\n    targets: [cache]\n    when: { commands: [flushall] }\n    action: deny\n"
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	err = w.Reload()
	if err == nil || !strings.Contains(err.Error(), path+":") || !strings.Contains(err.Error(), "no codec enforces commands on tcp targets") {
		t.Fatalf("reload error %v", err)
	}
	if len(reported) != 1 || w.Policy() != before {
		t.Fatalf("reported %v; policy in force changed: %v", reported, w.Policy() != before)
	}
}

// Only protocols with a codec refuse in their own terms; the rest are
// refused with EPERM by the kernel.
func TestRegistry(t *testing.T) {
	r := New(Options{})
	if got := r.Protocols(); !slices.Equal(got, []string{policy.ProtocolHTTP, policy.ProtocolHTTPS, policy.ProtocolMySQL, policy.ProtocolPostgres, policy.ProtocolRDP, policy.ProtocolRedis, policy.ProtocolSSH}) {
		t.Fatalf("protocols with a codec: %v", got)
	}
	pe := r.ProtocolErrors()
	if !pe[policy.ProtocolPostgres] || !pe[policy.ProtocolMySQL] || !pe[policy.ProtocolRedis] || pe[policy.ProtocolTCP] {
		t.Fatalf("protocol errors %v", pe)
	}
	if c := r.Codec(policy.ProtocolTCP); len(c.Enforces()) != 0 {
		t.Fatalf("tcp is relayed, yet its codec enforces %v", c.Enforces())
	}
}
