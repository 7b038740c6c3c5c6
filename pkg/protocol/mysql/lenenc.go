package mysql

import (
	"encoding/binary"
	"errors"
)

// errShort is returned, wrapped with what was being read, for a payload
// that ends too early.
var errShort = errors.New("packet too short")

// decoder reads the protocol's basic types from a payload.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) left() int { return len(d.b) - d.off }

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || d.left() < n {
		d.fail(errShort)
		return nil
	}
	v := d.b[d.off : d.off+n]
	d.off += n
	return v
}

func (d *decoder) u8() byte {
	b := d.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (d *decoder) u16() uint16 {
	b := d.bytes(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (d *decoder) u24() uint32 {
	b := d.bytes(3)
	if b == nil {
		return 0
	}
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16
}

func (d *decoder) u32() uint32 {
	b := d.bytes(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

// nulString reads up to a NUL, which it consumes.
func (d *decoder) nulString() []byte {
	if d.err != nil {
		return nil
	}
	for i := d.off; i < len(d.b); i++ {
		if d.b[i] == 0 {
			v := d.b[d.off:i]
			d.off = i + 1
			return v
		}
	}
	d.fail(errShort)
	return nil
}

func (d *decoder) rest() []byte {
	if d.err != nil {
		return nil
	}
	v := d.b[d.off:]
	d.off = len(d.b)
	return v
}

// lenenc reads a length-encoded integer; null is set for 0xFB.
func (d *decoder) lenenc() (v uint64, null bool) {
	c := d.u8()
	switch {
	case d.err != nil:
		return 0, false
	case c < 0xfb:
		return uint64(c), false
	case c == 0xfb:
		return 0, true
	case c == 0xfc:
		return uint64(d.u16()), false
	case c == 0xfd:
		return uint64(d.u24()), false
	case c == 0xfe:
		b := d.bytes(8)
		if b == nil {
			return 0, false
		}
		return binary.LittleEndian.Uint64(b), false
	}
	d.fail(errors.New("invalid length-encoded integer 0xff"))
	return 0, false
}

// lenencString reads a length-encoded string; nil for NULL (0xFB).
func (d *decoder) lenencString() []byte {
	n, null := d.lenenc()
	if null || d.err != nil {
		return nil
	}
	if n > uint64(d.left()) {
		d.fail(errShort)
		return nil
	}
	v := d.bytes(int(n))
	if v == nil {
		v = []byte{}
	}
	return v
}

// AppendLenenc appends v as a length-encoded integer.
func AppendLenenc(b []byte, v uint64) []byte {
	switch {
	case v < 0xfb:
		return append(b, byte(v))
	case v <= 0xffff:
		return append(b, 0xfc, byte(v), byte(v>>8))
	case v <= 0xffffff:
		return append(b, 0xfd, byte(v), byte(v>>8), byte(v>>16))
	}
	b = append(b, 0xfe)
	return binary.LittleEndian.AppendUint64(b, v)
}

// AppendLenencString appends s as a length-encoded string.
func AppendLenencString(b, s []byte) []byte {
	return append(AppendLenenc(b, uint64(len(s))), s...)
}
