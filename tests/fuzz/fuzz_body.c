/* The request-body scan and the in-place model rewrite (user/sched/body.c).
 *
 * Input: [api][target length][target bytes][body]. The body goes through
 * Go's checkValid, the openai-parser validation of the chosen API, and a walk
 * of every value with the scanner's accessors. When the body names a string
 * model, it is rewritten to the target, and the result must be valid JSON that
 * parses the same way, with the new model and every other byte kept. */
#include <errno.h>

#include "fuzz.h"
#include "sched/body.h"

static bool valid_utf8(const char *s, size_t n)
{
	/* The scanner's own decoder is static; a round trip through quote and
	 * unquote is the public way to ask whether text is valid UTF-8. */
	char *q = malloc(6 * n + 2), *u = malloc(3 * (6 * n + 2));
	FUZZ_CHECK(q && u);
	bj_val v = {q, bj_quote(s, n, q), BJ_STRING};
	size_t un = bj_unquote(&v, u);
	bool same = un == n && memcmp(u, s, n) == 0;
	free(q);
	free(u);
	return same;
}

/* A decoded string is valid UTF-8, so quoting it and decoding again must
 * give it back exactly, and the quoted form must be valid JSON. */
static void check_string(const bj_val *s)
{
	char *dec = malloc(3 * s->n + 1);
	FUZZ_CHECK(dec);
	size_t n = bj_unquote(s, dec);
	FUZZ_CHECK(n <= 3 * s->n);
	char *q = malloc(6 * n + 2);
	FUZZ_CHECK(q);
	size_t qn = bj_quote(dec, n, q);
	FUZZ_CHECK(qn <= 6 * n + 2);
	FUZZ_CHECK(bj_check(q, qn, NULL, 0) == 0);
	bj_val qv = bj_value(q, qn);
	FUZZ_CHECK(qv.t == BJ_STRING && qv.n == qn);
	char *back = malloc(3 * qn + 1);
	FUZZ_CHECK(back);
	FUZZ_CHECK(bj_unquote(&qv, back) == n && memcmp(back, dec, n) == 0);
	free(back);
	free(q);
	free(dec);
	(void)bj_str_eq(s, "model");
	(void)bj_key_fold(s, "messages");
	(void)bj_key_fold(s, "prompt_token_details");
}

static void walk(const bj_val *v, int depth, const char *lo, const char *hi)
{
	FUZZ_CHECK(v->p >= lo && v->p + v->n <= hi);
	if (depth > 64)
		return;
	bj_iter it;
	bj_val k, e;
	int64_t i64;
	switch (v->t) {
	case BJ_STRING:
		check_string(v);
		break;
	case BJ_NUMBER:
		(void)bj_int64(v, &i64);
		(void)bj_double(v);
		(void)bj_float_overflows(v->p, v->n);
		break;
	case BJ_OBJECT:
		bj_iter_init(&it, v);
		while (bj_obj_next(&it, &k, &e)) {
			FUZZ_CHECK(k.t == BJ_STRING);
			walk(&k, depth + 1, v->p, v->p + v->n);
			walk(&e, depth + 1, v->p, v->p + v->n);
		}
		break;
	case BJ_ARRAY:
		bj_iter_init(&it, v);
		while (bj_arr_next(&it, &e))
			walk(&e, depth + 1, v->p, v->p + v->n);
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fin f = {data, size};
	enum sched_api api = (enum sched_api)(fin_u8(&f) % 5);
	size_t tlen;
	const uint8_t *tp = fin_take(&f, fin_u8(&f), &tlen);
	char *target = fuzz_strdup(tp, tlen);
	/* A private copy, so reads past the end are caught. */
	char *body = malloc(f.n ? f.n : 1);
	FUZZ_CHECK(body);
	memcpy(body, f.p, f.n);
	size_t n = f.n;

	char err[64];
	int valid = bj_check(body, n, err, sizeof(err));
	FUZZ_CHECK(valid == 0 || valid == -EINVAL);
	if (valid == 0) {
		bj_val top = bj_value(body, n);
		FUZZ_CHECK(top.t != BJ_NONE);
		walk(&top, 0, body, body + n);
		(void)bj_has_overflow(&top);
	} else {
		FUZZ_CHECK(strlen(err) > 0);
	}

	body_req br;
	char msg[400];
	int r = body_parse_request(body, n, api, &br, msg, sizeof(msg));
	FUZZ_CHECK(r == 0 || r == -EINVAL);
	FUZZ_CHECK(r < 0 || valid == 0);
	if (r == 0 && br.model.t == BJ_STRING) {
		arena a;
		arena_init(&a, 4096);
		size_t ilen;
		char *incoming = bj_unquote_dup(&br.model, &a, &ilen);
		FUZZ_CHECK(incoming && strlen(incoming) <= ilen);

		const char *out;
		size_t outlen;
		FUZZ_CHECK(body_rewrite_model(body, n, &br.model, target, tlen, &a, &out, &outlen) ==
			   0);
		size_t pre = (size_t)(br.model.p - body), post = n - pre - br.model.n;
		/* Every byte but the model value is kept. */
		FUZZ_CHECK(outlen >= pre + post + 2);
		FUZZ_CHECK(memcmp(out, body, pre) == 0);
		FUZZ_CHECK(memcmp(out + outlen - post, body + pre + br.model.n, post) == 0);
		/* Still valid, still accepted, and the model is now the target. */
		char *copy = malloc(outlen ? outlen : 1);
		FUZZ_CHECK(copy);
		memcpy(copy, out, outlen);
		FUZZ_CHECK(bj_check(copy, outlen, NULL, 0) == 0);
		body_req br2;
		FUZZ_CHECK(body_parse_request(copy, outlen, api, &br2, msg, sizeof(msg)) == 0);
		FUZZ_CHECK(br2.model.t == BJ_STRING && br2.model.p == copy + pre);
		FUZZ_CHECK(br2.stream == br.stream);
		size_t mlen;
		char *model = bj_unquote_dup(&br2.model, &a, &mlen);
		FUZZ_CHECK(model);
		if (valid_utf8(target, tlen))
			FUZZ_CHECK(mlen == tlen && memcmp(model, target, tlen) == 0);
		free(copy);
		arena_free(&a);
	}
	free(body);
	free(target);
	return 0;
}
