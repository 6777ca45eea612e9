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

/* The live in-flight count of a backend when its metrics were last scraped:
 * connect corrects a weight only for connections opened since then (the
 * scrape already shows the older ones as load). */
typedef struct kern_base {
	struct kepp_addr addr;
	int64_t update_ms; /* store_metrics.update_ms the base was taken at */
	uint32_t inflight;
} kern_base;

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
	struct {
		char iface[IF_NAMESIZE];
		int ifindex;
	} xdp[KERN_MAX_XDP];
	size_t n_xdp;
};

int64_t kern_now_ns(void);
/* Attaches (or adopts) kepp_xdp on |iface| (user/kernel/xdp.c). */
int kern_xdp_attach(kern *k, const char *iface, char *err, size_t errlen);
/* The service map key of |s|. */
void kern_svc_key(const kern_service *s, struct kepp_svc_key *key);
/* Logs the per-backend counters (kern_tick, every few seconds). */
void kern_log_stats(kern *k);
#endif
