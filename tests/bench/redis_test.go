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

// TestBenchRedis runs "redis-benchmark -q -t get,set" against one
// redis-server three ways in one run: directly, through a plain io.Copy
// relay, and through Warden with the kernel redirect, the injected ACL
// login, command rules, key and content masking and one redis.command
// event per command all on. It prints requests/s for each and the
// ratios.
func TestBenchRedis(t *testing.T) {
	requireBench(t)
	testenv.RequireRoot(t)
	bin := testenv.RequireCommand(t, "redis-benchmark")
	requests := strconv.Itoa(envInt(t, "WARDEN_BENCH_REDIS_REQUESTS", 100000))

	e := harness.NewEnv(t)
	rd := e.StartRedis()
	relayPort := e.Forward(rd.Addr())
	secret := filepath.Join(e.Dir, "bench.secret")
	if err := os.WriteFile(secret, []byte(harness.RedisAppPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Profiling is opt-in on the agent (pprof: true).
	var agentOpts harness.AgentOptions
	if os.Getenv("WARDEN_BENCH_PPROF") != "" {
		agentOpts.Config = "pprof: true\n"
	}
	e.StartAgentWith(fmt.Sprintf(`targets:
  - name: bench-cache
    protocol: redis
    address: %s
    credentials:
      username: %s
      password_file: %s
access:
  - groups: [engineering]
    targets: [bench-cache]
rules:
  - name: no-flush
    targets: [bench-cache]
    when: { commands: [flushall, flushdb, "config set", debug, shutdown] }
    action: deny
masking:
  - name: pii
    targets: [bench-cache]
    keys: ["user:*:email"]
    detectors: [email, credit_card, ssn, iban, phone, jwt, aws_access_key, private_key]
`, rd.Addr(), harness.RedisAppUser, secret), agentOpts)
	token := e.Token(devidp.IssueOptions{Sub: "alice"})

	args := func(port int, auth bool) string {
		a := fmt.Sprintf("%s -q -t get,set -n %s -c 50 -h 127.0.0.1 -p %d", bin, requests, port)
		if auth {
			a += fmt.Sprintf(" --user %s -a %s", harness.RedisAppUser, harness.RedisAppPassword)
		}
		return a
	}
	line := regexp.MustCompile(`(SET|GET): ([0-9.]+) requests per second`)
	run := func(name string, cmd *exec.Cmd) map[string]float64 {
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s redis-benchmark: %v\n%s", name, err, out)
		}
		rps := map[string]float64{}
		for _, m := range line.FindAllStringSubmatch(string(out), -1) {
			rps[m[1]], _ = strconv.ParseFloat(m[2], 64)
		}
		if rps["SET"] == 0 || rps["GET"] == 0 {
			t.Fatalf("%s: no rates in redis-benchmark output:\n%s", name, out)
		}
		t.Logf("%s: SET %.0f/s GET %.0f/s", name, rps["SET"], rps["GET"])
		return rps
	}
	direct := run("direct", e.NSCommand("bash", "-c", args(rd.Port, true)))
	relay := run("relay", e.NSCommand("bash", "-c", args(relayPort, true)))
	// Warden: a logged-in shell, no password: the login is injected.
	var profiled sync.WaitGroup
	if path := os.Getenv("WARDEN_BENCH_PPROF"); path != "" {
		profiled.Add(1)
		go func() {
			defer profiled.Done()
			profileAgent(t, e, path, "5")
		}()
	}
	warden := run("warden", e.Command(harness.Shell{UID: 65534, GID: 65534,
		Script: fmt.Sprintf("warden login --token-file %s >/dev/null && %s", token, args(rd.Port, false))}))
	profiled.Wait()
	fmt.Printf("BENCH redis-benchmark -q -t get,set -n %s -c 50: direct SET %.0f GET %.0f req/s; relay SET %.0f GET %.0f; warden SET %.0f GET %.0f; "+
		"warden/direct SET %.2f GET %.2f; warden/relay SET %.2f GET %.2f\n",
		requests, direct["SET"], direct["GET"], relay["SET"], relay["GET"], warden["SET"], warden["GET"],
		warden["SET"]/direct["SET"], warden["GET"]/direct["GET"], warden["SET"]/relay["SET"], warden["GET"]/relay["GET"])
}
