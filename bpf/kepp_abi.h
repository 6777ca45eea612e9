/* kepp_abi: every map key and value shared by the BPF programs (bpf/)
 * and userspace (user/kernel/). Types only: fixed-width fields, explicit
 * padding, no bool, enum or pointer, so both sides hash the same bytes.
 *
 * Addresses are 16 bytes in network order; IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d) so one key serves connect4, connect6 and v4-in-v6.
 * Ports are network order.
 *
 * A kepp that finds a pinned map whose type, sizes, flags, max_entries or
 * BTF layout differ from these (an older or newer kepp left it) re-creates
 * it and says so (user/kernel/pins.c); compatible maps are reused. Keep the
 * hot maps' layouts stable: data only tools read goes into a map of its own
 * (kepp_model_v1), which an older datapath simply does not have.
 */
#ifndef KEPP_ABI_H
#define KEPP_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define KEPP_MAX_BACKENDS 32  /* per service; a power of two (connect masks an index with it) */
/* A build with another limit (-DKEPP_MAX_SERVICES=N in CFLAGS, which reach
 * the BPF objects too) has another max_entries: the upgrade test's "older
 * kepp". */
#ifndef KEPP_MAX_SERVICES
#define KEPP_MAX_SERVICES 256
#endif
#define KEPP_MODEL_MAX 256    /* a model name, NUL included */
#define KEPP_POOL_MAX 128     /* "namespace/name" of the pool, NUL included */
#define KEPP_MAX_ENDPOINTS 4096 /* backend stats entries */
#define KEPP_WEIGHT_MAX 10000 /* a perfect score */
#define KEPP_RTT_SAMPLE 16    /* one steered connection in this many gets RTT callbacks */

/* An endpoint: address and port. */
struct kepp_addr {
	__u32 ip[4];  /* network order; IPv4 as ::ffff:a.b.c.d */
	__u16 port;   /* network order */
	__u16 pad;
};

/* A fast-path service: VIP and port (kepp_svc_v1, kepp_vip_v1). */
struct kepp_svc_key {
	struct kepp_addr vip;
};

enum {
	KEPP_SVC_SHEDDABLE = 1 << 0, /* the model's requests may be shed */
	KEPP_SVC_SATURATED = 1 << 1, /* the pool is saturated: shed sheddable SYNs */
	KEPP_SVC_AFFINITY = 1 << 2,  /* keep a client on its pod (see affinity_pct) */
};

struct kepp_backend {
	struct kepp_addr addr;
	__u32 weight;   /* 1..KEPP_WEIGHT_MAX from kepp's scores; 0: shed */
	__u32 inflight; /* kepp_be_v1 in-flight count at the last scrape of the backend */
};

/* One service's table, replaced whole by userspace on every publish (the map
 * is BPF_F_NO_PREALLOC, so a reader sees the old or the new value, never a
 * mix). */
struct kepp_svc {
	__u64 published_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) of the publish */
	__u64 max_age_ns;   /* older than this: stale, connect declines */
	__u32 id;           /* kern_service_id(): a hash of VIP:PORT, stable across restarts */
	__u32 flags;        /* KEPP_SVC_* */
	__u32 n_backends;
	__u32 affinity_pct; /* keep the client's pod while within this % of the best */
	struct kepp_backend be[KEPP_MAX_BACKENDS];
};

/* What a service is, for people and tools (kepp_model_v1, keyed like
 * kepp_svc_v1): no BPF program reads it, so the hot maps keep their layout.
 * Written by userspace when a service is first published or changes. */
struct kepp_svc_meta {
	char model[KEPP_MODEL_MAX]; /* --fastpath VIP:PORT=MODEL */
	char pool[KEPP_POOL_MAX];   /* "namespace/name", empty without an InferencePool */
	__u32 id;                   /* kepp_svc.id */
	__u32 pad;
};

/* Live per-backend counters that sockops keeps (kepp_be_v1). */
struct kepp_be_stats {
	__s64 inflight;        /* established steered connections not yet closed */
	__u64 connects;        /* steered connections established, total */
	__u64 closes;          /* of those, closed */
	__u32 srtt_us;         /* smoothed RTT (EWMA 1/8 of the kernel's srtt: every
				* connection's handshake and last, 1/KEPP_RTT_SAMPLE
				* of them on every ACK) */
	__u32 pad;
};

enum {
	KEPP_SK_STEERED = 1 << 0, /* connect rewrote the destination */
	KEPP_SK_COUNTED = 1 << 1, /* sockops counted it in kepp_be_v1.inflight */
};

/* Per-socket state (SK_STORAGE kepp_sk_v1), freed with the socket. */
struct kepp_sk_state {
	struct kepp_addr vip;     /* what the application connected to */
	struct kepp_addr backend; /* where it went */
	__u32 svc_id;
	__u32 flags;              /* KEPP_SK_* */
};

/* Client affinity (LRU kepp_aff_v1): a client is its cgroup. */
struct kepp_aff_key {
	__u64 cgroup_id;
	__u32 svc_id;
	__u32 pad;
};

struct kepp_aff_val {
	struct kepp_addr backend;
	__u64 last_ns;
};

/* XDP counters per VIP (PERCPU_HASH kepp_vip_v1). */
struct kepp_vip_stats {
	__u64 packets;
	__u64 bytes;
	__u64 syn_shed; /* SYNs dropped while the pool was saturated */
};

/* A backend whose steered connections the drain iterator closes
 * (kepp_drain_v1): userspace adds the backends that left the pool over
 * --fastpath-drain ago, runs the iterator, reads the count and deletes. */
struct kepp_drain {
	__u64 destroyed; /* connections closed with bpf_sock_destroy */
};

/* Slots of the fallback listener SOCKMAP (kepp_fb_v1). */
enum {
	KEPP_FB_INET = 0,
	KEPP_FB_INET6 = 1,
	KEPP_FB_SLOTS,
};

/* Which decision connect took, for tests and counters. */
enum kepp_verdict {
	KEPP_PICKED = 0,
	KEPP_NO_SERVICE,
	KEPP_STALE,
	KEPP_EMPTY,
	KEPP_ALL_SHED,
	KEPP_VERDICTS,
};
#endif
