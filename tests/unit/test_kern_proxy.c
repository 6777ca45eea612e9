/* The fallback proxy's HTTP/1.1 parsers (user/proxy/http.c): request and
 * response heads, framing decisions, hop-by-hop fields and the chunked
 * decoder fed in every split. No sockets, no privileges. */
#include <errno.h>
#include <string.h>

#include "harness.h"
#include "proxy/proxy_int.h"

static int req(const char *s, proxy_head *h)
{
	const char *why = "";
	return proxy_parse_request(s, strlen(s), h, &why);
}

static void test_request_head(void)
{
	proxy_head h;
	CHECK_INT(req("POST /v1/completions?x=1 HTTP/1.1\r\nHost: vip\r\n"
		      "Content-Length: 12\r\nX-Gateway-Inference-Objective:  critical \r\n\r\n",
		      &h),
		  0);
	CHECK_INT(h.mlen, 4);
	CHECK(!memcmp(h.method, "POST", 4));
	CHECK_INT(h.tlen, strlen("/v1/completions?x=1"));
	CHECK_INT(h.minor, 1);
	CHECK(h.has_length && h.length == 12 && !h.chunked && !h.close);
	const proxy_hdr *o = proxy_head_find(&h, "x-gateway-inference-objective");
	CHECK(o && o->vlen == 8 && !memcmp(o->val, "critical", 8)); /* blanks trimmed */
	CHECK(proxy_head_find(&h, "missing") == NULL);

	/* HTTP/1.0 closes unless keep-alive; 1.1 closes on Connection: close. */
	CHECK_INT(req("GET / HTTP/1.0\r\n\r\n", &h), 0);
	CHECK(h.close && h.minor == 0);
	CHECK_INT(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h), 0);
	CHECK(!h.close);
	CHECK_INT(req("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n", &h), 0);
	CHECK(h.close);
	CHECK_INT(req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
		      &h),
		  0);
	CHECK(h.chunked && !h.has_length && h.expect_continue);
	/* Repeated identical lengths are one length. */
	CHECK_INT(req("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", &h), 0);
	CHECK(h.has_length && h.length == 3);
}

static void test_request_head_refused(void)
{
	proxy_head h;
	const char *bad[] = {
		"GET / HTTP/1.1\n\n",                        /* bare LF */
		"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",      /* bare CR */
		"GET / HTTP/2.0\r\n\r\n",                    /* not HTTP/1.x */
		"GET  / HTTP/1.1\r\n\r\n",                   /* empty target */
		"GET /\r\n\r\n",                             /* HTTP/0.9 */
		"G(T / HTTP/1.1\r\n\r\n",                    /* not a token */
		"GET / HTTP/1.1\r\nHost : a\r\n\r\n",        /* blank before the colon */
		"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", /* obs-fold */
		"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",        /* control byte */
		"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
		/* Smuggling: both framings, or chunked in HTTP/1.0. */
		"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\nextra",
		"GET / HTTP/1.1\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = req(bad[i], &h);
		if (r != -EINVAL)
			fprintf(stderr, "  case %zu: %d\n", i, r);
		CHECK_INT(r, -EINVAL);
	}
	/* Codings other than chunked: 501. */
	CHECK_INT(req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &h), -ENOTSUP);
	CHECK_INT(req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
		      "Transfer-Encoding: chunked\r\n\r\n",
		      &h),
		  -ENOTSUP);
	/* More fields than the limit: 431. */
	char big[PROXY_MAX_HEADERS * 8 + 64];
	size_t o = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\n");
	for (int i = 0; i <= PROXY_MAX_HEADERS; i++)
		o += (size_t)snprintf(big + o, sizeof(big) - o, "A: b\r\n");
	snprintf(big + o, sizeof(big) - o, "\r\n");
	CHECK_INT(req(big, &h), -E2BIG);
}

static void test_response_head(void)
{
	proxy_head h;
	const char *why = "";
	const char *r1 = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
			 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
	CHECK_INT(proxy_parse_response(r1, strlen(r1), &h, &why), 0);
	CHECK_INT(h.status, 200);
	CHECK(h.rlen == 2 && !memcmp(h.reason, "OK", 2));
	CHECK(h.chunked && !h.has_length); /* chunked overrides the length */
	const char *r2 = "HTTP/1.0 404\r\n\r\n";
	CHECK_INT(proxy_parse_response(r2, strlen(r2), &h, &why), 0);
	CHECK(h.status == 404 && h.rlen == 0 && h.close);
	const char *bad[] = {"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n",
			     "HTTP/1.1 200OK\r\n\r\n", "ICY 200 OK\r\n\r\n", "HTTP/1.1 099 x\r\n\r\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_INT(proxy_parse_response(bad[i], strlen(bad[i]), &h, &why), -EINVAL);
}

static void test_hop_by_hop(void)
{
	proxy_head h;
	CHECK_INT(req("GET / HTTP/1.1\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\n"
		      "Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nX-Kept: 2\r\n\r\n",
		      &h),
		  0);
	CHECK(proxy_hop_by_hop(&h, "Connection", 10));
	CHECK(proxy_hop_by_hop(&h, "keep-alive", 10));
	CHECK(proxy_hop_by_hop(&h, "upgrade", 7));
	CHECK(proxy_hop_by_hop(&h, "transfer-encoding", 17));
	CHECK(proxy_hop_by_hop(&h, "x-secret", 8)); /* named by Connection */
	CHECK(!proxy_hop_by_hop(&h, "X-Kept", 6));
	CHECK(!proxy_hop_by_hop(&h, "Host", 4));
}

/* Decodes |in| fed in slices of |step| bytes; returns the data, or NULL on
 * an error; *done tells whether the message ended, *used how much was eaten. */
static const char *dechunk(const char *in, size_t step, bool *done, size_t *used)
{
	static char out[256];
	proxy_chunked c;
	memset(&c, 0, sizeof(c));
	size_t n = strlen(in), o = 0, pos = 0;
	*done = false;
	while (pos < n && !*done) {
		size_t len = n - pos < step ? n - pos : step;
		size_t fed = 0;
		while (fed < len && !*done) {
			const char *d;
			size_t dl;
			ssize_t r = proxy_chunked_feed(&c, in + pos + fed, len - fed, &d, &dl, done);
			if (r < 0)
				return NULL;
			if (dl)
				memcpy(out + o, d, dl);
			o += dl;
			fed += (size_t)r;
			if (r == 0)
				break;
		}
		pos += fed;
		if (fed < len && !*done)
			return NULL;
	}
	out[o] = '\0';
	*used = pos;
	return out;
}

static void test_chunked(void)
{
	const char *msg = "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
	for (size_t step = 1; step <= strlen(msg); step++) {
		bool done;
		size_t used;
		const char *d = dechunk(msg, step, &done, &used);
		CHECK(d != NULL);
		if (!d)
			continue;
		CHECK_STR(d, "hello, world");
		CHECK(done);
		CHECK_INT(used, strlen(msg) - 4); /* stops before the next message */
	}
	bool done;
	size_t used;
	CHECK(dechunk("A\r\n0123456789\r\n0\r\n\r\n", 3, &done, &used) && done);
	/* Incomplete: no error, not done. */
	CHECK(dechunk("5\r\nhel", 2, &done, &used) && !done);
	const char *bad[] = {"\r\n",                  /* no size */
			     "g\r\n",                 /* not hex */
			     "5\nhello\r\n0\r\n\r\n", /* bare LF */
			     "5\r\nhelloX\r\n",       /* data longer than its size */
			     "1000000000000000\r\n",  /* 16 hex digits: overflow guard */
			     "0\r\nA: b\nc\r\n\r\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(dechunk(bad[i], 1, &done, &used) == NULL);
}

int main(void)
{
	RUN(test_request_head);
	RUN(test_request_head_refused);
	RUN(test_response_head);
	RUN(test_hop_by_hop);
	RUN(test_chunked);
	return harness_done();
}
