package rdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// request builds a Connection Request as clients send it: token (with its
// CRLF) then the negotiation request, if any.
func request(token string, neg []byte) []byte {
	body := append([]byte(token), neg...)
	pkt := []byte{3, 0, 0, 0, byte(6 + len(body)), tpduConnectionRequest, 0, 0, 0, 0, 0}
	pkt = append(pkt, body...)
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	return pkt
}

func negRequest(flags byte, protocols uint32) []byte {
	b := []byte{negReq, flags, 8, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[4:], protocols)
	return b
}

// A FreeRDP 2 request: cookie from /u, NLA, TLS and RDP offered.
var freerdp = []byte("\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=carol\r\n\x01\x00\x08\x00\x03\x00\x00\x00")

func TestParseConnectionRequest(t *testing.T) {
	cr, err := ParseConnectionRequest(freerdp)
	if err != nil || cr.Cookie != "carol" || !cr.Negotiated || cr.Requested != ProtocolSSL|ProtocolHybrid {
		t.Fatalf("FreeRDP request: %+v, %v", cr, err)
	}
	cr, err = ParseConnectionRequest(request("Cookie: msts=3640205228.15629.0000\r\n", negRequest(0, ProtocolSSL)))
	if err != nil || cr.Cookie != "" || cr.RoutingToken != "Cookie: msts=3640205228.15629.0000" || cr.Requested != ProtocolSSL {
		t.Fatalf("routing token: %+v, %v", cr, err)
	}
	cr, err = ParseConnectionRequest(request("Cookie: mstshash=legacy\r\n", nil))
	if err != nil || cr.Negotiated || cr.Requested != ProtocolRDP || cr.Cookie != "legacy" {
		t.Fatalf("legacy request: %+v, %v", cr, err)
	}
	corr := append(negRequest(flagCorrelationInfo, ProtocolHybridEx), append([]byte{correlationInfo, 0, 36, 0}, make([]byte, 32)...)...)
	cr, err = ParseConnectionRequest(request("", corr))
	if err != nil || !cr.Correlation || cr.Requested != ProtocolHybridEx {
		t.Fatalf("correlation info: %+v, %v", cr, err)
	}
}

func TestParseConnectionRequestErrors(t *testing.T) {
	bad := map[string][]byte{
		"length indicator":          func() []byte { b := slices.Clone(freerdp); b[4]--; return b }(),
		"TPKT length":               func() []byte { b := slices.Clone(freerdp); b[3]++; return b }(),
		"TPDU code":                 func() []byte { b := slices.Clone(freerdp); b[5] = tpduConnectionConfirm; return b }(),
		"without its CRLF":          request("Cookie: mstshash=carol", negRequest(0, 3)),
		"malformed RDP negotiation": request("Cookie: mstshash=c\r\n", []byte{negReq, 0, 9, 0, 3, 0, 0, 0}),
		"after the negotiation":     request("", append(negRequest(0, 3), 0)),
		"correlation info":          request("", negRequest(flagCorrelationInfo, 3)),
		"not a TPKT":                append([]byte{4}, freerdp[1:]...),
	}
	for want, pkt := range bad {
		if _, err := ParseConnectionRequest(pkt); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
}

func TestParseConnectionConfirm(t *testing.T) {
	// xrdp choosing TLS.
	sel := []byte("\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x01\x00\x00\x00")
	cc, err := ParseConnectionConfirm(sel)
	if err != nil || !cc.Negotiated || cc.Selected != ProtocolSSL || cc.Failed {
		t.Fatalf("TLS selected: %+v, %v", cc, err)
	}
	cc, err = ParseConnectionConfirm(NegotiationFailure(FailureHybridRequired))
	if err != nil || !cc.Failed || cc.FailureCode != FailureHybridRequired {
		t.Fatalf("our own failure: %+v, %v", cc, err)
	}
	cc, err = ParseConnectionConfirm([]byte("\x03\x00\x00\x0b\x06\xd0\x00\x00\x12\x34\x00"))
	if err != nil || cc.Negotiated || cc.Selected != ProtocolRDP {
		t.Fatalf("standard security: %+v, %v", cc, err)
	}
	if _, err := ParseConnectionConfirm(freerdp); err == nil {
		t.Fatal("a request read as a confirm")
	}
}

func TestReadTPKT(t *testing.T) {
	r := bytes.NewReader(append(slices.Clone(freerdp), "rest"...))
	pkt, err := ReadTPKT(r)
	if err != nil || !bytes.Equal(pkt, freerdp) {
		t.Fatalf("got %q, %v", pkt, err)
	}
	if _, err := ReadTPKT(bytes.NewReader(freerdp[:20])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short packet: %v", err)
	}
	if _, err := ReadTPKT(strings.NewReader("GET / HTTP/1.1\r\n")); err == nil {
		t.Fatal("HTTP read as TPKT")
	}
	if _, err := ReadTPKT(bytes.NewReader([]byte{3, 0, 0, 5, 0})); err == nil {
		t.Fatal("a 5-byte TPKT accepted")
	}
}

func TestProtocolNames(t *testing.T) {
	if got := ProtocolNames(ProtocolSSL | ProtocolHybrid | 0x100); !slices.Equal(got, []string{"ssl", "hybrid", "0x100"}) {
		t.Fatalf("got %q", got)
	}
	if ProtocolName(0) != "rdp" || ProtocolName(ProtocolHybridEx) != "hybrid_ex" {
		t.Fatal("single names")
	}
}
