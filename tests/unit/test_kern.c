/* Kernel fast path, the parts that need no privileges: --fastpath parsing,
 * the connect-time pick (bpf/lib/pick.h, the same code the BPF program runs),
 * the per-endpoint weights sched computes for it, and the bookkeeping of
 * backends that left the pool (--fastpath-drain). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bpf/btf.h>

#include "harness.h"
#include "kepp_abi.h"
#include "kernel/kern_int.h"
#include "sched/sched.h"

/* pick.h reads live in-flight counts through this hook: a table here. */
static struct kepp_addr live_addr[8];
static __s64 live_val[8];
static size_t n_live;

static __s64 mock_live(const struct kepp_addr *a)
{
	for (size_t i = 0; i < n_live; i++)
		if (!memcmp(&live_addr[i], a, sizeof(*a)))
			return live_val[i];
	return 0;
}
#define KEPP_LIVE_INFLIGHT(a) mock_live(a)
#include "lib/pick.h"

static void test_service_parse(void)
{
	kern_service s;
	char err[256];
	CHECK_INT(kern_service_parse("10.0.0.9:8000=llama", &s, err, sizeof(err)), 0);
	CHECK_STR(s.vip, "10.0.0.9:8000");
	CHECK_STR(s.model, "llama");
	CHECK_INT(s.port, 8000);
	CHECK(!s.v6);
	CHECK_INT(s.addr[10], 0xff);
	CHECK_INT(s.addr[12], 10);
	CHECK_INT(s.addr[15], 9);
	CHECK_INT(kern_service_parse("[fd00::9]:443=a=b", &s, err, sizeof(err)), 0);
	CHECK(s.v6);
	CHECK_STR(s.vip, "[fd00::9]:443");
	CHECK_STR(s.model, "a=b"); /* only the first '=' separates */
	/* A v4-mapped IPv6 VIP is the IPv4 service. */
	CHECK_INT(kern_service_parse("[::ffff:10.1.2.3]:80=m", &s, err, sizeof(err)), 0);
	CHECK(!s.v6);
	CHECK_STR(s.vip, "10.1.2.3:80");

	const char *bad[] = {"", "10.0.0.1:80", "10.0.0.1:80=", "=m", "10.0.0.1=m",
			     "10.0.0.1:0=m", "10.0.0.1:65536=m", "10.0.0.1:8x=m", "fd00::1:80=m",
			     "[fd00::1]80=m", "host.example:80=m", "[fd00::1:80=m"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK_INT(kern_service_parse(bad[i], &s, err, sizeof(err)), -EINVAL);
		CHECK(err[0] != '\0');
	}
}

static struct kepp_addr addr4(unsigned last, unsigned port)
{
	struct kepp_addr a;
	memset(&a, 0, sizeof(a));
	a.ip[2] = htonl(0xffff);
	a.ip[3] = htonl(0x0a000000u | last);
	a.port = htons((uint16_t)port);
	return a;
}

static void table(struct kepp_svc *s, const __u32 *w, __u32 n)
{
	memset(s, 0, sizeof(*s));
	s->published_ns = 1000;
	s->max_age_ns = 500;
	s->n_backends = n;
	for (__u32 i = 0; i < n; i++) {
		s->be[i].addr = addr4(i + 1, 8000);
		s->be[i].weight = w[i];
	}
}

static void test_pick_declines(void)
{
	struct kepp_svc s;
	__u32 out = 99;
	__u32 w[3] = {10, 20, 30};
	n_live = 0;
	table(&s, w, 3);
	CHECK_INT(kepp_pick(&s, 1500, 0, -1, &out), KEPP_PICKED);
	CHECK_INT(out, 2);
	out = 99;
	CHECK_INT(kepp_pick(&s, 1501, 0, -1, &out), KEPP_STALE);
	CHECK_INT(kepp_pick(&s, 999, 0, -1, &out), KEPP_STALE); /* published in the future */
	table(&s, w, 0);
	CHECK_INT(kepp_pick(&s, 1200, 0, -1, &out), KEPP_EMPTY);
	__u32 zero[3] = {0, 0, 0};
	table(&s, zero, 3);
	CHECK_INT(kepp_pick(&s, 1200, 0, -1, &out), KEPP_ALL_SHED);
	CHECK_INT(out, 99); /* untouched on a decline */
}

static void test_pick_best_and_ties(void)
{
	struct kepp_svc s;
	__u32 out = 0;
	__u32 w[4] = {10, 0, 30, 20};
	n_live = 0;
	table(&s, w, 4);
	for (__u32 start = 0; start < 8; start++) {
		CHECK_INT(kepp_pick(&s, 1200, start, -1, &out), KEPP_PICKED);
		CHECK_INT(out, 2);
	}
	/* Equal weights: the rotation shares them; a shed one never wins. */
	__u32 eqw[3] = {50, 0, 50};
	table(&s, eqw, 3);
	int seen[3] = {0};
	for (__u32 start = 0; start < 6; start++) {
		CHECK_INT(kepp_pick(&s, 1200, start, -1, &out), KEPP_PICKED);
		seen[out]++;
	}
	CHECK(seen[0] > 0 && seen[2] > 0);
	CHECK_INT(seen[1], 0);
	/* n_backends beyond the array is clamped, never read past. */
	table(&s, w, 4);
	s.n_backends = 1000;
	CHECK_INT(kepp_pick(&s, 1200, 7, -1, &out), KEPP_PICKED);
	CHECK(out < KEPP_MAX_BACKENDS);
}

static void test_pick_inflight_correction(void)
{
	struct kepp_svc s;
	__u32 out = 0;
	__u32 w[2] = {100, 60};
	table(&s, w, 2);
	n_live = 1;
	live_addr[0] = s.be[0].addr;
	/* One connection since the scrape halves the best one's weight. */
	live_val[0] = 1;
	CHECK_INT(kepp_pick(&s, 1200, 0, -1, &out), KEPP_PICKED);
	CHECK_INT(out, 1); /* 100 / 2 = 50 < 60 */
	live_val[0] = 0;
	CHECK_INT(kepp_pick(&s, 1200, 1, -1, &out), KEPP_PICKED);
	CHECK_INT(out, 0);
	n_live = 0;
}

static void test_pick_inflight_since_scrape(void)
{
	struct kepp_svc s;
	__u32 out = 0;
	__u32 w[2] = {100, 60};
	table(&s, w, 2);
	n_live = 1;
	live_addr[0] = s.be[0].addr;
	live_val[0] = 3;
	/* Three live, three already in the scrape: no correction. */
	s.be[0].inflight = 3;
	CHECK_INT(kepp_pick(&s, 1200, 0, -1, &out), KEPP_PICKED);
	CHECK_INT(out, 0);
	/* One more since the scrape: 100/2 < 60. */
	live_val[0] = 4;
	CHECK_INT(kepp_pick(&s, 1200, 0, -1, &out), KEPP_PICKED);
	CHECK_INT(out, 1);
	/* Fewer than at the scrape (closed since): no bonus either. */
	live_val[0] = 0;
	CHECK_INT(kepp_pick(&s, 1200, 1, -1, &out), KEPP_PICKED);
	CHECK_INT(out, 0);
	n_live = 0;
}

static void test_pick_affinity(void)
{
	struct kepp_svc s;
	__u32 out = 0;
	__u32 w[3] = {100, 85, 70};
	n_live = 0;
	table(&s, w, 3);
	/* Without the flag the previous pod is ignored. */
	CHECK_INT(kepp_pick(&s, 1200, 0, 1, &out), KEPP_PICKED);
	CHECK_INT(out, 0);
	s.flags = KEPP_SVC_AFFINITY;
	s.affinity_pct = 20;
	CHECK_INT(kepp_pick(&s, 1200, 0, 1, &out), KEPP_PICKED);
	CHECK_INT(out, 1); /* 85 within 20% of 100 */
	CHECK_INT(kepp_pick(&s, 1200, 0, 2, &out), KEPP_PICKED);
	CHECK_INT(out, 0); /* 70 is not */
	s.be[1].weight = 0;
	CHECK_INT(kepp_pick(&s, 1200, 0, 1, &out), KEPP_PICKED);
	CHECK_INT(out, 0); /* a shed pod loses its clients */
	s.affinity_pct = 1000; /* clamped to 100%: anything alive keeps them */
	CHECK_INT(kepp_pick(&s, 1200, 0, 2, &out), KEPP_PICKED);
	CHECK_INT(out, 2);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static store_snapshot *snap3(store_catalog *cat, const double *q, const double *kv,
			     const bool *fresh)
{
	store_endpoint eps[3];
	memset(eps, 0, sizeof(eps));
	for (int i = 0; i < 3; i++) {
		store_endpoint *e = &eps[i];
		e->name = "ep";
		e->pod = "";
		snprintf(e->ip, sizeof(e->ip), "10.0.0.%d", i + 1);
		e->port = 8000;
		snprintf(e->addr, sizeof(e->addr), "10.0.0.%d:8000", i + 1);
		e->m.valid = true;
		e->m.update_ms = fresh[i] ? mono_ms() : mono_ms() - 60000;
		e->m.waiting_queue = q[i];
		e->m.kv_usage = kv[i];
	}
	return store_snapshot_new(cat, eps, 3, true);
}

static void test_fastpath_weights(void)
{
	char err[512];
	sched *s = sched_new(NULL, err, sizeof(err));
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	store_catalog_finish(cat);
	double q[3] = {5, 0, 3}, kv[3] = {0.8, 0.1, 0.6};
	bool fresh[3] = {true, true, true};
	store_snapshot *snap = snap3(cat, q, kv, fresh);
	arena a;
	arena_init(&a, 4096);
	uint32_t w[3];
	sched_fastpath_info info;
	CHECK_INT(sched_fastpath_weights(s, snap, "m", &a, w, &info), 0);
	/* The default profile: queue 2, kv-cache 2, prefix 3 (0 with no prompt). */
	CHECK_INT(w[1], (uint32_t)((2.0 * 1 + 2.0 * 0.9) / 7 * SCHED_FASTPATH_WMAX));
	CHECK_INT(w[0], (uint32_t)((2.0 * 0 + 2.0 * 0.2) / 7 * SCHED_FASTPATH_WMAX));
	CHECK(w[1] > w[2] && w[2] > w[0]);
	CHECK_INT(info.n_kept, 3);
	CHECK(!info.saturated);
	CHECK(!info.sheddable);
	store_release(snap);

	/* Stale metrics everywhere: the saturation detector says full. */
	bool stale[3] = {false, false, false};
	snap = snap3(cat, q, kv, stale);
	CHECK_INT(sched_fastpath_weights(s, snap, "m", &a, w, &info), 0);
	CHECK(info.saturated);
	store_release(snap);
	store_catalog_unref(cat);
	arena_free(&a);
	sched_free(s);
}

static void test_fastpath_filter_sheds(void)
{
	const char *cfg_text = "apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
			       "kind: EndpointPickerConfig\n"
			       "plugins:\n"
			       "- type: least-queue-filter\n"
			       "- type: kv-cache-utilization-scorer\n"
			       "- type: max-score-picker\n"
			       "schedulingProfiles:\n"
			       "- name: default\n"
			       "  plugins:\n"
			       "  - pluginRef: least-queue-filter\n"
			       "  - pluginRef: kv-cache-utilization-scorer\n"
			       "  - pluginRef: max-score-picker\n";
	char err[512];
	sched_config *cfg = NULL;
	CHECK_INT(sched_config_parse_text(cfg_text, strlen(cfg_text), "t.yaml", &cfg, err,
					  sizeof(err)), 0);
	sched *s = cfg ? sched_new(cfg, err, sizeof(err)) : NULL;
	CHECK(s != NULL);
	if (!s) {
		fprintf(stderr, "  %s\n", err);
		sched_config_free(cfg);
		return;
	}
	store_catalog *cat = store_catalog_new();
	store_catalog_finish(cat);
	double q[3] = {9, 0, 9}, kv[3] = {0, 0.5, 0};
	bool fresh[3] = {true, true, true};
	store_snapshot *snap = snap3(cat, q, kv, fresh);
	arena a;
	arena_init(&a, 4096);
	uint32_t w[3];
	sched_fastpath_info info;
	CHECK_INT(sched_fastpath_weights(s, snap, "m", &a, w, &info), 0);
	CHECK_INT(w[0], 0); /* dropped by the filter: shed */
	CHECK_INT(w[2], 0);
	CHECK_INT(w[1], SCHED_FASTPATH_WMAX / 2);
	CHECK_INT(info.n_kept, 1);
	store_release(snap);
	store_catalog_unref(cat);
	arena_free(&a);
	sched_free(s);
	sched_config_free(cfg);
}

static struct kepp_addr be(uint8_t last)
{
	struct kepp_addr a;
	memset(&a, 0, sizeof(a));
	a.ip[2] = htonl(0xffff);
	a.ip[3] = htonl(0x0a000000u | last);
	a.port = htons(8000);
	return a;
}

static int addr_sort(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct kepp_addr));
}

static int n_notes, n_gone;

static void note(void *ctx, const struct kepp_addr *a, bool gone)
{
	n_notes++;
	n_gone += gone;
}

static const kern_left *left_of(const kern_leftset *s, struct kepp_addr a)
{
	for (uint32_t i = 0; i < s->n; i++)
		if (!memcmp(&s->v[i].addr, &a, sizeof(a)))
			return &s->v[i];
	return NULL;
}

static void test_left_bookkeeping(void)
{
	kern_leftset s = {0};
	struct kepp_addr known[3] = {be(1), be(2), be(3)};
	struct kepp_addr present[3] = {be(1), be(2), be(3)};
	qsort(present, 3, sizeof(present[0]), addr_sort);

	/* All present: nothing left. */
	CHECK_INT(kern_left_step(&s, known, 3, present, 3, 100, note, NULL), 0);
	CHECK_INT(s.n, 0);
	/* .3 leaves at t=200: noted once, with the time it left. */
	struct kepp_addr two[2] = {be(1), be(2)};
	qsort(two, 2, sizeof(two[0]), addr_sort);
	CHECK_INT(kern_left_step(&s, known, 3, two, 2, 200, note, NULL), 0);
	CHECK_INT(s.n, 1);
	CHECK(left_of(&s, be(3)) && left_of(&s, be(3))->since_ns == 200);
	CHECK_INT(n_gone, 1);
	/* Still gone later: the first time is kept (the grace period runs from
	 * when it left). */
	CHECK_INT(kern_left_step(&s, known, 3, two, 2, 900, note, NULL), 0);
	CHECK_INT(s.n, 1);
	CHECK(left_of(&s, be(3)) && left_of(&s, be(3))->since_ns == 200);
	CHECK_INT(n_notes, 1);
	/* Back before its drain: forgotten. */
	CHECK_INT(kern_left_step(&s, known, 3, present, 3, 1000, note, NULL), 0);
	CHECK_INT(s.n, 0);
	CHECK_INT(n_notes, 2);
	/* Gone again: a new grace period. */
	CHECK_INT(kern_left_step(&s, known, 3, two, 2, 5000, note, NULL), 0);
	CHECK(left_of(&s, be(3)) && left_of(&s, be(3))->since_ns == 5000);
	/* An empty pool: every known backend left (and none twice). */
	CHECK_INT(kern_left_step(&s, known, 3, NULL, 0, 6000, note, NULL), 0);
	CHECK_INT(s.n, 3);
	CHECK(left_of(&s, be(1)) && left_of(&s, be(1))->since_ns == 6000);
	CHECK(left_of(&s, be(3)) && left_of(&s, be(3))->since_ns == 5000);
	/* Many at once grow the set. */
	struct kepp_addr many[40];
	for (int i = 0; i < 40; i++)
		many[i] = be((uint8_t)(10 + i));
	CHECK_INT(kern_left_step(&s, many, 40, NULL, 0, 7000, NULL, NULL), 0);
	CHECK_INT(s.n, 43);
	kern_leftset_free(&s);
	CHECK_INT(s.n, 0);
}

/* A BTF with struct kepp_t { __u64 <f0>; __u32 <f1>; __u32 pad; } (or the
 * two first swapped); returns the struct's id in *id. */
static struct btf *layout(const char *f0, const char *f1, bool swapped, bool typedefs,
			  int *id)
{
	struct btf *b = btf__new_empty();
	int u32 = btf__add_int(b, "unsigned int", 4, 0);
	int u64 = btf__add_int(b, "long long unsigned int", 8, 0);
	if (typedefs) {
		u32 = btf__add_typedef(b, "__u32", u32);
		u64 = btf__add_typedef(b, "__u64", u64);
	}
	*id = btf__add_struct(b, "kepp_t", 16);
	if (swapped) {
		btf__add_field(b, f1, u32, 0, 0);
		btf__add_field(b, "pad", u32, 32, 0);
		btf__add_field(b, f0, u64, 64, 0);
	} else {
		btf__add_field(b, f0, u64, 0, 0);
		btf__add_field(b, f1, u32, 64, 0);
		btf__add_field(b, "pad", u32, 96, 0);
	}
	return b;
}

static void test_pinned_map_compat(void)
{
	int ia, ib, ic, id;
	struct btf *a = layout("x", "y", false, true, &ia);
	struct btf *b = layout("x", "y", false, false, &ib);
	struct btf *c = layout("x", "y", true, true, &ic);
	struct btf *d = layout("x", "z", false, true, &id);
	/* Typedefs aside, the same fields at the same offsets: the same layout. */
	CHECK(kern_btf_same_layout(a, (uint32_t)ia, b, (uint32_t)ib, 0));
	CHECK(!kern_btf_same_layout(a, (uint32_t)ia, c, (uint32_t)ic, 0)); /* moved */
	CHECK(!kern_btf_same_layout(a, (uint32_t)ia, d, (uint32_t)id, 0)); /* renamed */
	CHECK(!kern_btf_same_layout(a, 999, b, (uint32_t)ib, 0));          /* bad id */

	kern_map_def want = {.type = 1, .key_size = 20, .value_size = 16, .max_entries = 256,
			     .flags = 1, .btf = a, .value_type = (uint32_t)ia};
	kern_map_def have = want;
	char why[160] = "";
	have.btf = b;
	have.value_type = (uint32_t)ib;
	CHECK(!kern_map_mismatch(&want, &have, why, sizeof(why)));
	have.btf = c;
	have.value_type = (uint32_t)ic;
	CHECK(kern_map_mismatch(&want, &have, why, sizeof(why)));
	CHECK_STR(why, "the value's fields differ (same size, another layout)");
	have.btf = NULL; /* no BTF to compare: the sizes decide */
	CHECK(!kern_map_mismatch(&want, &have, why, sizeof(why)));
	have.value_size = 64;
	CHECK(kern_map_mismatch(&want, &have, why, sizeof(why)));
	CHECK_STR(why, "key/value size 20/64, this kepp uses 20/16");
	have = want;
	have.max_entries = 128;
	CHECK(kern_map_mismatch(&want, &have, why, sizeof(why)));
	CHECK_STR(why, "max_entries 128, this kepp uses 256");
	have = want;
	have.flags = 0;
	CHECK(kern_map_mismatch(&want, &have, why, sizeof(why)));
	CHECK_STR(why, "flags 0x0, this kepp uses 0x1");
	have = want;
	have.type = 9;
	CHECK(kern_map_mismatch(&want, &have, why, sizeof(why)));
	CHECK_STR(why, "map type 9, this kepp uses 1");
	btf__free(a);
	btf__free(b);
	btf__free(c);
	btf__free(d);
}

int main(void)
{
	RUN(test_service_parse);
	RUN(test_pick_declines);
	RUN(test_pick_best_and_ties);
	RUN(test_pick_inflight_correction);
	RUN(test_pick_inflight_since_scrape);
	RUN(test_pick_affinity);
	RUN(test_fastpath_weights);
	RUN(test_fastpath_filter_sheds);
	RUN(test_left_bookkeeping);
	RUN(test_pinned_map_compat);
	return harness_done();
}
