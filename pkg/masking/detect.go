// Package masking hides sensitive values in query results: whole columns
// by name, and any value one of the content detectors recognises (email
// addresses, card numbers, SSNs, IBANs, phone numbers, JWTs, AWS access
// keys, PEM private keys).
//
// Every detector is a cheap byte-level pre-check followed by a regular
// expression and, where the format has one, a checksum (Luhn for cards,
// ISO 7064 mod-97 for IBANs). The pre-check keeps the common case, a value
// that cannot possibly match, to a few nanoseconds.
package masking

import (
	"bytes"
	"regexp"
)

// Detector recognises one kind of sensitive value inside a string.
type Detector struct {
	// Name is the policy name (email, credit_card, ...).
	Name string
	// maybe is a cheap pre-check: false means the value cannot match.
	maybe func([]byte) bool
	re    *regexp.Regexp
	// valid, when set, confirms a regexp match (checksums).
	valid func([]byte) bool
	// whole is re anchored at both ends, for the shorter matches a
	// checked detector tries when its longest one fails (see Find).
	whole *regexp.Regexp
}

func init() {
	for _, d := range all {
		if d.valid != nil {
			d.whole = regexp.MustCompile(`^(?:` + d.re.String() + `)$`)
		}
	}
}

// Lookup returns the detector called name.
func Lookup(name string) (*Detector, bool) {
	for _, d := range all {
		if d.Name == name {
			return d, true
		}
	}
	return nil, false
}

var all = []*Detector{
	{
		Name:  "private_key",
		maybe: func(b []byte) bool { return bytes.Contains(b, []byte("PRIVATE KEY")) },
		// An unterminated key (a truncated value) is masked to the end.
		re: regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)`),
	},
	{
		Name:  "jwt",
		maybe: func(b []byte) bool { return bytes.Contains(b, []byte("eyJ")) },
		re:    regexp.MustCompile(`eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*`),
	},
	{
		Name:  "aws_access_key",
		maybe: func(b []byte) bool { return len(b) >= 20 && bytes.ContainsAny(b, "AKS") },
		re:    regexp.MustCompile(`\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b`),
	},
	{
		Name:  "email",
		maybe: func(b []byte) bool { return bytes.IndexByte(b, '@') >= 0 },
		re:    regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`),
	},
	{
		Name:  "iban",
		maybe: func(b []byte) bool { return digits(b) >= 8 && hasUpper(b) },
		re:    regexp.MustCompile(`\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b`),
		valid: ibanValid,
	},
	{
		Name:  "credit_card",
		maybe: func(b []byte) bool { return digits(b) >= 13 },
		re:    regexp.MustCompile(`\b[0-9](?:[ -]?[0-9]){12,18}\b`),
		valid: luhnValid,
	},
	{
		Name:  "ssn",
		maybe: func(b []byte) bool { return digits(b) >= 9 && bytes.IndexByte(b, '-') >= 0 },
		re:    regexp.MustCompile(`\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b`),
		valid: ssnValid,
	},
	{
		Name:  "phone",
		maybe: func(b []byte) bool { return digits(b) >= 7 },
		re:    regexp.MustCompile(`(?:\+[1-9][0-9]{0,2}[ .-]?)?(?:\([0-9]{2,4}\)[ .-]?|\b[0-9]{2,4}[ .-])[0-9]{3,4}[ .-][0-9]{3,4}\b|\+[1-9][0-9]{7,14}\b`),
	},
}

// Find returns the [start, end) spans in v this detector recognises.
func (d *Detector) Find(v []byte) [][]int {
	if !d.maybe(v) {
		return nil
	}
	if d.valid == nil {
		return d.re.FindAllIndex(v, -1)
	}
	// A match that fails its checksum must not hide a valid one inside it:
	// in "12 4111 1111 1111 1111" the whole run fails Luhn, the card in it
	// passes. So after a failed match the search goes on from the next
	// place a match can begin (after a valid one, from its end). Every
	// checked pattern begins at a word boundary before a word byte, so that
	// is the next position after a non-word byte, where a search of the
	// rest reads \b as a search of the whole text would.
	// Nor must it hide a shorter valid one at the same start: in
	// "0000000000000 10 000" the 18-digit run fails Luhn, its first 13
	// digits pass. So a failed match is cut back, end by end, to the
	// longest valid match that also ends at a word boundary.
	var out [][]int
	for pos := 0; pos < len(v); {
		loc := d.re.FindIndex(v[pos:])
		if loc == nil {
			break
		}
		start, end := pos+loc[0], pos+loc[1]
		pos = start + 1
		if end = d.longestValid(v, start, end); end > start {
			out = append(out, []int{start, end})
			pos = end
		}
		for pos < len(v) && wordByte(v[pos-1]) {
			pos++
		}
	}
	return out
}

// longestValid returns the end of the longest match of a checked detector
// that starts at start, ends at or before end and passes its check, or
// start when there is none. end is the regexp's own (longest) match.
func (d *Detector) longestValid(v []byte, start, end int) int {
	if d.valid(v[start:end]) {
		return end
	}
	for e := end - 1; e > start; e-- {
		// A match of the whole text ends at \b: a word byte, then a
		// non-word byte or the end.
		if !wordByte(v[e-1]) || e < len(v) && wordByte(v[e]) {
			continue
		}
		if d.whole.Match(v[start:e]) && d.valid(v[start:e]) {
			return e
		}
	}
	return start
}

// wordByte is an ASCII word character, as regexp's \b sees it.
func wordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func digits(b []byte) int {
	n := 0
	for _, c := range b {
		if c >= '0' && c <= '9' {
			n++
		}
	}
	return n
}

func hasUpper(b []byte) bool {
	for _, c := range b {
		if c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// luhnValid checks a card number's Luhn digit, ignoring separators.
func luhnValid(b []byte) bool {
	sum, n := 0, 0
	for i := len(b) - 1; i >= 0; i-- {
		c := b[i]
		if c < '0' || c > '9' {
			continue
		}
		d := int(c - '0')
		if n%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		n++
	}
	return n >= 13 && n <= 19 && sum%10 == 0
}

// ibanValid checks the ISO 13616 length bounds and the mod-97 checksum.
func ibanValid(b []byte) bool {
	s := make([]byte, 0, 34)
	for _, c := range b {
		if c != ' ' {
			s = append(s, c)
		}
	}
	if len(s) < 15 || len(s) > 34 {
		return false
	}
	s = append(s[4:], s[:4]...)
	rem := 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			rem = (rem*10 + int(c-'0')) % 97
		case c >= 'A' && c <= 'Z':
			rem = (rem*100 + int(c-'A') + 10) % 97
		default:
			return false
		}
	}
	return rem == 1
}

// ssnValid rejects numbers the SSA never issues (area 000, 666, 9xx; group
// 00; serial 0000), which keeps dates and part numbers from matching.
func ssnValid(b []byte) bool {
	area := string(b[0:3])
	return area != "000" && area != "666" && b[0] != '9' && string(b[4:6]) != "00" && string(b[7:11]) != "0000"
}
