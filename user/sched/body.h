/* body: a bounded JSON scanner over raw request and response bodies.
 *
 * It validates and walks JSON text in place (no tree, no malloc) and
 * reproduces what the reference EPP's Go encoding/json reports: the exact
 * syntax error texts of checkValid, the type errors of Unmarshal into a
 * map[string]interface{}, Go's string decoding (invalid UTF-8 and lone
 * surrogates become U+FFFD) and Go's case-insensitive struct-field matching.
 * Everything after bj_check() assumes text that bj_check() accepted.
 */
#ifndef KEPP_SCHED_BODY_H
#define KEPP_SCHED_BODY_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sched/jscan.h"
#include "sched/sched.h"
#include "util/arena.h"

/* Go's maxNestingDepth: deeper documents are a syntax error. */
#define BJ_MAX_DEPTH JSCAN_MAX_DEPTH

enum bj_type { BJ_NONE = 0, BJ_NULL, BJ_BOOL, BJ_NUMBER, BJ_STRING, BJ_ARRAY, BJ_OBJECT };

/* One JSON value inside a checked document: its text p[0..n). */
typedef struct bj_val {
	const char *p;
	size_t n;
	enum bj_type t;
} bj_val;

/* Go's checkValid: 0, or -EINVAL with Go's SyntaxError text in |err|. */
int bj_check(const char *p, size_t n, char *err, size_t errlen);

/* The first value of checked text (leading whitespace skipped). */
bj_val bj_value(const char *p, size_t n);

typedef struct bj_iter {
	const char *p, *end;
	bool first;
} bj_iter;

/* Members of an object / elements of an array, in document order. */
void bj_iter_init(bj_iter *it, const bj_val *container);
bool bj_obj_next(bj_iter *it, bj_val *key, bj_val *val);
bool bj_arr_next(bj_iter *it, bj_val *elem);

/* Decoded string |s| equals |name| byte for byte (Go map key lookup). */
bool bj_str_eq(const bj_val *s, const char *name);
/* Decoded key |s| names the struct field |name| (lowercase ASCII) the way
 * Go matches fields: exact, else case-insensitive with Unicode folding. */
bool bj_key_fold(const bj_val *s, const char *name);
/* Decodes string |s| as Go does into |out|, which needs 3 * s->n bytes;
 * returns the decoded length (no NUL added). */
size_t bj_unquote(const bj_val *s, char *out);
/* The first bytes of the same decoding: stops once |max_out| bytes are out
 * (it may write up to 4 more, one UTF-8 sequence); |out| needs room for
 * min(3 * s->n, max_out + 4) bytes. */
size_t bj_unquote_n(const bj_val *s, char *out, size_t max_out);
/* Decoded string into the arena, NUL-terminated; NULL on allocation failure. */
char *bj_unquote_dup(const bj_val *s, arena *a, size_t *len);

/* Number helpers with Go's strconv semantics. */
bool bj_float_overflows(const char *p, size_t n);
/* Some number inside |v| does not fit a float64 (Go's decode into any fails). */
bool bj_has_overflow(const bj_val *v);
/* ParseInt(s, 10, 64): false for fractions, exponents and overflow. */
bool bj_int64(const bj_val *v, int64_t *out);
double bj_double(const bj_val *v);

/* Writes |s| as a JSON string literal (quotes included) into |out|, which
 * needs 6 * n + 2 bytes; returns the length. Escapes '"', '\\', control
 * bytes, U+2028/U+2029, and turns invalid UTF-8 into \ufffd like Go. */
size_t bj_quote(const char *s, size_t n, char *out);

/* What the director needs from an OpenAI-style request body. Spans are the
 * last occurrence of each member, as Go's decoders keep it. */
typedef struct body_req {
	bj_val model;  /* exact key "model"; BJ_NONE when absent */
	bool stream;   /* exact key "stream" is true */
	bj_val prompt, messages, input, items, instructions, tools, cache_salt;
} body_req;

/* Parses like the v1.5.0 openai-parser: Unmarshal into a map, then the
 * per-API typed validation. Returns 0, or -EINVAL with the message (without
 * the "inference error: BadRequest - " prefix) in |err|. */
int body_parse_request(const char *p, size_t n, enum sched_api api, body_req *out, char *err,
		       size_t errlen);

/* The body with only the model value's bytes replaced by |target| encoded
 * as a JSON string (new arena buffer). Returns 0 or -ENOMEM. */
int body_rewrite_model(const char *p, size_t n, const bj_val *model, const char *target,
		       size_t tlen, arena *a, const char **out, size_t *outlen);
#endif
