package lineage

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/pkg/redact"
)

// Arguments are redacted once, as an image enters the table: the image's
// own view and every ancestor copy carry the redacted form, and a forked
// copy is not redacted again.
func TestArgsRedactedOnce(t *testing.T) {
	calls := 0
	tb := New(Options{HostID: "h", Redact: func(bin string, args []string, sess uint64) ([]string, []string) {
		calls++
		out, _ := redact.Default().Args(bin, args, nil)
		return out, nil
	}})
	evs := []loader.LineageEvent{
		{Kind: loader.LineageExec, TGID: shellPID, Self: ref(shellPID, 100, 1), Parent: ref(shellPID, 100, 0), Path: "/bin/sh",
			Args: []string{"sh", "-c", "PGPASSWORD=Tbl-1 psql; true"}, SessionCgroupID: 7},
		{Kind: loader.LineageFork, TGID: childPID, PPID: shellPID, Self: ref(childPID, 200, 0), Parent: ref(shellPID, 100, 1), SessionCgroupID: 7},
		{Kind: loader.LineageExec, TGID: childPID, Self: ref(childPID, 200, 1), Parent: ref(childPID, 200, 0), Path: "/usr/bin/mysql",
			Args: []string{"mysql", "-uroot", "-pTbl-2"}, SessionCgroupID: 7},
	}
	var us []Update
	for i := range evs {
		evs[i].TimeNs = uint64(i+1) * tick
		us = append(us, tb.Apply(&evs[i]))
	}
	if calls != 2 {
		t.Errorf("Redact called %d times, want once per exec", calls)
	}
	p := tb.Describe(us[2].ExecID)
	if got := strings.Join(p.Args, " "); got != "mysql -uroot -p[redacted:password]" {
		t.Errorf("args %q", got)
	}
	if len(p.Ancestors) < 2 {
		t.Fatalf("ancestors %+v", p.Ancestors)
	}
	for _, a := range p.Ancestors[:2] {
		if got := strings.Join(a.Args, " "); got != "sh -c PGPASSWORD=[redacted:password] psql; true" {
			t.Errorf("ancestor %s args %q", a.Binary, got)
		}
	}
}

// Without an Options.Redact the built-in rules still apply: safe by
// default, for images read from /proc too.
func TestSeededArgsRedacted(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 60; true", "zero", "--password=Seed-Secret-1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	tb := New(Options{HostID: "h"})
	p, ok := tb.Lookup(uint32(cmd.Process.Pid), 0)
	if !ok {
		t.Fatal("child not found in /proc")
	}
	if p.Source != SourceProc || slices.ContainsFunc(p.Args, func(a string) bool { return strings.Contains(a, "Seed-Secret-1") }) ||
		!slices.Contains(p.Args, "--password=[redacted:password]") {
		t.Fatalf("seeded %+v", p)
	}
}

// The tracker redacts with the policy's redactor and the session's groups,
// and a process.exec whose secrets an exemption left in says so.
func TestTrackerRedactsWithPolicyAndGroups(t *testing.T) {
	r := redact.New(policy.Redaction{Exemptions: []policy.RedactionExemption{
		{Name: "eng-sees-all", Groups: []string{"engineering"}, Builtins: []string{policy.RedactionAll}, Reason: "test"},
	}})
	for _, tc := range []struct {
		redactor *redact.Redactor
		args     string
		exempt   any
	}{
		{nil, "mysql -p[redacted:password]", nil},
		{r, "mysql -pTrk-1", []string{"eng-sees-all"}},
	} {
		f := newTrackerFixture(Options{})
		f.tr.opts.Redactor = func() *redact.Redactor { return tc.redactor }
		f.events.push(loader.LineageEvent{Kind: loader.LineageExec, TGID: childPID, Self: ref(childPID, 200, 1), Parent: ref(childPID, 200, 0),
			Path: "/usr/bin/mysql", Args: []string{"mysql", "-pTrk-1"}, SessionCgroupID: 7, TimeNs: tick}, nil)
		stop := f.run(t)
		waitFor(t, "process.exec", func() bool {
			evs, _ := f.rec.snapshot()
			return len(ofType(evs, event.ProcessExec)) > 0
		})
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		evs, _ := f.rec.snapshot()
		e := ofType(evs, event.ProcessExec)[0]
		if got := strings.Join(e.Process.Args, " "); got != tc.args {
			t.Errorf("args %q, want %q", got, tc.args)
		}
		if got := e.Data["redaction_exemptions"]; !slices.Equal(asStrings(got), asStrings(tc.exempt)) {
			t.Errorf("redaction_exemptions %v, want %v", got, tc.exempt)
		}
	}
}

func asStrings(v any) []string {
	s, _ := v.([]string)
	return s
}
