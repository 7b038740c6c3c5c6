package session_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wardenhq/warden/agent/session"
)

func TestLocksPersist(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state", "locks.json")
	now := time.Now()
	l, err := session.OpenLocks(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Active(now); len(got) != 0 {
		t.Fatalf("fresh locks: %+v", got)
	}
	if err := l.Lock("alice", now.Add(time.Hour), "incident 42", "soc@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := l.Lock("bob", now.Add(30*time.Minute), "offboarding", "hr@example.com"); err != nil {
		t.Fatal(err)
	}

	// A restart reads them back.
	again, err := session.OpenLocks(file)
	if err != nil {
		t.Fatal(err)
	}
	active := again.Active(now)
	if len(active) != 2 || active[0].Sub != "bob" || active[1].Sub != "alice" {
		t.Fatalf("after reopening, Active = %+v; want bob's then alice's", active)
	}
	lk, ok := again.Check("alice", now)
	if !ok || lk.Reason != "incident 42" || lk.By != "soc@example.com" || !lk.Until.Equal(now.Add(time.Hour).UTC()) {
		t.Errorf("Check(alice) = %+v, %v", lk, ok)
	}
	if _, ok := again.Check("carol", now); ok {
		t.Error("carol is locked without a lock")
	}
	// A lock ends at its Until.
	if _, ok := again.Check("bob", now.Add(30*time.Minute)); ok {
		t.Error("bob is still locked at the lock's end")
	}
	if got := again.Active(now.Add(45 * time.Minute)); len(got) != 1 || got[0].Sub != "alice" {
		t.Errorf("Active 45 min later = %+v, want alice's only", got)
	}
	// A new lock of the same person replaces the old; one in the past
	// lifts it.
	if err := again.Lock("alice", now.Add(-time.Second), "lifted", "soc@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, ok := again.Check("alice", now); ok {
		t.Error("alice still locked after a lock in the past replaced hers")
	}
	third, err := session.OpenLocks(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := third.Active(now); len(got) != 1 || got[0].Sub != "bob" {
		t.Errorf("on disk after the lift: %+v, want bob's only", got)
	}
}

func TestLocksRefuseUnreadableFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "locks.json")
	if err := os.WriteFile(file, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Failing open, not starting without the locks, is what keeps a
	// locked person out.
	if _, err := session.OpenLocks(file); err == nil {
		t.Fatal("OpenLocks accepted a corrupt file")
	}
}

func TestLockNeedsSubject(t *testing.T) {
	l, err := session.OpenLocks(filepath.Join(t.TempDir(), "locks.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Lock("", time.Now().Add(time.Hour), "r", "b"); err == nil {
		t.Error("a lock without a subject was accepted")
	}
}
