/* The /metrics exposition (text format 0.0.4) as client_golang writes it:
 * families sorted by name, labels sorted by name (le last), series sorted
 * by label values, numbers in Go's shortest 'g' form. Per-worker series
 * with equal labels are merged here, on the control thread. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin/adm_int.h"

/* ---- buffer ---- */

void adm_buf_free(adm_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static bool buf_room(adm_buf *b, size_t n)
{
	if (b->oom)
		return false;
	if (b->len + n + 1 <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + n + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

void buf_put(adm_buf *b, const char *s, size_t n)
{
	if (!buf_room(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void buf_puts(adm_buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

void buf_printf(adm_buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		buf_put(b, tmp, (size_t)n);
		return;
	}
	if (!buf_room(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* Go's strconv.FormatFloat(v, 'g', -1, 64) into |out| (>= 32 bytes). */
static void fmt_float(char *out, size_t cap, double v)
{
	if (v == 0) {
		snprintf(out, cap, "0");
		return;
	}
	if (isnan(v)) {
		snprintf(out, cap, "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(out, cap, "%s", v > 0 ? "+Inf" : "-Inf");
		return;
	}
	/* The shortest digits that read back as |v|, then Go's choice: %e
	 * when the decimal exponent is < -4 or >= 6 (the shortest-'g' rule),
	 * else plain digits. */
	int prec;
	for (prec = 1; prec <= 17; prec++) {
		snprintf(out, cap, "%.*e", prec - 1, v);
		if (strtod(out, NULL) == v)
			break;
	}
	const char *x = strchr(out, 'e');
	int exp = x ? atoi(x + 1) : 0;
	if (exp < -4 || exp >= 6)
		return;
	int decimals = prec - 1 - exp;
	snprintf(out, cap, "%.*f", decimals > 0 ? decimals : 0, v);
}

void buf_float(adm_buf *b, double v)
{
	char tmp[48];
	fmt_float(tmp, sizeof(tmp), v);
	buf_puts(b, tmp);
}

static void put_escaped(adm_buf *b, const char *s, bool quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			buf_put(b, "\\\\", 2);
		else if (*s == '\n')
			buf_put(b, "\\n", 2);
		else if (quote && *s == '"')
			buf_put(b, "\\\"", 2);
		else
			buf_put(b, s, 1);
	}
}

/* ---- families ---- */

enum rkind { R_CTR, R_GAUGE, R_HIST, R_VAL };

typedef struct fam {
	const char *name, *help, *type;
	const adm_hspec *spec; /* histograms */
	uint32_t nl;
	const char *ln[ADM_MAX_KEYS]; /* label names, sorted */
} fam;

typedef struct row {
	const char *lv[ADM_MAX_KEYS];
	enum rkind kind;
	const void *src; /* counter, gauge or histogram of one worker */
	double v;        /* R_VAL */
} row;

typedef struct rows {
	row *v;
	size_t n, cap;
	bool oom;
} rows;

static row *rows_add(rows *r)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		row *nv = realloc(r->v, cap * sizeof(*nv));
		if (!nv) {
			r->oom = true;
			return NULL;
		}
		r->v = nv;
		r->cap = cap;
	}
	row *x = &r->v[r->n++];
	memset(x, 0, sizeof(*x));
	return x;
}

static int cmp_rows(const void *a, const void *b, void *arg)
{
	const row *x = a, *y = b;
	uint32_t nl = *(const uint32_t *)arg;
	for (uint32_t i = 0; i < nl; i++) {
		int c = strcmp(x->lv[i], y->lv[i]);
		if (c)
			return c;
	}
	return 0;
}

static void family_head(adm_buf *b, const char *name, const char *type, const char *help)
{
	buf_puts(b, "# HELP ");
	buf_puts(b, name);
	buf_put(b, " ", 1);
	put_escaped(b, help, false);
	buf_puts(b, "\n# TYPE ");
	buf_puts(b, name);
	buf_put(b, " ", 1);
	buf_puts(b, type);
	buf_put(b, "\n", 1);
}

static void sample(adm_buf *b, const fam *f, const char *suffix, const row *r, const char *le,
		   double v)
{
	buf_puts(b, f->name);
	buf_puts(b, suffix);
	if (f->nl || le) {
		buf_put(b, "{", 1);
		for (uint32_t i = 0; i < f->nl; i++) {
			if (i)
				buf_put(b, ",", 1);
			buf_puts(b, f->ln[i]);
			buf_put(b, "=\"", 2);
			put_escaped(b, r->lv[i], true);
			buf_put(b, "\"", 1);
		}
		if (le) {
			if (f->nl)
				buf_put(b, ",", 1);
			buf_puts(b, "le=\"");
			buf_puts(b, le);
			buf_put(b, "\"", 1);
		}
		buf_put(b, "}", 1);
	}
	buf_put(b, " ", 1);
	buf_float(b, v);
	buf_put(b, "\n", 1);
}

static void emit_hist(adm_buf *b, const fam *f, const row *g, size_t n)
{
	uint64_t cnt[ADM_HIST_MAX] = {0};
	double sum = 0;
	for (size_t i = 0; i < n; i++) {
		const adm_hist *h = g[i].src;
		for (size_t k = 0; k <= f->spec->n; k++)
			cnt[k] += ld(&h->b[k]);
		sum += hist_sum(h);
	}
	uint64_t cum = 0;
	for (size_t k = 0; k <= f->spec->n; k++) {
		char le[48] = "+Inf";
		cum += cnt[k];
		if (k < f->spec->n)
			fmt_float(le, sizeof(le), f->spec->le[k]);
		sample(b, f, "_bucket", g, le, (double)cum);
	}
	sample(b, f, "_sum", g, NULL, sum);
	sample(b, f, "_count", g, NULL, (double)cum);
}

/* Sorts |r|, merges rows with equal labels and prints the family; prints
 * nothing without rows, as a client_golang vector without children. */
static void emit(adm_buf *b, const fam *f, rows *r)
{
	if (r->n == 0)
		return;
	uint32_t nl = f->nl;
	qsort_r(r->v, r->n, sizeof(row), cmp_rows, &nl);
	family_head(b, f->name, f->type, f->help);
	for (size_t i = 0; i < r->n;) {
		size_t j = i + 1;
		while (j < r->n && cmp_rows(&r->v[i], &r->v[j], &nl) == 0)
			j++;
		if (r->v[i].kind == R_HIST) {
			emit_hist(b, f, &r->v[i], j - i);
		} else {
			double v = 0;
			for (size_t k = i; k < j; k++) {
				const row *x = &r->v[k];
				if (x->kind == R_CTR)
					v += (double)ld(x->src);
				else if (x->kind == R_GAUGE)
					v += (double)atomic_load_explicit(
						(const _Atomic int64_t *)x->src,
						memory_order_relaxed);
				else
					v += x->v;
			}
			sample(b, f, "", &r->v[i], NULL, v);
		}
		i = j;
	}
	r->n = 0;
}

static uint64_t hist_count(const adm_hist *h)
{
	uint64_t c = 0;
	for (size_t i = 0; i < ADM_HIST_MAX; i++)
		c += ld(&h->b[i]);
	return c;
}

#define ALPHA "[ALPHA] "

static const fam F_INFO = {
	"inference_extension_info",
	ALPHA "General information of the current build of Inference Extension.",
	"gauge", NULL, 2, {"build_ref", "commit"},
};
static const fam F_REWRITE = {
	"inference_extension_model_rewrite_decisions_total",
	ALPHA "Total number of inference model rewrite decisions.",
	"counter", NULL, 3, {"model_name", "model_rewrite_name", "target_model"},
};
static const fam F_PLUGIN = {
	"inference_extension_plugin_duration_seconds",
	ALPHA "Plugin processing latency distribution in seconds for each extension point, "
	"plugin type and plugin name.",
	"histogram", &H_SCHED, 3, {"extension_point", "plugin_name", "plugin_type"},
};
static const fam F_HIT_BYTES = {
	"inference_extension_prefix_indexer_hit_bytes",
	ALPHA "Length of the prefix match in number of bytes in the cache lookup.",
	"histogram", &H_HIT_BYTES, 0, {0},
};
static const fam F_HIT_RATIO = {
	"inference_extension_prefix_indexer_hit_ratio",
	ALPHA "Ratio of prefix length matched to total prefix length in the cache lookup.",
	"histogram", &H_HIT_RATIO, 0, {0},
};
static const fam F_INDEX_SIZE = {
	"inference_extension_prefix_indexer_size",
	ALPHA "Size of the prefix indexer.",
	"gauge", NULL, 0, {0},
};
static const fam F_ATTEMPTS = {
	"inference_extension_scheduler_attempts_total",
	ALPHA "Total number of scheduling attempts.",
	"counter", NULL, 5, {"namespace", "pod_name", "port", "status", "target_model_name"},
};
static const fam F_E2E = {
	"inference_extension_scheduler_e2e_duration_seconds",
	ALPHA "End-to-end scheduling latency distribution in seconds.",
	"histogram", &H_SCHED, 0, {0},
};
static const fam F_IN_TOKENS = {
	"inference_objective_input_tokens",
	ALPHA "Inference objective input token count distribution for requests in each model.",
	"histogram", &H_IN_TOKENS, 2, {"model_name", "target_model_name"},
};
static const fam F_NTPOT = {
	"inference_objective_normalized_time_per_output_token_seconds",
	ALPHA "Inference objective latency divided by number of output tokens in seconds for "
	"each model and target model.",
	"histogram", &H_NTPOT, 2, {"model_name", "target_model_name"},
};
static const fam F_OUT_TOKENS = {
	"inference_objective_output_tokens",
	ALPHA "Inference objective output token count distribution for requests in each "
	"model.",
	"histogram", &H_OUT_TOKENS, 2, {"model_name", "target_model_name"},
};
static const fam F_CACHED = {
	"inference_objective_prompt_cached_tokens",
	ALPHA "Inference objective prompt cached token count distribution for requests in "
	"each model.",
	"histogram", &H_IN_TOKENS, 2, {"model_name", "target_model_name"},
};
static const fam F_DURATION = {
	"inference_objective_request_duration_seconds",
	ALPHA "Inference objective response latency distribution in seconds for each model "
	"and target model.",
	"histogram", &H_LATENCY, 2, {"model_name", "target_model_name"},
};
static const fam F_ERRORS = {
	"inference_objective_request_error_total",
	ALPHA "Counter of inference objective requests errors broken out for each model and "
	"target model.",
	"counter", NULL, 3, {"error_code", "model_name", "target_model_name"},
};
static const fam F_REQ_SIZE = {
	"inference_objective_request_sizes",
	ALPHA "Inference objective requests size distribution in bytes for each model and "
	"target model.",
	"histogram", &H_REQ_SIZE, 2, {"model_name", "target_model_name"},
};
static const fam F_REQUESTS = {
	"inference_objective_request_total",
	ALPHA "Counter of inference objective requests broken out for each model and target "
	"model.",
	"counter", NULL, 3, {"model_name", "priority", "target_model_name"},
};
static const fam F_RESP_SIZE = {
	"inference_objective_response_sizes",
	ALPHA "Inference objective responses size distribution in bytes for each model and "
	"target model.",
	"histogram", &H_RESP_SIZE, 2, {"model_name", "target_model_name"},
};
static const fam F_RUNNING = {
	"inference_objective_running_requests",
	ALPHA "Inference objective number of running requests in each model.",
	"gauge", NULL, 1, {"model_name"},
};
static const fam F_POOL_KV = {
	"inference_pool_average_kv_cache_utilization",
	ALPHA "The average kv cache utilization for an inference server pool.",
	"gauge", NULL, 1, {"name"},
};
static const fam F_POOL_QUEUE = {
	"inference_pool_average_queue_size",
	ALPHA "The average number of requests pending in the model server queue.",
	"gauge", NULL, 1, {"name"},
};
static const fam F_POOL_RUNNING = {
	"inference_pool_average_running_requests",
	ALPHA "The average number of running requests across model servers in the pool.",
	"gauge", NULL, 1, {"name"},
};
static const fam F_POD_QUEUE = {
	"inference_pool_per_pod_queue_size",
	ALPHA "The total number of requests pending in the model server queue for each "
	"underlying pod.",
	"gauge", NULL, 2, {"model_server_pod", "name"},
};
static const fam F_READY = {
	"inference_pool_ready_pods",
	ALPHA "The number of ready pods in the inference server pool.",
	"gauge", NULL, 1, {"name"},
};

static const fam F_DECIDE = {
	"kepp_decision_duration_seconds",
	"Time kepp took to decide a request with a body (parse, model resolution, "
	"admission, scheduling), in seconds.",
	"histogram", &H_DECIDE, 0, {0},
};
static const fam F_EP_INFLIGHT = {
	"kepp_endpoint_in_flight_requests",
	"Requests kepp sent to the endpoint (primary pick) whose ext_proc stream is "
	"still open.",
	"gauge", NULL, 1, {"endpoint"},
};
static const fam F_EP_KV = {
	"kepp_endpoint_kv_cache_utilization",
	"KV-cache utilization (0..1) of the endpoint at its last successful scrape.",
	"gauge", NULL, 1, {"endpoint"},
};
static const fam F_EP_AGE = {
	"kepp_endpoint_metrics_age_seconds",
	"Seconds since the endpoint's last successful metrics scrape.",
	"gauge", NULL, 1, {"endpoint"},
};
static const fam F_EP_PICKS = {
	"kepp_endpoint_picks_total",
	"Requests routed to the endpoint as the primary pick.",
	"counter", NULL, 1, {"endpoint"},
};
static const fam F_EP_QUEUE = {
	"kepp_endpoint_queue_size",
	"Waiting requests of the endpoint at its last successful scrape.",
	"gauge", NULL, 1, {"endpoint"},
};
static const fam F_EP_RUNNING = {
	"kepp_endpoint_running_requests",
	"Running requests of the endpoint at its last successful scrape.",
	"gauge", NULL, 1, {"endpoint"},
};
static const fam F_EP_SCRAPES = {
	"kepp_endpoint_scrapes_total",
	"Metrics scrapes of the endpoint by result (ok: the body parsed; failed: "
	"transport error, non-200 status or bad body).",
	"counter", NULL, 2, {"endpoint", "result"},
};
static const fam F_DROPPED = {
	"kepp_metrics_series_dropped_total",
	"Observations not recorded because a worker's table for the family was full (a "
	"bound on label sets, e.g. against clients sending random model names).",
	"counter", NULL, 1, {"family"},
};
static const fam F_SCRAPES = {
	"kepp_scrapes_total",
	"Metrics scrape requests by result: ok, failed (timeouts included), timeout, "
	"and skipped rounds (the endpoint's previous request still ran).",
	"counter", NULL, 1, {"result"},
};
static const fam F_SCRAPES_INFLIGHT = {
	"kepp_scrapes_in_flight",
	"Metrics scrape requests in flight.",
	"gauge", NULL, 0, {0},
};
static const fam F_STREAMS = {
	"kepp_worker_streams",
	"Open ext_proc streams per worker thread.",
	"gauge", NULL, 1, {"worker"},
};
static const fam F_STREAMS_TOTAL = {
	"kepp_worker_streams_total",
	"ext_proc streams opened per worker thread.",
	"counter", NULL, 1, {"worker"},
};

/* ---- gathering ---- */

void adm_pool_names(const adm *a, const store_snapshot *snap, const char **name, const char **ns)
{
	const store_catalog *c = snap ? snap->catalog : NULL;
	if (c && c->has_pool && c->pool.name) {
		*name = c->pool.name;
		*ns = c->pool.namespace_ ? c->pool.namespace_ : "";
		return;
	}
	*name = a->o.pool_name && *a->o.pool_name ? a->o.pool_name : NULL;
	*ns = a->o.pool_namespace ? a->o.pool_namespace : "";
}

typedef struct scratch {
	char **strs;
	size_t n, cap;
	bool oom;
} scratch;

/* Keeps a formatted label value alive until the render ends. */
static const char *keep(scratch *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *keep(scratch *s, const char *fmt, ...)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 32;
		char **nv = realloc(s->strs, cap * sizeof(*nv));
		if (!nv) {
			s->oom = true;
			return "";
		}
		s->strs = nv;
		s->cap = cap;
	}
	char *p = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (n < 0) {
		s->oom = true;
		return "";
	}
	s->strs[s->n++] = p;
	return p;
}

static void scratch_free(scratch *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->strs[i]);
	free(s->strs);
}

static void series_hist(adm *a, adm_buf *b, rows *r, const fam *f, size_t off)
{
	for (size_t w = 0; w < a->n_workers; w++) {
		const adm_tbl *t = &a->workers[w]->series;
		for (size_t i = 0; i < adm_tbl_slots(t); i++) {
			const adm_entry *e = adm_tbl_at(t, i);
			if (!e)
				continue;
			const adm_hist *h = (const adm_hist *)((const char *)e->payload + off);
			if (!hist_count(h))
				continue;
			row *x = rows_add(r);
			if (!x)
				return;
			*x = (row){{e->keys[0], e->keys[1]}, R_HIST, h, 0};
		}
	}
	emit(b, f, r);
}

/* Rows straight from a keyed table (keys in the family's label order). */
static void table_rows(adm *a, adm_buf *b, rows *r, const fam *f, size_t tbl_off,
		       enum rkind kind)
{
	for (size_t w = 0; w < a->n_workers; w++) {
		const adm_tbl *t = (const adm_tbl *)((const char *)a->workers[w] + tbl_off);
		for (size_t i = 0; i < adm_tbl_slots(t); i++) {
			const adm_entry *e = adm_tbl_at(t, i);
			if (!e)
				continue;
			row *x = rows_add(r);
			if (!x)
				return;
			x->kind = kind;
			x->src = e->payload;
			for (uint32_t k = 0; k < e->n_keys && k < ADM_MAX_KEYS; k++)
				x->lv[k] = e->keys[k];
		}
	}
	emit(b, f, r);
}

static void worker_hist(adm *a, adm_buf *b, rows *r, const fam *f, size_t off)
{
	for (size_t w = 0; w < a->n_workers; w++) {
		const adm_hist *h = (const adm_hist *)((const char *)a->workers[w] + off);
		if (!hist_count(h))
			continue;
		row *x = rows_add(r);
		if (x)
			*x = (row){{0}, R_HIST, h, 0};
	}
	emit(b, f, r);
}

static void val(rows *r, double v, const char *l0, const char *l1)
{
	row *x = rows_add(r);
	if (x)
		*x = (row){{l0, l1}, R_VAL, NULL, v};
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void objective_families(adm *a, adm_buf *b, rows *r, scratch *sc)
{
	series_hist(a, b, r, &F_IN_TOKENS, offsetof(adm_series, in_tokens));
	series_hist(a, b, r, &F_NTPOT, offsetof(adm_series, ntpot));
	series_hist(a, b, r, &F_OUT_TOKENS, offsetof(adm_series, out_tokens));
	series_hist(a, b, r, &F_CACHED, offsetof(adm_series, cached_tokens));
	series_hist(a, b, r, &F_DURATION, offsetof(adm_series, duration));
	for (size_t w = 0; w < a->n_workers; w++) {
		const adm_tbl *t = &a->workers[w]->series;
		for (size_t i = 0; i < adm_tbl_slots(t); i++) {
			const adm_entry *e = adm_tbl_at(t, i);
			const adm_series *se = e ? e->payload : NULL;
			for (int k = 0; se && k < ADM_N_ERR; k++) {
				row *x = ld(&se->errors[k]) ? rows_add(r) : NULL;
				if (!x)
					continue;
				*x = (row){{adm_err_codes[k], e->keys[0], e->keys[1]}, R_CTR,
					   &se->errors[k], 0};
			}
		}
	}
	emit(b, &F_ERRORS, r);
	series_hist(a, b, r, &F_REQ_SIZE, offsetof(adm_series, req_size));
	for (size_t w = 0; w < a->n_workers; w++) {
		const adm_tbl *t = &a->workers[w]->series;
		for (size_t i = 0; i < adm_tbl_slots(t); i++) {
			const adm_entry *e = adm_tbl_at(t, i);
			const adm_series *se = e ? e->payload : NULL;
			uint32_t np = 0;
			if (se)
				np = atomic_load_explicit(&se->n_prio, memory_order_acquire);
			for (uint32_t k = 0; k < np; k++) {
				row *x = rows_add(r);
				if (!x)
					continue;
				const char *prio = keep(sc, "%d", se->prio[k]);
				*x = (row){{e->keys[0], prio, e->keys[1]}, R_CTR, &se->requests[k],
					   0};
			}
		}
	}
	emit(b, &F_REQUESTS, r);
	series_hist(a, b, r, &F_RESP_SIZE, offsetof(adm_series, resp_size));
	for (size_t w = 0; w < a->n_workers; w++) {
		const adm_tbl *t = &a->workers[w]->series;
		for (size_t i = 0; i < adm_tbl_slots(t); i++) {
			const adm_entry *e = adm_tbl_at(t, i);
			const adm_series *se = e ? e->payload : NULL;
			/* The gauge exists once a request of a named model ran. */
			if (!se || !*e->keys[0] ||
			    !atomic_load_explicit(&se->n_prio, memory_order_acquire))
				continue;
			row *x = rows_add(r);
			if (x)
				*x = (row){{e->keys[0]}, R_GAUGE, &se->running, 0};
		}
	}
	emit(b, &F_RUNNING, r);
}

static void pool_families(adm *a, adm_buf *b, rows *r, const store_snapshot *snap)
{
	const char *pool, *ns;
	adm_pool_names(a, snap, &pool, &ns);
	if (!pool || !snap)
		return;
	int64_t now = now_ms(), stale = a->o.staleness_ms;
	double kv = 0, queue = 0, running = 0;
	uint32_t fresh = 0;
	for (uint32_t i = 0; i < snap->n_endpoints; i++) {
		const store_metrics *m = &snap->endpoints[i].m;
		if (!m->valid || now - m->update_ms > stale)
			continue;
		fresh++;
		kv += m->kv_usage;
		queue += m->waiting_queue;
		running += m->running;
	}
	/* The averages are over endpoints with fresh metrics, and only set
	 * when there is one (refreshPrometheusMetrics). */
	if (fresh) {
		val(r, kv / fresh, pool, NULL);
		emit(b, &F_POOL_KV, r);
		val(r, queue / fresh, pool, NULL);
		emit(b, &F_POOL_QUEUE, r);
		val(r, running / fresh, pool, NULL);
		emit(b, &F_POOL_RUNNING, r);
	}
	for (uint32_t i = 0; i < snap->n_endpoints; i++)
		val(r, snap->endpoints[i].m.waiting_queue, snap->endpoints[i].name, pool);
	emit(b, &F_POD_QUEUE, r);
	val(r, fresh, pool, NULL);
	emit(b, &F_READY, r);
}

static void endpoint_families(adm *a, adm_buf *b, rows *r, const store_snapshot *snap)
{
	int64_t now = now_ms();
	uint32_t n = snap ? snap->n_endpoints : 0;
	const mx_scraper *mx = a->o.scraper ? *a->o.scraper : NULL;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t picks;
		int64_t inflight;
		adm_endpoint_totals(a, snap->endpoints[i].addr, &picks, &inflight);
		val(r, (double)inflight, snap->endpoints[i].addr, NULL);
	}
	emit(b, &F_EP_INFLIGHT, r);
	for (uint32_t i = 0; i < n; i++)
		if (snap->endpoints[i].m.valid)
			val(r, snap->endpoints[i].m.kv_usage, snap->endpoints[i].addr, NULL);
	emit(b, &F_EP_KV, r);
	for (uint32_t i = 0; i < n; i++)
		if (snap->endpoints[i].m.valid)
			val(r, (double)(now - snap->endpoints[i].m.update_ms) / 1000.0,
			    snap->endpoints[i].addr, NULL);
	emit(b, &F_EP_AGE, r);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t picks;
		int64_t inflight;
		adm_endpoint_totals(a, snap->endpoints[i].addr, &picks, &inflight);
		val(r, (double)picks, snap->endpoints[i].addr, NULL);
	}
	emit(b, &F_EP_PICKS, r);
	for (uint32_t i = 0; i < n; i++)
		if (snap->endpoints[i].m.valid)
			val(r, snap->endpoints[i].m.waiting_queue, snap->endpoints[i].addr, NULL);
	emit(b, &F_EP_QUEUE, r);
	for (uint32_t i = 0; i < n; i++)
		if (snap->endpoints[i].m.valid)
			val(r, snap->endpoints[i].m.running, snap->endpoints[i].addr, NULL);
	emit(b, &F_EP_RUNNING, r);
	for (uint32_t i = 0; mx && i < n; i++) {
		mx_endpoint_stats st;
		if (mx_scraper_endpoint_stats(mx, snap->endpoints[i].addr, &st) < 0)
			continue;
		val(r, (double)st.failed, snap->endpoints[i].addr, "failed");
		val(r, (double)st.ok, snap->endpoints[i].addr, "ok");
	}
	emit(b, &F_EP_SCRAPES, r);
}

static void drop_row(rows *r, const char *family, uint64_t n)
{
	val(r, (double)n, family, NULL);
}

static void kepp_families(adm *a, adm_buf *b, rows *r, scratch *sc, const store_snapshot *snap)
{
	worker_hist(a, b, r, &F_DECIDE, offsetof(adm_worker, decide));
	endpoint_families(a, b, r, snap);
	for (size_t w = 0; w < a->n_workers; w++) {
		const adm_worker *x = a->workers[w];
		const adm_tbl *t[] = {&x->series, &x->attempts, &x->plugins, &x->rewrites,
				      &x->endpoints};
		for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
			drop_row(r, t[i]->family, ld(&t[i]->dropped));
		drop_row(r, F_REQUESTS.name, ld(&x->prio_dropped));
	}
	emit(b, &F_DROPPED, r);
	const mx_scraper *mx = a->o.scraper ? *a->o.scraper : NULL;
	if (mx) {
		mx_scraper_stats st;
		mx_scraper_stats_get(mx, &st);
		val(r, (double)st.in_flight, NULL, NULL);
		emit(b, &F_SCRAPES_INFLIGHT, r);
		val(r, (double)st.failed, "failed", NULL);
		val(r, (double)st.ok, "ok", NULL);
		val(r, (double)st.skipped, "skipped", NULL);
		val(r, (double)st.timeouts, "timeout", NULL);
		emit(b, &F_SCRAPES, r);
	}
	for (size_t w = 0; w < a->n_workers; w++) {
		row *x = rows_add(r);
		if (x)
			*x = (row){{keep(sc, "%d", a->workers[w]->id)}, R_GAUGE,
				   &a->workers[w]->streams_open, 0};
	}
	emit(b, &F_STREAMS, r);
	for (size_t w = 0; w < a->n_workers; w++) {
		row *x = rows_add(r);
		if (x)
			*x = (row){{keep(sc, "%d", a->workers[w]->id)}, R_CTR,
				   &a->workers[w]->streams_total, 0};
	}
	emit(b, &F_STREAMS_TOTAL, r);
}

struct adm_out {
	adm_buf *b;
};

void adm_out_family(adm_out *o, const char *name, const char *type, const char *help)
{
	family_head(o->b, name, type, help);
}

void adm_out_sample(adm_out *o, const char *name, double value, ...)
{
	adm_buf *b = o->b;
	buf_puts(b, name);
	va_list ap;
	va_start(ap, value);
	bool first = true;
	for (;;) {
		const char *k = va_arg(ap, const char *);
		if (!k)
			break;
		const char *v = va_arg(ap, const char *);
		buf_put(b, first ? "{" : ",", 1);
		first = false;
		buf_puts(b, k);
		buf_put(b, "=\"", 2);
		put_escaped(b, v ? v : "", true);
		buf_put(b, "\"", 1);
	}
	va_end(ap);
	if (!first)
		buf_put(b, "}", 1);
	buf_put(b, " ", 1);
	buf_float(b, value);
	buf_put(b, "\n", 1);
}

int adm_register_collector(adm *a, adm_collect_fn fn, void *ctx)
{
	adm_collector *nv = realloc(a->collectors, (a->n_collectors + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	a->collectors = nv;
	a->collectors[a->n_collectors++] = (adm_collector){fn, ctx};
	return 0;
}

int adm_metrics_render(adm *a, adm_buf *b)
{
	rows r = {0};
	scratch sc = {0};
	const store_snapshot *snap = a->o.store ? store_acquire(a->o.store) : NULL;
	const sched *s = snap ? snap->sched : NULL;

	val(&r, 1, a->o.version ? a->o.version : "", a->o.commit ? a->o.commit : "");
	emit(b, &F_INFO, &r);
	table_rows(a, b, &r, &F_REWRITE, offsetof(adm_worker, rewrites), R_CTR);
	table_rows(a, b, &r, &F_PLUGIN, offsetof(adm_worker, plugins), R_HIST);
	worker_hist(a, b, &r, &F_HIT_BYTES, offsetof(adm_worker, hit_bytes));
	worker_hist(a, b, &r, &F_HIT_RATIO, offsetof(adm_worker, hit_ratio));
	int64_t entries;
	if (s && sched_prefix_index_size(s, &entries)) {
		val(&r, (double)entries, NULL, NULL);
		emit(b, &F_INDEX_SIZE, &r);
	}
	table_rows(a, b, &r, &F_ATTEMPTS, offsetof(adm_worker, attempts), R_CTR);
	worker_hist(a, b, &r, &F_E2E, offsetof(adm_worker, e2e));
	objective_families(a, b, &r, &sc);
	pool_families(a, b, &r, snap);
	kepp_families(a, b, &r, &sc, snap);
	adm_out o = {b};
	for (size_t i = 0; i < a->n_collectors; i++)
		a->collectors[i].fn(a->collectors[i].ctx, &o);

	if (snap)
		store_release(snap);
	bool oom = r.oom || sc.oom || b->oom;
	free(r.v);
	scratch_free(&sc);
	return oom ? -ENOMEM : 0;
}
