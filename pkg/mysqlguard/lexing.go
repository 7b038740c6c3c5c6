package mysqlguard

import (
	"strconv"
	"strings"
)

// Server is what the server's handshake says about how it reads
// executable comments.
type Server struct {
	// MariaDB is set for a MariaDB server: it runs /*M! ... */ comments.
	MariaDB bool
	// Version is the server's version as the comments' numbers write it
	// (major*10000 + minor*100 + patch: 101106 for 10.11.6); 0 when
	// unknown, in which case every versioned comment is taken as code.
	Version int
}

// ParseServerVersion reads a handshake's server version string. MariaDB
// prefixes its own with "5.5.5-" for old clients.
func ParseServerVersion(v string) Server {
	s := Server{MariaDB: strings.Contains(strings.ToLower(v), "mariadb")}
	v = strings.TrimPrefix(v, "5.5.5-")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 3 {
		return s
	}
	num := func(p string) int {
		end := 0
		for end < len(p) && p[end] >= '0' && p[end] <= '9' {
			end++
		}
		n, err := strconv.Atoi(p[:end])
		if err != nil || end == 0 {
			return -1
		}
		return n
	}
	major, minor, patch := num(parts[0]), num(parts[1]), num(parts[2])
	if major < 0 || minor < 0 || patch < 0 {
		return s
	}
	s.Version = major*10000 + minor*100 + patch
	return s
}

// Lexing is what the session's settings say about how the server splits a
// text into tokens. The zero value is the unknown, and safest, case.
type Lexing struct {
	// ModeKnown is set when NoBackslashEscapes and ANSIQuotes hold the
	// session's sql_mode; unknown, a text must read the same under every
	// combination.
	ModeKnown bool
	// NoBackslashEscapes is sql_mode NO_BACKSLASH_ESCAPES: a backslash in
	// a string is an ordinary character.
	NoBackslashEscapes bool
	// ANSIQuotes is sql_mode ANSI_QUOTES: "..." is an identifier.
	ANSIQuotes bool
	// Unsupported names a sql_mode under which the server reads another
	// grammar (MariaDB's ORACLE): every text is refused while it holds.
	Unsupported string
	// ASCIISafeCharset is a character_set_client in which every byte
	// below 0x80 is a character of its own (see ASCIISafeCharset).
	ASCIISafeCharset bool
	// Server says which executable comments the server runs.
	Server Server
}

// ParseSQLMode reads @@sql_mode into lx.
func (lx *Lexing) ParseSQLMode(mode string) {
	lx.ModeKnown, lx.NoBackslashEscapes, lx.ANSIQuotes, lx.Unsupported = true, false, false, ""
	for _, m := range strings.Split(strings.ToUpper(mode), ",") {
		switch m = strings.TrimSpace(m); m {
		case "ORACLE":
			lx.Unsupported, lx.ANSIQuotes = m, true
		case "NO_BACKSLASH_ESCAPES":
			lx.NoBackslashEscapes = true
		case "ANSI_QUOTES", "ANSI", "DB2", "MAXDB", "MSSQL", "POSTGRESQL":
			// The combination modes include ANSI_QUOTES.
			lx.ANSIQuotes = true
		}
	}
}

// ASCIISafeCharset reports whether a MySQL character set never uses a byte
// below 0x80 inside a multi-byte character. big5, cp932, gbk, sjis and
// gb18030 do: there 0xBF 0x5C is one character to the server and a byte
// then a backslash to a parser reading UTF-8, which is the classic way to
// end a string early.
func ASCIISafeCharset(name string) bool {
	switch strings.ToLower(name) {
	case "", "big5", "cp932", "gbk", "sjis", "gb18030":
		return false
	}
	return true
}

// ASCIISafeCollation is ASCIISafeCharset for the collation id a client
// names in its handshake. Unknown ids are not safe.
func ASCIISafeCollation(id byte) bool {
	switch id {
	case 1, 84, // big5
		13, 88, // sjis
		28, 87, // gbk
		95, 96, // cp932
		248, 249, 250: // gb18030
		return false
	case 0:
		return false
	}
	return true
}

// Misread returns why the server, reading sql under lx, might split it
// into other tokens than the parser does because of its character set, or
// "" when the character set cannot make them differ.
func Misread(sql string, lx Lexing) string {
	if lx.ASCIISafeCharset || strings.IndexByte(sql, '\\') < 0 {
		return ""
	}
	if strings.IndexFunc(sql, func(r rune) bool { return r >= 0x80 }) >= 0 {
		return "a text with both a backslash and non-ASCII bytes is refused unless the connection's character set is one where a backslash byte is always a backslash (utf8mb4, for one)"
	}
	return ""
}

// prepare rewrites sql into the text the parser must read to see what the
// server will run, byte for byte the same length, scanning strings as a
// server in the given mode does:
//
//   - /*! ... */ and, on MariaDB, /*M! ... */ are code, unless their
//     version number is above the server's, when they are comments: the
//     marker and version become spaces, or the comment a plain one.
//   - Other /*X! comments (TiDB's /*T!) are plain comments to the server
//     and become plain comments for the parser too.
//
// It reports an error text for what it cannot read the same way as the
// server (an unterminated comment).
func prepare(sql string, noBackslash, ansi bool, srv Server) (string, string) {
	b := []byte(sql)
	inExec := false
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '\'' || (c == '"' && !ansi):
			i = skipString(b, i, c, noBackslash)
		case c == '"' || c == '`':
			i = skipString(b, i, c, true)
		case c == '#':
			i = skipLine(b, i)
		case c == '-' && i+2 < len(b) && b[i+1] == '-' && (b[i+2] <= ' '):
			i = skipLine(b, i)
		case c == '-' && i+2 == len(b) && b[i+1] == '-':
			i = len(b)
		case c == '*' && inExec && i+1 < len(b) && b[i+1] == '/':
			inExec = false
			i += 2
		case c == '/' && i+1 < len(b) && b[i+1] == '*':
			if inExec {
				// The server does not nest comments; what it would make
				// of one is not worth guessing.
				return "", "a comment inside an executable comment"
			}
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return "", "an unterminated /* comment"
			}
			end += i + 2 // index of "*/"
			j := i + 2
			mariaOnly := false
			if j < len(b) && b[j] == 'M' && j+1 < len(b) && b[j+1] == '!' {
				mariaOnly = true
				j++
			}
			if j < len(b) && b[j] == '!' {
				k := j + 1
				for k < len(b) && k < j+7 && b[k] >= '0' && b[k] <= '9' {
					k++
				}
				digits := k - (j + 1)
				version := 0
				if digits == 5 || digits == 6 {
					version, _ = strconv.Atoi(string(b[j+1 : k]))
				} else {
					k = j + 1 // not a version: digits are code
				}
				runs := !mariaOnly || srv.MariaDB
				if runs && version > 0 && srv.Version > 0 && version > srv.Version {
					runs = false
				}
				if runs {
					// "/*!" for the parser, then spaces over "M" and
					// the version.
					b[i], b[i+1], b[i+2] = '/', '*', '!'
					for x := i + 3; x < k; x++ {
						b[x] = ' '
					}
					inExec = true
					i = k
					continue
				}
				b[j] = ' ' // a plain comment to the server, and to the parser
				i = end + 2
				continue
			}
			if j < len(b) && j+1 < len(b) && b[j+1] == '!' {
				b[j+1] = ' ' // /*T! and the like: comments to the server
			}
			i = end + 2
		default:
			i++
		}
	}
	if inExec {
		return "", "an unterminated executable comment"
	}
	return string(b), ""
}

// skipString returns the index after the string or quoted name that
// starts at i with quote q. A doubled quote stands for itself; a
// backslash escapes the next byte unless raw.
func skipString(b []byte, i int, q byte, raw bool) int {
	for j := i + 1; j < len(b); j++ {
		switch {
		case b[j] == '\\' && !raw:
			j++
		case b[j] == q:
			if j+1 < len(b) && b[j+1] == q {
				j++
				continue
			}
			return j + 1
		}
	}
	return len(b)
}

func skipLine(b []byte, i int) int {
	for j := i; j < len(b); j++ {
		if b[j] == '\n' {
			return j + 1
		}
	}
	return len(b)
}
