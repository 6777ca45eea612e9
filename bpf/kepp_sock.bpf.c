// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Connect-time steering: cgroup/connect4/6 rewrite a connection aimed at a
 * fast-path VIP:port to a backend from the table userspace publishes, and
 * cgroup/getpeername4/6 show the application the VIP again. A connection the
 * table cannot decide (stale, empty, all shed) keeps the VIP and takes the
 * fallback path (sk_lookup -> kepp's userspace proxy). Every error fails
 * open: the connect proceeds untouched. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/compat.h"
#include "lib/maps.h"

#define KEPP_LIVE_INFLIGHT(a) kepp_live_inflight(a)

static __always_inline __s64 kepp_live_inflight(const struct kepp_addr *a)
{
	struct kepp_be_stats *st = bpf_map_lookup_elem(&kepp_be_v1, a);

	return st ? st->inflight : 0;
}

#include "lib/pick.h"

static __always_inline void count_verdict(__u32 v)
{
	__u64 *c = bpf_map_lookup_elem(&kepp_verdict_v1, &v);

	if (c)
		*c += 1;
}

static __always_inline int is_v4mapped(const struct kepp_addr *a)
{
	return a->ip[0] == 0 && a->ip[1] == 0 && a->ip[2] == KEPP_V4MAPPED_PREFIX;
}

struct aff_find {
	const struct kepp_svc *svc;
	const struct kepp_addr *want;
	int idx;
};

static long aff_find_one(__u32 i, void *arg)
{
	struct aff_find *f = arg;

	if (i >= KEPP_MAX_BACKENDS)
		return 1;
	if (kepp_addr_eq(&f->svc->be[i].addr, f->want)) {
		f->idx = (int)i;
		return 1;
	}
	return 0;
}

/* Index of the client's previous pod |prev| in |svc|, or -1. Through
 * bpf_loop: from a plain loop the index would reach the pick as one of 32
 * constants, and the verifier would walk the pick's loop once for each
 * (78% of its million-instruction budget); bpf_loop's index is opaque. */
static __always_inline int affinity_index(const struct kepp_svc *svc,
					  const struct kepp_aff_val *prev)
{
	struct aff_find f = {.svc = svc, .want = &prev->backend, .idx = -1};
	__u32 n = svc->n_backends;

	bpf_loop(n < KEPP_MAX_BACKENDS ? n : KEPP_MAX_BACKENDS, aff_find_one, &f, 0);
	return f.idx;
}

/* Picks a backend for |key| and records the socket's state; *out is the
 * backend to write into the context. Returns 0 when the connection is
 * steered, else a negative value (leave the destination alone). */
static __always_inline int steer(struct bpf_sock_addr *ctx, const struct kepp_svc_key *key,
				 int v4_only, struct kepp_addr *out)
{
	struct kepp_aff_key ak = {};
	struct kepp_aff_val *prev;
	struct kepp_sk_state *st;
	struct kepp_svc *svc;
	__u32 idx = 0;
	int aff = -1, v;
	__u64 now;

	svc = bpf_map_lookup_elem(&kepp_svc_v1, key);
	if (!svc)
		return -1;
	/* Helpers cost: the client's cgroup only matters for affinity. */
	if (svc->flags & KEPP_SVC_AFFINITY) {
		ak.cgroup_id = bpf_get_current_cgroup_id();
		ak.svc_id = svc->id;
		prev = bpf_map_lookup_elem(&kepp_aff_v1, &ak);
		if (prev)
			aff = affinity_index(svc, prev);
	}
	now = bpf_ktime_get_ns();
	v = kepp_pick(svc, now, bpf_get_prandom_u32(), aff, &idx);
	count_verdict((__u32)v);
	if (v != KEPP_PICKED || idx >= KEPP_MAX_BACKENDS)
		return -1;
	/* clang merges the two tests above into one the verifier cannot bound
	 * idx with; the mask (KEPP_MAX_BACKENDS is a power of two) can, and the
	 * barrier keeps clang from dropping it as redundant. */
	barrier_var(idx);
	idx &= KEPP_MAX_BACKENDS - 1;
	*out = svc->be[idx].addr;
	/* An AF_INET socket can only reach an IPv4 backend; userspace publishes
	 * one family per VIP, so this only guards against a bad table. */
	if (v4_only && !is_v4mapped(out))
		return -1;
	st = bpf_sk_storage_get(&kepp_sk_v1, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return -1;
	st->vip = key->vip;
	st->backend = *out;
	st->svc_id = svc->id;
	st->flags = KEPP_SK_STEERED;
	if (svc->flags & KEPP_SVC_AFFINITY) {
		struct kepp_aff_val av = {.backend = *out, .last_ns = now};

		bpf_map_update_elem(&kepp_aff_v1, &ak, &av, BPF_ANY);
	}
	return 0;
}

/* user_port is a 4-byte field holding the port in its low 16 bits (network
 * order); narrow loads of it are not allowed everywhere. */
static __always_inline __u16 ctx_port(const struct bpf_sock_addr *ctx)
{
	volatile __u32 p = ctx->user_port;

	return (__u16)p;
}

SEC("cgroup/connect4")
int kepp_connect4(struct bpf_sock_addr *ctx)
{
	struct kepp_svc_key key = {};
	struct kepp_addr be;

	if (ctx->type != 1 /* SOCK_STREAM */)
		return SYS_PROCEED;
	key.vip.ip[2] = KEPP_V4MAPPED_PREFIX;
	key.vip.ip[3] = ctx->user_ip4;
	key.vip.port = ctx_port(ctx);
	if (steer(ctx, &key, 1, &be) < 0)
		return SYS_PROCEED;
	ctx->user_ip4 = be.ip[3];
	ctx->user_port = be.port;
	return SYS_PROCEED;
}

SEC("cgroup/connect6")
int kepp_connect6(struct bpf_sock_addr *ctx)
{
	struct kepp_svc_key key = {};
	struct kepp_addr be;

	if (ctx->type != 1 /* SOCK_STREAM */)
		return SYS_PROCEED;
	/* Word by word: the verifier allows only 4- or 8-byte access here. */
	key.vip.ip[0] = ctx->user_ip6[0];
	key.vip.ip[1] = ctx->user_ip6[1];
	key.vip.ip[2] = ctx->user_ip6[2];
	key.vip.ip[3] = ctx->user_ip6[3];
	key.vip.port = ctx_port(ctx);
	/* A v4-mapped VIP is the IPv4 service; its backends are v4-mapped too,
	 * which a dual-stack socket reaches. */
	if (steer(ctx, &key, 0, &be) < 0)
		return SYS_PROCEED;
	ctx->user_ip6[0] = be.ip[0];
	ctx->user_ip6[1] = be.ip[1];
	ctx->user_ip6[2] = be.ip[2];
	ctx->user_ip6[3] = be.ip[3];
	ctx->user_port = be.port;
	return SYS_PROCEED;
}

/* The steered socket's state, when the peer is still its backend. */
static __always_inline struct kepp_sk_state *steered(struct bpf_sock_addr *ctx,
						     const struct kepp_addr *peer)
{
	struct kepp_sk_state *st = bpf_sk_storage_get(&kepp_sk_v1, ctx->sk, 0, 0);

	if (!st || !(st->flags & KEPP_SK_STEERED) || !kepp_addr_eq(&st->backend, peer))
		return 0;
	return st;
}

SEC("cgroup/getpeername4")
int kepp_getpeer4(struct bpf_sock_addr *ctx)
{
	struct kepp_addr peer = {};
	struct kepp_sk_state *st;

	peer.ip[2] = KEPP_V4MAPPED_PREFIX;
	peer.ip[3] = ctx->user_ip4;
	peer.port = ctx_port(ctx);
	st = steered(ctx, &peer);
	if (st) {
		ctx->user_ip4 = st->vip.ip[3];
		ctx->user_port = st->vip.port;
	}
	return SYS_PROCEED;
}

SEC("cgroup/getpeername6")
int kepp_getpeer6(struct bpf_sock_addr *ctx)
{
	struct kepp_addr peer = {};
	struct kepp_sk_state *st;

	peer.ip[0] = ctx->user_ip6[0];
	peer.ip[1] = ctx->user_ip6[1];
	peer.ip[2] = ctx->user_ip6[2];
	peer.ip[3] = ctx->user_ip6[3];
	peer.port = ctx_port(ctx);
	st = steered(ctx, &peer);
	if (st) {
		ctx->user_ip6[0] = st->vip.ip[0];
		ctx->user_ip6[1] = st->vip.ip[1];
		ctx->user_ip6[2] = st->vip.ip[2];
		ctx->user_ip6[3] = st->vip.ip[3];
		ctx->user_port = st->vip.port;
	}
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
