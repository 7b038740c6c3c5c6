package redact

import (
	"slices"
	"strings"
	"testing"
)

// FuzzRedact runs argument vectors through Args, and their text through
// CommandLine and Text. Redaction must never panic, never modify its
// input, be idempotent, and leave alone vectors that cannot hold a secret
// (see inert). The vector is the second input split at NUL bytes; the
// committed corpus in testdata/fuzz/FuzzRedact holds the command lines of
// the unit table.
func FuzzRedact(f *testing.F) {
	for _, tc := range argvCases {
		f.Add("", strings.Join(tc.in, "\x00"))
	}
	f.Fuzz(func(t *testing.T, binary, joined string) {
		args := strings.Split(joined, "\x00")
		orig := slices.Clone(args)
		once, _ := Default().Args(binary, args, nil)
		if !slices.Equal(args, orig) {
			t.Fatalf("input modified: %q", args)
		}
		twice, res := Default().Args(binary, once, nil)
		if !slices.Equal(once, twice) || res.Changed {
			t.Fatalf("Args not idempotent:\n %q\n-> %q\n-> %q", orig, once, twice)
		}
		if inert(binary, args) && !slices.Equal(once, args) {
			t.Fatalf("changed a vector that holds no secret: %q -> %q", args, once)
		}

		line, _ := Default().CommandLine(joined, nil)
		if again, res := Default().CommandLine(line, nil); again != line || res.Changed {
			t.Fatalf("CommandLine not idempotent:\n %q\n-> %q\n-> %q", joined, line, again)
		}
		text := Default().Text(joined)
		if again := Default().Text(text); again != text {
			t.Fatalf("Text not idempotent:\n %q\n-> %q\n-> %q", joined, text, again)
		}
	})
}

// inert reports whether no rule can apply to a vector: only lower-case
// letters, blanks, '/', '.', '_' and ',' (no flag, no key=value, no URL, no
// header, nothing a detector reads), no program the rules know, and no
// SQL password keyword.
func inert(binary string, args []string) bool {
	if b, a := (&config{}).client(baseName(binary)); binary != "" && (b != nil || a != nil) {
		return false
	}
	for _, a := range args {
		for i := 0; i < len(a); i++ {
			c := a[i]
			if !('a' <= c && c <= 'z' || strings.IndexByte(" \t/._,", c) >= 0) {
				return false
			}
		}
		if clients[baseName(a)] != nil || containsFold(a, "password") || containsFold(a, "identified") {
			return false
		}
		for _, w := range strings.Fields(a) {
			if clients[baseName(w)] != nil {
				return false
			}
		}
	}
	return true
}
