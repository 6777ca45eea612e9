/* jscan: Go's encoding/json checkValid state machine, one byte at a time.
 *
 * The state lives in a struct, so a scan can be fed any number of bytes at a
 * time and resumed (the early pick, early.c) or run over a whole body in one
 * loop (bj_check, body.c). jscan_step is inline and has no hooks: callers
 * that follow the document compare the state before and after a byte, which
 * costs nothing on bytes that do not change it. String contents, most of a
 * body, are skipped eight bytes at a time with jscan_str_run.
 */
#ifndef KEPP_SCHED_JSCAN_H
#define KEPP_SCHED_JSCAN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Go's maxNestingDepth: deeper documents are a syntax error. */
#define JSCAN_MAX_DEPTH 10000

/* The states, scanner.go's state functions. Order matters: the ranges
 * below (string, number, scalar) are tested with comparisons. */
enum {
	JS_BEGIN_VALUE,
	JS_BEGIN_VALUE_OR_EMPTY,
	JS_BEGIN_STRING_OR_EMPTY,
	JS_BEGIN_STRING,
	JS_END_VALUE,
	JS_END_TOP,
	JS_STR,
	JS_STR_ESC,
	JS_U,
	JS_U1,
	JS_U12,
	JS_U123,
	JS_NEG,
	JS_1,
	JS_0,
	JS_DOT,
	JS_DOT0,
	JS_E,
	JS_ESIGN,
	JS_E0,
	JS_T,
	JS_TR,
	JS_TRU,
	JS_F,
	JS_FA,
	JS_FAL,
	JS_FALS,
	JS_N,
	JS_NU,
	JS_NUL,
	JS_ERROR,
};

/* Parse state of the innermost container. */
enum { JS_PS_KEY, JS_PS_VALUE, JS_PS_ARRAY };

typedef struct jscan {
	int step;
	int ps;
	bool end_top;
	uint32_t depth;
	unsigned char errc;
	const char *ctx; /* error context; NULL means "unexpected end" */
	uint64_t obj[(JSCAN_MAX_DEPTH + 63) / 64]; /* bit i: container i is an object */
} jscan;

/* Ready for the first byte of a document (obj is left as it is: only bits
 * below depth are read). */
static inline void jscan_init(jscan *s)
{
	s->step = JS_BEGIN_VALUE;
	s->ps = JS_PS_ARRAY;
	s->end_top = false;
	s->depth = 0;
	s->errc = 0;
	s->ctx = NULL;
}

static inline bool jscan_in_string(int st)
{
	return st >= JS_STR && st <= JS_U123;
}

static inline bool jscan_in_number(int st)
{
	return st >= JS_NEG && st <= JS_E0;
}

/* Inside a string, number or literal. */
static inline bool jscan_in_scalar(int st)
{
	return st >= JS_STR && st <= JS_NUL;
}

static inline bool jscan_is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* ---- eight bytes at a time ---------------------------------------------- */

/* A flag's lowest set byte is the first byte that matches exactly (higher
 * bytes may be false positives from the borrow). */
#define JSCAN_ONES 0x0101010101010101ULL
#define JSCAN_HIGHS 0x8080808080808080ULL

static inline uint64_t jscan_load8(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline uint64_t jscan_eq_bytes(uint64_t v, unsigned char c)
{
	uint64_t x = v ^ (JSCAN_ONES * c);
	return (x - JSCAN_ONES) & ~x & JSCAN_HIGHS;
}

/* Bytes < 0x20 (the high bit excluded by ~v). */
static inline uint64_t jscan_ctl_bytes(uint64_t v)
{
	return (v - JSCAN_ONES * 0x20) & ~v & JSCAN_HIGHS;
}

static inline size_t jscan_first_flag(uint64_t m)
{
	return (size_t)__builtin_ctzll(m) / 8;
}

/* Length of the run at p of bytes that are not '"', '\\' or a control
 * character: what the JS_STR state accepts without a step. */
static inline size_t jscan_str_run(const unsigned char *p, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v = jscan_load8(p + i);
		uint64_t m = jscan_eq_bytes(v, '"') | jscan_eq_bytes(v, '\\') | jscan_ctl_bytes(v);
		if (m)
			return i + jscan_first_flag(m);
	}
	while (i < n && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\')
		i++;
	return i;
}

/* ---- the state machine ---------------------------------------------------- */

static inline int jscan_fail(jscan *s, unsigned char c, const char *ctx)
{
	s->step = JS_ERROR;
	s->errc = c;
	s->ctx = ctx;
	return -1;
}

static inline int jscan_push(jscan *s, unsigned char c, bool object)
{
	if (s->depth >= JSCAN_MAX_DEPTH)
		return jscan_fail(s, c, "exceeded max depth");
	if (object)
		s->obj[s->depth / 64] |= 1ULL << (s->depth % 64);
	else
		s->obj[s->depth / 64] &= ~(1ULL << (s->depth % 64));
	s->depth++;
	s->ps = object ? JS_PS_KEY : JS_PS_ARRAY;
	return 0;
}

static inline void jscan_pop(jscan *s)
{
	s->depth--;
	if (s->depth == 0) {
		s->step = JS_END_TOP;
		s->end_top = true;
		return;
	}
	s->step = JS_END_VALUE;
	uint32_t i = s->depth - 1;
	s->ps = (s->obj[i / 64] >> (i % 64)) & 1 ? JS_PS_VALUE : JS_PS_ARRAY;
}

/* The first digit of a part of a number. */
static inline int jscan_digit(jscan *s, unsigned char c, int next, const char *ctx)
{
	if (c >= '0' && c <= '9') {
		s->step = next;
		return 0;
	}
	return jscan_fail(s, c, ctx);
}

/* Error contexts of the literal states, JS_T..JS_NUL. */
extern const char *const jscan_lit_ctx[JS_NUL - JS_T + 1];

/* One byte: 0, or -1 with the error recorded (the state stays JS_ERROR).
 * The cases mirror scanner.go; "continue" is one state function calling
 * another on the same byte. */
static inline int jscan_step(jscan *s, unsigned char c)
{
	static const char lit_want[JS_NUL - JS_T + 1] = {'r', 'u', 'e', 'a', 'l', 's', 'e',
							  'u', 'l', 'l'};
	for (;;) {
		switch (s->step) {
		case JS_BEGIN_VALUE_OR_EMPTY:
			if (jscan_is_space(c))
				return 0;
			s->step = c == ']' ? JS_END_VALUE : JS_BEGIN_VALUE;
			continue;
		case JS_BEGIN_VALUE:
			if (jscan_is_space(c))
				return 0;
			switch (c) {
			case '{':
				s->step = JS_BEGIN_STRING_OR_EMPTY;
				return jscan_push(s, c, true);
			case '[':
				s->step = JS_BEGIN_VALUE_OR_EMPTY;
				return jscan_push(s, c, false);
			case '"': s->step = JS_STR; return 0;
			case '-': s->step = JS_NEG; return 0;
			case '0': s->step = JS_0; return 0;
			case 't': s->step = JS_T; return 0;
			case 'f': s->step = JS_F; return 0;
			case 'n': s->step = JS_N; return 0;
			}
			if (c >= '1' && c <= '9') {
				s->step = JS_1;
				return 0;
			}
			return jscan_fail(s, c, "looking for beginning of value");
		case JS_BEGIN_STRING_OR_EMPTY:
			if (jscan_is_space(c))
				return 0;
			if (c == '}') {
				s->ps = JS_PS_VALUE;
				s->step = JS_END_VALUE;
				continue;
			}
			s->step = JS_BEGIN_STRING;
			continue;
		case JS_BEGIN_STRING:
			if (jscan_is_space(c))
				return 0;
			if (c == '"') {
				s->step = JS_STR;
				return 0;
			}
			return jscan_fail(s, c, "looking for beginning of object key string");
		case JS_END_VALUE:
			if (s->depth == 0) {
				s->step = JS_END_TOP;
				s->end_top = true;
				continue;
			}
			if (jscan_is_space(c))
				return 0;
			switch (s->ps) {
			case JS_PS_KEY:
				if (c == ':') {
					s->ps = JS_PS_VALUE;
					s->step = JS_BEGIN_VALUE;
					return 0;
				}
				return jscan_fail(s, c, "after object key");
			case JS_PS_VALUE:
				if (c == ',') {
					s->ps = JS_PS_KEY;
					s->step = JS_BEGIN_STRING;
					return 0;
				}
				if (c == '}') {
					jscan_pop(s);
					return 0;
				}
				return jscan_fail(s, c, "after object key:value pair");
			default:
				if (c == ',') {
					s->step = JS_BEGIN_VALUE;
					return 0;
				}
				if (c == ']') {
					jscan_pop(s);
					return 0;
				}
				return jscan_fail(s, c, "after array element");
			}
		case JS_END_TOP:
			if (!jscan_is_space(c))
				return jscan_fail(s, c, "after top-level value");
			return 0;
		case JS_STR:
			if (c == '"') {
				s->step = JS_END_VALUE;
				return 0;
			}
			if (c == '\\') {
				s->step = JS_STR_ESC;
				return 0;
			}
			if (c < 0x20)
				return jscan_fail(s, c, "in string literal");
			return 0;
		case JS_STR_ESC:
			switch (c) {
			case 'b': case 'f': case 'n': case 'r': case 't':
			case '\\': case '/': case '"':
				s->step = JS_STR;
				return 0;
			case 'u':
				s->step = JS_U;
				return 0;
			}
			return jscan_fail(s, c, "in string escape code");
		case JS_U:
		case JS_U1:
		case JS_U12:
		case JS_U123:
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			      (c >= 'A' && c <= 'F')))
				return jscan_fail(s, c, "in \\u hexadecimal character escape");
			s->step = s->step == JS_U123 ? JS_STR : s->step + 1;
			return 0;
		case JS_NEG:
			if (c == '0') {
				s->step = JS_0;
				return 0;
			}
			return jscan_digit(s, c, JS_1, "in numeric literal");
		case JS_0:
			if (c == '.') {
				s->step = JS_DOT;
				return 0;
			}
			if (c == 'e' || c == 'E') {
				s->step = JS_E;
				return 0;
			}
			s->step = JS_END_VALUE;
			continue;
		case JS_DOT:
			return jscan_digit(s, c, JS_DOT0, "after decimal point in numeric literal");
		case JS_E:
			s->step = JS_ESIGN;
			if (c == '+' || c == '-')
				return 0;
			continue;
		case JS_ESIGN:
			return jscan_digit(s, c, JS_E0, "in exponent of numeric literal");
		case JS_1:
		case JS_DOT0:
		case JS_E0:
			/* A run of digits; what may follow depends on the part. */
			if (c >= '0' && c <= '9')
				return 0;
			if (s->step == JS_1) {
				s->step = JS_0;
				continue;
			}
			if (s->step == JS_DOT0 && (c == 'e' || c == 'E')) {
				s->step = JS_E;
				return 0;
			}
			s->step = JS_END_VALUE;
			continue;
		case JS_T:
		case JS_TR:
		case JS_TRU:
		case JS_F:
		case JS_FA:
		case JS_FAL:
		case JS_FALS:
		case JS_N:
		case JS_NU:
		case JS_NUL:
			if (c != (unsigned char)lit_want[s->step - JS_T])
				return jscan_fail(s, c, jscan_lit_ctx[s->step - JS_T]);
			if (s->step == JS_TRU || s->step == JS_FALS || s->step == JS_NUL)
				s->step = JS_END_VALUE;
			else
				s->step++;
			return 0;
		default:
			return -1;
		}
	}
}

/* The input ended: Go's scanner.eof(), one space that ends a top-level
 * number. 0 when the document is complete, else -1 (jscan_error says why). */
int jscan_eof(jscan *s);

/* Go's SyntaxError text of a failed scan: "invalid character 'x' ..." with
 * Go's quoteChar, or "unexpected end of JSON input". */
void jscan_error(const jscan *s, char *err, size_t errlen);
#endif
