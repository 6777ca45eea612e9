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

/* Moves the best |k| entries by |keys| (permuted along) to the front,
 * keeping the current order among equal keys: a stable partial sort,
 * descending. */
static void stable_top(sched_scored *sc, double *keys, size_t n, size_t k)
{
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

static void swap_scored(sched_scored *sc, size_t i, size_t j)
{
	sched_scored t = sc[i];
	sc[i] = sc[j];
	sc[j] = t;
}

/* Go's rand.Shuffle then a stable sort by score, descending, as far as the
 * first |k| entries go (the rest are left in no particular order): the k
 * best scores in one pass, random draws on ties only, instead of shuffling
 * and walking all n candidates k times. Entries of equal score come out in
 * uniformly random order, and at the k-th score a uniformly random subset
 * of its ties fills the places left, which is what the shuffle gives. */
static void top_random_ties(sched_scored *sc, size_t n, size_t k)
{
	if (n < 2 || k == 0)
		return;
	if (k == 1) {
		/* Reservoir of one among the best score's ties. */
		size_t best = 0, ties = 1;
		for (size_t i = 1; i < n; i++) {
			if (sc[i].score > sc[best].score) {
				best = i;
				ties = 1;
			} else if (sc[i].score == sc[best].score && rand_below(++ties) == 0) {
				best = i;
			}
		}
		swap_scored(sc, 0, best);
		return;
	}
	if (k > n)
		k = n;
	/* The k-th best score: |top| holds the k best seen, descending. */
	double top[SCHED_MAX_TARGETS];
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		double v = sc[i].score;
		if (m == k && !(v > top[k - 1]))
			continue;
		size_t j = m < k ? m++ : k - 1;
		for (; j > 0 && top[j - 1] < v; j--)
			top[j] = top[j - 1];
		top[j] = v;
	}
	double t = top[k - 1];
	/* Above the threshold to the front (fewer than k), then its ties. */
	size_t g = 0;
	for (size_t i = 0; i < n; i++)
		if (sc[i].score > t)
			swap_scored(sc, g++, i);
	size_t e = g;
	for (size_t i = g; i < n; i++)
		if (sc[i].score == t)
			swap_scored(sc, e++, i);
	/* A random ordered choice of k - g ties (partial Fisher-Yates). */
	for (size_t i = g; i < k; i++)
		swap_scored(sc, i, i + (size_t)rand_below(e - i));
	/* The g above it: shuffled, then sorted stably. */
	for (size_t i = g; i > 1; i--)
		swap_scored(sc, i - 1, (size_t)rand_below(i));
	for (size_t i = 1; i < g; i++) {
		sched_scored x = sc[i];
		size_t j = i;
		for (; j > 0 && sc[j - 1].score < x.score; j--)
			sc[j] = sc[j - 1];
		sc[j] = x;
	}
}

static size_t max_score_pick(const sched_plugin *p, const sched_ctx *c, sched_scored *sc, size_t n)
{
	(void)c;
	size_t k = limit(p, n);
	top_random_ties(sc, n, k);
	return k;
}

/* The first |k| of a uniform shuffle: a partial Fisher-Yates. */
static size_t random_pick(const sched_plugin *p, const sched_ctx *c, sched_scored *sc, size_t n)
{
	(void)c;
	size_t k = limit(p, n);
	for (size_t i = 0; i < k && i + 1 < n; i++)
		swap_scored(sc, i, i + (size_t)rand_below(n - i));
	return k;
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
	double *key = arena_alloc(c->a, (n ? n : 1) * sizeof(*key));
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
	stable_top(sc, key, n, k);
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
