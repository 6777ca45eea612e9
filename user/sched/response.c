/* Response side (spec §2.9): usage from JSON bodies and SSE chunks as the
 * openai-parser reads it, the model-name rewrite-back, and response-header
 * plugins. */
#include <math.h>
#include <string.h>

#include "sched/body.h"
#include "sched/plugins.h"

/* ---- usage ----------------------------------------------------------------------- */

/* A usage object decoded into map[string]any: only the members the parser
 * reads. A member is "present" when non-null; "num" when it is a number. */
enum { U_INPUT, U_OUTPUT, U_PROMPT, U_COMPLETION, U_TOTAL, U_N };

struct umap {
	bool present[U_N], num[U_N];
	double v[U_N];
	bool details;        /* prompt_token_details is an object */
	bool cached;         /* ... with a numeric cached_tokens */
	double cached_v;
};

static const char *const ukeys[U_N] = {"input_tokens", "output_tokens", "prompt_tokens",
				       "completion_tokens", "total_tokens"};

/* Map keys are exact; a later duplicate member overwrites. */
static void umap_merge(struct umap *m, const bj_val *obj)
{
	bj_iter it;
	bj_val k, v;
	bj_iter_init(&it, obj);
	while (bj_obj_next(&it, &k, &v)) {
		for (int i = 0; i < U_N; i++)
			if (bj_str_eq(&k, ukeys[i])) {
				m->present[i] = v.t != BJ_NULL;
				m->num[i] = v.t == BJ_NUMBER;
				m->v[i] = bj_double(&v);
			}
		if (bj_str_eq(&k, "prompt_token_details")) {
			m->details = v.t == BJ_OBJECT;
			m->cached = false;
			if (m->details) {
				bj_iter di;
				bj_val dk, dv;
				bj_iter_init(&di, &v);
				while (bj_obj_next(&di, &dk, &dv))
					if (bj_str_eq(&dk, "cached_tokens")) {
						m->cached = dv.t == BJ_NUMBER;
						m->cached_v = bj_double(&dv);
					}
			}
		}
	}
}

/* Go's int(float64): truncation, saturated here. */
static int64_t to_int(double v)
{
	if (v >= 9.2233720368547758e18)
		return INT64_MAX;
	if (v <= -9.2233720368547758e18)
		return INT64_MIN;
	return (int64_t)v;
}

static int64_t ufield(const struct umap *m, int i)
{
	return m->num[i] ? to_int(m->v[i]) : 0;
}

static bool has_prefix(const char *s, size_t n, const char *pfx)
{
	size_t l = strlen(pfx);
	return n >= l && memcmp(s, pfx, l) == 0;
}

static bool str_is(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* extractUsageByAPIType: field names by the "object" of the response. */
static void usage_from_map(const struct umap *m, const char *obj, size_t olen, sched_usage *u)
{
	int prompt, completion;
	if (has_prefix(obj, olen, "response") || has_prefix(obj, olen, "conversation")) {
		prompt = U_INPUT;
		completion = U_OUTPUT;
	} else if (str_is(obj, olen, "chat.completion") ||
		   str_is(obj, olen, "chat.completion.chunk") ||
		   str_is(obj, olen, "text_completion")) {
		prompt = U_PROMPT;
		completion = U_COMPLETION;
	} else {
		prompt = m->present[U_INPUT] ? U_INPUT : U_PROMPT;
		completion = m->present[U_OUTPUT] ? U_OUTPUT : U_COMPLETION;
	}
	u->found = true;
	u->prompt_tokens = m->present[prompt] ? ufield(m, prompt) : 0;
	u->completion_tokens = m->present[completion] ? ufield(m, completion) : 0;
	u->total_tokens = m->present[U_TOTAL] ? ufield(m, U_TOTAL) : 0;
	u->has_cached = m->details && m->cached;
	u->cached_tokens = u->has_cached ? to_int(m->cached_v) : 0;
}

/* Decoded "object" string of a response (empty when not a string). */
static size_t object_type(const bj_val *v, char *buf, size_t cap)
{
	if (v->t != BJ_STRING || 3 * v->n > cap)
		return 0;
	return bj_unquote(v, buf);
}

void sched_usage_parse_json(const char *body, size_t len, sched_usage *u)
{
	if (!body || len == 0 || bj_check(body, len, NULL, 0) < 0)
		return;
	bj_val top = bj_value(body, len);
	if (top.t != BJ_OBJECT || bj_has_overflow(&top))
		return;
	bj_val usage = {0}, object = {0};
	bj_iter it;
	bj_val k, v;
	bj_iter_init(&it, &top);
	while (bj_obj_next(&it, &k, &v)) {
		if (bj_str_eq(&k, "usage"))
			usage = v;
		else if (bj_str_eq(&k, "object"))
			object = v;
	}
	/* A non-object usage would make the reference panic; here it is
	 * simply not usage. */
	if (usage.t != BJ_OBJECT)
		return;
	struct umap m = {0};
	umap_merge(&m, &usage);
	char obj[192];
	size_t olen = object_type(&object, obj, sizeof(obj));
	usage_from_map(&m, obj, olen, u);
}

/* The typed Usage of the SSE path: int fields (ParseInt semantics) and an
 * optional prompt_token_details. Returns false on a type error. */
static bool decode_typed_usage(const bj_val *v, sched_usage *out)
{
	static const char *const keys[3] = {"prompt_tokens", "completion_tokens", "total_tokens"};
	int64_t *dst[3] = {&out->prompt_tokens, &out->completion_tokens, &out->total_tokens};
	bj_iter it;
	bj_val k, val;
	bj_iter_init(&it, v);
	while (bj_obj_next(&it, &k, &val)) {
		bool matched = false;
		for (int i = 0; i < 3 && !matched; i++) {
			if (!bj_key_fold(&k, keys[i]))
				continue;
			matched = true;
			if (val.t == BJ_NULL)
				continue;
			if (!bj_int64(&val, dst[i]))
				return false;
		}
		if (matched || !bj_key_fold(&k, "prompt_token_details"))
			continue;
		if (val.t == BJ_NULL) {
			out->has_cached = false;
			out->cached_tokens = 0;
			continue;
		}
		if (val.t != BJ_OBJECT)
			return false;
		out->has_cached = true;
		bj_iter di;
		bj_val dk, dv;
		bj_iter_init(&di, &val);
		while (bj_obj_next(&di, &dk, &dv))
			if (bj_key_fold(&dk, "cached_tokens") && dv.t != BJ_NULL &&
			    !bj_int64(&dv, &out->cached_tokens))
				return false;
	}
	return true;
}

/* State of extractUsageStreaming's decode target, which is reused for every
 * line of a chunk: fields a line does not mention keep earlier values. */
struct stream_state {
	struct umap resp_usage;
	bool resp_usage_set;
	char object[192];
	size_t object_len;
	bool completed; /* type == "response.completed" */
};

/* Decodes one "data: " line. Returns 1 with |u| filled when the line carries
 * usage, 0 when it decoded without usage, -1 when it did not decode (then,
 * unlike Go, nothing of the line is kept). */
static int stream_line(struct stream_state *st, const char *p, size_t n, sched_usage *u)
{
	if (bj_check(p, n, NULL, 0) < 0)
		return -1;
	bj_val top = bj_value(p, n);
	if (top.t == BJ_NULL)
		return 0;
	if (top.t != BJ_OBJECT)
		return -1;
	bj_val usage = {0}, resp = {0}, type = {0};
	bj_iter it;
	bj_val k, v;
	bj_iter_init(&it, &top);
	while (bj_obj_next(&it, &k, &v)) {
		if (bj_key_fold(&k, "usage"))
			usage = v;
		else if (bj_key_fold(&k, "response"))
			resp = v;
		else if (bj_key_fold(&k, "type"))
			type = v;
	}
	sched_usage typed = {0};
	if (usage.t != BJ_NONE && usage.t != BJ_NULL &&
	    (usage.t != BJ_OBJECT || !decode_typed_usage(&usage, &typed)))
		return -1;
	if (type.t != BJ_NONE && type.t != BJ_NULL && type.t != BJ_STRING)
		return -1;
	bj_val r_usage = {0}, r_object = {0};
	if (resp.t == BJ_OBJECT) {
		bj_iter ri;
		bj_iter_init(&ri, &resp);
		while (bj_obj_next(&ri, &k, &v)) {
			if (bj_key_fold(&k, "usage"))
				r_usage = v;
			else if (bj_key_fold(&k, "object"))
				r_object = v;
		}
		if (r_usage.t != BJ_NONE && r_usage.t != BJ_NULL &&
		    (r_usage.t != BJ_OBJECT || bj_has_overflow(&r_usage)))
			return -1;
		if (r_object.t != BJ_NONE && r_object.t != BJ_NULL && r_object.t != BJ_STRING)
			return -1;
	} else if (resp.t != BJ_NONE && resp.t != BJ_NULL) {
		return -1;
	}

	/* The line decodes: apply it. */
	if (type.t == BJ_STRING) {
		char buf[3 * 128];
		st->completed = type.n <= 128 && bj_unquote(&type, buf) == 18 &&
				memcmp(buf, "response.completed", 18) == 0;
	}
	if (r_usage.t == BJ_NULL) {
		st->resp_usage_set = false;
		memset(&st->resp_usage, 0, sizeof(st->resp_usage));
	} else if (r_usage.t == BJ_OBJECT) {
		st->resp_usage_set = true;
		umap_merge(&st->resp_usage, &r_usage);
	}
	if (r_object.t == BJ_STRING)
		st->object_len = object_type(&r_object, st->object, sizeof(st->object));
	if (usage.t == BJ_OBJECT) {
		typed.found = true;
		*u = typed;
		return 1;
	}
	if (st->resp_usage_set && st->completed) {
		usage_from_map(&st->resp_usage, st->object, st->object_len, u);
		return 1;
	}
	return 0;
}

void sched_usage_parse_sse(const char *chunk, size_t len, sched_usage *u)
{
	static const char pfx[] = "data: ";
	struct stream_state st;
	memset(&st, 0, sizeof(st));
	size_t pos = 0;
	while (chunk && pos <= len) {
		const char *nl = memchr(chunk + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - chunk) : len;
		const char *line = chunk + pos;
		size_t n = end - pos;
		pos = end + 1;
		if (n < sizeof(pfx) - 1 || memcmp(line, pfx, sizeof(pfx) - 1) != 0)
			continue;
		line += sizeof(pfx) - 1;
		n -= sizeof(pfx) - 1;
		if (n == 6 && memcmp(line, "[DONE]", 6) == 0)
			continue;
		if (stream_line(&st, line, n, u) == 1)
			return;
	}
}

/* ---- model rewrite-back -------------------------------------------------------- */

static size_t count_matches(const char *buf, size_t len, const char *pat, size_t plen)
{
	size_t n = 0, pos = 0;
	while (pos + plen <= len) {
		const char *hit = memmem(buf + pos, len - pos, pat, plen);
		if (!hit)
			break;
		n++;
		pos = (size_t)(hit - buf) + plen;
	}
	return n;
}

/* bytes.ReplaceAll of |from| by |to|; |count| matches are known to exist. */
static sched_str replace_all(const char *buf, size_t len, const char *from, size_t flen,
			     const char *to, size_t tlen, size_t count, arena *a)
{
	size_t out_len = len - count * flen + count * tlen;
	char *out = arena_alloc(a, out_len + 1);
	if (!out)
		return (sched_str){buf, len};
	size_t pos = 0, o = 0;
	while (count--) {
		const char *hit = memmem(buf + pos, len - pos, from, flen);
		size_t at = (size_t)(hit - buf);
		memcpy(out + o, buf + pos, at - pos);
		o += at - pos;
		memcpy(out + o, to, tlen);
		o += tlen;
		pos = at + flen;
	}
	memcpy(out + o, buf + pos, len - pos);
	o += len - pos;
	out[o] = '\0';
	return (sched_str){out, o};
}

sched_str sched_rewrite_back(const char *buf, size_t len, sched_str target, sched_str incoming,
			     arena *a)
{
	sched_str same = {buf, len};
	if (!buf || !target.len || !incoming.len ||
	    (target.len == incoming.len && memcmp(target.p, incoming.p, target.len) == 0))
		return same;
	/* The patterns use the raw names, like the reference. */
	static const char *const forms[2][2] = {{"\"model\":\"", "\""}, {"\"model\": \"", "\""}};
	for (int f = 0; f < 2; f++) {
		size_t hl = strlen(forms[f][0]);
		size_t flen = hl + target.len + 1, tlen = hl + incoming.len + 1;
		char *from = arena_alloc(a, flen), *to = arena_alloc(a, tlen);
		if (!from || !to)
			return same;
		memcpy(from, forms[f][0], hl);
		memcpy(from + hl, target.p, target.len);
		from[flen - 1] = '"';
		memcpy(to, forms[f][0], hl);
		memcpy(to + hl, incoming.p, incoming.len);
		to[tlen - 1] = '"';
		size_t count = count_matches(buf, len, from, flen);
		if (count)
			return replace_all(buf, len, from, flen, to, tlen, count, a);
	}
	return same;
}

/* ---- response-header plugins --------------------------------------------------- */

void sched_response_headers(const sched *s, bool have_lb, const sched_str *served,
			    sched_add_header_fn add, void *ctx)
{
	static const char hdr[] = "x-conformance-test-served-endpoint";
	for (size_t i = 0; i < s->n_responders; i++) {
		if (!have_lb) {
			static const char v[] = "fail: missing envoy lb metadata";
			add(ctx, hdr, v, sizeof(v) - 1);
		} else if (!served || !served->p) {
			static const char v[] =
				"fail: missing destination endpoint served metadata";
			add(ctx, hdr, v, sizeof(v) - 1);
		} else {
			add(ctx, hdr, served->p, served->len);
		}
	}
}
