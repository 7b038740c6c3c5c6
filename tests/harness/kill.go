package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// KillerGroup is the group AuthFlags allows to kill sessions.
const KillerGroup = "soc"

// AuthFlags are the warden-collector flags of every test: tokens of the
// dev IdP, ReaderGroup may read and KillerGroup may kill.
func (e *Env) AuthFlags() []string {
	return []string{"--oidc-issuer", e.IdP.Issuer(), "--oidc-client-id", ClientID,
		"--readers", ReaderGroup, "--killers", KillerGroup}
}

// Warden runs the warden CLI as root in the namespace, outside any
// session, against the collector, with ReaderSub's token
// ($WARDEN_TOKEN_FILE; a --token-file among args wins), and returns its
// combined output.
func (e *Env) Warden(args ...string) (string, error) {
	e.T.Helper()
	return e.WardenEnv(nil, args...)
}

// WardenEnv is Warden with env added to (and overriding) the CLI's
// environment; "WARDEN_TOKEN_FILE=" runs it with no token at all.
func (e *Env) WardenEnv(env []string, args ...string) (string, error) {
	e.T.Helper()
	cmd := e.WardenCmd(args...)
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// WardenCmd returns the command Warden runs, not started.
func (e *Env) WardenCmd(args ...string) *exec.Cmd {
	cmd := e.NSCommand(filepath.Join(e.Bin, "warden"), args...)
	// An empty cache of its own, so that no token cached by another run
	// stands in for the one given here.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "WARDEN_COLLECTOR=http://" + CollectorAddr, "WARDEN_AGENT_SOCKET=" + e.Socket(),
		"HOME=/tmp", "XDG_CACHE_HOME=" + filepath.Join(e.Dir, "cli-cache"), "WARDEN_TOKEN_FILE=" + e.ReaderToken}
	return cmd
}

// CgroupPIDs lists the processes in a cgroup and its descendants.
func CgroupPIDs(dir string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(data)) {
			n, err := strconv.Atoi(f)
			if err != nil {
				return fmt.Errorf("%s: %q", path, f)
			}
			pids = append(pids, n)
		}
		return nil
	})
	return pids, err
}

// Alive reports whether pid still runs: it exists and is not a zombie
// waiting for its parent.
func Alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// UIDOf returns the real uid of a process, or -1.
func UIDOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return -1
}

// CommOf returns a process's command name, or "".
func CommOf(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}
