// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* XDP (attached with libxdp, so it shares the interface with other XDP
 * programs): packet and byte counters for every fast-path VIP:port, and,
 * while kepp says the pool is saturated, SYNs to sheddable services are
 * dropped here, before the kernel spends a socket on a request the picker
 * would refuse anyway. Everything else passes untouched. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <xdp/xdp_helpers.h>

#include "lib/compat.h"
#include "lib/maps.h"

/* Runs before most programs so shed SYNs cost nothing more; chains on PASS. */
struct {
	__uint(priority, 20);
	__uint(XDP_PASS, 1);
} XDP_RUN_CONFIG(kepp_xdp);

struct tcp_meta {
	struct kepp_svc_key key;
	int syn; /* SYN without ACK: a new connection */
};

/* Parses Ethernet, IPv4 (no fragments) or IPv6 (no extension headers) and
 * TCP. Returns 0 when the packet is TCP with |m| filled. */
static __always_inline int parse(struct xdp_md *ctx, struct tcp_meta *m)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct tcphdr *tcp;

	if ((void *)(eth + 1) > end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl < 5)
			return -1;
		/* A later fragment carries no TCP header. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return -1;
		tcp = (void *)ip + ip->ihl * 4;
		m->key.vip.ip[2] = KEPP_V4MAPPED_PREFIX;
		m->key.vip.ip[3] = ip->daddr;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return -1;
		tcp = (void *)(ip6 + 1);
		__builtin_memcpy(m->key.vip.ip, &ip6->daddr, 16);
	} else {
		return -1;
	}
	if ((void *)(tcp + 1) > end)
		return -1;
	m->key.vip.port = tcp->dest;
	m->syn = tcp->syn && !tcp->ack;
	return 0;
}

SEC("xdp")
int kepp_xdp(struct xdp_md *ctx)
{
	struct kepp_vip_stats *st, zero = {};
	struct tcp_meta m = {};
	struct kepp_svc *svc;
	__u64 now;

	if (parse(ctx, &m) < 0)
		return XDP_PASS;
	svc = bpf_map_lookup_elem(&kepp_svc_v1, &m.key);
	if (!svc)
		return XDP_PASS;
	st = bpf_map_lookup_elem(&kepp_vip_v1, &m.key);
	if (!st) {
		bpf_map_update_elem(&kepp_vip_v1, &m.key, &zero, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&kepp_vip_v1, &m.key);
		if (!st)
			return XDP_PASS;
	}
	/* Per-CPU values: softirq context, no atomics needed. */
	st->packets++;
	st->bytes += ctx->data_end - ctx->data;
	if (!m.syn || (svc->flags & (KEPP_SVC_SHEDDABLE | KEPP_SVC_SATURATED)) !=
			      (KEPP_SVC_SHEDDABLE | KEPP_SVC_SATURATED))
		return XDP_PASS;
	/* A stale table means kepp is gone: its saturation verdict is too old
	 * to refuse anyone on. */
	now = bpf_ktime_get_ns();
	if (now < svc->published_ns || now - svc->published_ns > svc->max_age_ns)
		return XDP_PASS;
	st->syn_shed++;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
