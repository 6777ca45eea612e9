/* The Envoy side: HTTP/2 connections (nghttp2 client sessions on libevent
 * bufferevents, OpenSSL with ALPN h2 for TLS), one Process stream per
 * request, the FULL_DUPLEX_STREAMED message sequence, and the measurements.
 *
 * One request, as Envoy's ext_proc filter runs it for an HTTP/1 JSON POST:
 *   -> request_headers (protocol_config FULL_DUPLEX_STREAMED both ways)
 *   -> request_body chunks, end_of_stream on the last (or, with --trailers,
 *      none on the body and a request_trailers message)
 *   <- request_headers response (the decision), request_body responses
 *      until end_of_stream (or the request_trailers response)
 * with --response:
 *   -> response_headers, response_body (end_of_stream)
 *   <- response_headers response, response_body responses until end_of_stream
 * then END_STREAM from the client and grpc-status 0 from the server.
 *
 * The decision latency runs from the moment the last byte of the message
 * that completes the request (the last body chunk, or the trailers) is handed
 * to nghttp2 for sending to the moment the request_headers response is
 * decoded (0 when it came before that). With --pace-us the body messages are handed over one at a time
 * (a client uploading at a bounded rate), and the run also reports when the
 * request_headers response came relative to the first and the last body
 * message: a server that answers before the body ends (kepp's early pick)
 * shows it there. */
#include "bench.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "extproc/grpc_codec.h"

#define OUT_WOULDBLOCK (1 << 20)
#define STREAM_WINDOW (16 << 20)
#define CONN_WINDOW (64 << 20)
#define MAX_MSG (64u << 20)
#define DRAIN_NS (10ull * 1000000000ull)
#define MAX_DESTS 4096
#define BACKLOG_MAX (1u << 20)
#define MAX_RSS_SAMPLES 4096

enum { E_IMMEDIATE, E_GRPC, E_RESET, E_PROTO, E_BODY, E_NODEST, E_N };
static const char *const err_names[E_N] = {"immediate", "grpc_status", "reset",
					    "protocol", "body_mismatch", "no_destination"};

enum { ST_REQ, ST_RESP, ST_DONE };

typedef struct conn conn;

typedef struct req {
	conn *c;
	struct req *next_free;
	int32_t id;
	struct evbuffer *out;  /* framed messages not yet handed to nghttp2 */
	size_t out_sent;
	size_t decisive_end;   /* out_sent at which the completing message is out */
	bool eof, deferred;
	int stage;
	uint64_t t_sched, t_start, t_sent, t_decided;
	xp_dec dec;
	size_t body_back;
	bool req_body_eos, req_trailers, resp_headers, resp_body_eos;
	int grpc_status;       /* -1 until seen */
	int err;               /* -1 or E_* */
	int http_status;       /* immediate_response status */
	/* --pace-us: the next body message to hand over */
	int v;
	size_t next_msg, next_off;
	struct event *pace;
	size_t first_end;      /* out_sent at which the first body message is out */
	uint64_t t_first;
} req;

struct conn {
	int idx;
	struct bufferevent *bev;
	nghttp2_session *h2;
	int inflight, to_start;
	bool ready;
	uint64_t seq;
};

typedef struct lat {
	uint64_t *v;
	size_t n, cap;
} lat;

typedef struct slat {
	int64_t *v;
	size_t n, cap;
} slat;

typedef struct dest {
	char name[64];
	uint64_t n;
} dest;

static struct {
	const bench_opts *o;
	struct event_base *base;
	SSL_CTX *ssl_ctx;
	conn *conns;
	int n_ready;
	req *free_reqs;
	/* messages, encoded once */
	bbuf *bodies;          /* per variant: the body messages (and trailers) */
	bbuf resp_msgs;        /* response_headers + response_body */
	bbuf hdr_msg;          /* the request_headers message being built */
	bbuf uniq;             /* --unique: this request's copy of the body messages */
	size_t prompt_off;     /* where the prompt starts in every bodies[v] */
	size_t *msg_len;       /* framed size of each body message (all variants alike) */
	size_t n_msgs;
	size_t body_size;
	/* schedule */
	bool running, stopping, failed;
	uint64_t t0, t_warm, t_stop, t_drain;
	bool warm_taken;
	uint64_t issued, started;
	int rr;
	uint64_t *backlog;     /* open loop: scheduled start times waiting for a slot */
	size_t bl_head, bl_len, bl_max;
	uint64_t dropped;
	struct event *tick;
	/* results */
	lat decide, total;
	lat hdr_first, last_first; /* headers response / last body message after the first */
	slat lead;                 /* last body message sent minus headers response */
	uint64_t done_window, ok_window, done_all;
	uint64_t errs[E_N];
	int last_http_status;
	char first_grpc_error[160]; /* grpc-status and grpc-message of the first failure */
	dest dests[MAX_DESTS];
	size_t n_dests;
	uint64_t dest_overflow;
	long cpu_warm, cpu_stop, wcpu_warm, wcpu_stop;
	struct rusage ru_warm, ru_stop;
	double idle_cpu_s;
	double rss_t[MAX_RSS_SAMPLES];
	long rss_kb[MAX_RSS_SAMPLES];
	size_t n_rss;
	struct event *rss_ev;
} B;

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the measured server -------------------------------------------------- */

/* utime + stime from a /proc stat file, in clock ticks; -1 when gone. */
static long stat_ticks(const char *path)
{
	char buf[1024];
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* The command name may hold spaces and parentheses: fields start after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	unsigned long ut = 0, st = 0;
	/* Fields 3-15: state ppid pgrp session tty tpgid flags minflt cminflt majflt
	 * cmajflt utime stime. */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (long)(ut + st);
}

/* Every thread of |pid|, including those gone (the process's own stat). */
static long proc_cpu_ticks(int pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	return stat_ticks(path);
}

/* The threads other than the main one: the workers of kepp and of
 * bench-nullxp, whose main threads run the control loop (metric scrapes,
 * health) or only wait for signals. */
static long proc_worker_ticks(int pid)
{
	char path[96];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	long sum = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		int tid = atoi(e->d_name);
		if (tid <= 0 || tid == pid)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
		long t = stat_ticks(path);
		if (t > 0)
			sum += t;
	}
	closedir(d);
	return sum;
}

/* A "VmXxx:  N kB" line of /proc/pid/status, in kB; -1 when absent. */
static long proc_status_kb(int pid, const char *key)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long v = -1;
	size_t kl = strlen(key);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			v = atol(line + kl + 1);
			break;
		}
	fclose(f);
	return v;
}

/* ---- messages -------------------------------------------------------------- */

static const char *const words[] = {
	"the", "kernel", "routes", "every", "request", "to", "a", "model", "server", "with",
	"free", "cache", "blocks", "and", "short", "queues", "while", "prefix", "reuse",
	"keeps", "latency", "low", "for", "long", "prompts", "of", "shared", "context",
	"tokens", "batch", "decode", "prefill", "adapter", "weights", "gateway", "picks",
};

/* A completions body of exactly |size| bytes (at least the JSON around an
 * empty prompt): variants in groups of four share the first half of their
 * prompt, as users of one system prompt do, so the prefix-cache scorer sees
 * both hits and misses. */
static void make_body(bbuf *b, size_t size, int variant, const char *model)
{
	char head[512];
	int hn = snprintf(head, sizeof(head), "{\"model\":\"%s\",\"prompt\":\"", model);
	static const char tail[] = "\",\"max_tokens\":128,\"temperature\":0.7}";
	size_t fixed = (size_t)hn + sizeof(tail) - 1;
	size_t plen = size > fixed ? size - fixed : 0;
	bb_put(b, head, (size_t)hn);
	unsigned seed = 0x9e3779b9u * (unsigned)(variant / 4 + 1);
	size_t shared = plen / 2, n = 0;
	while (n < plen) {
		if (n == shared)
			seed = 0x85ebca6bu * (unsigned)(variant + 1) + 7;
		char w[32];
		seed = seed * 1103515245u + 12345u;
		int wn = snprintf(w, sizeof(w), "%s ", words[(seed >> 16) % (sizeof(words) / sizeof(words[0]))]);
		size_t take = (size_t)wn < plen - n ? (size_t)wn : plen - n;
		bb_put(b, w, take);
		n += take;
	}
	bb_put(b, tail, sizeof(tail) - 1);
}

static void prepare_messages(const bench_opts *o)
{
	B.bodies = calloc((size_t)o->variants, sizeof(bbuf));
	for (int v = 0; v < o->variants; v++) {
		bbuf body = {0};
		make_body(&body, o->body_size, v, o->model);
		B.body_size = body.len;
		size_t off = 0;
		do {
			size_t n = body.len - off > o->chunk ? o->chunk : body.len - off;
			bool last = off + n == body.len;
			size_t before = B.bodies[v].len;
			pb_body(&B.bodies[v], true, body.p + off, n, last && !o->trailers);
			if (v == 0) {
				B.msg_len = realloc(B.msg_len, (B.n_msgs + 1) * sizeof(size_t));
				if (!B.msg_len)
					abort();
				B.msg_len[B.n_msgs++] = B.bodies[v].len - before;
			}
			off += n;
		} while (off < body.len);
		if (o->trailers)
			pb_request_trailers(&B.bodies[v]);
		bb_free(&body);
	}
	if (o->unique) {
		/* The prompt's first 16 characters become a request counter: a new
		 * prefix, so every block hash is new to the prefix index. */
		static const char key[] = "\"prompt\":\"";
		const uint8_t *p = memmem(B.bodies[0].p, B.bodies[0].len, key, sizeof(key) - 1);
		size_t first = o->chunk < B.body_size ? o->chunk : B.body_size;
		if (!p || B.body_size < 64 + 16 || first < (size_t)(p - B.bodies[0].p) + 32) {
			fprintf(stderr, "bench-extproc: --unique needs a body of 80 bytes or more\n");
			exit(2);
		}
		B.prompt_off = (size_t)(p - B.bodies[0].p) + sizeof(key) - 1;
	}
	if (o->response) {
		static const char rb[] =
			"{\"id\":\"cmpl-bench\",\"object\":\"text_completion\",\"created\":1730000000,"
			"\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,"
			"\"text\":\" the gateway picks a model server with free cache blocks\","
			"\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":"
			"256,\"completion_tokens\":12,\"total_tokens\":268}}";
		char clen[16];
		snprintf(clen, sizeof(clen), "%zu", sizeof(rb) - 1);
		kv h[] = {{":status", "200"}, {"content-type", "application/json"},
			  {"content-length", clen}, {"x-envoy-upstream-service-time", "12"}};
		pb_response_headers(&B.resp_msgs, h, sizeof(h) / sizeof(h[0]), false);
		pb_body(&B.resp_msgs, false, (const uint8_t *)rb, sizeof(rb) - 1, true);
	}
}

/* ---- requests ---------------------------------------------------------------- */

static void conn_send(conn *c);
static void fail_run(const char *why);

static void note_dest(const uint8_t *p, size_t n)
{
	if (n >= sizeof(B.dests[0].name))
		n = sizeof(B.dests[0].name) - 1;
	for (size_t i = 0; i < B.n_dests; i++)
		if (strlen(B.dests[i].name) == n && memcmp(B.dests[i].name, p, n) == 0) {
			B.dests[i].n++;
			return;
		}
	if (B.n_dests == MAX_DESTS) {
		B.dest_overflow++;
		return;
	}
	memcpy(B.dests[B.n_dests].name, p, n);
	B.dests[B.n_dests].name[n] = 0;
	B.dests[B.n_dests++].n = 1;
}

static void req_resume(req *r)
{
	if (r->deferred) {
		r->deferred = false;
		nghttp2_session_resume_data(r->c->h2, r->id);
	}
}

static void req_fail(req *r, int e)
{
	if (r->err < 0)
		r->err = e;
}

static void half_close(req *r)
{
	r->stage = ST_DONE;
	r->eof = true;
	req_resume(r);
}

static void request_phase_done(req *r)
{
	if (r->body_back != B.body_size)
		req_fail(r, E_BODY);
	if (!B.o->response) {
		half_close(r);
		return;
	}
	r->stage = ST_RESP;
	evbuffer_add_reference(r->out, B.resp_msgs.p, B.resp_msgs.len, NULL, NULL);
	req_resume(r);
}

static int on_message(void *arg, const uint8_t *msg, size_t len)
{
	req *r = arg;
	presp p;
	if (pb_read_response(msg, len, &p) < 0) {
		req_fail(r, E_PROTO);
		half_close(r);
		return 0;
	}
	if (p.kind == PR_IMMEDIATE) {
		req_fail(r, E_IMMEDIATE);
		r->http_status = p.status;
		half_close(r);
		return 0;
	}
	if (r->stage == ST_REQ) {
		switch (p.kind) {
		case PR_REQUEST_HEADERS:
			if (!r->t_decided) {
				r->t_decided = now_ns();
				if (p.dest)
					note_dest(p.dest, p.dest_len);
				else
					req_fail(r, E_NODEST);
			}
			break;
		case PR_REQUEST_BODY:
			if (!r->t_decided || r->req_body_eos) {
				req_fail(r, E_PROTO);
				break;
			}
			r->body_back += p.body_len;
			r->req_body_eos = p.body_eos;
			break;
		case PR_REQUEST_TRAILERS:
			r->req_trailers = true;
			break;
		default:
			req_fail(r, E_PROTO);
			half_close(r);
			return 0;
		}
		if (B.o->trailers ? r->req_trailers : r->req_body_eos)
			request_phase_done(r);
	} else if (r->stage == ST_RESP) {
		if (p.kind == PR_RESPONSE_HEADERS)
			r->resp_headers = true;
		else if (p.kind == PR_RESPONSE_BODY)
			r->resp_body_eos = p.body_eos;
		else
			req_fail(r, E_PROTO);
		if (r->resp_headers && r->resp_body_eos)
			half_close(r);
	}
	return 0;
}

static ssize_t data_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *user)
{
	req *r = src->ptr;
	int n = evbuffer_remove(r->out, buf, len);
	if (n < 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	r->out_sent += (size_t)n;
	if (!r->t_first && r->out_sent >= r->first_end)
		r->t_first = now_ns();
	if (!r->t_sent && r->out_sent >= r->decisive_end)
		r->t_sent = now_ns();
	if (evbuffer_get_length(r->out) == 0) {
		if (r->eof) {
			*flags |= NGHTTP2_DATA_FLAG_EOF;
			return n;
		}
		if (n == 0) {
			r->deferred = true;
			return NGHTTP2_ERR_DEFERRED;
		}
	}
	return n;
}

static req *req_alloc(void)
{
	req *r = B.free_reqs;
	if (r) {
		B.free_reqs = r->next_free;
	} else {
		r = calloc(1, sizeof(*r));
		if (!r || !(r->out = evbuffer_new()))
			abort();
	}
	struct evbuffer *out = r->out;
	struct event *pace = r->pace;
	memset(r, 0, sizeof(*r));
	r->out = out;
	r->pace = pace;
	xp_dec_init(&r->dec, MAX_MSG);
	r->grpc_status = -1;
	r->err = -1;
	return r;
}

static void req_release(req *r)
{
	if (r->pace)
		evtimer_del(r->pace);
	xp_dec_free(&r->dec);
	evbuffer_drain(r->out, evbuffer_get_length(r->out));
	r->next_free = B.free_reqs;
	B.free_reqs = r;
}

static void pace_arm(req *r)
{
	double us = B.o->pace_us;
	struct timeval tv = {(time_t)(us / 1e6), (suseconds_t)((long long)us % 1000000)};
	evtimer_add(r->pace, &tv);
}

/* --pace-us: the next body message joins what nghttp2 sends. */
static void on_pace(evutil_socket_t fd, short what, void *arg)
{
	req *r = arg;
	if (r->stage != ST_REQ || r->next_msg >= B.n_msgs)
		return;
	size_t n = B.msg_len[r->next_msg];
	evbuffer_add_reference(r->out, B.bodies[r->v].p + r->next_off, n, NULL, NULL);
	r->next_off += n;
	r->next_msg++;
	req_resume(r);
	conn_send(r->c);
	if (r->next_msg < B.n_msgs)
		pace_arm(r);
}

static void req_start(conn *c, uint64_t t_sched)
{
	const bench_opts *o = B.o;
	req *r = req_alloc();
	r->c = c;
	r->t_sched = t_sched;
	int v = (int)(B.started % (uint64_t)o->variants);

	char rid[48], clen[24], obj[32];
	snprintf(rid, sizeof(rid), "bench-%d-%llu", c->idx, (unsigned long long)c->seq++);
	snprintf(clen, sizeof(clen), "%zu", B.body_size);
	kv h[12] = {
		{":authority", "gateway.bench.local"},
		{":path", "/v1/completions"},
		{":method", "POST"},
		{":scheme", o->tls ? "https" : "http"},
		{"content-type", "application/json"},
		{"content-length", clen},
		{"user-agent", "bench-extproc/1"},
		{"accept", "*/*"},
		{"x-forwarded-proto", "http"},
		{"x-request-id", rid},
	};
	size_t nh = 10;
	if (o->objectives > 0) {
		snprintf(obj, sizeof(obj), "obj-%llu",
			 (unsigned long long)(B.started % (uint64_t)o->objectives));
		h[nh++] = (kv){"x-gateway-inference-objective", obj};
	}
	bbuf *hb = &B.hdr_msg;
	hb->len = 0;
	pb_request_headers(hb, h, nh, false, true);
	evbuffer_add(r->out, hb->p, hb->len);
	if (o->unique) {
		B.uniq.len = 0;
		bb_put(&B.uniq, B.bodies[v].p, B.bodies[v].len);
		char ctr[17];
		snprintf(ctr, sizeof(ctr), "%016llx", (unsigned long long)B.started);
		memcpy(B.uniq.p + B.prompt_off, ctr, 16);
		evbuffer_add(r->out, B.uniq.p, B.uniq.len);
	} else if (o->pace_us > 0 && B.n_msgs > 1) {
		if (!r->pace && !(r->pace = evtimer_new(B.base, on_pace, r)))
			abort();
		r->v = v;
		r->next_msg = 1;
		r->next_off = B.msg_len[0];
		evbuffer_add_reference(r->out, B.bodies[v].p, B.msg_len[0], NULL, NULL);
		pace_arm(r);
	} else {
		evbuffer_add_reference(r->out, B.bodies[v].p, B.bodies[v].len, NULL, NULL);
	}
	r->first_end = hb->len + B.msg_len[0];
	r->decisive_end = hb->len + B.bodies[v].len;
	B.started++;

	char authority[80];
	snprintf(authority, sizeof(authority), "%s:%d", o->host, o->port);
	const char *scheme = o->tls ? "https" : "http";
	nghttp2_nv nva[] = {
		{(uint8_t *)":method", (uint8_t *)"POST", 7, 4, NGHTTP2_NV_FLAG_NONE},
		{(uint8_t *)":scheme", (uint8_t *)scheme, 7, strlen(scheme), NGHTTP2_NV_FLAG_NONE},
		{(uint8_t *)":path",
		 (uint8_t *)"/envoy.service.ext_proc.v3.ExternalProcessor/Process", 5, 52,
		 NGHTTP2_NV_FLAG_NONE},
		{(uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority),
		 NGHTTP2_NV_FLAG_NONE},
		{(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
		 NGHTTP2_NV_FLAG_NONE},
		{(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, NGHTTP2_NV_FLAG_NONE},
	};
	nghttp2_data_provider dp = {.source.ptr = r, .read_callback = data_read};
	r->t_start = now_ns();
	int32_t id = nghttp2_submit_request(c->h2, NULL, nva, sizeof(nva) / sizeof(nva[0]), &dp, r);
	if (id < 0) {
		req_release(r);
		fail_run(nghttp2_strerror(id));
		return;
	}
	r->id = id;
	c->inflight++;
}

static void lat_add(lat *l, uint64_t v)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 65536;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			abort();
	}
	l->v[l->n++] = v;
}

static void slat_add(slat *l, int64_t v)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 4096;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			abort();
	}
	l->v[l->n++] = v;
}

static void req_done(req *r, uint32_t h2_error)
{
	uint64_t t = now_ns();
	if (h2_error != NGHTTP2_NO_ERROR)
		req_fail(r, E_RESET);
	else if (r->grpc_status != 0)
		req_fail(r, E_GRPC);
	B.done_all++;
	if (t >= B.t_warm && t < B.t_stop) {
		B.done_window++;
		if (r->err < 0)
			B.ok_window++;
		else
			B.errs[r->err]++;
		if (r->err == E_IMMEDIATE)
			B.last_http_status = r->http_status;
	}
	if (r->t_start >= B.t_warm && r->t_start < B.t_stop && r->err < 0) {
		/* 0 when the answer came before the body was out (an early pick):
		 * the decision held nothing up. */
		if (r->t_sent && r->t_decided)
			lat_add(&B.decide,
				r->t_decided >= r->t_sent ? r->t_decided - r->t_sent : 0);
		if (r->t_first && r->t_sent && r->t_decided >= r->t_first) {
			lat_add(&B.hdr_first, r->t_decided - r->t_first);
			lat_add(&B.last_first, r->t_sent - r->t_first);
			slat_add(&B.lead, (int64_t)(r->t_sent - r->t_decided));
		}
		lat_add(&B.total, t - r->t_sched);
	}
}

/* ---- connections ---------------------------------------------------------------- */

static ssize_t on_send(nghttp2_session *h2, const uint8_t *data, size_t len, int flags,
		       void *user)
{
	conn *c = user;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) >= OUT_WOULDBLOCK)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (bufferevent_write(c->bev, data, len) < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return (ssize_t)len;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *user)
{
	req *r = nghttp2_session_get_stream_user_data(h2, id);
	if (!r)
		return 0;
	int rv = xp_dec_feed(&r->dec, data, len, on_message, r);
	if (rv < 0) {
		req_fail(r, E_PROTO);
		nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
	}
	return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user)
{
	if (f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (namelen == 12 && !memcmp(name, "grpc-message", 12) && !B.first_grpc_error[0]) {
		snprintf(B.first_grpc_error, sizeof(B.first_grpc_error), "%.*s", (int)valuelen,
			 (const char *)value);
		return 0;
	}
	if (namelen != 11 || memcmp(name, "grpc-status", 11))
		return 0;
	req *r = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
	if (r) {
		char v[16];
		size_t n = valuelen < sizeof(v) - 1 ? valuelen : sizeof(v) - 1;
		memcpy(v, value, n);
		v[n] = 0;
		r->grpc_status = atoi(v);
	}
	return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *user)
{
	conn *c = user;
	req *r = nghttp2_session_get_stream_user_data(h2, id);
	if (!r)
		return 0;
	req_done(r, error_code);
	req_release(r);
	c->inflight--;
	/* New streams are submitted after nghttp2 returns (conn_after_recv). */
	if (B.running && !B.o->rate)
		c->to_start++;
	return 0;
}

static void maybe_finish(void)
{
	if (!B.stopping)
		return;
	int inflight = 0;
	for (int i = 0; i < B.o->conns; i++)
		inflight += B.conns[i].inflight;
	if (inflight == 0 || now_ns() >= B.t_drain)
		event_base_loopbreak(B.base);
}

static void start_backlog(conn *c);

static void conn_after_recv(conn *c)
{
	while (B.running && c->to_start > 0) {
		c->to_start--;
		req_start(c, now_ns());
	}
	c->to_start = 0;
	if (B.running && B.o->rate)
		start_backlog(c);
	conn_send(c);
	maybe_finish();
}

static void conn_send(conn *c)
{
	int rv = nghttp2_session_send(c->h2);
	if (rv != 0)
		fail_run(nghttp2_strerror(rv));
}

static void conn_readcb(struct bufferevent *bev, void *arg)
{
	conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		ssize_t rv = nghttp2_session_mem_recv(c->h2, v.iov_base, v.iov_len);
		if (rv < 0) {
			fail_run(nghttp2_strerror((int)rv));
			return;
		}
		evbuffer_drain(in, (size_t)rv);
	}
	conn_after_recv(c);
}

static void conn_writecb(struct bufferevent *bev, void *arg)
{
	conn_send(arg);
}

static void begin(void);

static int conn_session(conn *c)
{
	nghttp2_session_callbacks *cbs;
	if (nghttp2_session_callbacks_new(&cbs) != 0)
		return -ENOMEM;
	nghttp2_session_callbacks_set_send_callback(cbs, on_send);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	int rv = nghttp2_session_client_new(&c->h2, cbs, c);
	nghttp2_session_callbacks_del(cbs);
	if (rv != 0)
		return -ENOMEM;
	nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
		{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
	};
	if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
	    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
		return -ENOMEM;
	return 0;
}

static void conn_eventcb(struct bufferevent *bev, short events, void *arg)
{
	conn *c = arg;
	if (events & BEV_EVENT_CONNECTED) {
		int one = 1;
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (B.o->tls) {
			const unsigned char *alpn = NULL;
			unsigned alen = 0;
			SSL_get0_alpn_selected(bufferevent_openssl_get_ssl(bev), &alpn, &alen);
			if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
				fail_run("the server did not select ALPN h2");
				return;
			}
		}
		if (conn_session(c) < 0) {
			fail_run("cannot create an HTTP/2 session");
			return;
		}
		c->ready = true;
		conn_send(c);
		if (++B.n_ready == B.o->conns)
			begin();
		return;
	}
	char why[160];
	snprintf(why, sizeof(why), "connection %d %s: %s", c->idx,
		 events & BEV_EVENT_EOF ? "closed by the server" : "failed",
		 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	fail_run(why);
}

static int conn_open(conn *c)
{
	const bench_opts *o = B.o;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
	if (inet_pton(AF_INET, o->host, &sa.sin_addr) != 1)
		return -EINVAL;
	if (o->tls) {
		SSL *ssl = SSL_new(B.ssl_ctx);
		if (!ssl)
			return -ENOMEM;
		c->bev = bufferevent_openssl_socket_new(B.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
							BEV_OPT_CLOSE_ON_FREE);
		if (c->bev)
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	} else {
		c->bev = bufferevent_socket_new(B.base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	if (!c->bev)
		return -ENOMEM;
	bufferevent_setcb(c->bev, conn_readcb, conn_writecb, conn_eventcb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	bufferevent_setwatermark(c->bev, EV_WRITE, OUT_WOULDBLOCK / 2, 0);
	return bufferevent_socket_connect(c->bev, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -ECONNREFUSED
											  : 0;
}

static void fail_run(const char *why)
{
	if (!B.failed)
		fprintf(stderr, "bench-extproc: %s\n", why);
	B.failed = true;
	B.running = false;
	event_base_loopbreak(B.base);
}

/* ---- schedule ------------------------------------------------------------------- */

static conn *free_conn(void)
{
	for (int i = 0; i < B.o->conns; i++) {
		conn *c = &B.conns[(B.rr + i) % B.o->conns];
		if (c->inflight < B.o->streams) {
			B.rr = (B.rr + i + 1) % B.o->conns;
			return c;
		}
	}
	return NULL;
}

static void start_backlog(conn *c)
{
	while (B.bl_len && c->inflight < B.o->streams) {
		uint64_t t = B.backlog[B.bl_head];
		B.bl_head = (B.bl_head + 1) % BACKLOG_MAX;
		B.bl_len--;
		req_start(c, t);
	}
}

static void stop_issuing(uint64_t t)
{
	if (!B.running)
		return;
	B.running = false;
	B.stopping = true;
	B.cpu_stop = B.o->pid ? proc_cpu_ticks(B.o->pid) : 0;
	B.wcpu_stop = B.o->pid ? proc_worker_ticks(B.o->pid) : 0;
	getrusage(RUSAGE_SELF, &B.ru_stop);
	B.t_drain = t + DRAIN_NS;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	const bench_opts *o = B.o;
	uint64_t t = now_ns();
	if (B.running && t >= B.t_warm && !B.warm_taken) {
		B.warm_taken = true;
		B.cpu_warm = o->pid ? proc_cpu_ticks(o->pid) : 0;
		B.wcpu_warm = o->pid ? proc_worker_ticks(o->pid) : 0;
		getrusage(RUSAGE_SELF, &B.ru_warm);
	}
	if (B.running && t >= B.t_stop)
		stop_issuing(t);
	if (B.running && o->rate > 0) {
		uint64_t due = (uint64_t)((double)(t - B.t0) * 1e-9 * o->rate);
		bool touched[o->conns];
		memset(touched, 0, sizeof(touched));
		while (B.issued < due) {
			uint64_t ts = B.t0 + (uint64_t)((double)B.issued * 1e9 / o->rate);
			B.issued++;
			conn *c = B.bl_len ? NULL : free_conn();
			if (c) {
				req_start(c, ts);
				touched[c->idx] = true;
			} else if (B.bl_len < BACKLOG_MAX) {
				B.backlog[(B.bl_head + B.bl_len) % BACKLOG_MAX] = ts;
				B.bl_len++;
				if (B.bl_len > B.bl_max)
					B.bl_max = B.bl_len;
			} else {
				B.dropped++;
			}
		}
		for (int i = 0; i < o->conns; i++)
			if (touched[i])
				conn_send(&B.conns[i]);
	}
	maybe_finish();
}

static void on_rss(evutil_socket_t fd, short what, void *arg)
{
	if (B.n_rss < MAX_RSS_SAMPLES) {
		B.rss_t[B.n_rss] = (double)(now_ns() - B.t0) * 1e-9;
		B.rss_kb[B.n_rss++] = proc_status_kb(B.o->pid, "VmRSS");
	}
}

static void begin(void)
{
	const bench_opts *o = B.o;
	B.t0 = now_ns();
	B.t_warm = B.t0 + (uint64_t)(o->warmup * 1e9);
	B.t_stop = B.t_warm + (uint64_t)(o->duration * 1e9);
	B.running = true;
	/* Ticks drive the open-loop schedule, the window edges and the drain:
	 * one request per tick up to 20,000 req/s, so a batch of requests sent
	 * together does not queue behind itself and count as decision latency. */
	B.tick = event_new(B.base, -1, EV_PERSIST, on_tick, NULL);
	double us = o->rate > 0 ? 1e6 / o->rate : 1000;
	struct timeval tv = {0, (suseconds_t)(us < 50 ? 50 : us > 1000 ? 1000 : us)};
	event_add(B.tick, &tv);
	if (o->rss_every > 0 && o->pid) {
		B.rss_ev = event_new(B.base, -1, EV_PERSIST, on_rss, NULL);
		struct timeval rv = {(time_t)o->rss_every,
				     (suseconds_t)((o->rss_every - (double)(time_t)o->rss_every) * 1e6)};
		event_add(B.rss_ev, &rv);
		on_rss(-1, 0, NULL);
	}
	if (o->rate > 0)
		return;
	for (int i = 0; i < o->conns; i++) {
		for (int k = 0; k < o->streams; k++)
			req_start(&B.conns[i], now_ns());
		conn_send(&B.conns[i]);
	}
}

/* ---- report ------------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static double spct(const slat *l, double p)
{
	if (!l->n)
		return NAN;
	size_t i = (size_t)ceil(p / 100.0 * (double)l->n);
	i = i > 0 ? i - 1 : 0;
	return (double)l->v[i < l->n ? i : l->n - 1];
}

static double pct(const lat *l, double p)
{
	if (!l->n)
		return NAN;
	size_t i = (size_t)ceil(p / 100.0 * (double)l->n);
	if (i > 0)
		i--;
	if (i >= l->n)
		i = l->n - 1;
	return (double)l->v[i];
}

static double tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

static void json_num(FILE *f, const char *k, double v, bool comma)
{
	if (isnan(v) || isinf(v))
		fprintf(f, "\"%s\":null%s", k, comma ? "," : "");
	else
		fprintf(f, "\"%s\":%.6g%s", k, v, comma ? "," : "");
}

static void report(void)
{
	const bench_opts *o = B.o;
	double tick = (double)sysconf(_SC_CLK_TCK);
	double window = o->duration;
	qsort(B.decide.v, B.decide.n, sizeof(uint64_t), cmp_u64);
	qsort(B.total.v, B.total.n, sizeof(uint64_t), cmp_u64);
	qsort(B.hdr_first.v, B.hdr_first.n, sizeof(uint64_t), cmp_u64);
	qsort(B.last_first.v, B.last_first.n, sizeof(uint64_t), cmp_u64);
	qsort(B.lead.v, B.lead.n, sizeof(int64_t), cmp_i64);
	double rps = (double)B.ok_window / window;
	double cpu_s = o->pid && B.cpu_stop >= 0 && B.cpu_warm >= 0
			       ? (double)(B.cpu_stop - B.cpu_warm) / tick : NAN;
	double per_req_us = B.ok_window ? cpu_s / (double)B.ok_window * 1e6 : NAN;
	double wcpu_s = o->pid && B.wcpu_stop >= 0 && B.wcpu_warm >= 0
				? (double)(B.wcpu_stop - B.wcpu_warm) / tick : NAN;
	double worker_us = B.ok_window ? wcpu_s / (double)B.ok_window * 1e6 : NAN;
	double idle_rate = o->idle > 0 ? B.idle_cpu_s / o->idle : NAN;
	double net_us = o->idle > 0 && B.ok_window
				? (cpu_s - idle_rate * window) / (double)B.ok_window * 1e6 : NAN;
	double client_cpu = tv_s(B.ru_stop.ru_utime) + tv_s(B.ru_stop.ru_stime) -
			    tv_s(B.ru_warm.ru_utime) - tv_s(B.ru_warm.ru_stime);
	long hwm = o->pid ? proc_status_kb(o->pid, "VmHWM") : -1;
	long rss = o->pid ? proc_status_kb(o->pid, "VmRSS") : -1;
	uint64_t top = 0, errs = 0;
	for (size_t i = 0; i < B.n_dests; i++)
		if (B.dests[i].n > top)
			top = B.dests[i].n;
	uint64_t picks = 0;
	for (size_t i = 0; i < B.n_dests; i++)
		picks += B.dests[i].n;
	for (int i = 0; i < E_N; i++)
		errs += B.errs[i];
	double d[5] = {pct(&B.decide, 50), pct(&B.decide, 90), pct(&B.decide, 99),
		       pct(&B.decide, 99.9), B.decide.n ? (double)B.decide.v[B.decide.n - 1] : NAN};
	double tl[4] = {pct(&B.total, 50), pct(&B.total, 90), pct(&B.total, 99),
			pct(&B.total, 99.9)};

	if (o->json) {
		FILE *f = stdout;
		fprintf(f, "{\"label\":\"%s\",", o->label ? o->label : "");
		fprintf(f, "\"body_bytes\":%zu,\"tls\":%s,\"conns\":%d,\"streams\":%d,", B.body_size,
			o->tls ? "true" : "false", o->conns, o->streams);
		json_num(f, "offered_rps", o->rate, true);
		json_num(f, "rps", rps, true);
		fprintf(f, "\"ok\":%llu,\"errors\":%llu,\"completed_total\":%llu,\"error_kinds\":{",
			(unsigned long long)B.ok_window, (unsigned long long)errs,
			(unsigned long long)B.done_all);
		for (int i = 0; i < E_N; i++)
			fprintf(f, "\"%s\":%llu%s", err_names[i], (unsigned long long)B.errs[i],
				i + 1 < E_N ? "," : "");
		fprintf(f, "},\"decision_us\":{");
		json_num(f, "p50", d[0] / 1e3, true);
		json_num(f, "p90", d[1] / 1e3, true);
		json_num(f, "p99", d[2] / 1e3, true);
		json_num(f, "p999", d[3] / 1e3, true);
		json_num(f, "max", d[4] / 1e3, false);
		fprintf(f, "},\"total_ms\":{");
		json_num(f, "p50", tl[0] / 1e6, true);
		json_num(f, "p90", tl[1] / 1e6, true);
		json_num(f, "p99", tl[2] / 1e6, true);
		json_num(f, "p999", tl[3] / 1e6, false);
		/* Headers response and last body message, after the first body
		 * message was handed over; lead: how long before the last body
		 * message the headers response came (negative: after it). */
		fprintf(f, "},\"hdr_after_first_ms\":{");
		json_num(f, "p50", pct(&B.hdr_first, 50) / 1e6, true);
		json_num(f, "p99", pct(&B.hdr_first, 99) / 1e6, false);
		fprintf(f, "},\"last_after_first_ms\":{");
		json_num(f, "p50", pct(&B.last_first, 50) / 1e6, true);
		json_num(f, "p99", pct(&B.last_first, 99) / 1e6, false);
		fprintf(f, "},\"hdr_lead_ms\":{");
		json_num(f, "p1", spct(&B.lead, 1) / 1e6, true);
		json_num(f, "p50", spct(&B.lead, 50) / 1e6, false);
		fprintf(f, "},");
		json_num(f, "server_cpu_s", cpu_s, true);
		json_num(f, "server_cpu_pct", cpu_s / window * 100, true);
		json_num(f, "cpu_us_per_req", per_req_us, true);
		json_num(f, "worker_cpu_s", wcpu_s, true);
		json_num(f, "worker_us_per_req", worker_us, true);
		json_num(f, "idle_cpu_pct", idle_rate * 100, true);
		json_num(f, "cpu_us_per_req_net", net_us, true);
		json_num(f, "client_cpu_pct", client_cpu / window * 100, true);
		fprintf(f, "\"hwm_kb\":%ld,\"rss_kb\":%ld,\"endpoints_picked\":%zu,", hwm, rss,
			B.n_dests);
		json_num(f, "top_endpoint_share", picks ? (double)top / (double)picks : NAN, true);
		fprintf(f, "\"backlog_max\":%zu,\"dropped\":%llu,\"last_http_status\":%d,"
			   "\"grpc_message\":\"",
			B.bl_max, (unsigned long long)B.dropped, B.last_http_status);
		for (const char *q = B.first_grpc_error; *q; q++)
			fprintf(f, *q == '"' || *q == '\\' ? "\\%c" : "%c", *q);
		fprintf(f, "\",\"rss_series\":[");
		for (size_t i = 0; i < B.n_rss; i++)
			fprintf(f, "[%.1f,%ld]%s", B.rss_t[i], B.rss_kb[i], i + 1 < B.n_rss ? "," : "");
		fprintf(f, "]}\n");
		return;
	}
	printf("%s: %zu-byte bodies, %s, %d conns x %d streams, %s\n",
	       o->label ? o->label : "bench", B.body_size, o->tls ? "TLS" : "h2c", o->conns,
	       o->streams, o->rate > 0 ? "open loop" : "closed loop");
	if (o->rate > 0)
		printf("  offered %.0f req/s, backlog max %zu, dropped %llu\n", o->rate, B.bl_max,
		       (unsigned long long)B.dropped);
	printf("  %.0f req/s ok (%llu ok, %llu errors", rps, (unsigned long long)B.ok_window,
	       (unsigned long long)errs);
	for (int i = 0; i < E_N; i++)
		if (B.errs[i])
			printf(", %s %llu", err_names[i], (unsigned long long)B.errs[i]);
	if (B.errs[E_IMMEDIATE])
		printf(", last HTTP status %d", B.last_http_status);
	if (B.first_grpc_error[0])
		printf(", grpc-message \"%s\"", B.first_grpc_error);
	printf(")\n");
	printf("  decision us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", d[0] / 1e3,
	       d[1] / 1e3, d[2] / 1e3, d[3] / 1e3, d[4] / 1e3);
	printf("  request ms:  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f\n", tl[0] / 1e6,
	       tl[1] / 1e6, tl[2] / 1e6, tl[3] / 1e6);
	printf("  after the first body message, ms p50: headers response %.3f, last body "
	       "message %.3f; headers response before the last body message: p50 %.3f ms\n",
	       pct(&B.hdr_first, 50) / 1e6, pct(&B.last_first, 50) / 1e6,
	       spct(&B.lead, 50) / 1e6);
	if (o->pid)
		printf("  server: %.2f CPU s (%.0f%% of a core), %.1f us/req, idle %.1f%%, net %.1f "
		       "us/req, worker threads %.1f us/req, VmHWM %ld kB, VmRSS %ld kB\n",
		       cpu_s, cpu_s / window * 100, per_req_us, idle_rate * 100, net_us, worker_us,
		       hwm, rss);
	printf("  client: %.0f%% of a core; %zu endpoints picked, top share %.3f\n",
	       client_cpu / window * 100, B.n_dests, picks ? (double)top / (double)picks : 0.0);
}

/* ---- run ---------------------------------------------------------------------------- */

static void cleanup(void)
{
	/* Requests still in flight after the drain timeout are not on this list;
	 * the process ends next. */
	while (B.free_reqs) {
		req *r = B.free_reqs;
		B.free_reqs = r->next_free;
		evbuffer_free(r->out);
		if (r->pace)
			event_free(r->pace);
		free(r);
	}
	for (int v = 0; B.bodies && v < B.o->variants; v++)
		bb_free(&B.bodies[v]);
	free(B.bodies);
	bb_free(&B.resp_msgs);
	bb_free(&B.hdr_msg);
	bb_free(&B.uniq);
	free(B.decide.v);
	free(B.total.v);
	free(B.hdr_first.v);
	free(B.last_first.v);
	free(B.lead.v);
	free(B.msg_len);
	free(B.backlog);
	free(B.conns);
	if (B.tick)
		event_free(B.tick);
	if (B.rss_ev)
		event_free(B.rss_ev);
	if (B.ssl_ctx)
		SSL_CTX_free(B.ssl_ctx);
	event_base_free(B.base);
}

int bench_run(const bench_opts *o)
{
	B.o = o;
	signal(SIGPIPE, SIG_IGN);
	if (o->pid && o->idle > 0) {
		long a = proc_cpu_ticks(o->pid);
		struct timespec ts = {(time_t)o->idle,
				      (long)((o->idle - (double)(time_t)o->idle) * 1e9)};
		nanosleep(&ts, NULL);
		long b = proc_cpu_ticks(o->pid);
		B.idle_cpu_s = a >= 0 && b >= 0 ? (double)(b - a) / (double)sysconf(_SC_CLK_TCK) : NAN;
	}
	prepare_messages(o);
	struct event_config *cfg = event_config_new();
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	B.base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (!B.base)
		return 1;
	if (o->tls) {
		B.ssl_ctx = SSL_CTX_new(TLS_client_method());
		static const unsigned char alpn[] = "\x02h2";
		SSL_CTX_set_alpn_protos(B.ssl_ctx, alpn, 3);
		SSL_CTX_set_verify(B.ssl_ctx, SSL_VERIFY_NONE, NULL);
	}
	if (o->rate > 0 && !(B.backlog = calloc(BACKLOG_MAX, sizeof(uint64_t))))
		return 1;
	B.conns = calloc((size_t)o->conns, sizeof(conn));
	for (int i = 0; i < o->conns; i++) {
		B.conns[i].idx = i;
		if (conn_open(&B.conns[i]) < 0) {
			fprintf(stderr, "bench-extproc: cannot connect to %s:%d\n", o->host, o->port);
			return 1;
		}
	}
	event_base_dispatch(B.base);
	if (B.running) /* the loop ended early: connections failed */
		B.failed = true;
	if (!B.failed || B.stopping)
		report();
	for (int i = 0; i < o->conns; i++) {
		if (B.conns[i].h2)
			nghttp2_session_del(B.conns[i].h2);
		if (B.conns[i].bev)
			bufferevent_free(B.conns[i].bev);
	}
	cleanup();
	return B.failed ? 1 : 0;
}
