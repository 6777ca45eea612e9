/* The early-pick scan (user/sched/early.c) against the full-body path.
 *
 * Input: [api][budget u16][cut u16][cut u16][body]. The body is fed in three
 * pieces. Whenever the scan says the scheduler's inputs are known, they must
 * be the full path's (body_parse_request on the whole body): the same model,
 * and the same first |budget| bytes of the prefix scorer's user input, unless
 * a later duplicate member replaces them (the caller refuses a second model;
 * a second prompt only changes the hashes). At the end the verdict and the
 * error text must be the full path's. */
#include <errno.h>

#include "fuzz.h"
#include "sched/early.h"

/* What the prefix scorer hashes of |r|, cut at |max|, copied out of |a|. */
static size_t input_of(enum sched_api api, const body_req *r, size_t max, arena *a, char *out)
{
	size_t n;
	const char *in = sched_prefix_user_input(api, r, a, max, &n);
	if (n > max)
		n = max;
	if (n)
		memcpy(out, in, n);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fin f = {data, size};
	enum sched_api api = (enum sched_api)(fin_u8(&f) % 5);
	size_t budget = fin_u16(&f) % 512;
	size_t c1 = fin_u16(&f), c2 = fin_u16(&f);
	size_t n;
	const char *body = (const char *)fin_take(&f, f.n, &n);
	c1 = n ? c1 % (n + 1) : 0;
	c2 = n ? c2 % (n + 1) : 0;
	if (c2 < c1) {
		size_t t = c1;
		c1 = c2;
		c2 = t;
	}
	body_req full;
	char ferr[512], err[512];
	int frc = body_parse_request(body, n, api, &full, ferr, sizeof(ferr));

	early_scan e;
	memset(&e, 0, sizeof(e));
	early_init(&e, api);
	arena a;
	arena_init(&a, 4096);
	size_t cuts[3] = {c1, c2, n}, at = 0;
	bool failed = false, took = false;
	size_t took_start = 0;
	unsigned took_models = 0;
	char *fx = NULL, *fy = NULL, *fm = NULL;
	size_t lx = 0, lm = 0;
	for (int i = 0; i < 3 && !failed; i++) {
		failed = early_feed(&e, body + at, cuts[i] - at) < 0;
		at = cuts[i];
		body_req facts;
		if (failed || took || !early_facts(&e, body, budget, &a, &facts))
			continue;
		FUZZ_CHECK(facts.model.t == BJ_STRING);
		took = true;
		took_start = e.input.start;
		took_models = e.n_model;
		fm = malloc(3 * facts.model.n + 1);
		FUZZ_CHECK(fm);
		lm = bj_unquote(&facts.model, fm);
		fx = malloc(3 * n + budget + 8);
		FUZZ_CHECK(fx);
		lx = budget ? input_of(api, &facts, budget, &a, fx) : 0;
	}
	bool checked = false, model_ok = false;
	int rc = early_finish(&e, &checked, &model_ok, err, sizeof(err));
	if (failed)
		FUZZ_CHECK(rc < 0);
	if (checked || rc < 0) {
		FUZZ_CHECK((rc < 0) == (frc < 0));
		if (rc < 0)
			FUZZ_CHECK(strcmp(err, ferr) == 0);
	}
	if (rc == 0 && checked)
		FUZZ_CHECK(model_ok == (full.model.t == BJ_STRING));
	if (took && frc == 0 && e.n_model == took_models) {
		FUZZ_CHECK(full.model.t == BJ_STRING);
		char *m = malloc(3 * full.model.n + 1);
		FUZZ_CHECK(m);
		size_t l = bj_unquote(&full.model, m);
		FUZZ_CHECK(l == lm && memcmp(m, fm, l) == 0);
		free(m);
		if (budget && e.input.start == took_start) {
			fy = malloc(3 * n + budget + 8);
			FUZZ_CHECK(fy);
			size_t ly = input_of(api, &full, budget, &a, fy);
			FUZZ_CHECK(lx == ly && memcmp(fx, fy, lx) == 0);
		}
	}
	free(fx);
	free(fy);
	free(fm);
	arena_free(&a);
	early_free(&e);
	return 0;
}
