// Package rdp reads the first exchange of an RDP connection: the client's
// TPKT/X.224 Connection Request with its cookie or routing token and RDP
// Negotiation Request ([MS-RDPBCGR] 2.2.1.1), and the server's Connection
// Confirm with its RDP Negotiation Response or Failure (2.2.1.2). After
// that exchange the connection turns to TLS (or CredSSP over TLS), which
// the proxy does not open: it relays it. Pure wire code; the proxy's RDP
// codec (agent/proxy/rdp) decides what to do with it.
package rdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Security protocols, the bits of requestedProtocols and the values of
// selectedProtocol.
const (
	ProtocolRDP      uint32 = 0x00 // standard RDP security: no TLS, no NLA
	ProtocolSSL      uint32 = 0x01 // TLS
	ProtocolHybrid   uint32 = 0x02 // CredSSP (NLA)
	ProtocolRDSTLS   uint32 = 0x04
	ProtocolHybridEx uint32 = 0x08 // CredSSP with an Early User Authorization Result
	ProtocolRDSAAD   uint32 = 0x10
)

// NLA is the set of protocols that authenticate the user before the
// server gives them a session (Network Level Authentication).
const NLA = ProtocolHybrid | ProtocolHybridEx

// Negotiation failure codes (RDP_NEG_FAILURE failureCode).
const (
	FailureSSLRequired             uint32 = 0x01
	FailureSSLNotAllowed           uint32 = 0x02
	FailureSSLCertNotOnServer      uint32 = 0x03
	FailureInconsistentFlags       uint32 = 0x04
	FailureHybridRequired          uint32 = 0x05
	FailureSSLWithUserAuthRequired uint32 = 0x06
)

// TPDU codes and negotiation structure types.
const (
	tpduConnectionRequest = 0xE0
	tpduConnectionConfirm = 0xD0
	negReq                = 0x01
	negRsp                = 0x02
	negFailure            = 0x03
	correlationInfo       = 0x06
	flagCorrelationInfo   = 0x08
)

// MaxTPKT is the largest TPKT packet: its length field is 16 bits.
const MaxTPKT = 0xFFFF

// ReadTPKT reads one TPKT packet (version 3) and returns it whole, header
// included.
func ReadTPKT(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != 3 {
		return nil, fmt.Errorf("not a TPKT packet (version byte 0x%02x, want 0x03)", hdr[0])
	}
	n := int(binary.BigEndian.Uint16(hdr[2:]))
	if n < 11 {
		return nil, fmt.Errorf("TPKT length %d is too short for an X.224 connection TPDU", n)
	}
	pkt := make([]byte, n)
	copy(pkt, hdr[:])
	if _, err := io.ReadFull(r, pkt[4:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("TPKT body: %w", err)
	}
	return pkt, nil
}

// tpdu checks pkt's TPKT and X.224 headers for a connection TPDU of code
// and returns the variable part after the fixed header.
func tpdu(pkt []byte, code byte, what string) ([]byte, error) {
	if len(pkt) < 11 || pkt[0] != 3 {
		return nil, fmt.Errorf("%s: not a TPKT packet", what)
	}
	if n := int(binary.BigEndian.Uint16(pkt[2:])); n != len(pkt) {
		return nil, fmt.Errorf("%s: TPKT length %d, packet %d bytes", what, n, len(pkt))
	}
	li := int(pkt[4])
	if li != len(pkt)-5 {
		// The length indicator covers the whole rest of the TPDU: a
		// disagreement is a packet two readers could read differently.
		return nil, fmt.Errorf("%s: X.224 length indicator %d, want %d", what, li, len(pkt)-5)
	}
	if pkt[5]&0xF0 != code {
		return nil, fmt.Errorf("%s: X.224 TPDU code 0x%02x, want 0x%02x", what, pkt[5]&0xF0, code)
	}
	return pkt[11:], nil
}

// ConnectionRequest is what a client's X.224 Connection Request says.
// Every field is the client's assertion: nothing in it is authenticated.
type ConnectionRequest struct {
	// Cookie is the mstshash cookie, usually the user name typed into
	// the client; "" when there is none.
	Cookie string
	// RoutingToken is a load balancer's routing token (msts=...), or any
	// other CRLF-terminated token the client put in the request.
	RoutingToken string
	// Negotiated is set when the request carries an RDP Negotiation
	// Request; without one the client speaks standard RDP security only.
	Negotiated bool
	// Flags are the negotiation request's flags.
	Flags byte
	// Requested are the security protocols the client offers (Protocol*
	// bits; ProtocolRDP without negotiation).
	Requested uint32
	// Correlation is set when the client sent a correlation id.
	Correlation bool
}

// ParseConnectionRequest parses a client's first packet, as ReadTPKT
// returned it.
func ParseConnectionRequest(pkt []byte) (*ConnectionRequest, error) {
	rest, err := tpdu(pkt, tpduConnectionRequest, "connection request")
	if err != nil {
		return nil, err
	}
	cr := &ConnectionRequest{}
	// The token, if any, runs to the first CRLF. A negotiation request
	// starts with 0x01 and has no CRLF of its own before its end.
	if len(rest) > 0 && rest[0] != negReq {
		end := bytes.Index(rest, []byte("\r\n"))
		if end < 0 {
			return nil, errors.New("connection request: cookie or routing token without its CRLF")
		}
		tok := string(rest[:end])
		rest = rest[end+2:]
		switch {
		case len(tok) > len("Cookie: mstshash=") && tok[:len("Cookie: mstshash=")] == "Cookie: mstshash=":
			cr.Cookie = tok[len("Cookie: mstshash="):]
		default:
			cr.RoutingToken = tok
		}
	}
	if len(rest) == 0 {
		return cr, nil
	}
	if len(rest) < 8 || rest[0] != negReq || binary.LittleEndian.Uint16(rest[2:]) != 8 {
		return nil, errors.New("connection request: malformed RDP negotiation request")
	}
	cr.Negotiated = true
	cr.Flags = rest[1]
	cr.Requested = binary.LittleEndian.Uint32(rest[4:])
	rest = rest[8:]
	if cr.Flags&flagCorrelationInfo != 0 {
		if len(rest) < 36 || rest[0] != correlationInfo || binary.LittleEndian.Uint16(rest[2:]) != 36 {
			return nil, errors.New("connection request: malformed correlation info")
		}
		cr.Correlation = true
		rest = rest[36:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("connection request: %d bytes after the negotiation request", len(rest))
	}
	return cr, nil
}

// ConnectionConfirm is what a server's X.224 Connection Confirm says.
type ConnectionConfirm struct {
	// Negotiated is set when the confirm carries an RDP Negotiation
	// Response; without one (and without a failure) the server chose
	// standard RDP security.
	Negotiated bool
	// Flags are the response's or failure's flags.
	Flags byte
	// Selected is the security protocol the server chose.
	Selected uint32
	// Failed is set for an RDP Negotiation Failure, with its code.
	Failed      bool
	FailureCode uint32
}

// ParseConnectionConfirm parses a server's first packet.
func ParseConnectionConfirm(pkt []byte) (*ConnectionConfirm, error) {
	rest, err := tpdu(pkt, tpduConnectionConfirm, "connection confirm")
	if err != nil {
		return nil, err
	}
	cc := &ConnectionConfirm{}
	if len(rest) == 0 {
		return cc, nil
	}
	if len(rest) != 8 || binary.LittleEndian.Uint16(rest[2:]) != 8 {
		return nil, errors.New("connection confirm: malformed RDP negotiation response")
	}
	cc.Flags = rest[1]
	switch rest[0] {
	case negRsp:
		cc.Negotiated = true
		cc.Selected = binary.LittleEndian.Uint32(rest[4:])
	case negFailure:
		cc.Failed = true
		cc.FailureCode = binary.LittleEndian.Uint32(rest[4:])
	default:
		return nil, fmt.Errorf("connection confirm: negotiation structure type 0x%02x", rest[0])
	}
	return cc, nil
}

// NegotiationFailure returns a Connection Confirm carrying an RDP
// Negotiation Failure with code: how a server refuses a client's security
// protocols, and the only refusal an RDP client shows before TLS.
func NegotiationFailure(code uint32) []byte {
	pkt := []byte{
		3, 0, 0, 19, // TPKT, length 19
		14, tpduConnectionConfirm, 0, 0, 0, 0, 0, // X.224 CC: LI 14, dst-ref, src-ref, class 0
		negFailure, 0, 8, 0, 0, 0, 0, 0,
	}
	binary.LittleEndian.PutUint32(pkt[15:], code)
	return pkt
}

// ProtocolNames names the protocols of a requestedProtocols bit set, for
// records: "rdp" for none, then "ssl", "hybrid", "rdstls", "hybrid_ex",
// "rdsaad", and unknown bits as hex.
func ProtocolNames(p uint32) []string {
	if p == 0 {
		return []string{"rdp"}
	}
	var out []string
	for _, b := range []struct {
		bit  uint32
		name string
	}{{ProtocolSSL, "ssl"}, {ProtocolHybrid, "hybrid"}, {ProtocolRDSTLS, "rdstls"}, {ProtocolHybridEx, "hybrid_ex"}, {ProtocolRDSAAD, "rdsaad"}} {
		if p&b.bit != 0 {
			out = append(out, b.name)
			p &^= b.bit
		}
	}
	if p != 0 {
		out = append(out, fmt.Sprintf("0x%x", p))
	}
	return out
}

// ProtocolName names one selected protocol.
func ProtocolName(p uint32) string {
	names := ProtocolNames(p)
	if len(names) == 1 {
		return names[0]
	}
	return fmt.Sprintf("0x%x", p)
}
