/* kernel: kepp's eBPF fast path. Loads the programs of bpf/, pins their maps
 * and links under <bpffs>/kepp/ (with --kernel-keep a restarted kepp, also of
 * another version, adopts them: the datapath never stops), attaches connect/getpeername/sockops to a cgroup, and
 * publishes, for every fast-path service (a VIP:port classified to a model),
 * a table of weighted backends computed from kepp's scores.
 *
 * sk_lookup, attached to kepp's network namespace, hands connections to a
 * VIP:port that connect did not steer to a fallback listener (user/proxy).
 * Steered connections to a pod that left the pool are closed after a grace
 * period by a TCP iterator (user/kernel/drain.c).
 *
 * Threads: everything here runs on the control thread (kern_open,
 * kern_publish, kern_stats, kern_detach, kern_close); nothing is shared with
 * workers.
 */
#ifndef KEPP_KERNEL_H
#define KEPP_KERNEL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sched/sched.h"
#include "store/store.h"

#define KERN_MAX_SERVICES 64
#define KERN_MAX_XDP 16
#define KERN_MODEL_MAX 256

/* One fast-path service: a --fastpath VIP:PORT=MODEL or an entry of the pool's
 * kepp.io/fastpath annotation. */
typedef struct kern_service {
	char vip[STORE_ADDR_MAX]; /* as given: "10.0.0.9:8000", "[fd00::9]:8000" */
	uint8_t addr[16];         /* network order; IPv4 as ::ffff:a.b.c.d */
	uint16_t port;            /* host order */
	bool v6;                  /* a real IPv6 VIP (not v4-mapped) */
	char model[KERN_MODEL_MAX];
} kern_service;

/* Parses "VIP:PORT=MODEL" ("[v6]:PORT=MODEL"). Returns 0 or -EINVAL with the
 * reason in |err|. */
int kern_service_parse(const char *spec, kern_service *out, char *err, size_t errlen);

/* Parses a list of services in the grammar of the kepp.io/fastpath
 * annotation: VIP:PORT=MODEL entries separated by commas, blanks around an
 * entry ignored; at most |cap| entries and no VIP:PORT twice. An empty or
 * blank list has no entry. Returns the number of entries, or -EINVAL with
 * the reason in |err|. */
int kern_services_parse(const char *list, kern_service *out, size_t cap, char *err,
			size_t errlen);

/* The services of the --fastpath flags |flags| and of a list |more| (the
 * annotation's): the flags, then every entry of |more| whose VIP:PORT no flag
 * has (the flag wins). The VIP:PORTs of the entries left out for a flag of
 * another model go into |shadowed| as "a, b" ("" when none). Returns the
 * number of services written
 * to |out| (room for |cap|), or -E2BIG when they do not fit. */
int kern_services_merge(const kern_service *flags, size_t n_flags, const kern_service *more,
			size_t n_more, kern_service *out, size_t cap, char *shadowed, size_t shlen);

/* The id of a service in the maps (kepp_svc.id, the client-affinity key): a
 * hash of its VIP:PORT, so it stays whatever services come and go, and
 * across restarts. */
uint32_t kern_service_id(const kern_service *s);

/* Formats a 16-byte address (v4-mapped shown as IPv4) and host-order port
 * as Envoy would ("ip:port", "[ip]:port"). */
void kern_format_addr(char *out, size_t cap, const uint8_t addr[16], uint16_t port);

/* Parses an IP (v4 or v6, no brackets) into the 16-byte form. */
int kern_parse_ip(const char *ip, uint8_t out[16], bool *v6);

struct event_base;
typedef struct kern kern;

typedef struct kern_opts {
	const char *bpffs;  /* bpffs mount point (default /sys/fs/bpf; mounted if absent) */
	const char *cgroup; /* cgroup v2 folder whose processes get the fast path
			     * (default: the cgroup2 root from /proc/mounts) */
	const kern_service *services;
	size_t n_services;
	/* Leave services an earlier kepp published and |services| lacks in the
	 * maps until the first kern_set_services (their tables go stale, and
	 * connect hands their connections to the fallback path): a pool's
	 * annotation is read after start, and a restart must not drop them. */
	bool keep_unknown_services;
	int64_t max_age_ms;    /* a table older than this is stale: connect declines */
	uint32_t affinity_pct; /* keep a client on its pod within this % of the best; 0: off */
	/* Steered connections to a backend gone from the snapshot this long are
	 * closed (bpf_sock_destroy, Linux 6.5+; clients in kepp's network
	 * namespace); 0: never. A backend back within it keeps them. */
	int64_t drain_ms;
	/* Interfaces that get kepp_xdp (per-VIP counters, SYN shedding while
	 * saturated), attached through libxdp's dispatcher. */
	const char *const *xdp_ifaces;
	size_t n_xdp_ifaces;
	/* Republishes the current snapshot every max_age_ms/4 even without new
	 * metrics, so a live kepp's tables never go stale. */
	struct event_base *base;
	store *store;
	const sched *sched;
} kern_opts;

/* Loads, attaches (or adopts) and returns the fast path, or NULL with the
 * reason in |err| (not logged here). */
kern *kern_open(const kern_opts *o, char *err, size_t errlen);

/* Publishes every service's table from |snap|. Returns 0 or a negative errno
 * (logged). */
int kern_publish(kern *k, const store_snapshot *snap);

/* Makes |svcs| the fast-path services while kepp runs. A VIP:PORT no longer
 * in the set (or left by an earlier kepp) leaves the maps at once: connect
 * and sk_lookup no longer see it, connections already steered are untouched.
 * A new VIP:PORT, or a new model for one, gets its table at the next
 * kern_publish (the caller publishes); the others keep theirs. Logs each
 * change. Returns 0, or -E2BIG (over KERN_MAX_SERVICES) or -EINVAL (a
 * VIP:PORT twice) with nothing changed. */
int kern_set_services(kern *k, const kern_service *svcs, size_t n);

/* The services an earlier kepp left in the maps that this one does not
 * have (kept with kern_opts.keep_unknown_services until the pool is read),
 * with the model kepp_model_v1 holds for each; those without one are
 * skipped. Fills up to |cap| of |out|; returns how many. */
size_t kern_adopted_services(kern *k, kern_service *out, size_t cap);

/* Makes |fd4| and |fd6| (listening TCP sockets of each family; -1: none)
 * the fallback listeners: sk_lookup hands them every connection that
 * reaches a fast-path VIP:port in this network namespace. The kernel drops
 * an entry when its socket closes. Returns 0 or -errno. */
int kern_set_fallback(kern *k, int fd4, int fd6);

/* What the kernel saw, for logs and /metrics. */
typedef struct kern_backend_stats {
	char addr[STORE_ADDR_MAX];
	int64_t inflight;   /* steered connections established and not closed */
	uint64_t connects;  /* steered connections established, total */
	uint64_t closes;    /* of those, closed */
	uint32_t srtt_us;   /* smoothed RTT */
} kern_backend_stats;

#define KERN_STATS_MAX_BACKENDS 256

/* XDP's view of one fast-path service (zero without --xdp-iface). */
typedef struct kern_vip_stats {
	char vip[STORE_ADDR_MAX];
	uint64_t packets, bytes; /* TCP to VIP:port seen on the XDP interfaces */
	uint64_t syn_shed;       /* SYNs dropped while the pool was saturated */
} kern_vip_stats;

typedef struct kern_counters {
	/* connect decisions: steered, and the declines by reason */
	uint64_t picked, no_service, stale, empty, all_shed;
	size_t n_backends;
	kern_backend_stats backends[KERN_STATS_MAX_BACKENDS];
	size_t n_vips; /* one per --fastpath service */
	kern_vip_stats vips[KERN_MAX_SERVICES];
	/* Steered connections closed because their backend left the pool
	 * (--fastpath-drain), since this kepp started. */
	uint64_t drained;
} kern_counters;

/* Reads the kernel's counters (sums per-CPU values). Returns 0 or -errno. */
int kern_stats(kern *k, kern_counters *out);

/* Takes the fast path down, for a clean exit without --kernel-keep: detaches
 * every program this kepp attached or adopted (cgroup and netns links, XDP,
 * the drain iterator) and removes its pins under <bpffs>/kepp/ (the folder
 * too when empty). Connections already steered keep their pod. Logs one
 * line. Returns 0 or the first -errno (the rest is still done). */
int kern_detach(kern *k);

/* Closes kepp's handles. Unless kern_detach ran, the pinned maps and links
 * stay: the datapath keeps working and the next kepp adopts it. */
void kern_close(kern *k);
#endif
