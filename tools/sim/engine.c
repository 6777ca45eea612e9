/* The simulated engine: vLLM-like continuous batching over a paged KV cache.
 *
 * Each step the batch that ran emits one token per request (the first token
 * for requests admitted in the previous step), finished requests release
 * their blocks, then waiting requests are admitted FCFS while the batch has
 * room (--max-num-seqs), the KV cache has blocks and the prefill budget
 * (--max-num-batched-tokens) allows. A step lasts
 *   decode_ms + decode_ms_per_seq * batch + prefill_ms_per_token * uncached
 *   prompt tokens admitted + lora_load_ms * adapters loaded,
 * times --time-scale. A request reserves the blocks for its whole sequence at
 * admission, so the simulator never preempts. Full prompt blocks are chained
 * with xxhash64 (seeded per LoRA adapter) and stay cached after release in
 * an LRU, so a repeated prefix costs no prefill. */
#include "sim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include <event2/http.h>
#include <xxhash.h>

#define NIL (-1)

static void step_cb(evutil_socket_t fd, short what, void *arg);

static struct kv_block *blk(struct sim_engine *e, int32_t i)
{
	return &e->blocks[i];
}

static void list_del(struct sim_engine *e, int32_t i)
{
	struct kv_block *b = blk(e, i);

	blk(e, b->prev)->next = b->next;
	blk(e, b->next)->prev = b->prev;
	b->prev = b->next = i;
}

static void list_add_tail(struct sim_engine *e, int32_t head, int32_t i)
{
	struct kv_block *h = blk(e, head), *b = blk(e, i);

	b->prev = h->prev;
	b->next = head;
	blk(e, h->prev)->next = i;
	h->prev = i;
}

static uint32_t bucket_of(const struct sim_engine *e, uint64_t hash)
{
	return (uint32_t)(hash ^ (hash >> 32)) & (e->nbuckets - 1);
}

static int32_t cache_lookup(struct sim_engine *e, uint64_t hash)
{
	for (int32_t i = e->buckets[bucket_of(e, hash)]; i != NIL; i = blk(e, i)->hnext)
		if (blk(e, i)->hash == hash)
			return i;
	return NIL;
}

static void cache_insert(struct sim_engine *e, int32_t i, uint64_t hash)
{
	uint32_t h = bucket_of(e, hash);

	blk(e, i)->hash = hash;
	blk(e, i)->hashed = true;
	blk(e, i)->hnext = e->buckets[h];
	e->buckets[h] = i;
}

static void cache_remove(struct sim_engine *e, int32_t i)
{
	int32_t *pp = &e->buckets[bucket_of(e, blk(e, i)->hash)];

	while (*pp != NIL && *pp != i)
		pp = &blk(e, *pp)->hnext;
	if (*pp == i)
		*pp = blk(e, i)->hnext;
	blk(e, i)->hashed = false;
	blk(e, i)->hnext = NIL;
}

/* A free block: an uncached one first, else the least recently used cached one. */
static int32_t block_alloc(struct sim_engine *e)
{
	int32_t i;

	if (e->nfree > 0) {
		i = blk(e, e->free_head)->next;
		e->nfree--;
	} else {
		i = blk(e, e->lru_head)->next;
		e->nlru--;
		cache_remove(e, i);
	}
	list_del(e, i);
	blk(e, i)->ref = 1;
	return i;
}

static void block_release(struct sim_engine *e, int32_t i)
{
	struct kv_block *b = blk(e, i);

	if (--b->ref > 0)
		return;
	if (b->hashed) {
		list_add_tail(e, e->lru_head, i);
		e->nlru++;
	} else {
		list_add_tail(e, e->free_head, i);
		e->nfree++;
	}
}

int sim_engine_init(struct sim_inst *in)
{
	struct sim_engine *e = &in->eng;
	int n = in->cfg->num_gpu_blocks;

	memset(e, 0, sizeof(*e));
	TAILQ_INIT(&e->waiting);
	TAILQ_INIT(&e->running);
	e->blocks = calloc((size_t)n + 2, sizeof(*e->blocks));
	e->nbuckets = 1;
	while (e->nbuckets < (uint32_t)n)
		e->nbuckets <<= 1;
	e->buckets = malloc(e->nbuckets * sizeof(*e->buckets));
	in->adapters = calloc(SIM_MAX_ADAPTERS, sizeof(*in->adapters));
	e->step_ev = evtimer_new(in->base, step_cb, in);
	if (!e->blocks || !e->buckets || !in->adapters || !e->step_ev)
		return -ENOMEM;
	for (uint32_t i = 0; i < e->nbuckets; i++)
		e->buckets[i] = NIL;
	e->free_head = n;
	e->lru_head = n + 1;
	blk(e, e->free_head)->prev = blk(e, e->free_head)->next = e->free_head;
	blk(e, e->lru_head)->prev = blk(e, e->lru_head)->next = e->lru_head;
	for (int i = 0; i < n; i++) {
		blk(e, i)->hnext = NIL;
		list_add_tail(e, e->free_head, i);
	}
	e->nfree = n;
	for (size_t i = 0; i < sizeof(e->slots) / sizeof(e->slots[0]); i++)
		e->slots[i] = NIL;
	for (int i = 0; i < SIM_MAX_ADAPTERS; i++)
		in->adapters[i].slot = NIL;
	return 0;
}

double sim_engine_kv_usage(const struct sim_inst *in)
{
	const struct sim_engine *e = &in->eng;
	int n = in->cfg->num_gpu_blocks;

	return (double)(n - e->nfree - e->nlru) / n;
}

void sim_engine_reset_prefix_cache(struct sim_inst *in)
{
	struct sim_engine *e = &in->eng;

	while (e->nlru > 0) {
		int32_t i = blk(e, e->lru_head)->next;

		list_del(e, i);
		cache_remove(e, i);
		e->nlru--;
		list_add_tail(e, e->free_head, i);
		e->nfree++;
	}
}

int sim_adapter_find(const struct sim_inst *in, const char *name)
{
	for (int i = 0; i < SIM_MAX_ADAPTERS; i++)
		if (in->adapters[i].registered && !strcmp(in->adapters[i].name, name))
			return i;
	return NIL;
}

int sim_adapter_add(struct sim_inst *in, const char *name, const char *path)
{
	size_t n = strlen(name);

	if (n == 0 || n >= SIM_MAX_NAME || strlen(path) >= sizeof(in->adapters[0].path))
		return -EINVAL;
	if (!strcmp(name, in->cfg->model) || sim_adapter_find(in, name) >= 0)
		return -EEXIST;
	for (int i = 0; i < SIM_MAX_ADAPTERS; i++) {
		struct sim_adapter *a = &in->adapters[i];

		if (a->registered || a->running || a->waiting)
			continue;
		if (a->slot >= 0)
			in->eng.slots[a->slot] = NIL;
		memcpy(a->name, name, n + 1);
		snprintf(a->path, sizeof(a->path), "%s", path);
		a->seed = XXH64(name, n, 0x5ca1ab1e) | 1;
		a->registered = true;
		a->slot = NIL;
		return 0;
	}
	return -ENOSPC;
}

int sim_adapter_remove(struct sim_inst *in, const char *name)
{
	int i = sim_adapter_find(in, name);

	if (i < 0)
		return -ENOENT;
	/* Requests already accepted finish on it; the entry is reused once idle. */
	in->adapters[i].registered = false;
	return 0;
}

void sim_adapters_list(const struct sim_inst *in, bool running, char *out, size_t cap)
{
	size_t len = 0;

	out[0] = '\0';
	for (int i = 0; i < SIM_MAX_ADAPTERS && len + 1 < cap; i++) {
		const struct sim_adapter *a = &in->adapters[i];
		int w;

		if (running ? !a->running : !a->waiting)
			continue;
		w = snprintf(out + len, cap - len, "%s%s", len ? "," : "", a->name);
		if (w < 0 || (size_t)w >= cap - len) {
			out[len] = '\0';
			break;
		}
		len += (size_t)w;
	}
}

static void arm(struct sim_inst *in, double ms)
{
	double us = ms * in->cfg->time_scale * 1000.0;
	struct timeval tv = {
		.tv_sec = (time_t)(us / 1e6),
		.tv_usec = (long)((long long)us % 1000000),
	};

	in->eng.stepping = true;
	evtimer_add(in->eng.step_ev, &tv);
}

static bool gone(const struct sim_req *r)
{
	return evhttp_request_get_connection(r->http) == NULL;
}

static void finish(struct sim_inst *in, struct sim_req *r, bool answer)
{
	struct sim_engine *e = &in->eng;

	if (r->state == RQ_RUNNING) {
		TAILQ_REMOVE(&e->running, r, link);
		e->nrunning--;
		for (int i = r->nblocks - 1; i >= 0; i--)
			block_release(e, r->blocks[i]);
		if (r->adapter >= 0)
			in->adapters[r->adapter].running--;
	} else {
		TAILQ_REMOVE(&e->waiting, r, link);
		e->nwaiting--;
		if (r->adapter >= 0)
			in->adapters[r->adapter].waiting--;
	}
	if (answer)
		sim_http_finish(r);
	else /* evhttp detached it when the client left: it is ours to free */
		evhttp_request_free(r->http);
	sim_req_free(r);
}

/* A LoRA slot for adapter |a|: its own, an empty one, or the least recently
 * used one whose adapter runs nothing. -1 when every slot is busy. */
static int lora_slot(struct sim_inst *in, int a, bool *load)
{
	struct sim_engine *e = &in->eng;
	int best = NIL;

	*load = false;
	if (in->adapters[a].slot >= 0)
		return in->adapters[a].slot;
	for (int s = 0; s < in->cfg->max_loras; s++) {
		int held = e->slots[s];

		if (held == NIL)
			return *load = true, s;
		if (in->adapters[held].running == 0 &&
		    (best == NIL || e->slot_used[s] < e->slot_used[best]))
			best = s;
	}
	*load = best != NIL;
	return best;
}

/* Admits waiting requests; returns the prefill tokens and LoRA loads added. */
static void admit(struct sim_inst *in, int *prefill, int *loads)
{
	struct sim_engine *e = &in->eng;
	const struct sim_config *c = in->cfg;
	struct sim_req *r, *next;
	int scanned = 0;

	*prefill = *loads = 0;
	for (r = TAILQ_FIRST(&e->waiting); r && e->nrunning < c->max_num_seqs; r = next) {
		int hits = 0, lru_hits = 0, uncached, slot = NIL;
		bool load = false;

		next = TAILQ_NEXT(r, link);
		if (gone(r)) {
			finish(in, r, false);
			continue;
		}
		/* Requests skipped for want of a LoRA slot let others pass, as in vLLM,
		 * but the scan is bounded. */
		if (++scanned > 4 * c->max_num_seqs)
			break;
		if (r->adapter >= 0) {
			slot = lora_slot(in, r->adapter, &load);
			if (slot < 0)
				continue;
		}
		for (; hits < r->nhash; hits++) {
			int32_t b = cache_lookup(e, r->hashes[hits]);

			if (b == NIL)
				break;
			lru_hits += blk(e, b)->ref == 0;
		}
		if (e->nfree + e->nlru - lru_hits < r->nblocks - hits)
			break;
		uncached = r->prompt_tokens - hits * c->block_size;
		if (uncached < 1)
			uncached = 1;
		if (*prefill > 0 && *prefill + uncached > c->max_num_batched_tokens)
			break;

		if (slot >= 0) {
			if (load) {
				int old = e->slots[slot];

				if (old != NIL)
					in->adapters[old].slot = NIL;
				e->slots[slot] = r->adapter;
				in->adapters[r->adapter].slot = slot;
				e->lora_loads++;
				(*loads)++;
			}
			e->slot_used[slot] = ++e->tick;
		}
		for (int i = 0; i < hits; i++) {
			int32_t b = cache_lookup(e, r->hashes[i]);

			if (blk(e, b)->ref++ == 0) {
				list_del(e, b);
				e->nlru--;
			}
			r->blocks[i] = b;
		}
		for (int i = hits; i < r->nblocks; i++) {
			r->blocks[i] = block_alloc(e);
			if (i < r->nhash && cache_lookup(e, r->hashes[i]) == NIL)
				cache_insert(e, r->blocks[i], r->hashes[i]);
		}
		r->cached_tokens = hits * c->block_size;
		if (r->cached_tokens > r->prompt_tokens)
			r->cached_tokens = r->prompt_tokens;
		e->prefix_queries += (uint64_t)r->prompt_tokens;
		e->prefix_hits += (uint64_t)r->cached_tokens;
		*prefill += uncached;

		TAILQ_REMOVE(&e->waiting, r, link);
		e->nwaiting--;
		TAILQ_INSERT_TAIL(&e->running, r, link);
		e->nrunning++;
		r->state = RQ_RUNNING;
		if (r->adapter >= 0) {
			in->adapters[r->adapter].waiting--;
			in->adapters[r->adapter].running++;
		}
	}
}

static void step_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim_inst *in = arg;
	struct sim_engine *e = &in->eng;
	const struct sim_config *c = in->cfg;
	struct sim_req *r, *next;
	int prefill, loads;

	e->stepping = false;
	for (r = TAILQ_FIRST(&e->running); r; r = next) {
		bool last;

		next = TAILQ_NEXT(r, link);
		if (gone(r)) {
			finish(in, r, false);
			continue;
		}
		last = ++r->generated >= r->max_tokens;
		e->generation_tokens_total++;
		sim_http_token(r, r->generated - 1, last);
		if (last) {
			e->requests_total++;
			finish(in, r, true);
		}
	}
	admit(in, &prefill, &loads);
	if (e->nrunning == 0)
		return;
	arm(in, c->decode_ms + c->decode_ms_per_seq * e->nrunning +
		c->prefill_ms_per_token * prefill + c->lora_load_ms * loads);
}

int sim_engine_submit(struct sim_inst *in, struct sim_req *r, const char *text, size_t n)
{
	struct sim_engine *e = &in->eng;
	const struct sim_config *c = in->cfg;
	size_t chunk = (size_t)c->block_size * 4;
	long total;
	uint64_t h;

	r->prompt_tokens = n / 4 + (n % 4 != 0);
	if (r->prompt_tokens < 1)
		r->prompt_tokens = 1;
	total = (long)r->prompt_tokens + r->max_tokens;
	if (n / 4 > (size_t)c->max_model_len || total > c->max_model_len)
		return -E2BIG;
	if (e->nwaiting >= c->max_waiting)
		return -EAGAIN;
	r->nblocks = (int)((total + c->block_size - 1) / c->block_size);
	r->nhash = (int)(n / chunk);
	r->blocks = malloc((size_t)r->nblocks * sizeof(*r->blocks));
	r->hashes = malloc(((size_t)r->nhash + 1) * sizeof(*r->hashes));
	if (!r->blocks || !r->hashes)
		return -ENOMEM;
	h = r->adapter >= 0 ? in->adapters[r->adapter].seed : 0;
	for (int i = 0; i < r->nhash; i++)
		r->hashes[i] = h = XXH64(text + (size_t)i * chunk, chunk, h);
	r->state = RQ_WAITING;
	TAILQ_INSERT_TAIL(&e->waiting, r, link);
	e->nwaiting++;
	e->prompt_tokens_total += (uint64_t)r->prompt_tokens;
	if (r->adapter >= 0)
		in->adapters[r->adapter].waiting++;
	if (!e->stepping)
		arm(in, 0);
	return 0;
}

void sim_engine_abort_all(struct sim_inst *in)
{
	struct sim_engine *e = &in->eng;

	while (!TAILQ_EMPTY(&e->running))
		finish(in, TAILQ_FIRST(&e->running), true);
	while (!TAILQ_EMPTY(&e->waiting))
		finish(in, TAILQ_FIRST(&e->waiting), true);
}

void sim_engine_free(struct sim_inst *in)
{
	struct sim_engine *e = &in->eng;

	if (e->step_ev)
		event_free(e->step_ev);
	free(e->blocks);
	free(e->buckets);
	free(in->adapters);
	memset(e, 0, sizeof(*e));
	in->adapters = NULL;
}
