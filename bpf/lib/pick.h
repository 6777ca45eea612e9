/* pick: the connect-time backend choice, header-only so the same code runs in
 * cgroup/connect4/6 and in the userspace unit tests (tests/unit/test_kern.c).
 *
 * The includer defines KEPP_LIVE_INFLIGHT(addr_ptr): the live count of
 * connections in flight to a backend (sockops' kepp_be_v1 in BPF, a table in
 * tests). Userspace computes the weights from kepp's scores; this only
 * corrects them for connections opened since each backend's last scrape, so a
 * burst between two scrapes spreads instead of herding onto the best pod.
 */
#ifndef KEPP_LIB_PICK_H
#define KEPP_LIB_PICK_H

#include "kepp_abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

static __always_inline int kepp_addr_eq(const struct kepp_addr *a, const struct kepp_addr *b)
{
	return a->ip[0] == b->ip[0] && a->ip[1] == b->ip[1] && a->ip[2] == b->ip[2] &&
	       a->ip[3] == b->ip[3] && a->port == b->port;
}

/* Weight corrected for connections opened since the backend's last scrape:
 * weight / (1 + new connections), in 1/1024 units. 0 means shed. */
static __always_inline __u64 kepp_effective(const struct kepp_backend *be, __s64 live)
{
	__s64 extra = live - (__s64)be->inflight;

	if (be->weight == 0)
		return 0;
	if (extra < 0)
		extra = 0;
	return ((__u64)be->weight << 10) / (__u64)(1 + extra);
}

/* Chooses a backend of |svc| at |now_ns|. |start| rotates the scan so equal
 * weights are shared; |aff| is the index of the client's previous pod or -1.
 * Returns KEPP_PICKED with *out set, or why the connection is declined. */
static __always_inline int kepp_pick(const struct kepp_svc *svc, __u64 now_ns, __u32 start,
				     int aff, __u32 *out)
{
	__u32 n = svc->n_backends;
	__u64 best_eff = 0, aff_eff = 0;
	int best = -1;

	if (now_ns < svc->published_ns || now_ns - svc->published_ns > svc->max_age_ns)
		return KEPP_STALE;
	if (n == 0)
		return KEPP_EMPTY;
	if (n > KEPP_MAX_BACKENDS)
		n = KEPP_MAX_BACKENDS;
	for (__u32 i = 0; i < KEPP_MAX_BACKENDS; i++) {
		__u32 j;
		__u64 eff;

		if (i >= n)
			break;
		/* A fresh modulo each time (not a wrapping increment) and one
		 * division for every weight keep the verifier's state count low:
		 * either of those "savings" took it past a million instructions. */
		j = (start + i) % n;
		if (j >= KEPP_MAX_BACKENDS)
			break;
		eff = kepp_effective(&svc->be[j], KEPP_LIVE_INFLIGHT(&svc->be[j].addr));
		if ((int)j == aff)
			aff_eff = eff;
		if (eff > best_eff) {
			best_eff = eff;
			best = (int)j;
		}
	}
	if (best < 0)
		return KEPP_ALL_SHED;
	/* Affinity holds while the client's pod is within affinity_pct of the
	 * best: its caches are warm, a small score gap is not worth a move. */
	if (aff >= 0 && aff_eff > 0 && (svc->flags & KEPP_SVC_AFFINITY) &&
	    aff_eff * 100 >= best_eff * (100 - (svc->affinity_pct > 100 ? 100 : svc->affinity_pct)))
		best = aff;
	*out = (__u32)best;
	return KEPP_PICKED;
}
#endif
