package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wardenhq/warden/tests/testenv"
)

// MariaDB is a real MariaDB server inside the test's namespace, listening
// on 127.0.0.1 with its own data directory. The test process reaches it
// as root over its Unix socket, which no BPF program redirects.
type MariaDB struct {
	env    *Env
	Dir    string
	Port   int
	Socket string
	proc   *Process
}

// MariaDBOptions change how StartMariaDBWith configures the server.
type MariaDBOptions struct {
	// TLS, when set, turns TLS on with this certificate and key. Clients
	// may still log in without it.
	TLS *ServerCert
}

// StartMariaDB initialises a data directory as the mysql OS user, starts
// mariadbd inside the namespace and waits until it accepts logins. It
// stops at cleanup, before the directory is removed. The ed25519
// authentication plugin is loaded, so tests can create users with it.
func (e *Env) StartMariaDB() *MariaDB {
	e.T.Helper()
	return e.StartMariaDBWith(MariaDBOptions{})
}

// StartMariaDBWith is StartMariaDB with options.
func (e *Env) StartMariaDBWith(opts MariaDBOptions) *MariaDB {
	e.T.Helper()
	if _, err := os.Stat("/usr/sbin/mariadbd"); err != nil {
		testenv.Unavailable(e.T, "needs the MariaDB server (apt-get install mariadb-server)")
	}
	testenv.RequireCommand(e.T, "mariadb")
	u, err := user.Lookup("mysql")
	if err != nil {
		testenv.Unavailable(e.T, "needs the mysql OS user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	dir, err := os.MkdirTemp("", "warden-mariadb-")
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		e.T.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	data := filepath.Join(dir, "data")
	install := exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=mysql",
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
	if out, err := install.CombinedOutput(); err != nil {
		e.T.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}

	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		e.T.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	sock := filepath.Join(dir, "mysqld.sock")
	args := []string{"--net=" + e.NS.Path, "--", "/usr/sbin/mariadbd", "--no-defaults",
		"--user=mysql", "--datadir=" + data, "--socket=" + sock, "--port=" + strconv.Itoa(port),
		"--bind-address=127.0.0.1", "--pid-file=" + filepath.Join(dir, "mariadbd.pid"),
		"--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
		"--innodb-flush-log-at-trx-commit=0", "--max-connections=200", "--plugin-load-add=auth_ed25519",
		// Connection attributes (Warden names the person in one) are
		// kept only with the performance schema on.
		"--performance-schema=ON", "--performance-schema-session-connect-attrs-size=2048",
		"--log-error=" + filepath.Join(dir, "error.log")}
	if opts.TLS != nil {
		crt, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		for path, b := range map[string][]byte{crt: opts.TLS.CertPEM, key: opts.TLS.KeyPEM} {
			if err := os.WriteFile(path, b, 0o600); err != nil {
				e.T.Fatal(err)
			}
			os.Chown(path, uid, gid)
		}
		args = append(args, "--ssl-cert="+crt, "--ssl-key="+key)
	}
	cmd := exec.Command("nsenter", args...)
	cmd.Dir = dir
	m := &MariaDB{env: e, Dir: dir, Port: port, Socket: sock}
	m.proc = e.StartProcess("mariadbd", cmd)
	e.T.Cleanup(func() {
		if !m.proc.Exited() {
			m.proc.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-m.proc.done:
			case <-time.After(30 * time.Second):
				m.proc.Kill()
			}
		}
		if e.T.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "error.log")); err == nil {
				e.T.Logf("mariadbd error log:\n%s", b)
			}
		}
	})
	e.Eventually("mariadb accepts logins", func() error {
		if m.proc.Exited() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			e.T.Fatalf("mariadbd exited:\n%s\n%s", m.proc.Output(), b)
		}
		_, err := m.Query("SELECT 1")
		return err
	})
	return m
}

// Addr is host:port of the server on 127.0.0.1.
func (m *MariaDB) Addr() string { return fmt.Sprintf("127.0.0.1:%d", m.Port) }

// Query runs SQL as root over the Unix socket with the real mariadb
// client and returns its tab-separated output, without column names.
func (m *MariaDB) Query(sql string) (string, error) {
	cmd := exec.Command("mariadb", "--no-defaults", "--protocol=socket", "-S", m.Socket, "-uroot", "-N", "-B", "-e", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("mariadb: %w: %s", err, out)
	}
	return string(out), nil
}

// Exec runs SQL as root and fails the test on error.
func (m *MariaDB) Exec(sql string) {
	m.env.T.Helper()
	if out, err := m.Query(sql); err != nil {
		m.env.T.Fatalf("setup SQL failed: %v\n%s", err, out)
	}
}

// QueryInt runs a one-value query as root.
func (m *MariaDB) QueryInt(sql string) int64 {
	m.env.T.Helper()
	out, err := m.Query(sql)
	if err != nil {
		m.env.T.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		m.env.T.Fatalf("%q: not a number: %q", sql, out)
	}
	return n
}
