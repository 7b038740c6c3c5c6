package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/tests/harness"
	"github.com/wardenhq/warden/tests/testenv"
)

// killRuns is how many kills each side of TestBenchKill measures.
const killRuns = 20

// killTree is the process tree of every run: the shell, a sudo with its
// child running as nobody, and two more sleeps; five processes.
const killTree = "sudo -u nobody sleep 1000 & sleep 1000 & sleep 1000 & wait"

const killTreeSize = 5

// TestBenchKill measures the kill switch: the time from asking the
// collector to kill a session (POST /v1/sessions/kill) to the last of its
// processes gone, through NATS, the agent's consumer and cgroup.kill. The
// baseline, in the same run, is the same tree ended by SIGKILL to each of
// its processes from the test itself.
func TestBenchKill(t *testing.T) {
	requireBench(t)
	testenv.RequireCommand(t, "sudo")
	e := harness.NewEnv(t)
	target := e.Serve("tcp4", "127.0.0.1:0")
	e.StartAgent(fmt.Sprintf("targets:\n  - name: echo\n    protocol: tcp\n    address: 127.0.0.1:%d\naccess:\n  - groups: [engineering]\n    targets: [echo]\n", target.Port()))
	alice := e.Token(devidp.IssueOptions{Sub: "alice"})
	samFile := e.Token(devidp.IssueOptions{Sub: "sam", Groups: []string{harness.KillerGroup}})
	sam, err := os.ReadFile(samFile)
	if err != nil {
		t.Fatal(err)
	}
	soc := e.Collector.WithToken(strings.TrimSpace(string(sam)))
	mount, err := cgroupv2.Mount()
	if err != nil {
		t.Fatal(err)
	}

	// tree starts a shell running killTree (logged in as alice when login)
	// and returns it, its cgroup and session id once all five run.
	n := 0
	tree := func(login bool) (*exec.Cmd, []int, string) {
		n++
		marker := filepath.Join(e.Dir, fmt.Sprintf("bench-kill-%d.json", n))
		script := "echo '{}' > " + marker + "\n" + killTree
		if login {
			script = fmt.Sprintf("warden login --token-file %s >/dev/null || exit 9\nwarden whoami --json > %s.tmp && mv %s.tmp %s\n%s",
				alice, marker, marker, marker, killTree)
		}
		cmd := e.Command(harness.Shell{Script: script})
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		var who struct {
			ID string `json:"session_id"`
		}
		var pids []int
		e.Eventually("process tree running", func() error {
			data, err := os.ReadFile(marker)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(data, &who); err != nil {
				return err
			}
			cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
			if err != nil {
				return err
			}
			_, path, _ := strings.Cut(strings.TrimSpace(string(cg)), "::")
			if pids, err = harness.CgroupPIDs(filepath.Join(mount, path)); err != nil {
				return err
			}
			if len(pids) != killTreeSize {
				return fmt.Errorf("%d processes in the tree", len(pids))
			}
			return nil
		})
		if login {
			// The collector finds a session's host in its session.login.
			e.Eventually("session.login at the collector", func() error {
				list, err := e.Collector.Events(context.Background(), collectorclient.Query{Type: "session.login", User: "alice", Desc: true, Limit: 5})
				if err != nil {
					return err
				}
				for _, raw := range list.Events {
					if strings.Contains(string(raw), who.ID) {
						return nil
					}
				}
				return fmt.Errorf("session %s not stored yet", who.ID)
			})
		}
		return cmd, pids, who.ID
	}
	// gone waits until none of pids runs and returns when that was.
	gone := func(pids []int) time.Time {
		deadline := time.Now().Add(time.Minute)
		for {
			if !slices.ContainsFunc(pids, harness.Alive) {
				return time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("processes still alive after a minute: %v", pids)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}

	// One kill before measuring: the collector was just restarted with
	// --killers, and the agent's NATS link may still be reconnecting.
	cmd, pids, id := tree(true)
	if _, err := soc.Kill(context.Background(), collectorclient.KillRequest{SessionID: id, Reason: "bench warm-up"}); err != nil {
		t.Fatal(err)
	}
	gone(pids)
	cmd.Wait()

	var base, with, api []int64
	for range killRuns {
		cmd, pids, _ := tree(false)
		start := time.Now()
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		base = append(base, gone(pids).Sub(start).Microseconds())
		cmd.Wait()

		cmd, pids, id := tree(true)
		start = time.Now()
		if _, err := soc.Kill(context.Background(), collectorclient.KillRequest{SessionID: id, Reason: "bench"}); err != nil {
			t.Fatal(err)
		}
		api = append(api, time.Since(start).Microseconds())
		with = append(with, gone(pids).Sub(start).Microseconds())
		cmd.Wait()
	}
	mb, mw := median(base), median(with)
	t.Logf("kill of a %d-process session (shell, sudo -u nobody sleep, two sleeps), %d runs; baseline: SIGKILL to each pid from the test", killTreeSize, killRuns)
	t.Logf("warden µs: %v", with)
	t.Logf("of which the API call (token check, recorded, queued) µs: %v", api)
	fmt.Printf("BENCH kill baseline_median_us=%d warden_median_us=%d ratio=%.1f api_median_us=%d runs=%d\n", mb, mw, float64(mw)/float64(max(mb, 1)), median(api), killRuns)
}
