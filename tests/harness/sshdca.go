package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	dir := e.sshdDir("warden-vsshd-")
	v := &VaultedSSHD{SSHD: &SSHD{env: e, Dir: dir}, UserCAKey: filepath.Join(dir, "user_ca"), VaultedKey: filepath.Join(dir, "vaulted_key")}
	e.sshKeygen(v.UserCAKey)
	e.sshKeygen(v.VaultedKey)
	vaulted, err := os.ReadFile(v.VaultedKey + ".pub")
	if err != nil {
		e.T.Fatal(err)
	}
	hostKey := e.serveSSHD(v.SSHD, vaulted, fmt.Sprintf("TrustedUserCAKeys %s.pub\nSubsystem sftp internal-sftp\n", v.UserCAKey))
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		e.T.Fatal(err)
	}
	v.HostKeyPub = strings.TrimSpace(string(pub))
	return v
}
