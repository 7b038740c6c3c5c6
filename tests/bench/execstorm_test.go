package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/tests/harness"
)

const (
	stormEnv      = "WARDEN_BENCH_EXECSTORM_CHILD"
	stormDuration = 10 * time.Second
	stormWorkers  = 2
	stormBinary   = "/bin/true"
)

// init lets the test binary double as the storm child. It runs before
// TestMain, which belongs to the connect benchmark.
func init() {
	if spec := os.Getenv(stormEnv); spec != "" {
		os.Exit(execStorm(spec))
	}
}

// execStorm spawns stormBinary from stormWorkers workers as fast as they
// can for the given duration and prints how many it spawned. Go's
// ForkExec is clone(CLONE_VM|CLONE_VFORK) plus exec: posix_spawn.
func execStorm(spec string) int {
	d, err := time.ParseDuration(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var spawned atomic.Int64
	var failed atomic.Value
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range stormWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			attr := &syscall.ProcAttr{Env: []string{}, Files: []uintptr{0, 1, 2}}
			for time.Now().Before(deadline) {
				pid, err := syscall.ForkExec(stormBinary, []string{stormBinary}, attr)
				if err != nil {
					failed.Store(err)
					return
				}
				var ws syscall.WaitStatus
				if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
					failed.Store(err)
					return
				}
				spawned.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		return 1
	}
	fmt.Printf("spawned=%d\n", spawned.Load())
	return 0
}

// TestBenchExecStorm runs an exec storm for stormDuration, first in a plain
// shell before wardend runs (no programs loaded), then inside a bound
// session under wardend. It checks that every exec in the session became a
// process.exec event or is counted in agent.loss, and reports the agent's
// CPU and memory and the storm's slowdown.
func TestBenchExecStorm(t *testing.T) {
	requireBench(t)
	e := harness.NewEnv(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	storm := func(prefix string) int64 {
		out := e.MustRun(harness.Shell{Script: prefix + fmt.Sprintf("%s=%s exec %s", stormEnv, stormDuration, self)})
		i := strings.Index(out, "spawned=")
		if i < 0 {
			t.Fatalf("storm output:\n%s", out)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(out[i+len("spawned="):]), 10, 64)
		if err != nil {
			t.Fatalf("storm output:\n%s", out)
		}
		return n
	}

	base := storm("")

	target := e.Serve("tcp4", "127.0.0.1:0")
	e.StartAgent(fmt.Sprintf("targets:\n  - name: echo\n    protocol: tcp\n    address: 127.0.0.1:%d\naccess:\n  - groups: [engineering]\n    targets: [echo]\n", target.Port()))
	agentPID := wardendPID(t, e)
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	cpu0 := cpuTime(t, agentPID)
	start := time.Now()
	with := storm(fmt.Sprintf("warden login --token-file %s >/dev/null && ", alice))
	stormCPU := cpuTime(t, agentPID) - cpu0
	stormWall := time.Since(start)

	// Count what the collector received: the session's process.exec of
	// the storm binary, and the kernel's exec losses in sessions.
	var recorded, lost int64
	e.Eventually("every exec recorded or counted as lost", func() error {
		recorded = countEvents(t, e, collectorclient.Query{Type: string(event.ProcessExec), User: "alice"}, func(ev *event.Event) int64 {
			if ev.Process != nil && ev.Process.Binary == stormBinary {
				return 1
			}
			return 0
		})
		lost = countEvents(t, e, collectorclient.Query{Type: string(event.AgentLoss)}, func(ev *event.Event) int64 {
			switch {
			case ev.Data["reason"] == "lineage_exec_lost":
				return number(ev.Data["in_session"])
			case ev.Data["source"] == "spool" || ev.Data["source"] == "recorder":
				// The recorder counts what it could not store by event type.
				if types, ok := ev.Data["types"].(map[string]any); ok {
					return number(types[string(event.ProcessExec)])
				}
			}
			return 0
		})
		if recorded+lost != with {
			return fmt.Errorf("spawned %d, recorded %d, lost %d", with, recorded, lost)
		}
		return nil
	})
	drainCPU := cpuTime(t, agentPID) - cpu0
	rss, hwm := memory(t, agentPID)

	baseRate := float64(base) / stormDuration.Seconds()
	withRate := float64(with) / stormDuration.Seconds()
	t.Logf("exec storm: %d workers spawning %s for %s", stormWorkers, stormBinary, stormDuration)
	t.Logf("agent CPU during the storm %.2fs of %.1fs wall (%.0f%% of one core); until every event was recorded %.2fs",
		stormCPU.Seconds(), stormWall.Seconds(), 100*stormCPU.Seconds()/stormWall.Seconds(), drainCPU.Seconds())
	fmt.Printf("BENCH exec_storm baseline_per_s=%.0f warden_per_s=%.0f slowdown_ratio=%.3f spawned=%d recorded=%d lost=%d agent_cpu_s=%.2f agent_cpu_pct=%.0f agent_rss_mb=%.1f agent_peak_rss_mb=%.1f\n",
		baseRate, withRate, baseRate/withRate, with, recorded, lost, stormCPU.Seconds(),
		100*stormCPU.Seconds()/stormWall.Seconds(), float64(rss)/(1<<20), float64(hwm)/(1<<20))
}

// countEvents pages through every event matching q and sums f over them.
func countEvents(t *testing.T, e *harness.Env, q collectorclient.Query, f func(*event.Event) int64) int64 {
	t.Helper()
	q.Limit = 10000
	var n int64
	for {
		list, err := e.Collector.Events(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range list.Events {
			var ev event.Event
			if err := json.Unmarshal(raw, &ev); err != nil {
				t.Fatalf("decode event: %v", err)
			}
			n += f(&ev)
		}
		if list.NextAfterID == "" {
			return n
		}
		q.AfterID = list.NextAfterID
	}
}

func number(v any) int64 {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return i
	case float64:
		return int64(n)
	}
	return 0
}

// wardendPID finds wardend: it moves itself into the agent cgroup.
func wardendPID(t *testing.T, e *harness.Env) int {
	t.Helper()
	procs, err := cgroupv2.Procs(filepath.Join(e.CgroupRoot, "warden.agent"))
	if err != nil || len(procs) != 1 {
		t.Fatalf("wardend in its cgroup: %v %v", procs, err)
	}
	return procs[0]
}

// cpuTime is the user+system CPU time process pid has used.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ
}

// memory returns the current and peak resident set size of pid in bytes.
func memory(t *testing.T, pid int) (rss, peak int64) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return rss, peak
}
