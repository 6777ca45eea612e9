/* The resumable body scan behind the early pick (early.h). The state machine
 * is jscan, Go's scanner.go as bj_check runs it, kept in the struct between
 * chunks; its state before and after each byte tells where the top-level
 * members begin and end and what goes into the skeleton. */
#include "sched/early.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Which top-level member is being read. */
enum { M_OTHER, M_MODEL, M_FIELD, M_SALT, M_STREAM };

static const char *field_of(enum sched_api api)
{
	switch (api) {
	case SCHED_API_COMPLETIONS: return "prompt";
	case SCHED_API_CHAT: return "messages";
	case SCHED_API_EMBEDDINGS: return "input";
	case SCHED_API_CONVERSATIONS: return "items";
	default: return NULL; /* responses: three members, in any order */
	}
}

void early_init(early_scan *e, enum sched_api api)
{
	char *skel = e->skel;
	size_t scap = e->scap;
	memset(e, 0, sizeof(*e));
	jscan_init(&e->js);
	e->api = api;
	e->field = field_of(api);
	e->skel = skel;
	e->scap = scap;
}

void early_free(early_scan *e)
{
	free(e->skel);
	e->skel = NULL;
	e->scap = e->slen = 0;
}

/* ---- skeleton -------------------------------------------------------------- */

static void skel_put(early_scan *e, const char *p, size_t n)
{
	if (e->skel_over)
		return;
	if (e->slen + n > EARLY_SKEL_MAX) {
		e->skel_over = true;
		return;
	}
	if (e->slen + n > e->scap) {
		size_t cap = e->scap ? e->scap : 1024;
		while (cap < e->slen + n)
			cap *= 2;
		char *q = realloc(e->skel, cap);
		if (!q) {
			e->skel_over = true;
			return;
		}
		e->skel = q;
		e->scap = cap;
	}
	memcpy(e->skel + e->slen, p, n);
	e->slen += n;
}

/* A top-level key being collected (raw, quotes included). */
static bool collecting_key(const early_scan *e)
{
	return e->str_key && e->js.depth == 1;
}

static void str_open(early_scan *e, bool key)
{
	e->str_key = key;
	e->str_elide = false;
	e->str_raw = 0;
	e->sstr = e->slen;
	skel_put(e, "\"", 1);
	if (collecting_key(e)) {
		e->key[0] = '"';
		e->klen = 1;
		e->klong = false;
	}
}

/* String content (between the quotes, escapes raw). Long strings become
 * "x" (a value: keeps its type and non-emptiness) or "" (a key: no field
 * has such a long name). */
static void str_bytes(early_scan *e, const char *p, size_t n)
{
	if (collecting_key(e)) {
		if (e->klen + n + 1 > sizeof(e->key))
			e->klong = true;
		else {
			memcpy(e->key + e->klen, p, n);
			e->klen += n;
		}
	}
	if (e->str_elide)
		return;
	e->str_raw += n;
	if (e->str_raw > EARLY_STR_KEEP) {
		if (!e->skel_over)
			e->slen = e->sstr;
		skel_put(e, e->str_key ? "\"" : "\"x", e->str_key ? 1 : 2);
		e->str_elide = true;
		return;
	}
	skel_put(e, p, n);
}

static early_span *span_of(early_scan *e)
{
	switch (e->cur) {
	case M_MODEL: return &e->model;
	case M_FIELD: return &e->input;
	case M_SALT: return &e->salt;
	default: return NULL;
	}
}

static void classify_key(early_scan *e)
{
	e->cur = M_OTHER;
	if (e->klong)
		return;
	e->key[e->klen++] = '"';
	bj_val k = {e->key, e->klen, BJ_STRING};
	if (bj_str_eq(&k, "model")) {
		e->cur = M_MODEL;
		e->n_model++;
	} else if (bj_str_eq(&k, "stream")) {
		e->cur = M_STREAM;
	} else if (e->field && bj_key_fold(&k, e->field)) {
		e->cur = M_FIELD;
	} else if (bj_key_fold(&k, "cache_salt")) {
		e->cur = M_SALT;
	}
	/* A repeated member replaces the earlier one (Go: the last wins): its
	 * span is unknown again until the new value is read, so a body cut
	 * between the key and its value reports nothing from the old value. */
	early_span *sp = span_of(e);
	if (sp)
		*sp = (early_span){0};
}

static void str_close(early_scan *e)
{
	skel_put(e, "\"", 1);
	if (collecting_key(e))
		classify_key(e);
}

/* ---- member hooks ---------------------------------------------------------- */

/* A value begins at absolute offset |at| with byte |c|, in a container at
 * |depth| in parse state |ps|. */
static void value_begin(early_scan *e, unsigned char c, size_t at, uint32_t depth, int ps)
{
	if (depth == 0) {
		e->top_object = c == '{';
		return;
	}
	if (depth != 1 || ps != JS_PS_VALUE)
		return;
	if (e->cur == M_STREAM)
		e->stream_val = c == 't';
	early_span *sp = span_of(e);
	if (sp)
		*sp = (early_span){.seen = true, .start = at, .first = (char)c};
}

/* A top-level member's value ended just before absolute offset |end|. */
static void member_end(early_scan *e, size_t end)
{
	if (e->cur == M_STREAM)
		e->stream = e->stream_val;
	early_span *sp = span_of(e);
	if (sp && sp->seen && !sp->done) {
		sp->done = true;
		sp->end = end;
	}
}

/* ---- the scan ------------------------------------------------------------- */

/* The scan moved from (pstep, pps, pdepth) to e->js on byte |c| at absolute
 * offset |at|: values begin and top-level member values end. */
static void track(early_scan *e, int pstep, int pps, uint32_t pdepth, unsigned char c, size_t at)
{
	const jscan *s = &e->js;
	if ((pstep == JS_BEGIN_VALUE || pstep == JS_BEGIN_VALUE_OR_EMPTY) &&
	    (s->depth > pdepth || jscan_in_scalar(s->step)))
		value_begin(e, c, at, pdepth, pps);
	/* A number ends before the byte that ends it; anything else with it. */
	if (pdepth == 1 && pps == JS_PS_VALUE && jscan_in_scalar(pstep) &&
	    !jscan_in_scalar(s->step))
		member_end(e, jscan_in_number(pstep) ? at : at + 1);
	else if (pdepth == 2 && s->depth == 1 && s->ps == JS_PS_VALUE)
		member_end(e, at + 1);
}

/* One byte through the scanner and the skeleton. */
static int feed_byte(early_scan *e, unsigned char c, size_t at)
{
	int prev = e->js.step, pps = e->js.ps;
	uint32_t pdepth = e->js.depth;
	if (jscan_step(&e->js, c) < 0) {
		e->failed = true;
		return -EINVAL;
	}
	if (e->js.step != prev || e->js.depth != pdepth)
		track(e, prev, pps, pdepth, c, at);
	bool was_in = jscan_in_string(prev), now_in = jscan_in_string(e->js.step);
	if (was_in && now_in)
		str_bytes(e, (const char *)&c, 1);
	else if (!was_in && now_in)
		str_open(e, prev == JS_BEGIN_STRING || prev == JS_BEGIN_STRING_OR_EMPTY);
	else if (was_in)
		str_close(e);
	else if (!jscan_is_space(c))
		skel_put(e, (const char *)&c, 1);
	return 0;
}

int early_feed(early_scan *e, const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	if (e->failed)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (e->js.step == JS_STR) {
			size_t run = jscan_str_run(u + i, n - i);
			if (run) {
				str_bytes(e, p + i, run);
				i += run;
				if (i == n)
					break;
			}
		}
		if (feed_byte(e, u[i], e->off + i) < 0) {
			e->off += i;
			return -EINVAL;
		}
	}
	e->off += n;
	return 0;
}

void early_error(const early_scan *e, char *err, size_t errlen)
{
	jscan_error(&e->js, err, errlen);
}

/* ---- facts ----------------------------------------------------------------- */

static enum bj_type type_of(char c)
{
	switch (c) {
	case '"': return BJ_STRING;
	case '[': return BJ_ARRAY;
	case '{': return BJ_OBJECT;
	case 't': case 'f': return BJ_BOOL;
	case 'n': return BJ_NULL;
	default: return BJ_NUMBER;
	}
}

static bj_val span_val(const early_span *sp, const char *body)
{
	return (bj_val){body + sp->start, sp->end - sp->start, type_of(sp->first)};
}

/* The hashed member has the type the API's validation wants (else the full
 * path decides, and answers its error). */
static bool field_type_ok(enum sched_api api, char first)
{
	switch (api) {
	case SCHED_API_COMPLETIONS: return first == '"';
	case SCHED_API_CHAT:
	case SCHED_API_CONVERSATIONS: return first == '[';
	default: return first != 'n';
	}
}

/* A prompt string cut short and closed with '"' (arena copy), when its
 * decoding is known for |budget| bytes. The last rune or escape before the
 * cut may decode differently once the rest arrives (a UTF-8 sequence or a
 * surrogate pair cut in two); the margin covers it. Only the first raw bytes
 * that can matter are copied: an escape decodes to at least one byte per six. */
#define CUT_MARGIN 16

static bool partial_prompt(const early_scan *e, const char *body, size_t budget, arena *a,
			   bj_val *out)
{
	if (budget > SIZE_MAX / 8)
		return false; /* no bound: the whole prompt is needed */
	size_t start = e->input.start, want = budget + CUT_MARGIN;
	size_t limit = e->off;
	if (limit - start < want)
		return false; /* only invalid UTF-8 decodes longer: waiting is harmless */
	if (limit - start > 6 * want + 16)
		limit = start + 6 * want + 16;
	/* The last escape boundary at or before |limit|. */
	size_t cut = start + 1;
	while (cut < limit) {
		size_t step = 1;
		if (body[cut] == '\\')
			step = cut + 1 < limit && body[cut + 1] == 'u' ? 6 : 2;
		if (cut + step > limit)
			break;
		cut += step;
	}
	size_t n = cut - start;
	char *q = arena_alloc(a, n + 1);
	char *dec = arena_alloc(a, want + 8);
	if (!q || !dec)
		return false;
	memcpy(q, body + start, n);
	q[n] = '"';
	*out = (bj_val){q, n + 1, BJ_STRING};
	return bj_unquote_n(out, dec, want) >= want;
}

bool early_facts(const early_scan *e, const char *body, size_t budget, arena *a, body_req *out)
{
	memset(out, 0, sizeof(*out));
	if (e->failed || !e->top_object || e->skel_over || e->js.end_top)
		return false;
	if (!e->model.done || e->model.first != '"')
		return false;
	if (e->salt.seen && !e->salt.done)
		return false;
	out->model = span_val(&e->model, body);
	out->stream = e->stream;
	if (e->salt.done)
		out->cache_salt = span_val(&e->salt, body);
	if (budget == 0)
		return true;
	if (!e->field || !e->input.seen || !field_type_ok(e->api, e->input.first))
		return false;
	bj_val v;
	if (e->input.done) {
		v = span_val(&e->input, body);
	} else if (e->api == SCHED_API_COMPLETIONS) {
		if (!partial_prompt(e, body, budget, a, &v))
			return false;
	} else {
		/* Structured inputs are hashed as the client's JSON text. */
		if (e->off - e->input.start < budget)
			return false;
		v = (bj_val){body + e->input.start, e->off - e->input.start,
			     type_of(e->input.first)};
	}
	switch (e->api) {
	case SCHED_API_COMPLETIONS: out->prompt = v; break;
	case SCHED_API_CHAT: out->messages = v; break;
	case SCHED_API_EMBEDDINGS: out->input = v; break;
	case SCHED_API_CONVERSATIONS: out->items = v; break;
	default: return false;
	}
	return true;
}

int early_finish(early_scan *e, bool *checked, bool *model_ok, char *err, size_t errlen)
{
	static const char pfx[] = "error unmarshaling request bodyMap: ";
	*checked = false;
	*model_ok = false;
	if (e->failed || jscan_eof(&e->js) < 0) {
		char goerr[128];
		early_error(e, goerr, sizeof(goerr));
		snprintf(err, errlen, "%s%s", pfx, goerr);
		return -EINVAL;
	}
	*model_ok = e->model.done && e->model.first == '"';
	if (e->skel_over)
		return 0;
	body_req br;
	if (body_parse_request(e->skel, e->slen, e->api, &br, err, errlen) < 0)
		return -EINVAL;
	*checked = true;
	*model_ok = br.model.t == BJ_STRING;
	return 0;
}
