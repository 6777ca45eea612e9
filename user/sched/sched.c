/* The request director (spec §2.7 step 3): parse, resolve the model, find
 * the priority, admit, pick candidates, run the scheduling profile, and hand
 * back the targets and the body to forward, or the exact error of §2.8.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <time.h>

#include "sched/body.h"
#include "sched/plugins.h"
#include "util/rand.h"

int sched_err_http(enum sched_err e)
{
	switch (e) {
	case SCHED_OK: return 200;
	case SCHED_BAD_REQUEST: return 400;
	case SCHED_UNAUTHORIZED: return 401;
	case SCHED_FORBIDDEN: return 403;
	case SCHED_NOT_FOUND: return 404;
	case SCHED_RESOURCE_EXHAUSTED: return 429;
	case SCHED_SERVICE_UNAVAILABLE: return 503;
	default: return 500;
	}
}

const char *sched_err_name(enum sched_err e)
{
	switch (e) {
	case SCHED_OK: return "OK";
	case SCHED_BAD_REQUEST: return "BadRequest";
	case SCHED_UNAUTHORIZED: return "Unauthorized";
	case SCHED_FORBIDDEN: return "Forbidden";
	case SCHED_NOT_FOUND: return "NotFound";
	case SCHED_RESOURCE_EXHAUSTED: return "ResourceExhausted";
	case SCHED_SERVICE_UNAVAILABLE: return "ServiceUnavailable";
	default: return "Internal";
	}
}

static bool has_suffix(const char *p, size_t n, const char *sfx)
{
	size_t l = strlen(sfx);
	return n >= l && memcmp(p + n - l, sfx, l) == 0;
}

enum sched_api sched_api_from_path(const char *path, size_t len)
{
	if (!path || !len)
		return SCHED_API_COMPLETIONS; /* the reference defaults to /v1/completions */
	if (has_suffix(path, len, "/conversations"))
		return SCHED_API_CONVERSATIONS;
	if (has_suffix(path, len, "/responses"))
		return SCHED_API_RESPONSES;
	if (has_suffix(path, len, "/chat/completions"))
		return SCHED_API_CHAT;
	if (has_suffix(path, len, "/completions"))
		return SCHED_API_COMPLETIONS;
	if (has_suffix(path, len, "/embeddings"))
		return SCHED_API_EMBEDDINGS;
	return SCHED_API_COMPLETIONS;
}

static void fail(sched_result *res, enum sched_err e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fail(sched_result *res, enum sched_err e, const char *fmt, ...)
{
	char msg[448];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	res->err = e;
	snprintf(res->error, sizeof(res->error), "inference error: %s - %s", sched_err_name(e),
		 msg);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static bool sstr_eq(sched_str a, const char *b)
{
	return strlen(b) == a.len && memcmp(a.p, b, a.len) == 0;
}

/* selectWeightedModel (spec §1.6): uniform when the weights sum to 0, else a
 * draw in [0, sum) and the first cumulative weight above it. */
static const char *draw_rewrite(const store_rewrite_rule *r)
{
	if (r->n_targets == 0)
		return "";
	int64_t total = 0;
	for (uint32_t i = 0; i < r->n_targets; i++)
		total += r->targets[i].weight > 0 ? r->targets[i].weight : 0;
	if (total == 0)
		return r->targets[rand_below(r->n_targets)].model;
	int64_t x = (int64_t)rand_below((uint64_t)total), acc = 0;
	for (uint32_t i = 0; i < r->n_targets; i++) {
		acc += r->targets[i].weight > 0 ? r->targets[i].weight : 0;
		if (x < acc)
			return r->targets[i].model;
	}
	return r->targets[r->n_targets - 1].model;
}

/* RandomWeightedDraw of v0.5 (spec §1.4): uniform when the first target has
 * no weight, else a draw in [0, sum) walked down the list. */
static const char *draw_model(const store_model *m)
{
	if (!m->targets[0].has_weight)
		return m->targets[rand_below(m->n_targets)].model;
	int64_t total = 0;
	for (uint32_t i = 0; i < m->n_targets; i++)
		total += m->targets[i].weight > 0 ? m->targets[i].weight : 0;
	if (total <= 0)
		return m->targets[rand_below(m->n_targets)].model;
	int64_t x = (int64_t)rand_below((uint64_t)total);
	for (uint32_t i = 0; i < m->n_targets; i++) {
		int64_t w = m->targets[i].weight > 0 ? m->targets[i].weight : 0;
		if (x < w)
			return m->targets[i].model;
		x -= w;
	}
	return m->targets[m->n_targets - 1].model;
}

/* The IP of a list-form subset entry: "[v6]:port" or "[v6]" -> v6, a bare
 * IPv6 stays whole, else the port is cut at the last ':' (the reference cuts
 * at the last ':' always, which breaks bracketed and bare IPv6). */
static sched_str subset_ip(sched_str e)
{
	if (e.len && e.p[0] == '[') {
		const char *close = memchr(e.p, ']', e.len);
		if (close)
			return (sched_str){e.p + 1, (size_t)(close - e.p - 1)};
	}
	const char *first = memchr(e.p, ':', e.len);
	if (!first)
		return e;
	if (memchr(first + 1, ':', e.len - (size_t)(first + 1 - e.p)))
		return e;
	return (sched_str){e.p, (size_t)(first - e.p)};
}

static bool ip_eq(sched_str a, const store_endpoint *ep)
{
	return sstr_eq(a, ep->ip);
}

static bool port_eq(sched_str a, const store_endpoint *ep)
{
	char pb[8];
	snprintf(pb, sizeof(pb), "%u", ep->port);
	return sstr_eq(a, pb);
}

static bool subset_match(const sched_request *req, const store_endpoint *ep)
{
	for (size_t i = 0; i < req->n_subset; i++) {
		sched_str e = req->subset[i];
		if (!e.p)
			continue;
		if (!req->subset_is_string) {
			if (ip_eq(subset_ip(e), ep))
				return true;
			continue;
		}
		sched_str host, port;
		if (split_host_port(e.p, e.len, &host, &port)) {
			if (ip_eq(host, ep) && port_eq(port, ep))
				return true;
		} else {
			if (e.len >= 2 && e.p[0] == '[' && e.p[e.len - 1] == ']')
				e = (sched_str){e.p + 1, e.len - 2};
			if (ip_eq(e, ep))
				return true;
		}
	}
	return false;
}

/* Candidates of spec §2.4: all endpoints without a hint, else those the
 * hint lists (an explicit empty list gives none). Beyond the reference: with
 * a staleness limit, endpoints whose metrics are missing or older than it
 * (a dead pod, or one whose /metrics hangs) are left out while any candidate
 * has fresh metrics; when none has, all stay (fail open). Without this, a
 * dead pod's last metrics and its in-flight count, which drops as the
 * gateway's requests to it fail, would keep attracting traffic. */
static size_t candidates(const sched *s, const store_snapshot *snap, const sched_request *req,
			 int64_t now_ns, const store_endpoint **out)
{
	size_t n = 0, fresh = 0;
	int64_t limit = s->stale_ms * 1000000LL;
	for (uint32_t i = 0; i < snap->n_endpoints; i++) {
		const store_endpoint *ep = &snap->endpoints[i];
		if (req->has_subset && !subset_match(req, ep))
			continue;
		out[n++] = ep;
		fresh += limit > 0 && ep->m.valid && metrics_fresh(ep, now_ns, limit);
	}
	if (!fresh || fresh == n)
		return n;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (out[i]->m.valid && metrics_fresh(out[i], now_ns, limit))
			out[k++] = out[i];
	return k;
}

/* Plugin timings chain their clock readings: the reading that ends one call
 * starts the next (*mark) where only the framework's loop step runs between
 * them, a few ns counted into the next call (the default profile: 12
 * readings per decision instead of 17 with two per call). Where the
 * framework works per candidate between two calls (the weighted sum, the
 * candidate list, the debug table), a fresh trace_t0() starts the next
 * call. */
static void trace_lap(sched_trace *t, const char *ext_point, const sched_plugin *p,
		      int64_t *mark)
{
	if (!t)
		return;
	int64_t now = now_ns();
	if (t->n_calls < SCHED_TRACE_MAX_CALLS)
		t->calls[t->n_calls++] =
			(sched_plugin_time){ext_point, p->type->type, p->name, now - *mark};
	*mark = now;
}

static int64_t trace_t0(const sched_trace *t)
{
	return t ? now_ns() : 0;
}

static void *tab_alloc(arena *a, size_t n, size_t size)
{
	return arena_calloc(a, (n ? n : 1) * size);
}

/* The score table of one profile run over |n| candidates. */
static sched_score_table *table_new(const sched_profile *pr, arena *a,
				    const store_endpoint *const *cands, size_t n)
{
	sched_score_table *t = arena_calloc(a, sizeof(*t));
	if (!t)
		return NULL;
	t->profile = pr->name;
	t->n_filters = pr->n_filters;
	t->n_scorers = pr->n_scorers;
	t->n_eps = n;
	t->filters = tab_alloc(a, pr->n_filters, sizeof(*t->filters));
	t->scorers = tab_alloc(a, pr->n_scorers, sizeof(*t->scorers));
	t->scorer_types = tab_alloc(a, pr->n_scorers, sizeof(*t->scorer_types));
	double *w = tab_alloc(a, pr->n_scorers, sizeof(*w));
	t->eps = tab_alloc(a, n, sizeof(*t->eps));
	t->dropped_by = tab_alloc(a, n, sizeof(*t->dropped_by));
	t->scores = tab_alloc(a, n * (pr->n_scorers ? pr->n_scorers : 1), sizeof(*t->scores));
	t->total = tab_alloc(a, n, sizeof(*t->total));
	t->rank = tab_alloc(a, n, sizeof(*t->rank));
	if (!t->filters || !t->scorers || !t->scorer_types || !w || !t->eps || !t->dropped_by ||
	    !t->scores || !t->total || !t->rank)
		return NULL;
	for (size_t i = 0; i < pr->n_filters; i++)
		t->filters[i] = pr->filters[i]->name;
	for (size_t i = 0; i < pr->n_scorers; i++) {
		t->scorers[i] = pr->scorers[i].p->name;
		t->scorer_types[i] = pr->scorers[i].p->type->type;
		w[i] = pr->scorers[i].weight;
	}
	t->weights = w;
	for (size_t i = 0; i < n; i++) {
		t->eps[i] = cands[i];
		t->dropped_by[i] = -1;
		t->rank[i] = -1;
	}
	return t;
}

/* A raw score clamped to [0,1], NaN counting as 0: v > 0 ? (v < 1 ? v : 1)
 * : 0. On x86 without branches (gcc branches on the comparisons, and scores
 * of different endpoints differ unpredictably): maxsd and minsd return their
 * second operand when the comparison fails, NaN included. */
static inline double clamp01(double v)
{
#ifdef __SSE2__
	__m128d x = _mm_max_sd(_mm_set_sd(v), _mm_setzero_pd());
	return _mm_cvtsd_f64(_mm_min_sd(x, _mm_set_sd(1.0)));
#else
	return v > 0 ? (v < 1 ? v : 1) : 0;
#endif
}

/* Row of |ep| in the table: candidates come from the snapshot, so their
 * snapshot index finds them through |pos|. */
static size_t row(const int *pos, const store_endpoint *ep)
{
	return (size_t)pos[ep->index];
}

/* One profile: filters in order (stop at an empty set), weighted scores, the
 * picker. Returns the number of targets, 0 when the profile failed. With a
 * trace, every plugin call is timed (*mark: the picker's end on return), and
 * with want_table the scores are kept per candidate. */
static size_t run_profile(const sched_profile *pr, const sched_ctx *c,
			  const store_endpoint *const *cands, size_t n, const store_endpoint **out,
			  int64_t *mark)
{
	sched_trace *tr = c->trace;
	size_t n0 = n, ns = pr->n_scorers;
	const store_endpoint **a = arena_alloc(c->a, n * sizeof(*a));
	const store_endpoint **b = arena_alloc(c->a, n * sizeof(*b));
	/* Each scorer its own row: the scorers run back to back (chained
	 * timings), then their rows are weighed into |total|. */
	double *raw = arena_alloc(c->a, n * (ns ? ns : 1) * sizeof(*raw));
	double *total = arena_calloc(c->a, n * sizeof(*total));
	if (!a || !b || !raw || !total)
		return 0;
	sched_score_table *tab = NULL;
	int *pos = NULL;
	if (tr && tr->want_table && c->snap) {
		tab = table_new(pr, c->a, cands, n);
		pos = tab_alloc(c->a, c->snap->n_endpoints, sizeof(*pos));
		if (!tab || !pos)
			tab = NULL;
		for (size_t i = 0; tab && i < n; i++)
			pos[cands[i]->index] = (int)i;
		tr->table = tab;
	}
	memcpy(a, cands, n * sizeof(*a));
	*mark = trace_t0(tr);
	for (size_t i = 0; i < pr->n_filters && n > 0; i++) {
		const sched_plugin *f = pr->filters[i];
		size_t kept = f->type->filter(f, c, a, n, b);
		trace_lap(tr, "Filter", f, mark);
		/* Output is a subset of the input: mark all, then unmark the kept. */
		for (size_t k = 0; tab && k < n; k++)
			tab->dropped_by[row(pos, a[k])] = (int)i;
		for (size_t k = 0; tab && k < kept; k++)
			tab->dropped_by[row(pos, b[k])] = -1;
		if (tab)
			*mark = trace_t0(tr);
		n = kept;
		const store_endpoint **t = a;
		a = b;
		b = t;
	}
	if (n == 0)
		return 0;
	for (size_t i = 0; i < ns; i++) {
		const sched_plugin *sp = pr->scorers[i].p;
		sp->type->score(sp, c, a, n, raw + i * n0);
		trace_lap(tr, "Scorer", sp, mark);
	}
	sched_scored *sc = arena_alloc(c->a, n * sizeof(*sc));
	if (!sc)
		return 0;
	/* One pass per scorer, in scorer order from 0: the same sums as a
	 * running total after each scorer. */
	for (size_t i = 0; i < ns; i++) {
		const double *r = raw + i * n0;
		double w = pr->scorers[i].weight;
		for (size_t k = 0; k < n; k++)
			total[k] += clamp01(r[k]) * w;
		for (size_t k = 0; tab && k < n; k++) {
			tab->scores[row(pos, a[k]) * ns + i] = clamp01(r[k]);
			tab->total[row(pos, a[k])] = total[k];
		}
	}
	for (size_t k = 0; k < n; k++)
		sc[k] = (sched_scored){a[k], total[k]};
	*mark = trace_t0(tr);
	size_t k = pr->picker->type->pick(pr->picker, c, sc, n);
	trace_lap(tr, "Picker", pr->picker, mark);
	if (k > SCHED_MAX_TARGETS)
		k = SCHED_MAX_TARGETS;
	for (size_t i = 0; i < k; i++) {
		out[i] = sc[i].ep;
		if (tab)
			tab->rank[row(pos, sc[i].ep)] = (int)i;
	}
	return k;
}

/* The reference's SimpleTokenEstimator: input = body bytes / 4 (at least 1),
 * output = 1.5 x input. */
static int64_t estimate_tokens(size_t body_len)
{
	if (body_len == 0)
		return 0;
	int64_t in = (int64_t)(body_len / 4);
	if (in < 1)
		in = 1;
	return in + (int64_t)((double)in * 1.5 + 0.5);
}

static char *format_targets(arena *a, const store_endpoint *const *eps, size_t n)
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += strlen(eps[i]->addr) + 1;
	char *s = arena_alloc(a, len + 1);
	if (!s)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(eps[i]->addr);
		if (i)
			s[o++] = ',';
		memcpy(s + o, eps[i]->addr, l);
		o += l;
	}
	s[o] = '\0';
	return s;
}

/* The director; |given| holds early facts instead of parsing req->body. */
static void decide(const sched *s, const store_snapshot *snap, const sched_request *req,
		   const body_req *given, arena *a, sched_result *res)
{
	memset(res, 0, sizeof(*res));
	sched_trace *tr = req->trace;
	if (tr) {
		tr->scheduled = false;
		tr->sched_ns = 0;
		tr->n_calls = 0;
		tr->prefix_match = false;
		tr->prefix_hit_bytes = tr->prefix_total_bytes = 0;
		tr->table = NULL;
	}
	res->body = req->body;
	res->body_len = req->body_len;
	res->incoming_model = (sched_str){"", 0};
	res->target_model = (sched_str){"", 0};
	const store_catalog *cat = snap->catalog;
	bool header_rewrite = req->model_rewrite.p && req->model_rewrite.len > 0;
	body_req br;
	memset(&br, 0, sizeof(br));
	enum sched_api api = sched_api_from_path(req->path.p, req->path.len);
	/* Results live in the arena, not in the caller's header storage. */
	sched_str hdr_target = {"", 0};
	if (header_rewrite) {
		hdr_target.p = arena_strndup(a, req->model_rewrite.p, req->model_rewrite.len);
		hdr_target.len = req->model_rewrite.len;
		if (!hdr_target.p) {
			fail(res, SCHED_INTERNAL, "out of memory");
			return;
		}
	}

	/* a, b: parse and resolve the model. */
	if (s->passthrough) {
		res->raw_payload = true;
		res->target_model = hdr_target;
	} else {
		char msg[400];
		if (given) {
			br = *given;
			res->body = NULL;
			res->body_len = 0;
		} else if (body_parse_request(req->body, req->body_len, api, &br, msg,
					      sizeof(msg)) < 0) {
			fail(res, SCHED_BAD_REQUEST, "%s", msg);
			return;
		}
		if (br.model.t != BJ_STRING) {
			fail(res, SCHED_BAD_REQUEST, "model not found in request body");
			return;
		}
		size_t ilen;
		char *incoming = bj_unquote_dup(&br.model, a, &ilen);
		if (!incoming) {
			fail(res, SCHED_INTERNAL, "out of memory");
			return;
		}
		res->incoming_model = (sched_str){incoming, ilen};
		res->target_model = header_rewrite ? hdr_target : res->incoming_model;
		res->stream = br.stream;
		const store_rewrite_rule *rule = store_rewrite_find(cat, incoming, ilen);
		if (rule) {
			const char *t = draw_rewrite(rule);
			res->target_model = (sched_str){t, strlen(t)};
			res->rewrite_name = rule->rewrite_name;
		} else if (!header_rewrite) {
			/* v1alpha2 InferenceModel traffic split, when nothing else
			 * rewrote the model. */
			const store_model *m = store_model_find(cat, incoming, ilen);
			if (m && m->n_targets) {
				const char *t = draw_model(m);
				res->target_model = (sched_str){t, strlen(t)};
			}
		}
	}

	/* c: priority from the InferenceObjective named by the header. */
	if (req->objective.p) {
		const store_objective *o = store_objective_find(cat, req->objective.p,
								req->objective.len);
		if (o && o->has_priority)
			res->priority = o->priority;
	}

	/* d: admission. Sheddable is priority < 0 (v1.x); a request whose model
	 * has a v1alpha2 InferenceModel follows v0.5 instead: anything but
	 * Critical is shed when the pool is saturated. */
	bool sheddable = res->priority < 0;
	if (!s->passthrough) {
		const store_model *m = store_model_find(cat, res->incoming_model.p,
							res->incoming_model.len);
		if (m && !(m->has_criticality && m->criticality == STORE_CRIT_CRITICAL))
			sheddable = true;
	}

	const store_endpoint **cands =
		arena_alloc(a, (snap->n_endpoints ? snap->n_endpoints : 1) * sizeof(*cands));
	if (!cands) {
		fail(res, SCHED_INTERNAL, "out of memory");
		return;
	}
	int64_t now = now_ns();
	size_t n = candidates(s, snap, req, now, cands);
	sched_ctx ctx = {
		.s = s,
		.req = req,
		.target_model = res->target_model,
		.now_ns = now,
		.a = a,
		.api = api,
		.body = s->passthrough ? NULL : &br,
		.snap = snap,
		.state = s->n_preparers ? arena_calloc(a, s->n_preparers * sizeof(void *)) : NULL,
		.trace = tr,
		.inflight_view = inflight_view_of(s->inflight, snap),
	};
	if (s->n_preparers && !ctx.state) {
		fail(res, SCHED_INTERNAL, "out of memory");
		return;
	}
	if (sheddable && s->saturation->type->saturation(s->saturation, &ctx, cands, n) >= 1.0) {
		fail(res, SCHED_RESOURCE_EXHAUSTED, "system saturated, sheddable request dropped");
		return;
	}
	/* e: candidates. */
	if (n == 0) {
		fail(res, SCHED_SERVICE_UNAVAILABLE,
		     "failed to find endpoint candidates for serving the request");
		return;
	}

	/* f: PrepareData plugins. */
	int64_t mark = trace_t0(tr);
	for (size_t i = 0; i < s->n_preparers; i++) {
		if (!s->preparers[i]->type->prepare)
			continue;
		s->preparers[i]->type->prepare(s->preparers[i], &ctx, cands, n);
		trace_lap(tr, "PrepareData", s->preparers[i], &mark);
	}

	/* g: schedule (single-profile-handler: the one profile is primary).
	 * The handler's two extension points are timed as the reference does,
	 * though picking the one profile is all they do here. */
	int64_t sched_t0 = mark;
	if (s->handler)
		trace_lap(tr, "ProfilePicker", s->handler, &mark);
	const sched_profile *pr = &s->profiles[0];
	size_t k = run_profile(pr, &ctx, cands, n, res->picked, &mark);
	if (tr) {
		if (s->handler)
			trace_lap(tr, "ProcessProfilesResults", s->handler, &mark);
		else
			mark = now_ns();
		tr->sched_ns = mark - sched_t0;
		tr->scheduled = true;
	}
	if (k == 0) {
		fail(res, SCHED_RESOURCE_EXHAUSTED,
		     "failed to find target endpoint: failed to run scheduler profile '%s'",
		     pr->name);
		return;
	}
	res->n_picked = k;
	/* h: the target list in picker order, then PreRequest plugins. */
	res->targets = format_targets(a, res->picked, k);
	if (!res->targets) {
		fail(res, SCHED_INTERNAL, "out of memory");
		return;
	}
	mark = trace_t0(tr);
	for (size_t i = 0; i < s->n_preparers && !req->dry_run; i++) {
		if (!s->preparers[i]->type->pre_request)
			continue;
		s->preparers[i]->type->pre_request(s->preparers[i], &ctx, res->picked, k);
		trace_lap(tr, "PreRequest", s->preparers[i], &mark);
	}

	/* i: the body keeps every byte but the model value. The reference
	 * re-serialises the parsed map instead (sorted keys, HTML escaping,
	 * numbers through float64); forwarding the client's bytes is
	 * deliberate, so nothing the client sent changes but the model. */
	if (!s->passthrough && !given && (res->target_model.len != res->incoming_model.len ||
				memcmp(res->target_model.p, res->incoming_model.p,
				       res->target_model.len) != 0)) {
		if (body_rewrite_model(req->body, req->body_len, &br.model, res->target_model.p,
				       res->target_model.len, a, &res->body, &res->body_len) < 0) {
			fail(res, SCHED_INTERNAL, "Error marshalling request body");
			return;
		}
	}

	/* PreRequest: count the request against its primary endpoint. */
	if (s->inflight && !req->dry_run) {
		res->inflight_tokens = estimate_tokens(req->body_len);
		res->inflight = inflight_acquire(s->inflight, res->picked[0]->name,
						 res->inflight_tokens);
		res->inflight_mark =
			inflight_mark_sent(res->inflight, res->picked[0]->m.update_ms);
	}
}

void sched_decide(const sched *s, const store_snapshot *snap, const sched_request *req,
		  arena *a, sched_result *res)
{
	decide(s, snap, req, NULL, a, res);
}

void sched_decide_early(const sched *s, const store_snapshot *snap, const sched_request *req,
			const body_req *facts, arena *a, sched_result *res)
{
	decide(s, snap, req, facts, a, res);
}

int sched_early_need(const sched *s, const store_snapshot *snap, enum sched_api api,
		     size_t *input_bytes)
{
	*input_bytes = 0;
	if (s->passthrough)
		return -ENOTSUP;
	size_t need = sched_prefix_input_budget(s, snap);
	if (need && api == SCHED_API_RESPONSES)
		return -ENOTSUP;
	*input_bytes = need;
	return 0;
}

void sched_early_body_done(const sched *s, sched_result *res, size_t body_len)
{
	res->body_len = body_len;
	if (!res->inflight || !s->inflight)
		return;
	int64_t t = estimate_tokens(body_len);
	if (t == res->inflight_tokens)
		return;
	/* Re-counted under the same endpoint (the count held keeps its slot). */
	void *slot = inflight_acquire(s->inflight, res->picked[0]->name, t);
	inflight_release(res->inflight, res->inflight_tokens);
	res->inflight = slot;
	res->inflight_tokens = t;
}

void sched_request_done(const sched *s, const sched_result *res)
{
	(void)s;
	if (res->inflight) {
		inflight_unmark_sent(res->inflight, res->inflight_mark);
		inflight_release(res->inflight, res->inflight_tokens);
	}
}

void sched_pick_any(const store_snapshot *snap, arena *a, sched_result *res)
{
	memset(res, 0, sizeof(*res));
	res->incoming_model = (sched_str){"", 0};
	res->target_model = (sched_str){"", 0};
	if (!snap || snap->n_endpoints == 0) {
		fail(res, SCHED_INTERNAL, "no pods available in datastore");
		return;
	}
	const store_endpoint *ep = &snap->endpoints[rand_below(snap->n_endpoints)];
	res->picked[0] = ep;
	res->n_picked = 1;
	res->targets = arena_strdup(a, ep->addr);
	if (!res->targets)
		fail(res, SCHED_INTERNAL, "out of memory");
}
