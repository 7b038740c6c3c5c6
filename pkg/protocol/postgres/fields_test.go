package postgres

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/policy"
)

var everything = []policy.Masking{{Name: "pii", Columns: []string{"ssn", "Card_Number"},
	Detectors: []string{"email", "credit_card", "ssn", "iban", "phone", "jwt", "aws_access_key", "private_key"}}}

// rowDescription describes columns by name, type OID and format code.
func rowDescription(cols ...any) *pgproto3.RowDescription {
	rd := &pgproto3.RowDescription{}
	for i := 0; i+3 <= len(cols); i += 3 {
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{
			Name: []byte(cols[i].(string)), DataTypeOID: uint32(cols[i+1].(int)), Format: int16(cols[i+2].(int)),
		})
	}
	return rd
}

func TestMaskFields(t *testing.T) {
	tests := []struct {
		oid    int
		format int
		cell   masking.CellKind
		prefix int
	}{
		{oidText, 0, masking.CellText, 0},
		{oidText, formatBinary, masking.CellText, 0},
		{oidVarchar, 0, masking.CellText, 0},
		{oidBpchar, formatBinary, masking.CellText, 0},
		{oidName, 0, masking.CellText, 0},
		{oidUnknown, 0, masking.CellText, 0},
		{oidXML, formatBinary, masking.CellText, 0},
		{oidJSON, 0, masking.CellJSON, 0},
		{oidJSON, formatBinary, masking.CellJSON, 0},
		{oidJSONB, 0, masking.CellJSON, 0},
		{oidJSONB, formatBinary, masking.CellJSON, 1},
		{oidTextArray, 0, masking.CellText, 0},
		{oidJSONBArray, 0, masking.CellText, 0},
		{oidVarcharArray, formatBinary, masking.CellBinary, 0},
		{20, 0, masking.CellOpaque, 0}, // bigint
		{20, formatBinary, masking.CellBinary, 0},
		{1700, 0, masking.CellOpaque, 0}, // numeric
		{1007, 0, masking.CellOpaque, 0}, // int4[]
	}
	for _, tt := range tests {
		f := MaskFields(rowDescription("c", tt.oid, tt.format))[0]
		if f.Name != "c" || f.Cell != tt.cell || f.Prefix != tt.prefix || f.Derived {
			t.Errorf("oid %d format %d: %+v, want cell %d prefix %d", tt.oid, tt.format, f, tt.cell, tt.prefix)
		}
	}
	if MaskFields(nil) != nil || CopyFields(nil) != nil {
		t.Error("fields without a RowDescription")
	}
}

func TestCopyFields(t *testing.T) {
	fields := CopyFields(rowDescription("j", oidJSONB, formatBinary, "t", oidText, 0, "n", 20, formatBinary, "a", oidTextArray, formatBinary))
	want := []masking.Field{{Name: "j", Cell: masking.CellText}, {Name: "t", Cell: masking.CellText},
		{Name: "n", Cell: masking.CellOpaque}, {Name: "a", Cell: masking.CellText}}
	for i, w := range want {
		if fields[i] != w {
			t.Errorf("field %d = %+v, want %+v", i, fields[i], w)
		}
	}
}

// TestMaskFieldsRow masks a DataRow's values through the fields of its
// RowDescription, the way the proxy does.
func TestMaskFieldsRow(t *testing.T) {
	m := masking.New(everything, nil)
	fields := MaskFields(rowDescription(
		"id", 23, 0,
		"SSN", oidText, 0,
		"card_number", 20, 0, // bigint masked by name: NULL
		"note", oidText, formatBinary,
		"n", 20, 0, // bigint holding a card: NULL
		"e", oidText, 0,
		"j", oidJSONB, formatBinary,
		"b", 20, formatBinary, // binary bigint: not text, kept
		"doc", oidJSON, 0,
	))
	fields[5].Derived = true
	p := m.Plan(fields)
	orig := []byte("write to bob@corp.example")
	row := [][]byte{[]byte("1"), []byte("123-45-6789"), []byte("4111111111111111"), orig, []byte("4111111111111111"), []byte("x"),
		append([]byte{1}, `{"m":"a@b.co"}`...), []byte("4111111111111111"), []byte(`{"to":"c@d.io"}`)}
	if !p.Row(row) {
		t.Fatal("nothing masked")
	}
	want := []string{"1", masking.Whole, "", "write to [masked:email]", "", masking.Whole, "\x01{\"m\":\"[masked:email]\"}",
		"4111111111111111", `{"to":"[masked:email]"}`}
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
	if got := strings.Join(p.MaskedNames(), ","); got != "SSN,card_number,note,n,e,j,doc" {
		t.Errorf("masked names %q", got)
	}

	// Masked by name, JSON columns still hold JSON: a string.
	byName := masking.New([]policy.Masking{{Columns: []string{"j", "d"}}}, nil).Plan(
		MaskFields(rowDescription("j", oidJSONB, formatBinary, "d", oidJSON, 0)))
	row = [][]byte{append([]byte{1}, `{"a":1}`...), []byte(`[1]`)}
	byName.Row(row)
	if string(row[0]) != "\x01\"****\"" || string(row[1]) != `"****"` {
		t.Errorf("json masked by name: %q", row)
	}
}
