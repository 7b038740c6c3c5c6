package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/tests/harness"
)

// A bound shell keeps its identity across a crash and restart of wardend,
// the kernel keeps enforcing while wardend is down, and a policy change is
// picked up without a restart.
func TestBindingAndProgramsSurviveAgentRestart(t *testing.T) {
	e := newIdentityEnv(t)
	port := e.target.Port()
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	control := e.Dir + "/control"
	// One long-lived shell: logs in once, then connects whenever the test
	// writes a line to its control fifo.
	shell := e.Command(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(`
warden login --token-file %s || exit 9
while read -r cmd < %s; do
	[ "$cmd" = quit ] && exit 0
	( %s ) 2>&1 | sed "s/^/$cmd: /"
	echo "$cmd: done"
done`, alice, control, talk("127.0.0.1", port))})
	if out, err := e.NSCommand("mkfifo", "-m", "666", control).CombinedOutput(); err != nil {
		t.Fatalf("mkfifo: %v: %s", err, out)
	}
	var out syncBuffer
	shell.Stdout, shell.Stderr = &out, &out
	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { shell.Process.Kill(); shell.Wait() }()
	ask := func(name string) string {
		t.Helper()
		writeFIFO(t, control, name)
		e.Eventually(name, func() error {
			if !strings.Contains(out.String(), name+": done") {
				return fmt.Errorf("shell output so far:\n%s", out.String())
			}
			return nil
		})
		return out.String()
	}

	if got := ask("before"); !strings.Contains(got, "before: reply=echo:") {
		t.Fatalf("bound shell could not connect:\n%s", got)
	}
	metrics := scrape(t, e)
	if !strings.Contains(metrics, `warden_proxy_connections_total{target="echo"} 1`) {
		t.Fatalf("metrics lack the relayed connection:\n%s", grepLines(metrics, "warden_"))
	}
	// The recorder's and the publisher's metrics are served too.
	for _, name := range []string{"warden_events_emitted_total", "warden_publish_connected 1", "warden_publish_pending"} {
		if !strings.Contains(metrics, name) {
			t.Fatalf("metrics lack %s:\n%s", name, grepLines(metrics, "warden_"))
		}
	}

	e.Agent().Kill()
	// The programs are pinned: with wardend gone, the unbound are still
	// refused in the kernel, and the bound fail (the proxy is gone): closed.
	e.refused(t, harness.Shell{UID: nobody, GID: nobody, Script: talk("127.0.0.1", port)}, "Operation not permitted")
	if got := ask("down"); strings.Contains(got, "down: reply=echo:") || !strings.Contains(got, "down: bash") {
		t.Fatalf("connection succeeded while wardend was down:\n%s", got)
	}

	e.RestartAgent()
	if got := ask("after"); !strings.Contains(got, "after: reply=echo:") {
		t.Fatalf("binding did not survive the restart:\n%s", got)
	}

	// Take engineering's access away: the same session is now refused.
	e.WritePolicy(fmt.Sprintf("targets:\n  - name: echo\n    protocol: tcp\n    address: 127.0.0.1:%d\naccess:\n  - groups: [dba]\n    targets: [echo]\n", port))
	attempt := 0
	e.Eventually("policy reload", func() error {
		attempt++
		name := fmt.Sprintf("revoked%d", attempt)
		if lines := grepLines(ask(name), name+": "); !strings.Contains(lines, "Operation not permitted") {
			return fmt.Errorf("still allowed:\n%s", lines)
		}
		return nil
	})
	writeFIFO(t, control, "quit")
}

func scrape(t *testing.T, e *identityEnv) string {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: e.NS.DialContext}}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+harness.MetricsAddr+"/metrics", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func grepLines(s, substr string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) && !strings.HasPrefix(l, "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
