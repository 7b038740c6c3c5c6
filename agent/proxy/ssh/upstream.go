package ssh

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
)

// UserCertValidity is how long a user certificate the agent signs for an
// upstream login is valid: long enough for the login, short enough that
// a copy is worth nothing soon after.
const UserCertValidity = 5 * time.Minute

// ErrHostKey marks an upstream whose host key does not match its pin.
var ErrHostKey = errors.New("upstream host key does not match the policy")

// hostKeyCallback checks the target's host key against the pin in its ssh
// block. dst is the address dialled. A target that pins nothing gets an
// error here: the proxy never accepts whatever key the target presents.
func hostKeyCallback(t policy.Target, dst string) (ssh.HostKeyCallback, error) {
	s := t.SSH
	switch {
	case s == nil || !s.Pinned():
		return nil, fmt.Errorf("target %s pins no host key (ssh.host_key, ssh.host_ca or ssh.known_hosts_file)", t.Name)
	case s.HostKey != "":
		want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s.HostKey))
		if err != nil {
			return nil, fmt.Errorf("target %s ssh.host_key: %w", t.Name, err)
		}
		return func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if c, ok := key.(*ssh.Certificate); ok {
				key = c.Key
			}
			if !bytes.Equal(key.Marshal(), want.Marshal()) {
				return fmt.Errorf("%w: the target presented %s %s, the policy pins %s %s", ErrHostKey,
					key.Type(), ssh.FingerprintSHA256(key), want.Type(), ssh.FingerprintSHA256(want))
			}
			return nil
		}, nil
	case s.HostCA != "":
		ca, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s.HostCA))
		if err != nil {
			return nil, fmt.Errorf("target %s ssh.host_ca: %w", t.Name, err)
		}
		checker := &ssh.CertChecker{
			IsHostAuthority: func(auth ssh.PublicKey, _ string) bool { return bytes.Equal(auth.Marshal(), ca.Marshal()) },
		}
		return func(addr string, remote net.Addr, key ssh.PublicKey) error {
			if err := checker.CheckHostKey(addr, remote, key); err != nil {
				return fmt.Errorf("%w: %v", ErrHostKey, err)
			}
			return nil
		}, nil
	default:
		cb, err := knownhosts.New(s.KnownHostsFile)
		if err != nil {
			return nil, fmt.Errorf("target %s ssh.known_hosts_file: %w", t.Name, err)
		}
		return func(addr string, remote net.Addr, key ssh.PublicKey) error {
			if err := cb(addr, remote, key); err != nil {
				return fmt.Errorf("%w: %v", ErrHostKey, err)
			}
			return nil
		}, nil
	}
}

// hostKeyAddr is the host:port the upstream's host key is checked for: the
// target's name when its address is one (a host certificate names it),
// otherwise the address dialled.
func hostKeyAddr(t policy.Target, dst string) string {
	if ep, err := t.Endpoint(); err == nil && ep.IsName() {
		if _, port, err := net.SplitHostPort(dst); err == nil {
			return net.JoinHostPort(ep.Host, port)
		}
	}
	return dst
}

// credentialAuth returns how the proxy logs in upstream with the target's
// vaulted credentials, and the user it logs in as. The secret files are
// read now, at each session, so a rotated key needs no reload.
func credentialAuth(c *policy.Credentials, id *event.Identity, session string, allow *policy.SSHTarget) (ssh.AuthMethod, error) {
	switch {
	case c.UserCAKeyFile != "":
		b, err := os.ReadFile(c.UserCAKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read user CA key: %w", err)
		}
		ca, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("user CA key %s: %w", c.UserCAKeyFile, err)
		}
		signer, err := userCert(ca, c.Username, id, session, allow)
		if err != nil {
			return nil, err
		}
		return ssh.PublicKeys(signer), nil
	case c.KeyFile != "":
		b, err := os.ReadFile(c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("read key: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", c.KeyFile, err)
		}
		return ssh.PublicKeys(signer), nil
	case c.PasswordFile != "":
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		return ssh.Password(pw), nil
	}
	return nil, errors.New("credentials give no key_file, password_file or user_ca_key_file")
}

// userCert signs a user certificate for username with a fresh key: the
// target's sshd, trusting ca in TrustedUserCAKeys, logs the KeyId, which
// names the person and the session behind the shared account.
func userCert(ca ssh.Signer, username string, id *event.Identity, session string, allow *policy.SSHTarget) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate user key: %w", err)
	}
	key, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	sub := "unknown"
	if id != nil && id.Sub != "" {
		sub = id.Sub
	}
	// The target refuses what the policy refuses, too: forwarding
	// extensions only when ssh.allow lists them.
	ext := map[string]string{"permit-pty": ""}
	if allow.Allows(policy.SSHAllowLocalForward) || allow.Allows(policy.SSHAllowRemoteForward) {
		ext["permit-port-forwarding"] = ""
	}
	if allow.Allows(policy.SSHAllowAgentForward) {
		ext["permit-agent-forwarding"] = ""
	}
	if allow.Allows(policy.SSHAllowX11) {
		ext["permit-X11-forwarding"] = ""
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key:             key.PublicKey(),
		CertType:        ssh.UserCert,
		KeyId:           fmt.Sprintf("warden sub=%s session=%s", sub, session),
		ValidPrincipals: []string{username},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(UserCertValidity).Unix()),
		Permissions:     ssh.Permissions{Extensions: ext},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, fmt.Errorf("sign user certificate: %w", err)
	}
	return ssh.NewCertSigner(cert, key)
}
