// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// Warden's connect-time enforcement.
//
// cgroup/connect4 and cgroup/connect6 look the destination up in the target
// table. Connections to anything else are left alone. For a target, the
// caller's login-session cgroup decides:
//   - bound and allowed: the destination is rewritten to the agent's proxy and
//     the original destination plus attribution is kept in socket storage;
//   - bound but not allowed (no access entry, or a just-in-time entry whose
//     window has ended), or unbound on a protocol without an error message
//     of its own: connect() fails with EPERM and a denial is reported;
//   - unbound on a protocol with its own error message: redirected to the
//     proxy, which answers with that error and never dials the target.
//
// sockops copies the socket storage into a map keyed by the client's local
// address once the connection is established. That happens before the client
// sends its final ACK, so the entry exists before the proxy can accept().

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "warden.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define EPERM_VERDICT 0
#define ALLOW_VERDICT 1

// Maximum cgroup nesting searched for a session binding.
#define MAX_CGROUP_DEPTH 32

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct target_key);
	__type(value, struct target_value);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); // session cgroup id
	__type(value, struct binding);
} bindings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1048576);
	__type(key, struct access_key);
	__type(value, struct access_value);
} access SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64); // cgroup id whose connections are never touched
	__type(value, __u8);
} exempt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proxy_config);
} proxy_conf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_info);
} sk_conn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn_info);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} denials SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);
	if (v)
		*v += 1;
}

// find_binding returns the deepest login-session binding among the caller's
// cgroup and its ancestors.
static __always_inline struct binding *find_binding(__u64 *session_cgroup)
{
	__u64 id = bpf_get_current_cgroup_id();
	struct binding *b = bpf_map_lookup_elem(&bindings, &id);
	if (b) {
		*session_cgroup = id;
		return b;
	}
	for (int level = MAX_CGROUP_DEPTH - 1; level >= 0; level--) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			continue;
		b = bpf_map_lookup_elem(&bindings, &id);
		if (b) {
			*session_cgroup = id;
			return b;
		}
	}
	return 0;
}

static __always_inline void report_denial(const struct conn_info *ci)
{
	struct denial *d = bpf_ringbuf_reserve(&denials, sizeof(*d), 0);
	if (!d) {
		count(COUNTER_DENIAL_LOST);
		return;
	}
	d->info = *ci;
	bpf_get_current_comm(d->comm, sizeof(d->comm));
	bpf_ringbuf_submit(d, 0);
}

// decide runs the policy for a connection whose destination is addr:port
// (addr in IPv4-mapped form for IPv4). It returns the verdict; on a redirect
// it sets *out to the socket's stored record and the caller rewrites the
// destination.
static __always_inline int decide(struct bpf_sock_addr *ctx, const __u8 addr[16], __u16 port_be,
				  struct conn_info **out)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	if (bpf_map_lookup_elem(&exempt, &cgid))
		return ALLOW_VERDICT;

	struct target_key key = {.prefixlen = TARGET_KEY_BITS, .port = port_be};
	__builtin_memcpy(key.addr, addr, 16);
	struct target_value *t = bpf_map_lookup_elem(&targets, &key);
	if (!t)
		return ALLOW_VERDICT; // not a target: untouched

	struct conn_info ci = {};
	__builtin_memcpy(ci.orig_addr, addr, 16);
	ci.orig_port = port_be;
	ci.target_id = t->target_id;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	ci.tgid = pid_tgid >> 32;
	ci.pid = (__u32)pid_tgid;
	__u64 uid_gid = bpf_get_current_uid_gid();
	ci.uid = (__u32)uid_gid;
	ci.gid = uid_gid >> 32;
	ci.cgroup_id = cgid;
	ci.time_ns = bpf_ktime_get_boot_ns();

	__u64 session_cgroup = 0;
	struct binding *b = find_binding(&session_cgroup);
	if (b && b->expires_ns && ci.time_ns >= b->expires_ns) {
		ci.verdict = VERDICT_EXPIRED;
		b = 0;
	}
	if (b) {
		ci.identity_id = b->identity_id;
		ci.session_cgroup_id = session_cgroup;
		struct access_key ak = {.identity_id = b->identity_id, .target_id = t->target_id};
		struct access_value *av = bpf_map_lookup_elem(&access, &ak);
		if (!av || (av->expires_ns && ci.time_ns >= av->expires_ns)) {
			ci.verdict = VERDICT_NOT_ALLOWED;
			count(COUNTER_DENIED);
			report_denial(&ci);
			return EPERM_VERDICT;
		}
		ci.verdict = VERDICT_ALLOWED;
	} else {
		if (ci.verdict != VERDICT_EXPIRED)
			ci.verdict = VERDICT_UNBOUND;
		if (!(t->flags & TARGET_F_PROTOCOL_ERRORS)) {
			count(COUNTER_DENIED);
			report_denial(&ci);
			return EPERM_VERDICT;
		}
	}

	struct conn_info *stored = bpf_sk_storage_get(&sk_conn, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!stored) {
		// Without storage the proxy could not attribute the connection.
		// Fail closed.
		count(COUNTER_STORAGE_FAILED);
		ci.verdict = VERDICT_NO_STORAGE;
		report_denial(&ci);
		return EPERM_VERDICT;
	}
	*stored = ci;
	*out = stored;
	count(COUNTER_REDIRECTED);
	return ALLOW_VERDICT;
}

// set_user_ip6 writes a 16-byte address into the context word by word: the
// verifier allows only 4-byte accesses to user_ip6.
static __always_inline void set_user_ip6(struct bpf_sock_addr *ctx, const __u8 a[16])
{
	__u32 w0, w1, w2, w3;
	__builtin_memcpy(&w0, &a[0], 4);
	__builtin_memcpy(&w1, &a[4], 4);
	__builtin_memcpy(&w2, &a[8], 4);
	__builtin_memcpy(&w3, &a[12], 4);
	ctx->user_ip6[0] = w0;
	ctx->user_ip6[1] = w1;
	ctx->user_ip6[2] = w2;
	ctx->user_ip6[3] = w3;
}

// proxy returns where redirected connections go, or NULL (counted) if the
// agent has not said yet: then the connection is refused, never let through.
static __always_inline struct proxy_config *proxy(void)
{
	__u32 zero = 0;
	struct proxy_config *pc = bpf_map_lookup_elem(&proxy_conf, &zero);
	if (!pc || !pc->port) {
		count(COUNTER_NO_PROXY);
		return 0;
	}
	return pc;
}

SEC("cgroup/connect4")
int warden_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return ALLOW_VERDICT;
	__u8 addr[16] = {};
	addr[10] = 0xff;
	addr[11] = 0xff;
	__u32 ip = ctx->user_ip4;
	__builtin_memcpy(&addr[12], &ip, 4);

	struct conn_info *ci = 0;
	int verdict = decide(ctx, addr, (__u16)ctx->user_port, &ci);
	if (verdict != ALLOW_VERDICT || !ci)
		return verdict;

	struct proxy_config *pc = proxy();
	if (!pc)
		return EPERM_VERDICT;
	ctx->user_ip4 = pc->addr4;
	ctx->user_port = pc->port;
	return ALLOW_VERDICT;
}

SEC("cgroup/connect6")
int warden_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return ALLOW_VERDICT;
	__u8 addr[16];
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
	__builtin_memcpy(&addr[0], &w0, 4);
	__builtin_memcpy(&addr[4], &w1, 4);
	__builtin_memcpy(&addr[8], &w2, 4);
	__builtin_memcpy(&addr[12], &w3, 4);

	struct conn_info *ci = 0;
	int verdict = decide(ctx, addr, (__u16)ctx->user_port, &ci);
	if (verdict != ALLOW_VERDICT || !ci)
		return verdict;

	struct proxy_config *pc = proxy();
	if (!pc)
		return EPERM_VERDICT;
	// An IPv4-mapped destination means the socket speaks IPv4 on the wire,
	// so it must go to the IPv4 proxy listener in mapped form.
	int mapped = w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff);
	if (mapped) {
		__u8 proxy4[16] = {};
		proxy4[10] = 0xff;
		proxy4[11] = 0xff;
		__builtin_memcpy(&proxy4[12], &pc->addr4, 4);
		set_user_ip6(ctx, proxy4);
	} else {
		set_user_ip6(ctx, (const __u8 *)pc->addr6);
	}
	ctx->user_port = pc->port;
	return ALLOW_VERDICT;
}

SEC("sockops")
int warden_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 1;
	struct conn_info *ci = bpf_sk_storage_get(&sk_conn, sk, 0, 0);
	if (!ci)
		return 1;

	struct conn_key key = {};
	if (skops->family == AF_INET) {
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__u32 ip = skops->local_ip4;
		__builtin_memcpy(&key.addr[12], &ip, 4);
	} else {
		__u32 w0 = skops->local_ip6[0], w1 = skops->local_ip6[1], w2 = skops->local_ip6[2],
		      w3 = skops->local_ip6[3];
		__builtin_memcpy(&key.addr[0], &w0, 4);
		__builtin_memcpy(&key.addr[4], &w1, 4);
		__builtin_memcpy(&key.addr[8], &w2, 4);
		__builtin_memcpy(&key.addr[12], &w3, 4);
	}
	key.port = (__u16)skops->local_port; // host byte order
	if (bpf_map_update_elem(&conns, &key, ci, BPF_ANY))
		count(COUNTER_CONN_LOST);
	return 1;
}

// The getpeername hooks give a redirected socket its original destination
// back, so the client sees the address it dialled, not the proxy's. Clients
// that reuse the peer address, such as pgx dialling it for a PostgreSQL
// CancelRequest, then reach the target again through the same checks.
SEC("cgroup/getpeername4")
int warden_getpeername4(struct bpf_sock_addr *ctx)
{
	struct conn_info *ci = bpf_sk_storage_get(&sk_conn, ctx->sk, 0, 0);
	if (!ci)
		return 1;
	__u32 ip;
	__builtin_memcpy(&ip, &ci->orig_addr[12], 4);
	ctx->user_ip4 = ip;
	ctx->user_port = ci->orig_port;
	return 1;
}

SEC("cgroup/getpeername6")
int warden_getpeername6(struct bpf_sock_addr *ctx)
{
	struct conn_info *ci = bpf_sk_storage_get(&sk_conn, ctx->sk, 0, 0);
	if (!ci)
		return 1;
	set_user_ip6(ctx, ci->orig_addr);
	ctx->user_port = ci->orig_port;
	return 1;
}
