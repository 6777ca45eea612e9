// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* sockops: live load of every backend kepp steered a connection to. On
 * ACTIVE_ESTABLISHED a steered socket (it has kepp_sk_v1 state from connect)
 * counts one in-flight connection on its backend and asks for STATE
 * callbacks; the move to CLOSE decrements, once, only what was counted.
 * Userspace reads kepp_be_v1 between scrapes and connect corrects the
 * weights with it.
 *
 * The backend's smoothed RTT takes every connection's handshake RTT (at
 * ESTABLISHED) and its last smoothed RTT (at CLOSE); only one connection in
 * KEPP_RTT_SAMPLE also asks for RTT callbacks (one per ACK) to follow long
 * connections as they go. Every callback a connection asks for runs this
 * program again: with RTT callbacks on every connection a short one ran it
 * ten times, now about eight (bench/RESULTS.md). */
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

/* Folds the kernel's smoothed RTT of one connection (|srtt8|: microseconds
 * << 3) into the backend's (EWMA 1/8). Racy across connections, which is
 * fine for a load signal. */
static __always_inline void rtt_sample(struct kepp_be_stats *be, __u32 srtt8)
{
	__u32 srtt = srtt8 >> 3;
	__u32 old = be->srtt_us;

	if (!srtt)
		return; /* no sample yet */
	be->srtt_us = old ? old - (old >> 3) + (srtt >> 3) : srtt;
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
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* Only the close matters: the other moves cost no lookup. */
		if (skops->args[1] != BPF_TCP_CLOSE)
			return SOCKOPS_OK;
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
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		__u32 flags = BPF_SOCK_OPS_STATE_CB_FLAG;

		if (st->flags & KEPP_SK_COUNTED)
			break;
		st->flags |= KEPP_SK_COUNTED;
		__sync_fetch_and_add(&be->inflight, 1);
		__sync_fetch_and_add(&be->connects, 1);
		rtt_sample(be, skops->srtt_us);
		if (bpf_get_prandom_u32() % KEPP_RTT_SAMPLE == 0)
			flags |= BPF_SOCK_OPS_RTT_CB_FLAG;
		/* The helper replaces the whole flag word: keep what is set. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | flags);
		break;
	}
	case BPF_SOCK_OPS_RTT_CB:
		rtt_sample(be, skops->srtt_us);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (!(st->flags & KEPP_SK_COUNTED))
			break;
		st->flags &= ~KEPP_SK_COUNTED;
		__sync_fetch_and_add(&be->inflight, -1);
		__sync_fetch_and_add(&be->closes, 1);
		rtt_sample(be, skops->srtt_us);
		break;
	}
	return SOCKOPS_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
