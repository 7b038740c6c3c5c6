package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The shipped example policy passes check-policy with one OK line.
func TestCheckPolicyShippedExample(t *testing.T) {
	path := filepath.Join("..", "..", "deploy", "examples", "policy.yaml")
	var stdout, stderr bytes.Buffer
	if code := wardend([]string{"check-policy", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	out := stdout.String()
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, path+": OK (") || stderr.Len() != 0 {
		t.Fatalf("stdout %q, stderr %q; want one OK line", out, stderr.String())
	}
}

// A bad policy fails check-policy with every problem as file:line:col.
func TestCheckPolicyReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	bad := `targets:
  - name: db
    protocol: mongo
    address: 10.0.0.1:27017
access:
  - groups: [engineering]
    targets: [nowhere]
`
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := wardend([]string{"check-policy", path}, &stdout, &stderr); code == 0 {
		t.Fatalf("exit 0 for a bad policy; stdout %q", stdout.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q, want nothing", stdout.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if !strings.HasPrefix(lines[0], "wardend check-policy: "+path+" is invalid") {
		t.Fatalf("first line %q does not say what failed", lines[0])
	}
	pos := regexp.MustCompile(`^` + regexp.QuoteMeta(path) + `:\d+:\d+: `)
	var atLine3, atLine7 bool
	for _, l := range lines[1:] {
		if !pos.MatchString(l) {
			t.Errorf("problem line %q is not file:line:col: message", l)
		}
		atLine3 = atLine3 || strings.HasPrefix(l, path+":3:") && strings.Contains(l, "mongo")
		atLine7 = atLine7 || strings.HasPrefix(l, path+":7:") && strings.Contains(l, "nowhere")
	}
	if !atLine3 || !atLine7 {
		t.Fatalf("want both problems (line 3: protocol, line 7: unknown target):\n%s", stderr.String())
	}
}

// A file that cannot be read is an error too, and check-policy wants
// exactly one file.
func TestCheckPolicyUsageErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	missing := filepath.Join(t.TempDir(), "absent.yaml")
	if code := wardend([]string{"check-policy", missing}, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), missing) {
		t.Fatalf("missing file: exit %d, stderr %q", code, stderr.String())
	}
	stderr.Reset()
	if code := wardend([]string{"check-policy"}, &stdout, &stderr); code == 0 {
		t.Fatalf("no file: exit 0, stderr %q", stderr.String())
	}
}

// 'wardend help' lists every command.
func TestHelpListsCommands(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := wardend([]string{"help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, cmd := range []string{"run", "check", "check-policy", "keygen", "uninstall", "help", "--config"} {
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(cmd) + `\b`).MatchString(stdout.String()) {
			t.Errorf("help does not list %s:\n%s", cmd, stdout.String())
		}
	}
	stderr.Reset()
	if code := wardend([]string{"frobnicate"}, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: exit %d, stderr %q", code, stderr.String())
	}
}
