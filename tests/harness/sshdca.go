package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/wardenhq/warden/tests/testenv"
)

// VaultedSSHD is a real OpenSSH server for the SSH codec's tests: it
// trusts a user CA (TrustedUserCAKeys) and one vaulted key for SSHDUser,
// so the agent can log in either way, while the person running ssh holds
// neither. Forwarding stays enabled (sshd's default), so a refused
// forward is the agent's doing.
type VaultedSSHD struct {
	*SSHD
	// UserCAKey and VaultedKey are private keys (0600, root's) for the
	// policy's credentials; HostKeyPub is the server's public host key in
	// authorized_keys form, for ssh.host_key.
	UserCAKey, VaultedKey, HostKeyPub string
}

// StartVaultedSSHD starts /usr/sbin/sshd in the namespace as StartSSHD
// does, configured for vaulted logins.
func (e *Env) StartVaultedSSHD() *VaultedSSHD {
	e.T.Helper()
	testenv.RequireCommand(e.T, "ssh-keygen")
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		testenv.Unavailable(e.T, "needs the OpenSSH server (apt-get install openssh-server): %v", err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		e.T.Fatalf("create sshd's privilege separation directory: %v", err)
	}
	dir, err := os.MkdirTemp("", "warden-vsshd-")
	if err != nil {
		e.T.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	e.T.Cleanup(func() { os.RemoveAll(dir) })
	v := &VaultedSSHD{SSHD: &SSHD{env: e, Dir: dir}, UserCAKey: filepath.Join(dir, "user_ca"), VaultedKey: filepath.Join(dir, "vaulted_key")}
	hostKey := filepath.Join(dir, "host_key")
	for _, key := range []string{hostKey, v.UserCAKey, v.VaultedKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "warden-e2e", "-f", key).CombinedOutput(); err != nil {
			e.T.Fatalf("ssh-keygen %s: %v\n%s", key, err, out)
		}
	}
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		e.T.Fatal(err)
	}
	v.HostKeyPub = strings.TrimSpace(string(pub))
	vaulted, err := os.ReadFile(v.VaultedKey + ".pub")
	if err != nil {
		e.T.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, vaulted, 0o600); err != nil {
		e.T.Fatal(err)
	}
	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		e.T.Fatal(err)
	}
	v.Port = ln.Addr().(*net.TCPAddr).Port
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
TrustedUserCAKeys %s.pub
AllowUsers %s
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
UseDNS no
LogLevel VERBOSE
`, v.Port, hostKey, filepath.Join(dir, "sshd.pid"), authorized, v.UserCAKey, SSHDUser)
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		e.T.Fatal(err)
	}
	cg := testenv.Cgroup(e.T)
	cmd := testenv.CommandIn(e.T, cg, "nsenter", "--net="+e.NS.Path, "--", "/usr/sbin/sshd", "-D", "-e", "-f", config)
	cmd.Dir = dir
	v.proc = e.StartProcess("sshd", cmd)
	e.Eventually("sshd greets clients", func() error {
		if v.proc.Exited() {
			e.T.Fatalf("sshd exited:\n%s", v.proc.Output())
		}
		return v.greets()
	})
	return v
}
