package sshcmd

import (
	"errors"
	"slices"
	"testing"
)

func TestPrograms(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"id -un", []string{"id"}},
		{"rm -rf /tmp/x", []string{"rm"}},
		{"/bin/rm -rf /tmp/x", []string{"rm"}},
		{"true; rm -rf /tmp/x", []string{"true", "rm"}},
		{"true && rm x || ls", []string{"true", "rm", "ls"}},
		{"cat /etc/passwd | grep root | rm x", []string{"cat", "grep", "rm"}},
		{"sh -c 'rm -rf /tmp/x'", []string{"sh", "rm"}},
		{`bash -o pipefail -c "echo hi; /usr/bin/rm x"`, []string{"bash", "echo", "rm"}},
		{"bash -lc 'sudo rm x'", []string{"bash", "sudo", "rm"}},
		{"sudo -u root -- rm x", []string{"sudo", "rm"}},
		{"sudo -uroot rm x", []string{"sudo", "rm"}},
		{"FOO=1 BAR=2 rm x", []string{"rm"}},
		{"env -i FOO=1 rm x", []string{"env", "rm"}},
		{"env -S 'rm -rf x'", []string{"env", "rm"}},
		{"echo $(rm x)", []string{"echo", "rm"}},
		{"echo `rm x`", []string{"echo", "rm"}},
		{"echo \"$(rm x)\"", []string{"echo", "rm"}},
		{"cat <(rm x)", []string{"cat", "rm"}},
		{"(cd /tmp && rm x)", []string{"cd", "rm"}},
		{"{ rm x; }", []string{"rm"}},
		{"f() { rm x; }; f", []string{"rm", "f"}},
		{"if true; then rm x; fi", []string{"true", "rm"}},
		{"for i in 1 2; do rm $i; done", []string{"rm"}},
		{"eval 'rm x'", []string{"eval", "rm"}},
		{"timeout -s KILL 5 rm x", []string{"timeout", "rm"}},
		{"nice -n 10 nohup rm x", []string{"nice", "nohup", "rm"}},
		{"find /tmp -name x -exec rm {} \\;", []string{"find", "rm"}},
		{"xargs -n 1 rm < list", []string{"xargs", "rm"}},
		{"time rm x", []string{"rm"}},
		{`r\m x`, []string{"rm"}},
		{`'r'"m" x`, []string{"rm"}},
		{"scp -t /tmp", []string{"scp"}},
		{"rsync --server -vlogDtpre.iLsfxCIvu . /tmp/", []string{"rsync"}},
		{"export A=1; rm x", []string{"export", "rm"}},
		{"bash <<'EOF'\nrm -rf /tmp/*\nEOF", []string{"bash", "rm"}},
		{"sh <<EOF\necho \\$HOME; rm x\nEOF", []string{"sh", "echo", "rm"}},
		{"sudo bash -s <<< 'rm -rf x'", []string{"sudo", "bash", "rm"}},
		{"bash script.sh <<< 'rm x'", []string{"bash"}},
		{"bash < local.sh", []string{"bash"}},
		{"echo 'rm -rf x' | sh", []string{"rm", "echo", "sh"}},
		{"echo -n rm x | bash -s", []string{"rm", "echo", "bash"}},
		{"echo rm x | sh script.sh", []string{"echo", "sh"}},
		{"ls | xargs -I{} rm {}", []string{"ls", "xargs", "rm"}},
		{"", nil},
		{"# just a comment", nil},
	} {
		got, err := Programs(tc.line)
		if err != nil {
			t.Errorf("Programs(%q): %v", tc.line, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Programs(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}

func TestProgramsRefused(t *testing.T) {
	for _, tc := range []struct {
		line    string
		dynamic bool
	}{
		{"rm 'unterminated", false},
		{"if then fi", false},
		{"$CMD -rf /", true},
		{"$(echo rm) -rf /", true},
		{"/bin/r? -rf /", true},
		{"{rm,-rf,/tmp/x}", true},
		{"~/bin/rm x", true},
		{"sh -c \"$SCRIPT\"", true},
		{"sudo $X", true},
		{"eval $X", true},
		{"$'\\x72m' x", true},
		{"sh -c", false},
		{"sh <<EOF\n$CMD x\nEOF", true},
		{"sh <<EOF\nrm $(date)\nEOF", true},
		{"echo \"$X\" | sh", true},
	} {
		_, err := Programs(tc.line)
		if err == nil {
			t.Errorf("Programs(%q) succeeded, want an error", tc.line)
			continue
		}
		if got := errors.Is(err, ErrDynamic); got != tc.dynamic {
			t.Errorf("Programs(%q): %v; dynamic = %v, want %v", tc.line, err, got, tc.dynamic)
		}
	}
}

func TestProgramsNestingBounded(t *testing.T) {
	line := "rm x"
	for range MaxDepth + 2 {
		line = "sh -c " + quote(line)
	}
	if _, err := Programs(line); err == nil {
		t.Fatalf("a line nested %d deep was accepted", MaxDepth+2)
	}
}

func quote(s string) string {
	out := "'"
	for _, c := range s {
		if c == '\'' {
			out += `'\''`
		} else {
			out += string(c)
		}
	}
	return out + "'"
}

// FuzzPrograms checks that any line either is refused or yields programs
// that are non-empty names, and that wrapping it in sh -c finds the same
// programs (plus sh): what runs does not change with the wrapping.
func FuzzPrograms(f *testing.F) {
	for _, s := range []string{"id -un", "true; rm -rf /tmp/x", "sh -c 'rm x'", "sudo -u root env A=1 rm x", "echo $(rm x) | sh", "find . -exec rm {} +", "a=1 b", "eval 'x; y'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		progs, err := Programs(line)
		if err != nil {
			return
		}
		for _, p := range progs {
			if p == "" {
				t.Fatalf("Programs(%q) lists an empty program: %q", line, progs)
			}
		}
		wrapped, err := Programs("sh -c " + quote(line))
		if err != nil {
			// Nesting one level deeper may pass the bound.
			return
		}
		for _, p := range progs {
			if !slices.Contains(wrapped, p) {
				t.Fatalf("Programs(%q) = %q but wrapped in sh -c gives %q", line, progs, wrapped)
			}
		}
	})
}
