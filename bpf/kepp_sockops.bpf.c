// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* sockops: live load of every backend kepp steered a connection to. On
 * ACTIVE_ESTABLISHED a steered socket (it has kepp_sk_v1 state from connect)
 * counts one in-flight connection on its backend and asks for STATE and RTT
 * callbacks; RTT updates the backend's smoothed RTT; the move to CLOSE
 * decrements, once, only what was counted. Userspace reads kepp_be_v1
 * between scrapes and connect corrects the weights with it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/compat.h"
#include "lib/maps.h"

static __always_inline struct kepp_be_stats *backend_stats(const struct kepp_addr *a)
{
	struct kepp_be_stats *be = bpf_map_lookup_elem(&kepp_be_v1, a);
	struct kepp_be_stats zero = {};

	if (be)
		return be;
	/* Userspace creates entries on publish; a backend added between two
	 * publishes gets one here. NOEXIST: a racing creator wins. */
	bpf_map_update_elem(&kepp_be_v1, a, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&kepp_be_v1, a);
}

SEC("sockops")
int kepp_sockops(struct bpf_sock_ops *skops)
{
	struct kepp_sk_state *st;
	struct kepp_be_stats *be;
	struct bpf_sock *sk;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_RTT_CB:
	case BPF_SOCK_OPS_STATE_CB:
		break;
	default:
		return SOCKOPS_OK;
	}
	sk = skops->sk;
	if (!sk)
		return SOCKOPS_OK;
	st = bpf_sk_storage_get(&kepp_sk_v1, sk, 0, 0);
	if (!st || !(st->flags & KEPP_SK_STEERED))
		return SOCKOPS_OK;
	be = backend_stats(&st->backend);
	if (!be)
		return SOCKOPS_OK;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		if (st->flags & KEPP_SK_COUNTED)
			break;
		st->flags |= KEPP_SK_COUNTED;
		__sync_fetch_and_add(&be->inflight, 1);
		__sync_fetch_and_add(&be->connects, 1);
		/* The helper replaces the whole flag word: keep what is set. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG |
						 BPF_SOCK_OPS_RTT_CB_FLAG);
		break;
	case BPF_SOCK_OPS_RTT_CB: {
		/* srtt_us is the kernel's smoothed RTT << 3. A racy EWMA across
		 * connections is fine for a load signal. */
		__u32 srtt = skops->srtt_us >> 3;
		__u32 old = be->srtt_us;

		be->srtt_us = old ? old - (old >> 3) + (srtt >> 3) : srtt;
		break;
	}
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE || !(st->flags & KEPP_SK_COUNTED))
			break;
		st->flags &= ~KEPP_SK_COUNTED;
		__sync_fetch_and_add(&be->inflight, -1);
		__sync_fetch_and_add(&be->closes, 1);
		break;
	}
	return SOCKOPS_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
