package harness

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wardenhq/warden/tests/testenv"
)

// StoreEnv selects the collector's event store in tests: "postgres" runs
// them against PostgreSQL (StoreLocation), anything else against SQLite.
const StoreEnv = "WARDEN_TEST_STORE"

// UsePostgresStore reports whether tests run against PostgreSQL.
func UsePostgresStore() bool { return os.Getenv(StoreEnv) == "postgres" }

// StoreLocation returns a fresh, empty --store for one test: a SQLite file
// in dir, or with WARDEN_TEST_STORE=postgres a new database on the
// PostgreSQL server of this test process (PostgresStore).
func StoreLocation(t testing.TB, dir string) string {
	t.Helper()
	if UsePostgresStore() {
		return PostgresStore(t)
	}
	return filepath.Join(dir, "events.db")
}

// storeServer is one PostgreSQL server per test process, from the Debian
// package, on 127.0.0.1 and a unix socket (which reaches it from a
// test's network namespace too), trusting local logins: it holds nothing
// but test databases.
var storeServer struct {
	once sync.Once
	err  error
	dir  string
	port int
	n    atomic.Int64
}

// PostgresStore creates a database on the process's PostgreSQL store
// server (starting it on first use) and returns its postgres:// URL, over
// the unix socket. The database is dropped when the test ends.
func PostgresStore(t testing.TB) string {
	t.Helper()
	storeServer.once.Do(func() { storeServer.err = startStoreServer(t) })
	if storeServer.err != nil {
		if testenv.InCI() {
			t.Fatalf("PostgreSQL store server: %v", storeServer.err)
		}
		t.Skipf("PostgreSQL store server: %v", storeServer.err)
	}
	name := fmt.Sprintf("warden_%d_%d", os.Getpid(), storeServer.n.Add(1))
	admin := storeURL("postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to the store server: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, admin); err == nil {
			c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	return storeURL(name)
}

// PostgresStoreTCP returns the URL of database over TCP on 127.0.0.1
// (PostgresStore's URLs use the unix socket).
func PostgresStoreTCP(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	q := u.Query()
	q.Del("host")
	u.RawQuery = q.Encode()
	u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(storeServer.port))
	return u.String()
}

func storeURL(db string) string {
	q := url.Values{"host": {storeServer.dir}, "port": {strconv.Itoa(storeServer.port)}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + db, RawQuery: q.Encode()}).String()
}

// startStoreServer runs initdb and postgres. The server is killed when
// the test process exits (parent-death signal, from a thread that never
// exits), and its directory is removed by the next start.
func startStoreServer(t testing.TB) error {
	bin := PostgresBin(t)
	if bin == "" {
		return fmt.Errorf("no PostgreSQL server binaries")
	}
	// Directories of earlier test processes that are gone.
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), "warden-pgstore-*"))
	for _, d := range old {
		pid, err := strconv.Atoi(filepath.Base(d)[len("warden-pgstore-"):])
		if err == nil && syscall.Kill(pid, 0) != nil {
			os.RemoveAll(d)
		}
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("warden-pgstore-%d", os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("needs the postgres OS user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return err
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres", "-A", "trust", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	// fsync off in the config file, not on the command line, so that a
	// benchmark can turn it on with ALTER SYSTEM.
	conf, err := os.OpenFile(filepath.Join(dir, "data", "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = conf.WriteString("\nfsync = off\n")
	if cerr := conf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("postgresql.conf: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that started the child exits:
		// this one never does.
		runtime.LockOSThread()
		cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", filepath.Join(dir, "data"), "-p", strconv.Itoa(port),
			"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
			"-c", "max_connections=200", "-c", "log_min_messages=warning")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
		cmd.Dir = dir
		logf, _ := os.Create(filepath.Join(dir, "postgres.log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		select {} // keep the thread
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	storeServer.dir, storeServer.port = dir, port
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := pgx.Connect(ctx, storeURL("postgres"))
		cancel()
		if err == nil {
			c.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			return fmt.Errorf("postgres on port %d not accepting logins: %v\n%s", port, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
