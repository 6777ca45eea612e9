/* Unit tests for the early-pick scan (user/sched/early.c): at every split
 * point of real bodies, whatever it reports as known must equal what the
 * full-body path (body_parse_request) reads, and at the end it must give
 * the full path's verdict and error text. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sched/body.h"
#include "sched/early.h"
#include "sched/sched.h"

#define S(x) x, sizeof(x) - 1

/* What the prefix scorer hashes of |r|, cut at |max|. */
static size_t input_of(enum sched_api api, const body_req *r, size_t max, arena *a,
		       const char **out)
{
	size_t n;
	*out = sched_prefix_user_input(api, r, a, max, &n);
	return n < max ? n : max;
}

static char *decoded(const bj_val *v)
{
	char *out = malloc(3 * v->n + 1);
	size_t n = bj_unquote(v, out);
	out[n] = '\0';
	return out;
}

static int n_facts; /* prefixes where the scan said "known" */

/* Feeds |body| split at |cut| (and again at |cut2| when larger) and checks
 * every report against the full path. */
static void split_run(enum sched_api api, const char *body, size_t n, size_t budget, size_t cut,
		      size_t cut2)
{
	body_req full;
	char err[512], ferr[512];
	int frc = body_parse_request(body, n, api, &full, ferr, sizeof(ferr));
	early_scan e;
	memset(&e, 0, sizeof(e));
	early_init(&e, api);
	size_t pts[3] = {cut, cut2 > cut ? cut2 : cut, n};
	size_t at = 0;
	bool feed_failed = false;
	arena a;
	arena_init(&a, 4096);
	for (int i = 0; i < 3 && !feed_failed; i++) {
		if (pts[i] < at)
			continue;
		if (early_feed(&e, body + at, pts[i] - at) < 0)
			feed_failed = true;
		at = pts[i];
		if (!feed_failed)
			CHECK_INT(e.off, at);
		body_req f;
		if (feed_failed || at == n || !early_facts(&e, body, budget, &a, &f))
			continue;
		n_facts++;
		/* Known facts are the full path's (an invalid body is refused at
		 * its end, below). */
		if (frc != 0)
			continue;
		CHECK_INT(f.model.t, BJ_STRING);
		char *m1 = decoded(&f.model), *m2 = decoded(&full.model);
		CHECK_STR(m1, m2);
		free(m1);
		free(m2);
		if (budget) {
			const char *x, *y;
			size_t lx = input_of(api, &f, budget, &a, &x);
			size_t ly = input_of(api, &full, budget, &a, &y);
			CHECK_INT(lx, ly);
			CHECK(lx == ly && (lx == 0 || memcmp(x, y, lx) == 0));
		}
		arena_reset(&a);
	}
	bool checked = false, model_ok = false;
	int rc = early_finish(&e, &checked, &model_ok, err, sizeof(err));
	CHECK_INT(rc, frc);
	if (rc < 0 && frc < 0)
		CHECK_STR(err, ferr);
	if (rc == 0) {
		CHECK(checked);
		CHECK_INT(model_ok, full.model.t == BJ_STRING);
		CHECK_INT(e.stream, full.stream);
	}
	arena_free(&a);
	early_free(&e);
}

static void every_split(enum sched_api api, const char *body, size_t n)
{
	static const size_t budgets[] = {0, 8, 40, 1 << 20};
	for (size_t b = 0; b < sizeof(budgets) / sizeof(budgets[0]); b++)
		for (size_t k = 0; k <= n; k++) {
			split_run(api, body, n, budgets[b], k, 0);
			split_run(api, body, n, budgets[b], k, k + (n - k) / 2);
		}
}

static void test_completions(void)
{
	n_facts = 0;
	every_split(SCHED_API_COMPLETIONS,
		    S("{\"model\":\"llama-3\",\"prompt\":\"Hello there, a long prompt with "
		      "escapes \\\"quoted\\\" \\\\ and \\u00e9\\ud83d\\ude00 and raw "
		      "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 to the end\","
		      "\"max_tokens\":10,\"stream\":true}"));
	CHECK(n_facts > 0);
	/* Model after the prompt, with escapes in the model itself. */
	n_facts = 0;
	every_split(SCHED_API_COMPLETIONS,
		    S("{ \"prompt\" : \"0123456789abcdefghijklmnopqrstuvwxyz0123456789\\n\" ,"
		      " \"temperature\": 0.5e1, \"model\" : \"m\\u00e9\\/x \\\"q\\\"\" }"));
	CHECK(n_facts > 0);
	/* A prompt cut inside escapes and multi-byte runes, short budget. */
	every_split(SCHED_API_COMPLETIONS,
		    S("{\"model\":\"a\",\"prompt\":\"\\u00e9\\u00e9\\u00e9\\ud83d\\ude00"
		      "\\ud83d\\ude00\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xe6\x97\xa5\xe6\x97\xa5"
		      "\\n\\t\\\"\\\\xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}"));
	/* Duplicate prompt before the facts are known: the last one counts. */
	every_split(SCHED_API_COMPLETIONS,
		    S("{\"prompt\":\"first first first first first first first\","
		      "\"Prompt\":\"second second second second second second second\","
		      "\"model\":\"a\"}"));
}

static void test_chat_and_others(void)
{
	n_facts = 0;
	every_split(SCHED_API_CHAT,
		    S("{\"model\":\"chat-m\",\"messages\":[{\"role\":\"system\",\"content\":"
		      "\"You are helpful \\u00e9.\"},{\"role\":\"user\",\"content\":[{\"type\":"
		      "\"text\",\"text\":\"hi \xe6\x97\xa5\"}]}],\"stream\":false}"));
	CHECK(n_facts > 0);
	every_split(SCHED_API_CHAT,
		    S("{\"messages\":[{\"role\":\"user\",\"content\":\"hello hello hello\"}],"
		      "\"cache_salt\":\"s1\",\"model\":\"late\"}"));
	n_facts = 0;
	every_split(SCHED_API_EMBEDDINGS,
		    S("{\"model\":\"emb\",\"input\":[\"alpha beta gamma\",\"delta\"],"
		      "\"encoding_format\":\"float\"}"));
	CHECK(n_facts > 0);
	every_split(SCHED_API_CONVERSATIONS,
		    S("{\"model\":\"c\",\"items\":[{\"type\":\"message\",\"role\":\"user\","
		      "\"content\":\"hi there, a conversation\"}],\"metadata\":{\"k\":\"v\"}}"));
	/* Responses: with a budget the three hashed members can come in any
	 * order, so nothing is ever known early; without one the model is. */
	n_facts = 0;
	for (size_t k = 0; k < 60; k++)
		split_run(SCHED_API_RESPONSES,
			  S("{\"model\":\"r\",\"input\":\"a long enough input text here\","
			    "\"instructions\":\"be brief\"}"),
			  40, k, 0);
	CHECK_INT(n_facts, 0);
	every_split(SCHED_API_RESPONSES,
		    S("{\"model\":\"r\",\"input\":\"a long enough input text here\"}"));
}

static void test_invalid(void)
{
	/* Invalid after the budget: known early, then the full path's error. */
	every_split(SCHED_API_COMPLETIONS,
		    S("{\"model\":\"m\",\"prompt\":\"a fine long prompt of many words\",x}"));
	every_split(SCHED_API_COMPLETIONS,
		    S("{\"model\":\"m\",\"prompt\":\"a fine long prompt of many words\""));
	every_split(SCHED_API_COMPLETIONS,
		    S("{\"model\":\"m\",\"prompt\":\"a fine long prompt of many words\","
		      "\"n\":tru}"));
	/* Number overflow and typed validation, checked on the skeleton. */
	every_split(SCHED_API_COMPLETIONS,
		    S("{\"model\":\"m\",\"prompt\":\"a fine long prompt of many words\","
		      "\"max_tokens\":1e999}"));
	every_split(SCHED_API_CHAT,
		    S("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
		      "\"a fine long message text\"}],\"tools\":{}}"));
	every_split(SCHED_API_COMPLETIONS,
		    S("{\"model\":\"m\",\"prompt\":\"a fine long prompt of many words\","
		      "\"cache_salt\":7}"));
	/* Not an object; model not a string; no model. */
	every_split(SCHED_API_COMPLETIONS, S("[\"model\",\"prompt\"]"));
	every_split(SCHED_API_COMPLETIONS, S("\"just a string\""));
	every_split(SCHED_API_COMPLETIONS, S("{\"model\":42,\"prompt\":\"some prompt text\"}"));
	every_split(SCHED_API_COMPLETIONS, S("{\"prompt\":\"some prompt text\"}"));
	every_split(SCHED_API_COMPLETIONS, S("{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}"));
	every_split(SCHED_API_CHAT, S("{\"model\":\"m\",\"messages\":[]}"));

	/* The scan's Go error text equals bj_check's, wherever the body is cut. */
	static const char bad[] = "{\"model\":\"m\",\"prompt\":\"ok\" \"x\":1}";
	char want[256], got[256];
	CHECK(bj_check(bad, sizeof(bad) - 1, want, sizeof(want)) < 0);
	for (size_t k = 0; k < sizeof(bad); k++) {
		early_scan e;
		memset(&e, 0, sizeof(e));
		early_init(&e, SCHED_API_COMPLETIONS);
		int rc = early_feed(&e, bad, k);
		if (rc == 0)
			rc = early_feed(&e, bad + k, sizeof(bad) - 1 - k);
		CHECK_INT(rc, -EINVAL);
		early_error(&e, got, sizeof(got));
		CHECK_STR(got, want);
		early_free(&e);
	}
}

/* A second model after the facts were taken is visible to the caller. */
static void test_model_again(void)
{
	static const char body[] = "{\"model\":\"a\",\"prompt\":\"p\",\"model\":\"b\"}";
	early_scan e;
	memset(&e, 0, sizeof(e));
	early_init(&e, SCHED_API_COMPLETIONS);
	arena a;
	arena_init(&a, 1024);
	body_req f;
	CHECK_INT(early_feed(&e, body, 20), 0);
	CHECK(early_facts(&e, body, 0, &a, &f));
	unsigned models = e.n_model;
	CHECK_INT(models, 1);
	CHECK_INT(early_feed(&e, body + 20, sizeof(body) - 1 - 20), 0);
	CHECK_INT(e.n_model, 2);
	/* Half-read, the second model hides the first. */
	early_init(&e, SCHED_API_COMPLETIONS);
	CHECK_INT(early_feed(&e, body, sizeof(body) - 4), 0);
	CHECK(!early_facts(&e, body, 0, &a, &f));
	/* Also cut between the second key and its value (found by fuzz_early:
	 * the first model was reported while the second was pending). */
	for (size_t cut = sizeof(body) - 6; cut <= sizeof(body) - 5; cut++) {
		early_init(&e, SCHED_API_COMPLETIONS);
		CHECK_INT(early_feed(&e, body, cut), 0);
		CHECK_INT(e.n_model, 2);
		CHECK(!early_facts(&e, body, 0, &a, &f));
	}
	arena_free(&a);
	early_free(&e);
}

/* A budget without bound (an absurd maxPrefixBlocksToMatch): the whole
 * prompt is needed. */
static void test_unbounded_budget(void)
{
	static const char body[] = "{\"model\":\"m\",\"prompt\":\"0123456789abcdef0123456789abcdef"
				   "0123456789\",\"n\":1}";
	early_scan e;
	memset(&e, 0, sizeof(e));
	early_init(&e, SCHED_API_COMPLETIONS);
	arena a;
	arena_init(&a, 1024);
	body_req f;
	CHECK_INT(early_feed(&e, body, 60), 0);
	CHECK(!early_facts(&e, body, SIZE_MAX, &a, &f));
	CHECK(!early_facts(&e, body, SIZE_MAX - 8, &a, &f));
	CHECK(early_facts(&e, body, 4, &a, &f));
	CHECK_INT(early_feed(&e, body + 60, sizeof(body) - 2 - 60), 0); /* all but the "}" */
	CHECK(early_facts(&e, body, SIZE_MAX, &a, &f));
	CHECK_INT(f.prompt.n, 44);
	arena_free(&a);
	early_free(&e);
}

/* 1 MB in 64 KB chunks: one pass, the skeleton stays small, and the facts
 * are known within the first chunk. */
static void test_big_prompt(void)
{
	size_t n = 1 << 20;
	char *body = malloc(n + 64);
	size_t o = (size_t)sprintf(body, "{\"model\":\"big\",\"prompt\":\"");
	while (o < n - 2) {
		body[o] = (char)('a' + o % 26);
		if (o % 1000 == 0)
			body[o] = ' ';
		o++;
	}
	body[o++] = '"';
	body[o++] = '}';
	early_scan e;
	memset(&e, 0, sizeof(e));
	early_init(&e, SCHED_API_COMPLETIONS);
	arena a;
	arena_init(&a, 1 << 16);
	body_req f;
	size_t known_at = 0;
	for (size_t at = 0; at < o; at += 65536) {
		size_t k = o - at < 65536 ? o - at : 65536;
		CHECK_INT(early_feed(&e, body + at, k), 0);
		if (!known_at && early_facts(&e, body, 16384, &a, &f))
			known_at = at + k;
	}
	CHECK_INT(known_at, 65536);
	CHECK(e.slen < 128);
	bool checked, model_ok;
	char err[256];
	CHECK_INT(early_finish(&e, &checked, &model_ok, err, sizeof(err)), 0);
	CHECK(checked && model_ok);
	arena_free(&a);
	early_free(&e);
	free(body);
}

int main(void)
{
	RUN(test_completions);
	RUN(test_chat_and_others);
	RUN(test_invalid);
	RUN(test_model_again);
	RUN(test_unbounded_budget);
	RUN(test_big_prompt);
	return harness_done();
}
