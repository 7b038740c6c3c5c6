package mysql

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Capability flags (the client's and the server's).
const (
	ClientLongPassword     uint32 = 1 << 0 // CLIENT_MYSQL on MariaDB: unset, the filler carries MariaDB's own flags
	ClientFoundRows        uint32 = 1 << 1
	ClientLongFlag         uint32 = 1 << 2
	ClientConnectWithDB    uint32 = 1 << 3
	ClientNoSchema         uint32 = 1 << 4
	ClientCompress         uint32 = 1 << 5
	ClientODBC             uint32 = 1 << 6
	ClientLocalFiles       uint32 = 1 << 7
	ClientIgnoreSpace      uint32 = 1 << 8
	ClientProtocol41       uint32 = 1 << 9
	ClientInteractive      uint32 = 1 << 10
	ClientSSL              uint32 = 1 << 11
	ClientIgnoreSigpipe    uint32 = 1 << 12
	ClientTransactions     uint32 = 1 << 13
	ClientReserved         uint32 = 1 << 14
	ClientSecureConnection uint32 = 1 << 15
	ClientMultiStatements  uint32 = 1 << 16
	ClientMultiResults     uint32 = 1 << 17
	ClientPSMultiResults   uint32 = 1 << 18
	ClientPluginAuth       uint32 = 1 << 19
	ClientConnectAttrs     uint32 = 1 << 20
	ClientPluginAuthLenenc uint32 = 1 << 21
	ClientCanHandleExpired uint32 = 1 << 22
	ClientSessionTrack     uint32 = 1 << 23
	ClientDeprecateEOF     uint32 = 1 << 24
	ClientOptionalMetadata uint32 = 1 << 25
	ClientZstdCompression  uint32 = 1 << 26
	ClientQueryAttributes  uint32 = 1 << 27
	ClientMultiFactorAuth  uint32 = 1 << 28
	ClientCapabilityExt    uint32 = 1 << 29
	ClientSSLVerifyServer  uint32 = 1 << 30
	ClientRememberOptions  uint32 = 1 << 31
)

// Server status flags.
const (
	StatusInTrans           uint16 = 1 << 0
	StatusAutocommit        uint16 = 1 << 1
	StatusMoreResultsExists uint16 = 1 << 3
	StatusCursorExists      uint16 = 1 << 6
	StatusLastRowSent       uint16 = 1 << 7
	StatusNoBackslashEscape uint16 = 1 << 9
	StatusSessionChanged    uint16 = 1 << 14
)

// Handshake is the server's Protocol::HandshakeV10.
type Handshake struct {
	ServerVersion string
	ConnectionID  uint32
	// AuthData is the scramble, both parts joined, without the trailing
	// NUL servers send after it.
	AuthData     []byte
	Capabilities uint32
	Charset      byte
	Status       uint16
	AuthPlugin   string
	// MariaDBCaps are MariaDB's extended capabilities, carried in the
	// filler when ClientLongPassword (CLIENT_MYSQL) is unset.
	MariaDBCaps uint32
}

// ParseHandshake decodes a HandshakeV10 payload. An ERR packet instead
// (the server refuses the connection) is returned as *ERR.
func ParseHandshake(p []byte) (*Handshake, error) {
	if len(p) > 0 && p[0] == 0xff {
		e, err := ParseERR(p, ClientProtocol41)
		if err != nil {
			return nil, fmt.Errorf("handshake: %w", err)
		}
		return nil, e
	}
	d := &decoder{b: p}
	if v := d.u8(); v != 10 {
		return nil, fmt.Errorf("handshake: protocol version %d, want 10", v)
	}
	h := &Handshake{ServerVersion: string(d.nulString()), ConnectionID: d.u32()}
	h.AuthData = append([]byte(nil), d.bytes(8)...)
	d.u8()
	h.Capabilities = uint32(d.u16())
	if d.err != nil {
		return nil, fmt.Errorf("handshake: %w", d.err)
	}
	if d.left() == 0 {
		return h, nil
	}
	h.Charset = d.u8()
	h.Status = d.u16()
	h.Capabilities |= uint32(d.u16()) << 16
	authLen := int(d.u8())
	filler := d.bytes(10)
	if d.err != nil {
		return nil, fmt.Errorf("handshake: %w", d.err)
	}
	if h.Capabilities&ClientLongPassword == 0 {
		h.MariaDBCaps = binary.LittleEndian.Uint32(filler[6:])
	}
	if h.Capabilities&ClientSecureConnection != 0 {
		n := max(13, authLen-8)
		part := d.bytes(min(n, d.left()))
		if len(part) > 0 && part[len(part)-1] == 0 {
			part = part[:len(part)-1]
		}
		h.AuthData = append(h.AuthData, part...)
	}
	if h.Capabilities&ClientPluginAuth != 0 {
		rest := d.rest()
		if i := indexByte(rest, 0); i >= 0 {
			rest = rest[:i]
		}
		h.AuthPlugin = string(rest)
	}
	if d.err != nil {
		return nil, fmt.Errorf("handshake: %w", d.err)
	}
	return h, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// Encode returns the HandshakeV10 payload.
func (h *Handshake) Encode() []byte {
	b := []byte{10}
	b = append(b, h.ServerVersion...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, h.ConnectionID)
	auth := h.AuthData
	var part1 [8]byte
	copy(part1[:], auth)
	b = append(b, part1[:]...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(h.Capabilities))
	b = append(b, h.Charset)
	b = binary.LittleEndian.AppendUint16(b, h.Status)
	b = binary.LittleEndian.AppendUint16(b, uint16(h.Capabilities>>16))
	if h.Capabilities&ClientPluginAuth != 0 {
		b = append(b, byte(len(auth)+1))
	} else {
		b = append(b, 0)
	}
	var filler [10]byte
	if h.Capabilities&ClientLongPassword == 0 {
		binary.LittleEndian.PutUint32(filler[6:], h.MariaDBCaps)
	}
	b = append(b, filler[:]...)
	if h.Capabilities&ClientSecureConnection != 0 {
		part2 := []byte{}
		if len(auth) > 8 {
			part2 = append(part2, auth[8:]...)
		}
		for len(part2) < 12 {
			part2 = append(part2, 0)
		}
		b = append(b, part2...)
		b = append(b, 0)
	}
	if h.Capabilities&ClientPluginAuth != 0 {
		b = append(b, h.AuthPlugin...)
		b = append(b, 0)
	}
	return b
}

// Attr is one connection attribute.
type Attr struct{ Key, Value string }

// HandshakeResponse is the client's Protocol::HandshakeResponse41, or the
// SSLRequest that precedes it on TLS connections (SSL set, nothing after
// the fixed part).
type HandshakeResponse struct {
	Capabilities uint32
	MaxPacket    uint32
	Charset      byte
	// MariaDBCaps are MariaDB's extended capabilities (see Handshake).
	MariaDBCaps  uint32
	User         string
	AuthResponse []byte
	Database     string
	AuthPlugin   string
	Attrs        []Attr
	// SSLRequest is set when the payload held only the fixed part.
	SSLRequest bool
}

// ParseHandshakeResponse decodes a HandshakeResponse41 or an SSLRequest.
func ParseHandshakeResponse(p []byte) (*HandshakeResponse, error) {
	d := &decoder{b: p}
	r := &HandshakeResponse{Capabilities: d.u32(), MaxPacket: d.u32(), Charset: d.u8()}
	filler := d.bytes(23)
	if d.err != nil {
		return nil, fmt.Errorf("handshake response: %w", d.err)
	}
	if r.Capabilities&ClientProtocol41 == 0 {
		return nil, errors.New("handshake response: the client does not speak protocol 4.1")
	}
	if r.Capabilities&ClientLongPassword == 0 {
		r.MariaDBCaps = binary.LittleEndian.Uint32(filler[19:])
	}
	if d.left() == 0 {
		if r.Capabilities&ClientSSL == 0 {
			return nil, errors.New("handshake response: no user name")
		}
		r.SSLRequest = true
		return r, nil
	}
	r.User = string(d.nulString())
	switch {
	case r.Capabilities&ClientPluginAuthLenenc != 0:
		r.AuthResponse = append([]byte(nil), d.lenencString()...)
	case r.Capabilities&ClientSecureConnection != 0:
		r.AuthResponse = append([]byte(nil), d.bytes(int(d.u8()))...)
	default:
		r.AuthResponse = append([]byte(nil), d.nulString()...)
	}
	if r.Capabilities&ClientConnectWithDB != 0 && d.left() > 0 {
		r.Database = string(d.nulString())
	}
	if r.Capabilities&ClientPluginAuth != 0 && d.left() > 0 {
		rest := d.b[d.off:]
		i := indexByte(rest, 0)
		if i < 0 {
			i = len(rest)
			d.off = len(d.b)
		} else {
			d.off += i + 1
		}
		r.AuthPlugin = string(rest[:i])
	}
	if r.Capabilities&ClientConnectAttrs != 0 && d.left() > 0 {
		n, _ := d.lenenc()
		attrs := &decoder{b: d.bytes(int(min(n, uint64(d.left()))))}
		if d.err == nil && uint64(len(attrs.b)) != n {
			d.fail(errShort)
		}
		for d.err == nil && attrs.left() > 0 {
			k := attrs.lenencString()
			v := attrs.lenencString()
			if attrs.err != nil {
				d.fail(fmt.Errorf("connection attributes: %w", attrs.err))
				break
			}
			r.Attrs = append(r.Attrs, Attr{string(k), string(v)})
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("handshake response: %w", d.err)
	}
	return r, nil
}

// Encode returns the payload: the SSLRequest's fixed part alone when
// SSLRequest is set, else the whole response.
func (r *HandshakeResponse) Encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, r.Capabilities)
	b = binary.LittleEndian.AppendUint32(b, r.MaxPacket)
	b = append(b, r.Charset)
	var filler [23]byte
	if r.Capabilities&ClientLongPassword == 0 {
		binary.LittleEndian.PutUint32(filler[19:], r.MariaDBCaps)
	}
	b = append(b, filler[:]...)
	if r.SSLRequest {
		return b
	}
	b = append(b, r.User...)
	b = append(b, 0)
	switch {
	case r.Capabilities&ClientPluginAuthLenenc != 0:
		b = AppendLenencString(b, r.AuthResponse)
	case r.Capabilities&ClientSecureConnection != 0:
		b = append(b, byte(len(r.AuthResponse)))
		b = append(b, r.AuthResponse...)
	default:
		b = append(b, r.AuthResponse...)
		b = append(b, 0)
	}
	if r.Capabilities&ClientConnectWithDB != 0 {
		b = append(b, r.Database...)
		b = append(b, 0)
	}
	if r.Capabilities&ClientPluginAuth != 0 {
		b = append(b, r.AuthPlugin...)
		b = append(b, 0)
	}
	if r.Capabilities&ClientConnectAttrs != 0 {
		var attrs []byte
		for _, a := range r.Attrs {
			attrs = AppendLenencString(attrs, []byte(a.Key))
			attrs = AppendLenencString(attrs, []byte(a.Value))
		}
		b = AppendLenencString(b, attrs)
	}
	return b
}

// SSLRequestFor returns the SSLRequest a client sends before switching to
// TLS, with the capabilities and charset of the response that follows.
func SSLRequestFor(r *HandshakeResponse) []byte {
	s := *r
	s.SSLRequest = true
	s.Capabilities |= ClientSSL
	return s.Encode()
}
