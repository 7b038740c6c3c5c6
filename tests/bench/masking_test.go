package bench

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/pkg/protocol/postgres"
)

// TestBenchMasking measures masking one 1,000-row result of 8 columns,
// 5 of them masked: 2 by column name and 3 by content detectors that hit
// (email, card with Luhn, SSN), with every detector enabled. Each row is
// decoded from its DataRow wire form, masked and re-encoded, as the proxy
// does, with the fields the RowDescription maps to. It prints
// microseconds per result.
func TestBenchMasking(t *testing.T) {
	requireBench(t)
	entries := []policy.Masking{{Name: "pii", Columns: []string{"ssn", "card_number"},
		Detectors: []string{"email", "credit_card", "ssn", "iban", "phone", "jwt", "aws_access_key", "private_key"}}}
	m := masking.New(entries, nil)
	rd := &pgproto3.RowDescription{}
	for _, c := range []struct {
		name string
		oid  uint32
	}{{"id", 23}, {"ssn", 25}, {"card_number", 25}, {"contact", 25}, {"payment", 25}, {"notes", 25}, {"city", 25}, {"balance", 1700}} {
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte(c.name), DataTypeOID: c.oid})
	}
	fields := postgres.MaskFields(rd)
	rows := make([][]byte, 1000)
	for i := range rows {
		dr := &pgproto3.DataRow{Values: [][]byte{
			[]byte(fmt.Sprint(i)), []byte("078-05-1120"), []byte("4111111111111111"),
			[]byte(fmt.Sprintf("user%d@example.org", i)), []byte("paid with 4111 1111 1111 1111"),
			[]byte("ssn on file 219-09-9999"), []byte("Springfield"), []byte("1234.50"),
		}}
		b, err := dr.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		rows[i] = b[5:] // body, as the proxy holds it
	}
	maskedCols := 0
	res := testing.Benchmark(func(b *testing.B) {
		for n := 0; n < b.N; n++ {
			p := m.Plan(fields)
			var out []byte
			for _, body := range rows {
				var dr pgproto3.DataRow
				if err := dr.Decode(body); err != nil {
					b.Fatal(err)
				}
				p.Row(dr.Values)
				var err error
				if out, err = dr.Encode(out[:0]); err != nil {
					b.Fatal(err)
				}
			}
			maskedCols = len(p.MaskedNames())
		}
	})
	if maskedCols != 5 {
		t.Fatalf("%d columns masked, want 5", maskedCols)
	}
	us := float64(res.NsPerOp()) / 1000
	fmt.Printf("BENCH masking 1000 rows x 8 cols (5 masked: 2 by name, 3 by detector): %.0f us/result (%.2f us/row, %d allocs/result)\n",
		us, us/1000, res.AllocsPerOp())
}
