package daemon

import (
	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/pkg/event"
)

// attribute describes the process behind a kernel record for an event;
// see lineage.Tracker.Attribute.
func (d *Daemon) attribute(pid, uid uint32, bootNs, sessionCgroupID uint64) (*event.Process, map[string]any) {
	return d.lineage.Attribute(pid, uid, bootNs, sessionCgroupID)
}

// sessionByCgroup returns the bound session whose cgroup is id.
func (d *Daemon) sessionByCgroup(id uint64) *session.Session {
	if id == 0 {
		return nil
	}
	m := d.sessionCgroups.Load()
	if m == nil {
		return nil
	}
	return (*m)[id]
}

// sessionIdentity is the identity bound to session cgroup id, or nil; the
// lineage tracker asks for every process event.
func (d *Daemon) sessionIdentity(id uint64) *event.Identity {
	if s := d.sessionByCgroup(id); s != nil {
		return identityOf(s)
	}
	return nil
}

// setSessions refreshes the cgroup → session index the lineage tracker
// consults for every event, so it never takes the session manager's lock.
func (d *Daemon) setSessions(list []*session.Session) {
	m := make(map[uint64]*session.Session, len(list))
	for _, s := range list {
		m[s.CgroupID] = s
	}
	d.sessionCgroups.Store(&m)
}
