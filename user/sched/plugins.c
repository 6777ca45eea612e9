/* The scheduling framework: plugin registry, sched_new with the defaulting
 * and validation rules of the v1.5.0 config loader (spec §4.3), strict
 * parameter decoding, the data-layer plugins (§6), and the shared in-flight
 * counters.
 */
#include "sched/plugins.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/log.h"

/* ---- build helpers -------------------------------------------------------- */

static int cfg_error(sched_build *b, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int cfg_error(sched_build *b, int line, const char *fmt, ...)
{
	char msg[384];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(b->err, b->errlen, "%s:%d: %s", b->source, line, msg);
	else
		snprintf(b->err, b->errlen, "%s: %s", b->source, msg);
	return -EINVAL;
}

int plugin_error(sched_build *b, const char *fmt, ...)
{
	char msg[320];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return cfg_error(b, b->self->line, "failed to create plugin '%s' (type: %s): %s",
			 b->self->name, b->self->type->type, msg);
}

void *build_alloc(sched_build *b, size_t n)
{
	void *p = arena_calloc(&b->s->mem, n);
	if (!p)
		cfg_error(b, 0, "out of memory");
	return p;
}

char *build_strdup(sched_build *b, const char *s)
{
	char *p = arena_strdup(&b->s->mem, s ? s : "");
	if (!p)
		cfg_error(b, 0, "out of memory");
	return p;
}

/* ---- parameters ------------------------------------------------------------- */

bool parse_go_duration(const char *s, int64_t *ns)
{
	static const struct {
		const char *u;
		uint64_t mul;
	} units[] = {
		{"ns", 1ULL},
		{"us", 1000ULL},
		{"\xc2\xb5s", 1000ULL}, /* U+00B5 */
		{"\xce\xbcs", 1000ULL}, /* U+03BC */
		{"ms", 1000000ULL},
		{"s", 1000000000ULL},
		{"m", 60000000000ULL},
		{"h", 3600000000000ULL},
	};
	const uint64_t lim = 1ULL << 63;
	bool neg = false;
	uint64_t d = 0;
	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	if (strcmp(s, "0") == 0) {
		*ns = 0;
		return true;
	}
	if (!*s)
		return false;
	while (*s) {
		uint64_t v = 0, f = 0;
		double scale = 1;
		if (!(*s == '.' || (*s >= '0' && *s <= '9')))
			return false;
		const char *st = s;
		for (; *s >= '0' && *s <= '9'; s++) {
			if (v > (lim - 1) / 10)
				return false;
			v = v * 10 + (uint64_t)(*s - '0');
			if (v > lim)
				return false;
		}
		bool pre = s != st, post = false;
		if (*s == '.') {
			s++;
			st = s;
			bool overflow = false;
			for (; *s >= '0' && *s <= '9'; s++) {
				if (overflow)
					continue;
				if (f > (UINT64_MAX >> 1) / 10) {
					overflow = true;
					continue;
				}
				f = f * 10 + (uint64_t)(*s - '0');
				scale *= 10;
			}
			post = s != st;
		}
		if (!pre && !post)
			return false;
		size_t i = 0;
		while (s[i] && s[i] != '.' && !(s[i] >= '0' && s[i] <= '9'))
			i++;
		if (i == 0)
			return false;
		uint64_t mul = 0;
		for (size_t k = 0; k < sizeof(units) / sizeof(units[0]); k++)
			if (strlen(units[k].u) == i && memcmp(units[k].u, s, i) == 0)
				mul = units[k].mul;
		if (!mul)
			return false;
		s += i;
		if (v > lim / mul)
			return false;
		v *= mul;
		if (f > 0) {
			v += (uint64_t)((double)f * ((double)mul / scale));
			if (v > lim)
				return false;
		}
		d += v;
		if (d > lim)
			return false;
	}
	if (neg) {
		*ns = d == lim ? INT64_MIN : -(int64_t)d;
		return true;
	}
	if (d > lim - 1)
		return false;
	*ns = (int64_t)d;
	return true;
}

static const char *kind_name(enum param_kind k)
{
	switch (k) {
	case P_INT: return "an integer";
	case P_FLOAT: return "a number";
	case P_BOOL: return "a boolean";
	case P_STRING: return "a string";
	case P_DURATION: return "a duration string such as \"200ms\"";
	case P_OBJECT: return "an object";
	default: return "a list";
	}
}

int params_parse_at(sched_build *b, const char *where, const cJSON *obj, const param_spec *spec,
		    size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (spec[i].set)
			*spec[i].set = false;
	if (!obj || cJSON_IsNull(obj))
		return 0;
	const char *w = where ? where : "parameters";
	if (!cJSON_IsObject(obj))
		return plugin_error(b, "%s must be an object", w);
	for (const cJSON *it = obj->child; it; it = it->next) {
		const param_spec *ps = NULL;
		for (size_t i = 0; i < n && !ps; i++)
			if (it->string && strcasecmp(it->string, spec[i].key) == 0)
				ps = &spec[i];
		char full[160];
		snprintf(full, sizeof(full), "%s%s%s", where ? where : "", where ? "." : "",
			 it->string ? it->string : "");
		if (!ps)
			return plugin_error(b, "unknown parameter '%s'", full);
		/* null leaves the default, as it does for Go's pointer fields */
		if (cJSON_IsNull(it))
			continue;
		bool ok = true;
		switch (ps->kind) {
		case P_INT: {
			double v = it->valuedouble;
			ok = cJSON_IsNumber(it) && floor(v) == v && fabs(v) < 9.2e18;
			if (ok)
				*(long long *)ps->dst = (long long)v;
			break;
		}
		case P_FLOAT:
			ok = cJSON_IsNumber(it) && isfinite(it->valuedouble);
			if (ok)
				*(double *)ps->dst = it->valuedouble;
			break;
		case P_BOOL:
			ok = cJSON_IsBool(it);
			if (ok)
				*(bool *)ps->dst = cJSON_IsTrue(it);
			break;
		case P_STRING:
			ok = cJSON_IsString(it);
			if (ok)
				*(const char **)ps->dst = it->valuestring;
			break;
		case P_DURATION:
			ok = cJSON_IsString(it) && parse_go_duration(it->valuestring, ps->dst);
			break;
		case P_OBJECT:
			ok = cJSON_IsObject(it);
			if (ok)
				*(const cJSON **)ps->dst = it;
			break;
		case P_ARRAY:
			ok = cJSON_IsArray(it);
			if (ok)
				*(const cJSON **)ps->dst = it;
			break;
		}
		if (!ok)
			return plugin_error(b, "parameter '%s' must be %s", full,
					    kind_name(ps->kind));
		if (ps->set)
			*ps->set = true;
	}
	return 0;
}

int params_parse(sched_build *b, const cJSON *params, const param_spec *spec, size_t n)
{
	return params_parse_at(b, NULL, params, spec, n);
}

int plugin_no_params(sched_plugin *p, const cJSON *params, sched_build *b)
{
	(void)p;
	return params_parse(b, params, NULL, 0);
}

/* ---- helpers shared by plugins ------------------------------------------------ */

bool split_host_port(const char *s, size_t n, sched_str *host, sched_str *port)
{
	const char *colon = NULL;
	for (size_t i = n; i > 0; i--)
		if (s[i - 1] == ':') {
			colon = s + i - 1;
			break;
		}
	if (!colon)
		return false;
	size_t j = 0, k = 0;
	if (n && s[0] == '[') {
		const char *end = memchr(s, ']', n);
		if (!end || end + 1 != colon)
			return false;
		host->p = s + 1;
		host->len = (size_t)(end - s - 1);
		j = 1;
		k = (size_t)(end - s) + 1;
	} else {
		host->p = s;
		host->len = (size_t)(colon - s);
		if (memchr(host->p, ':', host->len))
			return false;
	}
	if (memchr(s + j, '[', n - j) || memchr(s + k, ']', n - k))
		return false;
	port->p = colon + 1;
	port->len = (size_t)(s + n - colon - 1);
	return true;
}

/* ---- in-flight counters ------------------------------------------------------- */

/* Open addressing keyed by a 32-bit tag of the endpoint name; a slot's word
 * packs tag and request count so that claiming, counting and reuse are single
 * CAS operations. A slot whose count is 0 may be reused for another name;
 * tokens are only touched while a request holds the slot. Readers stop at
 * the first never-used slot. */
#define INFLIGHT_SLOTS 4096
#define INFLIGHT_PROBE 32

struct inflight_slot {
	_Atomic uint64_t word; /* tag << 32 | requests */
	_Atomic int64_t tokens;
	/* Requests sent since the endpoint's last scrape:
	 * tag16 << 48 | scrape epoch (low 32 bits of update_ms) << 16 | count.
	 * The tag tells a reused slot's leftovers from the current owner's. */
	_Atomic uint64_t since;
};

struct inflight {
	struct inflight_slot slot[INFLIGHT_SLOTS];
};

inflight *inflight_new(void)
{
	return calloc(1, sizeof(inflight));
}

void inflight_free(inflight *t)
{
	free(t);
}

static uint64_t name_hash(const char *name)
{
	return store_name_hash(name);
}

static uint64_t tag_of(uint64_t h)
{
	return (h >> 32) | 1;
}

static struct inflight_slot *slot_at(const inflight *t, uint64_t h, size_t i)
{
	return (struct inflight_slot *)&t->slot[(h + i) & (INFLIGHT_SLOTS - 1)];
}

void *inflight_acquire(inflight *t, const char *name, int64_t tokens)
{
	uint64_t h = name_hash(name);
	uint64_t tag = tag_of(h);
	for (int attempt = 0; attempt < 4; attempt++) {
		struct inflight_slot *reuse = NULL;
		uint64_t reuse_w = 0;
		for (size_t i = 0; i < INFLIGHT_PROBE; i++) {
			struct inflight_slot *sl = slot_at(t, h, i);
			uint64_t w = atomic_load(&sl->word);
			for (;;) {
				if (w >> 32 == tag) {
					if (atomic_compare_exchange_weak(&sl->word, &w, w + 1)) {
						atomic_fetch_add(&sl->tokens, tokens);
						return sl;
					}
					continue;
				}
				if (w == 0 && !reuse) {
					if (atomic_compare_exchange_weak(&sl->word, &w,
									 tag << 32 | 1)) {
						atomic_fetch_add(&sl->tokens, tokens);
						return sl;
					}
					continue;
				}
				break;
			}
			if (w == 0)
				break;
			if ((w & 0xffffffffu) == 0 && !reuse) {
				reuse = sl;
				reuse_w = w;
			}
		}
		if (reuse &&
		    atomic_compare_exchange_strong(&reuse->word, &reuse_w, tag << 32 | 1)) {
			atomic_fetch_add(&reuse->tokens, tokens);
			return reuse;
		}
	}
	return NULL;
}

void inflight_release(void *slot, int64_t tokens)
{
	struct inflight_slot *sl = slot;
	atomic_fetch_sub(&sl->tokens, tokens);
	atomic_fetch_sub(&sl->word, 1);
}

static void get_hashed(const inflight *t, uint64_t h, int64_t *requests, int64_t *tokens)
{
	uint64_t tag = tag_of(h);
	int64_t r = 0, k = 0;
	for (size_t i = 0; i < INFLIGHT_PROBE; i++) {
		struct inflight_slot *sl = slot_at(t, h, i);
		uint64_t w = atomic_load(&sl->word);
		if (w == 0)
			break;
		if (w >> 32 == tag) {
			r += (int64_t)(w & 0xffffffffu);
			k += atomic_load(&sl->tokens);
		}
	}
	*requests = r;
	*tokens = k;
}

void inflight_get(const inflight *t, const char *name, int64_t *requests, int64_t *tokens)
{
	get_hashed(t, name_hash(name), requests, tokens);
}

/* The reference scores the last scrape only, so every request decided
 * between two scrapes sees the same numbers and a burst herds onto the pod
 * that looked idle. kepp also counts, per endpoint, the requests it sent
 * after the scrape its snapshot shows and that have not finished; the count
 * starts over when a newer scrape (which sees them) is observed. */
#define SINCE_COUNT 0xffffULL

static uint64_t since_tag(const struct inflight_slot *sl)
{
	return (atomic_load(&sl->word) >> 32) & 0xffff;
}

uint64_t inflight_mark_sent(void *slot, int64_t scrape_ms)
{
	struct inflight_slot *sl = slot;
	if (!sl)
		return 0;
	uint64_t tag = since_tag(sl), epoch = (uint64_t)scrape_ms & 0xffffffffu;
	uint64_t w = atomic_load(&sl->since), nw;
	do {
		uint64_t e = (w >> 16) & 0xffffffffu, cnt = w & SINCE_COUNT;
		if (w >> 48 != tag || (int32_t)(uint32_t)(epoch - e) > 0)
			nw = tag << 48 | epoch << 16 | 1; /* newer scrape: start over */
		else
			nw = (w & ~SINCE_COUNT) | (cnt < SINCE_COUNT ? cnt + 1 : cnt);
	} while (!atomic_compare_exchange_weak(&sl->since, &w, nw));
	return nw & ~SINCE_COUNT;
}

void inflight_unmark_sent(void *slot, uint64_t mark)
{
	struct inflight_slot *sl = slot;
	if (!sl || !mark)
		return;
	uint64_t w = atomic_load(&sl->since);
	/* Counted under a scrape epoch that has since been replaced: the newer
	 * scrape already took the request into account. */
	while ((w & ~SINCE_COUNT) == mark && (w & SINCE_COUNT) > 0)
		if (atomic_compare_exchange_weak(&sl->since, &w, w - 1))
			return;
}

/* The count of a slot that holds requests of |tag|'s endpoint. */
static int64_t since_of(const struct inflight_slot *sl, uint64_t tag, int64_t scrape_ms)
{
	uint64_t epoch = (uint64_t)scrape_ms & 0xffffffffu;
	uint64_t v = atomic_load(&sl->since);
	uint64_t e = (v >> 16) & 0xffffffffu;
	/* A newer epoch than ours: sent after a scrape this snapshot does not
	 * have yet, so still unseen. An older one: seen since. */
	if (v >> 48 != (tag & 0xffff) || (int32_t)(uint32_t)(e - epoch) < 0)
		return 0;
	return (int64_t)(v & SINCE_COUNT);
}

static int64_t since_hashed(const inflight *t, uint64_t h, int64_t scrape_ms)
{
	uint64_t tag = tag_of(h);
	for (size_t i = 0; i < INFLIGHT_PROBE; i++) {
		struct inflight_slot *sl = slot_at(t, h, i);
		uint64_t w = atomic_load(&sl->word);
		if (w == 0)
			break;
		if (w >> 32 != tag || (w & 0xffffffffu) == 0)
			continue;
		return since_of(sl, tag, scrape_ms);
	}
	return 0;
}

int64_t inflight_since(const inflight *t, const char *name, int64_t scrape_ms)
{
	return since_hashed(t, name_hash(name), scrape_ms);
}

struct inflight_view {
	const inflight *t;
	uint32_t n;
	struct inflight_slot *slot[]; /* by store_endpoint.index; NULL: table full */
};

/* The slot of |h|'s name: its own, or the first never-used one in its probe
 * window, claimed with no requests. The same slot inflight_acquire finds
 * later: it takes the first slot with the tag, and slots are never given
 * back to never-used. A claimed idle slot may still be taken over by another
 * name when a window fills up; readers check the tag. */
static struct inflight_slot *slot_claim(inflight *t, uint64_t h)
{
	uint64_t tag = tag_of(h);
	for (size_t i = 0; i < INFLIGHT_PROBE; i++) {
		struct inflight_slot *sl = slot_at(t, h, i);
		uint64_t w = atomic_load(&sl->word);
		while (w == 0 && !atomic_compare_exchange_weak(&sl->word, &w, tag << 32))
			;
		if (w == 0 || w >> 32 == tag)
			return sl;
	}
	return NULL;
}

const struct inflight_view *inflight_view_of(inflight *t, const store_snapshot *snap)
{
	if (!t || !snap || !snap->n_endpoints)
		return NULL;
	_Atomic(void *) *cell = (_Atomic(void *) *)&snap->derived;
	struct inflight_view *v = atomic_load(cell);
	if (v)
		return v->t == t ? v : NULL;
	v = malloc(sizeof(*v) + snap->n_endpoints * sizeof(v->slot[0]));
	if (!v)
		return NULL;
	v->t = t;
	v->n = snap->n_endpoints;
	for (uint32_t i = 0; i < v->n; i++)
		v->slot[i] = slot_claim(t, store_endpoint_hash(&snap->endpoints[i]));
	void *none = NULL;
	if (atomic_compare_exchange_strong(cell, &none, v))
		return v;
	free(v); /* another worker was first */
	v = none;
	return v->t == t ? v : NULL;
}

/* The view's slot of |ep| while it still belongs to ep's name, else NULL. */
static const struct inflight_slot *view_slot(const sched_ctx *c, const store_endpoint *ep,
					     uint64_t tag, uint64_t *word)
{
	const struct inflight_view *v = c->inflight_view;
	if (!v || ep->index >= v->n || !v->slot[ep->index])
		return NULL;
	const struct inflight_slot *sl = v->slot[ep->index];
	*word = atomic_load(&sl->word);
	return *word >> 32 == tag ? sl : NULL;
}

int64_t inflight_since_ep(const sched_ctx *c, const store_endpoint *ep)
{
	if (!c->s->inflight)
		return 0;
	uint64_t h = store_endpoint_hash(ep), tag = tag_of(h), w;
	const struct inflight_slot *sl = view_slot(c, ep, tag, &w);
	if (!sl)
		return since_hashed(c->s->inflight, h, ep->m.update_ms);
	return (w & 0xffffffffu) ? since_of(sl, tag, ep->m.update_ms) : 0;
}

void inflight_get_ep(const sched_ctx *c, const store_endpoint *ep, int64_t *requests,
		     int64_t *tokens)
{
	*requests = *tokens = 0;
	if (!c->s->inflight)
		return;
	uint64_t h = store_endpoint_hash(ep), tag = tag_of(h), w;
	const struct inflight_slot *sl = view_slot(c, ep, tag, &w);
	if (!sl) {
		get_hashed(c->s->inflight, h, requests, tokens);
		return;
	}
	*requests = (int64_t)(w & 0xffffffffu);
	*tokens = atomic_load(&sl->tokens);
}

/* ---- core plugin types (no scheduling role) ---------------------------------- */

static const plugin_type single_profile_handler = {
	.type = "single-profile-handler",
	.kinds = PK_HANDLER,
	.create = plugin_no_params,
};
static const plugin_type openai_parser = {
	.type = "openai-parser",
	.kinds = PK_PARSER,
	.create = plugin_no_params,
};
static const plugin_type passthrough_parser = {
	.type = "passthrough-parser",
	.kinds = PK_PARSER,
	.create = plugin_no_params,
};
static const plugin_type served_verifier = {
	.type = "destination-endpoint-served-verifier",
	.kinds = PK_RESPONSE,
	.create = plugin_no_params,
};
/* In the reference this producer feeds in-flight load to scorers and
 * detectors; here the counters are built in, so it only turns them on. */
static const plugin_type inflight_producer = {
	.type = "inflight-load-producer",
	.kinds = PK_OTHER,
	.needs_inflight = true,
	.create = plugin_no_params,
};

static int create_metrics_source(sched_plugin *p, const cJSON *params, sched_build *b)
{
	const char *scheme = "http", *path = "/metrics";
	bool insecure = true;
	param_spec spec[] = {
		{"scheme", P_STRING, &scheme, NULL},
		{"path", P_STRING, &path, NULL},
		{"insecureSkipVerify", P_BOOL, &insecure, NULL},
	};
	if (params_parse(b, params, spec, 3) < 0)
		return -EINVAL;
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
		return plugin_error(b, "unsupported scheme: %s", scheme);
	sched_metrics_source *ds = build_alloc(b, sizeof(*ds));
	if (!ds)
		return -ENOMEM;
	ds->name = p->name;
	ds->scheme = build_strdup(b, scheme);
	ds->path = build_strdup(b, path);
	ds->insecure_skip_verify = insecure;
	if (!ds->scheme || !ds->path)
		return -ENOMEM;
	p->cfg = ds;
	return 0;
}

static const plugin_type metrics_source = {
	.type = "metrics-data-source",
	.kinds = PK_SOURCE,
	.create = create_metrics_source,
};

static const sched_engine builtin_engines[] = {
	{"vllm", "vllm:num_requests_waiting", "vllm:num_requests_running",
	 "vllm:kv_cache_usage_perc", "vllm:lora_requests_info", "vllm:cache_config_info", "", "",
	 "", ""},
	{"sglang", "sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:token_usage", "",
	 "sglang:cache_config_info", "page_size", "num_pages", "", ""},
	{"trtllm-serve", "trtllm_num_requests_waiting", "trtllm_num_requests_running",
	 "trtllm_kv_cache_utilization", "", "", "", "", "trtllm_kv_cache_tokens_per_block",
	 "trtllm_kv_cache_max_blocks"},
	{"triton-tensorrt-llm", "nv_trt_llm_request_metrics{request_type=waiting}",
	 "nv_trt_llm_request_metrics{request_type=scheduled}",
	 "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=fraction}", "", "", "", "",
	 "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=tokens_per}",
	 "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=max}"},
};

const sched_engine *sched_builtin_engines(size_t *n)
{
	*n = sizeof(builtin_engines) / sizeof(builtin_engines[0]);
	return builtin_engines;
}

static bool name_char(char c, bool first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
	       (!first && c >= '0' && c <= '9');
}

static const char *skip_sp(const char *s)
{
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	return s;
}

/* A PromQL instant-vector selector "name{label=value,...}" with quoted or
 * unquoted values (the extractor quotes bare values before parsing). */
static bool valid_metric_spec(const char *s)
{
	if (!*s)
		return true; /* empty disables the metric */
	s = skip_sp(s);
	if (!name_char(*s, true))
		return false;
	while (name_char(*s, false))
		s++;
	s = skip_sp(s);
	if (*s == '{') {
		s = skip_sp(s + 1);
		while (*s != '}') {
			if (!name_char(*s, true) || *s == ':')
				return false;
			while (name_char(*s, false) && *s != ':')
				s++;
			s = skip_sp(s);
			if (s[0] == '=' && s[1] == '~')
				s += 2;
			else if (s[0] == '!' && (s[1] == '=' || s[1] == '~'))
				s += 2;
			else if (s[0] == '=')
				s++;
			else
				return false;
			s = skip_sp(s);
			if (*s == '"') {
				for (s++; *s && *s != '"'; s++)
					if (*s == '\\' && s[1])
						s++;
				if (*s != '"')
					return false;
				s++;
			} else {
				const char *v = s;
				while (*s && *s != '"' && *s != ',' && *s != '}' && *s != ' ' &&
				       *s != '\t' && *s != '\n' && *s != '\r')
					s++;
				if (s == v)
					return false;
			}
			s = skip_sp(s);
			if (*s == ',')
				s = skip_sp(s + 1);
			else if (*s != '}')
				return false;
		}
		s = skip_sp(s + 1);
	}
	return *s == '\0';
}

static int create_core_extractor(sched_plugin *p, const cJSON *params, sched_build *b)
{
	const char *label_key = "", *def = "";
	const cJSON *engines = NULL;
	param_spec spec[] = {
		{"engineLabelKey", P_STRING, &label_key, NULL},
		{"defaultEngine", P_STRING, &def, NULL},
		{"engineConfigs", P_ARRAY, &engines, NULL},
	};
	if (params_parse(b, params, spec, 3) < 0)
		return -EINVAL;
	if (!*label_key)
		label_key = "inference.networking.k8s.io/engine-type";
	if (!*def)
		def = "vllm";
	size_t n_user = engines ? (size_t)cJSON_GetArraySize(engines) : 0;
	size_t nb = sizeof(builtin_engines) / sizeof(builtin_engines[0]);
	sched_engine *all = build_alloc(b, (n_user + nb) * sizeof(*all));
	sched_extractor *ex = build_alloc(b, sizeof(*ex));
	if (!all || !ex)
		return -ENOMEM;
	size_t n = 0;
	for (const cJSON *e = engines ? engines->child : NULL; e; e = e->next) {
		sched_engine *en = &all[n];
		const char *v[10] = {"", "", "", "", "", "", "", "", "", ""};
		param_spec es[] = {
			{"name", P_STRING, &v[0], NULL},
			{"queuedRequestsSpec", P_STRING, &v[1], NULL},
			{"runningRequestsSpec", P_STRING, &v[2], NULL},
			{"kvUsageSpec", P_STRING, &v[3], NULL},
			{"loraSpec", P_STRING, &v[4], NULL},
			{"cacheInfoSpec", P_STRING, &v[5], NULL},
			{"cacheBlockSizeLabelName", P_STRING, &v[6], NULL},
			{"cacheNumBlocksLabelName", P_STRING, &v[7], NULL},
			{"cacheBlockSizeSpec", P_STRING, &v[8], NULL},
			{"cacheNumBlocksSpec", P_STRING, &v[9], NULL},
		};
		char where[48];
		snprintf(where, sizeof(where), "engineConfigs[%zu]", n);
		if (!cJSON_IsObject(e))
			return plugin_error(b, "%s must be an object", where);
		if (params_parse_at(b, where, e, es, 10) < 0)
			return -EINVAL;
		if (!*v[0])
			return plugin_error(b, "engine config name cannot be empty");
		if (strcmp(v[0], "default") == 0)
			return plugin_error(b,
					    "engine config name cannot be \"default\" (reserved)");
		for (size_t k = 0; k < n; k++)
			if (strcmp(all[k].name, v[0]) == 0)
				return plugin_error(b,
						    "failed to register engine mapping for \"%s\": "
						    "duplicate engine name",
						    v[0]);
		static const int specs[] = {1, 2, 3, 4, 5, 8, 9};
		for (size_t k = 0; k < sizeof(specs) / sizeof(specs[0]); k++)
			if (!valid_metric_spec(v[specs[k]]))
				return plugin_error(b,
						    "failed to create mapping for engine \"%s\": "
						    "invalid metric specification \"%s\"",
						    v[0], v[specs[k]]);
		const char **dst[10] = {&en->name, &en->queued_requests_spec,
					&en->running_requests_spec, &en->kv_usage_spec,
					&en->lora_spec, &en->cache_info_spec,
					&en->cache_block_size_label, &en->cache_num_blocks_label,
					&en->cache_block_size_spec, &en->cache_num_blocks_spec};
		for (int k = 0; k < 10; k++)
			if (!(*dst[k] = build_strdup(b, v[k])))
				return -ENOMEM;
		n++;
	}
	for (size_t i = 0; i < nb; i++) {
		bool overridden = false;
		for (size_t k = 0; k < n_user; k++)
			overridden |= strcmp(all[k].name, builtin_engines[i].name) == 0;
		if (!overridden)
			all[n++] = builtin_engines[i];
	}
	bool found = false;
	for (size_t k = 0; k < n; k++)
		found |= strcmp(all[k].name, def) == 0;
	if (!found)
		return plugin_error(b, "defaultEngine \"%s\" not found in engineConfigs", def);
	ex->name = p->name;
	ex->engine_label_key = build_strdup(b, label_key);
	ex->default_engine = build_strdup(b, def);
	ex->engines = all;
	ex->n_engines = n;
	if (!ex->engine_label_key || !ex->default_engine)
		return -ENOMEM;
	p->cfg = ex;
	return 0;
}

static const plugin_type core_extractor = {
	.type = "core-metrics-extractor",
	.kinds = PK_EXTRACTOR,
	.create = create_core_extractor,
};

static const plugin_type *const core_types[] = {
	&single_profile_handler, &openai_parser, &passthrough_parser, &served_verifier,
	&inflight_producer, &metrics_source, &core_extractor, NULL,
};

const plugin_type *sched_find_type(const char *name)
{
	const plugin_type *const *tables[] = {core_types, sched_scorer_types, sched_filter_types,
					      sched_picker_types, sched_prefix_types,
					      sched_affinity_types};
	for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
		for (const plugin_type *const *p = tables[t]; *p; p++)
			if (strcmp((*p)->type, name) == 0)
				return *p;
	return NULL;
}

const sched_plugin *sched_find_plugin(const sched *s, const char *name)
{
	for (size_t i = 0; i < s->n_plugins; i++)
		if (strcmp(s->plugins[i]->name, name) == 0)
			return s->plugins[i];
	return NULL;
}

/* ---- sched_new ---------------------------------------------------------------- */

/* Working copy of the profiles, so defaulting can append to them. */
struct wref {
	const char *ref;
	double weight;
	bool has_weight;
	int line;
};

struct wprof {
	const char *name;
	struct wref *refs;
	size_t n, cap;
	int line;
};

static int add_ref(sched_build *b, struct wprof *w, const char *ref, double weight,
		   bool has_weight, int line)
{
	if (w->n == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 8;
		struct wref *nr = build_alloc(b, nc * sizeof(*nr));
		if (!nr)
			return -ENOMEM;
		if (w->n)
			memcpy(nr, w->refs, w->n * sizeof(*nr));
		w->refs = nr;
		w->cap = nc;
	}
	w->refs[w->n++] = (struct wref){ref, weight, has_weight, line};
	return 0;
}

static sched_plugin *add_plugin(sched_build *b, const char *name, const char *type,
				const cJSON *params, int line)
{
	sched *s = b->s;
	if (!type || !*type) {
		cfg_error(b, line, "plugin '%s' is missing a type", name ? name : "");
		return NULL;
	}
	if (!name || !*name)
		name = type;
	if (sched_find_plugin(s, name)) {
		cfg_error(b, line, "duplicate plugin name '%s'", name);
		return NULL;
	}
	const plugin_type *t = sched_find_type(type);
	if (!t) {
		cfg_error(b, line, "plugin type '%s' is not registered", type);
		return NULL;
	}
	if (s->n_plugins == s->cap_plugins) {
		size_t nc = s->cap_plugins ? s->cap_plugins * 2 : 16;
		sched_plugin **np = build_alloc(b, nc * sizeof(*np));
		if (!np)
			return NULL;
		if (s->n_plugins)
			memcpy(np, s->plugins, s->n_plugins * sizeof(*np));
		s->plugins = np;
		s->cap_plugins = nc;
	}
	sched_plugin *p = build_alloc(b, sizeof(*p));
	if (!p)
		return NULL;
	p->name = build_strdup(b, name);
	p->type = t;
	p->line = line;
	if (!p->name)
		return NULL;
	b->self = p;
	if (t->create(p, params, b) < 0) {
		if (!b->err[0])
			cfg_error(b, line, "out of memory");
		return NULL;
	}
	s->plugins[s->n_plugins++] = p;
	return p;
}

static bool any_kind(const sched *s, unsigned kind)
{
	for (size_t i = 0; i < s->n_plugins; i++)
		if (s->plugins[i]->type->kinds & kind)
			return true;
	return false;
}

static const sched_plugin *first_kind(const sched *s, unsigned kind)
{
	for (size_t i = 0; i < s->n_plugins; i++)
		if (s->plugins[i]->type->kinds & kind)
			return s->plugins[i];
	return NULL;
}

/* Feature gates registered in v1.5.0. */
static int check_gates(sched_build *b, const sched_config *cfg, bool *legacy)
{
	*legacy = false;
	for (size_t i = 0; cfg && i < cfg->n_feature_gates; i++) {
		const char *g = cfg->feature_gates[i] ? cfg->feature_gates[i] : "";
		if (strcmp(g, "enableLegacyMetrics") == 0)
			*legacy = true;
		else if (strcmp(g, "flowControl") == 0)
			return cfg_error(b, 0,
					 "feature gate 'flowControl': the flow control layer is "
					 "not supported yet; remove the gate");
		else if (strcmp(g, "dataLayer") != 0)
			return cfg_error(b, 0, "feature gate '%s' is unknown or unregistered", g);
	}
	return 0;
}

static int ensure_scheduling_layer(sched_build *b, struct wprof **profs, size_t *n_profs)
{
	sched *s = b->s;
	if (*n_profs == 0) {
		/* One "default" profile with every filter, scorer and picker,
		 * in config order (the reference walks a map: random order). */
		struct wprof *w = build_alloc(b, sizeof(*w));
		if (!w)
			return -ENOMEM;
		w->name = "default";
		for (size_t i = 0; i < s->n_plugins; i++)
			if (s->plugins[i]->type->kinds & (PK_FILTER | PK_SCORER | PK_PICKER))
				if (add_ref(b, w, s->plugins[i]->name, 0, false,
					    s->plugins[i]->line) < 0)
					return -ENOMEM;
		*profs = w;
		*n_profs = 1;
	}
	if (*n_profs == 1 && !any_kind(s, PK_HANDLER))
		if (!add_plugin(b, "single-profile-handler", "single-profile-handler", NULL, 0))
			return -EINVAL;
	const sched_plugin *picker = first_kind(s, PK_PICKER);
	if (!picker) {
		picker = add_plugin(b, "max-score-picker", "max-score-picker", NULL, 0);
		if (!picker)
			return -EINVAL;
	}
	for (size_t i = 0; i < *n_profs; i++) {
		struct wprof *w = &(*profs)[i];
		bool has_picker = false;
		for (size_t j = 0; j < w->n; j++) {
			const sched_plugin *p =
				w->refs[j].ref ? sched_find_plugin(s, w->refs[j].ref) : NULL;
			if (p && (p->type->kinds & PK_SCORER) && !w->refs[j].has_weight) {
				w->refs[j].weight = 1.0;
				w->refs[j].has_weight = true;
			}
			has_picker |= p && (p->type->kinds & PK_PICKER);
		}
		if (!has_picker && add_ref(b, w, picker->name, 0, false, w->line) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int ensure_parser(sched_build *b, const sched_config *cfg)
{
	sched *s = b->s;
	const char *ref = cfg && cfg->parser_ref && *cfg->parser_ref ? cfg->parser_ref
								     : "openai-parser";
	int line = cfg ? cfg->parser_line : 0;
	const sched_plugin *p = sched_find_plugin(s, ref);
	if (!p && strcmp(ref, "openai-parser") == 0)
		p = add_plugin(b, "openai-parser", "openai-parser", NULL, 0);
	else if (!p)
		return cfg_error(b, line, "the configured parser '%s' is not loaded", ref);
	if (!p)
		return -EINVAL;
	if (!(p->type->kinds & PK_PARSER))
		return cfg_error(b, line, "the specified plugin '%s' is not a parser plugin", ref);
	s->parser = p;
	s->passthrough = strcmp(p->type->type, "passthrough-parser") == 0;
	return 0;
}

static int ensure_saturation(sched_build *b, const sched_config *cfg)
{
	sched *s = b->s;
	const char *ref = cfg && cfg->saturation_detector_ref && *cfg->saturation_detector_ref
				  ? cfg->saturation_detector_ref
				  : "utilization-detector";
	int line = cfg ? cfg->saturation_detector_line : 0;
	const sched_plugin *p = sched_find_plugin(s, ref);
	if (!p && strcmp(ref, "utilization-detector") == 0) {
		p = add_plugin(b, ref, ref, NULL, 0);
		if (!p)
			return -EINVAL;
	}
	if (!p)
		return cfg_error(b, line, "saturation detector references undefined plugin '%s'",
				 ref);
	if (!(p->type->kinds & PK_SATURATION))
		return cfg_error(b, line, "plugin '%s' is not a saturation detector", ref);
	s->saturation = p;
	return 0;
}

static int build_data_layer(sched_build *b, const sched_config *cfg, bool legacy)
{
	sched *s = b->s;
	s->dl.legacy_metrics = legacy;
	if (legacy)
		return 0;
	struct sched_datasource def_src;
	const char *def_ex = "core-metrics-extractor";
	const struct sched_datasource *srcs;
	size_t n_srcs;
	if (cfg && cfg->has_data_layer) {
		srcs = cfg->sources;
		n_srcs = cfg->n_sources;
	} else {
		/* No dataLayer section: the default source and extractor. */
		if (!sched_find_plugin(s, "metrics-data-source") &&
		    !add_plugin(b, "metrics-data-source", "metrics-data-source", NULL, 0))
			return -EINVAL;
		if (!sched_find_plugin(s, "core-metrics-extractor") &&
		    !add_plugin(b, "core-metrics-extractor", "core-metrics-extractor", NULL, 0))
			return -EINVAL;
		def_src = (struct sched_datasource){"metrics-data-source", &def_ex, 1, 0};
		srcs = &def_src;
		n_srcs = 1;
	}
	sched_metrics_source *out = n_srcs ? build_alloc(b, n_srcs * sizeof(*out)) : NULL;
	if (n_srcs && !out)
		return -ENOMEM;
	for (size_t i = 0; i < n_srcs; i++) {
		const char *ref = srcs[i].plugin_ref ? srcs[i].plugin_ref : "";
		const sched_plugin *p = sched_find_plugin(s, ref);
		if (!p || !(p->type->kinds & PK_SOURCE))
			return cfg_error(b, srcs[i].line, "the plugin '%s' is not a data source",
					 ref);
		out[i] = *(const sched_metrics_source *)p->cfg;
		const sched_extractor **ex =
			srcs[i].n_extractors ? build_alloc(b, srcs[i].n_extractors * sizeof(*ex))
					     : NULL;
		if (srcs[i].n_extractors && !ex)
			return -ENOMEM;
		for (size_t k = 0; k < srcs[i].n_extractors; k++) {
			const char *eref =
				srcs[i].extractor_refs[k] ? srcs[i].extractor_refs[k] : "";
			const sched_plugin *e = sched_find_plugin(s, eref);
			if (!e || !(e->type->kinds & PK_EXTRACTOR))
				return cfg_error(b, srcs[i].line,
						 "the plugin '%s' is not a metrics extractor",
						 eref);
			ex[k] = e->cfg;
		}
		out[i].extractors = ex;
		out[i].n_extractors = srcs[i].n_extractors;
	}
	s->dl.sources = out;
	s->dl.n_sources = n_srcs;
	return 0;
}

static int validate_profiles(sched_build *b, const struct wprof *profs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct wprof *w = &profs[i];
		if (!w->name || !*w->name)
			return cfg_error(b, w->line, "schedulingProfiles[%zu] is missing a name",
					 i);
		for (size_t k = 0; k < i; k++)
			if (strcmp(profs[k].name, w->name) == 0)
				return cfg_error(b, w->line,
						 "schedulingProfiles[%zu] has duplicate name '%s'",
						 i, w->name);
		for (size_t j = 0; j < w->n; j++) {
			const struct wref *r = &w->refs[j];
			if (!r->ref || !*r->ref)
				return cfg_error(b, r->line,
						 "schedulingProfiles[%s].plugins[%zu] is missing a "
						 "'pluginRef'",
						 w->name, j);
			if (!sched_find_plugin(b->s, r->ref))
				return cfg_error(
					b, r->line,
					"schedulingProfiles[%s] references undefined plugin "
					"'%s'",
					w->name, r->ref);
		}
	}
	return 0;
}

static int build_profiles(sched_build *b, const struct wprof *profs, size_t n)
{
	sched *s = b->s;
	s->profiles = build_alloc(b, n * sizeof(*s->profiles));
	if (!s->profiles)
		return -ENOMEM;
	s->n_profiles = n;
	for (size_t i = 0; i < n; i++) {
		const struct wprof *w = &profs[i];
		sched_profile *pr = &s->profiles[i];
		pr->name = build_strdup(b, w->name);
		pr->filters = build_alloc(b, (w->n + 1) * sizeof(*pr->filters));
		pr->scorers = build_alloc(b, (w->n + 1) * sizeof(*pr->scorers));
		if (!pr->name || !pr->filters || !pr->scorers)
			return -ENOMEM;
		for (size_t j = 0; j < w->n; j++) {
			const sched_plugin *p = sched_find_plugin(s, w->refs[j].ref);
			unsigned k = p->type->kinds;
			if (k & PK_SCORER)
				pr->scorers[pr->n_scorers++] =
					(sched_weighted){p, w->refs[j].weight};
			if (k & PK_FILTER)
				pr->filters[pr->n_filters++] = p;
			if (k & PK_PICKER) {
				if (pr->picker)
					return cfg_error(
						b, w->refs[j].line,
						"failed to add plugin '%s' to profile '%s': "
						"failed to set '%s' as picker, already have a "
						"registered picker plugin '%s'",
						p->name, w->name, p->name, pr->picker->name);
				pr->picker = p;
			}
		}
	}
	const sched_plugin *h = NULL;
	for (size_t i = 0; i < s->n_plugins; i++) {
		const sched_plugin *p = s->plugins[i];
		if (!(p->type->kinds & PK_HANDLER))
			continue;
		if (h)
			return cfg_error(
				b, p->line,
				"multiple profile handlers found ('%s', '%s'); only one is "
				"allowed",
				h->name, p->name);
		h = p;
	}
	if (!h)
		return cfg_error(b, 0, "no profile handler configured");
	if (strcmp(h->type->type, "single-profile-handler") == 0 && n > 1)
		return cfg_error(
			b, h->line,
			"SingleProfileHandler cannot support multiple scheduling profiles");
	s->handler = h;
	return 0;
}

/* The v1.5.0 built-in default (spec §4.3), minus the prefix-cache scorer
 * when it is not registered. */
static int load_default(sched_build *b, struct wprof **profs, size_t *n)
{
	bool prefix = sched_find_type("prefix-cache-scorer") != NULL;
	if (!add_plugin(b, NULL, "queue-scorer", NULL, 0) ||
	    !add_plugin(b, NULL, "kv-cache-utilization-scorer", NULL, 0) ||
	    (prefix && !add_plugin(b, NULL, "prefix-cache-scorer", NULL, 0)) ||
	    !add_plugin(b, NULL, "metrics-data-source", NULL, 0) ||
	    !add_plugin(b, NULL, "core-metrics-extractor", NULL, 0))
		return -EINVAL;
	struct wprof *w = build_alloc(b, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->name = "default";
	if (add_ref(b, w, "queue-scorer", 2, true, 0) < 0 ||
	    add_ref(b, w, "kv-cache-utilization-scorer", 2, true, 0) < 0 ||
	    (prefix && add_ref(b, w, "prefix-cache-scorer", 3, true, 0) < 0))
		return -ENOMEM;
	*profs = w;
	*n = 1;
	return 0;
}

static int build(sched_build *b, const sched_config *cfg)
{
	sched *s = b->s;
	bool legacy;
	if (check_gates(b, cfg, &legacy) < 0)
		return -EINVAL;
	if (cfg && cfg->has_flow_control)
		ulog(LOG_WARN, "flowControl section ignored: the flowControl feature gate is off",
		     "source", b->source, NULL);

	struct wprof *profs = NULL;
	size_t n_profs = 0;
	if (!cfg) {
		if (load_default(b, &profs, &n_profs) < 0)
			return -EINVAL;
	} else {
		for (size_t i = 0; i < cfg->n_plugins; i++) {
			const sched_plugin_spec *ps = &cfg->plugins[i];
			if (!add_plugin(b, ps->name, ps->type, ps->params, ps->line))
				return -EINVAL;
		}
		n_profs = cfg->n_profiles;
		profs = n_profs ? build_alloc(b, n_profs * sizeof(*profs)) : NULL;
		if (n_profs && !profs)
			return -ENOMEM;
		for (size_t i = 0; i < n_profs; i++) {
			const sched_profile_spec *sp = &cfg->profiles[i];
			profs[i].name = sp->name;
			profs[i].line = sp->line;
			for (size_t j = 0; j < sp->n_refs; j++)
				if (add_ref(b, &profs[i], sp->refs[j].plugin_ref,
					    sp->refs[j].weight, sp->refs[j].has_weight,
					    sp->refs[j].line) < 0)
					return -ENOMEM;
		}
	}
	if (ensure_scheduling_layer(b, &profs, &n_profs) < 0 || ensure_parser(b, cfg) < 0 ||
	    ensure_saturation(b, cfg) < 0 || build_data_layer(b, cfg, legacy) < 0 ||
	    validate_profiles(b, profs, n_profs) < 0 || build_profiles(b, profs, n_profs) < 0)
		return -EINVAL;

	size_t nr = 0;
	bool need_inflight = false;
	for (size_t i = 0; i < s->n_plugins; i++) {
		nr += (s->plugins[i]->type->kinds & PK_RESPONSE) != 0;
		need_inflight |= s->plugins[i]->type->needs_inflight;
	}
	size_t np = 0;
	for (size_t i = 0; i < s->n_plugins; i++)
		np += s->plugins[i]->type->prepare || s->plugins[i]->type->pre_request;
	s->preparers = np ? build_alloc(b, np * sizeof(*s->preparers)) : NULL;
	if (np && !s->preparers)
		return -ENOMEM;
	for (size_t i = 0; i < s->n_plugins; i++)
		if (s->plugins[i]->type->prepare || s->plugins[i]->type->pre_request) {
			s->plugins[i]->slot = s->n_preparers;
			s->preparers[s->n_preparers++] = s->plugins[i];
		}
	s->responders = nr ? build_alloc(b, nr * sizeof(*s->responders)) : NULL;
	if (nr && !s->responders)
		return -ENOMEM;
	for (size_t i = 0; i < s->n_plugins; i++)
		if (s->plugins[i]->type->kinds & PK_RESPONSE)
			s->responders[s->n_responders++] = s->plugins[i];
	if (need_inflight) {
		s->inflight = inflight_new();
		if (!s->inflight)
			return cfg_error(b, 0, "out of memory");
	}
	return 0;
}

sched *sched_new(const sched_config *cfg, char *err, size_t errlen)
{
	char dummy[8];
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	sched *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	atomic_init(&s->refs, 1);
	arena_init(&s->mem, 16384);
	sched_build b = {.s = s, .err = err, .errlen = errlen};
	b.source = !cfg ? "<default-config>" : cfg->source && *cfg->source ? cfg->source
									   : "<config-text>";
	s->source = arena_strdup(&s->mem, b.source);
	if (!s->source || build(&b, cfg) < 0) {
		if (!err[0])
			snprintf(err, errlen, "%s: out of memory", b.source);
		sched_free(s);
		return NULL;
	}
	return s;
}

void sched_free(sched *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_plugins; i++)
		if (s->plugins[i]->type->destroy)
			s->plugins[i]->type->destroy(s->plugins[i]);
	inflight_free(s->inflight);
	arena_free(&s->mem);
	free(s);
}

void sched_set_staleness(sched *s, int64_t ms)
{
	s->stale_ms = ms > 0 ? ms : 0;
}

void sched_ref(const sched *s)
{
	atomic_fetch_add(&((sched *)s)->refs, 1);
}

void sched_unref(const sched *s)
{
	if (s && atomic_fetch_sub(&((sched *)s)->refs, 1) == 1)
		sched_free((sched *)s);
}

const char *sched_profile_name(const sched *s)
{
	return s->n_profiles ? s->profiles[0].name : "";
}

const sched_datalayer *sched_data_layer(const sched *s)
{
	return &s->dl;
}
