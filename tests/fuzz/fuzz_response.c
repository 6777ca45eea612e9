/* Response-side parsing (user/sched/response.c): usage from a JSON body and
 * from SSE chunk text, and the model-name rewrite-back.
 *
 * Input: [target length][target][incoming length][incoming][body]. The
 * rewrite-back is checked against a naive bytes.ReplaceAll written here. */
#include "fuzz.h"
#include "sched/sched.h"

/* Replaces every non-overlapping |from| left to right; NULL when none. */
static char *naive_replace(const char *b, size_t n, const char *from, size_t fl, const char *to,
			   size_t tl, size_t *outlen)
{
	size_t count = 0;
	for (size_t i = 0; i + fl <= n;) {
		if (memcmp(b + i, from, fl) == 0) {
			count++;
			i += fl;
		} else {
			i++;
		}
	}
	if (!count)
		return NULL;
	char *out = malloc(n - count * fl + count * tl + 1);
	FUZZ_CHECK(out);
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		if (i + fl <= n && memcmp(b + i, from, fl) == 0) {
			memcpy(out + o, to, tl);
			o += tl;
			i += fl;
		} else {
			out[o++] = b[i++];
		}
	}
	*outlen = o;
	return out;
}

static char *pattern(const char *head, const char *name, size_t len, size_t *plen)
{
	size_t hl = strlen(head);
	char *p = malloc(hl + len + 1);
	FUZZ_CHECK(p);
	memcpy(p, head, hl);
	memcpy(p + hl, name, len);
	p[hl + len] = '"';
	*plen = hl + len + 1;
	return p;
}

static void check_rewrite_back(const char *body, size_t n, sched_str target, sched_str incoming)
{
	arena a;
	arena_init(&a, 4096);
	sched_str got = sched_rewrite_back(body, n, target, incoming, &a);
	char *want = NULL;
	size_t wlen = 0;
	if (target.len && incoming.len &&
	    !(target.len == incoming.len && memcmp(target.p, incoming.p, target.len) == 0)) {
		static const char *const heads[2] = {"\"model\":\"", "\"model\": \""};
		for (int i = 0; i < 2 && !want; i++) {
			size_t fl, tl;
			char *from = pattern(heads[i], target.p, target.len, &fl);
			char *to = pattern(heads[i], incoming.p, incoming.len, &tl);
			want = naive_replace(body, n, from, fl, to, tl, &wlen);
			free(from);
			free(to);
		}
	}
	if (!want) {
		FUZZ_CHECK(got.p == body && got.len == n);
	} else {
		FUZZ_CHECK(got.p != body && got.len == wlen && memcmp(got.p, want, wlen) == 0);
		free(want);
	}
	arena_free(&a);
}

static void check_usage(const sched_usage *u)
{
	if (u->has_cached)
		FUZZ_CHECK(u->found);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fin f = {data, size};
	size_t tl, il;
	const uint8_t *tp = fin_take(&f, fin_u8(&f), &tl);
	const uint8_t *ip = fin_take(&f, fin_u8(&f), &il);
	char *target = fuzz_strdup(tp, tl), *incoming = fuzz_strdup(ip, il);
	char *body = malloc(f.n ? f.n : 1);
	FUZZ_CHECK(body);
	memcpy(body, f.p, f.n);
	size_t n = f.n;

	/* Nothing found leaves the usage untouched. */
	sched_usage u, before;
	memset(&u, 0x5a, sizeof(u));
	u.found = false;
	u.has_cached = true;
	before = u;
	sched_usage_parse_json(body, n, &u);
	if (!u.found)
		FUZZ_CHECK(memcmp(&u, &before, sizeof(u)) == 0);
	else
		check_usage(&u);
	u = before;
	sched_usage_parse_sse(body, n, &u);
	if (!u.found)
		FUZZ_CHECK(memcmp(&u, &before, sizeof(u)) == 0);
	else
		check_usage(&u);

	check_rewrite_back(body, n, (sched_str){target, tl}, (sched_str){incoming, il});
	free(body);
	free(target);
	free(incoming);
	return 0;
}
