// Package harness runs the real Warden binaries for end-to-end tests: a dev
// OIDC issuer with real keys, warden-collector with embedded NATS, and
// wardend with its BPF programs attached to a cgroup subtree of the test's
// own, all inside a network namespace of the test's own.
package harness

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/testenv"
)

// Fixed addresses inside the test's namespace; nothing else listens there.
const (
	ProxyAddr     = "127.0.0.1:15001"
	NATSAddr      = "127.0.0.1:4222"
	CollectorAddr = "127.0.0.1:8181"
	MetricsAddr   = "127.0.0.1:9464"
	HostID        = "e2e-host"
	ClientID      = "warden"
)

// Users are the dev IdP's accounts in every test. sam is the SOC analyst
// whose token Env.Collector and Warden carry (ReaderGroup, KillerGroup).
var Users = []devidp.User{
	{Sub: "alice", Email: "alice@corp.example", Name: "Alice", Groups: []string{"engineering"}},
	{Sub: "bob", Email: "bob@corp.example", Name: "Bob", Groups: []string{"dba", "engineering"}},
	{Sub: "mallory", Email: "mallory@contractor.example", Name: "Mallory", Groups: []string{"contractors"}},
	{Sub: ReaderSub, Email: "sam@corp.example", Name: "Sam", Groups: []string{ReaderGroup}},
}

// ReaderGroup is the collector's --readers group in every test, and
// ReaderSub the person in it whose token the harness's API client and
// CLI runs carry.
const (
	ReaderGroup = "soc"
	ReaderSub   = "sam"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// Binaries builds Warden's commands once per test process and returns the
// directory holding them.
func Binaries(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "warden-e2e-bin-")
		if binErr != nil {
			return
		}
		// Test shells run as unprivileged users and need the CLI.
		os.Chmod(binDir, 0o755)
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			binErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/wardend", "./cmd/warden", "./cmd/warden-collector", "./cmd/warden-devidp")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("build binaries: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

var (
	clientsMu sync.Mutex
	clients   = map[string]string{}
)

// TestClient builds the test client in tests/e2e/testdata/NAME (a driver
// program that test shells run through the kernel redirect, like a user's
// own) once per test process, beside the binaries, and returns its path.
func TestClient(t testing.TB, name string) string {
	t.Helper()
	dir := Binaries(t)
	clientsMu.Lock()
	defer clientsMu.Unlock()
	if bin, ok := clients[name]; ok {
		return bin
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, "./tests/e2e/testdata/"+name)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	clients[name] = bin
	return bin
}

// CleanupBinaries removes the built binaries; call it from TestMain.
func CleanupBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Env is one running Warden installation.
type Env struct {
	T          testing.TB
	Bin        string
	Dir        string
	NS         *NetNS
	CgroupRoot string
	IdP        *devidp.IdP
	// Collector is an API client carrying ReaderSub's token.
	Collector *collectorclient.Client
	// ReaderToken is a file (readable by anyone) holding ReaderSub's ID
	// token; Warden passes it as $WARDEN_TOKEN_FILE.
	ReaderToken string
	PolicyPath  string
	ConfigPath  string
	// NATSAuth is the collector's NATS trust chain (--nats-auth) and
	// AgentCreds the agent's creds, from warden-collector enroll HostID.
	NATSAuth   string
	AgentCreds string
	// Store is the collector's --store: SQLite in Dir, or PostgreSQL
	// with WARDEN_TEST_STORE=postgres (StoreLocation).
	Store string

	agent     *Process
	mountNS   *MountNS // where wardend runs, if not the test's own
	collector *Process
	shells    atomic.Int64
}

// Options configure Start.
type Options struct {
	// Policy is the policy.yaml text. Write it with Env's target servers'
	// addresses, so start servers first via NewEnv + Serve, then Start.
	Policy string
}

// NewEnv prepares the namespace, cgroup subtree, dev IdP and collector.
// Start the agent with StartAgent once target servers are listening.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "nsenter")
	testenv.RequireCommand(t, "bash")
	e := &Env{T: t, Bin: Binaries(t)}
	// Not t.TempDir(): its parent is private, and unprivileged test users
	// must reach their token files and the agent socket.
	dir, err := os.MkdirTemp("", "warden-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.Dir = dir
	e.NS = NewNetNS(t)
	e.CgroupRoot = testenv.Cgroup(t)

	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.IdP, err = devidp.New(devidp.Options{Issuer: "http://" + ln.Addr().String(), ClientID: ClientID, Users: Users})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.IdP.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	// The agent's signing key is made up front and enrolled, as an
	// operator would: warden-collector enroll issues the agent's NATS
	// creds and installs its public key, so the collector trusts it from
	// its first event.
	keys := filepath.Join(e.Dir, "keys")
	key, err := event.LoadOrCreateKey(filepath.Join(keys, "agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := event.WritePublicKey(filepath.Join(keys, "agent.pub"), key.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	e.Store = StoreLocation(t, e.Dir)
	e.NATSAuth, e.AgentCreds = filepath.Join(e.Dir, "nats-auth"), filepath.Join(e.Dir, "agent.creds")
	enroll := exec.Command(filepath.Join(e.Bin, "warden-collector"), "enroll", HostID, "--nats-auth", e.NATSAuth,
		"--out", e.AgentCreds, "--agent-key", filepath.Join(keys, "agent.pub"), "--agent-keys", keys,
		"--nats-url", "nats://"+NATSAddr, "--creds-path", e.AgentCreds)
	if out, err := enroll.CombinedOutput(); err != nil || !strings.Contains(string(out), "creds_file: "+e.AgentCreds) {
		t.Fatalf("warden-collector enroll %s: %v\n%s", HostID, err, out)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: e.NS.DialContext}, Timeout: 30 * time.Second}
	e.Collector, err = collectorclient.New("http://"+CollectorAddr, hc)
	if err != nil {
		t.Fatal(err)
	}
	// Long enough for any test; the API refuses every call without it.
	e.ReaderToken = e.Token(devidp.IssueOptions{Sub: ReaderSub, TTL: 6 * time.Hour})
	tok, err := os.ReadFile(e.ReaderToken)
	if err != nil {
		t.Fatal(err)
	}
	e.Collector = e.Collector.WithToken(string(tok))
	e.StartCollector()
	return e
}

// StartCollector starts warden-collector with its embedded NATS (again,
// after StopCollector: same store and JetStream directory) and waits until
// it is healthy. It verifies tokens of the test's dev IdP (AuthFlags):
// members of ReaderGroup may read, members of KillerGroup may kill.
func (e *Env) StartCollector() {
	e.T.Helper()
	e.StartCollectorWith()
}

// StartCollectorWith stops warden-collector if it runs and starts it again
// (same store and JetStream directory) with extra flags after the
// harness's own; a flag given again wins, so "--nats-listen" moves the
// embedded NATS server away from the agent.
func (e *Env) StartCollectorWith(extra ...string) {
	e.T.Helper()
	if e.collector != nil {
		e.collector.Stop()
	}
	args := append([]string{"--embedded-nats", "--nats-listen", NATSAddr, "--nats-store", filepath.Join(e.Dir, "nats"),
		"--store", e.Store, "--listen", CollectorAddr,
		"--agent-keys", filepath.Join(e.Dir, "keys"), "--nats-auth", e.NATSAuth}, append(e.AuthFlags(), extra...)...)
	p := e.StartProcess("collector", e.NSCommand(filepath.Join(e.Bin, "warden-collector"), args...))
	e.collector = p
	e.Eventually("collector healthy", func() error {
		if p.Exited() {
			e.T.Fatalf("collector exited:\n%s", p.Output())
		}
		_, err := e.Collector.Health(context.Background())
		return err
	})
}

// StopCollector stops warden-collector and with it the embedded NATS
// server: agents lose their event stream.
func (e *Env) StopCollector() { e.collector.Stop() }

// Eventually polls fn until it returns nil, failing the test after a
// minute. The deadline bounds a hang; it is not a speed assertion.
func (e *Env) Eventually(what string, fn func() error) {
	e.T.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WritePolicy replaces the policy file.
func (e *Env) WritePolicy(policy string) {
	e.T.Helper()
	e.PolicyPath = filepath.Join(e.Dir, "policy.yaml")
	tmp := e.PolicyPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(policy), 0o644); err != nil {
		e.T.Fatal(err)
	}
	if err := os.Rename(tmp, e.PolicyPath); err != nil {
		e.T.Fatal(err)
	}
}

// StartAgent writes agent.yaml and the policy, starts wardend and waits
// until its socket answers.
func (e *Env) StartAgent(policy string) {
	e.T.Helper()
	e.StartAgentWith(policy, AgentOptions{})
}

// AgentOptions change how StartAgentWith runs wardend.
type AgentOptions struct {
	// DefaultPinDir leaves bpf_pin_dir out of agent.yaml, so wardend pins
	// where the shipped default says (below /sys/fs/bpf). Use it only
	// with MountNS: the pins must not land in the host's bpffs.
	DefaultPinDir bool
	// MountNS, if set, is where wardend and its uninstall run.
	MountNS *MountNS
	// Config is appended to agent.yaml: top-level keys the harness does
	// not write itself, such as spool_max_bytes.
	Config string
}

// StartAgentWith is StartAgent with opts: it writes agent.yaml and the
// policy, starts wardend and waits until its socket answers. wardend is
// uninstalled (in its mount namespace) when the test ends.
func (e *Env) StartAgentWith(policy string, opts AgentOptions) {
	e.T.Helper()
	if opts.DefaultPinDir && opts.MountNS == nil {
		e.T.Fatal("DefaultPinDir without a MountNS would pin into the host's bpffs")
	}
	e.WritePolicy(policy)
	pinDir := "bpf_pin_dir: " + filepath.Join(e.Dir, "bpf") + "\n"
	if opts.DefaultPinDir {
		pinDir = ""
	}
	cfg := fmt.Sprintf(`host_id: %s
oidc:
  issuer: %s
  client_id: %s
cgroup_root: %s
proxy_listen: %s
socket: %s
policy_file: %s
nats:
  url: nats://%s
  creds_file: %s
spool_dir: %s
key_file: %s
state_dir: %s
%smetrics_listen: %s
log_level: debug
%s`, HostID, e.IdP.Issuer(), ClientID, e.CgroupRoot, ProxyAddr, e.Socket(), e.PolicyPath, NATSAddr, e.AgentCreds,
		filepath.Join(e.Dir, "spool"), filepath.Join(e.Dir, "keys", "agent.key"), filepath.Join(e.Dir, "state"),
		pinDir, MetricsAddr, opts.Config)
	e.ConfigPath = filepath.Join(e.Dir, "agent.yaml")
	if err := os.WriteFile(e.ConfigPath, []byte(cfg), 0o644); err != nil {
		e.T.Fatal(err)
	}
	e.mountNS = opts.MountNS
	e.T.Cleanup(func() { e.uninstall() })
	e.RestartAgent()
}

// wardend returns a command running wardend with args in the test's
// network namespace, and in its mount namespace if it has one.
func (e *Env) wardend(args ...string) *exec.Cmd {
	bin := filepath.Join(e.Bin, "wardend")
	if e.mountNS == nil {
		return e.NSCommand(bin, args...)
	}
	return e.mountNS.Command("nsenter", append([]string{"--net=" + e.NS.Path, "--", bin}, args...)...)
}

// RestartAgent starts wardend (again) and waits until it serves.
func (e *Env) RestartAgent() {
	e.T.Helper()
	e.agent = e.StartProcess("wardend", e.wardend("--config", e.ConfigPath))
	e.Eventually("wardend socket", func() error {
		if e.agent.Exited() {
			e.T.Fatalf("wardend exited:\n%s", e.agent.Output())
		}
		c, err := net.Dial("unix", e.Socket())
		if err == nil {
			c.Close()
		}
		return err
	})
}

// Agent returns the running wardend.
func (e *Env) Agent() *Process { return e.agent }

// uninstall detaches the programs and removes their pins, even when the
// agent was killed.
func (e *Env) uninstall() {
	if e.agent != nil {
		e.agent.Stop()
	}
	if out, err := e.wardend("uninstall", "--config", e.ConfigPath).CombinedOutput(); err != nil {
		e.T.Errorf("wardend uninstall: %v: %s", err, out)
	}
}

// Socket is the agent's control socket.
func (e *Env) Socket() string { return filepath.Join(e.Dir, "agent.sock") }

// NSCommand returns a command that runs inside the test's namespace.
func (e *Env) NSCommand(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + e.NS.Path, "--", name}, args...)...)
}

// Token mints an ID token and writes it to a file any user can read.
func (e *Env) Token(opts devidp.IssueOptions) string {
	e.T.Helper()
	for _, u := range Users {
		if u.Sub == opts.Sub && opts.Groups == nil {
			opts.Groups, opts.Email, opts.Name = u.Groups, u.Email, u.Name
		}
	}
	tok, err := e.IdP.Issue(opts)
	if err != nil {
		e.T.Fatal(err)
	}
	f, err := os.CreateTemp(e.Dir, "token-")
	if err != nil {
		e.T.Fatal(err)
	}
	defer f.Close()
	f.WriteString(tok)
	f.Chmod(0o644)
	return f.Name()
}

// Shell describes a bash run inside the namespace, in a fresh cgroup
// under the agent's root, like a user's login shell on the bastion.
type Shell struct {
	Script string
	// UID and GID to run as; 0 means root.
	UID, GID int
}

// Command returns the shell's command, not started. The shell is born in
// its cgroup, never outside it.
func (e *Env) Command(s Shell) *exec.Cmd {
	e.T.Helper()
	n := e.shells.Add(1)
	dir := filepath.Join(e.CgroupRoot, "shells", fmt.Sprint(n))
	if err := cgroupv2.Create(dir); err != nil {
		e.T.Fatal(err)
	}
	// warden login caches the token below XDG_CACHE_HOME: a directory of
	// the shell's user, and of this shell only, as a home would be.
	cache := filepath.Join(e.Dir, "cache", fmt.Sprint(n))
	if err := os.MkdirAll(cache, 0o700); err != nil {
		e.T.Fatal(err)
	}
	os.Chmod(filepath.Dir(cache), 0o755)
	if err := os.Chown(cache, s.UID, s.GID); err != nil {
		e.T.Fatal(err)
	}
	args := []string{"--net=" + e.NS.Path}
	if s.UID != 0 {
		args = append(args, fmt.Sprintf("--setuid=%d", s.UID), fmt.Sprintf("--setgid=%d", s.GID))
	}
	args = append(args, "--", "bash", "-c", s.Script)
	cmd := testenv.CommandIn(e.T, dir, "nsenter", args...)
	cmd.Env = []string{
		"PATH=" + e.Bin + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
		"WARDEN_AGENT_SOCKET=" + e.Socket(),
		"HOME=/tmp",
		"XDG_CACHE_HOME=" + cache,
		"LANG=C",
	}
	cmd.Dir = "/"
	return cmd
}

// Run runs a shell to completion and returns its combined output and
// exit error.
func (e *Env) Run(s Shell) (string, error) {
	e.T.Helper()
	cmd := e.Command(s)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		e.T.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		e.T.Fatalf("shell hung:\n%s\noutput:\n%s", s.Script, out.String())
	}
	return "", nil
}

// MustRun runs a shell and fails the test if it fails.
func (e *Env) MustRun(s Shell) string {
	e.T.Helper()
	out, err := e.Run(s)
	if err != nil {
		e.T.Fatalf("shell failed: %v\nscript: %s\noutput:\n%s", err, s.Script, out)
	}
	return out
}

// Events queries the collector.
func (e *Env) Events(q collectorclient.Query) []event.Event {
	e.T.Helper()
	list, err := e.Collector.Events(context.Background(), q)
	if err != nil {
		e.T.Fatal(err)
	}
	out := make([]event.Event, 0, len(list.Events))
	for _, raw := range list.Events {
		var ev event.Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			e.T.Fatalf("decode event: %v", err)
		}
		out = append(out, ev)
	}
	return out
}

// WaitEvent polls the collector until an event matching q and match
// arrives, and returns it.
func (e *Env) WaitEvent(q collectorclient.Query, what string, match func(*event.Event) bool) *event.Event {
	e.T.Helper()
	var found *event.Event
	e.Eventually("event: "+what, func() error {
		for _, ev := range e.Events(q) {
			if match(&ev) {
				found = &ev
				return nil
			}
		}
		return fmt.Errorf("not (yet) at the collector")
	})
	return found
}
