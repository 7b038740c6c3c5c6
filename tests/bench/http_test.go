package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// TestBenchHTTP runs ApacheBench ("ab -k -c 16 -n N") against one nginx
// three ways in one run: directly, through a plain io.Copy relay, and
// through Warden with the kernel redirect, path and method rules, the
// identity headers and their signed token, an injected credential, JSON
// masking of the response and two events per request all on. It fetches
// /users, a small JSON document with personal data, and prints requests/s
// for each and the ratios.
func TestBenchHTTP(t *testing.T) {
	requireBench(t)
	testenv.RequireRoot(t)
	ab := testenv.RequireCommand(t, "ab")
	requests := strconv.Itoa(envInt(t, "WARDEN_BENCH_HTTP_REQUESTS", 20000))

	e := harness.NewEnv(t)
	ng := e.StartNginx()
	relayPort := e.Forward(ng.Addr())
	secret := filepath.Join(e.Dir, "bench.secret")
	if err := os.WriteFile(secret, []byte("Bearer bench-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.StartAgent(fmt.Sprintf(`targets:
  - name: bench-api
    protocol: http
    address: %s
    credentials: {header: Authorization, value_file: %s}
access:
  - groups: [engineering]
    targets: [bench-api]
rules:
  - name: no-admin-writes
    targets: [bench-api]
    when: {methods: [POST, PUT, DELETE], paths: ["/admin/**", "/api/v1/users/*"]}
    action: deny
masking:
  - name: pii
    targets: [bench-api]
    columns: [ssn]
    detectors: [email, credit_card, ssn, iban, phone, jwt, aws_access_key, private_key]
`, ng.Addr(), secret))
	token := e.Token(devidp.IssueOptions{Sub: "alice"})

	args := func(port int) string {
		return fmt.Sprintf("%s -q -k -c 16 -n %s http://127.0.0.1:%d/users", ab, requests, port)
	}
	rate := regexp.MustCompile(`Requests per second:\s+([0-9.]+)`)
	failed := regexp.MustCompile(`Failed requests:\s+([0-9]+)`)
	run := func(name string, cmd *exec.Cmd) float64 {
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s ab: %v\n%s", name, err, out)
		}
		m, f := rate.FindSubmatch(out), failed.FindSubmatch(out)
		if m == nil || f == nil {
			t.Fatalf("%s: no rate in ab output:\n%s", name, out)
		}
		if string(f[1]) != "0" {
			// ab counts a body of another length as failed: masking
			// changes the length, but every response must be the same.
			t.Fatalf("%s: %s failed requests:\n%s", name, f[1], out)
		}
		rps, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: %.0f requests/s", name, rps)
		return rps
	}
	direct := run("direct", e.NSCommand("bash", "-c", args(ng.Port)))
	relay := run("relay", e.NSCommand("bash", "-c", args(relayPort)))
	warden := run("warden", e.Command(harness.Shell{UID: 65534, GID: 65534,
		Script: fmt.Sprintf("warden login --token-file %s >/dev/null && %s", token, args(ng.Port))}))
	fmt.Printf("BENCH ab -k -c 16 -n %s GET /users (JSON, masked through Warden): direct %.0f req/s; relay %.0f; warden %.0f; warden/direct %.2f; warden/relay %.2f\n",
		requests, direct, relay, warden, warden/direct, warden/relay)
}
