// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* sk_lookup: TCP traffic reaching this network namespace for a fast-path
 * VIP:port (a connection connect declined, or one from outside the steered
 * cgroup) is handed to kepp's userspace fallback listener of its family (the
 * sockets in kepp_fb_v1), which runs the full picker. The VIP must be local
 * (a local route) for the lookup to run at all. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/compat.h"
#include "lib/maps.h"

SEC("sk_lookup")
int kepp_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct kepp_svc_key key = {};
	struct bpf_sock *sk;
	__u32 slot;

	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	/* The barriers keep clang from merging the two families' loads into
	 * one ctx access at a variable offset, which the verifier refuses. */
	if (ctx->family == AF_INET) {
		__u32 a = ctx->local_ip4;

		barrier_var(a);
		key.vip.ip[2] = KEPP_V4MAPPED_PREFIX;
		key.vip.ip[3] = a;
		slot = KEPP_FB_INET;
	} else if (ctx->family == AF_INET6) {
		__u32 a0 = ctx->local_ip6[0], a1 = ctx->local_ip6[1];
		__u32 a2 = ctx->local_ip6[2], a3 = ctx->local_ip6[3];

		barrier_var(a3);
		key.vip.ip[0] = a0;
		key.vip.ip[1] = a1;
		key.vip.ip[2] = a2;
		key.vip.ip[3] = a3;
		slot = KEPP_FB_INET6;
	} else {
		return SK_PASS;
	}
	key.vip.port = bpf_htons((__u16)ctx->local_port); /* local_port is host order */
	if (!bpf_map_lookup_elem(&kepp_svc_v1, &key))
		return SK_PASS; /* not ours: the normal lookup decides */
	sk = bpf_map_lookup_elem(&kepp_fb_v1, &slot);
	if (!sk)
		return SK_PASS; /* no fallback listener (kepp is down): normal lookup */
	/* SK_PASS either way: on success the assigned listener takes the
	 * connection; on an error (a listener of the other family) the normal
	 * lookup answers rather than a drop. */
	bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
