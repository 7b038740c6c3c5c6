package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// startPgBouncer runs PgBouncer (Debian's pgbouncer, 1.18 on bookworm) in
// the test's network namespace in session mode, in front of the
// PostgreSQL server on pgPort, logging user in with password upstream.
// Clients are trusted: pgbench opens its 8 connections once, so client
// authentication is not what the bench compares. It returns PgBouncer's
// port and pid; the process is stopped at cleanup.
func startPgBouncer(t *testing.T, e *harness.Env, pgPort int, user, password string) (port, pid int) {
	t.Helper()
	bin := testenv.RequireCommand(t, "pgbouncer")
	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// PgBouncer refuses to run as root: it runs as nobody, who must read
	// its files.
	dir, err := os.MkdirTemp("", "warden-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	users := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(users, fmt.Appendf(nil, "%q %q\n", user, password), 0o644); err != nil {
		t.Fatal(err)
	}
	ini := filepath.Join(dir, "pgbouncer.ini")
	conf := fmt.Sprintf(`[databases]
postgres = host=127.0.0.1 port=%d dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = session
max_client_conn = 100
default_pool_size = 20
`, pgPort, port, users)
	if err := os.WriteFile(ini, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := e.NSCommand(bin, "-u", "nobody", ini)
	var logBuf bytes.Buffer // PgBouncer logs to stderr
	cmd.Stderr = &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pgbouncer: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// nsenter execs pgbouncer in place: the pid is PgBouncer's.
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := e.NS.DialContext(t.Context(), "tcp4", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbouncer does not listen on %d: %v\n%s", port, err, logBuf.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return port, cmd.Process.Pid
}
