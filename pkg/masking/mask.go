package masking

import (
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

// CellKind says what a result column's values are, as far as masking is
// concerned. Each codec maps its protocol's types to these; masking knows
// nothing of wire formats.
type CellKind uint8

const (
	// CellOpaque is text that cannot take a replacement: a number, a date
	// or any other typed value in text form. Detectors read it; a hit, or
	// the column masked by name, makes the value NULL, the only value
	// valid for every type. It is the zero value, the safe default for a
	// column a codec knows nothing about.
	CellOpaque CellKind = iota
	// CellBinary is not text (a binary integer, timestamp, array):
	// detectors cannot read it and skip it; masked by name it is NULL.
	CellBinary
	// CellText is text: detected values are replaced in place, and the
	// column masked by name reads as Whole.
	CellText
	// CellJSON is text holding a JSON document: detected values are
	// replaced in place (the replacement needs no JSON escaping), and the
	// column masked by name reads as the JSON string "****".
	CellJSON
)

// Field describes one result column.
type Field struct {
	// Name is the column name as the server reports it.
	Name string
	// Cell is what the column's values are.
	Cell CellKind
	// Prefix is how many bytes of each value come before the text
	// (binary jsonb's version byte). Masking keeps them as they are.
	Prefix int
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
	cell   CellKind
	prefix int
}

// beyond is how a column past the plan's shape is masked: as text, through
// the detectors. A COPY row can be wider than the columns Warden learnt,
// and such a column must not get less masking than a known one.
var beyond = column{action: detect, cell: CellText}

// Plan is the masking of one result shape, computed once per shape and
// applied to every row.
type Plan struct {
	m    *Masker
	cols []column
	// Masked flags the columns that were masked in at least one row.
	Masked []bool
	fields []Field
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
		c.cell, c.prefix = f.Cell, max(f.Prefix, 0)
		switch {
		case f.Derived || m.columns[strings.ToLower(f.Name)]:
			c.action = whole
		case len(m.detectors) > 0 && f.Cell != CellBinary:
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
// through, so the caller's buffer is left alone. nil is NULL. It reports
// whether anything changed.
func (p *Plan) Row(values [][]byte) bool {
	if p == nil {
		return false
	}
	changed := false
	for i, v := range values {
		if out, hit := p.Cell(i, v); hit {
			values[i], changed = out, true
		}
	}
	return changed
}

// Cell masks value v of column i, for codecs that frame rows themselves
// (COPY). It returns the value to send, nil for NULL, and whether it
// differs from v; v itself is never modified. A nil v (NULL) stays NULL.
// Columns past the plan's shape are masked as text by the detectors.
func (p *Plan) Cell(i int, v []byte) ([]byte, bool) {
	if p == nil || v == nil {
		return v, false
	}
	c := beyond
	if i < len(p.cols) {
		c = p.cols[i]
	}
	switch c.action {
	case whole:
		p.mark(i)
		return c.wholeValue(v), true
	case detect:
		body, prefix := v, []byte(nil)
		if c.prefix > 0 {
			if len(v) < c.prefix {
				// Too short to hold its own prefix: nothing to read.
				return v, false
			}
			body, prefix = v[c.prefix:], v[:c.prefix]
		}
		out, hit := p.m.Redact(body)
		if !hit {
			return v, false
		}
		p.mark(i)
		if c.cell == CellOpaque {
			return nil, true
		}
		if prefix == nil {
			return out, true
		}
		return append(slices.Clip(prefix), out...), true
	}
	return v, false
}

// mark records that column i was masked; columns past the shape have no
// slot to mark.
func (p *Plan) mark(i int) {
	if i < len(p.Masked) {
		p.Masked[i] = true
	}
}

var (
	wholeText = []byte(Whole)
	wholeJSON = []byte(`"` + Whole + `"`)
)

// wholeValue is what value v of a column masked by name becomes.
func (c column) wholeValue(v []byte) []byte {
	var w []byte
	switch c.cell {
	case CellText:
		w = wholeText
	case CellJSON:
		w = wholeJSON
	default:
		return nil
	}
	if c.prefix == 0 {
		return w
	}
	if len(v) < c.prefix {
		// Not even its prefix: NULL is the one value certain to be valid.
		return nil
	}
	return append(slices.Clip(v[:c.prefix]), w...)
}
