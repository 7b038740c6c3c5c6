// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Types shared by the lineage programs (lineage.c) and the Go loader. bpf2go
// generates the Go side from these definitions, so keep them fixed-size and
// padded explicitly.
#pragma once

// Bounds on what one exec event carries. Longer values are cut and the event
// is flagged, never silently shortened.
#define LINEAGE_PATH_MAX 256
#define LINEAGE_ARGS_MAX 1024

enum lineage_kind {
	LINEAGE_FORK = 1,
	LINEAGE_EXEC = 2,
	LINEAGE_EXIT = 3,
};

// Event flags.
#define LINEAGE_F_ARGS_TRUNCATED 1
#define LINEAGE_F_PATH_TRUNCATED 2
// The exec'ing process was never seen forking (it predates the programs):
// its previous image is the one the agent seeds from /proc.
#define LINEAGE_F_NO_FORK_RECORD 4
// The task storage entry could not be created: the image number restarts.
#define LINEAGE_F_NO_STORAGE 8
// The exec came from a thread other than the group leader, whose record
// was not carried over.
#define LINEAGE_F_THREAD_EXEC 16
// The process is tracked with its descendants (TASK_F_INHERIT): it runs in
// a login session, descends from such a process, or touched a target.
#define LINEAGE_F_INHERIT 32

// image_ref names one process image: the process (tgid and its start time,
// CLOCK_BOOTTIME ns, as /proc's starttime is derived from) and how many
// execs it has made since the programs first saw it.
struct image_ref {
	__u32 tgid;
	__u32 image;
	__u64 start_ns;
};

// Per-process record, kept in task storage on the thread-group leader.
struct task_lineage {
	struct image_ref fork_parent; // the image that forked this process
	__u32 image;                  // 0 = as forked (or as found), n = after n execs
	__u32 flags;                  // TASK_F_*
};

// The programs saw this process fork, so image 0 is a copy of the parent's
// image rather than an image of its own.
#define TASK_F_FORKED 1
// The process is tracked: its forks, execs and exit are reported. Only
// tracked processes (and processes in a login session, which become
// tracked) reach the ring buffer; the rest of the host costs a lookup.
#define TASK_F_TRACKED 2
// Its children are tracked too (with this flag). Set for processes in a
// login session and for processes the agent marks when they touch a
// target; not for their ancestors, which are tracked for their own events
// only (tracking pid 1's children would track the whole host).
#define TASK_F_INHERIT 4
// A record on a non-leader thread, holding only its process's tracking
// flags, so an exec from that thread (which makes it the leader) stays
// tracked.
#define TASK_F_THREAD 8

struct lineage_config {
	__u64 sessions_cgroup_id; // cgroup whose children are login sessions; 0 = none
	__u32 sessions_level;     // its depth in the cgroup v2 hierarchy
	__u32 pad;
};

struct lineage_event {
	__u32 kind;  // enum lineage_kind
	__u32 flags; // LINEAGE_F_*
	__u32 pid;   // thread id that triggered the event
	__u32 tgid;
	__u32 ppid;  // real parent's tgid
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 egid;
	__s32 exit_code; // wait status: exit status << 8 | terminating signal
	__u64 cgroup_id;
	__u64 session_cgroup_id; // login-session cgroup the task is in; 0 = none
	__u64 time_ns;           // CLOCK_BOOTTIME
	struct image_ref self;
	struct image_ref parent;
	__u16 path_len; // bytes of data holding the binary path, no NUL
	__u16 args_len; // bytes of data after the path: argv, NUL-separated
	__u32 pad;
	char data[LINEAGE_PATH_MAX + LINEAGE_ARGS_MAX];
};

enum lineage_counter {
	LINEAGE_C_FORK_LOST = 0,
	LINEAGE_C_EXEC_LOST = 1,
	LINEAGE_C_EXIT_LOST = 2,
	// Subsets of the above: lost events of processes in a login session.
	LINEAGE_C_FORK_LOST_SESSION = 3,
	LINEAGE_C_EXEC_LOST_SESSION = 4,
	LINEAGE_C_EXIT_LOST_SESSION = 5,
	LINEAGE_C_STORAGE_FAILED = 6,
	LINEAGE_C_EVENTS = 7,
	LINEAGE_C_MAX = 8,
};
