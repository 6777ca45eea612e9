/* The gRPC Length-Prefixed-Message codec: framing split every way, limits,
 * flags, the grpc-message percent-encoding, and the hand decoder of
 * ProcessingRequest's body case against protobuf-c. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/service/ext_proc/v3/external_processor.pb-c.h"
#include "extproc/grpc_codec.h"
#include "harness.h"

typedef Envoy__Service__ExtProc__V3__ProcessingRequest PReq;
typedef Envoy__Service__ExtProc__V3__HttpBody PBody;
typedef Envoy__Service__ExtProc__V3__HttpHeaders PHeaders;
#define CASE(x) ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_##x

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

/* ---- xp_pb_body_decode ---------------------------------------------------- */

/* Decodes |m| both ways. When the hand decoder takes it, protobuf-c must
 * decode the same values and the body must point into |m|; returns whether
 * the hand decoder took it. */
static bool agree(const uint8_t *m, size_t len)
{
	xp_pb_body b;
	bool ok = xp_pb_body_decode(m, len, &b);
	PReq *rq = envoy__service__ext_proc__v3__processing_request__unpack(NULL, len, m);
	if (ok) {
		CHECK(rq != NULL);
		if (!rq)
			return ok;
		CHECK_INT(rq->request_case, b.field);
		const PBody *hb = b.field == 4 ? rq->request_body : rq->response_body;
		CHECK(hb != NULL);
		if (hb) {
			CHECK(hb->body.len == b.len);
			CHECK(b.len == 0 || memcmp(hb->body.data, b.body, b.len) == 0);
			CHECK(!hb->end_of_stream == !b.end_of_stream);
			CHECK(!hb->end_of_stream_without_message ==
			      !b.end_of_stream_without_message);
			CHECK(!hb->grpc_message_compressed == !b.grpc_message_compressed);
		}
		CHECK(b.len == 0 || (b.body >= m && b.body + b.len <= m + len));
	}
	if (rq)
		envoy__service__ext_proc__v3__processing_request__free_unpacked(rq, NULL);
	return ok;
}

static size_t pack_body(uint8_t *out, bool response, const uint8_t *data, size_t n, int flags)
{
	PBody hb = ENVOY__SERVICE__EXT_PROC__V3__HTTP_BODY__INIT;
	hb.body.data = (uint8_t *)data;
	hb.body.len = n;
	hb.end_of_stream = flags & 1;
	hb.end_of_stream_without_message = (flags >> 1) & 1;
	hb.grpc_message_compressed = (flags >> 2) & 1;
	PReq rq = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__INIT;
	if (response) {
		rq.request_case = CASE(RESPONSE_BODY);
		rq.response_body = &hb;
	} else {
		rq.request_case = CASE(REQUEST_BODY);
		rq.request_body = &hb;
	}
	return envoy__service__ext_proc__v3__processing_request__pack(&rq, out);
}

static size_t put_varint(uint8_t *out, uint64_t v)
{
	size_t n = 0;
	do {
		out[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			out[n] |= 0x80;
		n++;
	} while (v);
	return n;
}

/* One unknown field of each wire type (varint, i64, len, i32). */
static size_t put_unknowns(uint8_t *out, uint32_t base)
{
	size_t o = 0;
	o += put_varint(out + o, (uint64_t)base << 3 | 0);
	o += put_varint(out + o, 0xffffffffffffffffull);
	o += put_varint(out + o, (uint64_t)(base + 1) << 3 | 1);
	memset(out + o, 0xab, 8);
	o += 8;
	o += put_varint(out + o, (uint64_t)(base + 2) << 3 | 2);
	o += put_varint(out + o, 3);
	memcpy(out + o, "xyz", 3);
	o += 3;
	o += put_varint(out + o, (uint64_t)(base + 3) << 3 | 5);
	memset(out + o, 0xcd, 4);
	return o + 4;
}

static void test_pb_body_protobuf_c(void)
{
	static uint8_t data[70000], m[70100];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	static const size_t sizes[] = {0, 1, 127, 128, 16383, 16384, 70000};
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
		for (int resp = 0; resp < 2; resp++)
			for (int flags = 0; flags < 8; flags++) {
				size_t n = pack_body(m, resp, data, sizes[si], flags);
				xp_pb_body b;
				CHECK(xp_pb_body_decode(m, n, &b));
				CHECK_INT(b.field, resp ? 5 : 4);
				CHECK(b.len == sizes[si]);
				CHECK(b.end_of_stream == (flags & 1));
				CHECK(agree(m, n));
			}
	/* The body points into the message, not into a copy. */
	size_t n = pack_body(m, false, data, 1000, 1);
	xp_pb_body b;
	CHECK(xp_pb_body_decode(m, n, &b));
	CHECK(b.body > m && b.body + 1000 <= m + n);
}

static void test_pb_body_unknown_fields(void)
{
	uint8_t inner[256], m[512];
	size_t i = 0;
	/* HttpBody: unknowns, body, unknowns, end_of_stream as a long varint. */
	i += put_unknowns(inner + i, 5);
	inner[i++] = 1 << 3 | 2;
	inner[i++] = 5;
	memcpy(inner + i, "hello", 5);
	i += 5;
	i += put_unknowns(inner + i, 100000);
	inner[i++] = 2 << 3 | 0;
	memcpy(inner + i, "\x80\x80\x01", 3);
	i += 3;
	/* ProcessingRequest: reserved field 1 and fields past 11 around it. */
	size_t o = 0;
	o += put_unknowns(m + o, 12);
	m[o++] = 1 << 3 | 0;
	m[o++] = 1;
	m[o++] = 4 << 3 | 2;
	m[o++] = (uint8_t)i;
	memcpy(m + o, inner, i);
	o += i;
	o += put_unknowns(m + o, 536870900);
	xp_pb_body b;
	CHECK(xp_pb_body_decode(m, o, &b));
	CHECK(b.len == 5 && memcmp(b.body, "hello", 5) == 0);
	CHECK(b.end_of_stream);
	CHECK(!b.end_of_stream_without_message && !b.grpc_message_compressed);
	CHECK(agree(m, o));
	/* Every truncation: taken only when protobuf-c agrees. */
	for (size_t k = 0; k < o; k++)
		agree(m, k);
	/* Every single byte changed, a few ways: never taken against protobuf-c. */
	for (size_t k = 0; k < o; k++) {
		static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x0b, 0x0c, 0x22};
		for (size_t v = 0; v < sizeof(vals); v++) {
			uint8_t save = m[k];
			m[k] = vals[v];
			agree(m, o);
			m[k] = save;
		}
	}
}

static void test_pb_body_fallback(void)
{
	uint8_t m[256] = {0};
	xp_pb_body b;
	/* Empty: no phase. */
	CHECK(!xp_pb_body_decode(m, 0, &b));
	/* request_headers, and a body with observability_mode: protobuf-c's. */
	PHeaders hh = ENVOY__SERVICE__EXT_PROC__V3__HTTP_HEADERS__INIT;
	PReq rq = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__INIT;
	rq.request_case = CASE(REQUEST_HEADERS);
	rq.request_headers = &hh;
	size_t n = envoy__service__ext_proc__v3__processing_request__pack(&rq, m);
	CHECK(!xp_pb_body_decode(m, n, &b));
	n = pack_body(m, false, (const uint8_t *)"x", 1, 1);
	m[n++] = 10 << 3 | 0; /* observability_mode */
	m[n++] = 1;
	CHECK(!xp_pb_body_decode(m, n, &b));
	CHECK(!agree(m, n));
	/* Two body cases, or the same one twice (protobuf-c merges). */
	n = pack_body(m, false, (const uint8_t *)"a", 1, 0);
	n += pack_body(m + n, true, (const uint8_t *)"b", 1, 1);
	CHECK(!xp_pb_body_decode(m, n, &b));
	n = pack_body(m, false, (const uint8_t *)"a", 1, 0);
	n += pack_body(m + n, false, (const uint8_t *)"b", 1, 1);
	CHECK(!xp_pb_body_decode(m, n, &b));
	/* A known field twice inside HttpBody. */
	static const uint8_t twice[] = {4 << 3 | 2, 4, 2 << 3, 1, 2 << 3, 0};
	CHECK(!xp_pb_body_decode(twice, sizeof(twice), &b));
	/* Wrong wire types: the body case as a varint, body as a varint,
	 * end_of_stream as i32. */
	static const uint8_t wt1[] = {4 << 3 | 0, 1};
	static const uint8_t wt2[] = {4 << 3 | 2, 2, 1 << 3 | 0, 1};
	static const uint8_t wt3[] = {4 << 3 | 2, 5, 2 << 3 | 5, 1, 0, 0, 0};
	CHECK(!xp_pb_body_decode(wt1, sizeof(wt1), &b));
	CHECK(!xp_pb_body_decode(wt2, sizeof(wt2), &b));
	CHECK(!xp_pb_body_decode(wt3, sizeof(wt3), &b));
	/* Groups and the invalid wire types 6 and 7, outside and inside. */
	for (unsigned wt = 3; wt <= 7; wt++) {
		if (wt == 5)
			continue;
		uint8_t g[] = {(uint8_t)(20 << 3 | wt), 0, 4 << 3 | 2, 0};
		CHECK(!xp_pb_body_decode(g, sizeof(g), &b));
		CHECK(!agree(g, sizeof(g)));
		uint8_t gi[] = {4 << 3 | 2, 2, (uint8_t)(20 << 3 | wt), 0};
		CHECK(!xp_pb_body_decode(gi, sizeof(gi), &b));
	}
	/* Field number 0, a 6-byte tag, a 6-byte length, an 11-byte varint. */
	static const uint8_t f0[] = {0 << 3 | 0, 1, 4 << 3 | 2, 0};
	static const uint8_t tag6[] = {0xa2, 0x80, 0x80, 0x80, 0x80, 0x00, 0};
	static const uint8_t len6[] = {4 << 3 | 2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
	static const uint8_t v11[] = {4 << 3 | 2, 12, 2 << 3, 0x81, 0x80, 0x80, 0x80, 0x80,
				      0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
	CHECK(!xp_pb_body_decode(f0, sizeof(f0), &b));
	CHECK(!xp_pb_body_decode(tag6, sizeof(tag6), &b));
	CHECK(!xp_pb_body_decode(len6, sizeof(len6), &b));
	CHECK(!xp_pb_body_decode(v11, sizeof(v11), &b));
	CHECK(!agree(len6, sizeof(len6)));
	CHECK(!agree(v11, sizeof(v11)));
	/* A 10-byte varint is fine; its bits past 64 still make a true. */
	static const uint8_t v10[] = {4 << 3 | 2, 11, 3 << 3, 0x80, 0x80, 0x80, 0x80, 0x80,
				      0x80, 0x80, 0x80, 0x80, 0x02};
	CHECK(xp_pb_body_decode(v10, sizeof(v10), &b));
	CHECK(b.end_of_stream_without_message);
	CHECK(agree(v10, sizeof(v10)));
}

static void test_pb_body_random(void)
{
	uint64_t x = 0x243f6a8885a308d3ull;
	uint8_t m[64];
	for (int round = 0; round < 200000; round++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t n = (size_t)(x % sizeof(m));
		uint64_t y = x;
		for (size_t i = 0; i < n; i++) {
			y = y * 6364136223846793005ull + 1442695040888963407ull;
			m[i] = (uint8_t)(y >> 56);
		}
		/* Mostly well-formed starts: a body case with a short length. */
		if (n > 2 && (x & 3)) {
			m[0] = (x & 4) ? 4 << 3 | 2 : 5 << 3 | 2;
			m[1] = (uint8_t)((x >> 8) % (n - 1));
		}
		agree(m, n);
	}
}

/* ---- hand-packed ProcessingResponse against protobuf-c ------------------ */

typedef Envoy__Service__ExtProc__V3__ProcessingResponse PResp;
typedef Envoy__Service__ExtProc__V3__CommonResponse PCommon;

/* The same message built with protobuf-c, packed by it. */
static size_t pc_pack(const xp_pb_resp *r, uint8_t *out)
{
	Envoy__Config__Core__V3__HeaderValue hv[64];
	Envoy__Config__Core__V3__HeaderValueOption hvo[64], *hvop[64];
	for (size_t i = 0; i < r->n_set; i++) {
		envoy__config__core__v3__header_value__init(&hv[i]);
		envoy__config__core__v3__header_value_option__init(&hvo[i]);
		/* protobuf-c reads strings up to their NUL: keys are NUL-ended. */
		hv[i].key = (char *)r->set[i].key;
		hv[i].raw_value.data = (uint8_t *)r->set[i].val;
		hv[i].raw_value.len = r->set[i].vlen;
		hvo[i].header = &hv[i];
		hvop[i] = &hvo[i];
	}
	Envoy__Service__ExtProc__V3__HeaderMutation hm;
	envoy__service__ext_proc__v3__header_mutation__init(&hm);
	hm.n_set_headers = r->n_set;
	hm.set_headers = hvop;
	Envoy__Service__ExtProc__V3__StreamedBodyResponse sb;
	envoy__service__ext_proc__v3__streamed_body_response__init(&sb);
	sb.body.data = (uint8_t *)r->body;
	sb.body.len = r->body_len;
	sb.end_of_stream = r->end_of_stream;
	Envoy__Service__ExtProc__V3__BodyMutation bm;
	envoy__service__ext_proc__v3__body_mutation__init(&bm);
	bm.mutation_case = ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__MUTATION_STREAMED_RESPONSE;
	bm.streamed_response = &sb;
	PCommon cr;
	envoy__service__ext_proc__v3__common_response__init(&cr);
	cr.header_mutation = r->mutation ? &hm : NULL;
	cr.body_mutation = r->streamed ? &bm : NULL;
	cr.clear_route_cache = r->clear_route_cache;
	Envoy__Service__ExtProc__V3__HeadersResponse hr;
	envoy__service__ext_proc__v3__headers_response__init(&hr);
	hr.response = &cr;
	Envoy__Service__ExtProc__V3__BodyResponse br;
	envoy__service__ext_proc__v3__body_response__init(&br);
	br.response = &cr;
	PResp m;
	envoy__service__ext_proc__v3__processing_response__init(&m);
	m.response_case = r->field;
	if (r->field == 1)
		m.request_headers = &hr;
	else if (r->field == 2)
		m.response_headers = &hr;
	else if (r->field == 3)
		m.request_body = &br;
	else
		m.response_body = &br;
	Google__Protobuf__Value sv, iv;
	Google__Protobuf__Struct inner, outer;
	Google__Protobuf__Struct__FieldsEntry ie, oe, *iep = &ie, *oep = &oe;
	google__protobuf__value__init(&sv);
	sv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	sv.string_value = (char *)r->md_value;
	google__protobuf__struct__fields_entry__init(&ie);
	ie.key = (char *)r->md_key;
	ie.value = &sv;
	google__protobuf__struct__init(&inner);
	inner.n_fields = 1;
	inner.fields = &iep;
	google__protobuf__value__init(&iv);
	iv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
	iv.struct_value = &inner;
	google__protobuf__struct__fields_entry__init(&oe);
	oe.key = "envoy.lb";
	oe.value = &iv;
	google__protobuf__struct__init(&outer);
	outer.n_fields = 1;
	outer.fields = &oep;
	if (r->md_key)
		m.dynamic_metadata = &outer;
	size_t n = protobuf_c_message_get_packed_size(&m.base);
	if (out)
		protobuf_c_message_pack(&m.base, out);
	return n;
}

static const size_t LENS[] = {0, 1, 2, 7, 8, 30, 100, 126, 127, 128, 129, 200, 16383, 16384,
			      16385, 70000};
#define N_LENS (sizeof(LENS) / sizeof(LENS[0]))

static bool same_as_protobuf_c(const xp_pb_resp *r)
{
	size_t n = xp_pb_resp_size(r), m = pc_pack(r, NULL);
	if (n != m)
		return false;
	uint8_t *a = malloc(n + 1), *b = malloc(m + 1);
	if (!a || !b)
		abort();
	a[n] = 0xee; /* writes exactly n bytes */
	xp_pb_resp_pack(r, a);
	pc_pack(r, b);
	bool ok = memcmp(a, b, n) == 0 && a[n] == 0xee;
	free(a);
	free(b);
	return ok;
}

/* Every case and flag, header, body and metadata lengths across the
 * varint steps (1, 2 and 3 bytes, nested so that the outer lengths cross
 * them too), empty keys and values left out as protobuf-c leaves them. */
static void test_pb_resp_protobuf_c(void)
{
	static char big[70001];
	static uint8_t body[70000];
	memset(big, 'k', sizeof(big) - 1);
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 7);
	int bad = 0, runs = 0;
	xp_pb_hdr h[64];
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (int round = 0; round < 6000; round++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		xp_pb_resp r = {0};
		r.field = 1 + (uint32_t)(x % 4);
		r.mutation = (x >> 2) & 1;
		r.n_set = r.mutation ? (size_t)((x >> 3) % 20) : 0;
		uint64_t y = x;
		for (size_t i = 0; i < r.n_set; i++) {
			y = y * 6364136223846793005ull + 1442695040888963407ull;
			size_t kl = LENS[(y >> 20) % (N_LENS - 2)], vl = LENS[(y >> 40) % N_LENS];
			if ((y >> 60) & 1)
				kl = (y >> 8) % 40; /* mostly short names */
			h[i].key = big + sizeof(big) - 1 - kl; /* NUL-ended for protobuf-c */
			h[i].klen = kl;
			h[i].val = big + (y & 63);
			h[i].vlen = vl > sizeof(big) - 64 ? sizeof(big) - 64 : vl;
		}
		r.set = h;
		r.streamed = (x >> 8) & 1;
		if (r.streamed) {
			r.body = body;
			r.body_len = LENS[(x >> 9) % N_LENS];
			r.end_of_stream = (x >> 14) & 1;
		}
		r.clear_route_cache = (x >> 15) & 1;
		if ((x >> 16) & 1) {
			size_t kl = (x >> 17) & 1 ? 30 : LENS[(x >> 18) % 13];
			size_t vl = LENS[(x >> 22) % N_LENS];
			r.md_key = big + sizeof(big) - 1 - kl;
			r.md_key_len = kl;
			r.md_value = big + sizeof(big) - 1 - vl;
			r.md_value_len = vl;
		}
		runs++;
		if (!same_as_protobuf_c(&r) && bad++ < 3)
			CHECK_INT(round, -1);
	}
	CHECK_INT(bad, 0);
	CHECK(runs == 6000);
	/* kepp's usual answer, spelled out: the destination, one echoed header,
	 * clear_route_cache and the metadata. */
	xp_pb_hdr d[2] = {{"x-gateway-destination-endpoint", "10.0.0.1:8000", 30, 13},
			  {"x-request-id", "", 12, 0}};
	xp_pb_resp r = {.field = 1, .mutation = true, .set = d, .n_set = 2,
			.clear_route_cache = true, .md_key = d[0].key, .md_key_len = 30,
			.md_value = d[0].val, .md_value_len = 13};
	CHECK(same_as_protobuf_c(&r));
	uint8_t out[256];
	CHECK(xp_pb_resp_size(&r) < sizeof(out));
	xp_pb_resp_pack(&r, out);
	PResp *m = envoy__service__ext_proc__v3__processing_response__unpack(
		NULL, xp_pb_resp_size(&r), out);
	CHECK(m != NULL);
	if (!m)
		return;
	CHECK_INT(m->response_case, 1);
	const PCommon *cr = m->request_headers->response;
	CHECK(cr->clear_route_cache);
	CHECK_INT((int)cr->header_mutation->n_set_headers, 2);
	CHECK_STR(cr->header_mutation->set_headers[0]->header->key, d[0].key);
	CHECK_INT((int)cr->header_mutation->set_headers[1]->header->raw_value.len, 0);
	CHECK_STR(m->dynamic_metadata->fields[0]->value->struct_value->fields[0]->value->string_value,
		  "10.0.0.1:8000");
	envoy__service__ext_proc__v3__processing_response__free_unpacked(m, NULL);
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
	RUN(test_pb_body_protobuf_c);
	RUN(test_pb_body_unknown_fields);
	RUN(test_pb_body_fallback);
	RUN(test_pb_body_random);
	RUN(test_pb_resp_protobuf_c);
	return harness_done();
}
