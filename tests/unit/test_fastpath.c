/* Fast-path services while kepp runs and the weights behind them: the
 * kepp.io/fastpath list grammar, how it merges with --fastpath flags, the
 * service ids, kern_set_services on real BPF maps (root; under CI=true a test
 * that cannot run fails, elsewhere it says SKIP), and the staleness rule in
 * sched_fastpath_weights. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "harness.h"
#include "kepp_abi.h"
#include "kernel/kern_int.h"
#include "sched/sched.h"
#include "util/log.h"

static kern_service svc(const char *spec)
{
	kern_service s;
	char err[256];
	CHECK_INT(kern_service_parse(spec, &s, err, sizeof(err)), 0);
	return s;
}

static void test_list_parse(void)
{
	kern_service v[KERN_MAX_SERVICES];
	char err[256];
	CHECK_INT(kern_services_parse("10.0.0.9:8000=llama", v, 8, err, sizeof(err)), 1);
	CHECK_STR(v[0].vip, "10.0.0.9:8000");
	CHECK_STR(v[0].model, "llama");
	/* Blanks around entries, one VIP on several ports, IPv6 in brackets. */
	CHECK_INT(kern_services_parse(" 10.0.0.9:8000=llama ,10.0.0.9:8001=llama-lora-a,\n"
				      "\t[fd00::9]:80=m ",
				      v, 8, err, sizeof(err)),
		  3);
	CHECK_STR(v[1].vip, "10.0.0.9:8001");
	CHECK_STR(v[1].model, "llama-lora-a");
	CHECK_STR(v[2].vip, "[fd00::9]:80");
	CHECK(v[2].v6);
	CHECK_STR(v[2].model, "m");
	/* Nothing at all is no service (an annotation emptied). */
	CHECK_INT(kern_services_parse("", v, 8, err, sizeof(err)), 0);
	CHECK_INT(kern_services_parse("  \n ", v, 8, err, sizeof(err)), 0);

	static const struct {
		const char *list, *why; /* a word the reason must hold */
	} bad[] = {
		{"10.0.0.1:80=a,,10.0.0.2:80=b", "entry 2 is empty"},
		{"10.0.0.1:80=a,", "entry 2 is empty"},
		{",10.0.0.1:80=a", "entry 1 is empty"},
		{"10.0.0.1:80=a, 10.0.0.1:80=b", "10.0.0.1:80 is given twice"},
		/* The v4-mapped form is the same VIP. */
		{"10.0.0.1:80=a,[::ffff:10.0.0.1]:80=b", "given twice"},
		{"10.0.0.1:80=a, 10.0.0.2:80", "want VIP:PORT=MODEL"},
		{"10.0.0.1:80 = a", "port must be"},
		{"vip.example:80=a", "not an IP address"},
		{"10.0.0.1:99999=a", "port must be"},
		{"fd00::1:80=a", "IPv6 in brackets"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK_INT(kern_services_parse(bad[i].list, v, 8, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].why)) {
			fprintf(stderr, "  %s: reason \"%s\" lacks \"%s\"\n", bad[i].list, err,
				bad[i].why);
			CHECK(strstr(err, bad[i].why) != NULL);
		}
	}
	/* Bounded: no more entries than room, no entry longer than a service. */
	CHECK_INT(kern_services_parse("10.0.0.1:80=a,10.0.0.2:80=b,10.0.0.3:80=c", v, 2, err,
				      sizeof(err)),
		  -EINVAL);
	CHECK(strstr(err, "more than 2") != NULL);
	char big[2048];
	snprintf(big, sizeof(big), "10.0.0.1:80=");
	memset(big + strlen(big), 'm', 1000);
	big[1012] = '\0';
	CHECK_INT(kern_services_parse(big, v, 8, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "too long") != NULL);
}

static void test_merge(void)
{
	kern_service flags[2] = {svc("10.0.0.1:80=from-flag"), svc("10.0.0.2:80=b")};
	kern_service ann[3] = {svc("10.0.0.1:80=from-annotation"), svc("10.0.0.3:80=c"),
			       svc("[::ffff:10.0.0.2]:80=d")};
	kern_service out[KERN_MAX_SERVICES];
	char sh[128];
	CHECK_INT(kern_services_merge(flags, 2, ann, 3, out, KERN_MAX_SERVICES, sh, sizeof(sh)),
		  3);
	CHECK_STR(out[0].model, "from-flag"); /* a flag wins on its VIP:PORT */
	CHECK_STR(out[1].model, "b");
	CHECK_STR(out[2].vip, "10.0.0.3:80");
	CHECK_STR(sh, "10.0.0.1:80, 10.0.0.2:80");
	CHECK_INT(kern_services_merge(NULL, 0, ann, 3, out, KERN_MAX_SERVICES, sh, sizeof(sh)), 3);
	CHECK_STR(sh, "");
	CHECK_STR(out[0].model, "from-annotation");
	CHECK_INT(kern_services_merge(flags, 2, NULL, 0, out, KERN_MAX_SERVICES, sh, sizeof(sh)),
		  2);
	CHECK_INT(kern_services_merge(flags, 2, ann + 1, 1, out, 2, sh, sizeof(sh)), -E2BIG);
	/* The same service in both is no clash. */
	kern_service same = svc("10.0.0.2:80=b");
	CHECK_INT(kern_services_merge(flags, 2, &same, 1, out, KERN_MAX_SERVICES, sh, sizeof(sh)),
		  2);
	CHECK_STR(sh, "");
	/* A short buffer for the shadowed list is cut, never overrun. */
	char tiny[6];
	memset(tiny, 'x', sizeof(tiny));
	CHECK_INT(kern_services_merge(flags, 2, ann, 3, out, KERN_MAX_SERVICES, tiny, 5), 3);
	CHECK_INT(tiny[5], 'x');
	CHECK_INT(strlen(tiny), 4);
}

static void test_service_id(void)
{
	kern_service a = svc("10.0.0.1:80=m"), b = svc("10.0.0.1:81=m");
	kern_service c = svc("10.0.0.2:80=m"), d = svc("[::ffff:10.0.0.1]:80=other");
	CHECK(kern_service_id(&a) != kern_service_id(&b));
	CHECK(kern_service_id(&a) != kern_service_id(&c));
	/* The VIP:PORT alone: not the model, not the spelling. */
	CHECK_INT(kern_service_id(&a), kern_service_id(&d));
}

/* ---- kern_set_services on real maps ---- */

static bool can_run(const char *what, int err)
{
	if (err >= 0)
		return true;
	const char *ci = getenv("CI");
	if (geteuid() == 0 || (ci && !strcmp(ci, "true"))) {
		fprintf(stderr, "  FAIL %s: cannot create BPF maps: %s\n", what, strerror(-err));
		h_cur_failed = 1;
	} else {
		fprintf(stderr, "  SKIP %s: cannot create BPF maps here (%s); run as root\n", what,
			strerror(-err));
	}
	return false;
}

static struct kepp_svc_key key_of(const kern_service *s)
{
	struct kepp_svc_key k;
	kern_svc_key(s, &k);
	return k;
}

static bool in_map(int fd, const kern_service *s, uint32_t *model_tag)
{
	struct kepp_svc_key k = key_of(s);
	struct kepp_svc v;
	if (bpf_map_lookup_elem(fd, &k, &v) < 0)
		return false;
	if (model_tag)
		*model_tag = v.id;
	return true;
}

static void put(int fd, const kern_service *s, uint32_t tag)
{
	struct kepp_svc_key k = key_of(s);
	struct kepp_svc v;
	memset(&v, 0, sizeof(v));
	v.id = tag;
	CHECK_INT(bpf_map_update_elem(fd, &k, &v, BPF_ANY), 0);
}

static void test_set_services(void)
{
	LIBBPF_OPTS(bpf_map_create_opts, no_prealloc, .map_flags = BPF_F_NO_PREALLOC);
	int svc_fd = bpf_map_create(BPF_MAP_TYPE_HASH, "kepp_t_svc", sizeof(struct kepp_svc_key),
				    sizeof(struct kepp_svc), KEPP_MAX_SERVICES, &no_prealloc);
	if (!can_run("kern_set_services", svc_fd < 0 ? -errno : 0))
		return;
	int vip_fd = bpf_map_create(BPF_MAP_TYPE_PERCPU_HASH, "kepp_t_vip",
				    sizeof(struct kepp_svc_key), sizeof(struct kepp_vip_stats),
				    KEPP_MAX_SERVICES, NULL);
	CHECK(vip_fd >= 0);
	kern *k = calloc(1, sizeof(*k));
	CHECK(k != NULL);
	if (vip_fd < 0 || !k) {
		close(svc_fd);
		free(k);
		return;
	}
	k->svc_fd = svc_fd;
	k->vip_fd = vip_fd;
	kern_service a = svc("10.0.0.1:80=m"), b = svc("10.0.0.1:81=lora"),
		     left = svc("10.0.0.9:80=old"), c = svc("[fd00::1]:80=m6");
	/* A flag service in force (published), and one an earlier kepp left. */
	CHECK_INT(kern_set_services(k, &a, 1), 0);
	put(svc_fd, &a, 1);
	put(svc_fd, &left, 9);
	int ncpu = libbpf_num_possible_cpus();
	struct kepp_vip_stats *per = calloc((size_t)(ncpu > 0 ? ncpu : 1), sizeof(*per));
	struct kepp_svc_key lk = key_of(&left);
	CHECK(per && bpf_map_update_elem(vip_fd, &lk, per, BPF_ANY) == 0);

	/* The annotation adds b: a stays as published, the leftover goes (with
	 * its XDP counters), b waits for the next publish. */
	kern_service set1[2] = {a, b};
	CHECK_INT(kern_set_services(k, set1, 2), 0);
	uint32_t tag = 0;
	CHECK(in_map(svc_fd, &a, &tag) && tag == 1);
	CHECK(!in_map(svc_fd, &left, NULL));
	CHECK(!in_map(svc_fd, &b, NULL));
	CHECK(per && bpf_map_lookup_elem(vip_fd, &lk, per) < 0);
	CHECK_INT(k->n_svcs, 2);
	CHECK_STR(k->svcs[1].model, "lora");
	put(svc_fd, &b, 2);

	/* Refused sets change nothing. */
	kern_service dup[2] = {b, svc("[::ffff:10.0.0.1]:81=other")};
	CHECK_INT(kern_set_services(k, dup, 2), -EINVAL);
	CHECK_INT(kern_set_services(k, set1, KERN_MAX_SERVICES + 1), -E2BIG);
	CHECK_INT(k->n_svcs, 2);
	CHECK(in_map(svc_fd, &b, NULL));

	/* b's model changes, a is removed, c (IPv6) comes: a leaves the map at
	 * once, b keeps its table until the next publish replaces it. */
	kern_service b2 = svc("10.0.0.1:81=lora-v2");
	kern_service set2[2] = {b2, c};
	CHECK_INT(kern_set_services(k, set2, 2), 0);
	CHECK(!in_map(svc_fd, &a, NULL));
	CHECK(in_map(svc_fd, &b, &tag) && tag == 2);
	CHECK_STR(k->svcs[0].model, "lora-v2");
	CHECK_STR(k->svcs[1].vip, "[fd00::1]:80");

	/* Everything removed: an empty map. */
	CHECK_INT(kern_set_services(k, NULL, 0), 0);
	struct kepp_svc_key next;
	CHECK(bpf_map_get_next_key(svc_fd, NULL, &next) < 0);
	free(per);
	close(svc_fd);
	close(vip_fd);
	free(k);
}

/* ---- weights and --exclude-stale-endpoints ---- */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Three endpoints with the same load; |age_ms| < 0: no metrics at all. */
static store_snapshot *snap3(store_catalog *cat, const int64_t *age_ms)
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
		e->m.valid = age_ms[i] >= 0;
		e->m.update_ms = mono_ms() - (age_ms[i] >= 0 ? age_ms[i] : 0);
		e->m.waiting_queue = 1;
		e->m.kv_usage = 0.2;
	}
	return store_snapshot_new(cat, eps, 3, true);
}

static void weights_of(sched *s, store_catalog *cat, const int64_t *age, uint32_t *w,
		       sched_fastpath_info *info)
{
	store_snapshot *snap = snap3(cat, age);
	arena a;
	arena_init(&a, 4096);
	CHECK(snap != NULL);
	if (snap)
		CHECK_INT(sched_fastpath_weights(s, snap, "m", &a, w, info), 0);
	arena_free(&a);
	store_release(snap);
}

static void test_weights_exclude_stale(void)
{
	char err[512];
	sched *s = sched_new(NULL, err, sizeof(err));
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	store_catalog_finish(cat);
	uint32_t w[3];
	sched_fastpath_info info;
	int64_t one_stale[3] = {10, 60000, 10};
	int64_t one_missing[3] = {10, 10, -1};
	int64_t all_stale[3] = {60000, 60000, 60000};

	/* Off (the default): a stale endpoint still gets weight. */
	weights_of(s, cat, one_stale, w, &info);
	CHECK(w[0] > 0 && w[1] > 0 && w[2] > 0);
	CHECK_INT(info.n_kept, 3);

	/* --exclude-stale-endpoints: shed while others are fresh, as ext_proc. */
	sched_set_staleness(s, 2000);
	weights_of(s, cat, one_stale, w, &info);
	CHECK_INT(w[1], 0);
	CHECK(w[0] > 0 && w[2] > 0);
	CHECK_INT(w[0], w[2]);
	CHECK_INT(info.n_kept, 2);
	CHECK(!info.saturated);
	weights_of(s, cat, one_missing, w, &info);
	CHECK_INT(w[2], 0);
	CHECK(w[0] > 0 && w[1] > 0);
	CHECK_INT(info.n_kept, 2);

	/* None fresh: all stay (fail open), as ext_proc; the saturation
	 * detector still calls stale metrics full. */
	weights_of(s, cat, all_stale, w, &info);
	CHECK(w[0] > 0 && w[1] > 0 && w[2] > 0);
	CHECK_INT(info.n_kept, 3);
	CHECK(info.saturated);
	store_catalog_unref(cat);
	sched_free(s);
}

int main(void)
{
	log_set_verbosity(-100); /* kern_set_services logs each change */
	RUN(test_list_parse);
	RUN(test_merge);
	RUN(test_service_id);
	RUN(test_set_services);
	RUN(test_weights_exclude_stale);
	return harness_done();
}
