/* Fast-path weights: the primary profile's filters and scorers run for a
 * model with no request body, so the kernel can steer connections by the same
 * scores the picker uses (spec §4.2) without seeing the request. Endpoints a
 * filter drops get weight 0 (shed); the others get their weighted score,
 * scaled so a perfect score on every scorer is SCHED_FASTPATH_WMAX. The
 * candidates are sched_decide's: with --exclude-stale-endpoints, an endpoint
 * whose metrics are missing or stale gets 0 while any has fresh ones. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sched/body.h"
#include "sched/plugins.h"
#include "util/log.h"

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A minimal body naming |model|, so plugins that read the body see a valid
 * request of the completions API. */
static char *synth_body(const char *model, arena *a, size_t *len)
{
	size_t ml = strlen(model), cap = ml * 6 + 32;
	char *b = arena_alloc(a, cap);
	if (!b)
		return NULL;
	size_t o = (size_t)snprintf(b, cap, "{\"model\":\"");
	o += json_escape(b + o, cap - o, model, ml);
	o += (size_t)snprintf(b + o, cap - o, "\",\"prompt\":\" \"}");
	*len = o;
	return b;
}

/* The endpoints sched_decide would consider for a request without a
 * subset hint: all of them, less those with missing or stale metrics while
 * any has fresh ones (the staleness limit of sched_set_staleness; with none
 * fresh, all stay: fail open). Returns how many went to |out|. */
static uint32_t candidates(const sched *s, const store_snapshot *snap, int64_t now,
			   const store_endpoint **out)
{
	int64_t limit = s->stale_ms * 1000000LL;
	uint32_t n = snap->n_endpoints, fresh = 0;
	for (uint32_t i = 0; i < n; i++)
		fresh += limit > 0 && metrics_fresh(&snap->endpoints[i], now, limit);
	uint32_t k = 0;
	for (uint32_t i = 0; i < n; i++)
		if (!fresh || fresh == n || metrics_fresh(&snap->endpoints[i], now, limit))
			out[k++] = &snap->endpoints[i];
	return k;
}

int sched_fastpath_weights(const sched *s, const store_snapshot *snap, const char *model,
			   arena *a, uint32_t *weights, sched_fastpath_info *info)
{
	uint32_t n = snap->n_endpoints;
	int64_t now = mono_ns();
	memset(info, 0, sizeof(*info));
	if (n)
		memset(weights, 0, n * sizeof(*weights));
	size_t blen = 0;
	char *body = synth_body(model, a, &blen);
	const store_endpoint **cands = arena_alloc(a, (n ? n : 1) * sizeof(*cands));
	const store_endpoint **kept = arena_alloc(a, (n ? n : 1) * sizeof(*kept));
	const store_endpoint **tmp = arena_alloc(a, (n ? n : 1) * sizeof(*tmp));
	double *total = arena_calloc(a, (n ? n : 1) * sizeof(*total));
	double *raw = arena_alloc(a, (n ? n : 1) * sizeof(*raw));
	if (!body || !cands || !kept || !tmp || !total || !raw)
		return -ENOMEM;
	body_req br;
	memset(&br, 0, sizeof(br));
	char msg[256];
	if (!s->passthrough &&
	    body_parse_request(body, blen, SCHED_API_COMPLETIONS, &br, msg, sizeof(msg)) < 0)
		return -EINVAL;
	n = candidates(s, snap, now, cands);
	sched_request req = {
		.path = {"/v1/completions", 15},
		.body = body,
		.body_len = blen,
	};
	sched_ctx ctx = {
		.s = s,
		.req = &req,
		.target_model = {model, strlen(model)},
		.now_ns = now,
		.a = a,
		.api = SCHED_API_COMPLETIONS,
		.body = s->passthrough ? NULL : &br,
		.snap = snap,
		.state = s->n_preparers ? arena_calloc(a, s->n_preparers * sizeof(void *)) : NULL,
	};
	if (s->n_preparers && !ctx.state)
		return -ENOMEM;

	/* Sheddable as sched_decide decides it for a request without an
	 * objective: a v1alpha2 InferenceModel that is not Critical. */
	const store_model *m = store_model_find(snap->catalog, model, strlen(model));
	info->sheddable = m && !(m->has_criticality && m->criticality == STORE_CRIT_CRITICAL);
	info->saturated = n == 0 ||
			  s->saturation->type->saturation(s->saturation, &ctx, cands, n) >= 1.0;
	if (n == 0)
		return 0;

	/* Only prepare hooks: pre_request would teach the prefix index a
	 * request that was never sent. */
	for (size_t i = 0; i < s->n_preparers; i++)
		if (s->preparers[i]->type->prepare)
			s->preparers[i]->type->prepare(s->preparers[i], &ctx, cands, n);
	const sched_profile *pr = &s->profiles[0];
	size_t k = n;
	memcpy(kept, cands, n * sizeof(*kept));
	for (size_t i = 0; i < pr->n_filters && k > 0; i++) {
		const sched_plugin *f = pr->filters[i];
		k = f->type->filter(f, &ctx, kept, k, tmp);
		memcpy(kept, tmp, k * sizeof(*kept));
	}
	double wsum = 0;
	for (size_t i = 0; i < pr->n_scorers; i++) {
		const sched_plugin *sp = pr->scorers[i].p;
		if (pr->scorers[i].weight > 0)
			wsum += pr->scorers[i].weight;
		if (k == 0)
			continue;
		sp->type->score(sp, &ctx, kept, k, raw);
		for (size_t j = 0; j < k; j++) {
			double v = raw[j];
			v = v > 0 ? (v < 1 ? v : 1) : 0; /* as run_profile: NaN is 0 */
			total[j] += v * pr->scorers[i].weight;
		}
	}
	for (size_t j = 0; j < k; j++) {
		double w = wsum > 0 ? total[j] / wsum * SCHED_FASTPATH_WMAX : SCHED_FASTPATH_WMAX;
		if (w > SCHED_FASTPATH_WMAX)
			w = SCHED_FASTPATH_WMAX;
		/* Kept by every filter: never 0, which would mean shed. */
		weights[kept[j]->index] = w >= 1 ? (uint32_t)w : 1;
		info->n_kept++;
	}
	return 0;
}
