package redis

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
	resp "github.com/wardenhq/warden/pkg/protocol/redis"
)

// recorder keeps the events a stream records.
type recorder struct {
	mu     sync.Mutex
	events []*event.Event
	fail   error
}

func (r *recorder) Emit(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) all() []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*event.Event(nil), r.events...)
}

// fakeServer reads commands as redis-server would and answers each with
// the next of its scripted replies; it records what it ran.
type fakeServer struct {
	mu  sync.Mutex
	ran []string
}

func (f *fakeServer) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ran...)
}

// serve answers commands on c: answer returns the raw replies for one
// command (several for SUBSCRIBE, say).
func (f *fakeServer) serve(c net.Conn, answer func(args []string) string) {
	r := resp.NewReader(c)
	for {
		cmd, err := r.ReadCommand()
		if err != nil {
			return
		}
		if cmd.Inline {
			panic("the proxy sent an inline command")
		}
		args := strs(cmd.Args)
		f.mu.Lock()
		f.ran = append(f.ran, strings.Join(args, " "))
		f.mu.Unlock()
		if _, err := io.WriteString(c, answer(args)); err != nil {
			return
		}
	}
}

func strs(args [][]byte) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = string(a)
	}
	return out
}

// store is a toy keyspace for the fake server: enough for the codec's
// paths.
func store(data map[string]string) func(args []string) string {
	inMulti := false
	return func(args []string) string {
		name := strings.ToLower(args[0])
		if inMulti && name != "exec" && name != "discard" {
			return "+QUEUED\r\n"
		}
		switch name {
		case "multi":
			inMulti = true
			return "+OK\r\n"
		case "auth", "set", "discard":
			inMulti = false
			return "+OK\r\n"
		case "get":
			if v, ok := data[args[1]]; ok {
				return string(resp.AppendReply(nil, resp.Bulk([]byte(v))))
			}
			return "$-1\r\n"
		case "mget":
			rep := resp.Reply{Kind: resp.KindArray}
			for _, k := range args[1:] {
				rep.Elems = append(rep.Elems, resp.Bulk([]byte(data[k])))
			}
			return string(resp.AppendReply(nil, rep))
		case "exec":
			inMulti = false
			return "*2\r\n+OK\r\n$" + itoa(len(data["user:1:email"])) + "\r\n" + data["user:1:email"] + "\r\n"
		case "subscribe":
			out := ""
			for i, ch := range args[1:] {
				out += "*3\r\n$9\r\nsubscribe\r\n$" + itoa(len(ch)) + "\r\n" + ch + "\r\n:" + itoa(i+1) + "\r\n"
			}
			// A message published as soon as the client listens.
			out += "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$23\r\ncard 4111111111111111 !\r\n"
			return out
		case "unsubscribe":
			return "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"
		case "ping":
			return "+PONG\r\n"
		}
		return "-ERR unknown command\r\n"
	}
}

func itoa(n int) string {
	b := []byte{}
	if n == 0 {
		return "0"
	}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

// rig is a codec stream between a test client and a fake server.
type rig struct {
	rd    *resp.Reader
	conn  net.Conn
	sends sync.WaitGroup
	srv   *fakeServer
	rec   *recorder
	done  chan error
}

const policyText = `targets:
  - name: cache
    protocol: redis
    address: 10.0.0.6:6379
access:
  - groups: [engineering]
    targets: [cache]
rules:
  - name: no-flush
    targets: [cache]
    when: { commands: [flushall, "config set"] }
    action: deny
  - name: lua-ok
    targets: [cache]
    when: { commands: [scripting] }
    action: allow
    except_groups: [contractors]
  - name: review-del
    targets: [cache]
    when: { commands: [del] }
    action: review
    review: { approvers: [dba] }
masking:
  - name: pii
    targets: [cache]
    keys: ["user:*:email"]
    detectors: [credit_card]
    except_groups: [pii-readers]
`

func newRig(t *testing.T, groups []string, creds bool, data map[string]string, rev ...guard.Reviewer) *rig {
	t.Helper()
	p, err := policy.Parse([]byte(policyText), "policy.yaml", policy.Enforcement{policy.ProtocolRedis: New().Enforces()})
	if err != nil {
		t.Fatal(err)
	}
	tp, _ := p.Target("cache")
	if creds {
		pw := filepath.Join(t.TempDir(), "pw")
		os.WriteFile(pw, []byte("vaulted\n"), 0o600)
		tp.Credentials = &policy.Credentials{Username: "app", PasswordFile: pw}
	}
	cc, cp := net.Pipe()
	uc, up := net.Pipe()
	srv := &fakeServer{}
	go srv.serve(up, store(data))
	rec := &recorder{}
	att := &proxy.Attribution{Target: event.Target{Name: "cache", Protocol: "redis"}, Policy: p, TargetPolicy: tp,
		Identity: &event.Identity{Sub: "alice", Groups: groups}, Decision: event.Decision{Action: event.Allow}}
	s := &proxy.Stream{Client: cp, Upstream: uc, Attribution: att, Log: zerolog.Nop(),
		Guard: guard.New(p, "cache", groups, reviewer(rev)), Audit: proxy.NewAudit(rec, att, proxy.FailClosed)}
	r := &rig{rd: resp.NewReader(cc), conn: cc, srv: srv, rec: rec, done: make(chan error, 1)}
	go func() { r.done <- New().Serve(context.Background(), s) }()
	t.Cleanup(func() {
		cc.Close()
		r.sends.Wait()
		up.Close()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return r
}

// send writes raw bytes in one write, as a pipelining client does. The
// write goes on while the test reads replies: the pipe is synchronous.
func (r *rig) send(t *testing.T, raw string) {
	t.Helper()
	r.sends.Wait()
	r.sends.Add(1)
	go func() {
		defer r.sends.Done()
		io.WriteString(r.conn, raw)
	}()
}

// expect reads n replies and compares their encodings.
func (r *rig) expect(t *testing.T, want ...string) {
	t.Helper()
	for i, w := range want {
		r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		rep, err := r.rd.ReadReply()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if got := string(resp.AppendReply(nil, rep)); got != w {
			t.Fatalf("reply %d: got %q, want %q", i, got, w)
		}
	}
}

func TestPipelineOrderAndDenial(t *testing.T) {
	r := newRig(t, []string{"engineering"}, false, map[string]string{"a": "1"})
	r.send(t, "SET a 1\r\nFLUSHALL\r\nGET a\r\nconfig SET maxmemory 1\r\n")
	r.expect(t, "+OK\r\n", `-NOPERM warden: FLUSHALL denied by rule "no-flush"`+"\r\n", "$1\r\n1\r\n",
		`-NOPERM warden: CONFIG SET denied by rule "no-flush"`+"\r\n")
	if got := r.srv.commands(); strings.Join(got, "|") != "SET a 1|GET a" {
		t.Fatalf("the server ran %q", got)
	}
	evs := r.rec.all()
	if len(evs) != 4 || evs[1].Data["command"] != "FLUSHALL" || evs[1].Decision.Action != event.Deny ||
		evs[3].Data["subcommand"] != "SET" || evs[0].Data["inline"] != true {
		t.Fatalf("events: %+v", evs)
	}
}

func TestMultiWithDeniedCommandAborts(t *testing.T) {
	r := newRig(t, []string{"engineering"}, false, nil)
	r.send(t, "MULTI\r\nSET a 1\r\nFLUSHALL\r\nEXEC\r\n")
	r.expect(t, "+OK\r\n", "+QUEUED\r\n", `-NOPERM warden: FLUSHALL denied by rule "no-flush"`+"\r\n",
		"-EXECABORT Transaction discarded because of previous errors: Warden refused a command in it\r\n")
	if got := r.srv.commands(); strings.Join(got, "|") != "MULTI|SET a 1|DISCARD" {
		t.Fatalf("the server ran %q", got)
	}
	if ev := r.rec.all()[2]; ev.Data["transaction"] != true {
		t.Fatalf("FLUSHALL's event does not say it was queued: %v", ev.Data)
	}
}

func TestMasking(t *testing.T) {
	r := newRig(t, []string{"engineering"}, false, map[string]string{"user:1:email": "a@b.example", "note": "card 4111111111111111"})
	r.send(t, "GET user:1:email\r\nGET note\r\nMGET note user:1:email\r\nMULTI\r\nSET x 1\r\nGET user:1:email\r\nEXEC\r\n")
	r.expect(t, "$4\r\n****\r\n", "$25\r\ncard [masked:credit_card]\r\n", "*2\r\n$25\r\ncard [masked:credit_card]\r\n$4\r\n****\r\n",
		"+OK\r\n", "+QUEUED\r\n", "+QUEUED\r\n", "*2\r\n+OK\r\n$4\r\n****\r\n")
}

func TestPubSub(t *testing.T) {
	r := newRig(t, []string{"engineering"}, false, nil)
	r.send(t, "SUBSCRIBE a b\r\nPING\r\n")
	r.expect(t, "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n", "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
		"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$27\r\ncard [masked:credit_card] !\r\n", "+PONG\r\n")
	r.send(t, "UNSUBSCRIBE\r\nPING\r\n")
	r.expect(t, "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n", "*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n", "+PONG\r\n")
}

func TestScriptingGuard(t *testing.T) {
	// engineering: lua-ok allows scripting explicitly.
	r := newRig(t, []string{"engineering"}, false, nil)
	r.send(t, "EVAL \"return 1\" 0\r\n")
	r.expect(t, "-ERR unknown command\r\n") // reached the (fake) server
	// contractors are exempt from lua-ok: the deny rule on commands
	// guards scripting for them.
	r = newRig(t, []string{"contractors"}, false, nil)
	r.send(t, "EVAL \"redis.call('flushall')\" 0\r\nSCRIPT LOAD x\r\n")
	r.expect(t, `-NOPERM warden: EVAL denied: a script can run any command out of Warden's sight, and target cache denies commands (rule "no-flush"); a rule must allow scripting explicitly`+"\r\n",
		`-NOPERM warden: SCRIPT LOAD denied: a script can run any command out of Warden's sight, and target cache denies commands (rule "no-flush"); a rule must allow scripting explicitly`+"\r\n")
	if got := r.srv.commands(); len(got) != 0 {
		t.Fatalf("the server ran %q", got)
	}
}

func TestAuthAndHello(t *testing.T) {
	r := newRig(t, []string{"engineering"}, true, nil)
	r.send(t, "AUTH me typed-password\r\nHELLO 3 AUTH me pw\r\nMONITOR\r\nCLIENT REPLY OFF\r\nPING\r\n")
	r.expect(t, "+OK\r\n", "-NOPROTO warden: only RESP2 is spoken through Warden; use protocol 2\r\n",
		"-NOPERM warden: MONITOR is not allowed through Warden: it streams every client's commands and values\r\n",
		"-NOPERM warden: CLIENT REPLY OFF and SKIP are not allowed through Warden\r\n", "+PONG\r\n")
	got := r.srv.commands()
	if strings.Join(got, "|") != "AUTH app vaulted|PING" {
		t.Fatalf("the server ran %q", got)
	}
	for _, ev := range r.rec.all() {
		for _, v := range ev.Data {
			if strings.Contains(strings.ToLower(stringOf(v)), "password") || strings.Contains(stringOf(v), "vaulted") {
				t.Fatalf("an event holds a secret: %v", ev.Data)
			}
		}
	}
}

func stringOf(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

func TestUnrecordedCommandRefused(t *testing.T) {
	r := newRig(t, []string{"engineering"}, false, nil)
	r.rec.mu.Lock()
	r.rec.fail = errors.New("disk on fire")
	r.rec.mu.Unlock()
	r.send(t, "SET a 1\r\n")
	r.expect(t, "-ERR warden: the audit log cannot record this command (disk error); refusing\r\n")
	if got := r.srv.commands(); len(got) != 0 {
		t.Fatalf("the server ran %q", got)
	}
}

func TestProtocolErrorCloses(t *testing.T) {
	r := newRig(t, []string{"engineering"}, false, nil)
	r.send(t, "*1\r\n+GET\r\n")
	r.expect(t, "-ERR Protocol error: expected '$', got '+'\r\n")
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the session went on after a protocol error")
	}
	r.done <- nil // for cleanup
}

// RESET logs the connection in as the server's default user: the proxy
// logs in again as the vaulted one, and the client sees RESET's answer
// only.
func TestResetLogsInAgain(t *testing.T) {
	r := newRig(t, []string{"engineering"}, true, nil)
	r.send(t, "RESET\r\nPING\r\n")
	r.expect(t, "-ERR unknown command\r\n", "+PONG\r\n")
	if got := strings.Join(r.srv.commands(), "|"); got != "AUTH app vaulted|RESET|AUTH app vaulted|PING" {
		t.Fatalf("the server ran %q", got)
	}
}

// A client that writes a whole long pipeline before it reads a reply (as
// go-redis does) must not stall the proxy: the replies wait for it while
// its commands keep flowing to the server.
func TestLongPipelineBeforeReading(t *testing.T) {
	big := strings.Repeat("v", 10<<10)
	r := newRig(t, []string{"engineering"}, false, map[string]string{"big": big})
	const n = 2000
	written := make(chan error, 1)
	go func() {
		_, err := io.WriteString(r.conn, strings.Repeat("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n", n))
		written <- err
	}()
	select {
	case err := <-written:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the proxy stopped reading the pipeline while its replies were not read")
	}
	want := string(resp.AppendReply(nil, resp.Bulk([]byte(big))))
	for i := range n {
		rep, err := r.rd.ReadReply()
		if err != nil || string(resp.AppendReply(nil, rep)) != want {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
}

// A refused client gets the reason on every command it sends first, so
// the one a library sends after its own set-up commands shows it too.
func TestRefuse(t *testing.T) {
	cc, cp := net.Pipe()
	defer cc.Close()
	att := &proxy.Attribution{Decision: event.Decision{Action: event.Deny, Reason: "warden: no verified identity for this session; run 'warden login'"}}
	done := make(chan error, 1)
	go func() {
		done <- New().Refuse(context.Background(), cp, att)
		cp.Close()
	}()
	go io.WriteString(cc, "HELLO 3\r\nCLIENT SETINFO lib-name go-redis\r\nGET k\r\n")
	rd := resp.NewReader(cc)
	for i := range 3 {
		rep, err := rd.ReadReply()
		if err != nil || rep.Kind != resp.KindError || string(rep.Str) != "NOPERM "+att.Decision.Reason {
			t.Fatalf("reply %d: %q %v", i, rep.Str, err)
		}
	}
	cc.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Key masking rewrites bulk replies; commands that would give a masked
// value away otherwise, or copy it to an unmasked name, are refused.
func TestMaskedKeyLeaksRefused(t *testing.T) {
	r := newRig(t, []string{"engineering"}, false, nil)
	r.send(t, "GETBIT user:1:email 7\r\nCOPY user:1:email plain\r\nSORT user:1:email STORE plain\r\nCOPY user:1:email user:2:email\r\nGETBIT other 7\r\n")
	r.expect(t,
		"-NOPERM warden: GETBIT on masked key user:1:email would give its value away; refused\r\n",
		"-NOPERM warden: COPY would copy masked key user:1:email to a name that is not masked; refused\r\n",
		"-NOPERM warden: SORT would copy masked key user:1:email to a name that is not masked; refused\r\n",
		"-ERR unknown command\r\n", "-ERR unknown command\r\n") // reached the (fake) server
	if got := strings.Join(r.srv.commands(), "|"); got != "COPY user:1:email user:2:email|GETBIT other 7" {
		t.Fatalf("the server ran %q", got)
	}
	// Exempt from the masking, nothing is refused.
	r = newRig(t, []string{"engineering", "pii-readers"}, false, nil)
	r.send(t, "GETBIT user:1:email 7\r\n")
	r.expect(t, "-ERR unknown command\r\n")
}

func reviewer(rev []guard.Reviewer) guard.Reviewer {
	if len(rev) == 0 {
		return nil
	}
	return rev[0]
}

func TestReviewApproved(t *testing.T) {
	approve := guard.ReviewerFunc(func(ctx context.Context, req guard.ReviewRequest) guard.ReviewResult {
		if req.Request.Text != "DEL k" || req.Rule != "review-del" {
			return guard.ReviewResult{Outcome: guard.ReviewDenied, ID: "R-1", By: "test", Reason: "wrong request " + req.Request.Text}
		}
		return guard.ReviewResult{Outcome: guard.ReviewApproved, ID: "R-1"}
	})
	r := newRig(t, []string{"engineering"}, false, nil, approve)
	r.send(t, "DEL k\r\n")
	r.expect(t, "-ERR unknown command\r\n") // reached the (fake) server
	if ev := r.rec.all()[0]; ev.Decision.Reason != "approved in review R-1" {
		t.Fatalf("decision %+v", ev.Decision)
	}
}

// Hanging up while held withdraws the command from the review.
func TestReviewWithdrawnWhenClientHangsUp(t *testing.T) {
	held, withdrawn := make(chan struct{}), make(chan struct{})
	wait := guard.ReviewerFunc(func(ctx context.Context, req guard.ReviewRequest) guard.ReviewResult {
		close(held)
		<-ctx.Done()
		close(withdrawn)
		return guard.ReviewResult{Outcome: guard.ReviewCancelled, ID: "R-2"}
	})
	r := newRig(t, []string{"engineering"}, false, nil, wait)
	r.send(t, "DEL k\r\n")
	<-held
	r.conn.Close()
	select {
	case <-withdrawn:
	case <-time.After(10 * time.Second):
		t.Fatal("the review hold went on after the client hung up")
	}
	if got := r.srv.commands(); len(got) != 0 {
		t.Fatalf("the server ran %q", got)
	}
}

// A held command does not stop the session: once decided, the commands
// that came in meanwhile are read as usual.
func TestReviewDeniedThenNextCommand(t *testing.T) {
	deny := guard.ReviewerFunc(func(ctx context.Context, req guard.ReviewRequest) guard.ReviewResult {
		return guard.ReviewResult{Outcome: guard.ReviewDenied, ID: "R-3", By: "bob", Reason: "not now"}
	})
	r := newRig(t, []string{"engineering"}, false, nil, deny)
	r.send(t, "DEL k\r\nPING\r\n")
	r.expect(t, "-NOPERM warden: DEL: review R-3 denied by bob: not now\r\n", "+PONG\r\n")
}
