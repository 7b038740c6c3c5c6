package masking

import (
	"bytes"
	"testing"
)

// FuzzMask runs values through every detector and the row and COPY
// paths. Masking must not panic, must be idempotent, must leave nothing a
// detector still finds, and must never modify its input.
func FuzzMask(f *testing.F) {
	for _, s := range []string{"alice@corp.example", "4111 1111 1111 1111", "078-05-1120", "GB82 WEST 1234 5698 7654 32",
		"+14155552671", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "AKIAIOSFODNN7EXAMPLE",
		"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----", "1\ta@b.co\t\\N\n", "\"a,b\",\"c\"\"d@e.fr\"\n", ""} {
		f.Add([]byte(s))
	}
	m := New(everything, nil)
	p := m.Plan([]Field{{Name: "ssn", TypeOID: oidText}, {Name: "note", TypeOID: oidText}, {Name: "n", TypeOID: 20}, {Name: "j", TypeOID: oidJSONB, Binary: true}})
	f.Fuzz(func(t *testing.T, v []byte) {
		orig := bytes.Clone(v)
		once, _ := m.Redact(v)
		if !bytes.Equal(v, orig) {
			t.Fatal("input modified")
		}
		twice, hit := m.Redact(once)
		if hit || !bytes.Equal(once, twice) {
			t.Fatalf("not idempotent: %q -> %q -> %q", v, once, twice)
		}
		row := [][]byte{v, v, v, v}
		p.Row(row)
		if !bytes.Equal(v, orig) {
			t.Fatal("row input modified")
		}
		p.CopyText(v)
		p.CopyCSV(v)
		if !bytes.Equal(v, orig) {
			t.Fatal("copy input modified")
		}
	})
}
