/* Scorers (spec §4.2): raw scores per endpoint; the framework clamps them to
 * [0,1], multiplies by the profile weight and sums. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "sched/plugins.h"

/* queue-scorer and running-requests-size-scorer: min-max normalisation over
 * the candidates, 1.0 for everyone when all are equal. The reference works
 * on integer gauges; the values are truncated the same way.
 *
 * Deviation from the reference, which scores the scraped gauge alone and so
 * herds every request of a burst between two scrapes onto the pod that
 * looked idle: the requests kepp sent to an endpoint after the scrape its
 * snapshot shows, and that have not finished, are added to the gauge (they
 * are queued or running there, but no scrape has seen them yet). */
static void minmax_score(const sched_ctx *c, const store_endpoint *const *eps, size_t n,
			 double *out, bool use_running)
{
	long long lo = 0, hi = 0;
	for (size_t i = 0; i < n; i++) {
		const store_metrics *m = &eps[i]->m;
		long long v = (long long)(use_running ? m->running : m->waiting_queue);
		v += inflight_since_ep(c, eps[i]);
		out[i] = (double)v;
		if (i == 0 || v < lo)
			lo = v;
		if (i == 0 || v > hi)
			hi = v;
	}
	for (size_t i = 0; i < n; i++)
		out[i] = hi == lo ? 1.0 : (double)(hi - (long long)out[i]) / (double)(hi - lo);
}

static void queue_score(const sched_plugin *p, const sched_ctx *c, const store_endpoint *const *eps,
			size_t n, double *out)
{
	(void)p;
	minmax_score(c, eps, n, out, false);
}

static void running_score(const sched_plugin *p, const sched_ctx *c,
			  const store_endpoint *const *eps, size_t n, double *out)
{
	(void)p;
	minmax_score(c, eps, n, out, true);
}

static void kv_score(const sched_plugin *p, const sched_ctx *c, const store_endpoint *const *eps,
		     size_t n, double *out)
{
	(void)p;
	(void)c;
	for (size_t i = 0; i < n; i++)
		out[i] = 1.0 - eps[i]->m.kv_usage;
}

static bool has_model(const char *const *list, uint32_t n, sched_str m)
{
	for (uint32_t i = 0; i < n; i++)
		if (list[i] && strlen(list[i]) == m.len && memcmp(list[i], m.p, m.len) == 0)
			return true;
	return false;
}

/* kepp extension of lora-affinity-scorer (parameter residentAdapters, off
 * by default: the reference's scores). vllm:lora_requests_info lists only
 * adapters with requests running or waiting, so an adapter a pod loaded and
 * keeps idle in one of its max_lora slots is invisible, and a request for it
 * may go where it must be loaded again. kepp remembers, per endpoint, the
 * adapters it sent there most recently and models the pod's LRU of
 * max_lora slots: an adapter among the max_lora most recent ones (counting
 * adapters the metrics show that kepp did not send) scores 0.9, between
 * active (1.0) and room to load (0.8). Workers update it lock-free; races
 * only blur the recency order. */
#define LORA_EPS 4096  /* endpoints remembered */
#define LORA_WAYS 8    /* adapters remembered per endpoint */
#define LORA_PROBE 16

struct lora_way {
	_Atomic uint64_t model; /* hash of the adapter name, 0: empty */
	_Atomic int64_t used_ms;
};

struct lora_ep {
	_Atomic uint64_t ep; /* hash of the endpoint name, 0: free */
	struct lora_way way[LORA_WAYS];
};

struct lora_cfg {
	struct lora_ep *tab; /* NULL: the reference's scores */
};

static uint64_t nz_hash(const char *p, size_t len)
{
	uint64_t h = XXH3_64bits(p, len);
	return h ? h : 1;
}

static struct lora_ep *lora_ep_find(struct lora_ep *tab, const char *name, bool claim)
{
	uint64_t h = nz_hash(name, strlen(name));
	for (size_t i = 0; i < LORA_PROBE; i++) {
		struct lora_ep *e = &tab[(h + i) & (LORA_EPS - 1)];
		uint64_t cur = atomic_load(&e->ep);
		if (cur == h)
			return e;
		if (cur == 0) {
			if (!claim)
				return NULL;
			if (atomic_compare_exchange_strong(&e->ep, &cur, h) || cur == h)
				return e;
		}
	}
	return NULL;
}

static bool lora_resident(const struct lora_cfg *cfg, const store_endpoint *ep, sched_str model)
{
	const store_metrics *m = &ep->m;
	if (m->max_lora <= 0)
		return false;
	struct lora_ep *e = lora_ep_find(cfg->tab, ep->name, false);
	if (!e)
		return false;
	uint64_t mh = nz_hash(model.p, model.len);
	int64_t mine = -1;
	for (int w = 0; w < LORA_WAYS; w++)
		if (atomic_load(&e->way[w].model) == mh)
			mine = atomic_load(&e->way[w].used_ms);
	if (mine < 0)
		return false;
	int64_t newer = 0;
	for (int w = 0; w < LORA_WAYS; w++) {
		uint64_t h = atomic_load(&e->way[w].model);
		if (h && h != mh && atomic_load(&e->way[w].used_ms) > mine)
			newer++;
	}
	/* Adapters busy on the pod that kepp did not send there hold slots too. */
	for (uint32_t i = 0; i < m->n_active_models; i++) {
		const char *a = m->active_models[i];
		if (!a)
			continue;
		uint64_t h = nz_hash(a, strlen(a));
		bool known = false;
		for (int w = 0; w < LORA_WAYS && !known; w++)
			known = atomic_load(&e->way[w].model) == h;
		newer += !known;
	}
	return newer < m->max_lora;
}

static void lora_pre_request(const sched_plugin *p, const sched_ctx *c,
			     const store_endpoint *const *picked, size_t n)
{
	const struct lora_cfg *cfg = p->cfg;
	if (!cfg->tab || !n || !c->target_model.len)
		return;
	struct lora_ep *e = lora_ep_find(cfg->tab, picked[0]->name, true);
	if (!e)
		return;
	uint64_t mh = nz_hash(c->target_model.p, c->target_model.len);
	int64_t now = c->now_ns / 1000000;
	int oldest = 0;
	for (int w = 0; w < LORA_WAYS; w++) {
		if (atomic_load(&e->way[w].model) == mh) {
			atomic_store(&e->way[w].used_ms, now);
			return;
		}
		if (atomic_load(&e->way[w].used_ms) < atomic_load(&e->way[oldest].used_ms))
			oldest = w;
	}
	atomic_store(&e->way[oldest].used_ms, now);
	atomic_store(&e->way[oldest].model, mh);
}

static int lora_create(sched_plugin *p, const cJSON *params, sched_build *b)
{
	bool resident = false;
	param_spec spec[] = {{"residentAdapters", P_BOOL, &resident, NULL}};
	if (params_parse(b, params, spec, 1) < 0)
		return -EINVAL;
	struct lora_cfg *cfg = build_alloc(b, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	if (resident && !(cfg->tab = calloc(LORA_EPS, sizeof(*cfg->tab))))
		return plugin_error(b, "out of memory");
	p->cfg = cfg;
	return 0;
}

static void lora_destroy(const sched_plugin *p)
{
	const struct lora_cfg *cfg = p->cfg;
	if (cfg)
		free(cfg->tab);
}

static void lora_score(const sched_plugin *p, const sched_ctx *c, const store_endpoint *const *eps,
		       size_t n, double *out)
{
	const struct lora_cfg *cfg = p->cfg;
	for (size_t i = 0; i < n; i++) {
		const store_metrics *m = &eps[i]->m;
		if (has_model(m->active_models, m->n_active_models, c->target_model))
			out[i] = 1.0;
		else if (cfg->tab && lora_resident(cfg, eps[i], c->target_model))
			out[i] = 0.9;
		else if ((int64_t)m->n_active_models + m->n_waiting_models < m->max_lora)
			out[i] = 0.8;
		else if (has_model(m->waiting_models, m->n_waiting_models, c->target_model))
			out[i] = 0.6;
		else
			out[i] = 0.0;
	}
}

struct token_load_cfg {
	double threshold;
};

static int token_load_create(sched_plugin *p, const cJSON *params, sched_build *b)
{
	long long thr = 4194304;
	param_spec spec[] = {{"queueThresholdTokens", P_INT, &thr, NULL}};
	if (params_parse(b, params, spec, 1) < 0)
		return -EINVAL;
	if (thr <= 0)
		thr = 4194304;
	struct token_load_cfg *cfg = build_alloc(b, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	cfg->threshold = (double)thr;
	p->cfg = cfg;
	return 0;
}

static void token_load_score(const sched_plugin *p, const sched_ctx *c,
			     const store_endpoint *const *eps, size_t n, double *out)
{
	const struct token_load_cfg *cfg = p->cfg;
	for (size_t i = 0; i < n; i++) {
		int64_t reqs, tokens;
		inflight_get_ep(c, eps[i], &reqs, &tokens);
		double load = (double)tokens;
		if (load <= 0) {
			out[i] = 1.0;
			continue;
		}
		if (load > cfg->threshold)
			load = cfg->threshold;
		out[i] = 1.0 - load / cfg->threshold;
	}
}

static const plugin_type queue_scorer = {
	.type = "queue-scorer",
	.kinds = PK_SCORER,
	.needs_inflight = true,
	.create = plugin_no_params,
	.score = queue_score,
};
static const plugin_type kv_scorer = {
	.type = "kv-cache-utilization-scorer",
	.kinds = PK_SCORER,
	.create = plugin_no_params,
	.score = kv_score,
};
static const plugin_type lora_scorer = {
	.type = "lora-affinity-scorer",
	.kinds = PK_SCORER,
	.create = lora_create,
	.score = lora_score,
	.pre_request = lora_pre_request,
	.destroy = lora_destroy,
};
static const plugin_type running_scorer = {
	.type = "running-requests-size-scorer",
	.kinds = PK_SCORER,
	.needs_inflight = true,
	.create = plugin_no_params,
	.score = running_score,
};
static const plugin_type token_load_scorer = {
	.type = "token-load-scorer",
	.kinds = PK_SCORER,
	.needs_inflight = true,
	.create = token_load_create,
	.score = token_load_score,
};

const plugin_type *const sched_scorer_types[] = {
	&queue_scorer, &kv_scorer, &lora_scorer, &running_scorer, &token_load_scorer, NULL,
};
