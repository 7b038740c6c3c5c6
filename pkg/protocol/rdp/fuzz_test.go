package rdp

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzX224 feeds arbitrary bytes to the TPKT reader and both connection
// TPDU parsers: none may panic, a packet they accept must be exactly as
// long as it says, and a parsed request's protocols are what its bytes
// say, so a require_nla decision rests on the bytes the server will read.
func FuzzX224(f *testing.F) {
	f.Add(freerdp)
	f.Add(request("Cookie: msts=1.2.3\r\n", negRequest(0, ProtocolSSL)))
	f.Add(request("", nil))
	f.Add(NegotiationFailure(FailureHybridRequired))
	f.Add([]byte("\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pkt, err := ReadTPKT(bytes.NewReader(b))
		if err == nil && int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			t.Fatalf("TPKT of %d bytes says %d", len(pkt), binary.BigEndian.Uint16(pkt[2:]))
		}
		if cr, err := ParseConnectionRequest(b); err == nil {
			if len(b) != int(binary.BigEndian.Uint16(b[2:])) || int(b[4]) != len(b)-5 {
				t.Fatal("accepted a request whose lengths disagree")
			}
			if cr.Negotiated {
				i := len(b) - 8
				if cr.Correlation {
					i -= 36
				}
				if b[i] != negReq || binary.LittleEndian.Uint32(b[i+4:]) != cr.Requested {
					t.Fatalf("requested protocols %x not from the negotiation request's bytes", cr.Requested)
				}
			}
			ProtocolNames(cr.Requested)
		}
		if cc, err := ParseConnectionConfirm(b); err == nil && cc.Failed {
			if !bytes.Equal(NegotiationFailure(cc.FailureCode)[15:], b[len(b)-4:]) {
				t.Fatal("failure code not from its bytes")
			}
		}
	})
}
