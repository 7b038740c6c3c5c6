package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wardenhq/warden/tests/testenv"
)

// Redis is a real redis-server inside the test's namespace, listening on
// 127.0.0.1 and on a Unix socket in its own directory, which the test
// process uses as the admin: no BPF program redirects a Unix socket.
//
// The default user is off, so every connection must log in: AppUser (the
// account Warden's credentials name) with AppPassword, or the admin with
// AdminPassword.
type Redis struct {
	env    *Env
	Dir    string
	Port   int
	Socket string
	proc   *Process
}

// Accounts of the harness's redis-server.
const (
	RedisAppUser       = "app"
	RedisAppPassword   = "vaulted-redis-secret"
	RedisAdminUser     = "admin"
	RedisAdminPassword = "admin-redis-secret"
)

// StartRedis starts redis-server without persistence inside the
// namespace and waits until the admin can log in. It stops at cleanup.
func (e *Env) StartRedis() *Redis {
	e.T.Helper()
	bin := testenv.RequireCommand(e.T, "redis-server")
	testenv.RequireCommand(e.T, "redis-cli")
	dir, err := os.MkdirTemp("", "warden-redis-")
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		e.T.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	sock := filepath.Join(dir, "redis.sock")
	conf := fmt.Sprintf(`port %d
bind 127.0.0.1
unixsocket %s
unixsocketperm 700
dir %s
save ""
appendonly no
daemonize no
loglevel notice
user default off
user %s on >%s ~* &* +@all
user %s on >%s ~* &* +@all
`, port, sock, dir, RedisAppUser, RedisAppPassword, RedisAdminUser, RedisAdminPassword)
	path := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		e.T.Fatal(err)
	}
	r := &Redis{env: e, Dir: dir, Port: port, Socket: sock}
	r.proc = e.StartProcess("redis-server", exec.Command("nsenter", "--net="+e.NS.Path, "--", bin, path))
	e.Eventually("redis-server accepts logins", func() error {
		if r.proc.Exited() {
			e.T.Fatalf("redis-server exited:\n%s", r.proc.Output())
		}
		out, err := r.Admin("PING")
		if err != nil || strings.TrimSpace(out) != "PONG" {
			return fmt.Errorf("PING: %v %s", err, out)
		}
		return nil
	})
	return r
}

// Addr is host:port of the server on 127.0.0.1.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// Admin runs one command as the admin over the Unix socket with the real
// redis-cli and returns its raw output.
func (r *Redis) Admin(args ...string) (string, error) {
	cmd := exec.Command("redis-cli", append([]string{"-s", r.Socket, "--user", RedisAdminUser, "--pass", RedisAdminPassword,
		"--no-auth-warning", "--raw"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("redis-cli %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustAdmin is Admin that fails the test on error, and returns the output
// without its trailing newline.
func (r *Redis) MustAdmin(args ...string) string {
	r.env.T.Helper()
	out, err := r.Admin(args...)
	if err != nil {
		r.env.T.Fatal(err)
	}
	return strings.TrimRight(out, "\n")
}
