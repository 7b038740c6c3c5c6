package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often a Watcher checks the policy file for changes.
const DefaultInterval = time.Second

// WatchOptions configure a Watcher.
type WatchOptions struct {
	// OnLoad receives each newly loaded policy, including the first. It is
	// not called when the file changes but its content does not.
	OnLoad func(*Policy)
	// OnError receives each failed reload. The previous policy stays in
	// force. A file that stays broken is reported once, not every poll.
	OnError func(error)
	// Interval between checks of the file; DefaultInterval if zero.
	Interval time.Duration
	// Enforcement says what the agent's codecs enforce; the first load and
	// every reload are parsed against it (see Parse), so a reload that adds
	// a rule no codec can apply is rejected like any other invalid file.
	// nil allows access only.
	Enforcement Enforcement
}

// Watcher keeps a policy loaded from a file current. It polls the file's
// identity (device, inode, size, modification and change times) rather than
// using inotify, so it sees every way of replacing the file: in-place
// writes, atomic renames, and symlink swaps as done by configuration
// management. A reload that fails to parse is reported and ignored: the
// agent keeps enforcing the last good policy, it never runs with none.
//
// Callbacks run one at a time on the goroutine that called NewWatcher, Run
// or Reload. They must not call Reload, which would deadlock; Policy is safe
// to call from them.
type Watcher struct {
	path string
	opts WatchOptions

	current atomic.Pointer[Policy]

	mu sync.Mutex // serialises loads and callbacks
	// seen is the stamp of the file the last load decision was made on, so
	// an unchanged (even if broken) file is not re-read every poll.
	seen stamp
	// statErr is the last stat failure reported, so a missing file is
	// reported once rather than every poll.
	statErr string
}

// NewWatcher loads the policy at path and returns a watcher for it. If the
// first load fails, NewWatcher returns the error and no watcher, so the
// daemon can refuse to start with a clear message instead of running
// without a policy. On success it calls opts.OnLoad with the policy before
// returning. Call Run to start watching.
func NewWatcher(path string, opts WatchOptions) (*Watcher, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	w := &Watcher{path: path, opts: opts}
	w.mu.Lock()
	defer w.mu.Unlock()
	p, st, err := w.read()
	if err != nil {
		return nil, err
	}
	w.seen = st
	w.current.Store(p)
	if w.opts.OnLoad != nil {
		w.opts.OnLoad(p)
	}
	return w, nil
}

// Policy returns the policy in force: the last one that loaded cleanly.
func (w *Watcher) Policy() *Policy { return w.current.Load() }

// Run checks the file every Interval and reloads it when it changes, until
// ctx is cancelled. It returns nil once ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.poll()
		}
	}
}

// Reload reads the file now, whether or not it looks changed; the daemon
// calls it on SIGHUP. Outcomes go to the callbacks as with a change seen by
// Run; the error is also returned, so callers that log in OnError can ignore
// it.
func (w *Watcher) Reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, st, err := w.read()
	if err != nil {
		w.seen = st
		w.report(err)
		return err
	}
	w.statErr = ""
	w.apply(p, st)
	return nil
}

// poll reloads the file if its stamp changed since the last decision.
func (w *Watcher) poll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	st, err := statFile(w.path)
	if err != nil {
		// Often transient (an editor or deploy tool replacing the file),
		// but worth one report: it may also be a real mistake.
		if msg := err.Error(); msg != w.statErr {
			w.statErr = msg
			w.report(fmt.Errorf("policy: %w; keeping the current policy", err))
		}
		w.seen = stamp{}
		return
	}
	w.statErr = ""
	if st == w.seen {
		return
	}
	p, read, err := w.read()
	if errors.Is(err, errChanging) {
		return // still being written; look again next tick
	}
	w.seen = read
	if err != nil {
		w.report(err)
		return
	}
	w.apply(p, read)
}

// errChanging means the file changed while it was being read.
var errChanging = errors.New("changed while being read")

// read loads the file and returns the stamp of the version read. It checks
// the stamp before and after reading, retrying a few times, so that it never
// parses a file that is half written by a non-atomic writer.
func (w *Watcher) read() (*Policy, stamp, error) {
	var err error
	for range 3 {
		var before, after stamp
		before, err = statFile(w.path)
		if err != nil {
			return nil, stamp{}, fmt.Errorf("policy: %w", err)
		}
		var data []byte
		data, err = readFile(w.path)
		if err != nil {
			return nil, before, err
		}
		after, err = statFile(w.path)
		if err != nil {
			return nil, stamp{}, fmt.Errorf("policy: %w", err)
		}
		if before != after {
			err = fmt.Errorf("policy: %s %w", w.path, errChanging)
			continue
		}
		p, err := Parse(data, w.path, w.opts.Enforcement)
		return p, before, err
	}
	return nil, stamp{}, err
}

// apply makes p the policy in force, unless it is the same as the current
// one byte for byte.
func (w *Watcher) apply(p *Policy, st stamp) {
	w.seen = st
	if cur := w.current.Load(); cur != nil && cur.Digest == p.Digest {
		return
	}
	w.current.Store(p)
	if w.opts.OnLoad != nil {
		w.opts.OnLoad(p)
	}
}

func (w *Watcher) report(err error) {
	if w.opts.OnError != nil {
		w.opts.OnError(err)
	}
}

// stamp identifies one version of a file without reading it.
type stamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds
}

func statFile(path string) (stamp, error) {
	fi, err := os.Stat(path) // follows symlinks: a swapped link is a change
	if err != nil {
		return stamp{}, err
	}
	if !fi.Mode().IsRegular() {
		return stamp{}, fmt.Errorf("%s is not a regular file", path)
	}
	st := stamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	sysStamp(fi, &st)
	return st, nil
}
