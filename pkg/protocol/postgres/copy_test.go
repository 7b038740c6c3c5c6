package postgres

import (
	"bytes"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/masking"
	"github.com/wardenhq/warden/pkg/policy"
)

func TestMaskCopy(t *testing.T) {
	m := masking.New(everything, nil)
	p := m.Plan(CopyFields(rowDescription("id", 23, 0, "ssn", oidText, 0, "note", oidText, 0)))
	got := MaskCopyText(p, []byte("1\t123-45-6789\tmail a@b.co\n"))
	if string(got) != "1\t****\tmail [masked:email]\n" {
		t.Errorf("text: %q", got)
	}
	if got := MaskCopyText(p, []byte("2\t\\N\tnothing\n")); string(got) != "2\t\\N\tnothing\n" {
		t.Errorf("text null: %q", got)
	}
	got = MaskCopyCSV(p, []byte("1,123-45-6789,\"a, b@c.io \"\"x\"\"\"\n"))
	if string(got) != "1,****,\"a, [masked:email] \"\"x\"\"\"\n" {
		t.Errorf("csv: %q", got)
	}
	if bytes.Contains(got, []byte("b@c.io")) || bytes.Contains(got, []byte("123-45")) {
		t.Errorf("csv leaks: %q", got)
	}
	if got := strings.Join(p.MaskedNames(), ","); got != "ssn,note" {
		t.Errorf("masked names %q", got)
	}
}

func TestMaskCopyUntouched(t *testing.T) {
	p := masking.New(everything, nil).Plan(CopyFields(rowDescription("id", 23, 0, "note", oidText, 0)))
	for _, line := range []string{"1\tnothing here\n", "1\tno newline"} {
		in := []byte(line)
		if got := MaskCopyText(p, in); &got[0] != &in[0] || len(got) != len(in) {
			t.Errorf("text %q: not the line itself: %q", line, got)
		}
	}
	in := []byte("1,\"quoted, plain\"\r\n")
	if got := MaskCopyCSV(p, in); &got[0] != &in[0] || len(got) != len(in) {
		t.Errorf("csv: not the line itself: %q", got)
	}
	line := []byte("1\ta@b.co\n")
	if got := MaskCopyText(nil, line); !bytes.Equal(got, line) {
		t.Errorf("nil plan: %q", got)
	}
	if got := MaskCopyCSV(nil, line); !bytes.Equal(got, line) {
		t.Errorf("nil plan csv: %q", got)
	}
}

// COPY rows are untyped text: a JSON column masked by name reads as ****,
// a number masked by name or holding a detected value as NULL.
func TestMaskCopyTypes(t *testing.T) {
	m := masking.New([]policy.Masking{{Columns: []string{"doc", "ssn"}, Detectors: []string{"credit_card"}}}, nil)
	p := m.Plan(CopyFields(rowDescription("doc", oidJSONB, 0, "ssn", 20, 0, "n", 1700, 0)))
	if got := MaskCopyText(p, []byte("{\"a\": 1}\t123456789\t4111111111111111\n")); string(got) != "****\t\\N\t\\N\n" {
		t.Errorf("text: %q", got)
	}
	if got := MaskCopyCSV(p, []byte("\"{\"\"a\"\": 1}\",123456789,4111111111111111\r\n")); string(got) != "\"****\",,\r\n" {
		t.Errorf("csv: %q", got)
	}
	// An empty unquoted CSV field is NULL and stays so.
	if got := MaskCopyCSV(p, []byte(",,\n")); string(got) != ",,\n" {
		t.Errorf("csv nulls: %q", got)
	}
}

// A row wider than the columns Warden learnt still gets the detectors on
// its extra fields.
func TestMaskCopyBeyondShape(t *testing.T) {
	p := masking.New(everything, nil).Plan(CopyFields(rowDescription("id", 23, 0)))
	if got := MaskCopyText(p, []byte("1\tx\tmail a@b.co\n")); string(got) != "1\tx\tmail [masked:email]\n" {
		t.Errorf("text: %q", got)
	}
	if got := MaskCopyCSV(p, []byte("1,x,\"a,b@c.io\"\n")); string(got) != "1,x,\"a,[masked:email]\"\n" {
		t.Errorf("csv: %q", got)
	}
}

func TestSplitCSV(t *testing.T) {
	fields, nl := splitCSV([]byte("a,\"b,\"\"c\"\"\",,\"\"\r\n"))
	if string(nl) != "\r\n" || len(fields) != 4 {
		t.Fatalf("%d fields, terminator %q", len(fields), nl)
	}
	want := []csvField{{raw: []byte("a"), value: []byte("a")}, {raw: []byte(`"b,""c"""`), value: []byte(`b,"c"`), quoted: true},
		{raw: []byte{}}, {raw: []byte(`""`), quoted: true}}
	for i, w := range want {
		f := fields[i]
		if !bytes.Equal(f.raw, w.raw) || !bytes.Equal(f.value, w.value) || f.quoted != w.quoted {
			t.Errorf("field %d = %q/%q/%v, want %q/%q/%v", i, f.raw, f.value, f.quoted, w.raw, w.value, w.quoted)
		}
	}
	if got := csvQuote([]byte(`a"b`), false); string(got) != `"a""b"` {
		t.Errorf("csvQuote: %q", got)
	}
	if got := csvQuote(nil, true); got != nil {
		t.Errorf("csvQuote(NULL) = %q", got)
	}
}

// FuzzCopy runs lines through the COPY text and CSV framing. Masking must
// not panic, must never modify its input, must keep the row's fields
// (same count) and must be idempotent.
func FuzzCopy(f *testing.F) {
	for _, s := range []string{"alice@corp.example", "4111 1111 1111 1111", "078-05-1120", "GB82 WEST 1234 5698 7654 32",
		"+14155552671", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "AKIAIOSFODNN7EXAMPLE",
		"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----", "1\ta@b.co\t\\N\n", "\"a,b\",\"c\"\"d@e.fr\"\n", ""} {
		f.Add([]byte(s))
	}
	m := masking.New(everything, nil)
	fields := CopyFields(rowDescription("ssn", oidText, 0, "note", oidText, 0, "n", 20, 0, "j", oidJSONB, formatBinary))
	f.Fuzz(func(t *testing.T, v []byte) {
		orig := bytes.Clone(v)
		p := m.Plan(fields)
		text := MaskCopyText(p, v)
		csv := MaskCopyCSV(p, v)
		if !bytes.Equal(v, orig) {
			t.Fatal("input modified")
		}
		body := bytes.TrimSuffix(v, []byte{'\n'})
		if got, want := bytes.Count(text, copyFieldDelim), bytes.Count(body, copyFieldDelim); got != want {
			t.Fatalf("text %q -> %q: %d fields, want %d", v, text, got+1, want+1)
		}
		in, _ := splitCSV(v)
		out, _ := splitCSV(csv)
		if len(in) != len(out) {
			t.Fatalf("csv %q -> %q: %d fields, want %d", v, csv, len(out), len(in))
		}
		if again := MaskCopyText(p, text); !bytes.Equal(again, text) {
			t.Fatalf("text not idempotent: %q -> %q -> %q", v, text, again)
		}
		if again := MaskCopyCSV(p, csv); !bytes.Equal(again, csv) {
			t.Fatalf("csv not idempotent: %q -> %q -> %q", v, csv, again)
		}
	})
}
