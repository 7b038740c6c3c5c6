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
		{Name: "id", TypeOID: 23},
		{Name: "SSN", TypeOID: oidText},
		{Name: "card_number", TypeOID: 20}, // bigint masked by name: NULL
		{Name: "note", TypeOID: oidText, Binary: true},
		{Name: "n", TypeOID: 20}, // bigint holding a card: NULL
		{Name: "e", TypeOID: oidText, Derived: true},
		{Name: "j", TypeOID: oidJSONB, Binary: true},
	})
	orig := []byte("write to bob@corp.example")
	row := [][]byte{[]byte("1"), []byte("123-45-6789"), []byte("4111111111111111"), orig, []byte("4111111111111111"), []byte("x"), append([]byte{1}, `{"m":"a@b.co"}`...)}
	if !p.Row(row) {
		t.Fatal("nothing masked")
	}
	want := []string{"1", Whole, "", "write to [masked:email]", "", Whole, "\x01{\"m\":\"[masked:email]\"}"}
	for i, w := range want {
		if string(row[i]) != w {
			t.Errorf("col %d = %q, want %q", i, row[i], w)
		}
	}
	if row[2] != nil || row[4] != nil {
		t.Error("non-text masked values must be NULL")
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
}

func TestCopy(t *testing.T) {
	m := New(everything, nil)
	p := m.Plan([]Field{{Name: "id", TypeOID: 23}, {Name: "ssn", TypeOID: oidText}, {Name: "note", TypeOID: oidText}})
	got := p.CopyText([]byte("1\t123-45-6789\tmail a@b.co\n"))
	if string(got) != "1\t****\tmail [masked:email]\n" {
		t.Errorf("text: %q", got)
	}
	if got := p.CopyText([]byte("2\t\\N\tnothing\n")); string(got) != "2\t\\N\tnothing\n" {
		t.Errorf("text null: %q", got)
	}
	got = p.CopyCSV([]byte("1,123-45-6789,\"a, b@c.io \"\"x\"\"\"\n"))
	if string(got) != "1,****,\"a, [masked:email] \"\"x\"\"\"\n" {
		t.Errorf("csv: %q", got)
	}
	if bytes.Contains(got, []byte("b@c.io")) || bytes.Contains(got, []byte("123-45")) {
		t.Errorf("csv leaks: %q", got)
	}
}
