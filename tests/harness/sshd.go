package harness

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wardenhq/warden/tests/testenv"
)

// SSHDUser is the account the test sshd lets in. root is the one account
// every Debian machine has with a login shell (nobody's is nologin), so no
// test user has to be created and removed; the server only listens on
// loopback inside the test's network namespace and accepts only the key
// it generated.
const SSHDUser = "root"

// SSHD is a real OpenSSH server inside the test's namespace, listening on
// 127.0.0.1, that lets SSHDUser in with a freshly generated client key.
type SSHD struct {
	env *Env
	// Dir holds the server's config, host key, authorized_keys and the
	// client key; it is removed at cleanup.
	Dir string
	// Port is the port on 127.0.0.1.
	Port int
	// ClientKey is the private key file that logs in; it belongs to the
	// client UID StartSSHD was given, mode 0600, as ssh insists.
	ClientKey string
	proc      *Process
}

// StartSSHD starts /usr/sbin/sshd in the foreground inside the namespace,
// with its own host key and config (no PAM, key logins for SSHDUser only),
// and waits until it greets clients. The client key is made for the user
// clientUID:clientGID, who runs ssh. The server and every session it forks
// live in a cgroup of their own, outside the agent's, which is emptied at
// cleanup: a session's remote command would otherwise outlive its
// connection.
func (e *Env) StartSSHD(clientUID, clientGID int) *SSHD {
	e.T.Helper()
	dir := e.sshdDir("warden-sshd-")
	s := &SSHD{env: e, Dir: dir, ClientKey: filepath.Join(dir, "client_key")}
	e.sshKeygen(s.ClientKey)
	if err := os.Chown(s.ClientKey, clientUID, clientGID); err != nil {
		e.T.Fatal(err)
	}
	pub, err := os.ReadFile(s.ClientKey + ".pub")
	if err != nil {
		e.T.Fatal(err)
	}
	e.serveSSHD(s, pub, "")
	return s
}

// sshdDir checks that sshd can run and returns a fresh directory for one
// server, removed at cleanup.
func (e *Env) sshdDir(prefix string) string {
	e.T.Helper()
	testenv.RequireCommand(e.T, "ssh-keygen")
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		testenv.Unavailable(e.T, "needs the OpenSSH server (apt-get install openssh-server): %v", err)
	}
	// Privilege separation: sshd refuses to start without this directory,
	// which the distribution's service unit usually creates. It is left
	// in place, as the system's own sshd would leave it.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		e.T.Fatalf("create sshd's privilege separation directory: %v", err)
	}
	// Not t.TempDir(): its parent is private, and the client, an
	// unprivileged user, must reach its key.
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		e.T.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	e.T.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// sshKeygen makes an ed25519 key pair without a passphrase at path.
func (e *Env) sshKeygen(path string) {
	e.T.Helper()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "warden-e2e", "-f", path).CombinedOutput(); err != nil {
		e.T.Fatalf("ssh-keygen %s: %v\n%s", path, err, out)
	}
}

// serveSSHD makes s.Dir's host key, lets the authorized public key in as
// SSHDUser, starts sshd with extra config lines added, and waits until it
// greets clients. It returns the host key's file.
func (e *Env) serveSSHD(s *SSHD, authorized []byte, extra string) string {
	e.T.Helper()
	dir := s.Dir
	hostKey := filepath.Join(dir, "host_key")
	e.sshKeygen(hostKey)
	authorizedFile := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorizedFile, authorized, 0o600); err != nil {
		e.T.Fatal(err)
	}

	// A free port inside the namespace, which nothing else uses.
	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		e.T.Fatal(err)
	}
	s.Port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	config := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s
PidFile %s
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile %s
AllowUsers %s
PermitRootLogin prohibit-password
UseDNS no
LogLevel VERBOSE
%s`, s.Port, hostKey, filepath.Join(dir, "sshd.pid"), authorizedFile, SSHDUser, extra)
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		e.T.Fatal(err)
	}

	// testenv.Cgroup is created before StartProcess registers its stop,
	// so at cleanup sshd gets SIGTERM first, then whatever is left of
	// its sessions is killed with the cgroup.
	cg := testenv.Cgroup(e.T)
	// sshd re-executes itself, so it needs its absolute path.
	cmd := testenv.CommandIn(e.T, cg, "nsenter", "--net="+e.NS.Path, "--", "/usr/sbin/sshd", "-D", "-e", "-f", config)
	cmd.Dir = dir
	s.proc = e.StartProcess("sshd", cmd)
	e.Eventually("sshd greets clients", func() error {
		if s.proc.Exited() {
			e.T.Fatalf("sshd exited:\n%s", s.proc.Output())
		}
		return s.greets()
	})
	return hostKey
}

// greets connects directly, from the test process, and reads the
// server's identification line.
func (s *SSHD) greets() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.env.NS.DialContext(ctx, "tcp4", s.Addr())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read sshd's banner: %w", err)
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("not an ssh banner: %q", line)
	}
	return nil
}

// Addr is host:port of the server.
func (s *SSHD) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// ClientCommand is a shell command line that runs remote on the server as
// SSHDUser: no config files, no host key checks, no prompts, only the
// generated key.
func (s *SSHD) ClientCommand(remote string) string {
	return fmt.Sprintf("ssh -F /dev/null -i %s -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -p %d %s@127.0.0.1 %s",
		s.ClientKey, s.Port, SSHDUser, shellQuote(remote))
}

// Output is everything sshd logged so far (-e: its log goes to stderr).
func (s *SSHD) Output() string { return s.proc.Output() }

// shellQuote quotes v as one bash word.
func shellQuote(v string) string { return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'" }
