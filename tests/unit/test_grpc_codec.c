/* The gRPC Length-Prefixed-Message codec: framing split every way, limits,
 * flags, and the grpc-message percent-encoding. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "extproc/grpc_codec.h"
#include "harness.h"

#define MAX_MSGS 64

typedef struct got {
	size_t n;
	size_t len[MAX_MSGS];
	uint8_t *msg[MAX_MSGS];
	int stop_after; /* return 1 after this many messages (0: never) */
} got;

static int on_msg(void *arg, const uint8_t *m, size_t len)
{
	got *g = arg;
	if (g->n < MAX_MSGS) {
		g->msg[g->n] = malloc(len ? len : 1);
		memcpy(g->msg[g->n], m, len);
		g->len[g->n] = len;
	}
	g->n++;
	return g->stop_after && g->n == (size_t)g->stop_after ? 1 : 0;
}

static void got_free(got *g)
{
	for (size_t i = 0; i < g->n && i < MAX_MSGS; i++)
		free(g->msg[i]);
	memset(g, 0, sizeof(*g));
}

/* Appends one framed message to |buf| at |*off|. */
static void put(uint8_t *buf, size_t *off, const uint8_t *m, size_t len)
{
	xp_grpc_prefix(buf + *off, (uint32_t)len);
	memcpy(buf + *off + XP_GRPC_PREFIX, m, len);
	*off += XP_GRPC_PREFIX + len;
}

static void test_prefix(void)
{
	uint8_t p[5];
	xp_grpc_prefix(p, 0x01020304);
	CHECK_INT(p[0], 0);
	CHECK_INT(p[1], 1);
	CHECK_INT(p[2], 2);
	CHECK_INT(p[3], 3);
	CHECK_INT(p[4], 4);
}

/* One message split into two feeds at every byte boundary, then into
 * one-byte feeds. */
static void test_split_every_boundary(void)
{
	uint8_t msg[300], buf[400];
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7 + 1);
	size_t total = 0;
	put(buf, &total, msg, sizeof(msg));
	for (size_t cut = 0; cut <= total; cut++) {
		xp_dec d;
		got g = {0};
		xp_dec_init(&d, 1024);
		CHECK_INT(xp_dec_feed(&d, buf, cut, on_msg, &g), 0);
		CHECK_INT(g.n, cut == total ? 1 : 0);
		CHECK(xp_dec_partial(&d) == (cut > 0 && cut < total));
		CHECK_INT(xp_dec_feed(&d, buf + cut, total - cut, on_msg, &g), 0);
		CHECK_INT(g.n, 1);
		CHECK_INT(g.len[0], sizeof(msg));
		CHECK(g.n == 1 && memcmp(g.msg[0], msg, sizeof(msg)) == 0);
		CHECK(!xp_dec_partial(&d));
		got_free(&g);
		xp_dec_free(&d);
	}
	xp_dec d;
	got g = {0};
	xp_dec_init(&d, 1024);
	for (size_t i = 0; i < total; i++)
		CHECK_INT(xp_dec_feed(&d, buf + i, 1, on_msg, &g), 0);
	CHECK_INT(g.n, 1);
	CHECK(g.n == 1 && memcmp(g.msg[0], msg, sizeof(msg)) == 0);
	got_free(&g);
	xp_dec_free(&d);
}

/* Several messages, including empty ones, in one buffer and cut three ways. */
static void test_many_in_one_buffer(void)
{
	uint8_t buf[1024];
	size_t total = 0;
	const char *parts[] = {"alpha", "", "beta-beta", "", "", "gamma"};
	size_t np = sizeof(parts) / sizeof(parts[0]);
	for (size_t i = 0; i < np; i++)
		put(buf, &total, (const uint8_t *)parts[i], strlen(parts[i]));

	for (size_t a = 0; a <= total; a += 3) {
		for (size_t b = a; b <= total; b += 5) {
			xp_dec d;
			got g = {0};
			xp_dec_init(&d, 64);
			CHECK_INT(xp_dec_feed(&d, buf, a, on_msg, &g), 0);
			CHECK_INT(xp_dec_feed(&d, buf + a, b - a, on_msg, &g), 0);
			CHECK_INT(xp_dec_feed(&d, buf + b, total - b, on_msg, &g), 0);
			CHECK_INT(g.n, np);
			for (size_t i = 0; i < np && i < g.n; i++) {
				CHECK_INT(g.len[i], strlen(parts[i]));
				CHECK(memcmp(g.msg[i], parts[i], g.len[i]) == 0);
			}
			CHECK(!xp_dec_partial(&d));
			got_free(&g);
			xp_dec_free(&d);
		}
	}
}

static void test_zero_length(void)
{
	uint8_t z[5] = {0, 0, 0, 0, 0};
	xp_dec d;
	got g = {0};
	xp_dec_init(&d, 0);
	/* A limit of 0 still admits empty messages, one prefix byte at a time. */
	for (int i = 0; i < 5; i++)
		CHECK_INT(xp_dec_feed(&d, z + i, 1, on_msg, &g), 0);
	CHECK_INT(g.n, 1);
	CHECK_INT(g.len[0], 0);
	CHECK(!xp_dec_partial(&d));
	CHECK_INT(xp_dec_feed(&d, z, 0, on_msg, &g), 0);
	CHECK_INT(g.n, 1);
	got_free(&g);
	xp_dec_free(&d);
}

/* Oversize is refused from the prefix alone: nothing is buffered, and the
 * error sticks. */
static void test_oversize(void)
{
	uint8_t buf[16];
	xp_dec d;
	got g = {0};
	xp_dec_init(&d, 100);
	xp_grpc_prefix(buf, 101);
	CHECK_INT(xp_dec_feed(&d, buf, 5, on_msg, &g), -EMSGSIZE);
	CHECK_INT(xp_dec_bad_len(&d), 101);
	CHECK(d.buf == NULL);
	CHECK_INT(d.cap, 0);
	CHECK_INT(xp_dec_feed(&d, buf, 1, on_msg, &g), -EMSGSIZE);
	CHECK_INT(g.n, 0);
	xp_dec_free(&d);

	/* 4 GiB - 1 announced: refused before any allocation. */
	xp_dec_init(&d, 4u << 20);
	uint8_t huge[5] = {0, 0xff, 0xff, 0xff, 0xff};
	CHECK_INT(xp_dec_feed(&d, huge, 5, on_msg, &g), -EMSGSIZE);
	CHECK(d.buf == NULL);
	CHECK(xp_dec_bad_len(&d) == 0xffffffffu);
	xp_dec_free(&d);

	/* Exactly at the limit is fine. */
	uint8_t at[5 + 100];
	size_t off = 0;
	memset(at, 'x', sizeof(at));
	xp_dec_init(&d, 100);
	put(at, &off, at + 5, 100);
	CHECK_INT(xp_dec_feed(&d, at, off, on_msg, &g), 0);
	CHECK_INT(g.n, 1);
	got_free(&g);
	xp_dec_free(&d);
}

/* A split message's buffer grows with what arrives, not with what the
 * prefix announces. */
static void test_grows_with_data(void)
{
	uint8_t pre[5];
	xp_dec d;
	got g = {0};
	xp_dec_init(&d, 1 << 20);
	xp_grpc_prefix(pre, 1 << 20);
	CHECK_INT(xp_dec_feed(&d, pre, 5, on_msg, &g), 0);
	uint8_t chunk[10] = "0123456789";
	CHECK_INT(xp_dec_feed(&d, chunk, 10, on_msg, &g), 0);
	CHECK(d.cap < 65536);
	CHECK(xp_dec_partial(&d));
	CHECK_INT(g.n, 0);
	xp_dec_free(&d);
}

static void test_flags(void)
{
	uint8_t comp[6] = {1, 0, 0, 0, 1, 'x'};
	uint8_t bad[6] = {2, 0, 0, 0, 1, 'x'};
	xp_dec d;
	got g = {0};
	xp_dec_init(&d, 100);
	CHECK_INT(xp_dec_feed(&d, comp, sizeof(comp), on_msg, &g), -ENOTSUP);
	CHECK_INT(xp_dec_feed(&d, comp, sizeof(comp), on_msg, &g), -ENOTSUP);
	CHECK_INT(g.n, 0);
	xp_dec_free(&d);

	xp_dec_init(&d, 100);
	CHECK_INT(xp_dec_feed(&d, bad, sizeof(bad), on_msg, &g), -EPROTO);
	CHECK_INT(g.n, 0);
	xp_dec_free(&d);

	/* A good message before a compressed one is still delivered. */
	uint8_t two[16];
	size_t off = 0;
	put(two, &off, (const uint8_t *)"ok", 2);
	memcpy(two + off, comp, sizeof(comp));
	off += sizeof(comp);
	xp_dec_init(&d, 100);
	CHECK_INT(xp_dec_feed(&d, two, off, on_msg, &g), -ENOTSUP);
	CHECK_INT(g.n, 1);
	got_free(&g);
	xp_dec_free(&d);
}

/* A callback may stop the feed; the decoder stays consistent and the next
 * feed resumes with the next message. */
static void test_callback_stop(void)
{
	uint8_t buf[64];
	size_t off = 0;
	put(buf, &off, (const uint8_t *)"one", 3);
	size_t first = off;
	put(buf, &off, (const uint8_t *)"two", 3);
	xp_dec d;
	got g = {.stop_after = 1};
	xp_dec_init(&d, 100);
	CHECK_INT(xp_dec_feed(&d, buf, off, on_msg, &g), 1);
	CHECK_INT(g.n, 1);
	CHECK(!xp_dec_partial(&d));
	g.stop_after = 0;
	CHECK_INT(xp_dec_feed(&d, buf + first, off - first, on_msg, &g), 0);
	CHECK_INT(g.n, 2);
	CHECK(g.n == 2 && memcmp(g.msg[1], "two", 3) == 0);
	got_free(&g);
	xp_dec_free(&d);
}

/* Random bytes in random cuts: the decoder never reads out of bounds, never
 * delivers more than the limit, and errors stick (run under ASan). */
static void test_random_input(void)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	uint8_t buf[4096];
	for (int round = 0; round < 2000; round++) {
		for (size_t i = 0; i < sizeof(buf); i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[i] = (uint8_t)x;
		}
		/* Make flag bytes and small lengths common. */
		if (round & 1) {
			buf[0] = 0;
			buf[1] = buf[2] = 0;
		}
		xp_dec d;
		got g = {0};
		xp_dec_init(&d, 512);
		size_t off = 0;
		int r = 0;
		while (off < sizeof(buf) && r == 0) {
			size_t k = (size_t)(x % 300) + 1;
			x = x * 6364136223846793005ull + 1;
			if (k > sizeof(buf) - off)
				k = sizeof(buf) - off;
			r = xp_dec_feed(&d, buf + off, k, on_msg, &g);
			off += k;
		}
		CHECK(r == 0 || r == -EMSGSIZE || r == -ENOTSUP || r == -EPROTO);
		for (size_t i = 0; i < g.n && i < MAX_MSGS; i++)
			CHECK(g.len[i] <= 512);
		if (r)
			CHECK_INT(xp_dec_feed(&d, buf, 1, on_msg, &g), r);
		got_free(&g);
		xp_dec_free(&d);
	}
}

static void test_percent_encode(void)
{
	char out[64];
	CHECK_INT(xp_grpc_percent_encode(out, sizeof(out), "plain text"), 10);
	CHECK_STR(out, "plain text");
	xp_grpc_percent_encode(out, sizeof(out), "100% \"ok\"\n\xc3\xa9");
	CHECK_STR(out, "100%25 \"ok\"%0A%C3%A9");
	/* Truncation keeps escapes whole. */
	CHECK_INT(xp_grpc_percent_encode(out, 5, "ab\ncd"), 2);
	CHECK_STR(out, "ab");
	CHECK_INT(xp_grpc_percent_encode(out, 1, "abc"), 0);
	CHECK_STR(out, "");
}

int main(void)
{
	RUN(test_prefix);
	RUN(test_split_every_boundary);
	RUN(test_many_in_one_buffer);
	RUN(test_zero_length);
	RUN(test_oversize);
	RUN(test_grows_with_data);
	RUN(test_flags);
	RUN(test_callback_stop);
	RUN(test_random_input);
	RUN(test_percent_encode);
	return harness_done();
}
