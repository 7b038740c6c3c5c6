package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/tests/harness"
)

// 'warden login' with no token runs the OIDC device flow against the IdP
// wardend trusts: it prints a code, the user approves it, the shell is bound.
func TestDeviceFlowLogin(t *testing.T) {
	e := newIdentityEnv(t)
	shell := e.Command(harness.Shell{UID: nobody, GID: nobody, Script: `warden login && ` + talk("127.0.0.1", e.target.Port())})
	var out syncBuffer
	shell.Stdout, shell.Stderr = &out, &out
	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- shell.Wait() }()
	codeLine := regexp.MustCompile(`enter the code:\s+(\S+)`)
	var code string
	e.Eventually("device code printed", func() error {
		m := codeLine.FindStringSubmatch(out.String())
		if m == nil {
			return fmt.Errorf("output so far:\n%s", out.String())
		}
		code = m[1]
		return nil
	})
	if err := e.IdP.ApproveDevice(code, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("device-flow login failed: %v\n%s", err, out.String())
	}
	if got := out.String(); !strings.Contains(got, "logged in as alice") || !strings.Contains(got, "reply=echo:pid=") {
		t.Fatalf("not bound after the device flow:\n%s", got)
	}
}

// An IPv6 target is redirected through the proxy's IPv6 listener for a
// bound caller and refused for an unbound one.
func TestIPv6Target(t *testing.T) {
	e := &identityEnv{Env: harness.NewEnv(t)}
	e.target = e.Serve("tcp6", "[::1]:0")
	e.StartAgent(fmt.Sprintf("targets:\n  - name: v6\n    protocol: tcp\n    address: \"[::1]:%d\"\naccess:\n  - groups: [engineering]\n    targets: [v6]\n", e.target.Port()))
	e.refused(t, harness.Shell{UID: nobody, GID: nobody, Script: talk("::1", e.target.Port())}, "Operation not permitted")
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	out := e.MustRun(harness.Shell{UID: nobody, GID: nobody, Script: e.login(alice) + talk("::1", e.target.Port())})
	if !strings.Contains(out, "reply=echo:pid=") {
		t.Fatalf("IPv6 target not relayed:\n%s", out)
	}
}
