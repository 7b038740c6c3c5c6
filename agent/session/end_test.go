package session_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wardenhq/warden/agent/session"
)

func TestEndAndNextExpiry(t *testing.T) {
	f := open(t)
	if _, ok := f.m.NextExpiry(); ok {
		t.Error("NextExpiry without sessions reports one")
	}
	a, b := startShell(t, f.root), startShell(t, f.root)
	now := time.Now()
	s1, _, err := f.m.Login(session.Peer{PID: a.spawn(t), UID: 0}, alice, now.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s2, _, err := f.m.Login(session.Peer{PID: b.spawn(t), UID: 0}, bob, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if next, ok := f.m.NextExpiry(); !ok || !next.Equal(s2.Expires) {
		t.Errorf("NextExpiry = %v, %v; want bob's %v", next, ok, s2.Expires)
	}
	if got, ok := f.m.Get(s1.ID); !ok || got.ID != s1.ID {
		t.Errorf("Get(%s) = %+v, %v", s1.ID, got, ok)
	}
	f.k.takeOps()

	// End unbinds at once, expiry notwithstanding, and forgets it.
	ended, err := f.m.End(s2.ID)
	if err != nil || ended.ID != s2.ID {
		t.Fatalf("End = %+v, %v", ended, err)
	}
	if ops := f.k.takeOps(); !slices.Equal(ops, []string{fmt.Sprint("delete ", s2.CgroupID)}) {
		t.Errorf("kernel ops %q, want the binding deleted", ops)
	}
	if _, ok := f.k.binding(s2.CgroupID); ok {
		t.Error("binding still in the kernel")
	}
	if _, ok := f.m.Get(s2.ID); ok {
		t.Error("Get finds the ended session")
	}
	if _, ids := readState(t, f.state); !slices.Equal(ids, []string{s1.ID}) {
		t.Errorf("state after End: %v", ids)
	}
	if next, ok := f.m.NextExpiry(); !ok || !next.Equal(s1.Expires) {
		t.Errorf("NextExpiry after End = %v, %v; want alice's", next, ok)
	}
	// Its processes are the caller's to kill: End leaves them be.
	if pid := b.pid(); pathOf(t, pid) != ended.Cgroup {
		t.Errorf("shell %d moved out of the ended session's cgroup", pid)
	}
	if _, err := f.m.End(s2.ID); !errors.Is(err, session.ErrNoSession) {
		t.Errorf("second End = %v, want ErrNoSession", err)
	}
}
