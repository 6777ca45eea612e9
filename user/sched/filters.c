/* Filters: the conformance header filter (spec §4.6), the legacy v0.5 filter
 * chain (§4.5) and the saturation detectors, which are filters as well as
 * admission signals (§5.2). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sched/plugins.h"
#include "util/rand.h"

/* ---- header-based-testing-filter ------------------------------------------ */

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static sched_str trim(sched_str s)
{
	while (s.len && is_ws(s.p[0]))
		s.p++, s.len--;
	while (s.len && is_ws(s.p[s.len - 1]))
		s.len--;
	return s;
}

/* strings.Trim(s, "[]") */
static sched_str trim_brackets(sched_str s)
{
	while (s.len && (s.p[0] == '[' || s.p[0] == ']'))
		s.p++, s.len--;
	while (s.len && (s.p[s.len - 1] == '[' || s.p[s.len - 1] == ']'))
		s.len--;
	return s;
}

static bool str_eq(sched_str a, const char *b)
{
	return strlen(b) == a.len && memcmp(a.p, b, a.len) == 0;
}

static size_t header_filter(const sched_plugin *p, const sched_ctx *c,
			    const store_endpoint *const *in, size_t n, const store_endpoint **out)
{
	(void)p;
	sched_str hv = {NULL, 0};
	if (!c->req->header ||
	    !c->req->header(c->req->header_ctx, "test-epp-endpoint-selection", &hv))
		return 0;
	if (!hv.p || trim(hv).len == 0)
		return 0;
	size_t kept = 0, pos = 0;
	while (pos <= hv.len) {
		const char *comma = memchr(hv.p + pos, ',', hv.len - pos);
		size_t e = comma ? (size_t)(comma - hv.p) : hv.len;
		sched_str item = trim((sched_str){hv.p + pos, e - pos});
		pos = e + 1;
		if (!item.len)
			continue;
		sched_str host = item, port = {NULL, 0};
		if (!split_host_port(item.p, item.len, &host, &port)) {
			host = item;
			port.len = 0;
		}
		host = trim_brackets(host);
		/* ip:port matches exactly; a bare ip matches the last endpoint
		 * with that ip (the reference keeps a map ip -> endpoint). */
		const store_endpoint *hit = NULL;
		for (size_t i = 0; i < n; i++) {
			sched_str ip =
				trim_brackets(trim((sched_str){ in[i]->ip, strlen(in[i]->ip) }));
			if (!ip.len || ip.len != host.len || memcmp(ip.p, host.p, ip.len) != 0)
				continue;
			if (port.len) {
				char pb[8];
				snprintf(pb, sizeof(pb), "%u", in[i]->port);
				if (str_eq(port, pb))
					hit = in[i];
			} else {
				hit = in[i];
			}
		}
		if (!hit)
			continue;
		bool dup = false;
		for (size_t k = 0; k < kept && !dup; k++)
			dup = strcmp(out[k]->ip, hit->ip) == 0;
		if (!dup)
			out[kept++] = hit;
	}
	return kept;
}

/* ---- legacy v0.5 filters ------------------------------------------------------ */

struct threshold_cfg {
	double threshold;
};

static int low_queue_create(sched_plugin *p, const cJSON *params, sched_build *b)
{
	long long thr = 128;
	param_spec spec[] = {{"threshold", P_INT, &thr, NULL}};
	if (params_parse(b, params, spec, 1) < 0)
		return -EINVAL;
	struct threshold_cfg *cfg = build_alloc(b, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	cfg->threshold = (double)thr;
	p->cfg = cfg;
	return 0;
}

/* v0.5 plugin semantics: queue <= threshold. */
static size_t low_queue_filter(const sched_plugin *p, const sched_ctx *c,
			       const store_endpoint *const *in, size_t n,
			       const store_endpoint **out)
{
	(void)c;
	const struct threshold_cfg *cfg = p->cfg;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if ((long long)in[i]->m.waiting_queue <= (long long)cfg->threshold)
			out[k++] = in[i];
	return k;
}

/* Keeps the "first bucket": q in [min, min + (max-min)/N], integer division. */
static size_t least_queue_filter(const sched_plugin *p, const sched_ctx *c,
				 const store_endpoint *const *in, size_t n,
				 const store_endpoint **out)
{
	(void)p;
	(void)c;
	long long lo = 0, hi = 0;
	for (size_t i = 0; i < n; i++) {
		long long q = (long long)in[i]->m.waiting_queue;
		if (i == 0 || q < lo)
			lo = q;
		if (i == 0 || q > hi)
			hi = q;
	}
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		long long q = (long long)in[i]->m.waiting_queue;
		if (q >= lo && q <= lo + (hi - lo) / (long long)n)
			out[k++] = in[i];
	}
	return k;
}

static size_t least_kv_filter(const sched_plugin *p, const sched_ctx *c,
			      const store_endpoint *const *in, size_t n, const store_endpoint **out)
{
	(void)p;
	(void)c;
	double lo = 0, hi = 0;
	for (size_t i = 0; i < n; i++) {
		double v = in[i]->m.kv_usage;
		if (i == 0 || v < lo)
			lo = v;
		if (i == 0 || v > hi)
			hi = v;
	}
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		double v = in[i]->m.kv_usage;
		if (v >= lo && v <= lo + (hi - lo) / (double)n)
			out[k++] = in[i];
	}
	return k;
}

static int lora_filter_create(sched_plugin *p, const cJSON *params, sched_build *b)
{
	double thr = 0.999;
	param_spec spec[] = {{"threshold", P_FLOAT, &thr, NULL}};
	if (params_parse(b, params, spec, 1) < 0)
		return -EINVAL;
	struct threshold_cfg *cfg = build_alloc(b, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	cfg->threshold = thr;
	p->cfg = cfg;
	return 0;
}

static bool has_model(const char *const *list, uint32_t n, sched_str m)
{
	for (uint32_t i = 0; i < n; i++)
		if (list[i] && strlen(list[i]) == m.len && memcmp(list[i], m.p, m.len) == 0)
			return true;
	return false;
}

/* Soft affinity: endpoints with the adapter (running or waiting) win with
 * probability |threshold| over endpoints that have room to load it. */
static size_t lora_filter(const sched_plugin *p, const sched_ctx *c,
			  const store_endpoint *const *in, size_t n, const store_endpoint **out)
{
	const struct threshold_cfg *cfg = p->cfg;
	const store_endpoint **avail = arena_alloc(c->a, (n ? n : 1) * sizeof(*avail));
	if (!avail)
		return 0;
	size_t na = 0, nv = 0;
	for (size_t i = 0; i < n; i++) {
		const store_metrics *m = &in[i]->m;
		if (has_model(m->active_models, m->n_active_models, c->target_model) ||
		    has_model(m->waiting_models, m->n_waiting_models, c->target_model))
			out[na++] = in[i];
		else if ((int64_t)m->n_active_models + m->n_waiting_models < m->max_lora)
			avail[nv++] = in[i];
	}
	if (na > 0 && nv > 0 && rand_double() >= cfg->threshold) {
		memcpy(out, avail, nv * sizeof(*out));
		return nv;
	}
	if (na > 0)
		return na;
	memcpy(out, avail, nv * sizeof(*out));
	return nv;
}

/* ---- decision-tree-filter ----------------------------------------------------- */

struct dtree;

struct dentry {
	const sched_plugin *plugin; /* a filter, or */
	const struct dtree *tree;   /* a nested tree */
};

struct dtree {
	struct dentry current;
	const struct dentry *on_success, *on_failure, *on_both;
};

#define DTREE_MAX_DEPTH 32

static int dtree_load(sched_build *b, const cJSON *obj, const char *where, int depth,
		      const struct dtree **out);

static int dentry_load(sched_build *b, const cJSON *obj, const char *where, int depth,
		       struct dentry *e)
{
	const char *ref = NULL;
	const cJSON *tree = NULL;
	bool has_ref, has_tree;
	param_spec spec[] = {
		{"pluginRef", P_STRING, &ref, &has_ref},
		{"decisionTree", P_OBJECT, &tree, &has_tree},
	};
	if (!cJSON_IsObject(obj))
		return plugin_error(b, "%s must be an object", where);
	if (params_parse_at(b, where, obj, spec, 2) < 0)
		return -EINVAL;
	if (has_ref && has_tree)
		return plugin_error(b, "both pluginRef and decisionTree may not be specified");
	if (has_ref) {
		/* Only plugins declared earlier can be referenced, which also
		 * rules out cycles. */
		const sched_plugin *p = sched_find_plugin(b->s, ref);
		if (!p)
			return plugin_error(b, "%s is a reference to an undefined Plugin", ref);
		if (!(p->type->kinds & PK_FILTER))
			return plugin_error(b, "%s is not a filter", ref);
		e->plugin = p;
		return 0;
	}
	if (has_tree) {
		char sub[128];
		snprintf(sub, sizeof(sub), "%s.decisionTree", where);
		return dtree_load(b, tree, sub, depth + 1, &e->tree);
	}
	return plugin_error(b, "either pluginRef or decisionTree must be specified");
}

static int dtree_load(sched_build *b, const cJSON *obj, const char *where, int depth,
		      const struct dtree **out)
{
	if (depth > DTREE_MAX_DEPTH)
		return plugin_error(b, "decision tree nested deeper than %d levels",
				    DTREE_MAX_DEPTH);
	const cJSON *cur = NULL, *succ = NULL, *fail = NULL, *both = NULL;
	bool has_cur, has_succ, has_fail, has_both;
	param_spec spec[] = {
		{"current", P_OBJECT, &cur, &has_cur},
		{"nextOnSuccess", P_OBJECT, &succ, &has_succ},
		{"nextOnFailure", P_OBJECT, &fail, &has_fail},
		{"nextOnSuccessOrFailure", P_OBJECT, &both, &has_both},
	};
	if (params_parse_at(b, where, obj, spec, 4) < 0)
		return -EINVAL;
	if (!has_cur)
		return plugin_error(b, "a current filter must be specified");
	struct dtree *t = build_alloc(b, sizeof(*t));
	struct dentry *e = build_alloc(b, 3 * sizeof(*e));
	if (!t || !e)
		return -ENOMEM;
	char sub[128];
	snprintf(sub, sizeof(sub), "%s%scurrent", where ? where : "", where ? "." : "");
	if (dentry_load(b, cur, sub, depth, &t->current) < 0)
		return -EINVAL;
	const cJSON *next[3] = {succ, fail, both};
	const bool has[3] = {has_succ, has_fail, has_both};
	const char *names[3] = {"nextOnSuccess", "nextOnFailure", "nextOnSuccessOrFailure"};
	const struct dentry **slot[3] = {&t->on_success, &t->on_failure, &t->on_both};
	for (int i = 0; i < 3; i++) {
		if (!has[i])
			continue;
		snprintf(sub, sizeof(sub), "%s%s%s", where ? where : "", where ? "." : "",
			 names[i]);
		if (dentry_load(b, next[i], sub, depth, &e[i]) < 0)
			return -EINVAL;
		*slot[i] = &e[i];
	}
	*out = t;
	return 0;
}

static int dtree_create(sched_plugin *p, const cJSON *params, sched_build *b)
{
	const struct dtree *t = NULL;
	if (dtree_load(b, params, NULL, 0, &t) < 0)
		return -EINVAL;
	p->cfg = t;
	return 0;
}

static size_t dentry_filter(const struct dentry *e, const sched_ctx *c,
			    const store_endpoint *const *in, size_t n, const store_endpoint **out);

static size_t dtree_run(const struct dtree *t, const sched_ctx *c, const store_endpoint *const *in,
			size_t n, const store_endpoint **out)
{
	const store_endpoint **tmp = arena_alloc(c->a, (n ? n : 1) * sizeof(*tmp));
	if (!tmp)
		return 0;
	size_t k = dentry_filter(&t->current, c, in, n, tmp);
	const struct dentry *next = t->on_both;
	if (k > 0) {
		if (t->on_success)
			next = t->on_success;
		if (!next) {
			memcpy(out, tmp, k * sizeof(*out));
			return k;
		}
		return dentry_filter(next, c, tmp, k, out);
	}
	if (t->on_failure)
		next = t->on_failure;
	if (!next)
		return 0;
	return dentry_filter(next, c, in, n, out);
}

static size_t dentry_filter(const struct dentry *e, const sched_ctx *c,
			    const store_endpoint *const *in, size_t n, const store_endpoint **out)
{
	if (e->plugin)
		return e->plugin->type->filter(e->plugin, c, in, n, out);
	return dtree_run(e->tree, c, in, n, out);
}

static size_t dtree_filter(const sched_plugin *p, const sched_ctx *c,
			   const store_endpoint *const *in, size_t n, const store_endpoint **out)
{
	return dtree_run(p->cfg, c, in, n, out);
}

/* ---- utilization-detector ----------------------------------------------------- */

struct util_cfg {
	long long queue;
	double kv;
	int64_t stale_ns;
	double headroom;
};

static int util_create(sched_plugin *p, const cJSON *params, sched_build *b)
{
	struct util_cfg v = {5, 0.8, 200000000, 0.0};
	param_spec spec[] = {
		{"queueDepthThreshold", P_INT, &v.queue, NULL},
		{"kvCacheUtilThreshold", P_FLOAT, &v.kv, NULL},
		{"metricsStalenessThreshold", P_DURATION, &v.stale_ns, NULL},
		{"headroom", P_FLOAT, &v.headroom, NULL},
	};
	if (params_parse(b, params, spec, 4) < 0)
		return -EINVAL;
	if (v.queue <= 0)
		return plugin_error(b, "invalid utilization detector configuration: "
				    "queueDepthThreshold must be strictly positive, got %lld",
				    v.queue);
	if (v.kv <= 0.0 || v.kv > 1.0)
		return plugin_error(b, "invalid utilization detector configuration: "
				    "kvCacheUtilThreshold must be in (0.0, 1.0], got %f",
				    v.kv);
	if (v.stale_ns <= 0)
		return plugin_error(b, "invalid utilization detector configuration: "
				    "metricsStalenessThreshold must be strictly positive");
	if (v.headroom < 0.0)
		return plugin_error(b, "invalid utilization detector configuration: "
				    "headroom must be a non-negative value, got %f",
				    v.headroom);
	struct util_cfg *cfg = build_alloc(b, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	*cfg = v;
	p->cfg = cfg;
	return 0;
}

static double util_saturation(const sched_plugin *p, const sched_ctx *c,
			      const store_endpoint *const *eps, size_t n)
{
	const struct util_cfg *cfg = p->cfg;
	if (n == 0)
		return 1.0;
	double total = 0;
	for (size_t i = 0; i < n; i++) {
		if (!metrics_fresh(eps[i], c->now_ns, cfg->stale_ns)) {
			total += 1.0;
			continue;
		}
		double q = (double)(long long)eps[i]->m.waiting_queue / (double)cfg->queue;
		double kv = eps[i]->m.kv_usage / cfg->kv;
		total += q > kv ? q : kv;
	}
	return total / (double)n;
}

/* Keeps endpoints with fresh metrics under both limits; fails open (returns
 * the input) when that would keep none. */
static size_t util_filter(const sched_plugin *p, const sched_ctx *c,
			  const store_endpoint *const *in, size_t n, const store_endpoint **out)
{
	const struct util_cfg *cfg = p->cfg;
	double ql = (double)cfg->queue * (1.0 + cfg->headroom);
	double kl = cfg->kv * (1.0 + cfg->headroom);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (!metrics_fresh(in[i], c->now_ns, cfg->stale_ns))
			continue;
		if ((double)(long long)in[i]->m.waiting_queue < ql && in[i]->m.kv_usage < kl)
			out[k++] = in[i];
	}
	if (k == 0) {
		memcpy(out, in, n * sizeof(*out));
		return n;
	}
	return k;
}

/* ---- concurrency-detector ------------------------------------------------------ */

struct conc_cfg {
	bool tokens;
	long long max_requests, max_tokens;
	double headroom;
};

static int conc_create(sched_plugin *p, const cJSON *params, sched_build *b)
{
	struct conc_cfg v = {false, 100, 1000000, 0.0};
	const char *mode = "requests";
	param_spec spec[] = {
		{"maxConcurrency", P_INT, &v.max_requests, NULL},
		{"headroom", P_FLOAT, &v.headroom, NULL},
		{"concurrencyMode", P_STRING, &mode, NULL},
		{"maxTokenConcurrency", P_INT, &v.max_tokens, NULL},
	};
	if (params_parse(b, params, spec, 4) < 0)
		return -EINVAL;
	if (v.max_requests <= 0)
		return plugin_error(b, "invalid concurrency detector configuration: "
				    "maxConcurrency must be strictly positive, got %lld",
				    v.max_requests);
	if (v.headroom < 0.0)
		return plugin_error(b, "invalid concurrency detector configuration: "
				    "headroom must be a non-negative value, got %f",
				    v.headroom);
	if (v.max_tokens <= 0)
		return plugin_error(b, "invalid concurrency detector configuration: "
				    "maxTokenConcurrency must be strictly positive, got %lld",
				    v.max_tokens);
	if (strcmp(mode, "tokens") == 0)
		v.tokens = true;
	else if (strcmp(mode, "requests") != 0)
		return plugin_error(b, "invalid concurrency detector configuration: "
				    "unsupported concurrencyMode: \"%s\"",
				    mode);
	struct conc_cfg *cfg = build_alloc(b, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	*cfg = v;
	p->cfg = cfg;
	return 0;
}

static int64_t conc_load(const struct conc_cfg *cfg, const sched_ctx *c, const store_endpoint *ep)
{
	int64_t reqs, tokens;
	inflight_get_ep(c, ep, &reqs, &tokens);
	return cfg->tokens ? tokens : reqs;
}

static double conc_saturation(const sched_plugin *p, const sched_ctx *c,
			      const store_endpoint *const *eps, size_t n)
{
	const struct conc_cfg *cfg = p->cfg;
	double inflight = 0, capacity = 0;
	for (size_t i = 0; i < n; i++) {
		inflight += (double)conc_load(cfg, c, eps[i]);
		capacity += (double)(cfg->tokens ? cfg->max_tokens : cfg->max_requests);
	}
	if (capacity == 0)
		return 1.0;
	return inflight / capacity;
}

static size_t conc_filter(const sched_plugin *p, const sched_ctx *c,
			  const store_endpoint *const *in, size_t n, const store_endpoint **out)
{
	const struct conc_cfg *cfg = p->cfg;
	int64_t limit = (int64_t)((double)(cfg->tokens ? cfg->max_tokens : cfg->max_requests) *
				  (1.0 + cfg->headroom));
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (conc_load(cfg, c, in[i]) < limit)
			out[k++] = in[i];
	return k;
}

static const plugin_type header_filter_type = {
	.type = "header-based-testing-filter",
	.kinds = PK_FILTER,
	.create = plugin_no_params,
	.filter = header_filter,
};
static const plugin_type low_queue_type = {
	.type = "low-queue-filter",
	.kinds = PK_FILTER,
	.create = low_queue_create,
	.filter = low_queue_filter,
};
static const plugin_type least_queue_type = {
	.type = "least-queue-filter",
	.kinds = PK_FILTER,
	.create = plugin_no_params,
	.filter = least_queue_filter,
};
static const plugin_type least_kv_type = {
	.type = "least-kv-cache-filter",
	.kinds = PK_FILTER,
	.create = plugin_no_params,
	.filter = least_kv_filter,
};
static const plugin_type lora_filter_type = {
	.type = "lora-affinity-filter",
	.kinds = PK_FILTER,
	.create = lora_filter_create,
	.filter = lora_filter,
};
static const plugin_type dtree_type = {
	.type = "decision-tree-filter",
	.kinds = PK_FILTER,
	.create = dtree_create,
	.filter = dtree_filter,
};
static const plugin_type util_type = {
	.type = "utilization-detector",
	.kinds = PK_FILTER | PK_SATURATION,
	.create = util_create,
	.filter = util_filter,
	.saturation = util_saturation,
};
static const plugin_type conc_type = {
	.type = "concurrency-detector",
	.kinds = PK_FILTER | PK_SATURATION,
	.needs_inflight = true,
	.create = conc_create,
	.filter = conc_filter,
	.saturation = conc_saturation,
};

const plugin_type *const sched_filter_types[] = {
	&header_filter_type, &low_queue_type, &least_queue_type, &least_kv_type,
	&lora_filter_type, &dtree_type, &util_type, &conc_type, NULL,
};
