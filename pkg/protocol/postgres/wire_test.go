package postgres

import (
	"bytes"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func frame(msgs ...pgproto3.Message) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			panic(err)
		}
	}
	return b
}

func TestReaderRoundTrip(t *testing.T) {
	in := frame(&pgproto3.Query{String: "select 1"}, &pgproto3.Parse{Name: "s", Query: "select $1"}, &pgproto3.Sync{})
	r := NewReader(bytes.NewReader(in))
	var out bytes.Buffer
	w := NewWriter(&out)
	for range 3 {
		typ, body, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		w.Raw(typ, body)
	}
	w.Flush()
	if !bytes.Equal(out.Bytes(), in) {
		t.Fatalf("relayed bytes differ")
	}
	if _, _, err := r.Next(); err == nil {
		t.Fatal("no EOF")
	}
}

func TestStartup(t *testing.T) {
	in := frame(&pgproto3.SSLRequest{}, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "u"}},
		&pgproto3.CancelRequest{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}})
	r := NewReader(bytes.NewReader(in))
	for _, want := range []string{"*pgproto3.SSLRequest", "*pgproto3.StartupMessage", "*pgproto3.CancelRequest"} {
		m, err := r.Startup()
		if err != nil {
			t.Fatal(err)
		}
		if got := typeName(m); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *pgproto3.SSLRequest:
		return "*pgproto3.SSLRequest"
	case *pgproto3.StartupMessage:
		return "*pgproto3.StartupMessage"
	case *pgproto3.CancelRequest:
		return "*pgproto3.CancelRequest"
	}
	return "?"
}

func TestSCRAMRejectsBadServer(t *testing.T) {
	s, err := NewSCRAM("pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClientFinal([]byte("r=other,s=c2FsdA==,i=4096")); err == nil {
		t.Fatal("accepted a nonce that does not extend ours")
	}
	if err := s.Verify([]byte("v=AAAA")); err == nil {
		t.Fatal("verified a signature before the exchange")
	}
	if MD5Password("u", "p", [4]byte{1, 2, 3, 4})[:3] != "md5" {
		t.Fatal("md5 prefix")
	}
}

// FuzzMessages feeds arbitrary bytes through the reader and decodes every
// message the way the proxy does, from both directions. Nothing may panic
// or allocate past MaxMessageLen.
func FuzzMessages(f *testing.F) {
	f.Add(frame(&pgproto3.Query{String: "select 1"}, &pgproto3.Sync{}))
	f.Add(frame(&pgproto3.Parse{Name: "a", Query: "select $1", ParameterOIDs: []uint32{25}},
		&pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "a", Parameters: [][]byte{[]byte("x")}, ResultFormatCodes: []int16{1}},
		&pgproto3.Describe{ObjectType: 'P', Name: "p"}, &pgproto3.Execute{Portal: "p"}, &pgproto3.Close{ObjectType: 'S', Name: "a"}))
	f.Add(frame(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("email"), DataTypeOID: 25}}},
		&pgproto3.DataRow{Values: [][]byte{[]byte("a@b.co"), nil}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42501", Message: "m"}, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Add(frame(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "u"}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		if _, err := r.Startup(); err != nil {
			r = NewReader(bytes.NewReader(data))
		}
		for range 64 {
			typ, body, err := r.Next()
			if err != nil {
				return
			}
			for _, m := range decoders(typ) {
				if m.Decode(body) == nil {
					if _, err := m.Encode(nil); err != nil {
						continue
					}
				}
			}
		}
	})
}

// decoders returns the messages a type byte can be, from either side.
func decoders(typ byte) []pgproto3.Message {
	switch typ {
	case 'Q':
		return []pgproto3.Message{&pgproto3.Query{}}
	case 'P':
		return []pgproto3.Message{&pgproto3.Parse{}}
	case 'B':
		return []pgproto3.Message{&pgproto3.Bind{}}
	case 'D':
		return []pgproto3.Message{&pgproto3.Describe{}, &pgproto3.DataRow{}}
	case 'E':
		return []pgproto3.Message{&pgproto3.Execute{}, &pgproto3.ErrorResponse{}}
	case 'C':
		return []pgproto3.Message{&pgproto3.Close{}, &pgproto3.CommandComplete{}}
	case 'T':
		return []pgproto3.Message{&pgproto3.RowDescription{}}
	case 'N':
		return []pgproto3.Message{&pgproto3.NoticeResponse{}}
	case 'A':
		return []pgproto3.Message{&pgproto3.NotificationResponse{}}
	case 'K':
		return []pgproto3.Message{&pgproto3.BackendKeyData{}}
	case 'R':
		return []pgproto3.Message{&pgproto3.AuthenticationSASL{}, &pgproto3.AuthenticationMD5Password{}}
	}
	return nil
}
