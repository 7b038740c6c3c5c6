package mysql

import (
	"encoding/binary"
	"fmt"
)

// Packet headers.
const (
	HeaderOK          = 0x00
	HeaderAuthMore    = 0x01 // AuthMoreData
	HeaderLocalInfile = 0xfb
	HeaderEOF         = 0xfe // EOF, and AuthSwitchRequest during login
	HeaderERR         = 0xff
)

// OK is an OK_Packet (or the OK that ends a result set under
// CLIENT_DEPRECATE_EOF, whose header is 0xFE).
type OK struct {
	AffectedRows uint64
	LastInsertID uint64
	Status       uint16
	Warnings     uint16
	Info         string
	// SessionState is the raw session state information, present when
	// Status has StatusSessionChanged.
	SessionState []byte
}

// ParseOK decodes an OK packet under the capabilities caps.
func ParseOK(p []byte, caps uint32) (*OK, error) {
	d := &decoder{b: p}
	if h := d.u8(); h != HeaderOK && h != HeaderEOF {
		return nil, fmt.Errorf("OK packet: header 0x%02x", h)
	}
	ok := &OK{}
	ok.AffectedRows, _ = d.lenenc()
	ok.LastInsertID, _ = d.lenenc()
	if caps&ClientProtocol41 != 0 {
		ok.Status, ok.Warnings = d.u16(), d.u16()
	}
	if d.err == nil && d.left() > 0 {
		if caps&ClientSessionTrack != 0 {
			ok.Info = string(d.lenencString())
			if ok.Status&StatusSessionChanged != 0 && d.left() > 0 {
				ok.SessionState = append([]byte(nil), d.lenencString()...)
			}
		} else {
			ok.Info = string(d.rest())
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("OK packet: %w", d.err)
	}
	return ok, nil
}

// Encode returns the OK packet's payload under caps, with header (0x00, or
// 0xFE for the end of a result set under CLIENT_DEPRECATE_EOF).
func (ok *OK) Encode(header byte, caps uint32) []byte {
	b := AppendLenenc([]byte{header}, ok.AffectedRows)
	b = AppendLenenc(b, ok.LastInsertID)
	if caps&ClientProtocol41 != 0 {
		b = binary.LittleEndian.AppendUint16(b, ok.Status)
		b = binary.LittleEndian.AppendUint16(b, ok.Warnings)
	}
	if caps&ClientSessionTrack != 0 {
		if ok.Info != "" || ok.Status&StatusSessionChanged != 0 {
			b = AppendLenencString(b, []byte(ok.Info))
		}
		if ok.Status&StatusSessionChanged != 0 {
			b = AppendLenencString(b, ok.SessionState)
		}
	} else {
		b = append(b, ok.Info...)
	}
	return b
}

// ERR is an ERR_Packet.
type ERR struct {
	Code    uint16
	State   string // SQLSTATE, five characters
	Message string
}

// Error makes *ERR an error: the server's refusal, as the server worded it.
func (e *ERR) Error() string {
	return fmt.Sprintf("mysql error %d (%s): %s", e.Code, e.State, e.Message)
}

// ParseERR decodes an ERR packet. A SQLSTATE marker is read whenever
// present, whatever caps says: servers send one from the handshake on.
func ParseERR(p []byte, caps uint32) (*ERR, error) {
	d := &decoder{b: p}
	if h := d.u8(); h != HeaderERR {
		return nil, fmt.Errorf("ERR packet: header 0x%02x", h)
	}
	e := &ERR{Code: d.u16()}
	if d.err == nil && d.left() >= 6 && d.b[d.off] == '#' {
		d.u8()
		e.State = string(d.bytes(5))
	}
	e.Message = string(d.rest())
	if d.err != nil {
		return nil, fmt.Errorf("ERR packet: %w", d.err)
	}
	return e, nil
}

// Encode returns the ERR packet's payload.
func (e *ERR) Encode() []byte {
	b := binary.LittleEndian.AppendUint16([]byte{HeaderERR}, e.Code)
	state := e.State
	if len(state) != 5 {
		state = "HY000"
	}
	b = append(b, '#')
	b = append(b, state...)
	return append(b, e.Message...)
}

// IsEOF reports whether p is an EOF packet (or the OK that replaces it
// under CLIENT_DEPRECATE_EOF): header 0xFE and shorter than a row whose
// first value is a length-encoded string of 2^24 bytes or more, which also
// starts with 0xFE.
func IsEOF(p []byte) bool {
	return len(p) > 0 && p[0] == HeaderEOF && len(p) < 0xffffff
}

// IsERR reports whether p is an ERR packet.
func IsERR(p []byte) bool { return len(p) > 0 && p[0] == HeaderERR }

// EOFStatus returns the status flags of an EOF packet, or of the OK that
// ends a result set under CLIENT_DEPRECATE_EOF.
func EOFStatus(p []byte, caps uint32) uint16 {
	if caps&ClientDeprecateEOF != 0 {
		if ok, err := ParseOK(p, caps); err == nil {
			return ok.Status
		}
		return 0
	}
	if len(p) >= 5 {
		return binary.LittleEndian.Uint16(p[3:])
	}
	return 0
}

// EOF returns a legacy EOF packet's payload.
func EOF(warnings, status uint16) []byte {
	b := binary.LittleEndian.AppendUint16([]byte{HeaderEOF}, warnings)
	return binary.LittleEndian.AppendUint16(b, status)
}
