package cgroupv2

// WriteKill lets tests pretend the kernel has no cgroup.kill.
var WriteKill = &writeKill
