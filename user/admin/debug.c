/* Decision output: the per-decision debug log line (worker threads, only at
 * --v=4) and the JSON of /debug/pool and /debug/explain (control thread). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "admin/adm_int.h"
#include "util/log.h"

/* ---- the log line: bounded, on the stack ---- */

#define LINE_MAX_FIELDS 6144 /* log.c writes lines of up to 8 KiB */

typedef struct jw {
	char p[LINE_MAX_FIELDS];
	size_t len;
	bool full;
} jw;

static void jw_raw(jw *w, const char *s, size_t n)
{
	if (w->full || w->len + n >= sizeof(w->p)) {
		w->full = true;
		return;
	}
	memcpy(w->p + w->len, s, n);
	w->len += n;
	w->p[w->len] = '\0';
}

static void jw_fmt(jw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jw_fmt(jw *w, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		jw_raw(w, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* "key":"escaped value" with a leading comma unless first. */
static void jw_str(jw *w, const char *key, const char *v, size_t n, bool comma)
{
	char esc[1024];
	if (comma)
		jw_raw(w, ",", 1);
	jw_raw(w, "\"", 1);
	jw_raw(w, key, strlen(key));
	jw_raw(w, "\":\"", 3);
	size_t l = json_escape(esc, sizeof(esc), v ? v : "", v ? n : 0);
	jw_raw(w, esc, l);
	jw_raw(w, "\"", 1);
}

static void candidates_json(jw *w, const sched_score_table *t)
{
	size_t omitted = 0;
	jw_raw(w, ",\"candidates\":[", 15);
	bool first = true;
	for (size_t i = 0; i < t->n_eps; i++) {
		size_t mark = w->len;
		if (!first)
			jw_raw(w, ",", 1);
		jw_raw(w, "{", 1);
		jw_str(w, "endpoint", t->eps[i]->addr, strlen(t->eps[i]->addr), false);
		if (t->dropped_by[i] >= 0) {
			const char *f = t->filters[t->dropped_by[i]];
			jw_str(w, "filtered_by", f, strlen(f), true);
		} else {
			jw_raw(w, ",\"scores\":{", 11);
			for (size_t k = 0; k < t->n_scorers; k++) {
				jw_fmt(w, "%s\"", k ? "," : "");
				jw_raw(w, t->scorers[k], strlen(t->scorers[k]));
				jw_fmt(w, "\":%.6g", t->scores[i * t->n_scorers + k]);
			}
			jw_fmt(w, "},\"total\":%.6g", t->total[i]);
			if (t->rank[i] >= 0)
				jw_fmt(w, ",\"rank\":%d", t->rank[i]);
		}
		jw_raw(w, "}", 1);
		/* Keep room to close the line: drop what does not fit. */
		if (w->full || w->len + 128 >= sizeof(w->p)) {
			w->full = false;
			w->len = mark;
			w->p[mark] = '\0';
			omitted = t->n_eps - i;
			break;
		}
		first = false;
	}
	jw_raw(w, "]", 1);
	if (omitted)
		jw_fmt(w, ",\"candidates_omitted\":%zu", omitted);
}

void adm_log_decision(const sched_request *rq, const sched_result *res)
{
	if (!log_enabled(LOG_DEBUG))
		return;
	jw w = {.len = 0};
	w.p[0] = '\0';
	jw_str(&w, "x-request-id", rq->request_id.p, rq->request_id.len, false);
	jw_str(&w, "model", res->incoming_model.p, res->incoming_model.len, true);
	jw_str(&w, "target_model", res->target_model.p, res->target_model.len, true);
	jw_fmt(&w, ",\"priority\":%d", res->priority);
	if (res->rewrite_name)
		jw_str(&w, "model_rewrite", res->rewrite_name, strlen(res->rewrite_name), true);
	const sched_score_table *t = rq->trace ? rq->trace->table : NULL;
	if (t) {
		jw_str(&w, "profile", t->profile, strlen(t->profile), true);
		candidates_json(&w, t);
	}
	if (res->err == SCHED_OK) {
		jw_str(&w, "pick", res->targets, strlen(res->targets), true);
		ulog_raw(LOG_DEBUG, "request scheduled", w.p);
	} else {
		jw_fmt(&w, ",\"status\":%d", sched_err_http(res->err));
		jw_str(&w, "error", res->error, strlen(res->error), true);
		ulog_raw(LOG_DEBUG, "request rejected", w.p);
	}
}

/* ---- /debug/pool ---- */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static cJSON *str_array(const char *const *v, uint32_t n)
{
	cJSON *a = cJSON_CreateArray();
	for (uint32_t i = 0; a && i < n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(v[i] ? v[i] : ""));
	return a;
}

static int finish_json(cJSON *root, adm_buf *out)
{
	char *s = root ? cJSON_PrintUnformatted(root) : NULL;
	cJSON_Delete(root);
	if (!s)
		return -ENOMEM;
	buf_puts(out, s);
	buf_put(out, "\n", 1);
	free(s);
	return out->oom ? -ENOMEM : 0;
}

static void add_endpoint_json(adm *a, cJSON *arr, const store_endpoint *ep, int64_t now)
{
	cJSON *e = cJSON_CreateObject();
	if (!e)
		return;
	cJSON_AddItemToArray(arr, e);
	cJSON_AddStringToObject(e, "name", ep->name ? ep->name : "");
	cJSON_AddStringToObject(e, "addr", ep->addr);
	cJSON_AddStringToObject(e, "pod", ep->pod ? ep->pod : "");
	const store_metrics *m = &ep->m;
	cJSON *mj = cJSON_AddObjectToObject(e, "metrics");
	if (mj) {
		cJSON_AddBoolToObject(mj, "valid", m->valid);
		if (m->valid)
			cJSON_AddNumberToObject(mj, "age_ms", (double)(now - m->update_ms));
		else
			cJSON_AddNullToObject(mj, "age_ms");
		cJSON_AddNumberToObject(mj, "waiting_queue", m->waiting_queue);
		cJSON_AddNumberToObject(mj, "running", m->running);
		cJSON_AddNumberToObject(mj, "kv_usage", m->kv_usage);
		cJSON_AddNumberToObject(mj, "max_lora", m->max_lora);
		cJSON_AddItemToObject(mj, "active_models",
				      str_array(m->active_models, m->n_active_models));
		cJSON_AddItemToObject(mj, "waiting_models",
				      str_array(m->waiting_models, m->n_waiting_models));
		cJSON_AddNumberToObject(mj, "cache_block_size", m->cache_block_size);
		cJSON_AddNumberToObject(mj, "cache_num_blocks", (double)m->cache_num_blocks);
	}
	uint64_t picks;
	int64_t inflight;
	adm_endpoint_totals(a, ep->addr, &picks, &inflight);
	cJSON_AddNumberToObject(e, "in_flight", (double)inflight);
	cJSON_AddNumberToObject(e, "picks", (double)picks);
	const mx_scraper *mx = a->o.scraper ? *a->o.scraper : NULL;
	mx_endpoint_stats st;
	if (mx && mx_scraper_endpoint_stats(mx, ep->addr, &st) == 0) {
		cJSON *sj = cJSON_AddObjectToObject(e, "scrapes");
		if (sj) {
			cJSON_AddNumberToObject(sj, "ok", (double)st.ok);
			cJSON_AddNumberToObject(sj, "failed", (double)st.failed);
			cJSON_AddBoolToObject(sj, "failing", st.failing);
		}
	}
}

int adm_debug_pool(adm *a, adm_buf *out)
{
	const store_snapshot *snap = store_acquire(a->o.store);
	if (!snap)
		return -ENOENT;
	cJSON *root = cJSON_CreateObject();
	if (!root) {
		store_release(snap);
		return -ENOMEM;
	}
	const char *pool, *ns;
	adm_pool_names(a, snap, &pool, &ns);
	cJSON *pj = cJSON_AddObjectToObject(root, "pool");
	if (pj) {
		if (pool)
			cJSON_AddStringToObject(pj, "name", pool);
		else
			cJSON_AddNullToObject(pj, "name");
		cJSON_AddStringToObject(pj, "namespace", ns);
	}
	cJSON_AddNumberToObject(root, "generation", (double)snap->generation);
	cJSON_AddBoolToObject(root, "synced", snap->synced);
	if (snap->sched)
		cJSON_AddStringToObject(root, "profile", sched_profile_name(snap->sched));
	int64_t entries;
	if (snap->sched && sched_prefix_index_size(snap->sched, &entries))
		cJSON_AddNumberToObject(root, "prefix_index_size", (double)entries);
	else
		cJSON_AddNullToObject(root, "prefix_index_size");
	cJSON *arr = cJSON_AddArrayToObject(root, "endpoints");
	int64_t now = now_ms();
	for (uint32_t i = 0; arr && i < snap->n_endpoints; i++)
		add_endpoint_json(a, arr, &snap->endpoints[i], now);
	store_release(snap);
	return finish_json(root, out);
}

/* ---- /debug/explain ---- */

static cJSON *sstr_json(sched_str s)
{
	char *tmp = strndup(s.p ? s.p : "", s.p ? s.len : 0);
	cJSON *v = cJSON_CreateString(tmp ? tmp : "");
	free(tmp);
	return v;
}

static void table_json(cJSON *root, const sched_score_table *t)
{
	cJSON_AddStringToObject(root, "profile", t->profile);
	cJSON_AddItemToObject(root, "filters", str_array(t->filters, (uint32_t)t->n_filters));
	cJSON *sc = cJSON_AddArrayToObject(root, "scorers");
	for (size_t k = 0; sc && k < t->n_scorers; k++) {
		cJSON *o = cJSON_CreateObject();
		if (!o)
			break;
		cJSON_AddItemToArray(sc, o);
		cJSON_AddStringToObject(o, "name", t->scorers[k]);
		cJSON_AddStringToObject(o, "type", t->scorer_types[k]);
		cJSON_AddNumberToObject(o, "weight", t->weights[k]);
	}
	cJSON *eps = cJSON_AddArrayToObject(root, "endpoints");
	for (size_t i = 0; eps && i < t->n_eps; i++) {
		cJSON *o = cJSON_CreateObject();
		if (!o)
			break;
		cJSON_AddItemToArray(eps, o);
		cJSON_AddStringToObject(o, "endpoint", t->eps[i]->addr);
		cJSON_AddStringToObject(o, "name", t->eps[i]->name ? t->eps[i]->name : "");
		if (t->dropped_by[i] >= 0) {
			cJSON_AddStringToObject(o, "filtered_by", t->filters[t->dropped_by[i]]);
			continue;
		}
		cJSON_AddNullToObject(o, "filtered_by");
		cJSON *s = cJSON_AddObjectToObject(o, "scores");
		for (size_t k = 0; s && k < t->n_scorers; k++)
			cJSON_AddNumberToObject(s, t->scorers[k], t->scores[i * t->n_scorers + k]);
		cJSON_AddNumberToObject(o, "total", t->total[i]);
		if (t->rank[i] >= 0)
			cJSON_AddNumberToObject(o, "rank", t->rank[i]);
		else
			cJSON_AddNullToObject(o, "rank");
	}
}

/* The comma-string subset hint, split into entries from |ar|. */
static size_t split_subset(const char *s, arena *ar, sched_str **out)
{
	size_t n = 1;
	for (const char *p = s; *p; p++)
		n += *p == ',';
	sched_str *v = arena_alloc(ar, n * sizeof(*v));
	if (!v)
		return 0;
	size_t k = 0;
	for (const char *p = s;;) {
		const char *c = strchr(p, ',');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		while (l && (*p == ' ' || *p == '\t'))
			p++, l--;
		while (l && (p[l - 1] == ' ' || p[l - 1] == '\t'))
			l--;
		if (l)
			v[k++] = (sched_str){p, l};
		if (!c)
			break;
		p = c + 1;
	}
	*out = v;
	return k;
}

static sched_str header(const adm_explain_req *in, const char *name)
{
	sched_str v = {NULL, 0};
	if (in->header && !in->header(in->header_ctx, name, &v))
		v = (sched_str){NULL, 0};
	return v;
}

int adm_explain(adm *a, const adm_explain_req *in, adm_buf *out)
{
	const store_snapshot *snap = store_acquire(a->o.store);
	if (!snap || !snap->sched) {
		if (snap)
			store_release(snap);
		return -ENOENT;
	}
	arena ar;
	arena_init(&ar, 16384);
	sched_trace tr;
	memset(&tr, 0, sizeof(tr));
	tr.want_table = true;
	sched_request rq = {0};
	const char *path = in->path && *in->path ? in->path : "/v1/completions";
	rq.path = (sched_str){path, strlen(path)};
	rq.objective = header(in, "x-gateway-inference-objective");
	rq.model_rewrite = header(in, "x-gateway-model-name-rewrite");
	rq.fairness_id = header(in, "x-gateway-inference-fairness-id");
	if (!rq.fairness_id.p)
		rq.fairness_id = (sched_str){"default-flow", strlen("default-flow")};
	rq.request_id = header(in, "x-request-id");
	if (!rq.request_id.p)
		rq.request_id = (sched_str){"explain", strlen("explain")};
	rq.body = in->body ? in->body : "";
	rq.body_len = in->body ? in->body_len : 0;
	if (in->subset) {
		sched_str *v = NULL;
		rq.n_subset = split_subset(in->subset, &ar, &v);
		rq.subset = v;
		rq.has_subset = true;
		rq.subset_is_string = true;
	}
	rq.header = in->header;
	rq.header_ctx = in->header_ctx;
	rq.trace = &tr;
	rq.dry_run = true;
	sched_result res;
	sched_decide(snap->sched, snap, &rq, &ar, &res);

	cJSON *root = cJSON_CreateObject();
	if (root) {
		cJSON_AddItemToObject(root, "request_id", sstr_json(rq.request_id));
		cJSON_AddItemToObject(root, "model", sstr_json(res.incoming_model));
		cJSON_AddItemToObject(root, "target_model", sstr_json(res.target_model));
		if (res.rewrite_name)
			cJSON_AddStringToObject(root, "model_rewrite", res.rewrite_name);
		else
			cJSON_AddNullToObject(root, "model_rewrite");
		cJSON_AddNumberToObject(root, "priority", res.priority);
		if (tr.table)
			table_json(root, tr.table);
		if (res.err == SCHED_OK) {
			cJSON_AddStringToObject(root, "targets", res.targets);
			cJSON_AddStringToObject(root, "pick", res.picked[0]->addr);
			cJSON_AddNullToObject(root, "error");
		} else {
			cJSON_AddNullToObject(root, "targets");
			cJSON_AddNullToObject(root, "pick");
			cJSON *e = cJSON_AddObjectToObject(root, "error");
			if (e) {
				cJSON_AddNumberToObject(e, "status", sched_err_http(res.err));
				cJSON_AddStringToObject(e, "message", res.error);
			}
		}
	}
	/* Nothing to undo: a dry run counts nothing in flight. */
	arena_free(&ar);
	store_release(snap);
	return finish_json(root, out);
}
