/* The resumable body scan behind the early pick (early.h). The state machine
 * is Go's scanner.go, as bj_check runs it, kept in a struct between chunks;
 * hooks on it follow the top-level members and build the skeleton. */
#include "sched/early.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
	ST_BEGIN_VALUE,
	ST_BEGIN_VALUE_OR_EMPTY,
	ST_BEGIN_STRING_OR_EMPTY,
	ST_BEGIN_STRING,
	ST_END_VALUE,
	ST_END_TOP,
	ST_STR,
	ST_STR_ESC,
	ST_U,
	ST_U1,
	ST_U12,
	ST_U123,
	ST_NEG,
	ST_1,
	ST_0,
	ST_DOT,
	ST_DOT0,
	ST_E,
	ST_ESIGN,
	ST_E0,
	ST_T,
	ST_TR,
	ST_TRU,
	ST_F,
	ST_FA,
	ST_FAL,
	ST_FALS,
	ST_N,
	ST_NU,
	ST_NUL,
	ST_ERROR,
};

enum { PS_KEY, PS_VALUE, PS_ARRAY };

/* Which top-level member is being read. */
enum { M_OTHER, M_MODEL, M_FIELD, M_SALT, M_STREAM };

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool in_string(int step)
{
	return step >= ST_STR && step <= ST_U123;
}

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
	e->step = ST_BEGIN_VALUE;
	e->ps = PS_ARRAY;
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
	return e->str_key && e->depth == 1;
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
}

static void str_close(early_scan *e)
{
	skel_put(e, "\"", 1);
	if (collecting_key(e))
		classify_key(e);
}

/* ---- member hooks ---------------------------------------------------------- */

static early_span *span_of(early_scan *e)
{
	switch (e->cur) {
	case M_MODEL: return &e->model;
	case M_FIELD: return &e->input;
	case M_SALT: return &e->salt;
	default: return NULL;
	}
}

/* A value begins at absolute offset |at| with byte |c|. */
static void value_begin(early_scan *e, unsigned char c, size_t at)
{
	if (e->depth == 0) {
		e->top_object = c == '{';
		return;
	}
	if (e->depth != 1 || e->ps != PS_VALUE)
		return;
	if (e->cur == M_STREAM)
		e->stream_val = c == 't';
	early_span *sp = span_of(e);
	if (sp)
		*sp = (early_span){.seen = true, .start = at, .first = (char)c};
}

/* A value ended just before absolute offset |end|; depth and ps are those
 * of the container holding it. */
static void value_end(early_scan *e, size_t end)
{
	if (e->depth != 1 || e->ps != PS_VALUE)
		return;
	if (e->cur == M_STREAM)
		e->stream = e->stream_val;
	early_span *sp = span_of(e);
	if (sp && sp->seen && !sp->done) {
		sp->done = true;
		sp->end = end;
	}
}

/* ---- Go's scanner ---------------------------------------------------------- */

static int sc_error(early_scan *e, unsigned char c, const char *ctx)
{
	e->step = ST_ERROR;
	e->failed = true;
	e->errc = c;
	e->ctx = ctx;
	return -EINVAL;
}

static int sc_push(early_scan *e, unsigned char c, bool object)
{
	if (e->depth >= BJ_MAX_DEPTH)
		return sc_error(e, c, "exceeded max depth");
	if (object)
		e->obj[e->depth / 64] |= 1ULL << (e->depth % 64);
	else
		e->obj[e->depth / 64] &= ~(1ULL << (e->depth % 64));
	e->depth++;
	e->ps = object ? PS_KEY : PS_ARRAY;
	return 0;
}

static void sc_pop(early_scan *e, size_t end)
{
	e->depth--;
	if (e->depth == 0) {
		e->step = ST_END_TOP;
		e->end_top = true;
		return;
	}
	e->step = ST_END_VALUE;
	uint32_t i = e->depth - 1;
	e->ps = (e->obj[i / 64] >> (i % 64)) & 1 ? PS_VALUE : PS_ARRAY;
	value_end(e, end);
}

/* One byte at absolute offset |at| (scanner.go's state functions; a
 * "continue" is one state function calling the next). */
static int sc_step(early_scan *e, unsigned char c, size_t at)
{
	for (;;) {
		switch (e->step) {
		case ST_BEGIN_VALUE_OR_EMPTY:
			if (is_space(c))
				return 0;
			e->step = c == ']' ? ST_END_VALUE : ST_BEGIN_VALUE;
			continue;
		case ST_BEGIN_VALUE:
			if (is_space(c))
				return 0;
			if (c == '{' || c == '[' || c == '"' || c == '-' || c == 't' || c == 'f' ||
			    c == 'n' || (c >= '0' && c <= '9'))
				value_begin(e, c, at);
			switch (c) {
			case '{':
				e->step = ST_BEGIN_STRING_OR_EMPTY;
				return sc_push(e, c, true);
			case '[':
				e->step = ST_BEGIN_VALUE_OR_EMPTY;
				return sc_push(e, c, false);
			case '"': e->step = ST_STR; return 0;
			case '-': e->step = ST_NEG; return 0;
			case '0': e->step = ST_0; return 0;
			case 't': e->step = ST_T; return 0;
			case 'f': e->step = ST_F; return 0;
			case 'n': e->step = ST_N; return 0;
			}
			if (c >= '1' && c <= '9') {
				e->step = ST_1;
				return 0;
			}
			return sc_error(e, c, "looking for beginning of value");
		case ST_BEGIN_STRING_OR_EMPTY:
			if (is_space(c))
				return 0;
			if (c == '}') {
				e->ps = PS_VALUE;
				e->step = ST_END_VALUE;
				continue;
			}
			e->step = ST_BEGIN_STRING;
			continue;
		case ST_BEGIN_STRING:
			if (is_space(c))
				return 0;
			if (c == '"') {
				e->step = ST_STR;
				return 0;
			}
			return sc_error(e, c, "looking for beginning of object key string");
		case ST_END_VALUE:
			if (e->depth == 0) {
				e->step = ST_END_TOP;
				e->end_top = true;
				continue;
			}
			if (is_space(c))
				return 0;
			switch (e->ps) {
			case PS_KEY:
				if (c == ':') {
					e->ps = PS_VALUE;
					e->step = ST_BEGIN_VALUE;
					return 0;
				}
				return sc_error(e, c, "after object key");
			case PS_VALUE:
				if (c == ',') {
					e->ps = PS_KEY;
					e->step = ST_BEGIN_STRING;
					return 0;
				}
				if (c == '}') {
					sc_pop(e, at + 1);
					return 0;
				}
				return sc_error(e, c, "after object key:value pair");
			default:
				if (c == ',') {
					e->step = ST_BEGIN_VALUE;
					return 0;
				}
				if (c == ']') {
					sc_pop(e, at + 1);
					return 0;
				}
				return sc_error(e, c, "after array element");
			}
		case ST_END_TOP:
			if (!is_space(c))
				return sc_error(e, c, "after top-level value");
			return 0;
		case ST_STR:
			if (c == '"') {
				e->step = ST_END_VALUE;
				value_end(e, at + 1);
				return 0;
			}
			if (c == '\\') {
				e->step = ST_STR_ESC;
				return 0;
			}
			if (c < 0x20)
				return sc_error(e, c, "in string literal");
			return 0;
		case ST_STR_ESC:
			switch (c) {
			case 'b': case 'f': case 'n': case 'r': case 't':
			case '\\': case '/': case '"':
				e->step = ST_STR;
				return 0;
			case 'u':
				e->step = ST_U;
				return 0;
			}
			return sc_error(e, c, "in string escape code");
		case ST_U:
		case ST_U1:
		case ST_U12:
		case ST_U123:
			if (!is_hex(c))
				return sc_error(e, c, "in \\u hexadecimal character escape");
			e->step = e->step == ST_U123 ? ST_STR : e->step + 1;
			return 0;
		case ST_NEG:
			if (c == '0') {
				e->step = ST_0;
				return 0;
			}
			if (c >= '1' && c <= '9') {
				e->step = ST_1;
				return 0;
			}
			return sc_error(e, c, "in numeric literal");
		case ST_1:
			if (c >= '0' && c <= '9')
				return 0;
			e->step = ST_0;
			continue;
		case ST_0:
			if (c == '.') {
				e->step = ST_DOT;
				return 0;
			}
			if (c == 'e' || c == 'E') {
				e->step = ST_E;
				return 0;
			}
			e->step = ST_END_VALUE;
			value_end(e, at);
			continue;
		case ST_DOT:
			if (c >= '0' && c <= '9') {
				e->step = ST_DOT0;
				return 0;
			}
			return sc_error(e, c, "after decimal point in numeric literal");
		case ST_DOT0:
			if (c >= '0' && c <= '9')
				return 0;
			if (c == 'e' || c == 'E') {
				e->step = ST_E;
				return 0;
			}
			e->step = ST_END_VALUE;
			value_end(e, at);
			continue;
		case ST_E:
			if (c == '+' || c == '-') {
				e->step = ST_ESIGN;
				return 0;
			}
			e->step = ST_ESIGN;
			continue;
		case ST_ESIGN:
			if (c >= '0' && c <= '9') {
				e->step = ST_E0;
				return 0;
			}
			return sc_error(e, c, "in exponent of numeric literal");
		case ST_E0:
			if (c >= '0' && c <= '9')
				return 0;
			e->step = ST_END_VALUE;
			value_end(e, at);
			continue;
		case ST_T:
		case ST_TR:
		case ST_TRU:
		case ST_F:
		case ST_FA:
		case ST_FAL:
		case ST_FALS:
		case ST_N:
		case ST_NU:
		case ST_NUL: {
			static const struct {
				char want;
				const char *ctx;
			} lit[] = {
				[ST_T] = {'r', "in literal true (expecting 'r')"},
				[ST_TR] = {'u', "in literal true (expecting 'u')"},
				[ST_TRU] = {'e', "in literal true (expecting 'e')"},
				[ST_F] = {'a', "in literal false (expecting 'a')"},
				[ST_FA] = {'l', "in literal false (expecting 'l')"},
				[ST_FAL] = {'s', "in literal false (expecting 's')"},
				[ST_FALS] = {'e', "in literal false (expecting 'e')"},
				[ST_N] = {'u', "in literal null (expecting 'u')"},
				[ST_NU] = {'l', "in literal null (expecting 'l')"},
				[ST_NUL] = {'l', "in literal null (expecting 'l')"},
			};
			if (c != (unsigned char)lit[e->step].want)
				return sc_error(e, c, lit[e->step].ctx);
			if (e->step == ST_TRU || e->step == ST_FALS || e->step == ST_NUL) {
				e->step = ST_END_VALUE;
				value_end(e, at + 1);
			} else {
				e->step++;
			}
			return 0;
		}
		default:
			return -EINVAL;
		}
	}
}

/* Bytes a string's fast path takes without a step: not '"', '\\' or a
 * control character. */
static size_t plain_run(const unsigned char *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\')
		i++;
	return i;
}

/* One byte through the scanner and the skeleton. */
static int feed_byte(early_scan *e, unsigned char c, size_t at)
{
	int prev = e->step;
	bool was_in = in_string(prev);
	if (sc_step(e, c, at) < 0)
		return -EINVAL;
	bool now_in = in_string(e->step);
	if (was_in && now_in)
		str_bytes(e, (const char *)&c, 1);
	else if (!was_in && now_in)
		str_open(e, prev == ST_BEGIN_STRING || prev == ST_BEGIN_STRING_OR_EMPTY);
	else if (was_in)
		str_close(e);
	else if (!is_space(c))
		skel_put(e, (const char *)&c, 1);
	return 0;
}

int early_feed(early_scan *e, const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	if (e->failed)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (e->step == ST_STR) {
			size_t run = plain_run(u + i, n - i);
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

/* Go's quoteChar, as body.c prints it. */
static int quote_char(char *out, size_t cap, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	if (c == '\'')
		return snprintf(out, cap, "'\\''");
	if (c == '"')
		return snprintf(out, cap, "'\"'");
	if (c == '\\')
		return snprintf(out, cap, "'\\\\'");
	if (c >= 0x20 && c < 0x7f)
		return snprintf(out, cap, "'%c'", c);
	switch (c) {
	case '\a': return snprintf(out, cap, "'\\a'");
	case '\b': return snprintf(out, cap, "'\\b'");
	case '\f': return snprintf(out, cap, "'\\f'");
	case '\n': return snprintf(out, cap, "'\\n'");
	case '\r': return snprintf(out, cap, "'\\r'");
	case '\t': return snprintf(out, cap, "'\\t'");
	case '\v': return snprintf(out, cap, "'\\v'");
	}
	if (c < 0x20 || c == 0x7f)
		return snprintf(out, cap, "'\\x%c%c'", hex[c >> 4], hex[c & 15]);
	if (c < 0xa0 || c == 0xa0 || c == 0xad)
		return snprintf(out, cap, "'\\u00%c%c'", hex[c >> 4], hex[c & 15]);
	return snprintf(out, cap, "'%c%c'", 0xc0 | (c >> 6), 0x80 | (c & 0x3f));
}

void early_error(const early_scan *e, char *err, size_t errlen)
{
	if (!e->ctx) {
		snprintf(err, errlen, "unexpected end of JSON input");
		return;
	}
	char q[16];
	quote_char(q, sizeof(q), e->errc);
	snprintf(err, errlen, "invalid character %s %s", q, e->ctx);
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
	if (e->failed || !e->top_object || e->skel_over || e->end_top)
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
	if (!e->failed && !e->end_top) {
		/* Go's scanner.eof(): one space ends a number at the top level. */
		feed_byte(e, ' ', e->off);
	}
	if (e->failed || !e->end_top) {
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
