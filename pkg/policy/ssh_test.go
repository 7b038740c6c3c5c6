package policy

import (
	"slices"
	"strings"
	"testing"
)

const sshHostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8f8bmGZ4Y4W9WOmKe5o3bXlLrxHq5y0yQG7o8M6dXv"

var sshEnf = Enforcement{ProtocolSSH: {CapCommands, CapReview, CapCredentials}, ProtocolPostgres: {CapCredentials, CapStatements}}

func TestParseSSHTarget(t *testing.T) {
	p, err := Parse([]byte(`targets:
  - name: app-1
    protocol: ssh
    address: 10.0.1.7:22
    ssh:
      allow: [sftp, local_forward]
      record_input: true
      host_key: "`+sshHostKey+`"
    credentials:
      username: deploy
      user_ca_key_file: /etc/warden/ssh-user-ca
  - name: app-2
    protocol: ssh
    address: 10.0.1.8:22
    ssh:
      known_hosts_file: /etc/warden/known_hosts
    credentials:
      username: deploy
      key_file: /etc/warden/deploy.key
  - name: app-3
    protocol: ssh
    address: 10.0.1.9:22
rules:
  - name: no-rm
    targets: [app-1]
    when: { commands: [rm] }
    action: deny
`), "policy.yaml", sshEnf)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := p.Targets[0], p.Targets[1], p.Targets[2]
	if !slices.Equal(a.SSH.Allow, []string{"sftp", "local_forward"}) || !a.SSH.RecordInput || a.SSH.HostKey != sshHostKey || !a.SSH.Pinned() {
		t.Errorf("app-1 ssh block %+v", a.SSH)
	}
	if a.Credentials.UserCAKeyFile != "/etc/warden/ssh-user-ca" || a.Credentials.PasswordFile != "" {
		t.Errorf("app-1 credentials %+v", a.Credentials)
	}
	if b.Credentials.KeyFile != "/etc/warden/deploy.key" || b.SSH.KnownHostsFile != "/etc/warden/known_hosts" {
		t.Errorf("app-2 %+v %+v", b.Credentials, b.SSH)
	}
	// Defaults: no block means file transfer only, and nothing pinned
	// (the codec refuses such a target's sessions).
	if c.SSH.Pinned() || !c.SSH.Allows(SSHAllowSFTP) || !c.SSH.Allows(SSHAllowSCP) || c.SSH.Allows(SSHAllowLocalForward) {
		t.Errorf("app-3 defaults wrong: %+v", c.SSH)
	}
	if a.SSH.Allows(SSHAllowSCP) || !a.SSH.Allows(SSHAllowLocalForward) {
		t.Errorf("app-1 allow list not applied")
	}
}

func TestParseSSHErrors(t *testing.T) {
	for _, tc := range []struct{ name, target, want string }{
		{"unknown allow", `    ssh: { allow: [sftp, tunnel], host_key: "` + sshHostKey + `" }`, `allow: "tunnel" is not one of sftp, scp, local_forward, remote_forward, agent_forward, x11`},
		{"bad host key", `    ssh: { host_key: "ssh-ed25519 notbase64" }`, `host_key: not a public key in authorized_keys form`},
		{"two pins", `    ssh: { host_key: "` + sshHostKey + `", known_hosts_file: /k }`, `give one of host_key, host_ca and known_hosts_file, not several`},
		{"relative known_hosts", `    ssh: { known_hosts_file: known_hosts }`, `must be an absolute path`},
		{"record_input not bool", `    ssh: { record_input: yes please, host_key: "` + sshHostKey + `" }`, `record_input: want true or false`},
		{"two secrets", `    credentials: { username: u, key_file: /k, password_file: /p }`, `exactly one of user_ca_key_file (preferred), key_file and password_file`},
		{"no secret", `    credentials: { username: u }`, `exactly one of user_ca_key_file (preferred), key_file and password_file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("targets:\n  - name: app\n    protocol: ssh\n    address: 10.0.0.1:22\n"+tc.target+"\n"), "policy.yaml", sshEnf)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	_, err := Parse([]byte("targets:\n  - name: db\n    protocol: postgres\n    address: 10.0.0.1:5432\n    ssh: { allow: [sftp] }\n    credentials: { username: u, password_file: /p, key_file: /k }\n"), "policy.yaml", sshEnf)
	if err == nil || !strings.Contains(err.Error(), "an ssh block is for ssh targets; this target is postgres") || !strings.Contains(err.Error(), "key_file is an SSH login; this target is postgres") {
		t.Fatalf("ssh settings on a postgres target: %v", err)
	}
}
