package postgres

import (
	"bytes"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestDataRowRoundTrip(t *testing.T) {
	want := [][]byte{[]byte("a"), nil, {}, []byte("four")}
	msg, err := (&pgproto3.DataRow{Values: want}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	body := msg[5:]
	got, err := DecodeDataRow(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d values, want %d", len(got), len(want))
	}
	for i := range want {
		if (got[i] == nil) != (want[i] == nil) || !bytes.Equal(got[i], want[i]) {
			t.Errorf("value %d = %q, want %q", i, got[i], want[i])
		}
	}
	if re := AppendDataRow(nil, got); !bytes.Equal(re, body) {
		t.Errorf("re-encoded %x, want %x", re, body)
	}
	for cut := range len(body) - 1 {
		if _, err := DecodeDataRow(body[:cut]); err == nil && cut < len(body) {
			// Only a cut that ends exactly after a complete value list
			// can decode, and that is the whole body.
			t.Errorf("truncated body (%d of %d bytes) decoded", cut, len(body))
		}
	}
}
