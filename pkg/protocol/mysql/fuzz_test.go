package mysql

import (
	"bytes"
	"testing"
)

// FuzzPackets feeds arbitrary bytes to the framing and to every decoder:
// none may panic, and what decodes must re-encode to something that
// decodes to the same thing.
func FuzzPackets(f *testing.F) {
	h := &Handshake{ServerVersion: "8.0.36", ConnectionID: 7, AuthData: []byte("abcdefghijklmnopqrst"),
		Capabilities: ClientProtocol41 | ClientSecureConnection | ClientPluginAuth, AuthPlugin: PluginCachingSHA2}
	f.Add(h.Encode())
	r := &HandshakeResponse{Capabilities: ClientProtocol41 | ClientSecureConnection | ClientPluginAuth | ClientConnectAttrs | ClientConnectWithDB,
		User: "u", AuthResponse: []byte{1}, Database: "d", AuthPlugin: PluginNative, Attrs: []Attr{{"k", "v"}}}
	f.Add(r.Encode())
	f.Add((&OK{AffectedRows: 1, Status: 2}).Encode(HeaderOK, ClientProtocol41|ClientSessionTrack))
	f.Add((&ERR{Code: 1064, State: "42000", Message: "syntax"}).Encode())
	f.Add(AppendTextRow(nil, [][]byte{[]byte("a"), nil}))
	f.Add([]byte{0, 0, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		framed := NewReader(bytes.NewReader(b))
		for i := 0; i < 4; i++ {
			if _, _, err := framed.Next(); err != nil {
				break
			}
		}
		if h, err := ParseHandshake(b); err == nil {
			if _, err := ParseHandshake(h.Encode()); err != nil {
				t.Fatalf("re-encoded handshake: %v", err)
			}
		}
		if r, err := ParseHandshakeResponse(b); err == nil {
			r2, err := ParseHandshakeResponse(r.Encode())
			if err != nil || r2.User != r.User || !bytes.Equal(r2.AuthResponse, r.AuthResponse) || len(r2.Attrs) != len(r.Attrs) {
				t.Fatalf("re-encoded response: %+v %v", r2, err)
			}
		}
		for _, caps := range []uint32{ClientProtocol41, ClientProtocol41 | ClientSessionTrack} {
			ParseOK(b, caps)
		}
		ParseERR(b, ClientProtocol41)
		ParseAuthSwitch(b)
		ParseStmtPrepareOK(b)
		ColumnCount(b)
		if c, err := ParseColumn(b); err == nil {
			if _, err := ParseColumn(c.Encode()); err != nil {
				t.Fatalf("re-encoded column: %v", err)
			}
		}
		if vals, err := DecodeTextRow(b, bytes.Count(b, []byte{0})); err == nil {
			if got := AppendTextRow(nil, vals); len(vals) > 0 && !bytes.Equal(got, b) && b[0] < 0xfb {
				// Lengths may be encoded longer than needed; the values
				// must survive.
				again, err := DecodeTextRow(got, len(vals))
				if err != nil || len(again) != len(vals) {
					t.Fatalf("text row round trip: %v", err)
				}
			}
		}
		cols := []*Column{{Type: TypeLong}, {Type: TypeVarString}, {Type: TypeDate}}
		if vals, err := DecodeBinaryRow(b, cols); err == nil {
			again, err := DecodeBinaryRow(AppendBinaryRow(nil, cols, vals), cols)
			if err != nil {
				t.Fatalf("binary row round trip: %v", err)
			}
			for i := range vals {
				if !bytes.Equal(again[i], vals[i]) || (again[i] == nil) != (vals[i] == nil) {
					t.Fatalf("binary row value %d changed", i)
				}
			}
		}
	})
}
