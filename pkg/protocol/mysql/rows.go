package mysql

import (
	"encoding/binary"
	"fmt"

	"github.com/wardenhq/warden/pkg/masking"
)

// Column types (enum_field_types).
const (
	TypeDecimal    byte = 0x00
	TypeTiny       byte = 0x01
	TypeShort      byte = 0x02
	TypeLong       byte = 0x03
	TypeFloat      byte = 0x04
	TypeDouble     byte = 0x05
	TypeNull       byte = 0x06
	TypeTimestamp  byte = 0x07
	TypeLongLong   byte = 0x08
	TypeInt24      byte = 0x09
	TypeDate       byte = 0x0a
	TypeTime       byte = 0x0b
	TypeDatetime   byte = 0x0c
	TypeYear       byte = 0x0d
	TypeNewDate    byte = 0x0e
	TypeVarchar    byte = 0x0f
	TypeBit        byte = 0x10
	TypeTimestamp2 byte = 0x11
	TypeDatetime2  byte = 0x12
	TypeTime2      byte = 0x13
	TypeJSON       byte = 0xf5
	TypeNewDecimal byte = 0xf6
	TypeEnum       byte = 0xf7
	TypeSet        byte = 0xf8
	TypeTinyBlob   byte = 0xf9
	TypeMediumBlob byte = 0xfa
	TypeLongBlob   byte = 0xfb
	TypeBlob       byte = 0xfc
	TypeVarString  byte = 0xfd
	TypeString     byte = 0xfe
	TypeGeometry   byte = 0xff
)

// Column is the part of a ColumnDefinition41 that masking needs.
type Column struct {
	Schema, Table, OrgTable string
	// Name is the column's name in the result (its alias, if any);
	// OrgName the table column's, "" for an expression.
	Name, OrgName string
	Charset       uint16
	Length        uint32
	Type          byte
	Flags         uint16
	Decimals      byte
}

// ParseColumn decodes a ColumnDefinition41 payload.
func ParseColumn(p []byte) (*Column, error) {
	d := &decoder{b: p}
	d.lenencString() // catalog, always "def"
	c := &Column{Schema: string(d.lenencString()), Table: string(d.lenencString()), OrgTable: string(d.lenencString()),
		Name: string(d.lenencString()), OrgName: string(d.lenencString())}
	d.lenenc() // length of the fixed fields, 0x0c
	c.Charset, c.Length, c.Type, c.Flags, c.Decimals = d.u16(), d.u32(), d.u8(), d.u16(), d.u8()
	if d.err != nil {
		return nil, fmt.Errorf("column definition: %w", d.err)
	}
	return c, nil
}

// Encode returns a ColumnDefinition41 payload for c.
func (c *Column) Encode() []byte {
	b := AppendLenencString(nil, []byte("def"))
	for _, s := range []string{c.Schema, c.Table, c.OrgTable, c.Name, c.OrgName} {
		b = AppendLenencString(b, []byte(s))
	}
	b = append(b, 0x0c)
	b = binary.LittleEndian.AppendUint16(b, c.Charset)
	b = binary.LittleEndian.AppendUint32(b, c.Length)
	b = append(b, c.Type)
	b = binary.LittleEndian.AppendUint16(b, c.Flags)
	return append(b, c.Decimals, 0, 0)
}

// stringType reports whether values of type t are character or byte
// strings, sent as length-encoded strings in both row formats.
func stringType(t byte) bool {
	switch t {
	case TypeVarchar, TypeVarString, TypeString, TypeEnum, TypeSet,
		TypeTinyBlob, TypeMediumBlob, TypeLongBlob, TypeBlob, TypeJSON:
		return true
	}
	return false
}

// Field returns how masking sees the column in rows of the given format.
// Strings (binary strings too: a VARBINARY often holds text) are text;
// JSON is JSON. Anything else is opaque text in text rows, where a value
// masked becomes NULL, and binary in binary rows, except DECIMAL, which
// the binary format also sends as a string.
func (c *Column) Field(binaryRows bool) masking.Field {
	f := masking.Field{Name: c.Name}
	switch {
	case c.Type == TypeJSON:
		f.Cell = masking.CellJSON
	case stringType(c.Type):
		f.Cell = masking.CellText
	case binaryRows && c.Type != TypeDecimal && c.Type != TypeNewDecimal:
		f.Cell = masking.CellBinary
	default:
		f.Cell = masking.CellOpaque
	}
	return f
}

// DecodeTextRow splits a text-protocol row into its values; nil is NULL.
func DecodeTextRow(p []byte, ncols int) ([][]byte, error) {
	d := &decoder{b: p}
	values := make([][]byte, 0, ncols)
	for d.err == nil && d.left() > 0 {
		values = append(values, d.lenencString())
	}
	if d.err != nil {
		return nil, fmt.Errorf("text row: %w", d.err)
	}
	if len(values) != ncols {
		return nil, fmt.Errorf("text row: %d values for %d columns", len(values), ncols)
	}
	return values, nil
}

// AppendTextRow appends a text-protocol row holding values; nil is NULL.
func AppendTextRow(b []byte, values [][]byte) []byte {
	for _, v := range values {
		if v == nil {
			b = append(b, 0xfb)
			continue
		}
		b = AppendLenencString(b, v)
	}
	return b
}

// DecodeBinaryRow splits a binary-protocol row into its values, each in
// its wire form without the length prefix for strings: fixed-size
// numbers as their bytes, dates and times as their bytes after the
// length byte. nil is NULL.
func DecodeBinaryRow(p []byte, cols []*Column) ([][]byte, error) {
	d := &decoder{b: p}
	if h := d.u8(); d.err == nil && h != 0 {
		return nil, fmt.Errorf("binary row: header 0x%02x", h)
	}
	bitmap := d.bytes((len(cols) + 7 + 2) / 8)
	values := make([][]byte, len(cols))
	for i, c := range cols {
		if d.err != nil {
			break
		}
		if bit := i + 2; bitmap[bit/8]&(1<<(bit%8)) != 0 {
			continue
		}
		var v []byte
		switch c.Type {
		case TypeNull:
		case TypeTiny:
			v = d.bytes(1)
		case TypeShort, TypeYear:
			v = d.bytes(2)
		case TypeLong, TypeInt24, TypeFloat:
			v = d.bytes(4)
		case TypeLongLong, TypeDouble:
			v = d.bytes(8)
		case TypeDate, TypeDatetime, TypeTimestamp, TypeTime, TypeNewDate, TypeTimestamp2, TypeDatetime2, TypeTime2:
			v = d.bytes(int(d.u8()))
		default: // strings, DECIMAL, BIT, GEOMETRY: length-encoded
			v = d.lenencString()
		}
		if v == nil {
			v = []byte{}
		}
		values[i] = v
	}
	if d.err != nil {
		return nil, fmt.Errorf("binary row: %w", d.err)
	}
	if d.left() != 0 {
		return nil, fmt.Errorf("binary row: %d bytes after the last value", d.left())
	}
	return values, nil
}

// AppendBinaryRow appends a binary-protocol row; nil is NULL. A masked
// value of a fixed-size type can only be NULL (masking makes CellBinary
// values NULL), so a non-NULL value is written in its column's form.
func AppendBinaryRow(b []byte, cols []*Column, values [][]byte) []byte {
	b = append(b, 0)
	start := len(b)
	b = append(b, make([]byte, (len(cols)+7+2)/8)...)
	for i, c := range cols {
		v := values[i]
		if v == nil {
			bit := i + 2
			b[start+bit/8] |= 1 << (bit % 8)
			continue
		}
		switch c.Type {
		case TypeNull:
		case TypeTiny, TypeShort, TypeYear, TypeLong, TypeInt24, TypeFloat, TypeLongLong, TypeDouble:
			b = append(b, v...)
		case TypeDate, TypeDatetime, TypeTimestamp, TypeTime, TypeNewDate, TypeTimestamp2, TypeDatetime2, TypeTime2:
			b = append(b, byte(len(v)))
			b = append(b, v...)
		default:
			b = AppendLenencString(b, v)
		}
	}
	return b
}

// StmtPrepareOK is the first packet of a COM_STMT_PREPARE reply.
type StmtPrepareOK struct {
	StatementID uint32
	Columns     uint16
	Params      uint16
	Warnings    uint16
}

// ParseStmtPrepareOK decodes a COM_STMT_PREPARE_OK payload.
func ParseStmtPrepareOK(p []byte) (*StmtPrepareOK, error) {
	d := &decoder{b: p}
	if h := d.u8(); d.err == nil && h != HeaderOK {
		return nil, fmt.Errorf("COM_STMT_PREPARE_OK: header 0x%02x", h)
	}
	s := &StmtPrepareOK{StatementID: d.u32(), Columns: d.u16(), Params: d.u16()}
	d.u8()
	if d.left() >= 2 {
		s.Warnings = d.u16()
	}
	if d.err != nil {
		return nil, fmt.Errorf("COM_STMT_PREPARE_OK: %w", d.err)
	}
	return s, nil
}

// ColumnCount decodes the first packet of a result set.
func ColumnCount(p []byte) (uint64, error) {
	d := &decoder{b: p}
	n, null := d.lenenc()
	if d.err != nil || null || d.left() != 0 {
		return 0, fmt.Errorf("result set: bad column count packet")
	}
	return n, nil
}
