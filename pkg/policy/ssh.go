package policy

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// SSH channel and request kinds a target's ssh.allow may list. Anything
// not listed is refused with the SSH protocol's own failure message.
const (
	// SSHAllowSFTP is the sftp subsystem.
	SSHAllowSFTP = "sftp"
	// SSHAllowSCP is scp and rsync run as exec requests ("scp -t",
	// "rsync --server"), which the exec rules still check.
	SSHAllowSCP = "scp"
	// SSHAllowLocalForward is direct-tcpip channels: ssh -L, -D and -J
	// (ProxyJump) through the target.
	SSHAllowLocalForward = "local_forward"
	// SSHAllowRemoteForward is tcpip-forward global requests: ssh -R.
	SSHAllowRemoteForward = "remote_forward"
	// SSHAllowAgentForward is auth-agent-req@openssh.com: ssh -A.
	SSHAllowAgentForward = "agent_forward"
	// SSHAllowX11 is x11-req: ssh -X.
	SSHAllowX11 = "x11"
)

// sshAllows lists what ssh.allow accepts, in the order messages list it.
var sshAllows = []string{SSHAllowSFTP, SSHAllowSCP, SSHAllowLocalForward, SSHAllowRemoteForward, SSHAllowAgentForward, SSHAllowX11}

// DefaultSSHAllow is what a target's ssh.allow is when the policy gives
// none: file transfer, but no forwarding, which would tunnel connections
// around the kernel's per-person binding.
var DefaultSSHAllow = []string{SSHAllowSFTP, SSHAllowSCP}

// SSHTarget is an ssh target's ssh block: what its sessions may open, how
// they are recorded and how the proxy recognises the target's host key.
type SSHTarget struct {
	// Allow lists the channel and request kinds permitted beyond shells
	// and exec requests (SSHAllow* constants); nil means DefaultSSHAllow.
	Allow []string
	// RecordInput records what the user types (asciicast "i" events). Off
	// by default: passwords are typed at prompts.
	RecordInput bool
	// The upstream host key is pinned by one of these; the proxy refuses
	// sessions to a target that pins none. HostKey is
	// a public key in authorized_keys form; HostCA the same for a CA whose
	// host certificates the target presents; KnownHostsFile an absolute
	// path to a known_hosts file, read when the proxy dials.
	HostKey, HostCA, KnownHostsFile string
}

// Pinned reports whether the block pins the target's host key.
func (s *SSHTarget) Pinned() bool {
	return s != nil && (s.HostKey != "" || s.HostCA != "" || s.KnownHostsFile != "")
}

// Allows reports whether kind (an SSHAllow* constant) is permitted.
func (s *SSHTarget) Allows(kind string) bool {
	if s == nil || s.Allow == nil {
		return slices.Contains(DefaultSSHAllow, kind)
	}
	return slices.Contains(s.Allow, kind)
}

// sshBlock decodes a target's ssh block. protocol is the target's.
func (d *decoder) sshBlock(e entry, where, protocol string) (*SSHTarget, bool) {
	where += ": ssh"
	m, ok := d.mapping(e.val, where, "allow", "record_input", "host_key", "host_ca", "known_hosts_file")
	if !ok {
		return nil, false
	}
	if protocol != "" && protocol != ProtocolSSH {
		d.errorf(e.key, "%s", at(where, fmt.Sprintf("an ssh block is for ssh targets; this target is %s", protocol)))
		ok = false
	}
	s := &SSHTarget{}
	if ae, found := m["allow"]; found {
		s.Allow = []string{}
		for _, it := range d.list(ae, where, false) {
			if !slices.Contains(sshAllows, it.value) {
				d.errorf(it.node, "%s", at(where, fmt.Sprintf("allow: %q is not one of %s", it.value, strings.Join(sshAllows, ", "))))
				ok = false
				continue
			}
			s.Allow = append(s.Allow, it.value)
		}
	}
	if re, found := m["record_input"]; found {
		v := resolve(re.val)
		if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
			d.errorf(v, "%s", at(where, fmt.Sprintf("record_input: want true or false, got %s", kindName(v))))
			ok = false
		} else {
			s.RecordInput = v.Value == "true"
		}
	}
	pins := 0
	for _, k := range []string{"host_key", "host_ca"} {
		ke, found := m[k]
		if !found {
			continue
		}
		pins++
		v, good := d.nonEmptyStr(ke, where)
		if good {
			if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(v)); err != nil {
				d.errorf(resolve(ke.val), "%s", at(where, fmt.Sprintf("%s: not a public key in authorized_keys form (\"ssh-ed25519 AAAA...\"): %v", k, err)))
				good = false
			}
		}
		ok = ok && good
		if k == "host_key" {
			s.HostKey = v
		} else {
			s.HostCA = v
		}
	}
	if ke, found := m["known_hosts_file"]; found {
		pins++
		var good bool
		s.KnownHostsFile, good = d.absPath(ke, where)
		ok = ok && good
	}
	if pins > 1 {
		d.errorf(resolve(e.val), "%s", at(where, "give one of host_key, host_ca and known_hosts_file, not several"))
		ok = false
	}
	return s, ok
}

// sshCredentials decodes the secret of an ssh target's credentials:
// exactly one of password_file (decoded with every protocol's), key_file
// and user_ca_key_file.
func (d *decoder) sshCredentials(n *yaml.Node, where string, m map[string]entry, c *Credentials) bool {
	ok, n1 := true, 0
	if _, found := m["password_file"]; found {
		n1++
	}
	for _, k := range []string{"key_file", "user_ca_key_file"} {
		ke, found := m[k]
		if !found {
			continue
		}
		n1++
		v, good := d.absPath(ke, where)
		ok = ok && good
		if k == "key_file" {
			c.KeyFile = v
		} else {
			c.UserCAKeyFile = v
		}
	}
	if n1 != 1 {
		d.errorf(resolve(n), "%s", at(where, "an ssh target's credentials give exactly one of user_ca_key_file (preferred), key_file and password_file"))
		ok = false
	}
	return ok
}

// noSSHCredentials reports key_file and user_ca_key_file on a target
// that is not ssh: they are SSH logins.
func (d *decoder) noSSHCredentials(where, protocol string, m map[string]entry) bool {
	ok := true
	for _, k := range []string{"key_file", "user_ca_key_file"} {
		if ke, found := m[k]; found && protocol != "" {
			d.errorf(ke.key, "%s", at(where, fmt.Sprintf("%s is an SSH login; this target is %s", k, protocol)))
			ok = false
		}
	}
	return ok
}
