/* The gRPC server: nghttp2 sessions on libevent bufferevents (the shape of
 * nghttp2's examples/libevent-server.c, 1.52 API), gRPC framing from
 * grpc_codec, TLS from tls.c. One xp_server per worker thread; everything
 * here runs on that thread.
 *
 * Flow control both ways:
 * - in: automatic WINDOW_UPDATE is off. Received DATA is consumed (the window
 *   reopened) as the decoder takes it, unless the stream's queued output is
 *   above STREAM_OUT_HIGH: then the client is held until the output drains.
 * - out: the nghttp2 send callback returns WOULDBLOCK while the socket's
 *   output buffer is full; a stream's data provider defers while it has
 *   nothing queued and is resumed by xp_stream_send / xp_stream_finish.
 *
 * Re-entrancy: handlers run inside nghttp2 callbacks, where nghttp2 must
 * not be re-entered. xp_stream_send/finish only submit; frames go out when
 * the read callback's nghttp2_session_send runs, or from the connection's
 * flush event when called outside nghttp2. A connection is freed only from
 * libevent callbacks, never below an nghttp2 or handler call. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>

#include "extproc/grpc.h"
#include "extproc/grpc_codec.h"
#include "util/arena.h"
#include "util/log.h"

/* Socket output bytes before nghttp2 is told to wait (WOULDBLOCK). */
#define OUT_WOULDBLOCK (64 * 1024)
/* A stream's queued response bytes above which its input is not consumed. */
#define STREAM_OUT_HIGH (256 * 1024)
#define STREAM_WINDOW (1 << 20)
#define CONN_WINDOW (16 << 20)
#define DEFAULT_MAX_STREAMS 100
#define MEM_MIN 32
#define MEM_CLASSES 10 /* 32 B .. 16 KiB */
#define MEM_KEEP 256
#define MEM_KEEP_BYTES (256 * 1024)
/* Request header bounds: Envoy's ext_proc stream carries about a dozen. */
#define MAX_HEADERS 64
#define MAX_HEADER_BYTES (16 * 1024)
#define MAX_GRPC_MESSAGE 1024 /* encoded grpc-message bytes sent */
#define LISTEN_BACKLOG 1024
/* Finished streams kept per server for reuse (with their buffers and arena),
 * so the steady state allocates no stream memory. */
#define STREAM_CACHE 128
/* A stream's output buffer at most this big is kept when it is reused. */
#define OUT_KEEP_BYTES (256 * 1024)
/* The PING sent with the shutdown notice; its ACK means the client has
 * seen the notice, so the final GOAWAY can name the last stream. */
static const uint8_t drain_ping[8] = {'k', 'e', 'p', 'p', 'd', 'r', 'n', '1'};

typedef struct xp_conn xp_conn;

typedef struct hdr {
	const char *name, *value;
} hdr;

/* Framed response messages not yet in DATA frames: bytes [off, off + len)
 * of p. A plain buffer kept with the stream instead of an evbuffer, whose
 * chains would be allocated and freed for every message. */
typedef struct obuf {
	uint8_t *p;
	size_t off, len, cap;
} obuf;

struct xp_stream {
	xp_conn *c;
	int32_t id;
	xp_stream *prev, *next;
	const xp_method *m;
	void *ctx;
	arena mem; /* header copies, grpc-message */
	hdr hdrs[MAX_HEADERS];
	unsigned n_hdrs;
	size_t hdr_bytes;
	bool hdr_overflow;
	xp_dec dec;
	obuf out;
	size_t unconsumed;    /* DATA bytes received but not yet given back */
	char status_str[12];  /* grpc-status */
	const char *message;  /* percent-encoded, or NULL */
	bool opened;          /* open succeeded: close will be called */
	bool app_finished;    /* the handler called xp_stream_finish */
	bool finished;        /* trailers decided (by the handler or this layer) */
	bool headers_sent;    /* response HEADERS submitted */
	bool deferred;        /* the data provider is waiting for output */
	bool remote_closed;   /* END_STREAM received */
	bool closed;          /* gone: inside or after its close */
};

struct xp_conn {
	xp_server *s;
	xp_conn *prev, *next;
	struct bufferevent *bev;
	nghttp2_session *h2;
	struct event *flush_ev;
	xp_stream *streams;
	int in_h2;    /* depth of nghttp2 calls on the stack */
	bool closing; /* free once the output has drained */
	bool greeted; /* the client's first SETTINGS arrived: handshake timeout off */
	char peer[64];
};

struct xp_server {
	struct event_base *base;
	struct evconnlistener *lis;
	xp_server_opts o;
	char name[32];
	int port;
	xp_conn *conns;
	uint32_t n_conns;
	xp_stream *free_streams; /* finished streams for reuse, linked by next */
	uint32_t n_free_streams;
	/* nghttp2's memory: blocks it freed, by size class, for its next
	 * allocations (it allocates ~7 per request: stream, items, header
	 * copies); every session of the server runs on its one thread. */
	struct mem_block *mem_free[MEM_CLASSES];
	uint32_t mem_n_free[MEM_CLASSES];
	nghttp2_mem mem;
	int64_t refused_log_s; /* last second a refused connection was logged */
	atomic_size_t active;
	bool draining;
};

static void conn_free(xp_conn *c);
static void conn_send(xp_conn *c);

/* ---- nghttp2's allocator ------------------------------------------------- */

/* Size classes 32 B .. 16 KiB (powers of two); larger blocks go straight to
 * malloc. Each block carries its class in a header aligned like malloc's. */
struct mem_hdr {
	union {
		struct {
			uint32_t cls;
			size_t size; /* the block's payload capacity */
		};
		max_align_t align;
	};
};

struct mem_block {
	struct mem_hdr h;
	struct mem_block *next; /* while in a free list: the payload's first bytes */
};

/* Free blocks kept per class: up to 256, and up to 256 KiB of the larger
 * classes, so a burst of streams leaves at most ~1.8 MiB behind. */
static uint32_t mem_keep(uint32_t cls)
{
	size_t n = MEM_KEEP_BYTES / ((size_t)MEM_MIN << cls);
	return n < MEM_KEEP ? (uint32_t)n : MEM_KEEP;
}

static size_t mem_class_size(uint32_t cls)
{
	return (size_t)MEM_MIN << cls;
}

static void *mem_malloc(size_t size, void *ud)
{
	xp_server *s = ud;
	uint32_t cls = 0;
	while (cls < MEM_CLASSES && mem_class_size(cls) < size)
		cls++;
	if (cls < MEM_CLASSES && s->mem_free[cls]) {
		struct mem_block *b = s->mem_free[cls];
		s->mem_free[cls] = b->next;
		s->mem_n_free[cls]--;
		return (char *)b + sizeof(struct mem_hdr);
	}
	size_t cap = cls < MEM_CLASSES ? mem_class_size(cls) : size;
	if (cap > SIZE_MAX - sizeof(struct mem_hdr))
		return NULL;
	struct mem_hdr *h = malloc(sizeof(struct mem_hdr) + cap);
	if (!h)
		return NULL;
	h->cls = cls;
	h->size = cap;
	return (char *)h + sizeof(*h);
}

static void mem_free(void *ptr, void *ud)
{
	xp_server *s = ud;
	if (!ptr)
		return;
	struct mem_block *b = (struct mem_block *)((char *)ptr - sizeof(struct mem_hdr));
	uint32_t cls = b->h.cls;
	if (cls >= MEM_CLASSES || s->mem_n_free[cls] >= mem_keep(cls)) {
		free(b);
		return;
	}
	b->next = s->mem_free[cls];
	s->mem_free[cls] = b;
	s->mem_n_free[cls]++;
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	void *p = mem_malloc(n * size, ud);
	if (p)
		memset(p, 0, n * size);
	return p;
}

static void *mem_realloc(void *ptr, size_t size, void *ud)
{
	if (!ptr)
		return mem_malloc(size, ud);
	const struct mem_hdr *h = (const struct mem_hdr *)((char *)ptr - sizeof(struct mem_hdr));
	if (size <= h->size)
		return ptr;
	void *np = mem_malloc(size, ud);
	if (!np)
		return NULL;
	memcpy(np, ptr, h->size);
	mem_free(ptr, ud);
	return np;
}

static void mem_init(xp_server *s)
{
	s->mem = (nghttp2_mem){s, mem_malloc, mem_free, mem_calloc, mem_realloc};
}

static void mem_release(xp_server *s)
{
	for (uint32_t i = 0; i < MEM_CLASSES; i++)
		while (s->mem_free[i]) {
			struct mem_block *b = s->mem_free[i];
			s->mem_free[i] = b->next;
			free(b);
		}
}
static uint8_t *stream_reserve(xp_stream *st, size_t len);
static int stream_commit(xp_stream *st, size_t len);

/* ---- streams ---------------------------------------------------------- */

const char *xp_stream_header(const xp_stream *st, const char *name)
{
	for (unsigned i = 0; i < st->n_hdrs; i++)
		if (strcmp(st->hdrs[i].name, name) == 0)
			return st->hdrs[i].value;
	return NULL;
}

/* Asks for a session_send from the event loop when called outside nghttp2
 * (inside it, the caller on the stack sends once nghttp2 returns). */
static void conn_kick(xp_conn *c)
{
	if (!c->in_h2)
		event_active(c->flush_ev, EV_WRITE, 0);
}

/* Gives the stream's held-back DATA bytes back to the client's windows. */
static void stream_release(xp_stream *st)
{
	if (st->unconsumed) {
		nghttp2_session_consume(st->c->h2, st->id, st->unconsumed);
		st->unconsumed = 0;
	}
}

static void set_status(xp_stream *st, int status, const char *msg)
{
	snprintf(st->status_str, sizeof(st->status_str), "%d", status);
	st->message = NULL;
	if (msg && *msg) {
		char *m = arena_alloc(&st->mem, MAX_GRPC_MESSAGE);
		if (m) {
			xp_grpc_percent_encode(m, MAX_GRPC_MESSAGE, msg);
			st->message = m;
		}
	}
}

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

/* Trailers-Only: one HEADERS frame with END_STREAM carrying the status. */
static void submit_trailers_only(xp_stream *st, const char *http_status)
{
	nghttp2_nv nva[] = {
		NV(":status", http_status),
		NV("content-type", "application/grpc"),
		NV("grpc-status", st->status_str),
		NV("grpc-message", st->message ? st->message : ""),
	};
	size_t n = st->message ? 4 : 3;
	st->headers_sent = true;
	if (nghttp2_submit_response(st->c->h2, st->id, nva, n, NULL) != 0)
		nghttp2_submit_rst_stream(st->c->h2, NGHTTP2_FLAG_NONE, st->id,
					  NGHTTP2_INTERNAL_ERROR);
}

/* Decides the stream's end: after the queued messages when response
 * headers went out, else at once as Trailers-Only. */
static void stream_end(xp_stream *st, int status, const char *msg, const char *http_status)
{
	if (st->finished || st->closed)
		return;
	st->finished = true;
	set_status(st, status, msg);
	if (!st->headers_sent) {
		submit_trailers_only(st, http_status);
	} else if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(st->c->h2, st->id);
	}
	/* No more input is wanted: stop holding the client's window. */
	stream_release(st);
	conn_kick(st->c);
}

void xp_stream_finish(xp_stream *st, int grpc_status, const char *grpc_message)
{
	if (st->finished || st->closed)
		return;
	st->app_finished = true;
	stream_end(st, grpc_status, grpc_message, "200");
}

/* Room for |n| more bytes at the end of |b|; moves what is left to the front
 * first. */
static int obuf_reserve(obuf *b, size_t n)
{
	if (b->off + b->len + n <= b->cap)
		return 0;
	if (b->off) {
		memmove(b->p, b->p + b->off, b->len);
		b->off = 0;
	}
	if (b->len + n <= b->cap)
		return 0;
	if (n > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	size_t cap = b->cap ? b->cap * 2 : 4096;
	while (cap < b->len + n)
		cap *= 2;
	uint8_t *q = realloc(b->p, cap);
	if (!q)
		return -ENOMEM;
	b->p = q;
	b->cap = cap;
	return 0;
}

static void obuf_free(obuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* DATA payloads are not copied into nghttp2's frame buffer: data_read only
 * says how many bytes go (NO_COPY) and send_data writes them from the
 * stream's buffer straight to the connection. */
static ssize_t data_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *user)
{
	xp_stream *st = src->ptr;
	size_t n = st->out.len < len ? st->out.len : len;
	*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (st->out.len == n && st->finished) {
		nghttp2_nv nva[] = {
			NV("grpc-status", st->status_str),
			NV("grpc-message", st->message ? st->message : ""),
		};
		*flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (nghttp2_submit_trailer(h2, id, nva, st->message ? 2 : 1) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		return (ssize_t)n;
	}
	if (n == 0) {
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

int xp_stream_send(xp_stream *st, const uint8_t *msg, size_t len)
{
	if (st->finished || st->closed)
		return -ECANCELED;
	if (len > UINT32_MAX)
		return -EMSGSIZE;
	uint8_t *p = stream_reserve(st, len);
	if (!p)
		return -ENOMEM;
	if (len)
		memcpy(p, msg, len);
	return stream_commit(st, len);
}

int xp_stream_send_packed(xp_stream *st, size_t len, void (*pack)(const void *msg, uint8_t *out),
			  const void *msg)
{
	if (st->finished || st->closed)
		return -ECANCELED;
	if (len > UINT32_MAX)
		return -EMSGSIZE;
	uint8_t *p = stream_reserve(st, len);
	if (!p)
		return -ENOMEM;
	pack(msg, p);
	return stream_commit(st, len);
}

/* Room for one message of |len| bytes after its prefix in the output; the
 * bytes count once stream_commit runs. */
static uint8_t *stream_reserve(xp_stream *st, size_t len)
{
	if (obuf_reserve(&st->out, XP_GRPC_PREFIX + len) < 0)
		return NULL;
	uint8_t *p = st->out.p + st->out.off + st->out.len;
	xp_grpc_prefix(p, (uint32_t)len);
	return p + XP_GRPC_PREFIX;
}

static int stream_commit(xp_stream *st, size_t len)
{
	st->out.len += XP_GRPC_PREFIX + len;
	if (!st->headers_sent) {
		nghttp2_nv nva[] = {
			NV(":status", "200"),
			NV("content-type", "application/grpc"),
			NV("grpc-accept-encoding", "identity"),
		};
		nghttp2_data_provider dp = {.source.ptr = st, .read_callback = data_read};
		st->headers_sent = true;
		if (nghttp2_submit_response(st->c->h2, st->id, nva, 3, &dp) != 0) {
			st->out.off = st->out.len = 0;
			return -ENOMEM;
		}
	} else if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(st->c->h2, st->id);
	}
	conn_kick(st->c);
	return 0;
}

static xp_stream *stream_new(xp_conn *c, int32_t id)
{
	xp_server *s = c->s;
	xp_stream *st = s->free_streams;
	if (st) {
		/* Everything but the kept memory starts over. */
		s->free_streams = st->next;
		s->n_free_streams--;
		arena mem = st->mem;
		xp_dec dec = st->dec;
		obuf out = st->out;
		memset(st, 0, offsetof(xp_stream, hdrs));
		memset(&st->n_hdrs, 0, sizeof(*st) - offsetof(xp_stream, n_hdrs));
		st->mem = mem;
		st->dec = dec;
		st->out = out;
		st->out.off = st->out.len = 0;
		arena_reset(&st->mem);
		xp_dec_reset(&st->dec, s->o.max_message_bytes);
	} else {
		st = calloc(1, sizeof(*st));
		if (!st)
			return NULL;
		arena_init(&st->mem, 2048);
		xp_dec_init(&st->dec, s->o.max_message_bytes);
	}
	st->c = c;
	st->id = id;
	st->next = c->streams;
	if (c->streams)
		c->streams->prev = st;
	c->streams = st;
	atomic_fetch_add(&c->s->active, 1);
	return st;
}

static void stream_destroy(xp_stream *st)
{
	xp_dec_free(&st->dec);
	obuf_free(&st->out);
	arena_free(&st->mem);
	free(st);
}

/* The stream is gone: the handler's close runs, then its memory goes back
 * to the server's cache (or to malloc when the cache is full). */
static void stream_free(xp_stream *st)
{
	xp_conn *c = st->c;
	st->closed = true;
	if (st->opened && st->m->close)
		st->m->close(st, st->ctx, !st->app_finished);
	if (st->prev)
		st->prev->next = st->next;
	else
		c->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	atomic_fetch_sub(&c->s->active, 1);
	xp_server *s = c->s;
	if (s->n_free_streams < STREAM_CACHE) {
		/* A cached stream keeps small buffers only: its decoder grew to
		 * the largest message (up to --max-message-bytes). */
		if (st->out.cap > OUT_KEEP_BYTES)
			obuf_free(&st->out);
		if (st->dec.cap > OUT_KEEP_BYTES)
			xp_dec_free(&st->dec);
		st->next = s->free_streams;
		s->free_streams = st;
		s->n_free_streams++;
		return;
	}
	stream_destroy(st);
}

/* application/grpc, optionally followed by "+codec" or parameters. */
static bool grpc_content_type(const char *ct)
{
	static const char p[] = "application/grpc";
	if (!ct || strncmp(ct, p, sizeof(p) - 1) != 0)
		return false;
	char next = ct[sizeof(p) - 1];
	return next == '\0' || next == '+' || next == ';';
}

/* Request headers are complete: route the stream and open it. */
static void stream_start(xp_stream *st)
{
	xp_server *s = st->c->s;
	char msg[160];

	if (st->hdr_overflow) {
		snprintf(msg, sizeof(msg),
			 "grpc: request headers over the limit (%d headers, %d bytes)", MAX_HEADERS,
			 MAX_HEADER_BYTES);
		stream_end(st, XP_GRPC_RESOURCE_EXHAUSTED, msg, "200");
		return;
	}
	const char *method = xp_stream_header(st, ":method");
	if (!method || strcmp(method, "POST") != 0) {
		stream_end(st, XP_GRPC_UNIMPLEMENTED, "grpc: method must be POST", "405");
		return;
	}
	if (!grpc_content_type(xp_stream_header(st, "content-type"))) {
		stream_end(st, XP_GRPC_INTERNAL, "grpc: invalid gRPC request content-type", "415");
		return;
	}
	const char *path = xp_stream_header(st, ":path");
	for (size_t i = 0; path && i < s->o.n_methods; i++) {
		if (strcmp(s->o.methods[i].path, path) == 0) {
			st->m = &s->o.methods[i];
			break;
		}
	}
	if (!st->m) {
		snprintf(msg, sizeof(msg), "unknown method %.120s", path ? path : "");
		stream_end(st, XP_GRPC_UNIMPLEMENTED, msg, "200");
		return;
	}
	/* opened is set first so the handler may send or finish from open. */
	st->opened = true;
	st->ctx = st->m->open(st, st->m->method_ctx);
	if (!st->ctx) {
		st->opened = false;
		stream_end(st, XP_GRPC_INTERNAL, "grpc: cannot set up the stream", "200");
	}
}

static int deliver(void *arg, const uint8_t *msg, size_t len)
{
	xp_stream *st = arg;
	if (st->finished)
		return 1;
	if (st->m->message)
		st->m->message(st, st->ctx, msg, len);
	return st->finished ? 1 : 0;
}

static void stream_data(xp_stream *st, const uint8_t *data, size_t len)
{
	char msg[160];

	if (st->opened && !st->finished) {
		int r = xp_dec_feed(&st->dec, data, len, deliver, st);
		switch (r) {
		case -EMSGSIZE:
			snprintf(msg, sizeof(msg),
				 "grpc: received message larger than max (%u vs. %zu)",
				 xp_dec_bad_len(&st->dec), st->c->s->o.max_message_bytes);
			stream_end(st, XP_GRPC_RESOURCE_EXHAUSTED, msg, "200");
			break;
		case -ENOTSUP:
			stream_end(st, XP_GRPC_UNIMPLEMENTED,
				   "grpc: compressed messages are not supported", "200");
			break;
		case -EPROTO:
			stream_end(st, XP_GRPC_INTERNAL,
				   "grpc: invalid message compressed-flag", "200");
			break;
		case -ENOMEM:
			stream_end(st, XP_GRPC_RESOURCE_EXHAUSTED,
				   "grpc: out of memory for the message", "200");
			break;
		default:
			break;
		}
	}
	if (!st->finished && st->opened && st->out.len >= STREAM_OUT_HIGH)
		st->unconsumed += len;
	else
		nghttp2_session_consume(st->c->h2, st->id, len);
}

static void stream_remote_close(xp_stream *st)
{
	st->remote_closed = true;
	if (!st->opened || st->finished)
		return;
	if (xp_dec_partial(&st->dec)) {
		stream_end(st, XP_GRPC_INTERNAL, "grpc: client sent a truncated message", "200");
		return;
	}
	if (st->m->half_close)
		st->m->half_close(st, st->ctx);
}

/* ---- nghttp2 callbacks --------------------------------------------------- */

static ssize_t on_send(nghttp2_session *h2, const uint8_t *data, size_t len, int flags,
		       void *user)
{
	xp_conn *c = user;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) >= OUT_WOULDBLOCK)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (bufferevent_write(c->bev, data, len) < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return (ssize_t)len;
}

static int on_send_data(nghttp2_session *h2, nghttp2_frame *f, const uint8_t *framehd,
			size_t length, nghttp2_data_source *src, void *user)
{
	xp_conn *c = user;
	xp_stream *st = src->ptr;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) >= OUT_WOULDBLOCK)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (length > st->out.len ||
	    bufferevent_write(c->bev, framehd, 9) < 0 ||
	    (length && bufferevent_write(c->bev, st->out.p + st->out.off, length) < 0))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	st->out.off += length;
	st->out.len -= length;
	if (!st->out.len)
		st->out.off = 0;
	if (st->unconsumed && st->out.len < STREAM_OUT_HIGH / 2)
		stream_release(st);
	return 0;
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
	xp_conn *c = user;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	xp_stream *st = stream_new(c, f->hd.stream_id);
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	nghttp2_session_set_stream_user_data(h2, f->hd.stream_id, st);
	return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user)
{
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	xp_stream *st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
	if (!st || st->hdr_overflow)
		return 0;
	st->hdr_bytes += namelen + valuelen;
	if (st->n_hdrs == MAX_HEADERS || st->hdr_bytes > MAX_HEADER_BYTES) {
		st->hdr_overflow = true;
		return 0;
	}
	/* nghttp2 has checked the field: lowercase name, no NUL in either. */
	hdr *h = &st->hdrs[st->n_hdrs];
	h->name = arena_strndup(&st->mem, (const char *)name, namelen);
	h->value = arena_strndup(&st->mem, (const char *)value, valuelen);
	if (!h->name || !h->value)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	st->n_hdrs++;
	return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
	xp_stream *st;
	xp_conn *c = user;

	if (!c->greeted && f->hd.type == NGHTTP2_SETTINGS) {
		/* The connection is set up: from now on it may idle as long as
		 * the client likes (Envoy keeps ext_proc connections open). */
		c->greeted = true;
		bufferevent_set_timeouts(c->bev, NULL, NULL);
	}
	switch (f->hd.type) {
	case NGHTTP2_HEADERS:
	case NGHTTP2_DATA:
		st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
		if (!st)
			return 0;
		if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
			stream_start(st);
		if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
			stream_remote_close(st);
		return 0;
	case NGHTTP2_PING:
		if ((f->hd.flags & NGHTTP2_FLAG_ACK) &&
		    memcmp(f->ping.opaque_data, drain_ping, sizeof(drain_ping)) == 0)
			nghttp2_submit_goaway(h2, NGHTTP2_FLAG_NONE,
					      nghttp2_session_get_last_proc_stream_id(h2),
					      NGHTTP2_NO_ERROR, NULL, 0);
		return 0;
	default:
		return 0;
	}
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *user)
{
	xp_stream *st = nghttp2_session_get_stream_user_data(h2, id);
	if (!st) {
		nghttp2_session_consume(h2, id, len);
		return 0;
	}
	stream_data(st, data, len);
	return 0;
}

/* After the trailers, a client that has not half-closed is told the
 * stream is over (RST_STREAM NO_ERROR, as grpc-go does), so a finished
 * stream does not hold a concurrency slot. */
static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
	if (f->hd.type != NGHTTP2_HEADERS || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	xp_stream *st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
	if (st && !st->remote_closed)
		nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, f->hd.stream_id,
					  NGHTTP2_NO_ERROR);
	return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *user)
{
	xp_stream *st = nghttp2_session_get_stream_user_data(h2, id);
	if (!st)
		return 0;
	/* Held-back bytes still count against the connection window. */
	if (st->unconsumed)
		nghttp2_session_consume_connection(h2, st->unconsumed);
	st->unconsumed = 0;
	nghttp2_session_set_stream_user_data(h2, id, NULL);
	stream_free(st);
	return 0;
}

/* ---- connections --------------------------------------------------------- */

static void conn_done_check(xp_conn *c)
{
	if (nghttp2_session_want_read(c->h2) || nghttp2_session_want_write(c->h2))
		return;
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_free(c);
	else
		c->closing = true;
}

/* Writes what nghttp2 has queued; may free |c|. */
static void conn_send(xp_conn *c)
{
	c->in_h2++;
	int rv = nghttp2_session_send(c->h2);
	c->in_h2--;
	if (rv != 0) {
		ulog(LOG_DEBUG, "http2 send failed", "server", c->s->name, "peer", c->peer,
		     "error", nghttp2_strerror(rv), NULL);
		conn_free(c);
		return;
	}
	conn_done_check(c);
}

static void conn_readcb(struct bufferevent *bev, void *arg)
{
	xp_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		c->in_h2++;
		ssize_t rv = nghttp2_session_mem_recv(c->h2, v.iov_base, v.iov_len);
		c->in_h2--;
		if (rv < 0) {
			ulog(LOG_DEBUG, "http2 receive failed", "server", c->s->name, "peer",
			     c->peer, "error", nghttp2_strerror((int)rv), NULL);
			conn_free(c);
			return;
		}
		evbuffer_drain(in, (size_t)rv);
	}
	conn_send(c);
}

static void conn_writecb(struct bufferevent *bev, void *arg)
{
	xp_conn *c = arg;
	if (c->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_free(c);
		return;
	}
	conn_send(c);
}

static void conn_eventcb(struct bufferevent *bev, short events, void *arg)
{
	xp_conn *c = arg;
	if (events & BEV_EVENT_CONNECTED)
		return; /* TLS handshake done; ALPN already refused non-h2 clients */
	if (events & BEV_EVENT_TIMEOUT)
		ulog(LOG_DEBUG, "connection closed: no HTTP/2 preface within the handshake timeout",
		     "server", c->s->name, "peer", c->peer, NULL);
	if (events & BEV_EVENT_ERROR) {
		unsigned long e = c->s->o.tls ? bufferevent_get_openssl_error(bev) : 0;
		const char *why = e ? ERR_reason_error_string(e)
				    : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR());
		ulog(LOG_DEBUG, "connection error", "server", c->s->name, "peer", c->peer, "error",
		     why ? why : "TLS error", NULL);
	}
	conn_free(c);
}

static void conn_flushcb(evutil_socket_t fd, short what, void *arg)
{
	conn_send(arg);
}

static void conn_free(xp_conn *c)
{
	xp_server *s = c->s;
	/* nghttp2_session_del calls no callbacks: close what is left here. */
	while (c->streams) {
		xp_stream *st = c->streams;
		nghttp2_session_set_stream_user_data(c->h2, st->id, NULL);
		stream_free(st);
	}
	nghttp2_session_del(c->h2);
	bufferevent_free(c->bev);
	event_free(c->flush_ev);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_conns--;
	ulog(LOG_TRACE, "connection closed", "server", s->name, "peer", c->peer, NULL);
	free(c);
}

static int conn_session(xp_conn *c)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	int rv;

	if (nghttp2_session_callbacks_new(&cbs) != 0)
		return -ENOMEM;
	nghttp2_session_callbacks_set_send_callback(cbs, on_send);
	nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cbs);
		return -ENOMEM;
	}
	nghttp2_option_set_no_auto_window_update(opt, 1);
	rv = nghttp2_session_server_new3(&c->h2, cbs, c, opt, &c->s->mem);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	if (rv != 0)
		return -ENOMEM;

	uint32_t max_streams = c->s->o.max_concurrent_streams ? c->s->o.max_concurrent_streams
							       : DEFAULT_MAX_STREAMS;
	nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams},
		{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
		{NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_BYTES},
	};
	if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 3) != 0 ||
	    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
		return -ENOMEM;
	return 0;
}

static void conn_drain(xp_conn *c)
{
	nghttp2_submit_shutdown_notice(c->h2);
	nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, drain_ping);
	conn_send(c);
}

static void peer_name(const struct sockaddr *sa, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
		evutil_inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		port = ntohs(a->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
		evutil_inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		port = ntohs(a->sin6_port);
	}
	snprintf(out, cap, "%s:%d", host, port);
}

static void on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
		      int salen, void *arg)
{
	xp_server *s = arg;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	if (s->o.max_connections && s->n_conns >= s->o.max_connections) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec != s->refused_log_s) {
			s->refused_log_s = now.tv_sec;
			char peer[64];
			peer_name(sa, peer, sizeof(peer));
			ulog(LOG_WARN, "connection refused: --max-connections reached", "server",
			     s->name, "peer", peer, NULL);
		}
		evutil_closesocket(fd);
		return;
	}
	xp_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		evutil_closesocket(fd);
		return;
	}
	c->s = s;
	peer_name(sa, c->peer, sizeof(c->peer));
	int flags = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
	if (s->o.tls) {
		SSL *ssl = xp_tls_ssl_new(s->o.tls);
		if (ssl)
			c->bev = bufferevent_openssl_socket_new(s->base, fd, ssl,
								BUFFEREVENT_SSL_ACCEPTING, flags);
		if (!c->bev) {
			SSL_free(ssl);
			evutil_closesocket(fd);
			free(c);
			return;
		}
		/* Clients often close without close_notify; that is an EOF. */
		bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	} else {
		c->bev = bufferevent_socket_new(s->base, fd, flags);
		if (!c->bev) {
			evutil_closesocket(fd);
			free(c);
			return;
		}
	}
	c->flush_ev = event_new(s->base, -1, 0, conn_flushcb, c);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
	if (!c->flush_ev || conn_session(c) < 0) {
		ulog(LOG_ERROR, "cannot set up a connection", "server", s->name, "peer", c->peer,
		     NULL);
		conn_free(c);
		return;
	}
	ulog(LOG_TRACE, "connection accepted", "server", s->name, "peer", c->peer, NULL);
	bufferevent_setcb(c->bev, conn_readcb, conn_writecb, conn_eventcb, c);
	int64_t hs = s->o.handshake_timeout_ms > 0 ? s->o.handshake_timeout_ms : 10000;
	struct timeval hs_tv = {hs / 1000, (hs % 1000) * 1000};
	bufferevent_set_timeouts(c->bev, &hs_tv, NULL);
	/* Resume writing when half the WOULDBLOCK threshold has drained. */
	bufferevent_setwatermark(c->bev, EV_WRITE, OUT_WOULDBLOCK / 2, 0);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	conn_send(c);
}

/* ---- server -------------------------------------------------------------- */

/* A listening socket with SO_REUSEPORT (one per worker on the same port);
 * IPv6 sockets accept IPv4 too. Returns the fd or -errno. */
static int listen_on(const struct sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1, zero = 0;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    (sa->sa_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0) ||
	    bind(fd, sa, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

static int server_listen(xp_server *s, char *err, size_t errlen)
{
	int fd = -EINVAL;
	char port[8];
	snprintf(port, sizeof(port), "%d", s->o.port);

	if (s->o.bind_addr && *s->o.bind_addr) {
		struct addrinfo hints = {.ai_family = AF_UNSPEC,
					 .ai_socktype = SOCK_STREAM,
					 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
		struct addrinfo *res, *ai;
		int r = getaddrinfo(s->o.bind_addr, port, &hints, &res);
		if (r != 0) {
			snprintf(err, errlen, "%s: %s", s->o.bind_addr, gai_strerror(r));
			return -EINVAL;
		}
		for (ai = res; ai; ai = ai->ai_next) {
			fd = listen_on(ai->ai_addr, ai->ai_addrlen);
			if (fd >= 0)
				break;
		}
		freeaddrinfo(res);
	} else {
		struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
					  .sin6_port = htons((uint16_t)s->o.port),
					  .sin6_addr = IN6ADDR_ANY_INIT};
		fd = listen_on((struct sockaddr *)&a6, sizeof(a6));
		if (fd == -EAFNOSUPPORT || fd == -EADDRNOTAVAIL) {
			struct sockaddr_in a4 = {.sin_family = AF_INET,
						 .sin_port = htons((uint16_t)s->o.port),
						 .sin_addr.s_addr = htonl(INADDR_ANY)};
			fd = listen_on((struct sockaddr *)&a4, sizeof(a4));
		}
	}
	if (fd < 0) {
		snprintf(err, errlen, "cannot listen on %s:%d: %s",
			 s->o.bind_addr ? s->o.bind_addr : "*", s->o.port, strerror(-fd));
		return fd;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							 : ((struct sockaddr_in *)&ss)->sin_port);
	s->lis = evconnlistener_new(s->base, on_accept, s,
				    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (!s->lis) {
		close(fd);
		snprintf(err, errlen, "evconnlistener_new failed");
		return -ENOMEM;
	}
	return 0;
}

xp_server *xp_server_new(struct event_base *base, const xp_server_opts *o, char *err,
			 size_t errlen)
{
	if (o->port < 0 || o->port > 65535) {
		snprintf(err, errlen, "invalid port %d", o->port);
		return NULL;
	}
	xp_server *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	mem_init(s);
	s->base = base;
	s->o = *o;
	if (!s->o.max_message_bytes)
		s->o.max_message_bytes = XP_DEFAULT_MAX_MESSAGE;
	snprintf(s->name, sizeof(s->name), "%s", o->name ? o->name : "grpc");
	atomic_init(&s->active, 0);
	if (server_listen(s, err, errlen) < 0) {
		free(s);
		return NULL;
	}
	return s;
}

void xp_server_drain(xp_server *s)
{
	if (s->draining)
		return;
	s->draining = true;
	/* Closing the socket (not only pausing accept) makes new connections
	 * fail at once instead of waiting in the kernel's backlog. */
	evconnlistener_free(s->lis);
	s->lis = NULL;
	xp_conn *c = s->conns;
	while (c) {
		xp_conn *next = c->next;
		conn_drain(c);
		c = next;
	}
}

size_t xp_server_active_streams(const xp_server *s)
{
	return atomic_load(&s->active);
}

int xp_server_port(const xp_server *s)
{
	return s->port;
}

void xp_server_free(xp_server *s)
{
	if (!s)
		return;
	if (s->lis)
		evconnlistener_free(s->lis);
	while (s->conns)
		conn_free(s->conns);
	while (s->free_streams) {
		xp_stream *st = s->free_streams;
		s->free_streams = st->next;
		stream_destroy(st);
	}
	mem_release(s);
	free(s);
}
