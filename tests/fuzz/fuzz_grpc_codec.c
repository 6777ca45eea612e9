/* gRPC Length-Prefixed-Message framing (user/extproc/grpc_codec.c).
 *
 * Input: [max/64][chunk seed][percent-encode cap] then the byte stream. The
 * stream is decoded three ways, which must agree: by a naive reference
 * decoder written here, by xp_dec in one feed, and by xp_dec fed in chunks
 * of pseudo-random sizes (how DATA frames split a message must not matter).
 * A fourth pass stops from the callback and must have seen a prefix of the
 * same messages. The bytes also go through xp_grpc_percent_encode. */
#include <errno.h>

#include "extproc/grpc_codec.h"
#include "fuzz.h"

#define MAX_MSGS 4096

typedef struct rec {
	size_t n;
	size_t off[MAX_MSGS], len[MAX_MSGS]; /* into the input */
	const uint8_t *base;
	size_t stop_after; /* 0: never stop */
	uint64_t sum[MAX_MSGS];
} rec;

static uint64_t fnv(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

static int on_msg(void *arg, const uint8_t *msg, size_t len)
{
	rec *r = arg;
	FUZZ_CHECK(r->n < MAX_MSGS);
	FUZZ_CHECK(len == 0 || msg != NULL);
	r->len[r->n] = len;
	r->sum[r->n] = fnv(msg, len);
	r->n++;
	return r->stop_after && r->n >= r->stop_after ? 7 : 0;
}

/* The protocol as written in PROTOCOL-HTTP2.md, with no buffering tricks. */
static int reference(const uint8_t *p, size_t n, size_t max, rec *r, bool *partial,
		     uint32_t *bad_len)
{
	size_t i = 0;
	*partial = false;
	while (i < n) {
		if (n - i < XP_GRPC_PREFIX) {
			*partial = true;
			return 0;
		}
		if (p[i] == 1)
			return -ENOTSUP;
		if (p[i] != 0)
			return -EPROTO;
		uint32_t len = (uint32_t)p[i + 1] << 24 | (uint32_t)p[i + 2] << 16 |
			       (uint32_t)p[i + 3] << 8 | p[i + 4];
		if (len > max) {
			*bad_len = len;
			return -EMSGSIZE;
		}
		if (n - i - XP_GRPC_PREFIX < len) {
			*partial = true;
			return 0;
		}
		on_msg(r, p + i + XP_GRPC_PREFIX, len);
		i += XP_GRPC_PREFIX + len;
	}
	return 0;
}

static void same(const rec *a, const rec *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(a->len[i] == b->len[i]);
		FUZZ_CHECK(a->sum[i] == b->sum[i]);
	}
}

static void check_percent(const uint8_t *p, size_t n, size_t cap)
{
	char *s = fuzz_strdup(p, n);
	char *out = malloc(cap ? cap : 1);
	FUZZ_CHECK(out);
	size_t w = xp_grpc_percent_encode(out, cap, s);
	if (cap == 0) {
		FUZZ_CHECK(w == 0);
	} else {
		FUZZ_CHECK(w < cap && out[w] == '\0' && strlen(out) == w);
		/* Decoding the output gives back a prefix of the input. */
		size_t j = 0;
		for (size_t i = 0; i < w; i++, j++) {
			unsigned char c = (unsigned char)out[i];
			FUZZ_CHECK(c >= 0x20 && c <= 0x7e);
			if (c == '%') {
				FUZZ_CHECK(i + 2 < w);
				unsigned v;
				FUZZ_CHECK(sscanf(out + i + 1, "%2X", &v) == 1);
				FUZZ_CHECK((unsigned char)s[j] == v);
				i += 2;
			} else {
				FUZZ_CHECK(s[j] == (char)c);
			}
		}
		FUZZ_CHECK(j <= strlen(s));
	}
	free(out);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fin f = {data, size};
	size_t max = (size_t)fin_u8(&f) * 64;
	uint32_t seed = fin_u8(&f) | 1u;
	size_t pcap = fin_u8(&f);
	const uint8_t *p = f.p;
	size_t n = f.n;

	static rec ref, one, chunked, stopped;
	memset(&ref, 0, sizeof(ref));
	bool partial;
	uint32_t bad_len = 0;
	int rr = reference(p, n, max, &ref, &partial, &bad_len);

	xp_dec d;
	memset(&one, 0, sizeof(one));
	xp_dec_init(&d, max);
	int r1 = xp_dec_feed(&d, p, n, on_msg, &one);
	FUZZ_CHECK(r1 == rr);
	FUZZ_CHECK(one.n == ref.n);
	same(&one, &ref, ref.n);
	if (rr == 0)
		FUZZ_CHECK(xp_dec_partial(&d) == partial);
	if (rr == -EMSGSIZE)
		FUZZ_CHECK(xp_dec_bad_len(&d) == bad_len);
	/* Errors are sticky. */
	if (rr < 0)
		FUZZ_CHECK(xp_dec_feed(&d, (const uint8_t *)"\0\0\0\0\0", 5, on_msg, &one) == rr);
	xp_dec_free(&d);

	memset(&chunked, 0, sizeof(chunked));
	xp_dec_init(&d, max);
	int r2 = 0;
	for (size_t i = 0; i < n && r2 == 0;) {
		seed = seed * 1103515245u + 12345u;
		size_t k = 1 + (seed >> 16) % (seed & 0x100 ? 7 : 300);
		if (k > n - i)
			k = n - i;
		r2 = xp_dec_feed(&d, p + i, k, on_msg, &chunked);
		i += k;
	}
	FUZZ_CHECK(r2 == rr);
	FUZZ_CHECK(chunked.n == ref.n);
	same(&chunked, &ref, ref.n);
	if (rr == 0)
		FUZZ_CHECK(xp_dec_partial(&d) == partial);
	xp_dec_free(&d);

	if (ref.n > 0) {
		memset(&stopped, 0, sizeof(stopped));
		stopped.stop_after = 1 + seed % ref.n;
		xp_dec_init(&d, max);
		int r3 = 0;
		for (size_t i = 0; i < n && r3 == 0;) {
			size_t k = 1 + (i * 31 + seed) % 97;
			if (k > n - i)
				k = n - i;
			r3 = xp_dec_feed(&d, p + i, k, on_msg, &stopped);
			i += k;
		}
		FUZZ_CHECK(r3 == 7);
		FUZZ_CHECK(stopped.n == stopped.stop_after);
		same(&stopped, &ref, stopped.n);
		/* The decoder is ready for the next message after a stop. */
		FUZZ_CHECK(!xp_dec_partial(&d));
		xp_dec_free(&d);
	}

	uint8_t pfx[XP_GRPC_PREFIX];
	xp_grpc_prefix(pfx, (uint32_t)n);
	FUZZ_CHECK(pfx[0] == 0 && ((uint32_t)pfx[3] << 8 | pfx[4]) == (uint32_t)(n & 0xffff));

	check_percent(p, n, pcap);
	return 0;
}
