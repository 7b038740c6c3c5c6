package postgres

import (
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/wardenhq/warden/pkg/masking"
)

// Type OIDs whose values are text on the wire, in either format.
const (
	oidName    = 19
	oidText    = 25
	oidJSON    = 114
	oidXML     = 142
	oidUnknown = 705
	oidBpchar  = 1042
	oidVarchar = 1043
	oidJSONB   = 3802
)

// Type OIDs of arrays of the types above. Their text form holds text
// elements a detector can read and a replacement can go into; their
// binary form is framed by lengths a replacement would break.
const (
	oidNameArray    = 1003
	oidTextArray    = 1009
	oidBpcharArray  = 1014
	oidVarcharArray = 1015
	oidJSONArray    = 199
	oidJSONBArray   = 3807
	oidXMLArray     = 143
)

// formatBinary is the RowDescription format code of the binary format.
const formatBinary = 1

// jsonbVersion is the length of the version byte that starts a binary
// jsonb value, before its text.
const jsonbVersion = 1

// MaskFields returns the masking fields of a result's columns: each
// column's name and what its values are, from its type and format.
func MaskFields(rd *pgproto3.RowDescription) []masking.Field {
	if rd == nil {
		return nil
	}
	fields := make([]masking.Field, len(rd.Fields))
	for i, f := range rd.Fields {
		fields[i] = maskField(f.Name, f.DataTypeOID, f.Format == formatBinary)
	}
	return fields
}

// CopyFields returns the masking fields of a COPY TO STDOUT whose source
// query has the columns of rd. COPY text and CSV rows carry every value
// as untyped text, so binary formats do not apply and a JSON column
// masked by name reads as **** like any other text, not as a JSON string.
func CopyFields(rd *pgproto3.RowDescription) []masking.Field {
	if rd == nil {
		return nil
	}
	fields := make([]masking.Field, len(rd.Fields))
	for i, f := range rd.Fields {
		fields[i] = maskField(f.Name, f.DataTypeOID, false)
		if fields[i].Cell == masking.CellJSON {
			fields[i].Cell = masking.CellText
		}
	}
	return fields
}

// maskField maps one column's type and format to a masking field.
func maskField(name []byte, oid uint32, binary bool) masking.Field {
	f := masking.Field{Name: string(name), Cell: masking.CellOpaque}
	switch oid {
	case oidJSON:
		f.Cell = masking.CellJSON
	case oidJSONB:
		f.Cell = masking.CellJSON
		if binary {
			f.Prefix = jsonbVersion
		}
	case oidName, oidText, oidXML, oidUnknown, oidBpchar, oidVarchar:
		f.Cell = masking.CellText
	case oidNameArray, oidTextArray, oidBpcharArray, oidVarcharArray, oidJSONArray, oidJSONBArray, oidXMLArray:
		f.Cell = masking.CellText
		if binary {
			f.Cell = masking.CellBinary
		}
	default:
		if binary {
			f.Cell = masking.CellBinary
		}
	}
	return f
}
