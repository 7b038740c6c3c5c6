package ssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/ssh"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/agent/recording"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
)

// recorder keeps what the codec records.
type recorder struct {
	mu  sync.Mutex
	evs []*event.Event
}

func (r *recorder) Emit(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.ID = fmt.Sprintf("ev-%d", len(r.evs)+1)
	r.evs = append(r.evs, e)
	return nil
}

func (r *recorder) ofType(t event.Type) []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*event.Event
	for _, e := range r.evs {
		if e.Type == t {
			out = append(out, e)
		}
	}
	return out
}

// target is an SSH server standing in for the target: it trusts userCA,
// answers exec with "ran: CMD" and exit status 0, and a shell by echoing
// its input, and remembers every exec and certificate KeyId it saw.
type target struct {
	hostKey    ssh.Signer
	userCA     ssh.Signer
	userCAPriv ed25519.PrivateKey

	mu     sync.Mutex
	execs  []string
	keyIDs []string
	users  []string
	opened []string
}

func newTarget(t *testing.T) *target {
	hk, err := newEd25519Signer()
	if err != nil {
		t.Fatal(err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return &target{hostKey: hk, userCA: ca, userCAPriv: priv}
}

func (tg *target) serve(conn net.Conn) {
	checker := &ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool {
		return bytes.Equal(k.Marshal(), tg.userCA.PublicKey().Marshal())
	}}
	cfg := &ssh.ServerConfig{PasswordCallback: func(meta ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
		tg.mu.Lock()
		tg.users = append(tg.users, meta.User())
		tg.mu.Unlock()
		if string(pw) != "person-secret" {
			return nil, errors.New("wrong password")
		}
		return nil, nil
	}, PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		if c, ok := key.(*ssh.Certificate); ok {
			tg.mu.Lock()
			tg.keyIDs = append(tg.keyIDs, c.KeyId)
			tg.mu.Unlock()
		}
		return checker.Authenticate(meta, key)
	}}
	cfg.AddHostKey(tg.hostKey)
	sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		tg.mu.Lock()
		tg.opened = append(tg.opened, nc.ChannelType())
		tg.mu.Unlock()
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "no")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer ch.Close()
			for r := range creqs {
				switch r.Type {
				case "exec":
					var x struct{ Command string }
					ssh.Unmarshal(r.Payload, &x)
					tg.mu.Lock()
					tg.execs = append(tg.execs, x.Command)
					tg.mu.Unlock()
					r.Reply(true, nil)
					fmt.Fprintf(ch, "ran: %s\n", x.Command)
					ch.SendRequest("exit-status", false, ssh.Marshal(struct{ S uint32 }{0}))
					return
				case "shell":
					r.Reply(true, nil)
					go func() {
						buf := make([]byte, 1024)
						for {
							n, err := ch.Read(buf)
							if n > 0 {
								ch.Write(bytes.ToUpper(buf[:n]))
							}
							if err != nil || bytes.Contains(buf[:n], []byte("exit")) {
								ch.SendRequest("exit-status", false, ssh.Marshal(struct{ S uint32 }{0}))
								ch.Close()
								return
							}
						}
					}()
				default:
					r.Reply(r.Type == "pty-req" || r.Type == "env", nil)
				}
			}
		}()
	}
}

// harness runs one SSH connection through the codec: a client of
// x/crypto/ssh, the codec, and the target.
type harness struct {
	t      *testing.T
	tg     *target
	rec    *recorder
	store  *recording.MemoryStore
	client *ssh.Client
	ca     *HostCA
	done   chan error
	// handshakeErr is the client's failed login; client is nil then.
	handshakeErr error
	stream       *proxy.Stream
}

const targetName = "app-1"

func start(t *testing.T, tp policy.Target, rules []policy.Rule, clientCfg func(*ssh.ClientConfig)) *harness {
	t.Helper()
	return startRev(t, tp, rules, clientCfg, nil)
}

// startRev is start with rev deciding review rules.
func startRev(t *testing.T, tp policy.Target, rules []policy.Rule, clientCfg func(*ssh.ClientConfig), rev guard.Reviewer) *harness {
	t.Helper()
	tg := newTarget(t)
	if c := tp.Credentials; c != nil && c.UserCAKeyFile != "" {
		block, err := ssh.MarshalPrivateKey(tg.userCAPriv, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(c.UserCAKeyFile, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	switch {
	case tp.SSH == unpinned:
		tp.SSH = &policy.SSHTarget{}
	case tp.SSH == nil:
		tp.SSH = &policy.SSHTarget{}
		fallthrough
	case !tp.SSH.Pinned():
		// Pinned to the target's key unless the test pins otherwise.
		tp.SSH.HostKey = string(ssh.MarshalAuthorizedKey(tg.hostKey.PublicKey()))
	}
	tp.Name, tp.Protocol, tp.Address = targetName, policy.ProtocolSSH, "10.0.1.7:22"
	p := &policy.Policy{Targets: []policy.Target{tp}}
	for _, r := range rules {
		r.Targets = []string{targetName}
		p.Rules = append(p.Rules, r)
	}
	caKey, err := newEd25519Signer()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := NewHostCA(caKey)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, tg: tg, rec: &recorder{}, store: recording.NewMemoryStore(), ca: ca, done: make(chan error, 1)}
	att := &proxy.Attribution{
		Kernel:       loader.ConnInfo{OrigDst: netip.MustParseAddrPort("10.0.1.7:22")},
		Target:       event.Target{Name: targetName, Protocol: policy.ProtocolSSH, Address: "10.0.1.7:22"},
		Policy:       p,
		TargetPolicy: tp,
		Identity:     &event.Identity{Sub: "alice", Groups: []string{"engineering"}, SessionID: "sess-alice"},
		Decision:     event.Decision{Action: event.Allow, Rule: "access"},
	}
	// Loopback TCP, not net.Pipe: both sides of an SSH handshake write
	// their version first, which an unbuffered pipe deadlocks.
	cc, cs := tcpPair(t)
	uc, us := tcpPair(t)
	go tg.serve(us)
	s := &proxy.Stream{Client: cs, Upstream: uc, Attribution: att, Log: zerolog.Nop(),
		Guard: guard.New(p, targetName, []string{"engineering"}, rev),
		Audit: proxy.NewAudit(h.rec, att, proxy.FailClosed)}
	h.stream = s
	codec := New(Options{HostCA: ca, Recordings: h.store})
	go func() { h.done <- codec.Serve(context.Background(), s) }()
	cfg := &ssh.ClientConfig{User: "whoever", HostKeyCallback: (&ssh.CertChecker{
		IsHostAuthority: func(k ssh.PublicKey, _ string) bool { return bytes.Equal(k.Marshal(), ca.PublicKey().Marshal()) },
	}).CheckHostKey}
	if clientCfg != nil {
		clientCfg(cfg)
	}
	conn, chans, reqs, err := ssh.NewClientConn(cc, "10.0.1.7:22", cfg)
	if err != nil {
		h.handshakeErr = err
		cc.Close()
		<-h.done
		return h
	}
	h.client = ssh.NewClient(conn, chans, reqs)
	t.Cleanup(func() { h.client.Close(); <-h.done })
	return h
}

// must fails the test if the client could not log in.
func (h *harness) must() *harness {
	h.t.Helper()
	if h.handshakeErr != nil {
		h.t.Fatalf("client handshake through the codec: %v", h.handshakeErr)
	}
	return h
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func (h *harness) close() {
	h.client.Close()
	<-h.done
	h.done <- nil // for the cleanup
}

// run execs cmd and returns stdout, stderr and the exit status.
func (h *harness) run(cmd string) (string, string, int) {
	h.t.Helper()
	sess, err := h.client.NewSession()
	if err != nil {
		h.t.Fatalf("open session: %v", err)
	}
	defer sess.Close()
	var out, errOut bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errOut
	err = sess.Run(cmd)
	var ee *ssh.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errOut.String(), ee.ExitStatus()
	case err != nil:
		h.t.Fatalf("run %q: %v", cmd, err)
	}
	return out.String(), errOut.String(), 0
}

// startWithCA is start for a target whose credentials are a user CA:
// the target's, written to a file as the policy names it.
func startWithCA(t *testing.T, tp policy.Target, rules []policy.Rule) *harness {
	t.Helper()
	tp.Credentials = &policy.Credentials{Username: "deploy", UserCAKeyFile: filepath.Join(t.TempDir(), "user_ca")}
	return start(t, tp, rules, nil).must()
}

func TestExecGuardrails(t *testing.T) {
	tp := policy.Target{}
	h := startWithCA(t, tp, []policy.Rule{{Name: "no-rm", When: policy.Match{Commands: []string{"rm"}}, Action: policy.Deny}})
	out, _, code := h.run("id -un")
	if out != "ran: id -un\n" || code != 0 {
		t.Fatalf("allowed exec: %q, exit %d", out, code)
	}
	for _, cmd := range []string{"rm -rf /tmp/x", "sh -c 'rm -rf /tmp/x'", "true; rm -rf /tmp/x", "echo 'unterminated"} {
		out, errOut, code := h.run(cmd)
		if out != "" || code != 1 || !strings.Contains(errOut, "warden: command refused") {
			t.Errorf("%q: stdout %q, stderr %q, exit %d", cmd, out, errOut, code)
		}
	}
	h.tg.mu.Lock()
	execs := append([]string(nil), h.tg.execs...)
	keyIDs := append([]string(nil), h.tg.keyIDs...)
	h.tg.mu.Unlock()
	if len(execs) != 1 || execs[0] != "id -un" {
		t.Fatalf("the target ran %q", execs)
	}
	if len(keyIDs) == 0 || !strings.HasPrefix(keyIDs[0], "warden sub=alice session=sess-alice/ssh-") {
		t.Fatalf("user certificate KeyIds %q", keyIDs)
	}
	evs := h.rec.ofType(event.SSHExec)
	if len(evs) != 5 {
		t.Fatalf("%d ssh.exec events, want 5", len(evs))
	}
	if evs[0].Decision.Action != event.Allow || evs[1].Decision.Action != event.Deny || evs[1].Decision.Rule != "no-rm" || evs[4].Decision.Rule != "parse" {
		t.Errorf("decisions: %+v %+v %+v", evs[0].Decision, evs[1].Decision, evs[4].Decision)
	}
}

func TestForwardingRefusedByDefault(t *testing.T) {
	h := startWithCA(t, policy.Target{}, nil)
	_, err := h.client.Dial("tcp", "10.9.9.9:80")
	var oe *ssh.OpenChannelError
	if !errors.As(err, &oe) || oe.Reason != ssh.Prohibited || !strings.Contains(oe.Message, "local_forward is not allowed") {
		t.Fatalf("direct-tcpip: %v", err)
	}
	if _, err := h.client.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Fatal("tcpip-forward was granted")
	}
	h.tg.mu.Lock()
	defer h.tg.mu.Unlock()
	for _, c := range h.tg.opened {
		if c != "session" {
			t.Fatalf("the target saw a %s channel", c)
		}
	}
}

func TestShellRecorded(t *testing.T) {
	h := startWithCA(t, policy.Target{}, nil)
	sess, err := h.client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.RequestPty("xterm", 40, 100, nil); err != nil {
		t.Fatal(err)
	}
	in, _ := sess.StdinPipe()
	var out bytes.Buffer
	sess.Stdout = &out
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	sess.WindowChange(50, 120)
	fmt.Fprint(in, "hello-warden exit\n")
	sess.Wait()
	h.close()
	ends := h.rec.ofType(event.SSHSession)
	if len(ends) != 2 || ends[1].Data["phase"] != "end" {
		t.Fatalf("ssh.session events: %v", ends)
	}
	rec := ends[1].Data["recording"].(map[string]any)
	data, _, err := recording.Read(context.Background(), h.store, ends[1].Data["ssh_session"].(string), rec["sha256"].(string))
	if err != nil {
		t.Fatal(err)
	}
	hdr, evs, err := recording.ParseCast(data)
	if err != nil {
		t.Fatal(err)
	}
	var o, kinds strings.Builder
	for _, e := range evs {
		kinds.WriteString(e.Kind)
		if e.Kind == "o" {
			o.WriteString(e.Data)
		}
		if e.Kind == "i" {
			t.Errorf("input recorded without record_input: %q", e.Data)
		}
	}
	if hdr.Width != 100 || hdr.Height != 40 || hdr.Env["TERM"] != "xterm" || !strings.Contains(o.String(), "HELLO-WARDEN") || !strings.Contains(kinds.String(), "r") {
		t.Fatalf("header %+v, kinds %q, output %q", hdr, kinds.String(), o.String())
	}
}

func TestWrongHostKeyRefused(t *testing.T) {
	other, _ := newEd25519Signer()
	tp := policy.Target{SSH: &policy.SSHTarget{HostKey: string(ssh.MarshalAuthorizedKey(other.PublicKey()))}}
	h := startWithCA(t, tp, nil)
	_, err := h.client.NewSession()
	if err == nil || !strings.Contains(err.Error(), "presented a host key the policy does not pin") {
		t.Fatalf("session on a target with another host key: %v", err)
	}
	evs := h.rec.ofType(event.SSHSession)
	if len(evs) != 1 || evs[0].Decision.Action != event.Deny || evs[0].Decision.Rule != "host_key" {
		t.Fatalf("events %+v", evs)
	}
}

// fakeReviewer answers every review with outcome.
type fakeReviewer struct {
	outcome guard.ReviewOutcome
	asked   []guard.ReviewRequest
}

func (f *fakeReviewer) Review(_ context.Context, req guard.ReviewRequest) guard.ReviewResult {
	f.asked = append(f.asked, req)
	if req.Waiting != nil {
		req.Waiting(guard.Waiting{ID: "R-1", Rule: req.Rule, Hold: req.Hold, Left: req.Hold})
	}
	return guard.ReviewResult{Outcome: f.outcome, ID: "R-1", By: "bob", Reason: "not now"}
}

func TestExecReview(t *testing.T) {
	rule := policy.Rule{Name: "restarts", When: policy.Match{Commands: []string{"systemctl"}}, Action: policy.Review,
		Review: &policy.ReviewSpec{Approvers: []string{"sre"}}}
	for _, tc := range []struct {
		outcome guard.ReviewOutcome
		ran     bool
		stderr  string
	}{
		{guard.ReviewApproved, true, "warden: review R-1 required by rule \"restarts\""},
		{guard.ReviewDenied, false, "warden: review R-1 of rule \"restarts\" was denied by bob: not now"},
		{guard.ReviewPending, false, "is still pending"},
	} {
		rev := &fakeReviewer{outcome: tc.outcome}
		tp := policy.Target{Credentials: &policy.Credentials{Username: "deploy", UserCAKeyFile: filepath.Join(t.TempDir(), "ca")}}
		h := startRev(t, tp, []policy.Rule{rule}, nil, rev).must()
		out, errOut, code := h.run("sudo systemctl restart app")
		if tc.ran != (out == "ran: sudo systemctl restart app\n") || !strings.Contains(errOut, tc.stderr) {
			t.Errorf("%v: stdout %q stderr %q exit %d", tc.outcome, out, errOut, code)
		}
		if len(rev.asked) != 1 || rev.asked[0].Request.Exact != "sudo systemctl restart app" {
			t.Errorf("%v: reviewer asked %+v", tc.outcome, rev.asked)
		}
		evs := h.rec.ofType(event.SSHExec)
		want := event.Allow
		if !tc.ran {
			want = event.Review
		}
		if len(evs) != 1 || evs[0].Decision.Action != want || evs[0].Decision.Rule != "restarts" {
			t.Errorf("%v: events %+v", tc.outcome, evs)
		}
	}
}

func TestPasswordPassthrough(t *testing.T) {
	h := start(t, policy.Target{}, nil, func(c *ssh.ClientConfig) {
		c.User = "bob"
		c.Auth = []ssh.AuthMethod{ssh.Password("person-secret")}
	}).must()
	if out, _, _ := h.run("id -un"); out != "ran: id -un\n" {
		t.Fatalf("exec with the user's own password: %q", out)
	}
	h.tg.mu.Lock()
	users := append([]string(nil), h.tg.users...)
	h.tg.mu.Unlock()
	if len(users) != 1 || users[0] != "bob" {
		t.Fatalf("the target saw logins as %q", users)
	}
	if evs := h.rec.ofType(event.SSHSession); len(evs) == 0 || evs[0].Data["auth"] != "passthrough" || evs[0].Data["remote_user"] != "bob" {
		t.Fatalf("session events %+v", evs)
	}
	// A wrong password fails the login once; the target is not asked
	// again on the same connection.
	bad := start(t, policy.Target{}, nil, func(c *ssh.ClientConfig) {
		c.User = "bob"
		c.Auth = []ssh.AuthMethod{ssh.RetryableAuthMethod(ssh.Password("guess"), 3)}
	})
	if bad.handshakeErr == nil {
		t.Fatal("a wrong password logged in")
	}
	bad.tg.mu.Lock()
	defer bad.tg.mu.Unlock()
	if len(bad.tg.users) != 1 {
		t.Fatalf("the target was asked %d times", len(bad.tg.users))
	}
}

func TestRecordInput(t *testing.T) {
	tp := policy.Target{SSH: &policy.SSHTarget{RecordInput: true}}
	h := startWithCA(t, tp, nil)
	sess, err := h.client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	sess.RequestPty("xterm", 24, 80, nil)
	in, _ := sess.StdinPipe()
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(in, "typed exit\n")
	sess.Wait()
	h.close()
	ends := h.rec.ofType(event.SSHSession)
	rec := ends[len(ends)-1].Data["recording"].(map[string]any)
	data, _, err := recording.Read(context.Background(), h.store, ends[len(ends)-1].Data["ssh_session"].(string), rec["sha256"].(string))
	if err != nil {
		t.Fatal(err)
	}
	_, evs, _ := recording.ParseCast(data)
	var input string
	for _, e := range evs {
		if e.Kind == "i" {
			input += e.Data
		}
	}
	if input != "typed exit\n" {
		t.Fatalf("recorded input %q", input)
	}
}

func TestRefuseBanner(t *testing.T) {
	caKey, _ := newEd25519Signer()
	ca, _ := NewHostCA(caKey)
	cc, cs := tcpPair(t)
	att := &proxy.Attribution{Target: event.Target{Name: targetName, Address: "10.0.1.7:22"},
		Kernel:   loader.ConnInfo{OrigDst: netip.MustParseAddrPort("10.0.1.7:22")},
		Decision: event.Decision{Action: event.Deny, Reason: "warden: no verified identity for this session; run 'warden login'"}}
	done := make(chan error, 1)
	go func() { done <- New(Options{HostCA: ca}).Refuse(context.Background(), cs, att) }()
	var banner string
	_, _, _, err := ssh.NewClientConn(cc, "10.0.1.7:22", &ssh.ClientConfig{User: "x",
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		BannerCallback:  func(m string) error { banner = m; return nil },
		Auth:            []ssh.AuthMethod{ssh.Password("x")}})
	if err == nil {
		t.Fatal("a refused client logged in")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(banner, "run 'warden login'") {
		t.Fatalf("banner %q", banner)
	}
}

func eventTarget(name, addr string) event.Target {
	return event.Target{Name: name, Protocol: policy.ProtocolSSH, Address: addr}
}

func TestEndTellsTheClient(t *testing.T) {
	h := startWithCA(t, policy.Target{}, nil)
	sess, err := h.client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	sess.Stderr = &errOut
	sess.StdinPipe() // an open stdin: the shell runs until the agent ends it
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	// The agent ends the stream (the person logged out).
	h.stream.End(context.Background(), "warden: your session was logged out")
	sess.Wait()
	if !strings.Contains(errOut.String(), "warden: your session was logged out") {
		t.Fatalf("stderr %q", errOut.String())
	}
}

// unpinned, as a target's ssh block, makes start leave the target without
// a host key pin.
var unpinned = &policy.SSHTarget{}

func TestUnpinnedTargetRefused(t *testing.T) {
	var banner string
	h := start(t, policy.Target{SSH: unpinned}, nil, func(c *ssh.ClientConfig) {
		c.BannerCallback = func(m string) error { banner = m; return nil }
	})
	if h.handshakeErr == nil || !strings.Contains(banner, "has no pinned host key in the policy") {
		t.Fatalf("login to a target that pins nothing: %v, banner %q", h.handshakeErr, banner)
	}
	if evs := h.rec.ofType(event.SSHSession); len(evs) != 1 || evs[0].Decision.Rule != "host_key" {
		t.Fatalf("events %+v", evs)
	}
}
