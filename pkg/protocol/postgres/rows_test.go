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

// Decoding into a reused buffer leaves nothing of the previous row: a NULL
// is nil even where the last row had a value.
func TestDecodeDataRowIntoReuses(t *testing.T) {
	enc := func(values ...[]byte) []byte {
		msg, err := (&pgproto3.DataRow{Values: values}).Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		return msg[5:]
	}
	buf, err := DecodeDataRowInto(nil, enc([]byte("a"), []byte("b"), []byte("c")))
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDataRowInto(buf, enc(nil, []byte("y")))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != nil || string(got[1]) != "y" || &got[0] != &buf[0] {
		t.Fatalf("second row %q (reused: %v)", got, &got[0] == &buf[0])
	}
}
