package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// sshUser is the unprivileged account the SSH bench's clients run as.
const sshUser = 65534 // nobody

// TestBenchSSH measures what the SSH codec costs, against a real sshd in
// one run: connection set-up (`ssh HOST true`, one new connection each)
// and bulk throughput (`ssh HOST cat FILE` of 100 MiB to /dev/null),
// each directly and through Warden (kernel redirect, a fresh user
// certificate per login, the exec guardrail, ssh.exec and ssh.session
// events). Both paths go through the same plain TCP forwarder to the one
// sshd, so the difference is Warden's. It prints the numbers and the
// ratios.
func TestBenchSSH(t *testing.T) {
	requireBench(t)
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ssh")
	n := envInt(t, "WARDEN_BENCH_SSH_CONNECTS", 30)
	mib := envInt(t, "WARDEN_BENCH_SSH_MIB", 100)

	e := harness.NewEnv(t)
	sshd := e.StartVaultedSSHD()
	directPort := e.Forward(sshd.Addr())
	wardenPort := e.Forward(sshd.Addr())
	// The direct client logs in with the vaulted key itself: a copy the
	// unprivileged user running ssh may read.
	key := filepath.Join(e.Dir, "direct_key")
	b, err := os.ReadFile(sshd.VaultedKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, b, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(key, sshUser, sshUser)
	file := filepath.Join(e.Dir, "bulk")
	if out, err := exec.Command("dd", "if=/dev/urandom", "of="+file, "bs=1M", "count="+strconv.Itoa(mib)).CombinedOutput(); err != nil {
		t.Fatalf("dd: %v\n%s", err, out)
	}
	e.StartAgent(fmt.Sprintf(`targets:
  - name: bench-ssh
    protocol: ssh
    address: 127.0.0.1:%d
    ssh:
      host_key: %q
    credentials:
      username: root
      user_ca_key_file: %s
access:
  - groups: [engineering]
    targets: [bench-ssh]
rules:
  - name: no-rm
    targets: [bench-ssh]
    when: { commands: [rm] }
    action: deny
`, wardenPort, sshd.HostKeyPub, sshd.UserCAKey))
	token := e.Token(devidp.IssueOptions{Sub: "alice"})
	known := filepath.Join(e.Dir, "ssh_known_hosts")
	direct := fmt.Sprintf("ssh -F /dev/null -i %s -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -p %d root@127.0.0.1", key, directPort)
	warden := fmt.Sprintf("ssh -F /dev/null -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=%s -o BatchMode=yes -o LogLevel=ERROR -p %d root@127.0.0.1", known, wardenPort)

	// Each measurement runs in one logged-in shell and prints nanoseconds.
	measure := func(what, script string) float64 {
		t.Helper()
		out := e.MustRun(harness.Shell{UID: sshUser, GID: sshUser, Script: fmt.Sprintf(`warden login --token-file %s >/dev/null || exit 9
start=$(date +%%s%%N)
%s
end=$(date +%%s%%N)
echo "ns=$((end-start))"`, token, script)})
		i := strings.LastIndex(out, "ns=")
		if i < 0 {
			t.Fatalf("%s: no timing:\n%s", what, out)
		}
		ns, err := strconv.ParseFloat(strings.TrimSpace(out[i+3:]), 64)
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		return ns
	}
	loop := func(ssh string) string {
		return fmt.Sprintf("for i in $(seq %d); do %s true || exit 1; done", n, ssh)
	}
	bulk := func(ssh string) string {
		return fmt.Sprintf(`got=$(%s cat %s | wc -c); [ "$got" = %d ] || { echo "cat moved $got bytes"; exit 1; }`, ssh, file, mib<<20)
	}
	// Warm both paths once (page cache, sshd's first fork).
	measure("warm-up", loop(direct)+"\n"+loop(warden))

	connDirect := measure("direct set-up", loop(direct)) / float64(n)
	connWarden := measure("warden set-up", loop(warden)) / float64(n)
	bulkDirect := measure("direct bulk", bulk(direct))
	bulkWarden := measure("warden bulk", bulk(warden))
	mibps := func(ns float64) float64 { return float64(mib) / (ns / 1e9) }
	t.Logf("ssh true, connection set-up: direct %.1f ms, through Warden %.1f ms (%.2fx the time)", connDirect/1e6, connWarden/1e6, connWarden/connDirect)
	t.Logf("ssh cat %d MiB: direct %.0f MiB/s, through Warden %.0f MiB/s (%.2fx the throughput)", mib, mibps(bulkDirect), mibps(bulkWarden), bulkDirect/bulkWarden)
	fmt.Printf("BENCH ssh connect_ms direct=%.2f warden=%.2f warden/direct=%.2f\n", connDirect/1e6, connWarden/1e6, connWarden/connDirect)
	fmt.Printf("BENCH ssh cat_mibps direct=%.1f warden=%.1f warden/direct=%.2f\n", mibps(bulkDirect), mibps(bulkWarden), bulkDirect/bulkWarden)
}
