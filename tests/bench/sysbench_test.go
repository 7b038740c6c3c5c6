package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// TestBenchSysbench runs "sysbench oltp_read_only" (8 threads, prepared
// statements, so binary rows) against one MariaDB server three ways in one
// run: directly, through a plain io.Copy relay, and through Warden with
// the kernel redirect, credential injection, statement checks, masking and
// db.query recording all on. It prints TPS, sysbench's p99 latency and the
// ratios.
//
// Like pgbench's filler, sysbench's two text columns (c and pad) are
// masked by name; the detectors are configured but then find no text to
// read, as in the pgbench bench. (Run through the detectors instead, c's
// eleven-digit groups cost about 1 ms of backtracking per range query.)
func TestBenchSysbench(t *testing.T) {
	requireBench(t)
	testenv.RequireRoot(t)
	sysbench := testenv.RequireCommand(t, "sysbench")
	seconds := strconv.Itoa(envInt(t, "WARDEN_BENCH_SECONDS", 20))

	e := harness.NewEnv(t)
	db := e.StartMariaDB()
	db.Exec(`CREATE DATABASE sbtest;
CREATE USER app@'%' IDENTIFIED BY 'bench-secret';
GRANT ALL ON sbtest.* TO app@'%';`)
	common := fmt.Sprintf("%s oltp_read_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-db=sbtest --tables=4 --table-size=10000", sysbench)
	prep := e.NSCommand("bash", "-c", fmt.Sprintf("%s --mysql-port=%d --mysql-user=app --mysql-password=bench-secret prepare", common, db.Port))
	if out, err := prep.CombinedOutput(); err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}

	relayPort := e.Forward(db.Addr())
	secret := filepath.Join(e.Dir, "bench.secret")
	if err := os.WriteFile(secret, []byte("bench-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Profiling is opt-in on the agent (pprof: true).
	var agentOpts harness.AgentOptions
	if os.Getenv("WARDEN_BENCH_PPROF") != "" {
		agentOpts.Config = "pprof: true\n"
	}
	e.StartAgentWith(fmt.Sprintf(`targets:
  - name: bench-db
    protocol: mysql
    address: %s
    credentials:
      username: app
      password_file: %s
access:
  - groups: [engineering]
    targets: [bench-db]
rules:
  - name: no-ddl
    targets: [bench-db]
    when: { statements: [drop, truncate, alter] }
    action: deny
  - name: no-mass-delete
    targets: [bench-db]
    when: { statements: [delete, update], no_where: true }
    action: deny
masking:
  - name: pii
    targets: [bench-db]
    columns: [c, pad, email, ssn]
    detectors: [email, credit_card, ssn, iban, phone, jwt, aws_access_key, private_key]
`, db.Addr(), secret), agentOpts)
	token := e.Token(devidp.IssueOptions{Sub: "alice"})

	args := func(port int, password string) string {
		return fmt.Sprintf("%s --mysql-port=%d --mysql-user=app --mysql-password=%s --threads=8 --time=%s --percentile=99 --report-interval=0 run",
			common, port, password, seconds)
	}
	tpsRE := regexp.MustCompile(`transactions:\s+\d+\s+\(([0-9.]+) per sec\.\)`)
	p99RE := regexp.MustCompile(`99th percentile:\s+([0-9.]+)`)
	errRE := regexp.MustCompile(`ignored errors:\s+(\d+)`)
	run := func(name string, cmd *exec.Cmd, pid int) (tps, p99, cpuPerTx float64) {
		cpu0 := cpuTime(t, pid)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s sysbench: %v\n%s", name, err, out)
		}
		cpu := cpuTime(t, pid) - cpu0
		m, p, ig := tpsRE.FindSubmatch(out), p99RE.FindSubmatch(out), errRE.FindSubmatch(out)
		if m == nil || p == nil {
			t.Fatalf("%s: no tps or p99 in sysbench output:\n%s", name, out)
		}
		if ig != nil && string(ig[1]) != "0" {
			t.Fatalf("%s: sysbench had errors:\n%s", name, out)
		}
		tps, _ = strconv.ParseFloat(string(m[1]), 64)
		p99, _ = strconv.ParseFloat(string(p[1]), 64)
		secs, _ := strconv.ParseFloat(seconds, 64)
		cpuPerTx = float64(cpu.Microseconds()) / max(tps*secs, 1)
		t.Logf("%s: tps %.0f p99 %.2f ms, %.0f µs CPU per transaction in pid %d", name, tps, p99, cpuPerTx, pid)
		return tps, p99, cpuPerTx
	}
	agentPID := wardendPID(t, e)
	dTPS, dP99, _ := run("direct", e.NSCommand("bash", "-c", args(db.Port, "bench-secret")), agentPID)
	// The relay runs in this test process; nothing else here is busy.
	rTPS, rP99, rCPU := run("relay", e.NSCommand("bash", "-c", args(relayPort, "bench-secret")), os.Getpid())
	// Warden: a logged-in shell, and a wrong password: the vaulted one is
	// injected.
	warden := e.Command(harness.Shell{UID: 65534, GID: 65534, Script: fmt.Sprintf("warden login --token-file %s >/dev/null && %s", token, args(db.Port, "not-the-password"))})
	var profiled sync.WaitGroup
	if path := os.Getenv("WARDEN_BENCH_PPROF"); path != "" {
		// A CPU profile of wardend while sysbench runs through it.
		profiled.Add(1)
		go func() {
			defer profiled.Done()
			profileAgent(t, e, path, seconds)
		}()
	}
	wTPS, wP99, wCPU := run("warden", warden, agentPID)
	profiled.Wait()

	fmt.Printf("BENCH sysbench oltp_read_only --threads=8 --time=%s: direct %.0f tps p99 %.2f ms; relay %.0f tps p99 %.2f ms; warden %.0f tps p99 %.2f ms; "+
		"warden/direct tps %.2f p99 %.2fx; warden/relay tps %.2f p99 %.2fx; CPU per transaction: relay %.0f µs, wardend %.0f µs\n",
		seconds, dTPS, dP99, rTPS, rP99, wTPS, wP99, wTPS/dTPS, wP99/dP99, wTPS/rTPS, wP99/rP99, rCPU, wCPU)
}
