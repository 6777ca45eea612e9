/* The request path's metrics: per-worker tables and what extproc records
 * into them (see adm_int.h for the threading rules). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "admin/adm_int.h"

/* ---- buckets (pkg/epp/metrics/metrics.go v1.5.0) ---- */

static const double le_latency[] = {
	0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10,
	15, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600,
};
static const double le_req_size[] = {
	64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144,
	524288, 1048576, 2097152, 4194304, 8388608, 16777216, 33554432, 67108864, 134217728,
	268435456, 536870912, 1073741824,
};
/* 32778 (not 32768) is the reference's. */
static const double le_resp_size[] = {
	1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536,
};
static const double le_in_tokens[] = {
	1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536, 131072,
	262144, 524288, 1048576,
};
static const double le_out_tokens[] = {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};
static const double le_ntpot[] = {
	0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
};
static const double le_sched[] = {
	0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
};
static const double le_hit_ratio[] = {0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
static const double le_hit_bytes[] = {
	0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
};
/* kepp's own: a whole decision, parsing included, from 10us. */
static const double le_decide[] = {
	0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
	0.05, 0.1,
};

#define SPEC(a) {a, sizeof(a) / sizeof(a[0])}
const adm_hspec H_LATENCY = SPEC(le_latency), H_REQ_SIZE = SPEC(le_req_size),
		H_RESP_SIZE = SPEC(le_resp_size), H_IN_TOKENS = SPEC(le_in_tokens),
		H_OUT_TOKENS = SPEC(le_out_tokens), H_NTPOT = SPEC(le_ntpot),
		H_SCHED = SPEC(le_sched), H_HIT_RATIO = SPEC(le_hit_ratio),
		H_HIT_BYTES = SPEC(le_hit_bytes), H_DECIDE = SPEC(le_decide);

const char *const adm_err_codes[ADM_N_ERR] = {
	"BadRequest", "Unauthorized",       "Forbidden",          "NotFound",
	"Internal",   "ResourceExhausted",  "ServiceUnavailable", "ModelServerError",
};

static int err_index(const char *code)
{
	for (int i = 0; i < ADM_N_ERR; i++)
		if (strcmp(adm_err_codes[i], code) == 0)
			return i;
	return 4; /* anything else is an internal error */
}

static uint64_t dbits(double v)
{
	uint64_t u;
	memcpy(&u, &v, sizeof(u));
	return u;
}

double hist_sum(const adm_hist *h)
{
	uint64_t u = ld(&h->sum);
	double v;
	memcpy(&v, &u, sizeof(v));
	return v;
}

/* Buckets are upper-inclusive (le). */
void hist_observe(adm_hist *h, const adm_hspec *spec, double v)
{
	size_t lo = 0, hi = spec->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (v <= spec->le[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	ctr_add(&h->b[lo], 1);
	atomic_store_explicit(&h->sum, dbits(hist_sum(h) + v), memory_order_relaxed);
}

/* ---- tables ---- */

int adm_tbl_init(adm_tbl *t, const char *family, size_t max, size_t payload)
{
	size_t slots = 16;
	while (slots < 2 * max)
		slots *= 2;
	memset(t, 0, sizeof(*t));
	t->slots = calloc(slots, sizeof(*t->slots));
	if (!t->slots)
		return -ENOMEM;
	t->family = family;
	t->payload = payload;
	t->max = max;
	t->mask = slots - 1;
	return 0;
}

void adm_tbl_free(adm_tbl *t)
{
	for (size_t i = 0; t->slots && i <= t->mask; i++)
		free(atomic_load_explicit(&t->slots[i], memory_order_relaxed));
	free(t->slots);
	t->slots = NULL;
}

/* Each key hashed with the previous hash as seed: lengths are part of the
 * input, so ("ab","") and ("a","b") differ. */
static uint64_t keys_hash(const char *const *keys, uint32_t n)
{
	uint64_t h = n;
	for (uint32_t i = 0; i < n; i++)
		h = XXH3_64bits_withSeed(keys[i], strlen(keys[i]), h);
	return h;
}

static bool keys_eq(const adm_entry *e, const char *const *keys, uint32_t n)
{
	if (e->n_keys != n)
		return false;
	for (uint32_t i = 0; i < n; i++)
		if (strcmp(e->keys[i], keys[i]) != 0)
			return false;
	return true;
}

static adm_entry *entry_new(const adm_tbl *t, uint64_t hash, const char *const *keys, uint32_t n)
{
	size_t head = (sizeof(adm_entry) + 63) & ~(size_t)63;
	size_t body = (t->payload + 63) & ~(size_t)63;
	size_t klen = 0;
	for (uint32_t i = 0; i < n; i++)
		klen += strlen(keys[i]) + 1;
	char *mem = aligned_alloc(64, (head + body + klen + 63) & ~(size_t)63);
	if (!mem)
		return NULL;
	memset(mem, 0, head + body);
	adm_entry *e = (adm_entry *)mem;
	e->hash = hash;
	e->n_keys = n;
	e->payload = mem + head;
	char *k = mem + head + body;
	for (uint32_t i = 0; i < n; i++) {
		size_t l = strlen(keys[i]) + 1;
		memcpy(k, keys[i], l);
		e->keys[i] = k;
		k += l;
	}
	return e;
}

void *adm_tbl_get(adm_tbl *t, const char *const *keys, uint32_t n)
{
	uint64_t h = keys_hash(keys, n);
	for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
		adm_entry *e = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
		if (!e) {
			if (t->n >= t->max) {
				ctr_add(&t->dropped, 1);
				return NULL;
			}
			e = entry_new(t, h, keys, n);
			if (!e) {
				ctr_add(&t->dropped, 1);
				return NULL;
			}
			atomic_store_explicit(&t->slots[i], e, memory_order_release);
			t->n++;
			return e->payload;
		}
		if (e->hash == h && keys_eq(e, keys, n))
			return e->payload;
	}
}

/* ---- workers ---- */

/* Changes whenever a worker (and its tables) is made or freed: plugin_hist's
 * per-thread memo is valid for one value only. */
static _Atomic uint64_t workers_gen = 1;

static void worker_free(adm_worker *w)
{
	if (!w)
		return;
	atomic_fetch_add(&workers_gen, 1);
	adm_tbl_free(&w->series);
	adm_tbl_free(&w->attempts);
	adm_tbl_free(&w->plugins);
	adm_tbl_free(&w->rewrites);
	adm_tbl_free(&w->endpoints);
	free(w);
}

void adm_workers_free(adm *a)
{
	for (size_t i = 0; i < a->n_workers; i++)
		worker_free(a->workers[i]);
	free(a->workers);
	a->workers = NULL;
	a->n_workers = 0;
}

adm_worker *adm_worker_new(adm *a)
{
	adm_worker *w = aligned_alloc(64, (sizeof(*w) + 63) & ~(size_t)63);
	adm_worker **nv = realloc(a->workers, (a->n_workers + 1) * sizeof(*nv));
	if (!w || !nv) {
		free(w);
		if (nv)
			a->workers = nv;
		return NULL;
	}
	a->workers = nv;
	atomic_fetch_add(&workers_gen, 1);
	memset(w, 0, sizeof(*w));
	w->a = a;
	w->id = (int)a->n_workers;
	size_t m = a->o.max_series;
	if (adm_tbl_init(&w->series, "inference_objective", m, sizeof(adm_series)) < 0 ||
	    adm_tbl_init(&w->attempts, "inference_extension_scheduler_attempts_total", m,
			 sizeof(_Atomic uint64_t)) < 0 ||
	    adm_tbl_init(&w->plugins, "inference_extension_plugin_duration_seconds", m,
			 sizeof(adm_hist)) < 0 ||
	    adm_tbl_init(&w->rewrites, "inference_extension_model_rewrite_decisions_total", m,
			 sizeof(_Atomic uint64_t)) < 0 ||
	    /* Endpoints come from the pool, not from clients: a larger bound,
	     * so pod churn over a long life does not run it out soon. */
	    adm_tbl_init(&w->endpoints, "kepp_endpoint", m > 8192 ? m : 8192,
			 sizeof(adm_endpoint)) < 0) {
		worker_free(w);
		return NULL;
	}
	a->workers[a->n_workers++] = w;
	return w;
}

void adm_endpoint_totals(const adm *a, const char *addr, uint64_t *picks, int64_t *in_flight)
{
	*picks = 0;
	*in_flight = 0;
	const char *k[1] = {addr};
	uint64_t h = keys_hash(k, 1);
	for (size_t i = 0; i < a->n_workers; i++) {
		const adm_tbl *t = &a->workers[i]->endpoints;
		for (size_t s = h & t->mask;; s = (s + 1) & t->mask) {
			const adm_entry *e = adm_tbl_at(t, s);
			if (!e)
				break;
			if (e->hash == h && keys_eq(e, k, 1)) {
				const adm_endpoint *ep = e->payload;
				*picks += ld(&ep->picks);
				*in_flight += atomic_load_explicit(&ep->in_flight,
								   memory_order_relaxed);
				break;
			}
		}
	}
}

/* ---- recording ---- */

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A sched_str as a C string for table keys: label values are the model
 * names, bounded by the body limit; longer ones are cut (labels that long
 * are useless, and the key copy stays small). */
#define LABEL_MAX 256
static const char *cstr(sched_str s, char *buf)
{
	size_t n = s.p ? s.len : 0;
	if (n >= LABEL_MAX)
		n = LABEL_MAX - 1;
	if (n)
		memcpy(buf, s.p, n);
	buf[n] = '\0';
	return buf;
}

static adm_series *series_of(adm_worker *w, const sched_result *res)
{
	char m[LABEL_MAX], t[LABEL_MAX];
	sched_str none = {NULL, 0};
	const char *keys[2] = {cstr(res ? res->incoming_model : none, m),
			       cstr(res ? res->target_model : none, t)};
	return adm_tbl_get(&w->series, keys, 2);
}

void adm_stream_open(adm_worker *w, adm_req *r)
{
	memset(r, 0, sizeof(*r));
	if (!w)
		return;
	ctr_add(&w->streams_total, 1);
	gauge_add(&w->streams_open, 1);
}

void adm_request_received(adm_req *r)
{
	r->received_ns = mono_ns();
}

static void count_priority(adm_worker *w, adm_series *se, int32_t prio)
{
	uint32_t n = atomic_load_explicit(&se->n_prio, memory_order_relaxed);
	for (uint32_t i = 0; i < n; i++)
		if (se->prio[i] == prio) {
			ctr_add(&se->requests[i], 1);
			return;
		}
	if (n == ADM_PRIO_MAX) {
		ctr_add(&w->prio_dropped, 1);
		return;
	}
	se->prio[n] = prio;
	ctr_add(&se->requests[n], 1);
	atomic_store_explicit(&se->n_prio, n + 1, memory_order_release);
}

/* The plugin-duration histogram of each timed call, remembered per worker
 * thread by the label pointers (a decision times ~10 calls; hashing and
 * comparing three labels each was most of recording them). The extension
 * point and type are static strings of sched; a plugin name lives with its
 * sched, which a reload replaces, so the name's text is compared too. */
#define PLUGIN_MEMO 32
#define PLUGIN_MEMO_NAME 64

static __thread struct plugin_memo {
	uint64_t gen;
	const adm_worker *w;
	const char *ext, *type, *name;
	adm_hist *h;
	char text[PLUGIN_MEMO_NAME];
} plugin_memo[PLUGIN_MEMO];

static adm_hist *plugin_hist(adm_worker *w, const sched_plugin_time *c)
{
	uintptr_t k = (uintptr_t)c->ext_point ^ (uintptr_t)c->type * 3 ^ (uintptr_t)c->name * 5;
	struct plugin_memo *m = &plugin_memo[(k ^ k >> 7 ^ k >> 13) % PLUGIN_MEMO];
	uint64_t gen = atomic_load_explicit(&workers_gen, memory_order_relaxed);
	if (m->gen == gen && m->w == w && m->ext == c->ext_point && m->type == c->type && m->name == c->name &&
	    strcmp(m->text, c->name) == 0)
		return m->h;
	const char *keys[3] = {c->ext_point, c->name, c->type};
	adm_hist *h = adm_tbl_get(&w->plugins, keys, 3);
	size_t len = strlen(c->name);
	if (h && len < PLUGIN_MEMO_NAME) {
		*m = (struct plugin_memo){gen, w, c->ext_point, c->type, c->name, h, ""};
		memcpy(m->text, c->name, len + 1);
	}
	return h;
}

static void record_trace(adm_worker *w, const store_snapshot *snap, const sched_trace *tr,
			 const sched_result *res)
{
	for (size_t i = 0; i < tr->n_calls; i++) {
		const sched_plugin_time *c = &tr->calls[i];
		adm_hist *h = plugin_hist(w, c);
		if (h)
			hist_observe(h, &H_SCHED, (double)c->ns / 1e9);
	}
	if (tr->scheduled) {
		hist_observe(&w->e2e, &H_SCHED, (double)tr->sched_ns / 1e9);
		/* RecordSchedulerAttempt: the primary pick's pod, namespace and
		 * port on success, empty on failure. */
		char tm[LABEL_MAX], port[8] = "";
		const char *pod = "", *ns = "", *status = "failure";
		if (res->err == SCHED_OK && res->n_picked) {
			const store_endpoint *ep = res->picked[0];
			const char *pool;
			adm_pool_names(w->a, snap, &pool, &ns);
			pod = ep->pod && *ep->pod ? ep->pod : ep->name;
			snprintf(port, sizeof(port), "%u", ep->port);
			status = "success";
		}
		const char *keys[5] = {ns, pod, port, status, cstr(res->target_model, tm)};
		_Atomic uint64_t *c = adm_tbl_get(&w->attempts, keys, 5);
		if (c)
			ctr_add(c, 1);
	}
	if (tr->prefix_match) {
		hist_observe(&w->hit_bytes, &H_HIT_BYTES, (double)tr->prefix_hit_bytes);
		if (tr->prefix_total_bytes > 0)
			hist_observe(&w->hit_ratio, &H_HIT_RATIO,
				     (double)tr->prefix_hit_bytes / (double)tr->prefix_total_bytes);
	}
}

void adm_request_decided(adm_worker *w, adm_req *r, const store_snapshot *snap,
			 const sched_request *rq, const sched_result *res, int64_t decide_ns)
{
	if (!w)
		return;
	if (rq) {
		hist_observe(&w->decide, &H_DECIDE, (double)decide_ns / 1e9);
		if (rq->trace)
			record_trace(w, snap, rq->trace, res);
		if (res->rewrite_name) {
			char m[LABEL_MAX], t[LABEL_MAX];
			const char *keys[3] = {cstr(res->incoming_model, m), res->rewrite_name,
					       cstr(res->target_model, t)};
			_Atomic uint64_t *c = adm_tbl_get(&w->rewrites, keys, 3);
			if (c)
				ctr_add(c, 1);
		}
	}
	if (res->err != SCHED_OK || !res->n_picked)
		return;
	const char *addr[1] = {res->picked[0]->addr};
	adm_endpoint *ep = adm_tbl_get(&w->endpoints, addr, 1);
	if (ep) {
		ctr_add(&ep->picks, 1);
		gauge_add(&ep->in_flight, 1);
		r->ep = ep;
	}
	if (!rq)
		return;
	adm_series *se = series_of(w, res);
	r->series = se;
	if (!se)
		return;
	count_priority(w, se, res->priority);
	hist_observe(&se->req_size, &H_REQ_SIZE, (double)res->body_len);
	/* IncRunningRequests: only requests that name a model. */
	if (res->incoming_model.len) {
		gauge_add(&se->running, 1);
		r->running = true;
	}
}

void adm_request_failed(adm_req *r, const char *code)
{
	r->err_code = code;
}

void adm_response_status(adm_req *r, const char *status, size_t len)
{
	if (len != 3 || memcmp(status, "200", 3) != 0)
		r->err_code = "ModelServerError";
}

void adm_response_bytes(adm_req *r, size_t n)
{
	r->response_bytes += n;
}

void adm_response_done(adm_worker *w, adm_req *r, const sched_result *res, const sched_usage *u)
{
	if (!w || r->completed)
		return;
	r->completed = true;
	adm_series *se = r->series ? r->series : series_of(w, res);
	if (!se)
		return;
	if (u && u->found) {
		if (u->prompt_tokens > 0)
			hist_observe(&se->in_tokens, &H_IN_TOKENS, (double)u->prompt_tokens);
		if (u->completion_tokens > 0)
			hist_observe(&se->out_tokens, &H_OUT_TOKENS, (double)u->completion_tokens);
		if (u->has_cached)
			hist_observe(&se->cached_tokens, &H_IN_TOKENS, (double)u->cached_tokens);
	}
	hist_observe(&se->resp_size, &H_RESP_SIZE, (double)r->response_bytes);
	/* Latencies need the receipt (a stream may carry only a response). */
	if (!r->received_ns)
		return;
	double secs = (double)(mono_ns() - r->received_ns) / 1e9;
	if (secs <= 0)
		return;
	if (u && u->found && u->completion_tokens > 0)
		hist_observe(&se->ntpot, &H_NTPOT, secs / (double)u->completion_tokens);
	hist_observe(&se->duration, &H_LATENCY, secs);
}

void adm_stream_close(adm_worker *w, adm_req *r, const sched_result *res)
{
	if (!w)
		return;
	gauge_add(&w->streams_open, -1);
	if (r->ep)
		gauge_add(&r->ep->in_flight, -1);
	if (r->running)
		gauge_add(&r->series->running, -1);
	if (r->err_code) {
		adm_series *se = r->series ? r->series : series_of(w, res);
		if (se)
			ctr_add(&se->errors[err_index(r->err_code)], 1);
	}
}
