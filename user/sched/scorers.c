/* Scorers (spec §4.2): raw scores per endpoint; the framework clamps them to
 * [0,1], multiplies by the profile weight and sums. */
#include <errno.h>
#include <math.h>
#include <string.h>

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
		if (c->s->inflight)
			v += inflight_since(c->s->inflight, eps[i]->name, m->update_ms);
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

static void lora_score(const sched_plugin *p, const sched_ctx *c, const store_endpoint *const *eps,
		       size_t n, double *out)
{
	(void)p;
	for (size_t i = 0; i < n; i++) {
		const store_metrics *m = &eps[i]->m;
		if (has_model(m->active_models, m->n_active_models, c->target_model))
			out[i] = 1.0;
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
		int64_t reqs = 0, tokens = 0;
		if (c->s->inflight)
			inflight_get(c->s->inflight, eps[i]->name, &reqs, &tokens);
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
	.create = plugin_no_params,
	.score = lora_score,
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
