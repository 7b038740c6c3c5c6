// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// Warden's process lineage.
//
// tp_btf programs on sched_process_fork, sched_process_exec and
// sched_process_exit report the births, new images and deaths of the
// processes that matter into a ring buffer. The tracepoints are global, so
// the programs filter in the kernel: a process is reported only if it is
// tracked, a flag in its task storage record. A process is tracked if
//   - it runs in a login session (a child of the sessions cgroup), or was
//     forked by a process tracked with TASK_F_INHERIT: it and its
//     descendants are tracked;
//   - the agent marked it (by pidfd): at start-up the processes in login
//     sessions (with their descendants) and their ancestors (their own
//     events only: tracking pid 1's children would track the host); later
//     any process that touches a target, with its descendants.
// Everything else costs a task storage lookup and a cgroup check per fork
// or exec and never reaches user space.
//
// Each process image is named by its process (tgid plus start time) and an
// image number kept in task storage: 0 as forked (or as first tracked),
// incremented by every exec while tracked. The storage map is pinned, so an
// agent that restarts reads the current image number of every tracked
// process back (by pidfd) and names it exactly as the kernel did before.
// Every event that cannot be delivered is counted.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "lineage.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// Deepest cgroup level the sessions directory may sit at.
#define MAX_CGROUP_LEVEL 64

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_lineage);
} lineage_tasks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} lineage_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LINEAGE_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} lineage_counters SEC(".maps");

// What the agent has already reported of lineage_counters, so losses that
// happen while it is down are reported exactly once after it restarts.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LINEAGE_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} lineage_reported SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lineage_config);
} lineage_conf SEC(".maps");

// Scratch space for building one event: it is too large for the stack, and
// building it here lets the ring buffer take only the bytes in use.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lineage_event);
} lineage_scratch SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&lineage_counters, &which);
	if (v)
		*v += 1;
}

// task_cgroups reports t's cgroup v2 id and, if that cgroup is a login
// session or below one, the session cgroup's id.
static __always_inline void task_cgroups(struct task_struct *t, __u64 *cgroup_id, __u64 *session_id)
{
	struct cgroup *cg = BPF_CORE_READ(t, cgroups, dfl_cgrp);
	*cgroup_id = BPF_CORE_READ(cg, kn, id);
	*session_id = 0;

	__u32 zero = 0;
	struct lineage_config *conf = bpf_map_lookup_elem(&lineage_conf, &zero);
	if (!conf || !conf->sessions_cgroup_id)
		return;
	__u32 lvl = conf->sessions_level;
	int level = BPF_CORE_READ(cg, level);
	if (lvl >= MAX_CGROUP_LEVEL || level <= (int)lvl)
		return;
	// cgroup->ancestors[i] is the ancestor at level i; [level] is cg itself.
	void *ancestors = (void *)cg + bpf_core_field_offset(struct cgroup, ancestors);
	struct cgroup *dir = 0, *session = 0;
	bpf_probe_read_kernel(&dir, sizeof(dir), ancestors + lvl * sizeof(dir));
	bpf_probe_read_kernel(&session, sizeof(session), ancestors + (lvl + 1) * sizeof(session));
	if (!dir || !session || BPF_CORE_READ(dir, kn, id) != conf->sessions_cgroup_id)
		return;
	*session_id = BPF_CORE_READ(session, kn, id);
}

static __always_inline struct lineage_event *new_event(__u32 kind, struct task_struct *t, __u64 cgroup_id,
						       __u64 session_id)
{
	__u32 zero = 0;
	struct lineage_event *e = bpf_map_lookup_elem(&lineage_scratch, &zero);
	if (!e)
		return 0;
	e->kind = kind;
	e->flags = 0;
	e->pid = BPF_CORE_READ(t, pid);
	e->tgid = BPF_CORE_READ(t, tgid);
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->uid = BPF_CORE_READ(t, cred, uid.val);
	e->gid = BPF_CORE_READ(t, cred, gid.val);
	e->euid = BPF_CORE_READ(t, cred, euid.val);
	e->egid = BPF_CORE_READ(t, cred, egid.val);
	e->exit_code = 0;
	e->cgroup_id = cgroup_id;
	e->session_cgroup_id = session_id;
	e->path_len = 0;
	e->args_len = 0;
	e->pad = 0;
	return e;
}

// send copies the used part of e into the ring buffer, or counts the loss.
static __always_inline void send(struct lineage_event *e, __u32 lost, __u32 lost_session)
{
	__u32 used = e->path_len + e->args_len;
	if (used > LINEAGE_PATH_MAX + LINEAGE_ARGS_MAX)
		used = LINEAGE_PATH_MAX + LINEAGE_ARGS_MAX;
	// Stamped last, right before the copy, so event times follow ring order
	// closely; the agent relies on that to know which events it has seen.
	e->time_ns = bpf_ktime_get_boot_ns();
	if (bpf_ringbuf_output(&lineage_events, e, offsetof(struct lineage_event, data) + used, 0)) {
		count(lost);
		if (e->session_cgroup_id)
			count(lost_session);
		return;
	}
	count(LINEAGE_C_EVENTS);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(lineage_fork, struct task_struct *parent, struct task_struct *child)
{
	// Direct dereference keeps the pointer trusted, as task storage needs.
	struct task_struct *leader = parent->group_leader;
	struct task_lineage *pl = bpf_task_storage_get(&lineage_tasks, leader, 0, 0);
	__u32 pflags = pl ? pl->flags : 0;

	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid)) {
		// Threads share their process's lineage. A thread of a tracked
		// process carries the tracking, so an exec from it (which makes
		// it the leader) is still reported.
		if (!(pflags & TASK_F_TRACKED))
			return 0;
		struct task_lineage *th = bpf_task_storage_get(&lineage_tasks, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!th) {
			count(LINEAGE_C_STORAGE_FAILED);
			return 0;
		}
		th->image = 0;
		th->flags = (pflags & (TASK_F_TRACKED | TASK_F_INHERIT)) | TASK_F_THREAD;
		return 0;
	}

	__u64 cgroup_id, session_id;
	task_cgroups(child, &cgroup_id, &session_id);
	if (!(pflags & TASK_F_INHERIT) && !session_id)
		return 0; // untracked: nothing leaves the kernel

	struct image_ref pref = {
		.tgid = BPF_CORE_READ(leader, tgid),
		.image = pl ? pl->image : 0,
		.start_ns = BPF_CORE_READ(leader, start_boottime),
	};

	struct task_lineage *cl = bpf_task_storage_get(&lineage_tasks, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (cl) {
		cl->fork_parent = pref;
		cl->image = 0;
		cl->flags = TASK_F_FORKED | TASK_F_TRACKED | TASK_F_INHERIT;
	} else {
		count(LINEAGE_C_STORAGE_FAILED);
	}

	struct lineage_event *e = new_event(LINEAGE_FORK, child, cgroup_id, session_id);
	if (!e)
		return 0;
	e->flags |= LINEAGE_F_INHERIT;
	if (!cl)
		e->flags |= LINEAGE_F_NO_STORAGE;
	e->self.tgid = e->tgid;
	e->self.image = 0;
	e->self.start_ns = BPF_CORE_READ(child, start_boottime);
	e->parent = pref;
	send(e, LINEAGE_C_FORK_LOST, LINEAGE_C_FORK_LOST_SESSION);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(lineage_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct task_lineage *tl = bpf_task_storage_get(&lineage_tasks, p, 0, 0);
	__u32 tracking = tl ? tl->flags & (TASK_F_TRACKED | TASK_F_INHERIT) : 0;
	__u64 cgroup_id, session_id;
	task_cgroups(p, &cgroup_id, &session_id);
	if (session_id)
		tracking = TASK_F_TRACKED | TASK_F_INHERIT;
	if (!(tracking & TASK_F_TRACKED))
		return 0; // untracked: nothing leaves the kernel

	struct lineage_event *e = new_event(LINEAGE_EXEC, p, cgroup_id, session_id);
	if (!e)
		return 0;
	if (tracking & TASK_F_INHERIT)
		e->flags |= LINEAGE_F_INHERIT;
	// After de_thread() p leads its group and carries the group's start time.
	__u64 start = BPF_CORE_READ(p, start_boottime);
	if (old_pid != e->pid)
		e->flags |= LINEAGE_F_THREAD_EXEC;

	if (!tl)
		tl = bpf_task_storage_get(&lineage_tasks, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tl) {
		count(LINEAGE_C_STORAGE_FAILED);
		e->flags |= LINEAGE_F_NO_STORAGE;
		e->parent.tgid = e->tgid;
		e->parent.image = 0;
		e->parent.start_ns = start;
		e->self = e->parent;
		e->self.image = 1;
	} else {
		if (tl->flags & TASK_F_THREAD) {
			// A thread's record holds only the tracking: the leader's
			// image number went with the leader.
			tl->image = 0;
			tl->flags = 0;
		}
		if (tl->image == 0 && (tl->flags & TASK_F_FORKED)) {
			// The forked copy of the parent is not an image of its own:
			// the new image's parent is the image that forked.
			e->parent = tl->fork_parent;
		} else {
			if (tl->image == 0)
				e->flags |= LINEAGE_F_NO_FORK_RECORD;
			e->parent.tgid = e->tgid;
			e->parent.image = tl->image;
			e->parent.start_ns = start;
		}
		tl->image++;
		tl->flags |= tracking;
		e->self.tgid = e->tgid;
		e->self.image = tl->image;
		e->self.start_ns = start;
	}
	const char *filename = BPF_CORE_READ(bprm, filename);
	long n = bpf_probe_read_kernel_str(e->data, LINEAGE_PATH_MAX, filename);
	if (n > 0) {
		if (n == LINEAGE_PATH_MAX)
			e->flags |= LINEAGE_F_PATH_TRUNCATED;
		e->path_len = (n - 1) & (LINEAGE_PATH_MAX - 1);
	}

	// The new image's argv sits in its fresh stack, just written by exec,
	// so the pages are present and readable without faulting.
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(mm, arg_end);
	if (arg_end > arg_start) {
		unsigned long len = arg_end - arg_start;
		if (len > LINEAGE_ARGS_MAX) {
			len = LINEAGE_ARGS_MAX;
			e->flags |= LINEAGE_F_ARGS_TRUNCATED;
		}
		__u32 off = e->path_len & (LINEAGE_PATH_MAX - 1);
		__u32 alen = len;
		if (alen > LINEAGE_ARGS_MAX)
			alen = LINEAGE_ARGS_MAX;
		if (bpf_probe_read_user(e->data + off, alen, (void *)arg_start) == 0)
			e->args_len = alen;
		else
			e->flags |= LINEAGE_F_ARGS_TRUNCATED;
	}
	send(e, LINEAGE_C_EXEC_LOST, LINEAGE_C_EXEC_LOST_SESSION);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(lineage_exit, struct task_struct *p, bool group_dead)
{
	// Only the last thread's exit ends the process.
	if (!group_dead)
		return 0;
	struct task_struct *leader = p->group_leader;
	struct task_lineage *tl = bpf_task_storage_get(&lineage_tasks, leader, 0, 0);
	if (!tl || !(tl->flags & TASK_F_TRACKED))
		return 0; // untracked: its birth was not reported either
	__u64 cgroup_id, session_id;
	task_cgroups(p, &cgroup_id, &session_id);
	struct lineage_event *e = new_event(LINEAGE_EXIT, p, cgroup_id, session_id);
	if (!e)
		return 0;
	if (tl->flags & TASK_F_INHERIT)
		e->flags |= LINEAGE_F_INHERIT;
	e->exit_code = BPF_CORE_READ(p, exit_code);
	e->self.tgid = e->tgid;
	e->self.image = tl->image;
	e->self.start_ns = BPF_CORE_READ(leader, start_boottime);
	e->parent.tgid = 0;
	e->parent.image = 0;
	e->parent.start_ns = 0;
	send(e, LINEAGE_C_EXIT_LOST, LINEAGE_C_EXIT_LOST_SESSION);
	return 0;
}
