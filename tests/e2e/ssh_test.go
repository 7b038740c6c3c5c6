package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/review"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// sshEnv is an agent in front of a real OpenSSH server as three targets:
// app-1 logs in with a user certificate the agent signs (the server
// trusts the CA), app-key with a vaulted private key, and app-bad pins a
// host key the server does not have.
type sshEnv struct {
	*harness.Env
	sshd       *harness.VaultedSSHD
	keyPort    int
	badPort    int
	alice      string
	knownHosts string // the agent's @cert-authority line
	victimDir  string // where the guardrail tests' files live
	sftpDir    string
}

func newSSHEnv(t *testing.T) *sshEnv {
	testenv.RequireCommand(t, "ssh")
	e := &sshEnv{Env: harness.NewEnv(t)}
	e.sshd = e.StartVaultedSSHD()
	e.keyPort = e.Forward(e.sshd.Addr())
	e.badPort = e.Forward(e.sshd.Addr())
	other := filepath.Join(e.Dir, "other_host_key")
	if out, err := harnessKeygen(other); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	otherPub, _ := os.ReadFile(other + ".pub")
	e.victimDir = filepath.Join(e.Dir, "victim")
	e.sftpDir = filepath.Join(e.Dir, "sftp")
	for _, d := range []string{e.victimDir, e.sftpDir} {
		os.MkdirAll(d, 0o777)
		os.Chmod(d, 0o777)
	}
	e.StartAgent(fmt.Sprintf(`targets:
  - name: app-1
    protocol: ssh
    address: 127.0.0.1:%[1]d
    ssh:
      host_key: %[2]q
    credentials:
      username: root
      user_ca_key_file: %[3]s
  - name: app-key
    protocol: ssh
    address: 127.0.0.1:%[4]d
    ssh:
      host_key: %[2]q
      allow: [sftp]
    credentials:
      username: root
      key_file: %[5]s
  - name: app-bad
    protocol: ssh
    address: 127.0.0.1:%[6]d
    ssh:
      host_key: %[7]q
    credentials:
      username: root
      key_file: %[5]s
access:
  - groups: [engineering]
    targets: [app-1, app-key, app-bad]
rules:
  - name: no-rm
    targets: [app-1, app-key]
    when: { commands: [rm] }
    action: deny
  - name: reviewed-touch
    targets: [app-1]
    when: { commands: [touch] }
    action: review
    review: { approvers: [dba], hold: 45s, grant: once }
`, e.sshd.Port, e.sshd.HostKeyPub, e.sshd.UserCAKey, e.keyPort, e.sshd.VaultedKey, e.badPort, strings.TrimSpace(string(otherPub))))
	e.alice = e.Token(devidp.IssueOptions{Sub: "alice"})
	e.knownHosts = filepath.Join(e.Dir, "ssh_known_hosts")
	return e
}

func harnessKeygen(path string) ([]byte, error) {
	return exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput()
}

// ssh is the ssh command line to port: no key of the user's own, no
// config, and the agent's CA as the only trusted host key, strictly.
func (e *sshEnv) ssh(port int, extra string) string {
	return fmt.Sprintf("ssh -F /dev/null -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=%s -o BatchMode=yes -o ConnectTimeout=20 -p %d %s root@127.0.0.1",
		e.knownHosts, port, extra)
}

// sh runs script as nobody, logged in as token's person first unless
// token is "".
func (e *sshEnv) sh(t *testing.T, token, script string) string {
	t.Helper()
	if token != "" {
		script = fmt.Sprintf("warden login --token-file %s >/dev/null || { echo LOGIN-FAILED; exit 9; }\n%s", token, script)
	}
	out, _ := e.Run(harness.Shell{UID: nobody, GID: nobody, Script: script})
	if strings.Contains(out, "LOGIN-FAILED") {
		t.Fatalf("login failed:\n%s", out)
	}
	return out
}

func TestSSHL7(t *testing.T) {
	e := newSSHEnv(t)
	port := e.sshd.Port

	t.Run("the agent writes its host CA line", func(t *testing.T) {
		b, err := os.ReadFile(e.knownHosts)
		if err != nil || !strings.HasPrefix(string(b), "@cert-authority * ssh-ed25519 ") {
			t.Fatalf("ssh_known_hosts beside the socket: %q, %v", b, err)
		}
		if st, err := os.Stat(e.knownHosts); err != nil || st.Mode().Perm()&0o004 == 0 {
			t.Fatalf("ssh_known_hosts is not world-readable: %v %v", st.Mode(), err)
		}
	})

	t.Run("connect with the CA-signed user certificate", func(t *testing.T) {
		out := e.sh(t, e.alice, e.ssh(port, "")+" id -un")
		if !strings.Contains(out, "\nroot") && !strings.HasPrefix(out, "root") {
			t.Fatalf("id -un through Warden:\n%s\nsshd:\n%s", out, e.sshd.Output())
		}
		// The target's own log names the person behind the account.
		e.Eventually("sshd logs the certificate's KeyId", func() error {
			if !strings.Contains(e.sshd.Output(), "warden sub=alice session=") {
				return fmt.Errorf("sshd log has no KeyId naming alice")
			}
			return nil
		})
		e.WaitEvent(collectorclient.Query{Type: string(event.SSHExec), Target: "app-1"}, "ssh.exec of id -un", func(ev *event.Event) bool {
			return ev.Data["command"] == "id -un" && ev.Decision != nil && ev.Decision.Action == event.Allow && ev.Identity != nil && ev.Identity.Sub == "alice"
		})
	})

	t.Run("connect with a vaulted key", func(t *testing.T) {
		out := e.sh(t, e.alice, e.ssh(e.keyPort, "")+" id -un")
		if !strings.Contains(out, "root") {
			t.Fatalf("id -un through Warden with key_file:\n%s", out)
		}
	})

	t.Run("without the CA line the host certificate is not trusted", func(t *testing.T) {
		out := e.sh(t, e.alice, fmt.Sprintf("ssh -F /dev/null -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -p %d root@127.0.0.1 id -un; echo rc=$?", port))
		if !strings.Contains(out, "Host key verification failed") || !strings.Contains(out, "rc=255") {
			t.Fatalf("a client without the CA line connected:\n%s", out)
		}
	})

	t.Run("an older plain known_hosts entry for the name", func(t *testing.T) {
		// The user learnt the target's own key before Warden. With the
		// agent's CA line the certificate is what counts (OpenSSH checks
		// a certificate against CA lines); without it, the stale entry
		// makes OpenSSH refuse loudly rather than accept another key.
		user := filepath.Join(e.sftpDir, "known_hosts")
		os.WriteFile(user, []byte(fmt.Sprintf("[127.0.0.1]:%d %s\n", port, e.sshd.HostKeyPub)), 0o644)
		withCA := strings.Replace(e.ssh(port, ""), "UserKnownHostsFile=/dev/null", "UserKnownHostsFile="+user, 1)
		out := e.sh(t, e.alice, withCA+" id -un; echo rc=$?")
		if !strings.Contains(out, "rc=0") {
			t.Fatalf("the CA line did not vouch for the host despite a stale plain entry:\n%s", out)
		}
		withoutCA := strings.Replace(withCA, "GlobalKnownHostsFile="+e.knownHosts, "GlobalKnownHostsFile=/dev/null", 1)
		out = e.sh(t, e.alice, withoutCA+" id -un; echo rc=$?")
		t.Logf("a stale plain entry and no CA line:\n%s", out)
		if !strings.Contains(out, "rc=255") || !strings.Contains(out, "IDENTIFICATION HAS CHANGED") {
			t.Fatalf("a client with only a stale plain entry:\n%s", out)
		}
	})

	t.Run("a wrong upstream host key is refused", func(t *testing.T) {
		out := e.sh(t, e.alice, e.ssh(e.badPort, "")+" id -un; echo rc=$?")
		if !strings.Contains(out, "presented a host key the policy does not pin") || strings.Contains(out, "\nroot") {
			t.Fatalf("app-bad:\n%s", out)
		}
		e.WaitEvent(collectorclient.Query{Type: string(event.SSHSession), Target: "app-bad"}, "refused ssh.session", func(ev *event.Event) bool {
			return ev.Decision != nil && ev.Decision.Action == event.Deny && ev.Decision.Rule == "host_key"
		})
	})

	t.Run("unbound ssh gets the login message", func(t *testing.T) {
		out := e.sh(t, "", e.ssh(port, "")+" id -un; echo rc=$?")
		if !strings.Contains(out, "warden: no verified identity for this session; run 'warden login'") || !strings.Contains(out, "rc=255") {
			t.Fatalf("unbound ssh:\n%s", out)
		}
	})

	t.Run("exec guardrails", func(t *testing.T) {
		victim := filepath.Join(e.victimDir, "x")
		for _, cmd := range []string{
			"rm -rf " + victim,
			"sh -c 'rm -rf " + victim + "'",
			"true; rm -rf " + victim,
			"/bin/rm -rf " + victim,
			"sudo -u root rm -rf " + victim,
			"echo $(rm -rf " + victim + ")",
		} {
			if err := os.WriteFile(victim, []byte("survive"), 0o666); err != nil {
				t.Fatal(err)
			}
			out := e.sh(t, e.alice, fmt.Sprintf("%s %s; echo rc=$?", e.ssh(port, ""), shq(cmd)))
			if _, err := os.Stat(victim); err != nil {
				t.Fatalf("%q removed the file through Warden:\n%s", cmd, out)
			}
			if !strings.Contains(out, `warden: command refused by rule "no-rm"`) || !strings.Contains(out, "rc=1") {
				t.Fatalf("%q: no refusal naming the rule:\n%s", cmd, out)
			}
		}
		out := e.sh(t, e.alice, fmt.Sprintf("%s %s; echo rc=$?", e.ssh(port, ""), shq("echo 'unterminated")))
		if !strings.Contains(out, "cannot tell which programs it runs") {
			t.Fatalf("an unparseable command was not refused:\n%s", out)
		}
		e.WaitEvent(collectorclient.Query{Type: string(event.SSHExec), Target: "app-1"}, "denied ssh.exec", func(ev *event.Event) bool {
			return ev.Decision != nil && ev.Decision.Action == event.Deny && ev.Decision.Rule == "no-rm"
		})
	})

	t.Run("forwarding is refused by default", func(t *testing.T) {
		out := e.sh(t, e.alice, e.ssh(port, "-W 127.0.0.1:"+fmt.Sprint(port))+" </dev/null; echo rc=$?")
		if !strings.Contains(out, "administratively prohibited") || !strings.Contains(out, "local_forward is not allowed") {
			t.Fatalf("ssh -W was not refused:\n%s", out)
		}
		// ssh -J hands its config file (-F) to the jump's own ssh, so
		// the options go in one.
		cfg := filepath.Join(e.sftpDir, "ssh_config")
		os.WriteFile(cfg, []byte(fmt.Sprintf("Host *\n  StrictHostKeyChecking yes\n  UserKnownHostsFile /dev/null\n  GlobalKnownHostsFile %s\n  BatchMode yes\n  ConnectTimeout 20\n", e.knownHosts)), 0o644)
		jump := fmt.Sprintf("ssh -F %s -J root@127.0.0.1:%d -p %d root@127.0.0.2 true; echo rc=$?", cfg, port, port)
		out = e.sh(t, e.alice, jump)
		if !strings.Contains(out, "local_forward is not allowed") || !strings.Contains(out, "rc=255") {
			t.Fatalf("a jump through app-1 was not refused:\n%s", out)
		}
		// -L: the client listens; the channel opens (and is refused)
		// when something connects to it.
		errFile := filepath.Join(e.sftpDir, "ssh-L.err")
		out = e.sh(t, e.alice, fmt.Sprintf(`%s -N -L 127.0.0.1:17022:127.0.0.1:%d 2>%s & pid=$!
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/17022) 2>/dev/null && break; sleep 0.1; done
sleep 1; kill $pid; wait $pid; cat %[3]s`, e.ssh(port, ""), port, errFile))
		if !strings.Contains(out, "local_forward is not allowed") {
			t.Fatalf("ssh -L was not refused:\n%s", out)
		}
	})

	t.Run("interactive session is recorded", func(t *testing.T) {
		testenv.RequireCommand(t, "script")
		out := e.sh(t, e.alice, fmt.Sprintf(`export TERM=xterm-256color
{ sleep 2; echo 'echo hello-$((6*7))-warden'; sleep 1; echo exit; } | script -qfec %s /dev/null; echo rc=$?`, shq(e.ssh(port, "-tt"))))
		if !strings.Contains(out, "hello-42-warden") {
			t.Fatalf("interactive session:\n%s", out)
		}
		end := e.WaitEvent(collectorclient.Query{Type: string(event.SSHSession), Target: "app-1"}, "ssh.session end with a recording", func(ev *event.Event) bool {
			rec, _ := ev.Data["recording"].(map[string]any)
			return ev.Data["phase"] == "end" && rec != nil && rec["bytes"] != nil && strings.Contains(e.castOf(t, ev), "hello-42-warden")
		})
		id := end.Data["ssh_session"].(string)
		rec := end.Data["recording"].(map[string]any)
		cast := e.sh(t, e.alice, fmt.Sprintf("WARDEN_COLLECTOR=http://%s warden replay %s --cast --token-file %s", harness.CollectorAddr, id, e.ReaderToken))
		sum := sha256.Sum256([]byte(cast))
		if hex.EncodeToString(sum[:]) != rec["sha256"] {
			t.Fatalf("warden replay --cast output hashes to %x, the event says %v:\n%s", sum, rec["sha256"], cast)
		}
		played := e.sh(t, e.alice, fmt.Sprintf("WARDEN_COLLECTOR=http://%s warden replay %s --speed 20 --token-file %s", harness.CollectorAddr, id, e.ReaderToken))
		if !strings.Contains(played, "hello-42-warden") {
			t.Fatalf("warden replay:\n%s", played)
		}
		if !strings.Contains(cast, `"TERM":"xterm-256color"`) {
			t.Errorf("the cast header has no TERM:\n%.300s", cast)
		}
	})

	t.Run("sftp and scp", func(t *testing.T) {
		testenv.RequireCommand(t, "sftp")
		src := filepath.Join(e.Dir, "upload.txt")
		os.WriteFile(src, []byte(strings.Repeat("warden-sftp\n", 1000)), 0o644)
		put := filepath.Join(e.sftpDir, "put.txt")
		got := filepath.Join(e.sftpDir, "got.txt")
		batch := filepath.Join(e.Dir, "batch")
		os.WriteFile(batch, []byte(fmt.Sprintf("put %s %s\nget %s %s\n", src, put, put, got)), 0o644)
		sftp := strings.Replace(e.ssh(port, ""), "ssh -F /dev/null", "sftp -F /dev/null -b "+batch, 1)
		sftp = strings.Replace(sftp, fmt.Sprintf("-p %d", port), fmt.Sprintf("-P %d", port), 1)
		out := e.sh(t, e.alice, sftp+"; echo rc=$?")
		if b, err := os.ReadFile(got); err != nil || len(b) != 12000 || !strings.Contains(out, "rc=0") {
			t.Fatalf("sftp put/get (%d bytes back, %v):\n%s", len(b), err, out)
		}
		e.WaitEvent(collectorclient.Query{Type: string(event.SSHSFTP), Target: "app-1"}, "ssh.sftp write", func(ev *event.Event) bool {
			return ev.Data["op"] == "write" && ev.Data["path"] == put && fmt.Sprint(ev.Data["bytes"]) == "12000"
		})
		e.WaitEvent(collectorclient.Query{Type: string(event.SSHSFTP), Target: "app-1"}, "ssh.sftp read", func(ev *event.Event) bool {
			return ev.Data["op"] == "read" && ev.Data["path"] == put && fmt.Sprint(ev.Data["bytes"]) == "12000"
		})
		// scp over the sftp protocol (the default), and the legacy one,
		// an exec request of "scp -t".
		scp := strings.Replace(e.ssh(port, ""), "ssh -F /dev/null", "scp -F /dev/null", 1)
		scp = strings.Replace(scp, fmt.Sprintf("-p %d", port), fmt.Sprintf("-P %d", port), 1)
		scp = strings.TrimSuffix(scp, " root@127.0.0.1")
		scpSFTP := filepath.Join(e.sftpDir, "scp-sftp.txt")
		scpLegacy := filepath.Join(e.sftpDir, "scp-legacy.txt")
		out = e.sh(t, e.alice, fmt.Sprintf("%s %s root@127.0.0.1:%s && %s -O %s root@127.0.0.1:%s; echo rc=$?", scp, src, scpSFTP, scp, src, scpLegacy))
		for _, f := range []string{scpSFTP, scpLegacy} {
			if b, err := os.ReadFile(f); err != nil || len(b) != 12000 {
				t.Fatalf("scp to %s (%d bytes, %v):\n%s", f, len(b), err, out)
			}
		}
		e.WaitEvent(collectorclient.Query{Type: string(event.SSHExec), Target: "app-1"}, "ssh.exec of legacy scp", func(ev *event.Event) bool {
			return ev.Data["kind"] == "scp" && ev.Decision != nil && ev.Decision.Action == event.Allow
		})
		// app-key allows sftp only: legacy scp is refused there.
		scpKey := strings.Replace(scp, fmt.Sprintf("-P %d", port), fmt.Sprintf("-P %d", e.keyPort), 1)
		out = e.sh(t, e.alice, fmt.Sprintf("%s -O %s root@127.0.0.1:%s; echo rc=$?", scpKey, src, filepath.Join(e.sftpDir, "no.txt")))
		if _, err := os.Stat(filepath.Join(e.sftpDir, "no.txt")); err == nil || !strings.Contains(out, "scp is not allowed") {
			t.Fatalf("legacy scp on a target without scp in ssh.allow:\n%s", out)
		}
	})
}

// TestSSHExecReview holds an exec request for review: approved it runs,
// denied it never reaches the target, and the client is told on stderr.
func TestSSHExecReview(t *testing.T) {
	e := newSSHEnv(t)
	bob := e.Token(devidp.IssueOptions{Sub: "bob"})
	for _, tc := range []struct {
		verb string
		ran  bool
		want string
	}{
		{"approve", true, ""},
		{"deny", false, "was denied by bob"},
	} {
		t.Run(tc.verb, func(t *testing.T) {
			file := filepath.Join(e.victimDir, "reviewed-"+tc.verb)
			cmd := e.Command(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(
				"warden login --token-file %s >/dev/null || exit 9\n%s %s; echo rc=$?", e.alice, e.ssh(e.sshd.Port, ""), shq("touch "+file))})
			out := &syncBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				cmd.Process.Kill()
				<-done
			}()
			var id string
			e.Eventually("a pending review of alice's touch", func() error {
				list, err := e.WardenEnv(nil, "review", "list", "--state", "pending", "--json")
				if err != nil {
					return fmt.Errorf("%v: %s", err, list)
				}
				dec := json.NewDecoder(strings.NewReader(list))
				for dec.More() {
					var r review.Review
					if err := dec.Decode(&r); err != nil {
						return err
					}
					if r.Requester.Sub == "alice" && r.Rule == "reviewed-touch" {
						id = r.ID
						return nil
					}
				}
				return fmt.Errorf("none yet; client: %s", out.String())
			})
			if _, err := os.Stat(file); err == nil {
				t.Fatal("the command ran before the review was decided")
			}
			if res, err := e.WardenEnv([]string{"WARDEN_TOKEN_FILE=" + bob}, "review", tc.verb, id, "--reason", "e2e"); err != nil {
				t.Fatalf("warden review %s: %v\n%s", tc.verb, err, res)
			}
			select {
			case <-done:
				done <- nil
			case <-time.After(time.Minute):
				t.Fatalf("the client still waits:\n%s", out.String())
			}
			got := out.String()
			if !strings.Contains(got, fmt.Sprintf("warden: review %s required by rule \"reviewed-touch\"", id)) || !strings.Contains(got, tc.want) {
				t.Fatalf("client output:\n%s", got)
			}
			_, err := os.Stat(file)
			if ran := err == nil; ran != tc.ran || tc.ran != strings.Contains(got, "rc=0") {
				t.Fatalf("ran = %v (want %v):\n%s", ran, tc.ran, got)
			}
		})
	}
}

// TestSSHRecordingKilledAgent kills the agent during a recorded session:
// at its next start the agent reports the unfinished recording in an
// agent.loss event.
func TestSSHRecordingKilledAgent(t *testing.T) {
	testenv.RequireCommand(t, "script")
	e := newSSHEnv(t)
	cmd := e.Command(harness.Shell{UID: nobody, GID: nobody, Script: fmt.Sprintf(`warden login --token-file %s >/dev/null || exit 9
export TERM=xterm
{ sleep 1; echo 'echo started-warden'; sleep 300; } | script -qfec %s /dev/null`, e.alice, shq(e.ssh(e.sshd.Port, "-tt")))})
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	journal := filepath.Join(e.Dir, "state", "recordings")
	e.Eventually("a recording in the agent's journal", func() error {
		ents, err := os.ReadDir(journal)
		if err != nil || len(ents) == 0 {
			return fmt.Errorf("journal %s: %d entries, %v (client: %s)", journal, len(ents), err, out.String())
		}
		return nil
	})
	e.Agent().Kill()
	e.RestartAgent()
	e.WaitEvent(collectorclient.Query{Type: string(event.AgentLoss)}, "agent.loss for the unfinished recording", func(ev *event.Event) bool {
		return ev.Data["source"] == "ssh_recording" && ev.Data["reason"] == "agent_stopped" && fmt.Sprint(ev.Data["count"]) == "1"
	})
}

// castOf fetches the recording an ssh.session end event names through
// the collector's API, "" if it cannot be had (yet).
func (e *sshEnv) castOf(t *testing.T, ev *event.Event) string {
	id, _ := ev.Data["ssh_session"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec, err := e.Collector.Recording(ctx, id, false)
	if err != nil {
		t.Logf("recording %s: %v", id, err)
		return ""
	}
	return string(rec.Cast)
}

// shq quotes s as one shell word.
func shq(s string) string { return shellQuote(s) }
