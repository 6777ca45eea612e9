/* Internal to user/kernel/: the loaded fast path. */
#ifndef KEPP_KERNEL_INT_H
#define KEPP_KERNEL_INT_H
#include <limits.h>
#include <net/if.h>

#include "kepp_abi.h"
#include "kernel/kernel.h"
#include "util/arena.h"

enum kern_link {
	KL_CONNECT4,
	KL_CONNECT6,
	KL_GETPEER4,
	KL_GETPEER6,
	KL_SOCKOPS,
	KL_SKLOOKUP, /* on the network namespace, not the cgroup */
	KL_COUNT,
};

/* The pin name of each link under <bpffs>/kepp/links/ (kern.c). */
extern const char *const kern_link_names[KL_COUNT];

/* A map's definition, as this build declares it or as a pinned map has it. */
struct btf;
struct bpf_object;
typedef struct kern_map_def {
	uint32_t type, key_size, value_size, max_entries, flags;
	const struct btf *btf; /* NULL: compare sizes only */
	uint32_t key_type, value_type;
} kern_map_def;

/* Whether a pinned map |have| cannot serve as |want| (user/kernel/pins.c):
 * another type, key or value size, max_entries, flags, or a key or value
 * whose fields (names, offsets, types) differ. |why| says which. */
bool kern_map_mismatch(const kern_map_def *want, const kern_map_def *have, char *why,
		       size_t cap);
/* Whether type |aid| of |a| and |bid| of |b| have the same memory layout. */
bool kern_btf_same_layout(const struct btf *a, uint32_t aid, const struct btf *b, uint32_t bid,
			  int depth);

/* The live in-flight count of a backend when its metrics were last scraped:
 * connect corrects a weight only for connections opened since then (the
 * scrape already shows the older ones as load). */
typedef struct kern_base {
	struct kepp_addr addr;
	int64_t update_ms; /* store_metrics.update_ms the base was taken at */
	uint32_t inflight;
} kern_base;

/* A backend that left the pool and still waits for its drain. */
typedef struct kern_left {
	struct kepp_addr addr;
	int64_t since_ns; /* when it was seen gone (or last drained in vain) */
	bool queued;      /* in kepp_drain_v1 for the current iterator run */
} kern_left;

typedef struct kern_leftset {
	kern_left *v;
	uint32_t n, cap;
} kern_leftset;

/* Told of every backend that leaves (|gone|) or comes back. */
typedef void (*kern_left_fn)(void *ctx, const struct kepp_addr *a, bool gone);

/* One bookkeeping step (user/kernel/drain.c), no BPF: an entry of |s| found
 * in |present| (the snapshot's backends, sorted by memcmp) came back and is
 * removed; a backend of |known| (those the datapath knows) absent from
 * |present| and not yet in |s| is added as gone since |now|. Returns 0 or
 * -ENOMEM. */
int kern_left_step(kern_leftset *s, const struct kepp_addr *known, size_t n_known,
		   const struct kepp_addr *present, size_t n_present, int64_t now,
		   kern_left_fn note, void *ctx);
void kern_leftset_free(kern_leftset *s);

struct kern {
	char root[PATH_MAX]; /* <bpffs>/kepp */
	struct kepp_sock_bpf *sock;
	struct kepp_sockops_bpf *sockops;
	struct kepp_sklookup_bpf *sklookup;
	struct bpf_link *links[KL_COUNT];
	int cgroup_fd, netns_fd;
	int svc_fd, be_fd, verdict_fd, fallback_fd;
	kern_service svcs[KERN_MAX_SERVICES];
	size_t n_svcs;
	int model_fd;      /* kepp_model_v1 */
	uint64_t meta_sig; /* of the service set kepp_model_v1 was last pruned for */
	int64_t max_age_ns;
	uint32_t affinity_pct;
	const sched *sched;
	store *store;
	struct event *tick;
	int64_t last_log_ns;
	arena mem;
	kern_base *bases; /* one per endpoint of the last published snapshot */
	uint32_t n_bases;
	int vip_fd; /* XDP counters */
	/* Drain (--fastpath-drain): NULL link when off or not loadable. */
	struct kepp_drain_bpf *drain;
	struct bpf_link *drain_link;
	int drain_fd;
	int64_t drain_ns;
	uint64_t drain_sig; /* of the backend set the left set was updated from */
	bool drain_scanned;
	kern_leftset left;
	uint64_t drained; /* connections closed, since kepp started */
	struct {
		char iface[IF_NAMESIZE];
		int ifindex;
	} xdp[KERN_MAX_XDP];
	size_t n_xdp;
};

int64_t kern_now_ns(void);
/* Re-creates pinned maps whose layout differs from |obj|'s (pins.c); call
 * before loading |obj|. Returns 0 or -errno. */
/* Removes from kepp_svc_v1 (and its XDP counters from kepp_vip_v1) every
 * service that k->svcs does not have, logging each (service.c). */
void kern_drop_unknown_services(kern *k);

int kern_pins_prepare(kern *k, struct bpf_object *obj);
/* Removes pins of maps and links this build does not know (pins.c). */
void kern_pins_prune(kern *k);
/* Detaches kepp_xdp from every --xdp-iface (xdp.c). Returns 0 or -errno. */
int kern_xdp_detach(kern *k);
/* Attaches (or adopts) kepp_xdp on |iface| (user/kernel/xdp.c). */
int kern_xdp_attach(kern *k, const char *iface, char *err, size_t errlen);
/* The 16-byte form of an endpoint's address; *v6 when it is real IPv6. */
int kern_ep_addr(const store_endpoint *ep, struct kepp_addr *out, bool *v6);
/* Loads and attaches the drain iterator (user/kernel/drain.c). */
int kern_drain_open(kern *k, int64_t drain_ms, char *err, size_t errlen);
/* Notes backends that left or came back in |snap|, and drains those whose
 * grace period is over (from kern_publish). */
void kern_drain_tick(kern *k, const store_snapshot *snap, int64_t now);
void kern_drain_close(kern *k);
/* The service map key of |s|. */
void kern_svc_key(const kern_service *s, struct kepp_svc_key *key);
/* Logs the per-backend counters (kern_tick, every few seconds). */
void kern_log_stats(kern *k);
#endif
