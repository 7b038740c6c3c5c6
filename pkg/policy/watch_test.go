package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// deadline is generous: it only bounds a broken test, it never decides a
// passing one.
const deadline = 20 * time.Second

func policyWith(addr string) string {
	return "targets:\n  - name: db\n    protocol: postgres\n    address: " + addr + "\n"
}

// writeAtomic replaces path the way careful tools do: write then rename.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// recorder collects callback invocations on channels.
type recorder struct {
	loads  chan *Policy
	errs   chan error
	opts   WatchOptions
	nLoads int
	mu     sync.Mutex
}

func newRecorder() *recorder {
	r := &recorder{loads: make(chan *Policy, 100), errs: make(chan error, 100)}
	r.opts = WatchOptions{
		OnLoad: func(p *Policy) {
			r.mu.Lock()
			r.nLoads++
			r.mu.Unlock()
			r.loads <- p
		},
		OnError:     func(err error) { r.errs <- err },
		Interval:    5 * time.Millisecond,
		Enforcement: pgOnly,
	}
	return r
}

func (r *recorder) loadCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nLoads
}

func address(p *Policy) string { return p.Targets[0].Address }

// waitLoad waits for a load of a policy whose first target has addr,
// skipping loads of anything else (such as a half-written file that
// happened to parse).
func (r *recorder) waitLoad(t *testing.T, addr string) *Policy {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case p := <-r.loads:
			if address(p) == addr {
				return p
			}
		case <-timeout:
			t.Fatalf("no load of a policy with address %s", addr)
			return nil
		}
	}
}

// waitError waits for a reported error containing want.
func (r *recorder) waitError(t *testing.T, want string) error {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case err := <-r.errs:
			if strings.Contains(err.Error(), want) {
				return err
			}
		case <-timeout:
			t.Fatalf("no error containing %q reported", want)
			return nil
		}
	}
}

// run starts w.Run and stops it when the test ends, checking it returned.
func run(t *testing.T, w *Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(deadline):
			t.Error("Run did not return after cancel")
		}
	})
}

func TestWatcherFirstLoadFails(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(bad, []byte(policyWith("10.0.0.5:99999")), 0o600); err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	w, err := NewWatcher(bad, r.opts)
	if err == nil || w != nil {
		t.Fatalf("NewWatcher = %v, %v; want an error", w, err)
	}
	if !strings.Contains(err.Error(), bad+":4:14:") {
		t.Errorf("error %q does not point at %s:4:14", err, bad)
	}
	if _, err := NewWatcher(filepath.Join(dir, "missing.yaml"), r.opts); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NewWatcher(missing) = %v, want not-exist", err)
	}
	if r.loadCount() != 0 || len(r.errs) != 0 {
		t.Error("callbacks were called for a failed first load")
	}
}

func TestWatcherFollowsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomic(t, path, policyWith("10.0.0.1:5432"))
	r := newRecorder()
	w, err := NewWatcher(path, r.opts)
	if err != nil {
		t.Fatal(err)
	}
	r.waitLoad(t, "10.0.0.1:5432") // the first load goes through OnLoad too
	run(t, w)

	// A valid change is picked up.
	writeAtomic(t, path, policyWith("10.0.0.2:5432"))
	r.waitLoad(t, "10.0.0.2:5432")
	if got := address(w.Policy()); got != "10.0.0.2:5432" {
		t.Errorf("Policy() has %s after reload", got)
	}

	// An invalid one is reported, with its position, and the old policy
	// stays in force.
	writeAtomic(t, path, policyWith("10.0.0.3:5432")+"    protcol: mysql\n")
	err = r.waitError(t, path+":5:5:")
	if !strings.Contains(err.Error(), `unknown key "protcol"`) {
		t.Errorf("error %q does not name the bad key", err)
	}
	if got := address(w.Policy()); got != "10.0.0.2:5432" {
		t.Errorf("Policy() has %s after a failed reload, want the old 10.0.0.2:5432", got)
	}

	// So is one with a rule no codec enforces.
	writeAtomic(t, path, withRule("10.0.0.3:5432", "redis"))
	r.waitError(t, path+`:9:12: rule "no-ddl": when: statements: target "other" is redis`)
	if got := address(w.Policy()); got != "10.0.0.2:5432" {
		t.Errorf("Policy() has %s after an unenforceable reload, want the old 10.0.0.2:5432", got)
	}

	// A later fix is accepted.
	writeAtomic(t, path, policyWith("10.0.0.4:5432"))
	r.waitLoad(t, "10.0.0.4:5432")

	// In-place rewrites (no rename, same inode) are seen too.
	if err := os.WriteFile(path, []byte(policyWith("10.0.0.5:5432")), 0o600); err != nil {
		t.Fatal(err)
	}
	r.waitLoad(t, "10.0.0.5:5432")

	// A deleted file is reported and the policy kept; its return is seen.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	r.waitError(t, "no such file")
	if got := address(w.Policy()); got != "10.0.0.5:5432" {
		t.Errorf("Policy() has %s after the file went away", got)
	}
	writeAtomic(t, path, policyWith("10.0.0.6:5432"))
	r.waitLoad(t, "10.0.0.6:5432")
}

func TestWatcherFollowsSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	for i, addr := range []string{"10.0.0.1:5432", "10.0.0.2:5432"} {
		if err := os.WriteFile(filepath.Join(dir, "v"+string(rune('1'+i))), []byte(policyWith(addr)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "policy.yaml")
	if err := os.Symlink("v1", link); err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	w, err := NewWatcher(link, r.opts)
	if err != nil {
		t.Fatal(err)
	}
	r.waitLoad(t, "10.0.0.1:5432")
	run(t, w)
	if err := os.Symlink("v2", link+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link+".new", link); err != nil {
		t.Fatal(err)
	}
	r.waitLoad(t, "10.0.0.2:5432")
}

// Reload is synchronous, so these checks need no waiting at all.
func TestWatcherReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomic(t, path, policyWith("10.0.0.1:5432"))
	r := newRecorder()
	r.opts.Interval = time.Hour // Run is not started; only Reload loads
	w, err := NewWatcher(path, r.opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.loadCount() != 1 {
		t.Fatalf("%d loads after NewWatcher, want 1", r.loadCount())
	}

	if err := os.WriteFile(path, []byte(policyWith("10.0.0.2:5432")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := address(w.Policy()); got != "10.0.0.2:5432" || r.loadCount() != 2 {
		t.Errorf("after Reload: policy %s, %d loads; want 10.0.0.2:5432, 2", got, r.loadCount())
	}

	// Same bytes again: nothing to apply, so OnLoad is not called.
	writeAtomic(t, path, policyWith("10.0.0.2:5432"))
	if err := w.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if r.loadCount() != 2 {
		t.Errorf("OnLoad called for unchanged content (%d loads)", r.loadCount())
	}

	// Broken: Reload returns the error, reports it, keeps the policy.
	if err := os.WriteFile(path, []byte("targets: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = w.Reload()
	if err == nil || !strings.Contains(err.Error(), path+":1: invalid YAML") {
		t.Errorf("Reload of broken file = %v", err)
	}
	select {
	case reported := <-r.errs:
		if reported.Error() != err.Error() {
			t.Errorf("OnError got %v, Reload returned %v", reported, err)
		}
	default:
		t.Error("OnError not called")
	}
	if got := address(w.Policy()); got != "10.0.0.2:5432" {
		t.Errorf("policy after failed Reload = %s", got)
	}
}

// withRule is policyWith plus a rule on a second target of protocol.
func withRule(addr, protocol string) string {
	return policyWith(addr) + `  - {name: other, protocol: ` + protocol + `, address: "10.9.9.9:1000"}
rules:
  - name: no-ddl
    targets: [db, other]
    when: {statements: [drop]}
    action: deny
`
}

// The Watcher parses with WatchOptions.Enforcement, on the first load and on
// every reload: a reload that adds a rule no codec enforces is rejected,
// with its position, and the policy in force stays.
func TestWatcherEnforcement(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomic(t, path, withRule("10.0.0.1:5432", "postgres"))
	r := newRecorder()
	r.opts.Interval = time.Hour // only Reload loads
	w, err := NewWatcher(path, r.opts)
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	if got := len(w.Policy().Rules); got != 1 {
		t.Fatalf("%d rules loaded, want 1", got)
	}

	for _, tt := range []struct{ name, doc, want string }{
		{"statements on mysql", withRule("10.0.0.2:5432", "mysql"),
			path + `:9:12: rule "no-ddl": when: statements: target "other" is mysql, and no codec enforces statements on mysql targets`},
		{"masking on redis", policyWith("10.0.0.2:5432") + "  - {name: c, protocol: redis, address: \"10.9.9.9:6379\"}\nmasking:\n  - {name: m, targets: [c], detectors: [jwt]}\n",
			path + `:7:29: masking "m": detectors: target "c" is redis, and no codec enforces content masking`},
		{"review on ssh", policyWith("10.0.0.2:5432") + "  - {name: j, protocol: ssh, address: \"10.9.9.9:22\"}\nrules:\n  - {name: r, targets: [j], when: {}, action: review, review: {approvers: [dba]}}\n",
			path + `:7:25: rule "r": target "j" is ssh, and no codec enforces rules on ssh targets`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			writeAtomic(t, path, tt.doc)
			err := w.Reload()
			if err == nil {
				t.Fatal("Reload accepted an unenforceable policy")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Reload error %q\nwant it to contain %q", err, tt.want)
			}
			if errs := Errors(err); len(errs) == 0 || errs[0].Line == 0 || errs[0].Column == 0 {
				t.Errorf("Reload error has no position: %v", err)
			}
			if got := address(w.Policy()); got != "10.0.0.1:5432" {
				t.Errorf("policy in force has %s after a rejected reload, want the old 10.0.0.1:5432", got)
			}
		})
	}
	if r.loadCount() != 1 {
		t.Errorf("%d loads, want 1 (only the first)", r.loadCount())
	}

	// And an enforceable change is still accepted.
	writeAtomic(t, path, withRule("10.0.0.3:5432", "postgres"))
	if err := w.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := address(w.Policy()); got != "10.0.0.3:5432" {
		t.Errorf("policy in force has %s, want 10.0.0.3:5432", got)
	}
}

// The same file fails the first load without Enforcement: nil means no
// codec, so the daemon refuses to start rather than run a rule it cannot
// apply.
func TestWatcherNilEnforcement(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomic(t, path, withRule("10.0.0.1:5432", "postgres"))
	r := newRecorder()
	r.opts.Enforcement = nil
	w, err := NewWatcher(path, r.opts)
	if err == nil || w != nil {
		t.Fatalf("NewWatcher = %v, %v; want an error", w, err)
	}
	if want := path + `:9:12: rule "no-ddl": when: statements: target "db" is postgres, and no codec enforces statements on postgres targets`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q\nwant it to contain %q", err, want)
	}
	// Access alone is fine.
	writeAtomic(t, path, policyWith("10.0.0.1:5432"))
	if _, err := NewWatcher(path, r.opts); err != nil {
		t.Errorf("NewWatcher of an access-only policy with nil Enforcement: %v", err)
	}
}
