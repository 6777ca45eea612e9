/* The scraper: libcurl multi driven by a libevent event_base
 * (curl_multi_socket_action with socket and timer callbacks). Every interval
 * each (endpoint, source) gets one request unless the last one still runs: a
 * slow pod is skipped, never piled up. The round is spread over the interval
 * in slices (endpoint i in slice i % n_slices), so the scrapes, their
 * parsing and the model servers' answers do not all land at once: a burst
 * of hundreds of scrapes every interval is what the request path's latency
 * tail followed. */
#include "util/curlev.h"
#include "metrics/metrics.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics/prom.h"
#include "util/log.h"

/* Slices per interval: each a few ms apart at the 50 ms default, at most
 * MAX_SLICES; a republish follows each slice whose scrapes changed something. */
#define SLICE_MIN_MS 5
#define MAX_SLICES 16

typedef struct ex_engines {
	const sched_extractor *ex;
	mx_engine **eng; /* one per ex->engines[] */
} ex_engines;

typedef struct src_state {
	const sched_metrics_source *src;
	ex_engines *exs;
	size_t n_exs;
} src_state;

struct slot;

typedef struct job {
	struct slot *slot;
	const src_state *src;
	const mx_engine **eng; /* chosen per extractor of the source */
	CURL *easy;
	char *url;
	char *body;
	size_t len, cap;
	bool busy, too_big;
} job;

typedef struct slot {
	char addr[STORE_ADDR_MAX];
	char ip[48];
	uint16_t port;
	store_metrics m; /* adapter strings live in mem[cur] */
	arena mem[2];
	int cur;
	bool failing; /* last scrape failed: logged once per change */
	uint64_t n_ok, n_failed;
	job *jobs;    /* one per source */
	struct mx_scraper *s;
} slot;

struct mx_scraper {
	struct event_base *base;
	curlev ce;
	struct event *tick;
	mx_scraper_opts o;
	/* legacy mode: one built-in source and extractor */
	sched_metrics_source legacy_src;
	sched_extractor legacy_ex;
	const sched_extractor *legacy_exs[1];
	src_state *srcs;
	size_t n_srcs;
	slot **slots; /* sorted by addr */
	uint32_t n_slots;
	void (*cb)(void *ctx);
	void *cb_ctx;
	uint32_t n_slices, slice; /* slice: the next one to start */
	bool changed;
	mx_scraper_stats st;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void check_done(mx_scraper *s);

static void on_progress(void *ctx)
{
	check_done(ctx);
}

static size_t write_cb(char *data, size_t sz, size_t nmemb, void *userp)
{
	job *j = userp;
	size_t n = sz * nmemb;
	if (n > j->slot->s->o.max_body - j->len) {
		j->too_big = true;
		return 0; /* aborts the transfer */
	}
	if (j->len + n > j->cap) {
		size_t cap = j->cap ? j->cap : 16384;
		while (cap < j->len + n)
			cap *= 2;
		char *nb = realloc(j->body, cap);
		if (!nb)
			return 0;
		j->body = nb;
		j->cap = cap;
	}
	memcpy(j->body + j->len, data, n);
	j->len += n;
	return n;
}

static const char **copy_list(arena *a, const char **v, uint32_t n)
{
	if (!n)
		return NULL;
	const char **r = arena_alloc(a, n * sizeof(*r));
	if (!r)
		return NULL;
	for (uint32_t i = 0; i < n; i++)
		if (!(r[i] = arena_strdup(a, v[i])))
			return NULL;
	return r;
}

/* Copies |src| to |dst| with its adapter lists in |a| (empty on OOM). */
static void copy_metrics(store_metrics *dst, const store_metrics *src, arena *a)
{
	*dst = *src;
	dst->active_models = copy_list(a, src->active_models, src->n_active_models);
	if (!dst->active_models)
		dst->n_active_models = 0;
	dst->waiting_models = copy_list(a, src->waiting_models, src->n_waiting_models);
	if (!dst->waiting_models)
		dst->n_waiting_models = 0;
}

static void scrape_failed(slot *sl, const char *url, const char *why)
{
	sl->s->st.failed++;
	sl->n_failed++;
	if (!sl->failing)
		ulog(LOG_WARN, "metrics scrape failed", "endpoint", sl->addr, "url", url, "error",
		     why, NULL);
	else if (log_enabled(LOG_DEBUG))
		ulog(LOG_DEBUG, "metrics scrape failed", "endpoint", sl->addr, "error", why, NULL);
	sl->failing = true;
}

static void finish(job *j, CURLcode res)
{
	slot *sl = j->slot;
	mx_scraper *s = sl->s;
	char err[256];
	long code = 0;
	if (res != CURLE_OK) {
		if (res == CURLE_OPERATION_TIMEDOUT)
			s->st.timeouts++;
		if (j->too_big)
			snprintf(err, sizeof(err), "body over %zu bytes", s->o.max_body);
		else
			snprintf(err, sizeof(err), "%s", curl_easy_strerror(res));
		scrape_failed(sl, j->url, err);
		return;
	}
	curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200) {
		snprintf(err, sizeof(err), "unexpected status code %ld", code);
		scrape_failed(sl, j->url, err);
		return;
	}
	int nxt = sl->cur ^ 1, total = 0;
	arena_reset(&sl->mem[nxt]);
	store_metrics m = sl->m;
	for (size_t k = 0; k < j->src->n_exs; k++) {
		int rc = mx_extract(j->eng[k], j->body, j->len, &sl->mem[nxt], &m, err,
				    sizeof(err));
		if (rc < 0) {
			scrape_failed(sl, j->url, err);
			return;
		}
		if (err[0] && log_enabled(LOG_DEBUG))
			ulog(LOG_DEBUG, "metric not extracted", "endpoint", sl->addr, "engine",
			     mx_engine_name(j->eng[k]), "error", err, NULL);
		total += rc;
	}
	s->st.ok++;
	sl->n_ok++;
	if (sl->failing)
		ulog(LOG_DEFAULT, "metrics scrape recovered", "endpoint", sl->addr, NULL);
	sl->failing = false;
	if (!total)
		return;
	/* Lists not replaced by this scrape still point into the old arena. */
	if (m.active_models == sl->m.active_models)
		m.active_models = copy_list(&sl->mem[nxt], m.active_models, m.n_active_models);
	if (m.waiting_models == sl->m.waiting_models)
		m.waiting_models = copy_list(&sl->mem[nxt], m.waiting_models, m.n_waiting_models);
	if (!m.active_models)
		m.n_active_models = 0;
	if (!m.waiting_models)
		m.n_waiting_models = 0;
	m.valid = true;
	m.update_ms = now_ms();
	sl->m = m;
	sl->cur = nxt;
	s->changed = true;
}

static void fire(mx_scraper *s)
{
	s->changed = false;
	if (s->cb)
		s->cb(s->cb_ctx);
}

static void check_done(mx_scraper *s)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(s->ce.multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURL *easy = msg->easy_handle;
		CURLcode res = msg->data.result;
		job *j = NULL;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&j);
		curl_multi_remove_handle(s->ce.multi, easy);
		j->busy = false;
		s->st.in_flight--;
		finish(j, res);
	}
	/* The callback may replace the endpoint set: nothing is touched after. */
	if (s->changed && s->st.in_flight == 0)
		fire(s);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	mx_scraper *s = arg;
	if (s->changed)
		fire(s); /* a slow endpoint held the last slice back */
	uint32_t first = s->slice;
	s->slice = (s->slice + 1) % s->n_slices;
	for (uint32_t i = first; i < s->n_slots; i += s->n_slices) {
		slot *sl = s->slots[i];
		for (size_t k = 0; k < s->n_srcs; k++) {
			job *j = &sl->jobs[k];
			if (j->busy) {
				s->st.skipped++;
				continue;
			}
			j->len = 0;
			j->too_big = false;
			if (curl_multi_add_handle(s->ce.multi, j->easy) != CURLM_OK) {
				scrape_failed(sl, j->url, "cannot start the request");
				continue;
			}
			j->busy = true;
			s->st.in_flight++;
			s->st.started++;
		}
	}
}

static void job_free(mx_scraper *s, job *j)
{
	if (j->easy) {
		if (j->busy) {
			curl_multi_remove_handle(s->ce.multi, j->easy);
			s->st.in_flight--;
		}
		curl_easy_cleanup(j->easy);
	}
	free(j->eng);
	free(j->url);
	free(j->body);
}

static void slot_free(mx_scraper *s, slot *sl)
{
	if (!sl)
		return;
	for (size_t k = 0; sl->jobs && k < s->n_srcs; k++)
		job_free(s, &sl->jobs[k]);
	free(sl->jobs);
	arena_free(&sl->mem[0]);
	arena_free(&sl->mem[1]);
	free(sl);
}

static const mx_engine *choose_engine(const mx_scraper *s, const ex_engines *xe,
				      const mx_target *t)
{
	const sched_extractor *ex = xe->ex;
	const char *want = ex->default_engine;
	for (uint32_t i = 0; i < t->n_labels; i++)
		if (t->label_keys[i] && t->label_values[i] && t->label_values[i][0] &&
		    strcmp(t->label_keys[i], ex->engine_label_key) == 0)
			want = t->label_values[i];
	for (int pass = 0; pass < 2; pass++) {
		for (size_t k = 0; k < ex->n_engines; k++)
			if (strcmp(ex->engines[k].name, want) == 0)
				return xe->eng[k];
		/* An unknown engine label falls back to the default engine. */
		want = ex->default_engine;
	}
	return xe->eng[0];
}

static int job_init(mx_scraper *s, slot *sl, job *j, const src_state *src, const mx_target *t)
{
	j->slot = sl;
	j->src = src;
	j->eng = calloc(src->n_exs ? src->n_exs : 1, sizeof(*j->eng));
	if (!j->eng)
		return -ENOMEM;
	for (size_t k = 0; k < src->n_exs; k++)
		j->eng[k] = choose_engine(s, &src->exs[k], t);
	bool v6 = strchr(sl->ip, ':') != NULL;
	const char *path = src->src->path[0] == '/' ? "" : "/";
	if (asprintf(&j->url, "%s://%s%s%s:%u%s%s", src->src->scheme, v6 ? "[" : "", sl->ip,
		     v6 ? "]" : "", sl->port, path, src->src->path) < 0) {
		j->url = NULL;
		return -ENOMEM;
	}
	j->easy = curl_easy_init();
	if (!j->easy)
		return -ENOMEM;
	curl_easy_setopt(j->easy, CURLOPT_URL, j->url);
	curl_easy_setopt(j->easy, CURLOPT_PRIVATE, (char *)j);
	curl_easy_setopt(j->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(j->easy, CURLOPT_WRITEDATA, j);
	curl_easy_setopt(j->easy, CURLOPT_TIMEOUT_MS, (long)s->o.timeout_ms);
	curl_easy_setopt(j->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(j->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(j->easy, CURLOPT_USERAGENT, "kepp");
	if (src->src->insecure_skip_verify) {
		curl_easy_setopt(j->easy, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(j->easy, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	return 0;
}

static slot *slot_new(mx_scraper *s, const mx_target *t)
{
	slot *sl = calloc(1, sizeof(*sl));
	if (!sl)
		return NULL;
	sl->s = s;
	arena_init(&sl->mem[0], 1024);
	arena_init(&sl->mem[1], 1024);
	snprintf(sl->addr, sizeof(sl->addr), "%s", t->addr);
	snprintf(sl->ip, sizeof(sl->ip), "%s", t->ip);
	sl->port = t->port;
	sl->jobs = calloc(s->n_srcs ? s->n_srcs : 1, sizeof(*sl->jobs));
	if (!sl->jobs) {
		slot_free(s, sl);
		return NULL;
	}
	for (size_t k = 0; k < s->n_srcs; k++) {
		if (job_init(s, sl, &sl->jobs[k], &s->srcs[k], t) < 0) {
			slot_free(s, sl);
			return NULL;
		}
	}
	return sl;
}

/* The old slot serves the new target when nothing that shapes a scrape
 * changed. */
static bool slot_same(const mx_scraper *s, const slot *sl, const mx_target *t)
{
	if (strcmp(sl->ip, t->ip) != 0 || sl->port != t->port)
		return false;
	for (size_t k = 0; k < s->n_srcs; k++)
		for (size_t x = 0; x < s->srcs[k].n_exs; x++)
			if (sl->jobs[k].eng[x] != choose_engine(s, &s->srcs[k].exs[x], t))
				return false;
	return true;
}

static int cmp_slot(const void *a, const void *b)
{
	return strcmp((*(slot *const *)a)->addr, (*(slot *const *)b)->addr);
}

static long find_idx(const mx_scraper *s, const char *addr)
{
	size_t lo = 0, hi = s->n_slots;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(s->slots[mid]->addr, addr);
		if (!c)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

int mx_scraper_set_targets(mx_scraper *s, const mx_target *t, uint32_t n)
{
	slot **ns = calloc(n ? n : 1, sizeof(*ns));
	bool *reused = calloc(s->n_slots ? s->n_slots : 1, sizeof(*reused));
	bool *fresh = calloc(n ? n : 1, sizeof(*fresh));
	uint32_t nn = 0;
	if (!ns || !reused || !fresh)
		goto nomem;
	for (uint32_t i = 0; i < n; i++) {
		bool dup = false;
		if (!t[i].addr || !t[i].ip)
			continue;
		for (uint32_t k = 0; k < nn && !dup; k++)
			dup = strcmp(ns[k]->addr, t[i].addr) == 0;
		if (dup)
			continue;
		long idx = find_idx(s, t[i].addr);
		if (idx >= 0 && !reused[idx] && slot_same(s, s->slots[idx], &t[i])) {
			reused[idx] = true;
			ns[nn++] = s->slots[idx];
			continue;
		}
		if (!(ns[nn] = slot_new(s, &t[i])))
			goto nomem;
		fresh[nn++] = true;
	}
	for (uint32_t i = 0; i < s->n_slots; i++)
		if (!reused[i])
			slot_free(s, s->slots[i]);
	qsort(ns, nn, sizeof(*ns), cmp_slot);
	free(s->slots);
	free(reused);
	free(fresh);
	s->slots = ns;
	s->n_slots = nn;
	return 0;
nomem:
	for (uint32_t i = 0; ns && fresh && i < nn; i++)
		if (fresh[i])
			slot_free(s, ns[i]);
	free(ns);
	free(reused);
	free(fresh);
	return -ENOMEM;
}

int mx_scraper_set_endpoints(mx_scraper *s, const store_endpoint *eps, uint32_t n)
{
	mx_target *t = calloc(n ? n : 1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		t[i] = (mx_target){.addr = eps[i].addr, .ip = eps[i].ip, .port = eps[i].port};
	int rc = mx_scraper_set_targets(s, t, n);
	free(t);
	return rc;
}

void mx_scraper_on_update(mx_scraper *s, void (*cb)(void *ctx), void *ctx)
{
	s->cb = cb;
	s->cb_ctx = ctx;
}

void mx_scraper_fill(const mx_scraper *s, store_endpoint *eps, uint32_t n, arena *a)
{
	for (uint32_t i = 0; i < n; i++) {
		long idx = find_idx(s, eps[i].addr);
		if (idx >= 0 && s->slots[idx]->m.valid)
			copy_metrics(&eps[i].m, &s->slots[idx]->m, a);
	}
}

void mx_scraper_stats_get(const mx_scraper *s, mx_scraper_stats *out)
{
	*out = s->st;
}

int mx_scraper_endpoint_stats(const mx_scraper *s, const char *addr, mx_endpoint_stats *out)
{
	long idx = find_idx(s, addr);
	if (idx < 0)
		return -ENOENT;
	const slot *sl = s->slots[idx];
	*out = (mx_endpoint_stats){sl->n_ok, sl->n_failed, sl->failing};
	return 0;
}

static int add_source(mx_scraper *s, src_state *ss, const sched_metrics_source *src, char *err,
		      size_t errlen)
{
	ss->src = src;
	ss->exs = calloc(src->n_extractors ? src->n_extractors : 1, sizeof(*ss->exs));
	if (!ss->exs)
		goto nomem;
	for (size_t x = 0; x < src->n_extractors; x++) {
		const sched_extractor *ex = src->extractors[x];
		ex_engines *xe = &ss->exs[ss->n_exs];
		if (!ex->n_engines)
			continue;
		xe->ex = ex;
		xe->eng = calloc(ex->n_engines, sizeof(*xe->eng));
		if (!xe->eng)
			goto nomem;
		ss->n_exs++;
		for (size_t k = 0; k < ex->n_engines; k++)
			if (!(xe->eng[k] = mx_engine_new(&ex->engines[k], err, errlen)))
				return -EINVAL;
	}
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

mx_scraper *mx_scraper_new(struct event_base *base, const sched_datalayer *dl,
			   const mx_scraper_opts *opts, char *err, size_t errlen)
{
	static const mx_scraper_opts none;
	mx_scraper *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->base = base;
	s->o = opts ? *opts : none;
	if (s->o.interval_ms <= 0)
		s->o.interval_ms = 50;
	if (s->o.timeout_ms <= 0)
		s->o.timeout_ms = 10000;
	if (!s->o.default_engine || !*s->o.default_engine)
		s->o.default_engine = "vllm";
	if (!s->o.max_body)
		s->o.max_body = MX_PROM_MAX_BODY;
	const sched_metrics_source *srcs = dl ? dl->sources : NULL;
	size_t n_srcs = dl ? dl->n_sources : 0;
	if (!n_srcs) {
		/* Legacy metrics: the pre-data-layer scrape of http://ip:port/metrics. */
		size_t nb;
		s->legacy_ex = (sched_extractor){
			.name = "legacy-metrics",
			.engine_label_key = "inference.networking.k8s.io/engine-type",
			.default_engine = s->o.default_engine,
		};
		s->legacy_ex.engines = sched_builtin_engines(&nb);
		s->legacy_ex.n_engines = nb;
		bool known = false;
		for (size_t k = 0; k < nb; k++)
			known |= strcmp(s->legacy_ex.engines[k].name, s->o.default_engine) == 0;
		if (!known) {
			snprintf(err, errlen, "unknown default engine \"%s\"", s->o.default_engine);
			goto fail;
		}
		s->legacy_exs[0] = &s->legacy_ex;
		s->legacy_src = (sched_metrics_source){
			.name = "legacy-metrics", .scheme = "http", .path = "/metrics",
			.insecure_skip_verify = true, .extractors = s->legacy_exs, .n_extractors = 1,
		};
		srcs = &s->legacy_src;
		n_srcs = 1;
	}
	s->srcs = calloc(n_srcs, sizeof(*s->srcs));
	if (!s->srcs) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	s->n_srcs = n_srcs;
	for (size_t k = 0; k < n_srcs; k++)
		if (add_source(s, &s->srcs[k], &srcs[k], err, errlen) < 0)
			goto fail;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "cannot initialise libcurl");
		goto fail;
	}
	s->tick = event_new(base, -1, EV_PERSIST, on_tick, s);
	if (curlev_init(&s->ce, base, on_progress, s) < 0 || !s->tick) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	s->n_slices = (uint32_t)(s->o.interval_ms / SLICE_MIN_MS);
	if (s->n_slices < 1)
		s->n_slices = 1;
	if (s->n_slices > MAX_SLICES)
		s->n_slices = MAX_SLICES;
	int64_t tick_us = s->o.interval_ms * 1000 / s->n_slices;
	struct timeval tv = {tick_us / 1000000, tick_us % 1000000};
	if (event_add(s->tick, &tv) < 0) {
		snprintf(err, errlen, "cannot arm the scrape timer");
		goto fail;
	}
	return s;
fail:
	mx_scraper_free(s);
	return NULL;
}

static bool str_eq(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool engine_eq(const sched_engine *a, const sched_engine *b)
{
	return str_eq(a->name, b->name) && str_eq(a->queued_requests_spec, b->queued_requests_spec) &&
	       str_eq(a->running_requests_spec, b->running_requests_spec) &&
	       str_eq(a->kv_usage_spec, b->kv_usage_spec) && str_eq(a->lora_spec, b->lora_spec) &&
	       str_eq(a->cache_info_spec, b->cache_info_spec) &&
	       str_eq(a->cache_block_size_label, b->cache_block_size_label) &&
	       str_eq(a->cache_num_blocks_label, b->cache_num_blocks_label) &&
	       str_eq(a->cache_block_size_spec, b->cache_block_size_spec) &&
	       str_eq(a->cache_num_blocks_spec, b->cache_num_blocks_spec);
}

static bool extractor_eq(const sched_extractor *a, const sched_extractor *b)
{
	if (!str_eq(a->name, b->name) || !str_eq(a->engine_label_key, b->engine_label_key) ||
	    !str_eq(a->default_engine, b->default_engine) || a->n_engines != b->n_engines)
		return false;
	for (size_t k = 0; k < a->n_engines; k++)
		if (!engine_eq(&a->engines[k], &b->engines[k]))
			return false;
	return true;
}

static bool source_eq(const sched_metrics_source *a, const sched_metrics_source *b)
{
	if (!str_eq(a->name, b->name) || !str_eq(a->scheme, b->scheme) ||
	    !str_eq(a->path, b->path) || a->insecure_skip_verify != b->insecure_skip_verify ||
	    a->n_extractors != b->n_extractors)
		return false;
	for (size_t x = 0; x < a->n_extractors; x++)
		if (!extractor_eq(a->extractors[x], b->extractors[x]))
			return false;
	return true;
}

int mx_scraper_rebind(mx_scraper *s, const sched_datalayer *dl)
{
	size_t n = dl ? dl->n_sources : 0;
	if (s->legacy_src.name)
		return n == 0 ? 0 : -ESTALE; /* built-in engines: nothing points at |dl| */
	if (n != s->n_srcs)
		return -ESTALE;
	for (size_t k = 0; k < n; k++)
		if (!source_eq(s->srcs[k].src, &dl->sources[k]))
			return -ESTALE;
	for (size_t k = 0; k < n; k++) {
		src_state *ss = &s->srcs[k];
		ss->src = &dl->sources[k];
		/* add_source kept only the extractors with engines, in order. */
		size_t j = 0;
		for (size_t x = 0; x < ss->src->n_extractors; x++)
			if (ss->src->extractors[x]->n_engines)
				ss->exs[j++].ex = ss->src->extractors[x];
	}
	return 0;
}

void mx_scraper_free(mx_scraper *s)
{
	if (!s)
		return;
	for (uint32_t i = 0; i < s->n_slots; i++)
		slot_free(s, s->slots[i]);
	free(s->slots);
	curlev_free(&s->ce);
	if (s->tick)
		event_free(s->tick);
	for (size_t k = 0; k < s->n_srcs; k++) {
		for (size_t x = 0; x < s->srcs[k].n_exs; x++) {
			ex_engines *xe = &s->srcs[k].exs[x];
			for (size_t e = 0; e < xe->ex->n_engines; e++)
				mx_engine_free(xe->eng[e]);
			free(xe->eng);
		}
		free(s->srcs[k].exs);
	}
	free(s->srcs);
	free(s);
}
