/* Pickers (spec §4.2): order the scored candidates and say how many win; the
 * first is the primary endpoint, the rest are fallbacks. */
#include <errno.h>
#include <math.h>

#include "sched/plugins.h"
#include "util/rand.h"

struct picker_cfg {
	size_t max;
};

static int picker_create(sched_plugin *p, const cJSON *params, sched_build *b)
{
	long long max = 1;
	param_spec spec[] = {{"maxNumOfEndpoints", P_INT, &max, NULL}};
	if (params_parse(b, params, spec, 1) < 0)
		return -EINVAL;
	if (max <= 0)
		max = 1; /* the reference falls back to the default */
	if (max > SCHED_MAX_TARGETS)
		return plugin_error(b, "maxNumOfEndpoints %lld is above the supported maximum %d",
				    max, SCHED_MAX_TARGETS);
	struct picker_cfg *cfg = build_alloc(b, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	cfg->max = (size_t)max;
	p->cfg = cfg;
	return 0;
}

static size_t limit(const sched_plugin *p, size_t n)
{
	const struct picker_cfg *cfg = p->cfg;
	return n < cfg->max ? n : cfg->max;
}

/* Moves the best |k| entries to the front, keeping the current order among
 * equal keys: a stable partial sort, descending. */
static void stable_top(sched_scored *sc, const double *key, size_t n, size_t k, double *keys)
{
	for (size_t i = 0; i < n; i++)
		keys[i] = key ? key[i] : sc[i].score;
	for (size_t i = 0; i < k && i < n; i++) {
		size_t best = i;
		for (size_t j = i + 1; j < n; j++)
			if (keys[j] > keys[best])
				best = j;
		if (best == i)
			continue;
		sched_scored t = sc[best];
		double tk = keys[best];
		for (size_t j = best; j > i; j--) {
			sc[j] = sc[j - 1];
			keys[j] = keys[j - 1];
		}
		sc[i] = t;
		keys[i] = tk;
	}
}

/* Shuffle, then a stable sort by score: ties are broken at random. */
static size_t max_score_pick(const sched_plugin *p, const sched_ctx *c, sched_scored *sc, size_t n)
{
	double *keys = arena_alloc(c->a, (n ? n : 1) * sizeof(*keys));
	if (!keys)
		return 0;
	shuffle_scored(sc, n);
	size_t k = limit(p, n);
	stable_top(sc, NULL, n, k, keys);
	return k;
}

static size_t random_pick(const sched_plugin *p, const sched_ctx *c, sched_scored *sc, size_t n)
{
	(void)c;
	shuffle_scored(sc, n);
	return limit(p, n);
}

/* A-Res weighted sampling: key = U^(1/score); score <= 0 gets key 0; all
 * scores <= 0 degrade to random-picker. */
static size_t weighted_pick(const sched_plugin *p, const sched_ctx *c, sched_scored *sc, size_t n)
{
	bool any = false;
	for (size_t i = 0; i < n; i++)
		any |= sc[i].score > 0;
	if (!any)
		return random_pick(p, c, sc, n);
	double *key = arena_alloc(c->a, (n ? n : 1) * 2 * sizeof(*key));
	if (!key)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (sc[i].score <= 0) {
			key[i] = 0;
			continue;
		}
		double u = rand_double();
		if (u == 0)
			u = 1e-10;
		key[i] = pow(u, 1.0 / sc[i].score);
	}
	size_t k = limit(p, n);
	stable_top(sc, key, n, k, key + n);
	return k;
}

static const plugin_type max_score_picker = {
	.type = "max-score-picker",
	.kinds = PK_PICKER,
	.create = picker_create,
	.pick = max_score_pick,
};
static const plugin_type random_picker = {
	.type = "random-picker",
	.kinds = PK_PICKER,
	.create = picker_create,
	.pick = random_pick,
};
static const plugin_type weighted_random_picker = {
	.type = "weighted-random-picker",
	.kinds = PK_PICKER,
	.create = picker_create,
	.pick = weighted_pick,
};

const plugin_type *const sched_picker_types[] = {
	&max_score_picker, &random_picker, &weighted_random_picker, NULL,
};
