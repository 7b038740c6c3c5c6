package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/pkg/review"
	"github.com/wardenhq/warden/tests/testenv"
)

// hang bounds waits so a broken server fails the test instead of hanging.
const hang = 10 * time.Second

// call is one request the fake service saw.
type call struct {
	op    string
	peer  session.Peer
	token string
}

// fakeService answers every call with a session describing the caller
// (UID from the peer, Cgroup "pid:<pid>"), or with err when set.
type fakeService struct {
	err error

	mu    sync.Mutex
	calls []call
}

func (f *fakeService) record(op string, peer session.Peer, token string) (*session.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{op, peer, token})
	if f.err != nil {
		return nil, f.err
	}
	return &session.Session{
		ID:       "s-" + op,
		UID:      peer.UID,
		Cgroup:   "pid:" + strconv.Itoa(peer.PID),
		Identity: session.Identity{Subject: "alice", Issuer: "https://idp.example.com", Groups: []string{"engineering"}},
		Expires:  time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
	}, nil
}

func (f *fakeService) Login(ctx context.Context, peer session.Peer, tok string) (*session.Session, error) {
	return f.record("login", peer, tok)
}

func (f *fakeService) Logout(ctx context.Context, peer session.Peer) (*session.Session, error) {
	return f.record("logout", peer, "")
}

func (f *fakeService) Whoami(ctx context.Context, peer session.Peer) (*session.Session, error) {
	return f.record("whoami", peer, "")
}

func (f *fakeService) IdP() IdPInfo {
	return IdPInfo{Issuer: "https://idp.example.com", ClientID: "warden"}
}

func (f *fakeService) RequestAccess(_ context.Context, _ session.Peer, req AccessRequest) (*review.Review, error) {
	if req.Target != "orders-db" {
		return nil, errors.New("no target " + req.Target)
	}
	return &review.Review{ID: "R-01JPA7T0000000000000000000", Target: req.Target, Reason: req.Reason, GrantFor: req.For}, nil
}

func (f *fakeService) seen() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// serve runs a Server for svc on a socket in a fresh directory and stops it
// when the test ends. It returns the socket path and a function that stops
// the server and reports Serve's result.
func serve(t *testing.T, svc Service) (string, func() error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "agent.sock")
	srv, err := Listen(path, svc, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(hang):
				result = errors.New("Serve did not return after cancel")
			}
		})
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path, stop
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), hang)
	t.Cleanup(cancel)
	return c
}

func self() session.Peer { return session.Peer{PID: os.Getpid(), UID: uint32(os.Getuid())} }

func TestClientCalls(t *testing.T) {
	svc := &fakeService{}
	path, _ := serve(t, svc)
	c := NewClient(path)

	s, err := c.Login(ctx(t), "header.payload.signature")
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	if s.ID != "s-login" || s.Identity.Subject != "alice" || !s.Expires.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("Login returned %+v", s)
	}
	if s, err := c.Whoami(ctx(t)); err != nil || s.ID != "s-whoami" {
		t.Errorf("Whoami = %+v, %v", s, err)
	}
	if s, err := c.Logout(ctx(t)); err != nil || s.ID != "s-logout" {
		t.Errorf("Logout = %+v, %v", s, err)
	}
	info, err := c.IdP(ctx(t))
	if err != nil || info != (IdPInfo{Issuer: "https://idp.example.com", ClientID: "warden"}) {
		t.Errorf("IdP = %+v, %v", info, err)
	}
	r, err := c.RequestAccess(ctx(t), AccessRequest{Target: "orders-db", Reason: "incident 42", For: review.Duration(time.Hour)})
	if err != nil || r.ID != "R-01JPA7T0000000000000000000" || r.Reason != "incident 42" || r.GrantFor.D() != time.Hour {
		t.Errorf("RequestAccess = %+v, %v", r, err)
	}
	if _, err := c.RequestAccess(ctx(t), AccessRequest{Target: "nope", Reason: "x"}); err == nil || err.Error() != "no target nope" {
		t.Errorf("RequestAccess of an unknown target: %v, want the service's error verbatim", err)
	}

	want := []call{
		{"login", self(), "header.payload.signature"},
		{"whoami", self(), ""},
		{"logout", self(), ""},
	}
	got := svc.seen()
	if len(got) != len(want) {
		t.Fatalf("service saw %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("call %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestErrorsComeBackAsErrors(t *testing.T) {
	svc := &fakeService{err: session.ErrNoSession}
	path, _ := serve(t, svc)
	c := NewClient(path)
	for name, f := range map[string]func(context.Context) (*session.Session, error){
		"login":  func(ctx context.Context) (*session.Session, error) { return c.Login(ctx, "tok") },
		"whoami": c.Whoami,
		"logout": c.Logout,
	} {
		s, err := f(ctx(t))
		if err == nil || err.Error() != session.ErrNoSession.Error() {
			t.Errorf("%s = %+v, %v; want the service's error verbatim", name, s, err)
		}
	}
}

// TestErrorStatusAndBody checks the wire format the CLI and scripts rely
// on: a JSON ErrorResponse with a status saying what went wrong.
func TestErrorStatusAndBody(t *testing.T) {
	svc := &fakeService{err: errors.New("token expired")}
	path, _ := serve(t, svc)
	hc := rawClient(path)
	tests := []struct {
		method, path, body string
		status             int
		contains           string
	}{
		{"POST", "/v1/login", `{"id_token":"x"}`, http.StatusUnauthorized, "token expired"},
		{"POST", "/v1/logout", "", http.StatusNotFound, "token expired"},
		{"GET", "/v1/whoami", "", http.StatusNotFound, "token expired"},
		{"POST", "/v1/login", `{"id_token":`, http.StatusBadRequest, "not valid JSON"},
		{"POST", "/v1/login", `not json`, http.StatusBadRequest, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path+tt.body, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx(t), tt.method, "http://wardend"+tt.path, strings.NewReader(tt.body))
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var e ErrorResponse
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("error body is not JSON: %v", err)
			}
			if !strings.Contains(e.Error, tt.contains) {
				t.Errorf("error %q does not contain %q", e.Error, tt.contains)
			}
		})
	}
	for _, c := range svc.seen() {
		if c.op == "login" && c.token != "x" {
			t.Errorf("service saw a login from a malformed request: %+v", c)
		}
	}
}

func TestWrongMethod(t *testing.T) {
	svc := &fakeService{}
	path, _ := serve(t, svc)
	hc := rawClient(path)
	for _, r := range []struct{ method, path string }{{"GET", "/v1/login"}, {"GET", "/v1/logout"}, {"POST", "/v1/whoami"}} {
		req, _ := http.NewRequestWithContext(ctx(t), r.method, "http://wardend"+r.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: status %d", r.method, r.path, resp.StatusCode)
		}
	}
	if len(svc.seen()) != 0 {
		t.Errorf("service called: %+v", svc.seen())
	}
}

func TestOversizeLoginRejected(t *testing.T) {
	svc := &fakeService{}
	path, _ := serve(t, svc)
	c := NewClient(path)
	_, err := c.Login(ctx(t), strings.Repeat("a", MaxTokenBytes+1))
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("Login with an oversize token = %v, want a too-large error", err)
	}
	if len(svc.seen()) != 0 {
		t.Errorf("service saw an oversize login: %d calls", len(svc.seen()))
	}
	// A token that fits still works, on a fresh connection.
	tok := strings.Repeat("b", MaxTokenBytes-len(`{"id_token":""}`))
	if _, err := c.Login(ctx(t), tok); err != nil {
		t.Errorf("Login with a token at the limit: %v", err)
	}
	if calls := svc.seen(); len(calls) != 1 || calls[0].token != tok {
		t.Errorf("service did not get the token at the limit")
	}
}

func TestSocket(t *testing.T) {
	svc := &fakeService{}
	dir := filepath.Join(t.TempDir(), "run", "warden")
	path := filepath.Join(dir, "agent.sock")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A stale socket file from a previous run is replaced.
	if err := os.WriteFile(path, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := Listen(path, svc, zerolog.Nop())
	if err != nil {
		t.Fatalf("Listen over a stale file: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		t.Errorf("%s is %v, want a socket", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm != 0o666 {
		t.Errorf("socket mode %v, want 0666 so any user can log in", perm)
	}

	ctx, cancel := context.WithCancel(ctx(t))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	if _, err := NewClient(path).Whoami(context.Background()); err != nil {
		t.Fatalf("Whoami: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(hang):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind after Serve: %v", err)
	}
	if _, err := NewClient(path).Whoami(context.Background()); err == nil || !strings.Contains(err.Error(), "reach wardend") {
		t.Errorf("Whoami with no agent = %v, want a reach error", err)
	}
}

func TestListenErrors(t *testing.T) {
	dir := t.TempDir()
	// A directory where the socket should go cannot be replaced.
	busy := filepath.Join(dir, "busy")
	if err := os.MkdirAll(filepath.Join(busy, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(busy, &fakeService{}, zerolog.Nop()); err == nil {
		t.Error("Listen over a non-empty directory succeeded")
	}
	// A file where the socket's directory should go.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Listen(filepath.Join(file, "agent.sock"), &fakeService{}, zerolog.Nop()); err == nil {
		t.Error("Listen under a regular file succeeded")
	}
}

// rawClient is an HTTP client that dials the socket at path.
func rawClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}

// helperEnv names the socket a re-executed test binary calls Whoami on.
const helperEnv = "WARDEN_CONTROL_TEST_SOCKET"

// TestHelperWhoami is not a test: it is the client process that
// TestPeerIsTheCallingProcess starts, as another user, to call the socket.
func TestHelperWhoami(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	s, err := NewClient(path).Whoami(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	json.NewEncoder(os.Stdout).Encode(s)
	os.Exit(0)
}

// TestPeerIsTheCallingProcess calls the socket from another process
// running as another user (nobody): the service must see that process's pid
// and uid, which only SO_PEERCRED can tell it, and the 0666 socket must let
// the unprivileged user in.
func TestPeerIsTheCallingProcess(t *testing.T) {
	testenv.RequireRoot(t)
	const nobody = 65534
	svc := &fakeService{}
	dir := t.TempDir()
	// The unprivileged helper must reach both the binary and the socket.
	// t.TempDir makes both the test's directory and dir 0700.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "control.test")
	if err := copyFile(bin, os.Args[0]); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "agent.sock")
	srv, err := Listen(path, svc, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx(t))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestHelperWhoami$")
	cmd.Env = []string{helperEnv + "=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v\n%s", err, stderr.String())
	}
	var s session.Session
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("helper output %q: %v", stdout.String(), err)
	}
	calls := svc.seen()
	if len(calls) != 1 {
		t.Fatalf("service saw %+v", calls)
	}
	want := session.Peer{PID: cmd.Process.Pid, UID: nobody}
	if calls[0].peer != want {
		t.Errorf("service saw peer %+v, want the helper %+v", calls[0].peer, want)
	}
	if s.UID != nobody || s.Cgroup != "pid:"+strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("helper got %+v", s)
	}
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
