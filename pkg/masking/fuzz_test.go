package masking

import (
	"bytes"
	"testing"
)

// FuzzMask runs values through every detector and the row path. Masking
// must not panic, must be idempotent, must leave nothing a detector still
// finds, and must never modify its input. COPY framing has its own fuzz
// target in pkg/protocol/postgres.
func FuzzMask(f *testing.F) {
	for _, s := range []string{"alice@corp.example", "4111 1111 1111 1111", "078-05-1120", "GB82 WEST 1234 5698 7654 32",
		"+14155552671", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "AKIAIOSFODNN7EXAMPLE",
		"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----", "1\ta@b.co\t\\N\n", "\"a,b\",\"c\"\"d@e.fr\"\n", ""} {
		f.Add([]byte(s))
	}
	m := New(everything, nil)
	fields := []Field{{Name: "ssn", Cell: CellText}, {Name: "note", Cell: CellText}, {Name: "n", Cell: CellOpaque},
		{Name: "j", Cell: CellJSON, Prefix: 1}, {Name: "b", Cell: CellBinary}}
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
		p := m.Plan(fields)
		row := [][]byte{v, v, v, v, v}
		p.Row(row)
		if !bytes.Equal(v, orig) {
			t.Fatal("row input modified")
		}
		if !bytes.Equal(row[1], once) {
			t.Fatalf("text cell %q, want %q", row[1], once)
		}
		if row[2] != nil && !bytes.Equal(row[2], v) {
			t.Fatalf("opaque cell %q is neither NULL nor %q", row[2], v)
		}
		if !bytes.Equal(row[4], v) {
			t.Fatalf("binary cell changed to %q", row[4])
		}
		again := [][]byte{row[0], row[1], row[2], row[3], row[4]}
		p.Row(again)
		for i := range row {
			if !bytes.Equal(again[i], row[i]) {
				t.Fatalf("column %d not idempotent: %q -> %q", i, row[i], again[i])
			}
		}
		if out, _ := p.Cell(len(fields), v); !bytes.Equal(out, once) {
			t.Fatalf("cell past the shape %q, want %q", out, once)
		}
	})
}
