// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Types shared by the BPF programs and the Go loader (bpf2go generates the Go
// side from these definitions, so keep them fixed-size and padded explicitly).
#pragma once

// Bits of a full target key: 16 port bits plus 128 address bits.
#define TARGET_KEY_BITS (16 + 128)

// target_key is an LPM key: the port must match exactly, then the address
// (IPv4 in IPv4-mapped IPv6 form) by prefix, which lets one entry cover a
// CIDR or a whole loopback range.
struct target_key {
	__u32 prefixlen;
	__u16 port; // network byte order
	__u8 addr[16];
	__u8 pad[2];
};

// The protocol can carry an error message of its own, so unbound clients
// are redirected to the proxy to be told why instead of getting EPERM.
#define TARGET_F_PROTOCOL_ERRORS 1

struct target_value {
	__u32 target_id;
	__u32 flags;
};

struct binding {
	__u32 identity_id;
	__u32 pad;
	__u64 expires_ns; // CLOCK_BOOTTIME; 0 = never
};

struct access_key {
	__u32 identity_id;
	__u32 target_id;
};

// access_value bounds an access entry in time: a just-in-time grant lapses
// in the kernel at its window's end, without waiting for the agent.
struct access_value {
	__u64 expires_ns; // CLOCK_BOOTTIME; 0 = never
};

struct proxy_config {
	__u32 addr4;    // network byte order
	__u32 addr6[4]; // network byte order
	__u16 port;     // network byte order
	__u16 pad;
};

enum verdict {
	VERDICT_NONE = 0,
	VERDICT_ALLOWED = 1,
	VERDICT_UNBOUND = 2,
	VERDICT_NOT_ALLOWED = 3,
	VERDICT_EXPIRED = 4,
	VERDICT_NO_STORAGE = 5,
};

struct conn_info {
	__u8 orig_addr[16]; // IPv4-mapped for IPv4
	__u16 orig_port;    // network byte order
	__u16 pad;
	__u32 verdict;
	__u32 target_id;
	__u32 identity_id;
	__u32 pid;
	__u32 tgid;
	__u32 uid;
	__u32 gid;
	__u64 cgroup_id;
	__u64 session_cgroup_id;
	__u64 time_ns; // CLOCK_BOOTTIME
};

struct conn_key {
	__u8 addr[16]; // client's local address, IPv4-mapped for IPv4
	__u16 port;    // client's local port, host byte order
	__u16 pad;
};

struct denial {
	struct conn_info info;
	char comm[16];
};

enum counter {
	COUNTER_REDIRECTED = 0,
	COUNTER_DENIED = 1,
	COUNTER_DENIAL_LOST = 2,
	COUNTER_STORAGE_FAILED = 3,
	COUNTER_NO_PROXY = 4,
	COUNTER_CONN_LOST = 5,
	COUNTER_MAX = 6,
};
