package postgres

import (
	"encoding/binary"
	"errors"
)

// errShortDataRow means a DataRow body ends before its values do.
var errShortDataRow = errors.New("short DataRow")

// DecodeDataRow splits a DataRow body into its values without copying: a
// nil value is SQL NULL. The values alias body.
func DecodeDataRow(body []byte) ([][]byte, error) {
	return DecodeDataRowInto(nil, body)
}

// DecodeDataRowInto is DecodeDataRow reusing dst's memory for the values,
// so that a proxy masking a long result allocates nothing per row.
func DecodeDataRowInto(dst [][]byte, body []byte) ([][]byte, error) {
	if len(body) < 2 {
		return nil, errShortDataRow
	}
	n := int(binary.BigEndian.Uint16(body))
	values := dst[:0]
	if cap(values) < n {
		values = make([][]byte, n)
	}
	values = values[:n]
	clear(values)
	rest := body[2:]
	for i := range values {
		if len(rest) < 4 {
			return nil, errShortDataRow
		}
		l := int32(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		if l < 0 {
			continue
		}
		if int(l) > len(rest) {
			return nil, errShortDataRow
		}
		values[i] = rest[:l:l]
		rest = rest[l:]
	}
	return values, nil
}

// AppendDataRow appends the DataRow body holding values (nil for NULL) to
// dst.
func AppendDataRow(dst []byte, values [][]byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(values)))
	for _, v := range values {
		if v == nil {
			dst = binary.BigEndian.AppendUint32(dst, 0xFFFFFFFF)
			continue
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	return dst
}
