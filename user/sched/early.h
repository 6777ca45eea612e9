/* early: a resumable scan over the part of a request body received so far,
 * for picking before the body ends (--early-pick, user/extproc).
 *
 * Each chunk continues the scan where the previous one stopped (no rescans:
 * linear in the body). It runs Go's checkValid state machine (jscan.h, the one
 * bj_check runs: the same error texts), follows the top-level members, and
 * says when what the scheduler reads of the body is known: the "model" member
 * whole, and the member the prefix-cache scorer hashes (prompt, messages,
 * input, items) up to the scorer's budget, or whole. It also keeps a skeleton
 * of the body (every byte but the characters of strings longer than
 * EARLY_STR_KEEP, which become "x") so that the body's end can be validated
 * exactly like the full-body path (body_parse_request) without holding the
 * body.
 */
#ifndef KEPP_SCHED_EARLY_H
#define KEPP_SCHED_EARLY_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sched/body.h"

/* Strings (keys and values) up to this many raw bytes stay whole in the
 * skeleton: every key a decoder matches, and short values, fit. */
#define EARLY_STR_KEEP 256
/* The skeleton's bound: bodies whose structure outgrows it are not picked
 * early, and after an early pick are only checked for well-formed JSON. */
#define EARLY_SKEL_MAX (64 * 1024)

/* One top-level member's value: absolute offsets into the body. */
typedef struct early_span {
	bool seen, done; /* started / complete */
	size_t start, end;
	char first;      /* first byte of the value: its JSON type */
} early_span;

/* Callers read model/input/salt, n_model, stream, off and failed; the rest
 * is the scan's own. */
typedef struct early_scan {
	jscan js;          /* Go's checkValid, resumable */
	bool failed;
	size_t off;        /* bytes scanned */
	enum sched_api api;
	const char *field; /* the member the prefix scorer hashes for |api|; NULL: none */
	bool top_object;
	/* The top-level member being read. */
	int cur;
	char key[EARLY_STR_KEEP];
	size_t klen;
	bool klong;
	/* Facts: the last of each member so far (Go's decoders keep the last). */
	early_span model, input, salt;
	unsigned n_model; /* "model" members begun */
	bool stream;      /* exact key "stream" is true */
	bool stream_val;
	/* Skeleton. */
	char *skel;
	size_t slen, scap;
	bool skel_over;
	size_t sstr, str_raw; /* skeleton offset and raw length of the current string */
	bool str_elide, str_key;
} early_scan;

void early_init(early_scan *e, enum sched_api api);
/* Frees the skeleton; the scan may be initialised again afterwards. */
void early_free(early_scan *e);

/* Scans the next |n| bytes of the body. Returns 0, or -EINVAL once the text
 * so far cannot be the start of valid JSON (then early_error has Go's text).
 * A skeleton that cannot grow (EARLY_SKEL_MAX, or no memory) is given up:
 * early_facts then says no, early_finish checks the syntax only. */
int early_feed(early_scan *e, const char *p, size_t n);

/* Go's syntax error text of a failed scan ("invalid character ..."). */
void early_error(const early_scan *e, char *err, size_t errlen);

/* Whether the scheduler's inputs are known from |body| (the e->off bytes
 * received so far): the JSON so far is well-formed, an object, the last
 * "model" member is a complete string, no "cache_salt" member is half-read,
 * and, when |budget| > 0, the API's hashed member is complete or known for
 * |budget| bytes of the prefix scorer's user input. Then |out| gets the
 * spans, pointing into |body| or into |a| for a partial prompt string. */
bool early_facts(const early_scan *e, const char *body, size_t budget, arena *a, body_req *out);

/* The body ended: 0 when it is valid as body_parse_request says for the
 * scan's API, else -EINVAL and the same message (without the "inference
 * error: BadRequest - " prefix). |checked| is false when only the syntax was
 * checked (the skeleton outgrew EARLY_SKEL_MAX). |model_ok| is false when the
 * last "model" member is not a string. */
int early_finish(early_scan *e, bool *checked, bool *model_ok, char *err, size_t errlen);
#endif
