package bench

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// TestBenchPgbench runs "pgbench -S -c 8 -T 20" (read-only, simple
// protocol, 8 clients, 2 threads) against one PostgreSQL server four
// ways in one run: directly, through a plain io.Copy relay, through
// PgBouncer (session mode), and through Warden with the kernel redirect,
// credential injection, statement checks, masking and db.query recording
// all on (with the collector running, and stopped). It prints TPS and the
// p99 latency computed from pgbench's per-transaction log, and the ratios.
// The relay and Warden with the collector stopped (the target's pair) run
// WARDEN_BENCH_ROUNDS times (default 3), alternating, and count by their
// medians.
func TestBenchPgbench(t *testing.T) {
	requireBench(t)
	testenv.RequireRoot(t)
	pgbench := testenv.RequireCommand(t, "pgbench")
	seconds := strconv.Itoa(envInt(t, "WARDEN_BENCH_SECONDS", 20))

	e := harness.NewEnv(t)
	pg := e.StartPostgres()
	pg.Exec("postgres", "CREATE ROLE app LOGIN PASSWORD 'bench-secret'")
	init := e.NSCommand(pgbench, "-i", "-q", "-s", "10", "-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port), "-U", "postgres", "postgres")
	init.Env = append(os.Environ(), "PGPASSWORD="+harness.PostgresSuperuserPassword)
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	pg.Exec("postgres", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO app")

	relayPort := e.Forward(pg.Addr())
	secret := filepath.Join(e.Dir, "bench.secret")
	if err := os.WriteFile(secret, []byte("bench-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Profiling is opt-in on the agent (pprof: true); the bench profiles
	// the agent alone to split its CPU per statement by component.
	// The spool holds what wardend records while the collector is stopped:
	// about 0.8 GB over three rounds here, more than the 1 GiB default
	// leaves once the earlier phases are in it; a full spool would refuse
	// statements (audit_failure: deny).
	agentOpts := harness.AgentOptions{Config: "pprof: true\nspool_max_bytes: 8589934592\n"}
	e.StartAgentWith(fmt.Sprintf(`targets:
  - name: bench-db
    protocol: postgres
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
    columns: [filler, email, ssn]
    detectors: [email, credit_card, ssn, iban, phone, jwt, aws_access_key, private_key]
`, pg.Addr(), secret), agentOpts)
	token := e.Token(devidp.IssueOptions{Sub: "alice"})

	logDir, err := os.MkdirTemp("", "warden-pgbench-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(logDir)
	os.Chmod(logDir, 0o777)
	args := func(port int, prefix string) string {
		// No TLS on any path: the server has none, and the agent would
		// otherwise accept libpq's default sslmode=prefer.
		return fmt.Sprintf("PGSSLMODE=disable %s -n -S -c 8 -j 2 -T %s -l --log-prefix=%s -h 127.0.0.1 -p %d -U app postgres",
			pgbench, seconds, filepath.Join(logDir, prefix), port)
	}
	// run runs one pgbench and returns its TPS, its p99 latency and the CPU
	// time process pid (the relay or wardend) spent per transaction.
	run := func(name string, cmd *exec.Cmd, pid int) (tps, p99, cpuPerTx float64) {
		cpu0 := cpuTime(t, pid)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s pgbench: %v\n%s", name, err, out)
		}
		cpu := cpuTime(t, pid) - cpu0
		m := regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`).FindSubmatch(out)
		n := regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`).FindSubmatch(out)
		if m == nil || n == nil {
			t.Fatalf("%s: no tps in pgbench output:\n%s", name, out)
		}
		tps, _ = strconv.ParseFloat(string(m[1]), 64)
		txs, _ := strconv.ParseFloat(string(n[1]), 64)
		cpuPerTx = float64(cpu.Microseconds()) / max(txs, 1)
		p99 = percentile(t, filepath.Join(logDir, name), 0.99)
		t.Logf("%s: tps %.0f p99 %.3f ms, %.0f µs CPU per transaction in pid %d", name, tps, p99, cpuPerTx, pid)
		return tps, p99, cpuPerTx
	}
	agentPID := wardendPID(t, e)
	direct := e.NSCommand("bash", "-c", args(pg.Port, "direct"))
	direct.Env = append(os.Environ(), "PGPASSWORD=bench-secret")
	dTPS, dP99, _ := run("direct", direct, agentPID)
	// PgBouncer 1.18 in session mode, started here: what a pooler in the
	// path costs, the stretch target.
	bouncerPort, bouncerPID := startPgBouncer(t, e, pg.Port, "app", "bench-secret")
	bounced := e.NSCommand("bash", "-c", args(bouncerPort, "pgbouncer"))
	bounced.Env = append(os.Environ(), "PGPASSWORD=bench-secret")
	bTPS, bP99, bCPU := run("pgbouncer", bounced, bouncerPID)
	// Warden: a logged-in shell, no password: credentials are injected.
	warden := e.Command(harness.Shell{UID: 65534, GID: 65534, Script: fmt.Sprintf("warden login --token-file %s >/dev/null && %s", token, args(pg.Port, "warden"))})
	wTPS, wP99, wCPU := run("warden", warden, agentPID)

	// The collector, its NATS server and SQLite share these 2 cores with
	// PostgreSQL, pgbench and wardend; on a real deployment they run
	// elsewhere. The target is measured with them stopped: wardend still
	// parses, masks, signs and spools every statement (the spool drains
	// when the collector is back), so this is the agent's own cost.
	//
	// The machine's speed drifts by a third between minutes here, so the
	// relay and Warden alternate over rounds and the ratio is taken of
	// their medians: a slow minute then slows both.
	e.StopCollector()
	rounds := envInt(t, "WARDEN_BENCH_ROUNDS", 3) // positive: envInt refuses anything else
	var rTPSs, rP99s, rCPUs, aTPSs, aP99s, aCPUs []float64
	// CPU profiles of the relay (it runs in this test process; nothing
	// else here is busy) and of wardend, from the middle round: the gap by
	// component is measured between them (WARDEN_BENCH_PPROF keeps
	// wardend's).
	relayProf := filepath.Join(logDir, "relay.pprof")
	profPath := os.Getenv("WARDEN_BENCH_PPROF")
	if profPath == "" {
		profPath = filepath.Join(logDir, "wardend.pprof")
	}
	profiling := false
	for i := range rounds {
		middle := i == rounds/2
		relayed := e.NSCommand("bash", "-c", args(relayPort, fmt.Sprintf("relay-%d", i)))
		relayed.Env = append(os.Environ(), "PGPASSWORD=bench-secret")
		if middle {
			profiling = startSelfProfile(t, relayProf)
		}
		tps, p99, cpu := run(fmt.Sprintf("relay-%d", i), relayed, os.Getpid())
		if middle && profiling {
			pprof.StopCPUProfile()
		}
		rTPSs, rP99s, rCPUs = append(rTPSs, tps), append(rP99s, p99), append(rCPUs, cpu)

		alone := e.Command(harness.Shell{UID: 65534, GID: 65534, Script: fmt.Sprintf("warden login --token-file %s >/dev/null && %s", token, args(pg.Port, fmt.Sprintf("warden-alone-%d", i)))})
		var wg sync.WaitGroup
		if middle {
			wg.Add(1)
			go func() {
				defer wg.Done()
				profileAgent(t, e, profPath, seconds)
			}()
		}
		tps, p99, cpu = run(fmt.Sprintf("warden-alone-%d", i), alone, agentPID)
		wg.Wait()
		aTPSs, aP99s, aCPUs = append(aTPSs, tps), append(aP99s, p99), append(aCPUs, cpu)
		fmt.Printf("BENCH pgbench round %d of %d, collector stopped: relay %.0f tps, warden %.0f tps, %.2fx\n", i+1, rounds, rTPSs[i], aTPSs[i], aTPSs[i]/rTPSs[i])
	}
	rTPS, rP99, rCPU := medianF(rTPSs), medianF(rP99s), medianF(rCPUs)
	aTPS, aP99, aCPU := medianF(aTPSs), medianF(aP99s), medianF(aCPUs)
	if parts, err := componentBreakdown(profPath, aCPU); err != nil {
		t.Errorf("CPU by component: %v", err)
	} else {
		fmt.Printf("BENCH wardend CPU per statement by component, collector stopped (%.0f µs in all, the relay %.0f µs): %s\n", aCPU, rCPU, parts)
	}
	if profiling {
		if parts, err := componentBreakdown(relayProf, rCPU); err != nil {
			t.Errorf("relay CPU by component: %v", err)
		} else {
			fmt.Printf("BENCH relay CPU per transaction by component (%.0f µs in all): %s\n", rCPU, parts)
		}
		if gap, err := componentGap(profPath, aCPU, relayProf, rCPU); err != nil {
			t.Errorf("gap by component: %v", err)
		} else {
			fmt.Printf("BENCH wardend (collector stopped) minus relay, CPU per transaction by component: %s\n", gap)
		}
	}
	e.StartCollector()

	fmt.Printf("BENCH pgbench -S -c 8 -j 2 -T %s: direct %.0f tps p99 %.3f ms; relay %.0f tps p99 %.3f ms (median of %d); warden %.0f tps p99 %.3f ms; "+
		"warden/direct tps %.2f p99 %.2fx; warden/relay tps %.2f p99 %.2fx; "+
		"warden with the collector stopped %.0f tps p99 %.3f ms (median of %d), /relay tps %.2f p99 %.2fx; "+
		"CPU per transaction: relay %.0f µs, wardend %.0f µs (%.0f µs with the collector stopped)\n",
		seconds, dTPS, dP99, rTPS, rP99, rounds, wTPS, wP99, wTPS/dTPS, wP99/dP99, wTPS/rTPS, wP99/rP99, aTPS, aP99, rounds, aTPS/rTPS, aP99/rP99,
		rCPU, wCPU, aCPU)
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "missed"
	}
	fmt.Printf("BENCH pgbench four ways: direct %.0f tps; relay %.0f tps (%.2fx direct); pgbouncer %.0f tps p99 %.3f ms (%.2fx direct, %.2fx relay, %.0f µs CPU per transaction); "+
		"warden with the collector stopped %.0f tps = %.2fx relay (target >= 0.80: %s), %.2fx pgbouncer (stretch >= 1.00: %s); with the collector running %.2fx relay, %.2fx pgbouncer\n",
		dTPS, rTPS, rTPS/dTPS, bTPS, bP99, bTPS/dTPS, bTPS/rTPS, bCPU,
		aTPS, aTPS/rTPS, verdict(aTPS >= 0.8*rTPS), aTPS/bTPS, verdict(aTPS >= bTPS), wTPS/rTPS, wTPS/bTPS)
}

// percentile reads pgbench's per-transaction logs (prefix.<pid>[.<n>];
// the third field is the latency in microseconds) and returns the q
// quantile in milliseconds.
func percentile(t *testing.T, prefix string, q float64) float64 {
	t.Helper()
	files, _ := filepath.Glob(prefix + ".*")
	var lat []float64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 {
				continue
			}
			if us, err := strconv.ParseFloat(fields[2], 64); err == nil {
				lat = append(lat, us)
			}
		}
		fh.Close()
	}
	if len(lat) == 0 {
		t.Fatalf("no transactions logged under %s", prefix)
	}
	slices.Sort(lat)
	return lat[int(q*float64(len(lat)-1))] / 1000
}

// startSelfProfile starts a CPU profile of this test process (the relay
// runs in it) into path, and reports whether it runs: "go test
// -cpuprofile" may hold the profiler already.
func startSelfProfile(t *testing.T, path string) bool {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Logf("no CPU profile of the relay: %v", err)
		return false
	}
	return true
}

// profileAgent saves a CPU profile of wardend, taken through its metrics
// listener inside the test's namespace.
func profileAgent(t *testing.T, e *harness.Env, path, seconds string) {
	hc := &http.Client{Transport: &http.Transport{DialContext: e.NS.DialContext}}
	resp, err := hc.Get("http://" + harness.MetricsAddr + "/debug/pprof/profile?seconds=" + seconds)
	if err != nil {
		t.Errorf("profile wardend: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Errorf("profile wardend: %v", err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}
