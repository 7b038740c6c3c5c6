package redact

import (
	"regexp"
	"strings"
)

// Marker returns the text that stands in for a redacted value of the given
// kind: "[redacted:password]". kind is lower-case letters, digits, '_' and
// '-'; the policy parser checks the kinds it accepts.
func Marker(kind string) string { return "[redacted:" + kind + "]" }

// markerRE finds markers in a text. Every rule skips a value that is
// already a marker and every content rule skips matches that begin inside
// one, which is what makes redaction idempotent.
var markerRE = regexp.MustCompile(`\[redacted:[a-z0-9_-]+\]`)

// IsMarker reports whether s is exactly one marker.
func IsMarker(s string) bool {
	if len(s) <= len("[redacted:]") || !strings.HasPrefix(s, "[redacted:") || s[len(s)-1] != ']' {
		return false
	}
	for i := len("[redacted:"); i < len(s)-1; i++ {
		if !kindByte(s[i]) {
			return false
		}
	}
	return true
}

// kindByte is a byte a marker's kind may hold.
func kindByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// markerSpans returns the [start, end) spans of the markers in s.
func markerSpans(s string) [][]int {
	if !strings.Contains(s, "[redacted:") {
		return nil
	}
	return markerRE.FindAllStringIndex(s, -1)
}

// inSpans reports whether position i lies inside one of spans.
func inSpans(spans [][]int, i int) bool {
	for _, sp := range spans {
		if i >= sp[0] && i < sp[1] {
			return true
		}
	}
	return false
}

// overlaps reports whether [a, b) overlaps one of spans.
func overlaps(spans [][]int, a, b int) bool {
	for _, sp := range spans {
		if a < sp[1] && sp[0] < b {
			return true
		}
	}
	return false
}

// Name parts that say a value is not the secret itself, only where it is
// or how it is handled; see secretName.
var (
	// notValueParts: --password-file, --token-ttl, --secret-name.
	notValueParts = []string{"file", "files", "path", "dir", "stdin", "fd", "env", "prompt", "cmd", "command", "helper",
		"ttl", "length", "len", "min", "max", "type", "url", "uri", "endpoint", "mode", "policy", "policies", "name",
		"format", "method", "algorithm", "algo", "cache", "expiry", "expires", "lifetime", "validity", "header", "id", "count",
		"encryption", "authentication", "reset", "ref", "store"}
	// notValueFirst: a first part like these makes the flag a switch
	// (--no-password, --ask-pass, --with-token).
	notValueFirst = []string{"no", "ask", "askpass", "prompt", "with", "use", "show", "print", "gen", "generate",
		"random", "require", "allow", "skip", "disable", "enable", "read", "reset", "create", "new", "revoke", "list", "rotate",
		"max", "min", "num"}
)

// secretName reports whether a flag, key or environment variable called
// name holds a secret, and the marker kind for it. Leading dashes are
// ignored. The name is cut into parts at '-', '_' and '.', lower-cased: a
// part containing password, passwd, passphrase, token, secret or apikey, a
// part that is pass, pwd, pw, sshpass or credential(s), api followed by
// key, or auth as the last part (REDISCLI_AUTH) names a secret, unless
// another part says the value is only where the secret is (a file, a
// path) or the flag is a switch (--no-password, --ask-pass).
func secretName(name string) (string, bool) {
	name = strings.TrimLeft(name, "-")
	if name == "" || len(name) > 128 {
		return "", false
	}
	parts := strings.FieldsFunc(strings.ToLower(name), func(r rune) bool { return r == '-' || r == '_' || r == '.' })
	if len(parts) == 0 {
		return "", false
	}
	secretID := false
	kind, first := "", -1
	for i, p := range parts {
		if kind == "" {
			first = i
		}
		switch {
		case notSecretWord(p):
		case containsAny(p, "password", "passwd", "passphrase") || p == "pass" || p == "pwd" || p == "pw" || p == "sshpass":
			kind = pick(kind, "password")
		case strings.Contains(p, "token"):
			kind = pick(kind, "token")
		case strings.Contains(p, "secret"):
			kind, secretID = pick(kind, "secret"), true
		case strings.Contains(p, "apikey") || p == "key" && i > 0 && parts[i-1] == "api":
			kind = pick(kind, "key")
		case p == "credentials" || p == "credential":
			kind = pick(kind, "credentials")
		case p == "auth" && i == len(parts)-1:
			// REDISCLI_AUTH, --auth user:pass; not --auth-type.
			kind = pick(kind, "credentials")
		}
	}
	if kind == "" {
		return "", false
	}
	if len(parts) > 1 && contains(notValueFirst, parts[0]) {
		return "", false
	}
	// A qualifier after the secret part says what of it the value is:
	// --password-file, --token-ttl. One before it does not: --id-token.
	for _, p := range parts[first+1:] {
		// A secret id (vault's secret_id) is a credential.
		if p == "id" && secretID {
			continue
		}
		if contains(notValueParts, p) {
			return "", false
		}
	}
	return kind, true
}

// notSecretWords are names that hold a secret word but are settings about
// secrets (sshd's PasswordAuthentication, PostgreSQL's
// password_encryption is two parts and stops at "encryption").
var notSecretWords = []string{"passwordauthentication", "permitemptypasswords", "passwordless", "passwords",
	"tokenizer", "tokenize", "tokens", "passwordpolicy", "passwordexpiry", "passwordreset", "passwordprompt",
	"passwordfile", "passwordlength", "passwordhistory", "passwordencryption", "tokenfile", "secretfile",
	"secretname", "secretref", "secretkeyref", "secrets"}

// notSecretWord reports whether a name part is a setting about secrets.
func notSecretWord(p string) bool { return contains(notSecretWords, p) }

// pick keeps the first kind found: in AWS_SECRET_ACCESS_KEY the secret.
func pick(cur, k string) string {
	if cur != "" {
		return cur
	}
	return k
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// containsFold reports whether s contains the lower-case ASCII word sub,
// in any case, without allocating.
func containsFold(s, sub string) bool {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}

// baseName is the program name of an argument: what follows the last '/',
// without the '-' a login shell's argv[0] starts with.
func baseName(s string) string {
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimPrefix(s, "-")
}
