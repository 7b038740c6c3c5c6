package harness

import (
	"bytes"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a long-running binary started by the harness. Its output is
// kept for failure messages and dumped to the test log at cleanup.
type Process struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

type lockedWriter struct{ p *Process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// StartProcess starts cmd and stops it when the test ends.
func (e *Env) StartProcess(name string, cmd *exec.Cmd) *Process {
	e.T.Helper()
	p := &Process{name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = lockedWriter{p}, lockedWriter{p}
	if err := cmd.Start(); err != nil {
		e.T.Fatalf("start %s: %v", name, err)
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	e.T.Cleanup(func() {
		p.Stop()
		if e.T.Failed() {
			e.T.Logf("--- %s output ---\n%s", name, p.Output())
		}
	})
	return p
}

// Output is everything the process printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits, then SIGKILL if it lingers.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.Kill()
	}
}

// Kill ends the process with SIGKILL, as a crash would, and waits.
func (p *Process) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}
