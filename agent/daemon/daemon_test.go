package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/config"
	"github.com/wardenhq/warden/pkg/event"
)

// fakeRecorder keeps what the daemon emitted and counted as lost.
type fakeRecorder struct {
	mu     sync.Mutex
	events []*event.Event
}

func (r *fakeRecorder) Emit(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

func (r *fakeRecorder) Lost(string, string, uint64) {}

// testConfig is a configuration whose files all live in a fresh directory.
// Nothing in these tests gets as far as the kernel: each fails before.
func testConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("targets:\n  - name: db\n    protocol: postgres\n    address: 127.0.0.1:9\naccess:\n  - groups: [dba]\n    targets: [db]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.HostID = "test"
	cfg.OIDC.Issuer, cfg.OIDC.ClientID = "http://127.0.0.1:1", "warden"
	cfg.ProxyListen = freeAddr(t)
	cfg.Socket = filepath.Join(dir, "agent.sock")
	cfg.PolicyFile = policy
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.SpoolDir = filepath.Join(dir, "spool")
	cfg.KeyFile = filepath.Join(dir, "agent.key")
	cfg.BPFPinDir = filepath.Join(dir, "bpf")
	cfg.MetricsListen = ""
	return cfg
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func run(t *testing.T, cfg config.Config) (*fakeRecorder, error) {
	t.Helper()
	rec := &fakeRecorder{}
	err := Run(context.Background(), cfg, rec, zerolog.Nop(), nil)
	if err == nil {
		t.Fatal("Run succeeded, want a start-up error")
	}
	return rec, err
}

// A start-up error is returned, never a panic, and names its cause.
func TestStartErrorsNameTheirCause(t *testing.T) {
	t.Run("bad policy", func(t *testing.T) {
		cfg := testConfig(t)
		if err := os.WriteFile(cfg.PolicyFile, []byte("targets:\n  - name: db\n    protocol: mongo\n    address: 127.0.0.1:9\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, cfg)
		lines := strings.Split(err.Error(), "\n")
		if lines[0] != fmt.Sprintf("policy_file %s is invalid (1 problem):", cfg.PolicyFile) ||
			len(lines) != 2 || !strings.HasPrefix(lines[1], cfg.PolicyFile+":3:") {
			t.Fatalf("error %q", err)
		}
	})
	t.Run("policy file missing", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.PolicyFile = filepath.Join(t.TempDir(), "absent.yaml")
		_, err := run(t, cfg)
		if !strings.HasPrefix(err.Error(), "policy_file "+cfg.PolicyFile+": ") || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error %q", err)
		}
	})
	t.Run("proxy port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cfg := testConfig(t)
		cfg.ProxyListen = ln.Addr().String()
		_, err = run(t, cfg)
		if err.Error() != "proxy_listen "+cfg.ProxyListen+": address already in use" || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("error %q", err)
		}
	})
	t.Run("metrics port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cfg := testConfig(t)
		cfg.MetricsListen = ln.Addr().String()
		_, err = run(t, cfg)
		if err.Error() != "metrics_listen "+cfg.MetricsListen+": address already in use" || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("error %q", err)
		}
	})
	t.Run("issuer without discovery document", func(t *testing.T) {
		srv := http.Server{Handler: http.NotFoundHandler()}
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		defer srv.Close()
		cfg := testConfig(t)
		cfg.OIDC.Issuer = "http://" + ln.Addr().String() + "/realm"
		rec, err := run(t, cfg)
		if !strings.HasPrefix(err.Error(), "oidc.issuer "+cfg.OIDC.Issuer+" is not a usable OpenID Connect issuer: 404") ||
			strings.Contains(err.Error(), "\n") {
			t.Fatalf("error %q", err)
		}
		// The proxy's listeners were open by then: start closed them.
		again, err := net.Listen("tcp4", cfg.ProxyListen)
		if err != nil {
			t.Fatalf("proxy_listen %s still held after the failed start: %v", cfg.ProxyListen, err)
		}
		again.Close()
		if len(rec.events) != 0 {
			t.Fatalf("a failed start emitted %d events", len(rec.events))
		}
	})
}

// An issuer that cannot be reached is the network's problem, one that
// answers wrongly the configuration's.
func TestIssuerUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused", &url.Error{Op: "Get", URL: "http://idp", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, true},
		{"dns timeout", &net.OpError{Op: "dial", Err: &net.DNSError{Name: "idp", IsTimeout: true}}, true},
		{"no such host", &net.OpError{Op: "dial", Err: &net.DNSError{Name: "idp", IsNotFound: true}}, false},
		{"http status", errors.New("404 Not Found: nothing here"), false},
		{"timeout", &url.Error{Op: "Get", URL: "http://idp", Err: timeoutError{}}, true},
	} {
		if got := issuerUnreachable(tc.err); got != tc.want {
			t.Errorf("%s: issuerUnreachable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestOneLine(t *testing.T) {
	if got := oneLine("404 Not Found:\n<html>\n  <body>é</body>\n</html>", 200); got != "404 Not Found: <html> <body>é</body> </html>" {
		t.Fatalf("oneLine = %q", got)
	}
	// Cut on a rune boundary.
	if got := oneLine("aé", 2); got != "a…" {
		t.Fatalf("oneLine cut = %q", got)
	}
}
