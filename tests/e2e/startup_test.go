package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// On a host without systemd nothing is mounted at /sys/fs/bpf. wardend on
// the shipped bpf_pin_dir mounts a bpffs there, pins below it, and serves:
// a login is bound and a bound shell reaches its target through the proxy.
// Everything happens in a mount namespace of the test's own; the host's
// mounts under /sys/fs/bpf are the same after as before.
func TestStartsOnDefaultPinDirWithoutBPFFS(t *testing.T) {
	hostBefore := hostBPFMounts(t)
	e := &identityEnv{Env: harness.NewEnv(t)}
	e.target = e.Serve("tcp4", "127.0.0.1:0")
	ns := harness.NewMountNS(t)
	e.StartAgentWith(fmt.Sprintf("targets:\n  - name: echo\n    protocol: tcp\n    address: 127.0.0.1:%d\naccess:\n  - groups: [engineering]\n    targets: [echo]\n",
		e.target.Port()), harness.AgentOptions{DefaultPinDir: true, MountNS: ns})

	if !strings.Contains(e.Agent().Output(), `"message":"wardend running"`) {
		t.Fatalf("wardend answers but never said it runs:\n%s", e.Agent().Output())
	}
	if fs := ns.FSType(t, "/sys/fs/bpf"); fs != "bpf_fs" {
		t.Fatalf("/sys/fs/bpf in wardend's namespace is %s, want the bpffs wardend mounts", fs)
	}
	out, err := ns.Command("ls", "/sys/fs/bpf/warden").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "link_connect4") {
		t.Fatalf("pins in /sys/fs/bpf/warden: %v\n%s", err, out)
	}
	// The programs enforce from those pins: a bound shell is redirected
	// through the proxy to its target, and whoami knows it.
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	got := e.MustRun(harness.Shell{UID: nobody, GID: nobody, Script: e.login(alice) + talk("127.0.0.1", e.target.Port()) + " && warden whoami"})
	if !strings.Contains(got, "reply=echo:pid=") || !strings.Contains(got, "subject:  alice") {
		t.Fatalf("bound shell on the default pin dir:\n%s", got)
	}
	if after := hostBPFMounts(t); !slices.Equal(hostBefore, after) {
		t.Fatalf("mounts leaked to the host:\nbefore %q\nafter  %q", hostBefore, after)
	}
}

// hostBPFMounts lists the test process's mounts at or below /sys/fs/bpf.
func hostBPFMounts(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == "/sys/fs/bpf" || strings.HasPrefix(f[4], "/sys/fs/bpf/")) {
			out = append(out, line)
		}
	}
	return out
}

// startupCase is a wardend configuration that cannot start.
type startupCase struct {
	dir, config, policy string
	cgroupRoot          string
	values              map[string]string // agent.yaml keys to override
	// wrap runs wardend under other commands (nsenter, setpriv).
	wrap []string
}

func newStartupCase(t *testing.T) *startupCase {
	t.Helper()
	testenv.RequireRoot(t)
	c := &startupCase{dir: t.TempDir(), cgroupRoot: testenv.Cgroup(t)}
	c.policy = filepath.Join(c.dir, "policy.yaml")
	if err := os.WriteFile(c.policy, []byte("targets:\n  - name: echo\n    protocol: tcp\n    address: 127.0.0.1:9\naccess:\n  - groups: [engineering]\n    targets: [echo]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.values = map[string]string{
		"host_id":        "startup-test",
		"oidc.issuer":    devIssuer(t),
		"cgroup_root":    c.cgroupRoot,
		"proxy_listen":   freeAddr(t),
		"socket":         filepath.Join(c.dir, "agent.sock"),
		"policy_file":    c.policy,
		"nats.url":       "nats://127.0.0.1:1",
		"spool_dir":      filepath.Join(c.dir, "spool"),
		"key_file":       filepath.Join(c.dir, "keys", "agent.key"),
		"state_dir":      filepath.Join(c.dir, "state"),
		"bpf_pin_dir":    filepath.Join(c.dir, "bpf"),
		"metrics_listen": "",
	}
	return c
}

// devIssuer serves a dev IdP on loopback for the test's lifetime, so that
// the issuer check passes and the start fails where the case says.
func devIssuer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	idp, err := devidp.New(devidp.Options{Issuer: "http://" + ln.Addr().String(), ClientID: harness.ClientID, Users: harness.Users})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		idp.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return idp.Issuer()
}

// freeAddr returns a loopback address no one listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// run writes agent.yaml, runs wardend to its end and returns its exit
// code and stderr. wardend must fail to start: if it is still running
// after a minute, it is stopped, uninstalled and the test fails.
func (c *startupCase) run(t *testing.T) (int, string) {
	t.Helper()
	var y strings.Builder
	for _, k := range []string{"host_id", "cgroup_root", "proxy_listen", "socket", "policy_file", "spool_dir", "key_file", "state_dir", "bpf_pin_dir", "metrics_listen"} {
		if v, ok := c.values[k]; ok {
			fmt.Fprintf(&y, "%s: %q\n", k, v)
		}
	}
	fmt.Fprintf(&y, "oidc:\n  issuer: %q\n  client_id: warden\nnats:\n  url: %q\nlog_level: debug\n", c.values["oidc.issuer"], c.values["nats.url"])
	c.config = filepath.Join(c.dir, "agent.yaml")
	if err := os.WriteFile(c.config, []byte(y.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(slices.Clone(c.wrap), filepath.Join(harness.Binaries(t), "wardend"), "--config", c.config)
	cmd := exec.Command(args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		uninstall := append(slices.Clone(c.wrap), filepath.Join(harness.Binaries(t), "wardend"), "uninstall", "--config", c.config)
		out, err := exec.Command(uninstall[0], uninstall[1:]...).CombinedOutput()
		t.Fatalf("wardend did not fail to start (uninstall: %v: %s); output:\n%s", err, out, stderr.String())
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// expectFailure checks that wardend failed cleanly: a non-zero exit, no
// panic or goroutine dump, and a last stderr line with want in it. It
// returns the lines wardend printed that are not JSON log lines.
func expectFailure(t *testing.T, code int, stderr string, want string) []string {
	t.Helper()
	if code == 0 {
		t.Fatalf("wardend exited 0, want a failure; output:\n%s", stderr)
	}
	if strings.Contains(stderr, "panic:") || strings.Contains(stderr, "goroutine ") {
		t.Fatalf("wardend panicked or dumped goroutines:\n%s", stderr)
	}
	var human []string
	sc := bufio.NewScanner(strings.NewReader(stderr))
	var last string
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		last = line
		if !json.Valid([]byte(line)) {
			human = append(human, line)
		}
	}
	if !strings.Contains(last, want) {
		t.Fatalf("last stderr line %q does not contain %q; output:\n%s", last, want, stderr)
	}
	if len(human) == 0 || !strings.HasPrefix(human[0], "wardend: ") {
		t.Fatalf("no 'wardend: ' line says what failed; output:\n%s", stderr)
	}
	return human
}

// Each way wardend cannot start ends in one line that names the cause and
// a non-zero exit status, never a panic.
func TestStartupErrors(t *testing.T) {
	harness.Binaries(t) // build once, outside the subtests' timing

	t.Run("bpffs not mountable", func(t *testing.T) {
		// The shipped pin dir, nothing at /sys/fs/bpf, and no
		// CAP_SYS_ADMIN to mount one (as in a container).
		setpriv := testenv.RequireCommand(t, "setpriv")
		ns := harness.NewMountNS(t)
		c := newStartupCase(t)
		delete(c.values, "bpf_pin_dir")
		c.wrap = []string{"nsenter", "--mount=" + ns.Path, "--", setpriv, "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", "--"}
		code, stderr := c.run(t)
		expectFailure(t, code, stderr, "no bpffs mounted at /sys/fs/bpf, and mounting one failed: operation not permitted")
		if fs := ns.FSType(t, "/sys/fs/bpf"); fs == "bpf_fs" {
			t.Fatal("a bpffs got mounted without CAP_SYS_ADMIN")
		}
	})

	t.Run("issuer without discovery document", func(t *testing.T) {
		issuer := serveIssuer(t, func(base string) (int, any) { return http.StatusNotFound, "no such page" }) + "/wrong"
		c := newStartupCase(t)
		c.values["oidc.issuer"] = issuer
		code, stderr := c.run(t)
		expectFailure(t, code, stderr, "wardend: oidc.issuer "+issuer+" is not a usable OpenID Connect issuer: 404")
	})

	t.Run("issuer names another issuer", func(t *testing.T) {
		issuer := serveIssuer(t, func(base string) (int, any) {
			return http.StatusOK, map[string]any{"issuer": "https://idp.other.example", "jwks_uri": base + "/keys",
				"authorization_endpoint": base + "/auth", "token_endpoint": base + "/token"}
		})
		c := newStartupCase(t)
		c.values["oidc.issuer"] = issuer
		code, stderr := c.run(t)
		expectFailure(t, code, stderr, "wardend: oidc.issuer "+issuer+" is not a usable OpenID Connect issuer")
		if !strings.Contains(stderr, `"https://idp.other.example"`) {
			t.Fatalf("the issuer the document names is not reported:\n%s", stderr)
		}
	})

	t.Run("issuer unreachable", func(t *testing.T) {
		// A port nothing listens on: connection refused, every try.
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		issuer := "http://" + ln.Addr().String()
		ln.Close()
		c := newStartupCase(t)
		c.values["oidc.issuer"] = issuer
		code, stderr := c.run(t)
		expectFailure(t, code, stderr, "wardend: oidc.issuer "+issuer+" is unreachable (tried for 10s): ")
		if !strings.Contains(stderr, "connection refused") {
			t.Fatalf("the network error is not reported:\n%s", stderr)
		}
	})

	t.Run("proxy port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c := newStartupCase(t)
		c.values["proxy_listen"] = ln.Addr().String()
		code, stderr := c.run(t)
		expectFailure(t, code, stderr, "wardend: proxy_listen "+ln.Addr().String()+": address already in use")
	})

	t.Run("bad policy", func(t *testing.T) {
		c := newStartupCase(t)
		bad := "targets:\n  - name: echo\n    protocol: mongo\n    address: 127.0.0.1:9\n"
		if err := os.WriteFile(c.policy, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		code, stderr := c.run(t)
		human := expectFailure(t, code, stderr, c.policy+":3:")
		if !strings.HasPrefix(human[0], "wardend: policy_file "+c.policy+" is invalid") {
			t.Fatalf("first line %q does not say the policy file is invalid", human[0])
		}
	})

	t.Run("key directory cannot be created", func(t *testing.T) {
		c := newStartupCase(t)
		file := filepath.Join(c.dir, "not-a-dir")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		keyDir := filepath.Join(file, "keys")
		c.values["key_file"] = filepath.Join(keyDir, "agent.key")
		code, stderr := c.run(t)
		expectFailure(t, code, stderr, "cannot create its directory "+keyDir)
	})
}

// serveIssuer serves doc at /.well-known/openid-configuration on a
// loopback port of the test's and returns the server's base URL.
func serveIssuer(t *testing.T, doc func(base string) (int, any)) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration") {
			http.NotFound(w, r)
			return
		}
		status, body := doc(base)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return base
}
