package policy

import (
	"slices"
	"strings"
	"testing"
)

// Patterns read as redis-server's stringmatchlen reads them.
func TestMatchKey(t *testing.T) {
	tests := []struct {
		pattern, key string
		want         bool
	}{
		{"user:*:email", "user:1:email", true},
		{"user:*:email", "user:a:b:email", true}, // '*' crosses ':'
		{"user:*:email", "user:1:email2", false},
		{"user:*:email", "User:1:email", false}, // case matters
		{"*", "", true},
		{"user:?", "user:1", true},
		{"user:?", "user:12", false},
		{"user:[0-9]", "user:7", true},
		{"user:[9-0]", "user:7", true}, // reversed ranges work, as in Redis
		{"user:[^0-9]", "user:7", false},
		{"user:[^0-9]", "user:x", true},
		{"user:[ab]", "user:b", true},
		{`user:\*`, "user:*", true},
		{`user:\*`, "user:1", false},
		{"a**b", "axxb", true},
		{"user:[abc", "user:a", true}, // unterminated class runs to the end
	}
	for _, tt := range tests {
		if got := MatchKey(tt.pattern, tt.key); got != tt.want {
			t.Errorf("MatchKey(%q, %q) = %v", tt.pattern, tt.key, got)
		}
	}
}

func TestMaskingKeys(t *testing.T) {
	enf := Enforcement{ProtocolRedis: {CapKeyMasking}, ProtocolPostgres: {CapColumnMasking}}
	p, err := Parse([]byte(`targets:
  - {name: cache, protocol: redis, address: "10.0.0.6:6379"}
masking:
  - name: emails
    targets: [cache]
    keys: ["user:*:email", "session:*"]
`), "policy.yaml", enf)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.MaskingFor("cache")[0].Keys; !slices.Equal(got, []string{"user:*:email", "session:*"}) {
		t.Fatalf("keys %q", got)
	}
	for name, tt := range map[string]struct{ doc, want string }{
		"not enforced on postgres": {`targets:
  - {name: db, protocol: postgres, address: "10.0.0.5:5432"}
masking:
  - {name: m, targets: [db], keys: ["a:*"]}
`, `policy.yaml:4:30: masking "m": keys: target "db" is postgres, and no codec enforces key masking on postgres targets`},
		"line break": {`targets:
  - {name: cache, protocol: redis, address: "10.0.0.6:6379"}
masking:
  - {name: m, targets: [cache], keys: ["a\nb"]}
`, `masking "m": keys: "a\nb" contains a line break`},
	} {
		_, err := Parse([]byte(tt.doc), "policy.yaml", enf)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", name, err, tt.want)
		}
	}
}
