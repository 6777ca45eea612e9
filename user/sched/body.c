/* A bounded JSON scanner that answers like the reference EPP's Go
 * encoding/json: checkValid's state machine byte for byte (same error texts,
 * same nesting limit), Unmarshal's type errors, Go's string decoding and
 * struct-field matching. No tree is built and nothing is allocated except
 * decoded strings the caller asks for.
 */
#include "sched/body.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Go's checkValid is jscan (jscan.h); these are the other passes. */

static inline bool is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* ---- string runs, eight bytes at a time ------------------------------------- */

/* Prompts are most of a body, so every pass over string contents goes
 * through these (bj_check's through jscan_str_run). */

/* Length of the run at p without '"' or '\\' (inside checked text). */
static size_t run_no_quote(const unsigned char *p, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v = jscan_load8(p + i);
		uint64_t m = jscan_eq_bytes(v, '"') | jscan_eq_bytes(v, '\\');
		if (m)
			return i + jscan_first_flag(m);
	}
	while (i < n && p[i] != '"' && p[i] != '\\')
		i++;
	return i;
}

/* Length of the run at p of ASCII bytes other than '\\': decoding copies
 * them as they are. */
static size_t run_ascii_plain(const unsigned char *p, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v = jscan_load8(p + i);
		uint64_t m = jscan_eq_bytes(v, '\\') | (v & JSCAN_HIGHS);
		if (m)
			return i + jscan_first_flag(m);
	}
	while (i < n && p[i] < 0x80 && p[i] != '\\')
		i++;
	return i;
}

/* What one checking pass records besides validity, for body_parse_request:
 * each top-level member, handed to |member| as it ends (its text is then
 * checked), and the first number that does not fit a float64. */
struct walk {
	const char *p;
	void (*member)(void *ctx, const bj_val *key, const bj_val *val);
	void *ctx;
	size_t key_at, key_end, val_at, num_at;
	bool big_found;
	bj_val big;
};

/* A number of at most 308 characters without an exponent is below 1e308:
 * only longer ones and exponents go through strtod. */
static void walk_number(struct walk *w, size_t end)
{
	const char *q = w->p + w->num_at;
	size_t len = end - w->num_at;
	if (w->big_found || (len <= 308 && !memchr(q, 'e', len) && !memchr(q, 'E', len)))
		return;
	if (bj_float_overflows(q, len)) {
		w->big_found = true;
		w->big = (bj_val){q, len, BJ_NUMBER};
	}
}

/* The scan moved from (pstep, pps, pdepth) to |s| on byte i. */
static void walk_step(struct walk *w, const jscan *s, int pstep, int pps, uint32_t pdepth,
		      size_t i)
{
	bool was_num = jscan_in_number(pstep), is_num = jscan_in_number(s->step);
	if (!was_num && is_num)
		w->num_at = i;
	else if (was_num && !is_num)
		walk_number(w, i);
	if (pdepth != 1)
		return;
	if (pps == JS_PS_KEY) {
		if ((pstep == JS_BEGIN_STRING || pstep == JS_BEGIN_STRING_OR_EMPTY) &&
		    s->step == JS_STR)
			w->key_at = i;
		else if (pstep == JS_STR && s->step == JS_END_VALUE)
			w->key_end = i + 1;
		return;
	}
	if (pps != JS_PS_VALUE)
		return;
	if (pstep == JS_BEGIN_VALUE && s->step != JS_BEGIN_VALUE) {
		w->val_at = i;
	} else if (s->depth == 0 || (s->depth == 1 && s->ps == JS_PS_KEY)) {
		/* ',' or '}' after the value: it ends at its last non-space byte. */
		size_t end = i;
		while (end > w->val_at && jscan_is_space((unsigned char)w->p[end - 1]))
			end--;
		bj_val k = {w->p + w->key_at, w->key_end - w->key_at, BJ_STRING};
		bj_val v = {w->p + w->val_at, end - w->val_at, BJ_NONE};
		switch (w->p[w->val_at]) {
		case '"': v.t = BJ_STRING; break;
		case '{': v.t = BJ_OBJECT; break;
		case '[': v.t = BJ_ARRAY; break;
		case 't': case 'f': v.t = BJ_BOOL; break;
		case 'n': v.t = BJ_NULL; break;
		default: v.t = BJ_NUMBER; break;
		}
		w->member(w->ctx, &k, &v);
	}
}

/* Go's checkValid over p[0..n); with |w|, the same pass also walks the
 * document for body_parse_request (no second pass over the body). */
static int check_walk(const char *p, size_t n, char *err, size_t errlen, struct walk *w)
{
	jscan s;
	jscan_init(&s);
	const unsigned char *u = (const unsigned char *)p;
	for (size_t i = 0; i < n; i++) {
		/* Fast path through string bodies. */
		if (s.step == JS_STR) {
			i += jscan_str_run(u + i, n - i);
			if (i == n)
				break;
		}
		int pstep = s.step, pps = s.ps;
		uint32_t pdepth = s.depth;
		if (jscan_step(&s, u[i]) < 0) {
			jscan_error(&s, err, errlen);
			return -EINVAL;
		}
		if (w && (s.step != pstep || s.depth != pdepth))
			walk_step(w, &s, pstep, pps, pdepth, i);
	}
	if (jscan_eof(&s) == 0)
		return 0;
	jscan_error(&s, err, errlen);
	return -EINVAL;
}

int bj_check(const char *p, size_t n, char *err, size_t errlen)
{
	return check_walk(p, n, err, errlen, NULL);
}

/* ---- walking checked text ------------------------------------------------- */

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && jscan_is_space((unsigned char)*p))
		p++;
	return p;
}

static const char *skip_string(const char *p, const char *end)
{
	for (p++; p < end; p++) {
		p += run_no_quote((const unsigned char *)p, (size_t)(end - p));
		if (p >= end)
			break;
		if (*p == '\\')
			p++;
		else
			return p + 1;
	}
	return end;
}

static enum bj_type type_of(char c)
{
	switch (c) {
	case '"': return BJ_STRING;
	case '{': return BJ_OBJECT;
	case '[': return BJ_ARRAY;
	case 't': case 'f': return BJ_BOOL;
	case 'n': return BJ_NULL;
	default: return BJ_NUMBER;
	}
}

static const char *skip_value(const char *p, const char *end)
{
	if (p >= end)
		return end;
	switch (*p) {
	case '"':
		return skip_string(p, end);
	case '{':
	case '[': {
		size_t depth = 0;
		while (p < end) {
			char c = *p;
			if (c == '"') {
				p = skip_string(p, end);
				continue;
			}
			if (c == '{' || c == '[') {
				depth++;
			} else if (c == '}' || c == ']') {
				if (--depth == 0)
					return p + 1;
			}
			p++;
		}
		return end;
	}
	default:
		while (p < end && (*p == '-' || *p == '+' || *p == '.' ||
				   (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
				   (*p >= 'A' && *p <= 'Z')))
			p++;
		return p;
	}
}

static bj_val value_at(const char *p, const char *end)
{
	bj_val v = {p, 0, BJ_NONE};
	if (p >= end)
		return v;
	v.t = type_of(*p);
	v.n = (size_t)(skip_value(p, end) - p);
	return v;
}

bj_val bj_value(const char *p, size_t n)
{
	const char *end = p + n;
	return value_at(skip_ws(p, end), end);
}

void bj_iter_init(bj_iter *it, const bj_val *c)
{
	it->p = c->p + 1;
	it->end = c->n >= 2 ? c->p + c->n - 1 : it->p;
	it->first = true;
}

static bool iter_advance(bj_iter *it)
{
	it->p = skip_ws(it->p, it->end);
	if (it->p >= it->end)
		return false;
	if (!it->first && *it->p == ',')
		it->p = skip_ws(it->p + 1, it->end);
	it->first = false;
	return it->p < it->end;
}

bool bj_obj_next(bj_iter *it, bj_val *key, bj_val *val)
{
	if (!iter_advance(it))
		return false;
	*key = value_at(it->p, it->end);
	it->p = skip_ws(it->p + key->n, it->end);
	if (it->p < it->end && *it->p == ':')
		it->p++;
	it->p = skip_ws(it->p, it->end);
	*val = value_at(it->p, it->end);
	it->p += val->n;
	return key->t == BJ_STRING && val->t != BJ_NONE;
}

bool bj_arr_next(bj_iter *it, bj_val *elem)
{
	if (!iter_advance(it))
		return false;
	*elem = value_at(it->p, it->end);
	it->p += elem->n;
	return elem->t != BJ_NONE;
}

/* ---- strings ---------------------------------------------------------------- */

static unsigned hex4(const unsigned char *p)
{
	unsigned r = 0;
	for (int i = 0; i < 4; i++) {
		unsigned c = p[i];
		r <<= 4;
		if (c >= '0' && c <= '9')
			r |= c - '0';
		else if (c >= 'a' && c <= 'f')
			r |= c - 'a' + 10;
		else
			r |= c - 'A' + 10;
	}
	return r;
}

static size_t put_utf8(char *out, unsigned r)
{
	if (r < 0x80) {
		out[0] = (char)r;
		return 1;
	}
	if (r < 0x800) {
		out[0] = (char)(0xc0 | (r >> 6));
		out[1] = (char)(0x80 | (r & 0x3f));
		return 2;
	}
	if (r < 0x10000) {
		out[0] = (char)(0xe0 | (r >> 12));
		out[1] = (char)(0x80 | ((r >> 6) & 0x3f));
		out[2] = (char)(0x80 | (r & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (r >> 18));
	out[1] = (char)(0x80 | ((r >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((r >> 6) & 0x3f));
	out[3] = (char)(0x80 | (r & 0x3f));
	return 4;
}

/* Length of the valid UTF-8 sequence at p (as Go's utf8.DecodeRune accepts
 * it), or 0 when invalid; *rune gets its value. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end, unsigned *rune)
{
	unsigned c = p[0];
	size_t avail = (size_t)(end - p);
	unsigned lo = 0x80, hi = 0xbf;
	size_t len;
	if (c < 0x80) {
		*rune = c;
		return 1;
	} else if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (avail < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	if (len == 2)
		*rune = ((c & 0x1f) << 6) | (p[1] & 0x3f);
	else if (len == 3)
		*rune = ((c & 0x0f) << 12) | ((p[1] & 0x3fu) << 6) | (p[2] & 0x3f);
	else
		*rune = ((c & 0x07) << 18) | ((p[1] & 0x3fu) << 12) | ((p[2] & 0x3fu) << 6) |
			(p[3] & 0x3f);
	return len;
}

size_t bj_unquote_n(const bj_val *s, char *out, size_t max_out)
{
	if (s->t != BJ_STRING || s->n < 2)
		return 0;
	const unsigned char *p = (const unsigned char *)s->p + 1;
	const unsigned char *end = (const unsigned char *)s->p + s->n - 1;
	size_t o = 0;
	while (p < end && o < max_out) {
		size_t run = run_ascii_plain(p, (size_t)(end - p));
		if (run) {
			if (run > max_out - o)
				run = max_out - o;
			memcpy(out + o, p, run);
			o += run;
			p += run;
			continue;
		}
		unsigned c = *p;
		if (c == '\\' && end - p >= 2) {
			c = p[1];
			p += 2;
			switch (c) {
			case 'b': out[o++] = '\b'; break;
			case 'f': out[o++] = '\f'; break;
			case 'n': out[o++] = '\n'; break;
			case 'r': out[o++] = '\r'; break;
			case 't': out[o++] = '\t'; break;
			case 'u': {
				if (end - p < 4) {
					p = end;
					break;
				}
				unsigned r = hex4(p);
				p += 4;
				if (r >= 0xd800 && r < 0xe000) {
					/* A surrogate: only a high one followed by an
					 * escaped low one makes a pair; else U+FFFD. */
					if (r < 0xdc00 && end - p >= 6 && p[0] == '\\' &&
					    p[1] == 'u' && is_hex(p[2]) && is_hex(p[3]) &&
					    is_hex(p[4]) && is_hex(p[5])) {
						unsigned r2 = hex4(p + 2);
						if (r2 >= 0xdc00 && r2 < 0xe000) {
							r = 0x10000 + ((r - 0xd800) << 10) +
							    (r2 - 0xdc00);
							p += 6;
							o += put_utf8(out + o, r);
							break;
						}
					}
					r = 0xfffd;
				}
				o += put_utf8(out + o, r);
				break;
			}
			default:
				out[o++] = (char)c;
				break;
			}
			continue;
		}
		if (c < 0x80) {
			out[o++] = (char)c;
			p++;
			continue;
		}
		unsigned r;
		size_t l = utf8_seq(p, end, &r);
		if (!l) {
			o += put_utf8(out + o, 0xfffd);
			p++;
			continue;
		}
		memcpy(out + o, p, l);
		o += l;
		p += l;
	}
	return o;
}

size_t bj_unquote(const bj_val *s, char *out)
{
	return bj_unquote_n(s, out, SIZE_MAX);
}

char *bj_unquote_dup(const bj_val *s, arena *a, size_t *len)
{
	char *out = arena_alloc(a, 3 * s->n + 1);
	if (!out)
		return NULL;
	size_t n = bj_unquote(s, out);
	out[n] = '\0';
	if (len)
		*len = n;
	return out;
}

/* Names compared here are short; longer keys cannot decode to them. */
#define KEY_MAX 48

static size_t decode_key(const bj_val *s, size_t name_len, char *buf)
{
	if (s->t != BJ_STRING || s->n > 6 * name_len + 2 || name_len > KEY_MAX)
		return (size_t)-1;
	return bj_unquote(s, buf);
}

static unsigned char ascii_upper(unsigned char c)
{
	return c >= 'a' && c <= 'z' ? (unsigned char)(c - ('a' - 'A')) : c;
}

/* Keys without escapes and non-ASCII bytes (nearly all) decode to
 * themselves: compared raw, 1 equal, 0 not; -1 for the others, which are
 * decoded. |fold|: ASCII letters of either case match, as Go's folding does
 * for ASCII runes. */
static int plain_key_eq(const bj_val *s, const char *name, size_t nl, bool fold)
{
	if (s->t != BJ_STRING || s->n < 2)
		return -1;
	const unsigned char *p = (const unsigned char *)s->p + 1;
	size_t n = s->n - 2;
	for (size_t i = 0; i < n; i++)
		if (p[i] == '\\' || p[i] >= 0x80)
			return -1;
	if (n != nl)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char a = p[i], b = (unsigned char)name[i];
		if (fold ? ascii_upper(a) != ascii_upper(b) : a != b)
			return 0;
	}
	return 1;
}

bool bj_str_eq(const bj_val *s, const char *name)
{
	char buf[3 * (6 * KEY_MAX + 2)];
	size_t nl = strlen(name);
	int plain = plain_key_eq(s, name, nl, false);
	if (plain >= 0)
		return plain;
	size_t n = decode_key(s, nl, buf);
	return n == nl && memcmp(buf, name, nl) == 0;
}

bool bj_key_fold(const bj_val *s, const char *name)
{
	char buf[3 * (6 * KEY_MAX + 2)];
	size_t nl = strlen(name);
	int plain = plain_key_eq(s, name, nl, true);
	if (plain >= 0)
		return plain;
	size_t n = decode_key(s, nl, buf);
	if (n == (size_t)-1)
		return false;
	const unsigned char *p = (const unsigned char *)buf, *end = p + n;
	size_t i = 0;
	while (p < end) {
		unsigned r;
		size_t l = utf8_seq(p, end, &r);
		if (!l)
			return false;
		p += l;
		/* Go folds with ToUpper(ToLower(r)); these are the non-ASCII runes
		 * that land on ASCII letters. */
		if (r >= 'a' && r <= 'z')
			r -= 'a' - 'A';
		else if (r == 0x130 || r == 0x131)
			r = 'I';
		else if (r == 0x17f)
			r = 'S';
		else if (r == 0x212a)
			r = 'K';
		else if (r >= 0x80)
			return false;
		if (i >= nl)
			return false;
		unsigned c = (unsigned char)name[i++];
		if (c >= 'a' && c <= 'z')
			c -= 'a' - 'A';
		if (r != c)
			return false;
	}
	return i == nl;
}

size_t bj_quote(const char *s, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	size_t o = 0;
	out[o++] = '"';
	while (p < end) {
		unsigned c = *p;
		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			out[o++] = (char)c;
			p++;
			continue;
		}
		if (c < 0x80) {
			out[o++] = '\\';
			switch (c) {
			case '"': out[o++] = '"'; break;
			case '\\': out[o++] = '\\'; break;
			case '\b': out[o++] = 'b'; break;
			case '\f': out[o++] = 'f'; break;
			case '\n': out[o++] = 'n'; break;
			case '\r': out[o++] = 'r'; break;
			case '\t': out[o++] = 't'; break;
			default:
				memcpy(out + o, "u00", 3);
				o += 3;
				out[o++] = hex[c >> 4];
				out[o++] = hex[c & 15];
			}
			p++;
			continue;
		}
		unsigned r;
		size_t l = utf8_seq(p, end, &r);
		if (!l) {
			memcpy(out + o, "\\ufffd", 6);
			o += 6;
			p++;
			continue;
		}
		if (r == 0x2028 || r == 0x2029) {
			memcpy(out + o, r == 0x2028 ? "\\u2028" : "\\u2029", 6);
			o += 6;
		} else {
			memcpy(out + o, p, l);
			o += l;
		}
		p += l;
	}
	out[o++] = '"';
	return o;
}

/* ---- numbers ---------------------------------------------------------------- */

/* Rewrites a JSON number as "-0.<digits>e<exp>" with at most NUM_DIGITS
 * significant digits plus a sticky digit, which is enough for strtod to round
 * exactly as it would on the full text. */
#define NUM_DIGITS 800

static double num_value(const char *p, size_t n)
{
	char buf[NUM_DIGITS + 40];
	const char *end = p + n;
	size_t o = 0;
	bool neg = false, sticky = false, any = false;
	long long exp10 = 0;
	if (p < end && *p == '-') {
		neg = true;
		p++;
	}
	if (neg)
		buf[o++] = '-';
	buf[o++] = '0';
	buf[o++] = '.';
	size_t ndig = 0;
	bool in_frac = false;
	for (; p < end; p++) {
		char c = *p;
		if (c == '.') {
			in_frac = true;
			continue;
		}
		if (c < '0' || c > '9')
			break;
		if (!any && c == '0') {
			/* Leading zeros shift the point in a fraction only. */
			if (in_frac)
				exp10--;
			continue;
		}
		any = true;
		if (!in_frac)
			exp10++;
		if (ndig < NUM_DIGITS) {
			buf[o++] = c;
			ndig++;
		} else if (c != '0') {
			sticky = true;
		}
	}
	if (!any)
		return neg ? -0.0 : 0.0;
	if (sticky)
		buf[o++] = '1';
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		bool eneg = false;
		if (p < end && (*p == '+' || *p == '-'))
			eneg = *p++ == '-';
		long long e = 0;
		for (; p < end && *p >= '0' && *p <= '9'; p++)
			if (e < 100000000)
				e = e * 10 + (*p - '0');
		exp10 += eneg ? -e : e;
	}
	if (exp10 > 100000000)
		exp10 = 100000000;
	if (exp10 < -100000000)
		exp10 = -100000000;
	snprintf(buf + o, sizeof(buf) - o, "e%lld", exp10);
	return strtod(buf, NULL);
}

bool bj_float_overflows(const char *p, size_t n)
{
	return isinf(num_value(p, n));
}

double bj_double(const bj_val *v)
{
	return v->t == BJ_NUMBER ? num_value(v->p, v->n) : 0;
}

bool bj_int64(const bj_val *v, int64_t *out)
{
	if (v->t != BJ_NUMBER)
		return false;
	const char *p = v->p, *end = v->p + v->n;
	bool neg = false;
	if (p < end && *p == '-') {
		neg = true;
		p++;
	}
	if (p == end)
		return false;
	uint64_t acc = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return false;
		unsigned d = (unsigned)(*p - '0');
		if (acc > (lim - d) / 10)
			return false;
		acc = acc * 10 + d;
	}
	*out = neg ? (int64_t)(0 - acc) : (int64_t)acc;
	return true;
}

/* ---- request body (openai-parser) ---------------------------------------- */

/* The first number in a checked document that does not fit a float64 (Go
 * decodes every number of the map into float64 and reports the first). */
static bool first_overflow(const char *p, size_t n, bj_val *num)
{
	const char *end = p + n;
	while (p < end) {
		char c = *p;
		if (c == '"') {
			p = skip_string(p, end);
			continue;
		}
		if (c == '-' || (c >= '0' && c <= '9')) {
			const char *e = skip_value(p, end);
			if (bj_float_overflows(p, (size_t)(e - p))) {
				num->p = p;
				num->n = (size_t)(e - p);
				num->t = BJ_NUMBER;
				return true;
			}
			p = e;
			continue;
		}
		p++;
	}
	return false;
}

bool bj_has_overflow(const bj_val *v)
{
	bj_val num;
	return first_overflow(v->p, v->n, &num);
}

/* Typed checks mirror the Go structs the parser unmarshals into
 * (framework/interface/scheduling/types.go): a value of the wrong JSON type
 * for its field makes Unmarshal fail, which fails the API validation. */
typedef bool (*chk_fn)(const bj_val *v);

struct field {
	const char *name;
	chk_fn chk;
};

static bool chk_any(const bj_val *v)
{
	(void)v;
	return true;
}

static bool chk_string(const bj_val *v)
{
	return v->t == BJ_STRING || v->t == BJ_NULL;
}

static bool chk_bool(const bj_val *v)
{
	return v->t == BJ_BOOL || v->t == BJ_NULL;
}

static bool chk_slice(const bj_val *v)
{
	return v->t == BJ_ARRAY || v->t == BJ_NULL;
}

static bool chk_map(const bj_val *v)
{
	return v->t == BJ_OBJECT || v->t == BJ_NULL;
}

static bool chk_struct(const bj_val *v, const struct field *f, size_t nf)
{
	if (v->t == BJ_NULL)
		return true;
	if (v->t != BJ_OBJECT)
		return false;
	bj_iter it;
	bj_val k, val;
	bj_iter_init(&it, v);
	while (bj_obj_next(&it, &k, &val))
		for (size_t i = 0; i < nf; i++)
			if (bj_key_fold(&k, f[i].name)) {
				if (!f[i].chk(&val))
					return false;
				break;
			}
	return true;
}

/* A slice of elements; counts them (a JSON null slice has none). */
static bool chk_slice_of(const bj_val *v, chk_fn elem, size_t *count)
{
	size_t n = 0;
	if (v->t == BJ_ARRAY) {
		bj_iter it;
		bj_val e;
		bj_iter_init(&it, v);
		while (bj_arr_next(&it, &e)) {
			if (!elem(&e))
				return false;
			n++;
		}
	} else if (v->t != BJ_NULL) {
		return false;
	}
	if (count)
		*count = n;
	return true;
}

static const struct field url_fields[] = {{"url", chk_string}};
static const struct field audio_fields[] = {{"data", chk_string}, {"format", chk_string}};

static bool chk_url_block(const bj_val *v)
{
	return chk_struct(v, url_fields, 1);
}

static bool chk_audio_block(const bj_val *v)
{
	return chk_struct(v, audio_fields, 2);
}

static const struct field block_fields[] = {
	{"type", chk_string},
	{"text", chk_string},
	{"image_url", chk_url_block},
	{"input_audio", chk_audio_block},
	{"video_url", chk_url_block},
};

static bool chk_block(const bj_val *v)
{
	return chk_struct(v, block_fields, 5);
}

/* Content.UnmarshalJSON: a string (or null), else a []ContentBlock. */
static bool chk_content(const bj_val *v)
{
	if (v->t == BJ_STRING || v->t == BJ_NULL)
		return true;
	return v->t == BJ_ARRAY && chk_slice_of(v, chk_block, NULL);
}

static const struct field message_fields[] = {{"role", chk_string}, {"content", chk_content}};

static bool chk_message(const bj_val *v)
{
	return chk_struct(v, message_fields, 2);
}

static const struct field item_fields[] = {
	{"type", chk_string},
	{"role", chk_string},
	{"content", chk_any},
};

static bool chk_item(const bj_val *v)
{
	return chk_struct(v, item_fields, 3);
}

static bool chk_prompt_elem(const bj_val *v)
{
	return v->t == BJ_STRING || v->t == BJ_NULL;
}

/* What the typed decode leaves behind, field by field, in member order. */
struct typed {
	bool ok;
	bool prompt_raw;       /* Prompt.Raw != "" */
	size_t prompt_strings; /* len(Prompt.Strings) */
	size_t n_messages, n_items;
	bool input_set;
};

static void typed_member(struct typed *t, enum sched_api api, const bj_val *k, const bj_val *v)
{
	if (bj_key_fold(k, "cache_salt")) {
		t->ok &= chk_string(v);
		return;
	}
	switch (api) {
	case SCHED_API_COMPLETIONS:
		if (!bj_key_fold(k, "prompt"))
			return;
		/* Prompt.UnmarshalJSON keeps the other form from an earlier
		 * duplicate member, as Go does. */
		if (v->t == BJ_STRING)
			t->prompt_raw = v->n > 2;
		else if (v->t == BJ_ARRAY)
			t->ok &= chk_slice_of(v, chk_prompt_elem, &t->prompt_strings);
		else
			t->ok = false;
		return;
	case SCHED_API_CHAT:
		if (bj_key_fold(k, "messages"))
			t->ok &= chk_slice_of(v, chk_message, &t->n_messages);
		else if (bj_key_fold(k, "tools") || bj_key_fold(k, "documents"))
			t->ok &= chk_slice(v);
		else if (bj_key_fold(k, "chat_template"))
			t->ok &= chk_string(v);
		else if (bj_key_fold(k, "return_assistant_tokens_mask") ||
			 bj_key_fold(k, "continue_final_message") ||
			 bj_key_fold(k, "add_generation_prompt"))
			t->ok &= chk_bool(v);
		else if (bj_key_fold(k, "chat_template_kwargs"))
			t->ok &= chk_map(v);
		return;
	case SCHED_API_RESPONSES:
	case SCHED_API_EMBEDDINGS:
		if (bj_key_fold(k, "input"))
			t->input_set = v->t != BJ_NULL;
		return;
	case SCHED_API_CONVERSATIONS:
		if (bj_key_fold(k, "items"))
			t->ok &= chk_slice_of(v, chk_item, &t->n_items);
		else if (bj_key_fold(k, "metadata"))
			t->ok &= chk_map(v);
		return;
	}
}

static void record_span(body_req *r, const bj_val *k, const bj_val *v)
{
	static const struct {
		const char *name;
		size_t off;
	} spans[] = {
		{"prompt", offsetof(body_req, prompt)},
		{"messages", offsetof(body_req, messages)},
		{"input", offsetof(body_req, input)},
		{"items", offsetof(body_req, items)},
		{"instructions", offsetof(body_req, instructions)},
		{"tools", offsetof(body_req, tools)},
		{"cache_salt", offsetof(body_req, cache_salt)},
	};
	for (size_t i = 0; i < sizeof(spans) / sizeof(spans[0]); i++)
		if (bj_key_fold(k, spans[i].name)) {
			*(bj_val *)((char *)r + spans[i].off) = *v;
			return;
		}
}

static const char *type_name(enum bj_type t)
{
	switch (t) {
	case BJ_STRING: return "string";
	case BJ_NUMBER: return "number";
	case BJ_BOOL: return "bool";
	case BJ_ARRAY: return "array";
	default: return "object";
	}
}

struct parse {
	body_req *out;
	struct typed t;
	enum sched_api api;
};

static void parse_member(void *ctx, const bj_val *k, const bj_val *v)
{
	struct parse *ps = ctx;
	if (bj_str_eq(k, "model"))
		ps->out->model = *v;
	else if (bj_str_eq(k, "stream"))
		ps->out->stream = v->t == BJ_BOOL && v->p[0] == 't';
	record_span(ps->out, k, v);
	if (ps->t.ok)
		typed_member(&ps->t, ps->api, k, v);
}

int body_parse_request(const char *p, size_t n, enum sched_api api, body_req *out, char *err,
		       size_t errlen)
{
	static const char pfx[] = "error unmarshaling request bodyMap: ";
	char goerr[256];
	memset(out, 0, sizeof(*out));
	/* One pass checks the syntax, finds the first float64 overflow and
	 * hands each top-level member to parse_member; the errors keep Go's
	 * order (syntax, type of the document, overflow, typed fields). */
	struct parse ps = {.out = out, .t = {.ok = true}, .api = api};
	struct walk w = {.p = p, .member = parse_member, .ctx = &ps};
	if (check_walk(p, n, goerr, sizeof(goerr), &w) < 0) {
		memset(out, 0, sizeof(*out));
		snprintf(err, errlen, "%s%s", pfx, goerr);
		return -EINVAL;
	}
	const char *first = skip_ws(p, p + n);
	enum bj_type top = type_of(*first);
	if (top != BJ_OBJECT && top != BJ_NULL) {
		snprintf(
			err, errlen,
			"%sjson: cannot unmarshal %s into Go value of type map[string]interface {}",
			pfx, type_name(top));
		return -EINVAL;
	}
	if (top == BJ_OBJECT && w.big_found) {
		memset(out, 0, sizeof(*out));
		snprintf(err, errlen,
			 "%sjson: cannot unmarshal number %.*s into Go value of type float64", pfx,
			 (int)(w.big.n > 4096 ? 4096 : w.big.n), w.big.p);
		return -EINVAL;
	}
	const struct typed t = ps.t;
	const char *msg = NULL;
	switch (api) {
	case SCHED_API_CONVERSATIONS:
		if (!t.ok || t.n_items == 0)
			msg = "invalid conversations request: must have items field";
		break;
	case SCHED_API_RESPONSES:
		if (!t.ok || !t.input_set)
			msg = "invalid responses request: must have input field";
		break;
	case SCHED_API_CHAT:
		if (!t.ok || t.n_messages == 0)
			msg = "invalid chat completions request: must have valid messages field";
		break;
	case SCHED_API_COMPLETIONS:
		if (!t.ok || (!t.prompt_raw && t.prompt_strings == 0))
			msg = "invalid completions request: must have prompt field";
		break;
	case SCHED_API_EMBEDDINGS:
		if (!t.ok || !t.input_set)
			msg = "invalid embeddings request: must have input field";
		break;
	}
	if (msg) {
		snprintf(err, errlen, "%s", msg);
		return -EINVAL;
	}
	return 0;
}

int body_rewrite_model(const char *p, size_t n, const bj_val *model, const char *target,
		       size_t tlen, arena *a, const char **out, size_t *outlen)
{
	size_t pre = (size_t)(model->p - p);
	size_t post = n - pre - model->n;
	char *buf = arena_alloc(a, pre + 6 * tlen + 2 + post + 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, p, pre);
	size_t q = bj_quote(target, tlen, buf + pre);
	memcpy(buf + pre + q, model->p + model->n, post);
	buf[pre + q + post] = '\0';
	*out = buf;
	*outlen = pre + q + post;
	return 0;
}
