/* store: hazard-pointer publish/acquire under concurrency (run it under
 * ASan: a snapshot freed while a reader holds it is a use-after-free there),
 * reference counting of snapshots and catalogs, the documented sort orders
 * and lookups, endpoint lookup and address formatting. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "store/store.h"

static store_endpoint ep(const char *ip, uint16_t port)
{
	store_endpoint e;
	memset(&e, 0, sizeof(e));
	snprintf(e.ip, sizeof(e.ip), "%s", ip);
	e.port = port;
	store_format_addr(e.addr, sizeof(e.addr), ip, port);
	return e;
}

static void test_format_addr(void)
{
	char b[STORE_ADDR_MAX];
	CHECK_INT(store_format_addr(b, sizeof(b), "10.1.2.3", 8000), 13);
	CHECK_STR(b, "10.1.2.3:8000");
	CHECK(store_format_addr(b, sizeof(b), "fd00::1", 8000) > 0);
	CHECK_STR(b, "[fd00::1]:8000");
	CHECK_INT(store_format_addr(b, 8, "10.1.2.3", 8000), -ENOSPC);
	CHECK(store_format_addr(b, sizeof(b), "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
				65535) > 0);
	CHECK_STR(b, "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535");
}

/* A new store serves an empty, unsynced snapshot: readers never see NULL. */
static void test_empty_store(void)
{
	store *s = store_new();
	CHECK(s != NULL);
	const store_snapshot *snap = store_acquire(s);
	CHECK(snap && !snap->synced && snap->n_endpoints == 0 && snap->catalog != NULL);
	CHECK(snap->catalog->n_models == 0 && !snap->catalog->has_pool);
	store_release(snap);
	store_free(s);
	store_free(NULL);
}

/* A snapshot held by a reader outlives its replacement and is freed on the
 * last release; it owns copies of the endpoints, not the caller's. */
static void test_refcounts(void)
{
	store *s = store_new();
	store_catalog *c1 = store_catalog_new(), *c2 = store_catalog_new();
	store_catalog_finish(c1);
	store_catalog_finish(c2);
	store_endpoint eps[2] = {ep("10.0.0.1", 8000), ep("fd00::2", 8001)};
	const char *models[] = {"lora-a", "lora-b"};
	eps[0].name = "pod-a-rank-0";
	eps[0].pod = "pod-a";
	eps[1].m.active_models = models;
	eps[1].m.n_active_models = 2;
	store_snapshot *a = store_snapshot_new(c1, eps, 2, true);
	CHECK(a != NULL);
	CHECK_INT(atomic_load(&c1->refs), 2);
	/* The caller's copies may go away. */
	eps[0].name = "changed";
	models[0] = "changed";
	store_publish(s, a);

	const store_snapshot *held = store_acquire(s);
	CHECK(held == a);
	CHECK_INT(held->generation, 1);
	CHECK_STR(held->endpoints[0].name, "pod-a-rank-0");
	CHECK_STR(held->endpoints[0].pod, "pod-a");
	/* Static endpoints are named by their address. */
	CHECK_STR(held->endpoints[1].name, "[fd00::2]:8001");
	CHECK_STR(held->endpoints[1].pod, "");
	CHECK_INT(held->endpoints[1].index, 1);
	CHECK_STR(held->endpoints[1].m.active_models[0], "lora-a");

	store_snapshot *b = store_snapshot_new(c2, NULL, 0, true);
	store_publish(s, b);
	/* a is still referenced by |held|: its catalog too. */
	CHECK_INT(atomic_load(&c1->refs), 2);
	CHECK_STR(held->endpoints[0].addr, "10.0.0.1:8000");
	const store_snapshot *now = store_acquire(s);
	CHECK(now == b && now->generation == 2);
	store_release(now);
	store_release(held);
	CHECK_INT(atomic_load(&c1->refs), 1);
	CHECK_INT(atomic_load(&c2->refs), 2);
	store_free(s);
	CHECK_INT(atomic_load(&c2->refs), 1);
	store_catalog_unref(c1);
	store_catalog_unref(c2);
}

/* ---- concurrency ---------------------------------------------------------- */

#define PUBLISHES 20000

static store *cs;
static atomic_bool stop;
static atomic_long reads;

/* Every snapshot the writer makes is self-describing: n_endpoints and each
 * port follow from the generation, so a reader sees a torn or freed one. */
static void *reader(void *arg)
{
	long bad = 0, n = 0;
	uint64_t last = 0;
	while (!atomic_load(&stop)) {
		const store_snapshot *snap = store_acquire(cs);
		if (snap->generation < last)
			bad++;
		last = snap->generation;
		if (snap->generation) {
			uint32_t want = (uint32_t)(snap->generation % 7) + 1;
			if (snap->n_endpoints != want)
				bad++;
			for (uint32_t i = 0; i < snap->n_endpoints; i++)
				if (snap->endpoints[i].port != (uint16_t)(snap->generation + i) ||
				    snap->endpoints[i].index != i)
					bad++;
		}
		store_release(snap);
		n++;
	}
	atomic_fetch_add(&reads, n);
	return (void *)bad;
}

static void test_concurrent_publish(void)
{
	cs = store_new();
	atomic_store(&stop, false);
	atomic_store(&reads, 0);
	store_catalog *cat = store_catalog_new();
	store_catalog_finish(cat);
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		CHECK_INT(pthread_create(&th[i], NULL, reader, NULL), 0);
	for (uint64_t g = 1; g <= PUBLISHES; g++) {
		store_endpoint eps[8];
		uint32_t n = (uint32_t)(g % 7) + 1;
		for (uint32_t i = 0; i < n; i++)
			eps[i] = ep("10.0.0.1", (uint16_t)(g + i));
		store_snapshot *snap = store_snapshot_new(cat, eps, n, true);
		CHECK(snap != NULL);
		store_publish(cs, snap);
		CHECK_INT(snap->generation, g);
	}
	atomic_store(&stop, true);
	for (int i = 0; i < 2; i++) {
		void *bad;
		pthread_join(th[i], &bad);
		CHECK_INT((long)bad, 0);
	}
	CHECK(atomic_load(&reads) > 0);
	/* Only the current snapshot still holds the catalog. */
	CHECK_INT(atomic_load(&cat->refs), 2);
	store_free(cs);
	CHECK_INT(atomic_load(&cat->refs), 1);
	store_catalog_unref(cat);
}

/* Threads come and go (worker restarts, tests): their hazard slots are
 * given back, so more threads than slots over a lifetime is fine. */
static void *one_read(void *arg)
{
	store_release(store_acquire(arg));
	return NULL;
}

static void test_many_threads(void)
{
	store *s = store_new();
	for (int i = 0; i < 300; i++) {
		pthread_t t;
		CHECK_INT(pthread_create(&t, NULL, one_read, s), 0);
		pthread_join(t, NULL);
	}
	/* And one thread may read many stores. */
	for (int i = 0; i < 10; i++) {
		store *o = store_new();
		store_release(store_acquire(o));
		store_free(o);
	}
	store_free(s);
}

/* ---- catalog order and lookups ---------------------------------------------- */

static void test_catalog_lookups(void)
{
	store_catalog *c = store_catalog_new();
	static store_objective obj[] = {{"zeta", 1, true}, {"alpha", -1, true}, {"mid", 0, false}};
	static store_model models[] = {
		{.name = "new", .model_name = "chat", .created = 200},
		{.name = "a", .model_name = "base", .created = 7},
		{.name = "old", .model_name = "chat", .created = 100},
		{.name = "b", .model_name = "base", .created = 7},
		{.name = "x", .model_name = "chat-long", .created = 1},
	};
	static const char *m_a[] = {"a"}, *m_ab[] = {"x", "b"};
	static store_target t[] = {{"t0", 0, false}};
	static store_rewrite_rule rules[] = {
		{.rewrite_name = "gen-old", .created = 5, .targets = t, .n_targets = 1},
		{.rewrite_name = "new", .created = 9, .matches = m_a, .n_matches = 1, .order = 0},
		{.rewrite_name = "old", .created = 1, .matches = m_ab, .n_matches = 2, .order = 1},
		{.rewrite_name = "old", .created = 1, .matches = m_a, .n_matches = 1, .order = 0},
		{.rewrite_name = "gen-older", .created = 2},
	};
	c->objectives = obj;
	c->n_objectives = 3;
	c->models = models;
	c->n_models = 5;
	c->rules = rules;
	c->n_rules = 5;
	store_catalog_finish(c);

	CHECK_STR(c->objectives[0].name, "alpha");
	CHECK_STR(c->objectives[2].name, "zeta");
	CHECK(store_objective_find(c, "mid", 3) == &c->objectives[1]);
	CHECK(store_objective_find(c, "midway", 3) == &c->objectives[1]);
	CHECK(store_objective_find(c, "mi", 2) == NULL);
	CHECK(store_objective_find(c, "zz", 2) == NULL);
	CHECK(store_objective_find(c, "", 0) == NULL);

	/* Oldest wins on a modelName collision; equal times fall to the name. */
	const store_model *m = store_model_find(c, "chat", 4);
	CHECK(m && !strcmp(m->name, "old"));
	m = store_model_find(c, "base", 4);
	CHECK(m && !strcmp(m->name, "a"));
	m = store_model_find(c, "chat-long", 9);
	CHECK(m && !strcmp(m->name, "x"));
	CHECK(store_model_find(c, "cha", 3) == NULL);

	/* Exact before generic; then oldest parent; then list order. */
	CHECK_STR(c->rules[0].rewrite_name, "old");
	CHECK_INT(c->rules[0].order, 0);
	CHECK_INT(c->rules[1].order, 1);
	CHECK_STR(c->rules[2].rewrite_name, "new");
	CHECK_STR(c->rules[3].rewrite_name, "gen-older");
	CHECK_STR(c->rules[4].rewrite_name, "gen-old");
	const store_rewrite_rule *r = store_rewrite_find(c, "a", 1);
	CHECK(r && !strcmp(r->rewrite_name, "old") && r->order == 0);
	r = store_rewrite_find(c, "b", 1);
	CHECK(r && !strcmp(r->rewrite_name, "old") && r->order == 1);
	r = store_rewrite_find(c, "nothing", 7);
	CHECK(r && !strcmp(r->rewrite_name, "gen-older"));

	/* The arrays are static here, outside the catalog arena. */
	store_catalog_unref(c);

	store_catalog *e = store_catalog_new();
	store_catalog_finish(e);
	CHECK(store_rewrite_find(e, "a", 1) == NULL);
	CHECK(store_model_find(e, "a", 1) == NULL);
	CHECK(store_objective_find(e, "a", 1) == NULL);
	store_catalog_unref(e);
}

static void test_endpoint_find(void)
{
	store_catalog *c = store_catalog_new();
	store_catalog_finish(c);
	store_endpoint eps[3] = {ep("10.0.0.1", 8000), ep("10.0.0.1", 8001), ep("fd00::1", 8000)};
	store_snapshot *s = store_snapshot_new(c, eps, 3, true);
	store_catalog_unref(c);
	CHECK(store_endpoint_find(s, "10.0.0.1", 8, -1) == &s->endpoints[0]);
	CHECK(store_endpoint_find(s, "10.0.0.1", 8, 8001) == &s->endpoints[1]);
	CHECK(store_endpoint_find(s, "10.0.0.1:8001", 8, 8001) == &s->endpoints[1]);
	CHECK(store_endpoint_find(s, "10.0.0.1", 8, 9000) == NULL);
	CHECK(store_endpoint_find(s, "10.0.0.10", 9, -1) == NULL);
	CHECK(store_endpoint_find(s, "10.0.0.", 7, -1) == NULL);
	CHECK(store_endpoint_find(s, "fd00::1", 7, 8000) == &s->endpoints[2]);
	store_release(s);
}

int main(void)
{
	RUN(test_format_addr);
	RUN(test_empty_store);
	RUN(test_refcounts);
	RUN(test_concurrent_publish);
	RUN(test_many_threads);
	RUN(test_catalog_lookups);
	RUN(test_endpoint_find);
	return harness_done();
}
