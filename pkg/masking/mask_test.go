package masking

import (
	"bytes"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/policy"
)

var everything = []policy.Masking{{Name: "pii", Columns: []string{"ssn", "Card_Number"},
	Detectors: []string{"email", "credit_card", "ssn", "iban", "phone", "jwt", "aws_access_key", "private_key"}}}

func TestDetectors(t *testing.T) {
	m := New(everything, nil)
	tests := []struct{ in, want string }{
		{"mail alice@corp.example now", "mail [masked:email] now"},
		{"card 4111 1111 1111 1111.", "card [masked:credit_card]."},
		{"card 4111111111111112", "card 4111111111111112"}, // fails Luhn
		{"ssn 123-45-6789", "ssn [masked:ssn]"},
		{"ssn 000-45-6789", "ssn 000-45-6789"},
		{"iban GB82 WEST 1234 5698 7654 32", "iban [masked:iban]"},
		{"iban GB82WEST12345698765432", "iban [masked:iban]"},
		{"iban GB83WEST12345698765432", "iban GB83WEST12345698765432"}, // bad checksum
		{"call +14155552671", "call [masked:phone]"},
		{"call (415) 555-2671", "call [masked:phone]"},
		{"tok eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "tok [masked:jwt]"},
		{"key AKIAIOSFODNN7EXAMPLE", "key [masked:aws_access_key]"},
		{"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\nafter", "[masked:private_key]\nafter"},
		{"-----BEGIN PRIVATE KEY-----\nMIIB truncated", "[masked:private_key]"},
		{"order 12345 on 2024-01-02", "order 12345 on 2024-01-02"},
		// A longer run that fails its checksum must not hide a valid
		// number inside it.
		{"ref 12 4111 1111 1111 1111", "ref 12 [masked:credit_card]"},
		{"GB00 GB82WEST12345698765432", "GB00 [masked:iban]"},
		// Nor a shorter valid one at the same start (found by FuzzMask).
		{"card 4111 1111 1111 1111 22 phone", "card [masked:credit_card] 22 phone"},
		{"0000000000000 10 000 000", "[masked:credit_card] [masked:phone]"},
	}
	for _, tt := range tests {
		got, hit := m.Redact([]byte(tt.in))
		if string(got) != tt.want || hit != (tt.in != tt.want) {
			t.Errorf("Redact(%q) = %q, %v; want %q", tt.in, got, hit, tt.want)
		}
	}
}

// Detector.Find resumes after a failed checksum at the next position that
// follows a non-word byte, which is only right for patterns that begin
// with \b.
func TestCheckedPatternsBeginAtWordBoundary(t *testing.T) {
	for _, d := range all {
		if d.valid != nil && !strings.HasPrefix(d.re.String(), `\b`) {
			t.Errorf("%s: checked pattern %q does not begin with \\b", d.Name, d.re.String())
		}
	}
}

func TestNewExemptAndEmpty(t *testing.T) {
	if New(nil, nil) != nil {
		t.Fatal("masker without entries")
	}
	ex := []policy.Masking{{Name: "pii", Columns: []string{"email"}, ExceptGroups: []string{"pii-readers"}}}
	if New(ex, []string{"pii-readers"}) != nil {
		t.Fatal("exempt group still masked")
	}
	if !New(ex, []string{"engineering"}).Column("email") {
		t.Fatal("column not masked")
	}
}

func TestPlanRow(t *testing.T) {
	m := New(everything, nil)
	p := m.Plan([]Field{
		{Name: "id", Cell: CellOpaque},
		{Name: "SSN", Cell: CellText},
		{Name: "card_number", Cell: CellOpaque}, // a number masked by name: NULL
		{Name: "note", Cell: CellText},
		{Name: "n", Cell: CellOpaque}, // a number holding a card: NULL
		{Name: "e", Cell: CellText, Derived: true},
		{Name: "j", Cell: CellJSON, Prefix: 1},
		{Name: "b", Cell: CellBinary}, // unreadable: kept
	})
	orig := []byte("write to bob@corp.example")
	row := [][]byte{[]byte("1"), []byte("123-45-6789"), []byte("4111111111111111"), orig, []byte("4111111111111111"),
		[]byte("x"), append([]byte{1}, `{"m":"a@b.co"}`...), []byte("4111111111111111")}
	if !p.Row(row) {
		t.Fatal("nothing masked")
	}
	want := []string{"1", Whole, "", "write to [masked:email]", "", Whole, "\x01{\"m\":\"[masked:email]\"}", "4111111111111111"}
	for i, w := range want {
		if string(row[i]) != w {
			t.Errorf("col %d = %q, want %q", i, row[i], w)
		}
	}
	if row[2] != nil || row[4] != nil {
		t.Error("opaque masked values must be NULL")
	}
	if string(orig) != "write to bob@corp.example" {
		t.Error("input buffer modified")
	}
	if got := strings.Join(p.MaskedNames(), ","); got != "SSN,card_number,note,n,e,j" {
		t.Errorf("masked names %q", got)
	}
	if New([]policy.Masking{{Columns: []string{"x"}}}, nil).Plan([]Field{{Name: "id"}}) != nil {
		t.Error("plan for a shape with nothing to mask")
	}
	if New([]policy.Masking{{Detectors: []string{"email"}}}, nil).Plan([]Field{{Name: "id", Cell: CellBinary}}) != nil {
		t.Error("plan for a shape detectors cannot read")
	}
}

func TestPlanWhole(t *testing.T) {
	p := New([]policy.Masking{{Columns: []string{"a", "b", "c", "d", "e"}}}, nil).Plan([]Field{
		{Name: "a", Cell: CellText}, {Name: "b", Cell: CellJSON}, {Name: "c", Cell: CellJSON, Prefix: 1},
		{Name: "d", Cell: CellOpaque}, {Name: "e", Cell: CellBinary}, {Name: "f", Cell: CellText},
	})
	row := [][]byte{[]byte("x"), []byte(`{"k":1}`), []byte("\x01{}"), []byte("42"), {0, 0, 0, 42}, []byte("kept")}
	if !p.Row(row) {
		t.Fatal("nothing masked")
	}
	want := [][]byte{[]byte(Whole), []byte(`"` + Whole + `"`), []byte("\x01\"" + Whole + `"`), nil, nil, []byte("kept")}
	for i, w := range want {
		if !bytes.Equal(row[i], w) || (w == nil) != (row[i] == nil) {
			t.Errorf("col %d = %q, want %q", i, row[i], w)
		}
	}
	// NULL stays NULL, and is not counted as masked.
	q := New([]policy.Masking{{Columns: []string{"a"}}}, nil).Plan([]Field{{Name: "a", Cell: CellText}})
	if null := [][]byte{nil}; q.Row(null) || null[0] != nil || len(q.MaskedNames()) != 0 {
		t.Errorf("NULL masked: %q, %q", null[0], q.MaskedNames())
	}
}

func TestPlanCell(t *testing.T) {
	p := New(everything, nil).Plan([]Field{{Name: "ssn", Cell: CellText}, {Name: "j", Cell: CellJSON, Prefix: 1}})
	v := []byte("a@b.co")
	if out, hit := p.Cell(5, v); !hit || string(out) != "[masked:email]" || string(v) != "a@b.co" {
		t.Errorf("column past the shape: %q, %v", out, hit)
	}
	if out, hit := p.Cell(0, []byte("anything")); !hit || string(out) != Whole {
		t.Errorf("masked column: %q, %v", out, hit)
	}
	if out, hit := p.Cell(1, nil); hit || out != nil {
		t.Errorf("NULL: %q, %v", out, hit)
	}
	if out, hit := p.Cell(1, []byte{}); hit || out == nil || len(out) != 0 {
		t.Errorf("value shorter than its prefix: %q, %v", out, hit)
	}
	if got := strings.Join(p.MaskedNames(), ","); got != "ssn" {
		t.Errorf("masked names %q", got)
	}
	var none *Plan
	if out, hit := none.Cell(0, v); hit || !bytes.Equal(out, v) {
		t.Errorf("nil plan: %q, %v", out, hit)
	}
}
