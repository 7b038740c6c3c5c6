package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/wardenhq/warden/pkg/cgroupv2"
)

// agentCgroupName is the cgroup under the root that wardend moves itself
// into when it does not already have one of its own.
const agentCgroupName = "warden.agent"

// ownCgroup returns the id of a cgroup that holds wardend alone, for the
// programs to exempt, so the proxy's upstream dials are never redirected
// back into it. Under systemd the unit's cgroup already is one, and
// wardend stays there so systemd keeps tracking it; otherwise (a shell, a
// test, a container's shared cgroup) wardend moves into
// <root>/warden.agent. Exempting a shared cgroup would exempt everyone in
// it, so that is never done.
func ownCgroup(root string) (uint64, error) {
	mount, err := cgroupv2.Mount()
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	current, err := cgroupv2.PathOf(mount, self)
	if err != nil {
		return 0, err
	}
	sessions := filepath.Join(root, sessionsCgroupName)
	if procs, err := cgroupv2.Procs(current); err == nil && len(procs) == 1 && procs[0] == self &&
		current != mount && !strings.HasPrefix(current+"/", sessions+"/") {
		return cgroupv2.ID(current)
	}
	dir := filepath.Join(root, agentCgroupName)
	if err := cgroupv2.Create(dir); err != nil {
		return 0, err
	}
	if err := cgroupv2.Move(dir, self); err != nil {
		return 0, fmt.Errorf("move wardend into its own cgroup: %w", err)
	}
	return cgroupv2.ID(dir)
}
