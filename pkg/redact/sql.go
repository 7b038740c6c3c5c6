package redact

import (
	"regexp"
	"strings"
)

// sqlPasswordRE finds where a password literal begins in SQL:
//
//	CREATE ROLE r LOGIN [ENCRYPTED] PASSWORD '…'      (PostgreSQL)
//	CREATE LOGIN l WITH PASSWORD = N'…'              (SQL Server)
//	CREATE USER u IDENTIFIED [WITH plugin] BY '…'    (MySQL, MariaDB)
//	CREATE USER u IDENTIFIED BY secret               (Oracle, unquoted)
//	IDENTIFIED VIA ed25519 USING PASSWORD('…')       (MariaDB)
//	SET PASSWORD [FOR u@h] = '…' | PASSWORD('…')      (MySQL)
//	OPTIONS (user 'u', password '…')                 (foreign servers)
//
// The literal itself is read by hand: RE2 cannot follow escapes.
var sqlPasswordRE = regexp.MustCompile(`(?i)` +
	`\bset\s+password\b[^=;]*=\s*(?:(?:old_)?password\s*\(\s*)?` +
	`|\b(identified)\s+(?:(?:with|via)\s+(?:[\w$]+|'[^']*'|"[^"]*")\s+)?(?:by|as|using)\s+(?:password\s*\(?\s*)?` +
	`|\b(?:old_)?password\s*(?:=\s*)?(?:(?:old_)?password\s*\(\s*)?`)

// dollarTagRE is a PostgreSQL dollar-quote tag ($$, $pw$).
var dollarTagRE = regexp.MustCompile(`^\$[A-Za-z_0-9]*\$`)

// sqlKeywords follow IDENTIFIED BY without being a password.
var sqlKeywords = []string{"password", "random", "values", "externally", "globally", "nothing"}

// sqlPasswords redacts password literals in SQL text; the quotes stay:
// PASSWORD '[redacted:password]'.
func sqlPasswords(s string) string {
	if !containsFold(s, "password") && !containsFold(s, "identified") {
		return s
	}
	marks := markerSpans(s)
	var edits []edit
	for _, m := range sqlPasswordRE.FindAllStringSubmatchIndex(s, -1) {
		// "password" in quotes is a name (a JSON key, a quoted column),
		// not the keyword.
		if inSpans(marks, m[0]) || m[0] > 0 && strings.IndexByte("\"'`", s[m[0]-1]) >= 0 {
			continue
		}
		i := m[1]
		if i >= len(s) {
			continue
		}
		// N'…', E'…' (SQL Server's national, PostgreSQL's escape strings).
		if i+1 < len(s) && strings.IndexByte("NnEe", s[i]) >= 0 && s[i+1] == '\'' {
			i++
		}
		var cs, ce int
		switch q := s[i]; {
		case q == '\'' || q == '"':
			cs, ce = i+1, closing(s, i+1, q)
		case q == '$':
			tag := dollarTagRE.FindString(s[i:])
			if tag == "" {
				continue
			}
			cs = i + len(tag)
			ce = strings.Index(s[cs:], tag)
			if ce < 0 {
				ce = len(s)
			} else {
				ce += cs
			}
		case m[2] >= 0:
			// IDENTIFIED BY secret, unquoted.
			cs, ce = i, i
			for ce < len(s) && !isBlank(s[ce]) && strings.IndexByte(";,)'\"", s[ce]) < 0 {
				ce++
			}
			for _, k := range sqlKeywords {
				if strings.EqualFold(s[cs:ce], k) {
					ce = cs
				}
			}
		default:
			continue
		}
		if v := s[cs:ce]; v != "" && !IsMarker(v) && !overlaps(marks, cs, ce) {
			edits = append(edits, edit{cs, ce, Marker("password")})
		}
	}
	return applyEdits(s, edits)
}
