package masking

import (
	"bytes"
	"slices"
	"strings"

	"github.com/wardenhq/warden/pkg/policy"
)

// Whole is what a column masked by name reads as.
const Whole = "****"

// Masker applies the masking entries in force for one identity on one
// target. A nil *Masker masks nothing.
type Masker struct {
	columns   map[string]bool // lower-case column names
	detectors []*Detector
}

// New builds the masker for the entries that apply to a target (as
// Policy.MaskingFor returns them), skipping those the identity's groups
// are exempt from. It returns nil when nothing is left to mask. Detector
// names were validated by the policy parser; unknown ones are ignored.
func New(entries []policy.Masking, groups []string) *Masker {
	m := &Masker{columns: map[string]bool{}}
	for _, e := range entries {
		if e.Exempt(groups) {
			continue
		}
		for _, c := range e.Columns {
			m.columns[strings.ToLower(c)] = true
		}
		for _, name := range e.Detectors {
			if d, ok := Lookup(name); ok && !slices.Contains(m.detectors, d) {
				m.detectors = append(m.detectors, d)
			}
		}
	}
	if len(m.columns) == 0 && len(m.detectors) == 0 {
		return nil
	}
	// Apply in the canonical order whatever order the policy lists them.
	slices.SortFunc(m.detectors, func(a, b *Detector) int {
		return slices.Index(all, a) - slices.Index(all, b)
	})
	return m
}

// Column reports whether the column called name (lower case) is masked
// whole.
func (m *Masker) Column(name string) bool { return m != nil && m.columns[name] }

// HasColumns reports whether any column is masked by name.
func (m *Masker) HasColumns() bool { return m != nil && len(m.columns) > 0 }

// Redact replaces every detected value in v with "[masked:<detector>]". It
// returns v itself, unchanged, when nothing matched, and never modifies v.
func (m *Masker) Redact(v []byte) ([]byte, bool) {
	if m == nil {
		return v, false
	}
	hit := false
	for _, d := range m.detectors {
		spans := d.Find(v)
		if len(spans) == 0 {
			continue
		}
		out := make([]byte, 0, len(v)+16*len(spans))
		prev := 0
		for _, s := range spans {
			out = append(out, v[prev:s[0]]...)
			out = append(out, "[masked:"...)
			out = append(out, d.Name...)
			out = append(out, ']')
			prev = s[1]
		}
		v = append(out, v[prev:]...)
		hit = true
	}
	return v, hit
}

// RedactString is Redact for strings: error and notice texts.
func (m *Masker) RedactString(s string) string {
	if m == nil || s == "" {
		return s
	}
	if out, hit := m.Redact([]byte(s)); hit {
		return string(out)
	}
	return s
}

// Field describes one result column.
type Field struct {
	// Name is the column name from RowDescription.
	Name string
	// TypeOID is the column's type.
	TypeOID uint32
	// Binary is true for the binary wire format.
	Binary bool
	// Derived marks a column that reads a masked column under another
	// name or through an expression (see sqlguard.Statement.Derived).
	Derived bool
}

type action uint8

const (
	keep action = iota
	whole
	detect
)

type column struct {
	action action
	// textual: detected values can be replaced in place; otherwise a hit
	// turns the value into NULL, the only value valid for every type.
	textual bool
	// jsonbPrefix: binary jsonb carries a version byte before the text.
	jsonbPrefix bool
	json        bool
}

// Plan is the masking of one result shape, computed once per
// RowDescription and applied to every row.
type Plan struct {
	m    *Masker
	cols []column
	// Masked flags the columns that were masked in at least one row.
	Masked []bool
	fields []Field
}

// Type OIDs whose values are text on the wire.
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

func textualType(oid uint32) bool {
	switch oid {
	case oidName, oidText, oidJSON, oidXML, oidUnknown, oidBpchar, oidVarchar, oidJSONB:
		return true
	}
	return false
}

// arrayOfText lists array types whose text form holds text elements.
func arrayOfText(oid uint32) bool {
	switch oid {
	case 1003, 1009, 1014, 1015, 199, 3807, 143: // name[], text[], bpchar[], varchar[], json[], jsonb[], xml[]
		return true
	}
	return false
}

// Plan returns how to mask rows of the given shape, or nil when no column
// needs masking: the caller then forwards rows untouched.
func (m *Masker) Plan(fields []Field) *Plan {
	if m == nil {
		return nil
	}
	p := &Plan{m: m, cols: make([]column, len(fields)), Masked: make([]bool, len(fields)), fields: fields}
	active := false
	for i, f := range fields {
		c := &p.cols[i]
		c.json = f.TypeOID == oidJSON || f.TypeOID == oidJSONB
		if f.Binary {
			c.textual = textualType(f.TypeOID)
			c.jsonbPrefix = f.TypeOID == oidJSONB
		} else {
			c.textual = textualType(f.TypeOID) || arrayOfText(f.TypeOID)
		}
		switch {
		case f.Derived || m.columns[strings.ToLower(f.Name)]:
			c.action = whole
		case len(m.detectors) > 0 && (!f.Binary || c.textual):
			// Binary values of other types (integers, timestamps, ...)
			// are not text a detector could read.
			c.action = detect
		}
		if c.action != keep {
			active = true
		}
	}
	if !active {
		return nil
	}
	return p
}

// MaskedNames returns the names of the columns masked so far.
func (p *Plan) MaskedNames() []string {
	if p == nil {
		return nil
	}
	var out []string
	for i, m := range p.Masked {
		if m && !slices.Contains(out, p.fields[i].Name) {
			out = append(out, p.fields[i].Name)
		}
	}
	return out
}

// Row masks one row in place: values[i] is replaced, never written
// through, so the caller's buffer is left alone. nil is SQL NULL. It
// reports whether anything changed.
func (p *Plan) Row(values [][]byte) bool {
	if p == nil {
		return false
	}
	changed := false
	for i, v := range values {
		if i >= len(p.cols) || v == nil {
			continue
		}
		c := p.cols[i]
		switch c.action {
		case whole:
			values[i] = c.wholeValue()
			p.Masked[i], changed = true, true
		case detect:
			body, prefix := v, []byte(nil)
			if c.jsonbPrefix && len(v) > 0 {
				body, prefix = v[1:], v[:1]
			}
			out, hit := p.m.Redact(body)
			if !hit {
				continue
			}
			if c.textual {
				values[i] = append(slices.Clip(prefix), out...)
			} else {
				values[i] = nil
			}
			p.Masked[i], changed = true, true
		}
	}
	return changed
}

var (
	wholeText      = []byte(Whole)
	wholeJSON      = []byte(`"` + Whole + `"`)
	wholeJSONBBin  = append([]byte{1}, wholeJSON...)
	copyNull       = []byte(`\N`)
	copyFieldDelim = []byte{'\t'}
)

func (c column) wholeValue() []byte {
	switch {
	case c.jsonbPrefix:
		return wholeJSONBBin
	case c.json:
		return wholeJSON
	case c.textual:
		return wholeText
	}
	return nil
}

// CopyText masks one row of COPY text format (tab-separated, \N for NULL,
// newline-terminated), returning the new row or line itself when nothing
// changed. Masked values contain no tab, backslash or newline, so they
// need no escaping.
func (p *Plan) CopyText(line []byte) []byte {
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
		vals := [][]byte{f}
		one := p.column(i)
		if one.Row(vals) {
			changed = true
			p.mark(i)
			if vals[0] == nil {
				fields[i] = copyNull
			} else {
				fields[i] = vals[0]
			}
		}
	}
	if !changed {
		return line
	}
	out := bytes.Join(fields, copyFieldDelim)
	return append(out, nl...)
}

// CopyCSV masks one row of COPY CSV format with the default delimiter and
// quote. Masked values are written unquoted, since they hold neither.
func (p *Plan) CopyCSV(line []byte) []byte {
	if p == nil {
		return line
	}
	fields, nl := splitCSV(line)
	changed := false
	for i, f := range fields {
		if !f.quoted && len(f.raw) == 0 {
			continue // unquoted empty is NULL in CSV
		}
		vals := [][]byte{f.value}
		if p.column(i).Row(vals) {
			changed = true
			p.mark(i)
			fields[i] = csvField{raw: csvQuote(vals[0], f.quoted)}
		}
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

// mark records that column i was masked; rows wider than the shape (a
// COPY whose columns Warden could not learn) have no slot to mark.
func (p *Plan) mark(i int) {
	if i < len(p.Masked) {
		p.Masked[i] = true
	}
}

// column returns a one-column plan for column i, so COPY rows share Row's
// logic. Columns past the shape get the detectors, never less.
func (p *Plan) column(i int) *Plan {
	c := column{action: detect, textual: true}
	if i < len(p.cols) {
		c = p.cols[i]
		if c.action == whole {
			// COPY text is untyped: a masked column reads as ****,
			// or \N where a typed value would be NULL.
			c.json = false
		}
	}
	return &Plan{m: p.m, cols: []column{c}, Masked: make([]bool, 1)}
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
// (doubled) and newlines.
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
