/* The fallback proxy's HTTP/1.1 parsers (user/proxy/http.c): request and
 * response heads, framing decisions, hop-by-hop fields and the chunked
 * decoder fed in every split; and its live service table
 * (user/proxy/services.c): swaps, and readers on other threads while a
 * publisher swaps (run it under ASan: a table freed under a reader is a
 * use-after-free there). No sockets, no privileges. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
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

/* A service at 10.<g>:<port> (v4-mapped, as the proxy keys them). */
static proxy_service svc(uint32_t g, uint16_t port, const char *model)
{
	proxy_service s;
	memset(&s, 0, sizeof(s));
	s.addr[10] = s.addr[11] = 0xff;
	s.addr[12] = 10;
	s.addr[13] = (uint8_t)(g >> 16);
	s.addr[14] = (uint8_t)(g >> 8);
	s.addr[15] = (uint8_t)g;
	s.port = port;
	snprintf(s.model, sizeof(s.model), "%s", model);
	return s;
}

static const char *model_at(const proxy_svc_table *t, uint32_t g, uint16_t port)
{
	proxy_service k = svc(g, port, "");
	const proxy_service *s = proxy_svcs_find(t, k.addr, k.port);
	return s ? s->model : NULL;
}

static void test_services_swap(void)
{
	proxy_svcs never;
	memset(&never, 0, sizeof(never));
	proxy_svcs_destroy(&never); /* init never ran (proxy_new failed early) */

	proxy_svcs s;
	proxy_service v[2] = {svc(9, 80, "m")};
	CHECK_INT(proxy_svcs_init(&s, v, 1), 0);
	const proxy_svc_table *t1 = proxy_svcs_acquire(&s);
	CHECK_INT(t1->n, 1);
	CHECK_STR(model_at(t1, 9, 80), "m");
	CHECK(model_at(t1, 9, 81) == NULL);  /* another port of the VIP */
	CHECK(model_at(t1, 10, 80) == NULL); /* another VIP */
	/* The annotation changes port 80's model and adds port 81. */
	v[0] = svc(9, 80, "batch");
	v[1] = svc(9, 81, "m");
	CHECK_INT(proxy_svcs_set(&s, v, 2), 0);
	memset(v, 0, sizeof(v)); /* the set is a copy */
	const proxy_svc_table *t2 = proxy_svcs_acquire(&s);
	CHECK_STR(model_at(t2, 9, 80), "batch");
	CHECK_STR(model_at(t2, 9, 81), "m");
	/* A reader that held the old table still sees it whole. */
	CHECK_INT(t1->n, 1);
	CHECK_STR(model_at(t1, 9, 80), "m");
	proxy_svcs_release(t1);
	proxy_svcs_release(t2);
	/* Removed: the set is empty, nothing matches. */
	CHECK_INT(proxy_svcs_set(&s, NULL, 0), 0);
	const proxy_svc_table *t3 = proxy_svcs_acquire(&s);
	CHECK_INT(t3->n, 0);
	CHECK(model_at(t3, 9, 80) == NULL);
	proxy_svcs_release(t3);
	proxy_svcs_destroy(&s);

	CHECK_INT(proxy_svcs_init(&s, NULL, 0), 0); /* kepp with no --fastpath flag */
	t1 = proxy_svcs_acquire(&s);
	CHECK_INT(t1->n, 0);
	proxy_svcs_release(t1);
	proxy_svcs_destroy(&s);
}

/* Generation |g|'s table: 1 + g % 8 services, all of VIP 10.<g>, ports
 * 1000.., model "gen-<g>": a reader can tell a torn or reused table. */
#define GENS 3000
#define READERS 4

typedef struct reader_arg {
	proxy_svcs *s;
	atomic_bool *stop;
	long reads, errors;
	uint32_t last;
} reader_arg;

static int check_table(const proxy_svc_table *t, uint32_t *g)
{
	unsigned gen;
	if (t->n < 1 || t->n > 8 || sscanf(t->v[0].model, "gen-%u", &gen) != 1)
		return -1;
	if (t->n != 1 + gen % 8)
		return -1;
	char want[32];
	snprintf(want, sizeof(want), "gen-%u", gen);
	for (size_t i = 0; i < t->n; i++) {
		proxy_service e = svc(gen, (uint16_t)(1000 + i), want);
		if (memcmp(&t->v[i], &e, sizeof(e)))
			return -1;
	}
	if (proxy_svcs_find(t, t->v[t->n - 1].addr, (uint16_t)(1000 + t->n - 1)) !=
	    &t->v[t->n - 1])
		return -1;
	*g = gen;
	return 0;
}

static void *reader(void *arg)
{
	reader_arg *a = arg;
	while (!atomic_load(a->stop)) {
		const proxy_svc_table *t = proxy_svcs_acquire(a->s);
		uint32_t g;
		/* Publishes are ordered: a reader never goes back in time. */
		if (check_table(t, &g) < 0 || g < a->last)
			a->errors++;
		else
			a->last = g;
		proxy_svcs_release(t);
		a->reads++;
	}
	return NULL;
}

static void publish_gen(proxy_svcs *s, uint32_t g)
{
	proxy_service v[8];
	char model[32];
	snprintf(model, sizeof(model), "gen-%u", g);
	for (uint32_t i = 0; i < 1 + g % 8; i++)
		v[i] = svc(g, (uint16_t)(1000 + i), model);
	CHECK_INT(proxy_svcs_set(s, v, 1 + g % 8), 0);
}

static void test_services_concurrent_readers(void)
{
	proxy_svcs s;
	proxy_service first = svc(0, 1000, "gen-0");
	CHECK_INT(proxy_svcs_init(&s, &first, 1), 0);
	atomic_bool stop;
	atomic_init(&stop, false);
	reader_arg args[READERS];
	pthread_t th[READERS];
	for (int i = 0; i < READERS; i++) {
		args[i] = (reader_arg){.s = &s, .stop = &stop};
		CHECK_INT(pthread_create(&th[i], NULL, reader, &args[i]), 0);
	}
	/* A table held across many swaps stays whole until released. */
	const proxy_svc_table *held = proxy_svcs_acquire(&s);
	for (uint32_t g = 1; g <= GENS; g++) {
		publish_gen(&s, g);
		if (g == GENS / 2) {
			uint32_t hg = 99;
			CHECK_INT(check_table(held, &hg), 0);
			CHECK_INT(hg, 0);
			proxy_svcs_release(held);
		}
	}
	atomic_store(&stop, true);
	long reads = 0;
	for (int i = 0; i < READERS; i++) {
		pthread_join(th[i], NULL);
		CHECK_INT(args[i].errors, 0);
		reads += args[i].reads;
	}
	CHECK(reads >= READERS); /* every reader ran */
	const proxy_svc_table *t = proxy_svcs_acquire(&s);
	uint32_t g = 0;
	CHECK_INT(check_table(t, &g), 0);
	CHECK_INT(g, GENS); /* the last publish is what readers get now */
	proxy_svcs_release(t);
	proxy_svcs_destroy(&s);
}

int main(void)
{
	RUN(test_request_head);
	RUN(test_request_head_refused);
	RUN(test_response_head);
	RUN(test_hop_by_hop);
	RUN(test_chunked);
	RUN(test_services_swap);
	RUN(test_services_concurrent_readers);
	return harness_done();
}
