package postgres

import (
	"bytes"

	"github.com/wardenhq/warden/pkg/masking"
)

// COPY text format framing: fields separated by tabs, \N for NULL, one
// row per newline-terminated line.
var (
	copyNull       = []byte(`\N`)
	copyFieldDelim = []byte{'\t'}
)

// MaskCopyText masks one row of COPY TO STDOUT text format (the body of
// one CopyData message) through p, field by field, and returns the new
// row, or line itself when nothing changed. line is never modified. A
// value masked to NULL is written as \N; other masked values hold no tab,
// backslash or newline, so they need no escaping. Build p from
// CopyFields.
func MaskCopyText(p *masking.Plan, line []byte) []byte {
	if p == nil {
		return line
	}
	body, nl := line, []byte(nil)
	if bytes.HasSuffix(body, []byte{'\n'}) {
		body, nl = body[:len(body)-1], []byte{'\n'}
	}
	fields := bytes.Split(body, copyFieldDelim)
	changed := false
	for i, f := range fields {
		if bytes.Equal(f, copyNull) {
			continue
		}
		out, hit := p.Cell(i, f)
		if !hit {
			continue
		}
		changed = true
		if out == nil {
			out = copyNull
		}
		fields[i] = out
	}
	if !changed {
		return line
	}
	out := bytes.Join(fields, copyFieldDelim)
	return append(out, nl...)
}

// MaskCopyCSV masks one row of COPY TO STDOUT CSV format, with the
// default delimiter, quote and NULL, through p, and returns the new row,
// or line itself when nothing changed. line is never modified. A masked
// field keeps its quoting, and is quoted when its new value needs it; a
// value masked to NULL becomes an unquoted empty field. Build p from
// CopyFields.
func MaskCopyCSV(p *masking.Plan, line []byte) []byte {
	if p == nil {
		return line
	}
	fields, nl := splitCSV(line)
	changed := false
	for i, f := range fields {
		if !f.quoted && len(f.raw) == 0 {
			continue // unquoted empty is NULL in CSV
		}
		out, hit := p.Cell(i, f.value)
		if !hit {
			continue
		}
		changed = true
		fields[i] = csvField{raw: csvQuote(out, f.quoted)}
	}
	if !changed {
		return line
	}
	var out []byte
	for i, f := range fields {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, f.raw...)
	}
	return append(out, nl...)
}

// csvQuote writes v as a CSV field, quoting it when it was quoted before
// or holds a delimiter, quote or line break. nil stays an unquoted empty
// field: NULL.
func csvQuote(v []byte, quoted bool) []byte {
	if v == nil {
		return nil
	}
	if !quoted && !bytes.ContainsAny(v, ",\"\r\n") {
		return v
	}
	out := []byte{'"'}
	out = append(out, bytes.ReplaceAll(v, []byte(`"`), []byte(`""`))...)
	return append(out, '"')
}

type csvField struct {
	raw    []byte // as written, quotes included
	value  []byte // unquoted
	quoted bool
}

// splitCSV splits one CSV record; quoted fields may hold commas, quotes
// (doubled) and newlines. It returns the fields and the line terminator.
func splitCSV(line []byte) ([]csvField, []byte) {
	var nl []byte
	if bytes.HasSuffix(line, []byte{'\n'}) {
		line, nl = line[:len(line)-1], []byte{'\n'}
		if bytes.HasSuffix(line, []byte{'\r'}) {
			line, nl = line[:len(line)-1], []byte("\r\n")
		}
	}
	var fields []csvField
	for i := 0; ; {
		start := i
		f := csvField{}
		if i < len(line) && line[i] == '"' {
			f.quoted = true
			i++
			for i < len(line) {
				if line[i] == '"' {
					if i+1 < len(line) && line[i+1] == '"' {
						f.value = append(f.value, '"')
						i += 2
						continue
					}
					i++
					break
				}
				f.value = append(f.value, line[i])
				i++
			}
			for i < len(line) && line[i] != ',' {
				i++
			}
		} else {
			for i < len(line) && line[i] != ',' {
				i++
			}
			f.value = line[start:i]
		}
		f.raw = line[start:i]
		fields = append(fields, f)
		if i >= len(line) {
			return fields, nl
		}
		i++ // the comma
	}
}
