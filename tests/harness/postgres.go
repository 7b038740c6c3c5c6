package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wardenhq/warden/tests/testenv"
)

// PostgresSuperuserPassword is the password of the "postgres" role in the
// test server. Tests reach the server with it directly (not through
// Warden) to set up and check data.
const PostgresSuperuserPassword = "harness-superuser"

// Postgres is a real PostgreSQL server inside the test's namespace,
// listening on 127.0.0.1 and 127.0.0.2 (so that one server can stand for
// two targets), with SCRAM-SHA-256 and md5 password logins.
type Postgres struct {
	env  *Env
	Dir  string
	Port int
	proc *Process
}

// PostgresBin returns the directory of the PostgreSQL server binaries,
// preferring version 15.
func PostgresBin(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/usr/lib/postgresql/15/bin/postgres"); err == nil {
		return "/usr/lib/postgresql/15/bin"
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(dirs) == 0 {
		testenv.Unavailable(t, "needs the PostgreSQL server (apt-get install postgresql)")
		return ""
	}
	sort.Strings(dirs)
	return filepath.Dir(dirs[len(dirs)-1])
}

// PostgresOptions change how StartPostgresWith configures the server.
type PostgresOptions struct {
	// TLS, when set, turns ssl on with this certificate and key. Clients
	// may still log in without TLS (pg_hba's "host" lines match both), so
	// tests check pg_stat_ssl to see which one they got.
	TLS *ServerCert
}

// StartPostgres initialises a cluster as the postgres OS user in a fresh
// directory, starts it inside the namespace and waits until it accepts
// logins. It stops at cleanup, before the directory is removed.
func (e *Env) StartPostgres() *Postgres {
	e.T.Helper()
	return e.StartPostgresWith(PostgresOptions{})
}

// StartPostgresWith is StartPostgres with options.
func (e *Env) StartPostgresWith(opts PostgresOptions) *Postgres {
	e.T.Helper()
	bin := PostgresBin(e.T)
	u, err := user.Lookup("postgres")
	if err != nil {
		testenv.Unavailable(e.T, "needs the postgres OS user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}

	dir, err := os.MkdirTemp("", "warden-pg-")
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		e.T.Fatal(err)
	}
	pw := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pw, []byte(PostgresSuperuserPassword+"\n"), 0o600); err != nil {
		e.T.Fatal(err)
	}
	os.Chown(pw, uid, gid)
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"--pwfile", pw, "--auth-local=scram-sha-256", "--auth-host=md5", "--no-sync", "-E", "UTF8", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		e.T.Fatalf("initdb: %v\n%s", err, out)
	}

	// A free port inside the namespace, which nothing else uses.
	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		e.T.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	// "md5" in pg_hba means: SCRAM for roles whose password is stored as
	// SCRAM, md5 for the others. So both methods are testable.
	args := []string{"--net=" + e.NS.Path, fmt.Sprintf("--setuid=%d", uid), fmt.Sprintf("--setgid=%d", gid), "--",
		filepath.Join(bin, "postgres"), "-D", filepath.Join(dir, "data"), "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1,127.0.0.2", "-c", "unix_socket_directories=" + dir,
		"-c", "fsync=off", "-c", "max_connections=100", "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning"}
	if opts.TLS != nil {
		// The server refuses a key file that others can read, so both
		// files belong to the postgres user, mode 0600.
		crt, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		for path, data := range map[string][]byte{crt: opts.TLS.CertPEM, key: opts.TLS.KeyPEM} {
			if err := os.WriteFile(path, data, 0o600); err != nil {
				e.T.Fatal(err)
			}
			if err := os.Chown(path, uid, gid); err != nil {
				e.T.Fatal(err)
			}
		}
		args = append(args, "-c", "ssl=on", "-c", "ssl_cert_file="+crt, "-c", "ssl_key_file="+key)
	}
	cmd := exec.Command("nsenter", args...)
	cmd.Dir = dir
	pg := &Postgres{env: e, Dir: dir, Port: port}
	pg.proc = e.StartProcess("postgres", cmd)
	e.T.Cleanup(func() {
		// Fast shutdown: roll back and disconnect whoever is left.
		if !pg.proc.Exited() {
			pg.proc.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-pg.proc.done:
			case <-time.After(30 * time.Second):
				pg.proc.Kill()
			}
		}
	})
	e.Eventually("postgres accepts logins", func() error {
		if pg.proc.Exited() {
			e.T.Fatalf("postgres exited:\n%s", pg.proc.Output())
		}
		c, err := pg.Connect(context.Background(), "postgres", PostgresSuperuserPassword, "postgres")
		if err != nil {
			return err
		}
		return c.Close(context.Background())
	})
	return pg
}

// Addr is host:port of the server on 127.0.0.1.
func (pg *Postgres) Addr() string { return fmt.Sprintf("127.0.0.1:%d", pg.Port) }

// Connect logs in directly, from the test process (outside the redirected
// cgroups), as user with password to database.
func (pg *Postgres) Connect(ctx context.Context, user, password, database string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", pg.Port, user, database))
	if err != nil {
		return nil, err
	}
	cfg.Password = password
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return pg.env.NS.DialContext(ctx, network, addr)
	}
	cfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) { return []string{host}, nil }
	return pgx.ConnectConfig(ctx, cfg)
}

// Exec runs SQL as the superuser in database and fails the test on error.
func (pg *Postgres) Exec(database, sql string) {
	pg.env.T.Helper()
	ctx := context.Background()
	c, err := pg.Connect(ctx, "postgres", PostgresSuperuserPassword, database)
	if err != nil {
		pg.env.T.Fatalf("connect to %s: %v", database, err)
	}
	defer c.Close(ctx)
	// Simple protocol: setup scripts hold several statements.
	if _, err := c.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		pg.env.T.Fatalf("setup SQL failed: %v", err)
	}
}

// QueryInt runs a one-value query as the superuser.
func (pg *Postgres) QueryInt(database, sql string) int64 {
	pg.env.T.Helper()
	ctx := context.Background()
	c, err := pg.Connect(ctx, "postgres", PostgresSuperuserPassword, database)
	if err != nil {
		pg.env.T.Fatalf("connect to %s: %v", database, err)
	}
	defer c.Close(ctx)
	var n int64
	if err := c.QueryRow(ctx, sql).Scan(&n); err != nil {
		pg.env.T.Fatalf("query: %v", err)
	}
	return n
}

// VaultedPassword is the password of the role VaultedApp creates.
const VaultedPassword = "vaulted-app-secret"

// VaultedApp creates the login role app, with VaultedPassword, and its
// database orders on pg, and writes the password to a file in the test's
// directory for a target's credentials.password_file. It returns that
// file's path.
func (e *Env) VaultedApp(pg *Postgres) string {
	e.T.Helper()
	pg.Exec("postgres", "CREATE ROLE app LOGIN PASSWORD '"+VaultedPassword+"'")
	pg.Exec("postgres", "CREATE DATABASE orders OWNER app")
	secret := filepath.Join(e.Dir, "orders-db.secret")
	if err := os.WriteFile(secret, []byte(VaultedPassword+"\n"), 0o600); err != nil {
		e.T.Fatal(err)
	}
	return secret
}
