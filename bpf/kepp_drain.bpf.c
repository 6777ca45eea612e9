// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Drain: connect pins a connection to its backend for its whole life, so a
 * pod that leaves the pool (deleted, not Ready, drained) would keep its
 * steered connections forever. Once it has been gone for --fastpath-drain,
 * userspace puts it in kepp_drain_v1 and runs this TCP iterator over kepp's
 * network namespace: every socket connect steered to such a backend (its
 * kepp_sk_v1 state says so) is closed with bpf_sock_destroy. The client sees
 * ECONNABORTED (a reset to the pod) and its next connect() is steered to a
 * live pod. Sockets connect did not steer (kepp's own scrapes and proxy
 * connections to the same pod, other clients) are never touched. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lib/compat.h"
#include "lib/maps.h"

/* Linux 6.5+: callable from iter/tcp and iter/udp programs only. */
extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

SEC("iter/tcp")
int kepp_drain(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct kepp_sk_state *st;
	struct kepp_drain *d;
	struct tcp_sock *tp;

	/* Reading a field also puts struct sock_common itself (not a forward
	 * declaration) in the object's BTF, which libbpf needs to match the
	 * kfunc's prototype against the kernel's. */
	if (!skc || (skc->skc_family != AF_INET && skc->skc_family != AF_INET6))
		return 0;
	/* Full sockets only: listeners have no steered state, and request
	 * and time-wait sockets have no storage at all. */
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	st = bpf_sk_storage_get(&kepp_sk_v1, tp, 0, 0);
	if (!st || !(st->flags & KEPP_SK_STEERED))
		return 0;
	d = bpf_map_lookup_elem(&kepp_drain_v1, &st->backend);
	if (!d)
		return 0;
	if (bpf_sock_destroy(skc) == 0)
		__sync_fetch_and_add(&d->destroyed, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
