/* Snapshots published with one atomic swap and read without locks.
 *
 * The race a plain refcount has (a reader loads the pointer, the publisher
 * swaps and frees, the reader increments freed memory) is closed with hazard
 * pointers: a reader announces the pointer it is about to take in its own
 * slot and re-checks that it is still current; the publisher, after the swap,
 * waits until no slot announces the old pointer before dropping its reference.
 * Readers hold a slot for a few instructions only, so the wait is short. */
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define STORE_MAX_THREADS 256

struct store {
	_Atomic(store_snapshot *) current;
	/* hazard[i] belongs to the thread holding slot i (in every store). */
	_Atomic(store_snapshot *) hazard[STORE_MAX_THREADS];
	atomic_ulong generation;
};

/* Hazard slots are per thread, shared by all stores, claimed on a thread's
 * first acquire and given back when it exits, so short-lived threads (tests,
 * restarts of a worker) never run out of them. */
static atomic_bool slot_used[STORE_MAX_THREADS];
static pthread_key_t slot_key;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;
static __thread int my_slot_id = -1;

static void slot_release(void *v) { atomic_store(&slot_used[(intptr_t)v - 1], false); }

static void slot_key_init(void) { pthread_key_create(&slot_key, slot_release); }

static int my_slot(void)
{
	if (my_slot_id >= 0)
		return my_slot_id;
	pthread_once(&slot_once, slot_key_init);
	for (int i = 0; i < STORE_MAX_THREADS; i++) {
		bool free_slot = false;
		if (atomic_compare_exchange_strong(&slot_used[i], &free_slot, true)) {
			pthread_setspecific(slot_key, (void *)(intptr_t)(i + 1));
			my_slot_id = i;
			return i;
		}
	}
	return -1;
}

static void snapshot_free(store_snapshot *snap)
{
	if (snap->sched_release)
		snap->sched_release(snap->sched);
	store_catalog_unref(snap->catalog);
	arena_free(&snap->mem);
	free(atomic_load(&snap->derived));
	free(snap);
}

store *store_new(void)
{
	store *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	store_catalog *c = store_catalog_new();
	if (!c) {
		free(s);
		return NULL;
	}
	store_catalog_finish(c);
	/* An empty, unsynced snapshot so readers never see NULL. */
	store_snapshot *empty = store_snapshot_new(c, NULL, 0, false);
	store_catalog_unref(c);
	if (!empty) {
		free(s);
		return NULL;
	}
	atomic_store(&s->current, empty);
	return s;
}

void store_free(store *s)
{
	if (!s)
		return;
	store_snapshot *cur = atomic_exchange(&s->current, NULL);
	if (cur)
		store_release(cur);
	free(s);
}

const store_snapshot *store_acquire(store *s)
{
	int slot = my_slot();
	store_snapshot *p;
	if (slot < 0) {
		/* Workers are bounded by the core count; more than
		 * STORE_MAX_THREADS readers is a wiring bug, not input. */
		fprintf(stderr, "kepp: more than %d threads read the store\n", STORE_MAX_THREADS);
		abort();
	}
	for (;;) {
		p = atomic_load(&s->current);
		atomic_store(&s->hazard[slot], p);
		if (atomic_load(&s->current) == p)
			break;
	}
	atomic_fetch_add(&p->refs, 1);
	atomic_store(&s->hazard[slot], NULL);
	return p;
}

void store_release(const store_snapshot *snap)
{
	store_snapshot *p = (store_snapshot *)snap;
	if (p && atomic_fetch_sub(&p->refs, 1) == 1)
		snapshot_free(p);
}

void store_publish(store *s, store_snapshot *snap)
{
	snap->generation = atomic_fetch_add(&s->generation, 1) + 1;
	store_snapshot *old = atomic_exchange(&s->current, snap);
	if (!old)
		return;
	/* Every slot, not just the claimed ones: a reader that claims a slot
	 * right now has not loaded |current| yet, so it cannot hold |old|. */
	for (int i = 0; i < STORE_MAX_THREADS; i++)
		while (atomic_load(&s->hazard[i]) == old)
			sched_yield();
	store_release(old);
}

/* ---- catalog ----------------------------------------------------------- */

store_catalog *store_catalog_new(void)
{
	store_catalog *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	atomic_init(&c->refs, 1);
	arena_init(&c->mem, 16384);
	return c;
}

void store_catalog_ref(store_catalog *c) { atomic_fetch_add(&c->refs, 1); }

void store_catalog_unref(store_catalog *c)
{
	if (c && atomic_fetch_sub(&c->refs, 1) == 1) {
		arena_free(&c->mem);
		free(c);
	}
}

static int cmp_objective(const void *a, const void *b)
{
	return strcmp(((const store_objective *)a)->name, ((const store_objective *)b)->name);
}

static int cmp_model(const void *a, const void *b)
{
	const store_model *x = a, *y = b;
	int r = strcmp(x->model_name, y->model_name);
	if (r)
		return r;
	if (x->created != y->created)
		return x->created < y->created ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Precedence of spec §1.6: exact-model rules first, then generic ones; then
 * the oldest parent; then parent name (stable across reloads); then order. */
static int cmp_rule(const void *a, const void *b)
{
	const store_rewrite_rule *x = a, *y = b;
	int gx = x->n_matches == 0, gy = y->n_matches == 0;
	if (gx != gy)
		return gx - gy;
	if (x->created != y->created)
		return x->created < y->created ? -1 : 1;
	int r = strcmp(x->rewrite_name, y->rewrite_name);
	if (r)
		return r;
	return (x->order > y->order) - (x->order < y->order);
}

void store_catalog_finish(store_catalog *c)
{
	if (c->n_objectives)
		qsort(c->objectives, c->n_objectives, sizeof(*c->objectives), cmp_objective);
	if (c->n_models)
		qsort(c->models, c->n_models, sizeof(*c->models), cmp_model);
	if (c->n_rules)
		qsort(c->rules, c->n_rules, sizeof(*c->rules), cmp_rule);
}

/* Compares a NUL-terminated |s| with the |len| bytes at |k|. */
static int keycmp(const char *s, const char *k, size_t len)
{
	int r = strncmp(s, k, len);
	if (r)
		return r;
	return s[len] != '\0';
}

const store_objective *store_objective_find(const store_catalog *c, const char *name, size_t len)
{
	size_t lo = 0, hi = c->n_objectives;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int r = keycmp(c->objectives[mid].name, name, len);
		if (r == 0)
			return &c->objectives[mid];
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const store_model *store_model_find(const store_catalog *c, const char *model, size_t len)
{
	/* Lower bound: the first (oldest) of equal model names wins collisions. */
	size_t lo = 0, hi = c->n_models;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (keycmp(c->models[mid].model_name, model, len) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < c->n_models && keycmp(c->models[lo].model_name, model, len) == 0)
		return &c->models[lo];
	return NULL;
}

const store_rewrite_rule *store_rewrite_find(const store_catalog *c, const char *model,
					     size_t len)
{
	for (uint32_t i = 0; i < c->n_rules; i++) {
		const store_rewrite_rule *r = &c->rules[i];
		if (r->n_matches == 0)
			return r; /* generic rules come after every exact rule */
		for (uint32_t m = 0; m < r->n_matches; m++)
			if (keycmp(r->matches[m], model, len) == 0)
				return r;
	}
	return NULL;
}

/* ---- snapshots --------------------------------------------------------- */

static const char **copy_strs(arena *a, const char **v, uint32_t n)
{
	if (!n)
		return NULL;
	const char **out = arena_alloc(a, n * sizeof(*out));
	if (!out)
		return NULL;
	for (uint32_t i = 0; i < n; i++) {
		out[i] = arena_strdup(a, v[i] ? v[i] : "");
		if (!out[i])
			return NULL;
	}
	return out;
}

store_snapshot *store_snapshot_new(store_catalog *catalog, const store_endpoint *eps,
				   uint32_t n_eps, bool synced)
{
	store_snapshot *snap = calloc(1, sizeof(*snap));
	if (!snap)
		return NULL;
	static _Atomic uint64_t serials;
	atomic_init(&snap->refs, 1);
	arena_init(&snap->mem, 16384);
	snap->serial = atomic_fetch_add(&serials, 1) + 1;
	snap->synced = synced;
	if (n_eps) {
		snap->endpoints = arena_alloc(&snap->mem, n_eps * sizeof(*eps));
		if (!snap->endpoints)
			goto fail;
		for (uint32_t i = 0; i < n_eps; i++) {
			store_endpoint *e = &snap->endpoints[i];
			*e = eps[i];
			e->index = i;
			e->name = arena_strdup(&snap->mem, eps[i].name ? eps[i].name : eps[i].addr);
			e->pod = arena_strdup(&snap->mem, eps[i].pod ? eps[i].pod : "");
			e->name_hash = e->name ? store_name_hash(e->name) : 0;
			e->m.active_models = copy_strs(&snap->mem, eps[i].m.active_models,
						       eps[i].m.n_active_models);
			e->m.waiting_models = copy_strs(&snap->mem, eps[i].m.waiting_models,
							eps[i].m.n_waiting_models);
			if (!e->name || !e->pod ||
			    (eps[i].m.n_active_models && !e->m.active_models) ||
			    (eps[i].m.n_waiting_models && !e->m.waiting_models))
				goto fail;
		}
	}
	snap->n_endpoints = n_eps;
	store_catalog_ref(catalog);
	snap->catalog = catalog;
	return snap;
fail:
	arena_free(&snap->mem);
	free(snap);
	return NULL;
}

void store_snapshot_attach_sched(store_snapshot *snap, const struct sched *s,
				 void (*release)(const struct sched *s))
{
	snap->sched = s;
	snap->sched_release = release;
}

const store_endpoint *store_endpoint_find(const store_snapshot *snap, const char *ip,
					  size_t ip_len, int port)
{
	for (uint32_t i = 0; i < snap->n_endpoints; i++) {
		const store_endpoint *e = &snap->endpoints[i];
		if (keycmp(e->ip, ip, ip_len) == 0 && (port < 0 || e->port == port))
			return e;
	}
	return NULL;
}

uint64_t store_name_hash(const char *name)
{
	return XXH64(name, strlen(name), 0);
}

int store_format_addr(char *out, size_t cap, const char *ip, uint16_t port)
{
	int n = strchr(ip, ':') ? snprintf(out, cap, "[%s]:%u", ip, port)
				: snprintf(out, cap, "%s:%u", ip, port);
	return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}
