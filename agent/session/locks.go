package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/wardenhq/warden/agent/lifetime"
)

// Locks refuses logins of locked people. Locks are kept in a file in the
// agent's state directory, so a restart does not lift them, and the file
// is read before the agent accepts its first login.
type Locks struct {
	file string

	mu    sync.Mutex
	locks map[string]lifetime.Lock // by sub
}

type lockFile struct {
	Locks []lockEntry `json:"locks"`
}

type lockEntry struct {
	Sub    string    `json:"sub"`
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	Until  time.Time `json:"until"`
}

// OpenLocks reads the locks kept in file; a missing file holds none.
func OpenLocks(file string) (*Locks, error) {
	l := &Locks{file: file, locks: map[string]lifetime.Lock{}}
	data, err := os.ReadFile(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return l, nil
	case err != nil:
		return nil, fmt.Errorf("read login locks: %w", err)
	}
	var lf lockFile
	if err := json.Unmarshal(data, &lf); err != nil {
		return nil, fmt.Errorf("parse login locks %s: %w", file, err)
	}
	for _, e := range lf.Locks {
		l.locks[e.Sub] = lifetime.Lock{Sub: e.Sub, Reason: e.Reason, By: e.By, Until: e.Until}
	}
	return l, nil
}

// Lock refuses logins of sub until until, replacing an earlier lock of
// sub (a lock that ended already, or ends at once, lifts it). It returns
// once the lock is on disk.
func (l *Locks) Lock(sub string, until time.Time, reason, by string) error {
	if sub == "" {
		return errors.New("lock: no subject")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, had := l.locks[sub]
	l.locks[sub] = lifetime.Lock{Sub: sub, Reason: reason, By: by, Until: until.UTC()}
	if err := l.saveLocked(time.Now()); err != nil {
		if had {
			l.locks[sub] = prev
		} else {
			delete(l.locks, sub)
		}
		return err
	}
	return nil
}

// Check returns the lock in force on sub at now, if any.
func (l *Locks) Check(sub string, now time.Time) (lifetime.Lock, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk, ok := l.locks[sub]
	if !ok || !now.Before(lk.Until) {
		return lifetime.Lock{}, false
	}
	return lk, true
}

// Active lists the locks in force at now, by end then subject.
func (l *Locks) Active(now time.Time) []lifetime.Lock {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []lifetime.Lock{}
	for _, lk := range l.locks {
		if now.Before(lk.Until) {
			out = append(out, lk)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Until.Equal(out[j].Until) {
			return out[i].Until.Before(out[j].Until)
		}
		return out[i].Sub < out[j].Sub
	})
	return out
}

// saveLocked writes the locks still in force at now, dropping the ended
// ones, through a temporary file and a rename so a crash leaves the old
// file or the new one.
func (l *Locks) saveLocked(now time.Time) error {
	var lf lockFile
	for sub, lk := range l.locks {
		if !now.Before(lk.Until) {
			delete(l.locks, sub)
			continue
		}
		lf.Locks = append(lf.Locks, lockEntry{Sub: lk.Sub, Reason: lk.Reason, By: lk.By, Until: lk.Until})
	}
	sort.Slice(lf.Locks, func(i, j int) bool { return lf.Locks[i].Sub < lf.Locks[j].Sub })
	data, err := json.MarshalIndent(lf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode login locks: %w", err)
	}
	return writeState(l.file, data, "login locks")
}
