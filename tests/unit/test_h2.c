/* The gRPC server end to end: an xp_server (h2c and TLS) runs on its own
 * event_base in a background thread, and a real, independent gRPC client
 * (gRPC C-core through Debian's python3-grpcio, tests/unit/h2_client.py)
 * drives it. The client prints what it saw; the assertions are here. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "extproc/grpc.h"
#include "extproc/grpc_codec.h"
#include "extproc/health.h"
#include "harness.h"
#include "store/store.h"
#include "util/log.h"

/* Each client run is bounded, so a hang fails the test instead of stalling it. */
#define PY "timeout -k 5 60 /usr/bin/python3"
#define MAX_MSG (1u << 20)
#define OUT_CAP 65536

static struct event_base *base;
static pthread_t loop_thread;
static xp_server *srv_h2c, *srv_tls, *srv_dir, *srv_any[2];
static xp_tls *tls_self, *tls_dir;
static store *st_store;
static xp_health health;
static xp_method methods[4];
static size_t n_methods;
static char script[4096];
static char cert_dir[] = "/tmp/kepp-test-h2-XXXXXX";

/* Echo handler bookkeeping, written on the loop thread. */
static atomic_int n_open, n_close, n_cancelled, n_live, peak_live, n_hdr_ok;

/* ---- the echo method ------------------------------------------------------ */

static void *echo_open(xp_stream *st, void *mctx)
{
	const char *te = xp_stream_header(st, "te");
	const char *ct = xp_stream_header(st, "content-type");
	if (te && strcmp(te, "trailers") == 0 && ct && strncmp(ct, "application/grpc", 16) == 0)
		atomic_fetch_add(&n_hdr_ok, 1);
	atomic_fetch_add(&n_open, 1);
	int live = atomic_fetch_add(&n_live, 1) + 1;
	int p = atomic_load(&peak_live);
	while (live > p && !atomic_compare_exchange_weak(&peak_live, &p, live))
		;
	return mctx;
}

/* "finish" ends the stream OK with a message; "fail:<text>" ends it with
 * INVALID_ARGUMENT and <text>; anything else comes back. */
static void echo_message(xp_stream *st, void *ctx, const uint8_t *msg, size_t len)
{
	if (len == 6 && memcmp(msg, "finish", 6) == 0) {
		xp_stream_finish(st, XP_GRPC_OK, "done");
		return;
	}
	if (len >= 5 && memcmp(msg, "fail:", 5) == 0) {
		char text[256];
		snprintf(text, sizeof(text), "%.*s", (int)(len - 5), (const char *)msg + 5);
		xp_stream_finish(st, XP_GRPC_INVALID_ARGUMENT, text);
		return;
	}
	CHECK_INT(xp_stream_send(st, msg, len), 0);
}

static void echo_half_close(xp_stream *st, void *ctx)
{
	xp_stream_finish(st, XP_GRPC_OK, NULL);
	/* Finished streams take nothing more. */
	CHECK_INT(xp_stream_send(st, (const uint8_t *)"x", 1), -ECANCELED);
}

static void echo_close(xp_stream *st, void *ctx, bool cancelled)
{
	atomic_fetch_sub(&n_live, 1);
	atomic_fetch_add(&n_close, 1);
	if (cancelled)
		atomic_fetch_add(&n_cancelled, 1);
}

/* ---- the loop thread --------------------------------------------------- */

static void *loop_main(void *arg)
{
	event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

typedef struct job {
	void (*fn)(void *);
	void *arg;
	atomic_bool done;
} job;

static void job_cb(evutil_socket_t fd, short what, void *arg)
{
	job *j = arg;
	j->fn(j->arg);
	atomic_store(&j->done, true);
}

/* Runs |fn| on the loop thread and waits for it. */
static void on_loop(void (*fn)(void *), void *arg)
{
	job j = {.fn = fn, .arg = arg};
	struct timeval now = {0, 0};
	event_base_once(base, -1, EV_TIMEOUT, job_cb, &j, &now);
	while (!atomic_load(&j.done))
		usleep(1000);
}

static void do_break(void *arg)
{
	event_base_loopbreak(base);
}

static void do_drain(void *arg)
{
	xp_server_drain(arg);
}

/* The waits below are for what must happen; their bound only ends a hang.
 * It is generous because a loaded machine (a shared CI runner, a sanitizer
 * build) can starve the loop thread for seconds: a tight bound would turn
 * slowness into a failure. */
#define WAIT_TICKS 6000 /* x 10 ms */

/* Waits for |*v| to reach |want|. */
static int wait_for(atomic_int *v, int want)
{
	for (int i = 0; i < WAIT_TICKS && atomic_load(v) < want; i++)
		usleep(10000);
	return atomic_load(v);
}

static size_t wait_streams_gone(xp_server *s)
{
	for (int i = 0; i < WAIT_TICKS && xp_server_active_streams(s) > 0; i++)
		usleep(10000);
	return xp_server_active_streams(s);
}

/* ---- the client ---------------------------------------------------------- */

/* Runs the client with |args|; its stdout goes to |out|. Returns its exit
 * status (0 when it ran to the end). */
static int client(char *out, const char *fmt, ...)
{
	char args[2048], cmd[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd), PY " %s %s", script, args);
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	size_t n = fread(out, 1, OUT_CAP - 1, p);
	out[n] = '\0';
	int rc = pclose(p);
	if (rc != 0)
		fprintf(stderr, "  client %s exited %d:\n%s", args, rc, out);
	return rc;
}

/* The value printed for |key| ("key=value" lines), or "" when absent. */
static const char *val(const char *out, const char *key)
{
	static char buf[4096];
	size_t kl = strlen(key);
	for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (strncmp(l, key, kl) == 0 && l[kl] == '=') {
			const char *v = l + kl + 1;
			size_t n = strcspn(v, "\n");
			if (n >= sizeof(buf))
				n = sizeof(buf) - 1;
			memcpy(buf, v, n);
			buf[n] = '\0';
			return buf;
		}
	}
	return "";
}

/* ---- a raw HTTP/2 client (nghttp2) for what grpcio will not send ---------- */

typedef struct rawc {
	int fd;
	nghttp2_session *h2;
	int32_t id;
	char http_status[8];
	char grpc_status[8];
	char grpc_message[256];
	bool status_in_headers; /* grpc-status came in the response HEADERS */
	uint8_t body[4096];
	size_t body_len;
	bool closed;
	uint32_t close_code;
	const uint8_t *req;   /* request body, sent in DATA frames of |chunk| bytes */
	size_t req_len, req_off, chunk;
	bool end_stream;
} rawc;

static ssize_t raw_send(nghttp2_session *h2, const uint8_t *d, size_t n, int fl, void *u)
{
	rawc *c = u;
	ssize_t w = write(c->fd, d, n);
	return w < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : w;
}

static int raw_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t nl,
		      const uint8_t *value, size_t vl, uint8_t flags, void *u)
{
	rawc *c = u;
	char *dst = NULL;
	size_t cap = 0;
	if (nl == 7 && memcmp(name, ":status", 7) == 0) {
		dst = c->http_status;
		cap = sizeof(c->http_status);
	} else if (nl == 11 && memcmp(name, "grpc-status", 11) == 0) {
		dst = c->grpc_status;
		cap = sizeof(c->grpc_status);
		c->status_in_headers = f->headers.cat == NGHTTP2_HCAT_RESPONSE;
	} else if (nl == 12 && memcmp(name, "grpc-message", 12) == 0) {
		dst = c->grpc_message;
		cap = sizeof(c->grpc_message);
	}
	if (dst)
		snprintf(dst, cap, "%.*s", (int)vl, (const char *)value);
	return 0;
}

static int raw_data(nghttp2_session *h2, uint8_t fl, int32_t id, const uint8_t *d, size_t n,
		    void *u)
{
	rawc *c = u;
	if (c->body_len + n <= sizeof(c->body)) {
		memcpy(c->body + c->body_len, d, n);
		c->body_len += n;
	}
	return 0;
}

static int raw_close(nghttp2_session *h2, int32_t id, uint32_t code, void *u)
{
	rawc *c = u;
	c->closed = true;
	c->close_code = code;
	return 0;
}

static ssize_t raw_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
			uint32_t *flags, nghttp2_data_source *src, void *u)
{
	rawc *c = u;
	size_t n = c->req_len - c->req_off;
	if (n > c->chunk)
		n = c->chunk;
	if (n > len)
		n = len;
	memcpy(buf, c->req + c->req_off, n);
	c->req_off += n;
	if (c->req_off == c->req_len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (!c->end_stream)
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
	}
	return (ssize_t)n;
}

/* Sends one request (headers |nv|, then |body| in DATA frames of |chunk|
 * bytes, END_STREAM when |end_stream|) and runs until the stream closes
 * or 5 s pass. */
static void raw_call(rawc *c, int port, const nghttp2_nv *nv, size_t nnv, const uint8_t *body,
		     size_t len, size_t chunk, bool end_stream)
{
	memset(c, 0, sizeof(*c));
	c->req = body;
	c->req_len = len;
	c->chunk = chunk;
	c->end_stream = end_stream;
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	CHECK_INT(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	struct timeval tv = {0, 100000};
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_send_callback(cb, raw_send);
	nghttp2_session_callbacks_set_on_header_callback(cb, raw_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, raw_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, raw_close);
	nghttp2_session_client_new(&c->h2, cb, c);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, NULL, 0);
	nghttp2_data_provider dp = {.read_callback = raw_read};
	c->id = nghttp2_submit_request(c->h2, NULL, nv, nnv, end_stream && !len ? NULL : &dp, c);
	CHECK(c->id > 0);
	for (int i = 0; i < 50 && !c->closed; i++) {
		if (nghttp2_session_send(c->h2) != 0)
			break;
		uint8_t buf[16384];
		ssize_t r = read(c->fd, buf, sizeof(buf));
		if (r == 0)
			break;
		if (r > 0 && nghttp2_session_mem_recv(c->h2, buf, (size_t)r) < 0)
			break;
	}
	CHECK(c->closed);
	nghttp2_session_del(c->h2);
	close(c->fd);
}

#define RNV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}

static void grpc_request(nghttp2_nv *nv, const char *method, const char *path, const char *ct)
{
	nghttp2_nv base_nv[] = {
		RNV(":method", method), RNV(":scheme", "http"), RNV(":authority", "test"),
		RNV(":path", path), RNV("content-type", ct), RNV("te", "trailers"),
	};
	memcpy(nv, base_nv, sizeof(base_nv));
}

/* A message split into one-byte DATA frames arrives whole; the response is
 * HEADERS, DATA, trailers. */
static void test_raw_split_frames(void)
{
	nghttp2_nv nv[6];
	uint8_t msg[5 + 11];
	xp_grpc_prefix(msg, 11);
	memcpy(msg + 5, "hello-world", 11);
	grpc_request(nv, "POST", "/kepp.test.Echo/Bidi", "application/grpc");
	rawc c;
	raw_call(&c, xp_server_port(srv_h2c), nv, 6, msg, sizeof(msg), 1, true);
	CHECK_STR(c.http_status, "200");
	CHECK_STR(c.grpc_status, "0");
	CHECK(!c.status_in_headers);
	CHECK_INT(c.body_len, sizeof(msg));
	CHECK(memcmp(c.body, msg, sizeof(msg)) == 0);
	CHECK_INT(c.close_code, NGHTTP2_NO_ERROR);
}

/* END_STREAM in the middle of a message is an error, not a message. */
static void test_raw_truncated(void)
{
	nghttp2_nv nv[6];
	uint8_t msg[5 + 3];
	xp_grpc_prefix(msg, 10);
	memcpy(msg + 5, "abc", 3);
	grpc_request(nv, "POST", "/kepp.test.Echo/Bidi", "application/grpc");
	rawc c;
	raw_call(&c, xp_server_port(srv_h2c), nv, 6, msg, sizeof(msg), 4, true);
	CHECK_STR(c.grpc_status, "13");
	CHECK_STR(c.grpc_message, "grpc: client sent a truncated message");
	CHECK_INT(c.body_len, 0);
}

/* Not gRPC: wrong method or content-type get HTTP errors (Trailers-Only). */
static void test_raw_not_grpc(void)
{
	nghttp2_nv nv[6];
	rawc c;
	grpc_request(nv, "GET", "/kepp.test.Echo/Bidi", "application/grpc");
	raw_call(&c, xp_server_port(srv_h2c), nv, 6, NULL, 0, 1, true);
	CHECK_STR(c.http_status, "405");
	grpc_request(nv, "POST", "/kepp.test.Echo/Bidi", "application/json");
	raw_call(&c, xp_server_port(srv_h2c), nv, 6, NULL, 0, 1, true);
	CHECK_STR(c.http_status, "415");
	grpc_request(nv, "POST", "/kepp.test.Echo/Bidi", "application/grpcx");
	raw_call(&c, xp_server_port(srv_h2c), nv, 6, NULL, 0, 1, true);
	CHECK_STR(c.http_status, "415");
	/* Unknown method: Trailers-Only, the status in the response HEADERS. */
	grpc_request(nv, "POST", "/kepp.test.Echo/Nope", "application/grpc+proto");
	raw_call(&c, xp_server_port(srv_h2c), nv, 6, NULL, 0, 1, true);
	CHECK_STR(c.http_status, "200");
	CHECK_STR(c.grpc_status, "12");
	CHECK(c.status_in_headers);
}

static void test_raw_too_many_headers(void)
{
	nghttp2_nv nv[6 + 70];
	char names[70][16];
	grpc_request(nv, "POST", "/kepp.test.Echo/Bidi", "application/grpc");
	for (int i = 0; i < 70; i++) {
		snprintf(names[i], sizeof(names[i]), "x-h%d", i);
		nv[6 + i] = (nghttp2_nv)RNV(names[i], "v");
	}
	rawc c;
	int opened = atomic_load(&n_open);
	raw_call(&c, xp_server_port(srv_h2c), nv, 76, NULL, 0, 1, true);
	CHECK_STR(c.grpc_status, "8");
	CHECK_INT(atomic_load(&n_open), opened);
}

/* The handler finishes while the client has not half-closed: after the
 * trailers the server resets the stream with NO_ERROR, freeing its slot. */
static void test_raw_finish_before_half_close(void)
{
	nghttp2_nv nv[6];
	uint8_t msg[5 + 6];
	xp_grpc_prefix(msg, 6);
	memcpy(msg + 5, "finish", 6);
	grpc_request(nv, "POST", "/kepp.test.Echo/Bidi", "application/grpc");
	rawc c;
	raw_call(&c, xp_server_port(srv_h2c), nv, 6, msg, sizeof(msg), 64, false);
	CHECK_STR(c.grpc_status, "0");
	CHECK_STR(c.grpc_message, "done");
	CHECK_INT(c.close_code, NGHTTP2_NO_ERROR);
	CHECK_INT(wait_streams_gone(srv_h2c), 0);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_echo_many(void)
{
	static char out[OUT_CAP];
	int before = atomic_load(&n_close);
	CHECK_INT(client(out, "%d echo 500", xp_server_port(srv_h2c)), 0);
	CHECK_STR(val(out, "code"), "OK");
	CHECK_STR(val(out, "count"), "500");
	CHECK_STR(val(out, "equal"), "True");
	CHECK(wait_for(&n_close, before + 1) >= before + 1);
	CHECK(atomic_load(&n_hdr_ok) > 0);
}

/* 200 streams open on one connection at once: the client holds every
 * stream open until all have had their first echo (a barrier, no timing),
 * so the server must see 200 live at once. */
static void test_concurrent_streams(void)
{
	static char out[OUT_CAP];
	atomic_store(&peak_live, 0);
	CHECK_INT(client(out, "%d concurrent 200", xp_server_port(srv_h2c)), 0);
	CHECK_STR(val(out, "ok"), "200");
	CHECK(atomic_load(&peak_live) >= 200);
	CHECK_INT(wait_streams_gone(srv_h2c), 0);
}

/* Many connections at once, each with many calls. */
static void test_many_connections(void)
{
	static char out[OUT_CAP];
	CHECK_INT(client(out, "%d connections 20 25", xp_server_port(srv_h2c)), 0);
	CHECK_STR(val(out, "ok"), "500");
	CHECK_INT(wait_streams_gone(srv_h2c), 0);
}

/* The client writes 32 MiB of 64 KiB messages without reading: the server
 * holds its window once the echoes back up, so the client cannot hand
 * them all over; once it reads, everything arrives intact. */
static void test_backpressure(void)
{
	static char out[OUT_CAP];
	CHECK_INT(client(out, "%d backpressure 512 65536", xp_server_port(srv_h2c)), 0);
	int taken = atoi(val(out, "taken_before_read"));
	CHECK(taken > 0 && taken < 256);
	CHECK_STR(val(out, "code"), "OK");
	CHECK_STR(val(out, "echoed"), "512");
	CHECK_STR(val(out, "equal"), "True");
}

static void test_big_message(void)
{
	static char out[OUT_CAP];
	CHECK_INT(client(out, "%d big 300000", xp_server_port(srv_h2c)), 0);
	CHECK_STR(val(out, "code"), "OK");
	CHECK_STR(val(out, "equal"), "True");
	/* Exactly at the limit still passes. */
	CHECK_INT(client(out, "%d big %u", xp_server_port(srv_h2c), MAX_MSG), 0);
	CHECK_STR(val(out, "code"), "OK");
	CHECK_STR(val(out, "equal"), "True");
}

static void test_oversize(void)
{
	static char out[OUT_CAP];
	int before = atomic_load(&n_cancelled);
	CHECK_INT(client(out, "%d big %u", xp_server_port(srv_h2c), MAX_MSG + 1), 0);
	CHECK_STR(val(out, "code"), "RESOURCE_EXHAUSTED");
	CHECK_STR(val(out, "details"),
		  "grpc: received message larger than max (1048577 vs. 1048576)");
	/* The handler did not finish it: its close says cancelled. */
	CHECK(wait_for(&n_cancelled, before + 1) >= before + 1);
	CHECK_INT(wait_streams_gone(srv_h2c), 0);
}

static void test_unknown_method(void)
{
	static char out[OUT_CAP];
	int opened = atomic_load(&n_open);
	CHECK_INT(client(out, "%d unary /kepp.test.Nope/Call hi", xp_server_port(srv_h2c)), 0);
	CHECK_STR(val(out, "code"), "UNIMPLEMENTED");
	CHECK_STR(val(out, "details"), "unknown method /kepp.test.Nope/Call");
	CHECK_INT(atomic_load(&n_open), opened);
}

static void test_status_and_trailers(void)
{
	static char out[OUT_CAP];
	int port = xp_server_port(srv_h2c);
	/* Messages, then trailers with a message. */
	CHECK_INT(client(out, "%d stream a b finish c", port), 0);
	CHECK_STR(val(out, "code"), "OK");
	CHECK_STR(val(out, "replies"), "a,b");
	CHECK_STR(val(out, "details"), "done");
	/* Trailers-Only, with a grpc-message that needs percent-encoding. */
	CHECK_INT(client(out, "%d stream 'fail:100%% sure\xc3\xa9'", port), 0);
	CHECK_STR(val(out, "code"), "INVALID_ARGUMENT");
	CHECK_STR(val(out, "replies"), "");
	CHECK_STR(val(out, "details"), "100% sure\xc3\xa9");
	/* A message after the failure is ignored; the status stands. */
	CHECK_INT(client(out, "%d stream x fail:bad y", port), 0);
	CHECK_STR(val(out, "code"), "INVALID_ARGUMENT");
	CHECK_STR(val(out, "replies"), "x");
	CHECK_STR(val(out, "details"), "bad");
	/* An empty stream: no message at all, half-close, OK. */
	CHECK_INT(client(out, "%d stream", port), 0);
	CHECK_STR(val(out, "code"), "OK");
	CHECK_STR(val(out, "replies"), "");
}

static void test_compressed(void)
{
	static char out[OUT_CAP];
	CHECK_INT(client(out, "%d compressed", xp_server_port(srv_h2c)), 0);
	CHECK_STR(val(out, "code"), "UNIMPLEMENTED");
	CHECK_STR(val(out, "details"), "grpc: compressed messages are not supported");
}

static void test_client_cancel(void)
{
	static char out[OUT_CAP];
	int before = atomic_load(&n_cancelled);
	CHECK_INT(client(out, "%d cancel", xp_server_port(srv_h2c)), 0);
	CHECK_STR(val(out, "echo"), "True");
	CHECK_STR(val(out, "code"), "CANCELLED");
	CHECK(wait_for(&n_cancelled, before + 1) >= before + 1);
	CHECK_INT(wait_streams_gone(srv_h2c), 0);
}

/* Two servers on one port, as the workers run (SO_REUSEPORT), bound to
 * every address: IPv4 clients reach the dual-stack IPv6 socket. */
static void test_reuseport_any_address(void)
{
	static char out[OUT_CAP];
	CHECK(xp_server_port(srv_any[0]) > 0);
	CHECK_INT(xp_server_port(srv_any[1]), xp_server_port(srv_any[0]));
	CHECK_INT(client(out, "%d connections 8 4", xp_server_port(srv_any[0])), 0);
	CHECK_STR(val(out, "ok"), "32");
}

/* A client that does not speak HTTP/2 is dropped; the server goes on. */
static void test_bad_preface(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(xp_server_port(srv_h2c))};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	CHECK_INT(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	CHECK(write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1);
	char buf[4096];
	ssize_t r;
	int reads = 0;
	/* The server may send its SETTINGS (and a GOAWAY) first; then EOF. */
	while ((r = read(fd, buf, sizeof(buf))) > 0 && reads++ < 100)
		;
	CHECK(r == 0 || (r < 0 && errno == ECONNRESET));
	close(fd);

	static char out[OUT_CAP];
	CHECK_INT(client(out, "%d big 10", xp_server_port(srv_h2c)), 0);
	CHECK_STR(val(out, "code"), "OK");
}

static void publish(bool synced)
{
	store_catalog *c = store_catalog_new();
	store_catalog_finish(c);
	store_publish(st_store, store_snapshot_new(c, NULL, 0, synced));
	store_catalog_unref(c);
}

#define EXTPROC "envoy.service.ext_proc.v3.ExternalProcessor"

static void health_case(const char *tls, int port, bool le, bool leader, bool synced)
{
	static char out[OUT_CAP];
	char want[512];
	health.leader_election = le;
	atomic_store(&health.leader, leader);
	publish(synced);
	CHECK_INT(client(out, "%s %d health '' liveness readiness " EXTPROC
			      " inference-extension nope", tls, port), 0);
	int ready = synced && (!le || leader) ? 1 : 2;
	int any = synced ? 1 : 2;
	char r[4], a[4];
	snprintf(r, sizeof(r), "%d", ready);
	snprintf(a, sizeof(a), "%d", any);
	CHECK_STR(val(out, "check[]"), le ? r : a);
	CHECK_STR(val(out, "check[liveness]"), le ? "1" : a);
	CHECK_STR(val(out, "check[readiness]"), le ? r : a);
	CHECK_STR(val(out, "check[" EXTPROC "]"), le ? r : a);
	CHECK_STR(val(out, "check[inference-extension]"), le ? r : a);
	CHECK_STR(val(out, "check[nope]"), le ? "3" : a);
	if (le)
		snprintf(want, sizeof(want),
			 EXTPROC ":%d,inference-extension:%d,liveness:1,readiness:%d", ready, ready,
			 ready);
	else
		snprintf(want, sizeof(want), EXTPROC ":%d,inference-extension:%d", any, any);
	CHECK_STR(val(out, "list"), want);
	CHECK_STR(val(out, "watch"), "UNIMPLEMENTED");
	CHECK_STR(val(out, "watch_details"), "Watch is not implemented");
}

static void test_health_methods(void)
{
	xp_method m[4];
	CHECK_INT(n_methods, 4);
	CHECK_INT(xp_health_methods(&health, m, 4), 3);
	CHECK_STR(m[0].path, "/grpc.health.v1.Health/Check");
	CHECK_STR(m[1].path, "/grpc.health.v1.Health/List");
	CHECK_STR(m[2].path, "/grpc.health.v1.Health/Watch");
	CHECK(m[0].method_ctx == &health);
	CHECK_INT(xp_health_methods(&health, m, 1), 1);
}

static void test_health_h2c(void)
{
	int port = xp_server_port(srv_h2c);
	health_case("", port, false, false, true);
	health_case("", port, false, false, false);
	health_case("", port, true, false, true);
	health_case("", port, true, true, false);
	health_case("", port, true, true, true);
	health.leader_election = false;
	publish(true);
}

static void test_health_tls_self_signed(void)
{
	health_case("--tls-fetch", xp_server_port(srv_tls), false, false, true);
	health_case("--tls-fetch", xp_server_port(srv_tls), true, true, true);
	health.leader_election = false;
}

/* The generated certificate is the reference's: O=Inference Ext, ten
 * years, serverAuth, not a CA. */
static void test_self_signed_cert(void)
{
	SSL *ssl = xp_tls_ssl_new(tls_self);
	CHECK(ssl != NULL);
	if (!ssl)
		return;
	X509 *x = SSL_get_certificate(ssl);
	char org[64] = "";
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationName, org, sizeof(org));
	CHECK_STR(org, "Inference Ext");
	int days = 0, secs = 0;
	CHECK(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)));
	CHECK_INT(days, 3650);
	CHECK(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
	CHECK(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE);
	CHECK(X509_get_key_usage(x) & KU_KEY_ENCIPHERMENT);
	CHECK_INT(X509_check_ca(x), 0);
	CHECK_INT(EVP_PKEY_get_base_id(X509_get0_pubkey(x)), EVP_PKEY_RSA);
	CHECK_INT(EVP_PKEY_get_bits(X509_get0_pubkey(x)), 2048);
	SSL_free(ssl);
}

static void test_alpn(void)
{
	static char out[OUT_CAP];
	CHECK_INT(client(out, "%d alpn", xp_server_port(srv_tls)), 0);
	CHECK_STR(val(out, "http/1.1"), "refused");
	CHECK_STR(val(out, "h2"), "h2");
}

/* Writes a fresh pair into |dir| as tls.crt/tls.key, replacing the files
 * by rename as a Secret volume update does. */
static int make_pair(const char *dir, const char *cn)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/new.key -out %s/new.crt "
		 "-days 2 -subj /CN=%s -addext subjectAltName=DNS:localhost 2>/dev/null && "
		 "mv %s/new.key %s/tls.key && mv %s/new.crt %s/tls.crt",
		 dir, dir, cn, dir, dir, dir, dir);
	return system(cmd);
}

static void test_cert_dir_and_reload(void)
{
	static char out[OUT_CAP];
	char crt[64], old_crt[64], old_key[64], cmd[512], err[256];
	int port = xp_server_port(srv_dir);
	snprintf(crt, sizeof(crt), "%s/tls.crt", cert_dir);
	snprintf(old_crt, sizeof(old_crt), "%s/old.crt", cert_dir);
	snprintf(old_key, sizeof(old_key), "%s/old.key", cert_dir);

	CHECK_INT(client(out, "%d certis %s", port, crt), 0);
	CHECK_STR(val(out, "same"), "True");
	CHECK_INT(client(out, "--tls-ca %s %d health readiness", crt, port), 0);
	CHECK_STR(val(out, "check[readiness]"), "1");
	CHECK_INT(xp_tls_maybe_reload(tls_dir, err, sizeof(err)), 0);

	snprintf(cmd, sizeof(cmd), "cp %s %s && cp %s/tls.key %s", crt, old_crt, cert_dir,
		 old_key);
	CHECK_INT(system(cmd), 0);
	CHECK_INT(make_pair(cert_dir, "second"), 0);
	CHECK_INT(xp_tls_maybe_reload(tls_dir, err, sizeof(err)), 1);
	CHECK_INT(client(out, "%d certis %s", port, crt), 0);
	CHECK_STR(val(out, "same"), "True");
	CHECK_INT(client(out, "%d certis %s", port, old_crt), 0);
	CHECK_STR(val(out, "same"), "False");
	CHECK_INT(client(out, "--tls-ca %s %d health readiness", crt, port), 0);
	CHECK_STR(val(out, "check[readiness]"), "1");

	/* A key that does not match: refused once, the pair in use stays. */
	snprintf(cmd, sizeof(cmd), "cp %s %s/tls.key", old_key, cert_dir);
	CHECK_INT(system(cmd), 0);
	err[0] = '\0';
	CHECK(xp_tls_maybe_reload(tls_dir, err, sizeof(err)) < 0);
	CHECK(strstr(err, "does not match") != NULL);
	CHECK_INT(xp_tls_maybe_reload(tls_dir, err, sizeof(err)), 0);
	CHECK_INT(client(out, "%d certis %s", port, crt), 0);
	CHECK_STR(val(out, "same"), "True");

	/* Garbage is refused too; a good pair afterwards loads. */
	snprintf(cmd, sizeof(cmd), "echo garbage > %s/tls.key", cert_dir);
	CHECK_INT(system(cmd), 0);
	CHECK(xp_tls_maybe_reload(tls_dir, err, sizeof(err)) < 0);
	CHECK_INT(make_pair(cert_dir, "third"), 0);
	CHECK_INT(xp_tls_maybe_reload(tls_dir, err, sizeof(err)), 1);
	CHECK_INT(client(out, "%d certis %s", port, crt), 0);
	CHECK_STR(val(out, "same"), "True");

	/* A missing directory fails at start. */
	char bad[64];
	snprintf(bad, sizeof(bad), "%s/absent", cert_dir);
	CHECK(xp_tls_new(bad, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "tls.crt") != NULL);
}

/* Drain: the in-flight stream finishes, the listener is closed, and new
 * RPCs fail on the draining connection and on a new one. Last test: it
 * drains the h2c server. */
static void test_drain(void)
{
	char cmd[8192], line[512];
	int port = xp_server_port(srv_h2c);
	snprintf(cmd, sizeof(cmd), PY " %s %d drain", script, port);
	FILE *p = popen(cmd, "r");
	CHECK(p != NULL);
	if (!p)
		return;
	CHECK(fgets(line, sizeof(line), p) != NULL);
	CHECK_STR(line, "ready=True\n");
	CHECK_INT(xp_server_active_streams(srv_h2c), 1);
	on_loop(do_drain, srv_h2c);
	static char out[OUT_CAP];
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	CHECK_INT(pclose(p), 0);
	CHECK_STR(val(out, "listener_closed"), "True");
	CHECK_STR(val(out, "inflight"), "True:OK");
	CHECK_STR(val(out, "same_channel"), "UNAVAILABLE");
	CHECK_STR(val(out, "new_channel"), "UNAVAILABLE");
	CHECK_INT(wait_streams_gone(srv_h2c), 0);
}

/* Stops the loop and frees the servers: every opened stream was closed
 * exactly once. */
static void test_shutdown(void)
{
	on_loop(do_break, NULL);
	pthread_join(loop_thread, NULL);
	xp_server_free(srv_h2c);
	xp_server_free(srv_tls);
	xp_server_free(srv_dir);
	xp_server_free(srv_any[0]);
	xp_server_free(srv_any[1]);
	CHECK(atomic_load(&n_open) > 200);
	CHECK_INT(atomic_load(&n_close), atomic_load(&n_open));
	CHECK_INT(atomic_load(&n_live), 0);
}

static void rm_cert_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", cert_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", cert_dir);
}

static xp_server *start_on(const char *addr, int port, xp_tls *tls, char *err)
{
	xp_server_opts o = {
		.bind_addr = addr,
		.port = port,
		.tls = tls,
		.max_message_bytes = MAX_MSG,
		.max_concurrent_streams = 256,
		.methods = methods,
		.n_methods = n_methods,
		.name = "test",
	};
	return xp_server_new(base, &o, err, 256);
}

static xp_server *start(xp_tls *tls, char *err)
{
	return start_on("127.0.0.1", 0, tls, err);
}

int main(void)
{
	char err[256];
	alarm(600);
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* As kepp's main does: a peer that hangs up is an error, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	/* Health probes log "not serving" at info level; keep the output to results. */
	log_set_verbosity(0);
	/* The client script sits next to this file. */
	snprintf(script, sizeof(script), "%s", __FILE__);
	char *slash = strrchr(script, '/');
	size_t dir = slash ? (size_t)(slash + 1 - script) : 0;
	snprintf(script + dir, sizeof(script) - dir, "h2_client.py");
	if (access(script, R_OK) != 0) {
		fprintf(stderr, "%s not found: run from the repository root\n", script);
		return 1;
	}

	evthread_use_pthreads();
	base = event_base_new();
	st_store = store_new();
	publish(true);
	health.store = st_store;
	methods[0] = (xp_method){.path = "/kepp.test.Echo/Bidi",
				 .open = echo_open,
				 .message = echo_message,
				 .half_close = echo_half_close,
				 .close = echo_close,
				 .method_ctx = &n_open};
	n_methods = 1 + xp_health_methods(&health, methods + 1, 3);

	if (!mkdtemp(cert_dir)) {
		fprintf(stderr, "cannot make a temporary directory\n");
		return 1;
	}
	if (make_pair(cert_dir, "first") != 0) {
		fprintf(stderr, "cannot make a certificate in %s\n", cert_dir);
		rm_cert_dir();
		return 1;
	}
	tls_self = xp_tls_new(NULL, err, sizeof(err));
	tls_dir = xp_tls_new(cert_dir, err, sizeof(err));
	srv_h2c = start(NULL, err);
	srv_tls = tls_self ? start(tls_self, err) : NULL;
	srv_dir = tls_dir ? start(tls_dir, err) : NULL;
	srv_any[0] = start_on(NULL, 0, NULL, err);
	srv_any[1] = srv_any[0] ? start_on(NULL, xp_server_port(srv_any[0]), NULL, err) : NULL;
	if (!srv_h2c || !srv_tls || !srv_dir || !srv_any[0] || !srv_any[1]) {
		fprintf(stderr, "server setup failed: %s\n", err);
		rm_cert_dir();
		return 1;
	}
	pthread_create(&loop_thread, NULL, loop_main, NULL);

	RUN(test_echo_many);
	RUN(test_concurrent_streams);
	RUN(test_many_connections);
	RUN(test_backpressure);
	RUN(test_big_message);
	RUN(test_oversize);
	RUN(test_unknown_method);
	RUN(test_status_and_trailers);
	RUN(test_compressed);
	RUN(test_client_cancel);
	RUN(test_reuseport_any_address);
	RUN(test_bad_preface);
	RUN(test_raw_split_frames);
	RUN(test_raw_truncated);
	RUN(test_raw_not_grpc);
	RUN(test_raw_too_many_headers);
	RUN(test_raw_finish_before_half_close);
	RUN(test_health_methods);
	RUN(test_health_h2c);
	RUN(test_self_signed_cert);
	RUN(test_health_tls_self_signed);
	RUN(test_alpn);
	RUN(test_cert_dir_and_reload);
	RUN(test_drain);
	RUN(test_shutdown);

	event_base_free(base);
	xp_tls_free(tls_self);
	xp_tls_free(tls_dir);
	store_free(st_store);
	rm_cert_dir();
	return harness_done();
}
