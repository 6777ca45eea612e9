/* The fallback proxy: one thread, one libevent loop, one state machine per
 * client connection:
 *
 *   HEAD -> BODY -> (decide) -> CONNECT -> RESP_HEAD -> RESP_BODY -> HEAD ...
 *
 * A request is read whole (the scheduler needs the body), decided with
 * sched_decide on the snapshot current at that moment, and sent to the
 * picked pod on a fresh connection (Connection: close upstream; the next
 * request may pick another pod). When the pod cannot be reached the next
 * target of the pick is tried. The answer streams back as it arrives, with
 * backpressure both ways; a body of unknown length is re-chunked so the
 * client connection stays reusable. Nothing on this path blocks.
 *
 * Drain (SIGTERM): the listeners close (the kernel drops them from the
 * SOCKMAP, so no new connection arrives), idle connections close, and each
 * request in flight finishes and closes its connection; whatever is left at
 * the deadline is cut.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "admin/admin.h"
#include "proxy/proxy_int.h"
#include "sched/body.h"
#include "sched/sched.h"
#include "util/arena.h"
#include "util/log.h"
#include "util/rand.h"

#define OUT_HIGH (1u << 20)  /* client output that pauses reading the pod */
#define OUT_LOW (256u << 10) /* ... and resumes it */
#define N_STATUS 1000        /* the parsers accept three-digit statuses */

enum { ST_HEAD, ST_BODY, ST_CONNECT, ST_RESP_HEAD, ST_RESP_BODY, ST_CLOSING };
/* How the pod frames its body, and how the client gets it. */
enum { R_NONE, R_LENGTH, R_CHUNKED, R_EOF };
enum { OUT_NONE, OUT_LENGTH, OUT_CHUNKED, OUT_RAW, OUT_BUFFER };

typedef struct pconn pconn;

struct proxy {
	proxy_opts o;
	proxy_svcs svcs; /* the fast-path services in force */
	struct event_base *base;
	struct evconnlistener *lst[2]; /* IPv4, IPv6 */
	int fd[2];
	uint16_t port[2];
	int wake_fd;
	struct event *wake_ev;
	pthread_t thread;
	bool started;
	pconn *conns;
	uint32_t n_conns;
	/* Set by the control thread, then the wake-up: stop the loop, or drain
	 * within drain_ms. */
	atomic_bool stop, drain_req;
	atomic_llong drain_ms;
	/* Proxy thread only: draining, and the deadline that cuts the rest. */
	bool draining;
	struct event *drain_ev;
	/* Read by the control thread: the listeners are closed and no client
	 * connection is left. */
	atomic_bool drained;
	/* Answers by HTTP status (the pod's or the proxy's own), for /metrics. */
	atomic_ullong status[N_STATUS];
};

struct pconn {
	proxy *p;
	pconn *prev, *next;
	struct bufferevent *down, *up;
	int state;
	/* The VIP:port the client reached (16-byte form, host order), and
	 * whether an earlier request on this connection found its service. */
	uint8_t vip[16];
	uint16_t vip_port;
	bool has_vip, had_svc;
	char peer[INET6_ADDRSTRLEN];
	arena mem;     /* per request */
	arena scratch; /* per response piece */
	/* Request. */
	proxy_head req;
	bool req_close, head_method;
	struct evbuffer *body; /* decoded request body */
	proxy_chunked ch;
	uint64_t body_left;
	/* Decision. */
	const store_snapshot *snap;
	sched_result res;
	bool scheduled; /* sched_decide ran: sched_request_done is owed */
	const char *fwd_body; /* what goes to the pod */
	size_t fwd_len;
	size_t target; /* index in res.picked being tried */
	bool up_connected;
	/* Response. */
	proxy_head resp;
	int rmode, out;
	uint64_t resp_left;
	proxy_chunked rch;
	bool rewrite;
	struct evbuffer *rbuf; /* OUT_BUFFER: the whole body, rewritten at the end */
};

static const char *reason(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 413: return "Content Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Error";
	}
}

static struct timeval tv_ms(int64_t ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	return tv;
}

static void conn_free(pconn *c)
{
	proxy *p = c->p;
	if (c->up)
		bufferevent_free(c->up);
	if (c->scheduled)
		sched_request_done(c->snap->sched, &c->res);
	if (c->snap)
		store_release(c->snap);
	if (c->down)
		bufferevent_free(c->down);
	if (c->body)
		evbuffer_free(c->body);
	if (c->rbuf)
		evbuffer_free(c->rbuf);
	arena_free(&c->mem);
	arena_free(&c->scratch);
	if (c->prev)
		c->prev->next = c->next;
	else
		p->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	p->n_conns--;
	free(c);
	if (p->draining && p->n_conns == 0)
		atomic_store(&p->drained, true);
}

static void count_status(proxy *p, int status)
{
	if (status >= 0 && status < N_STATUS)
		atomic_fetch_add_explicit(&p->status[status], 1, memory_order_relaxed);
}

static int process_input(pconn *c);

/* Ends the current request; the connection waits for the next one or
 * closes. Returns -1 when |c| was freed. */
static int finish_request(pconn *c, bool close_after)
{
	proxy *p = c->p;
	if (c->up) {
		bufferevent_free(c->up);
		c->up = NULL;
	}
	if (c->scheduled)
		sched_request_done(c->snap->sched, &c->res);
	c->scheduled = false;
	if (c->snap)
		store_release(c->snap);
	c->snap = NULL;
	memset(&c->res, 0, sizeof(c->res));
	evbuffer_drain(c->body, evbuffer_get_length(c->body));
	if (c->rbuf)
		evbuffer_drain(c->rbuf, evbuffer_get_length(c->rbuf));
	c->up_connected = false;
	c->rewrite = false;
	arena_reset(&c->mem);
	if (close_after || c->req_close || p->draining) {
		c->state = ST_CLOSING;
		bufferevent_disable(c->down, EV_READ);
		if (evbuffer_get_length(bufferevent_get_output(c->down)) == 0) {
			conn_free(c);
			return -1;
		}
		return 0;
	}
	c->state = ST_HEAD;
	struct timeval idle = tv_ms(p->o.idle_timeout_ms);
	bufferevent_set_timeouts(c->down, &idle, &idle);
	bufferevent_enable(c->down, EV_READ);
	return 0;
}

/* After a pod callback ended a request: requests the client pipelined
 * meanwhile are read now (within process_input its own loop does it). */
static void resume(pconn *c, int r)
{
	if (r == 0 && c->state == ST_HEAD)
		process_input(c);
}

/* Answers the current request with |status| and |text| (spec §2.8 texts for
 * scheduling errors). Returns -1 when |c| was freed. */
static int send_error(pconn *c, int status, const char *text, bool close_after)
{
	struct evbuffer *out = bufferevent_get_output(c->down);
	bool close = close_after || c->req_close || c->p->draining;
	count_status(c->p, status);
	evbuffer_add_printf(out,
			    "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
			    "Content-Length: %zu\r\nVia: 1.1 kepp\r\n%s\r\n%s",
			    status, reason(status), strlen(text),
			    close ? "Connection: close\r\n" : "", text);
	if (log_enabled(LOG_VERBOSE)) {
		char st[8];
		snprintf(st, sizeof(st), "%d", status);
		ulog(LOG_VERBOSE, "fallback proxy error", "client", c->peer, "status", st, "error",
		     text, NULL);
	}
	return finish_request(c, close);
}

/* The model of the service the client reached, from the set in force now
 * (a copy in the request's arena), or NULL when it is no fast-path service.
 * A service gone since an earlier request on this connection closes the
 * connection after this answer: the VIP no longer leads here. */
static const char *service_model(pconn *c)
{
	if (!c->has_vip)
		return NULL;
	const proxy_svc_table *t = proxy_svcs_acquire(&c->p->svcs);
	const proxy_service *s = proxy_svcs_find(t, c->vip, c->vip_port);
	char *model = NULL;
	if (s) {
		size_t ml = strnlen(s->model, sizeof(s->model) - 1);
		model = arena_alloc(&c->mem, ml + 1);
		if (model) {
			memcpy(model, s->model, ml);
			model[ml] = '\0';
		}
		c->had_svc = true;
	} else if (c->had_svc) {
		c->req_close = true;
	}
	proxy_svcs_release(t);
	return model;
}

/* A body that names no model gets the service's (|model|, NULL: none), so a
 * client of a VIP:PORT=MODEL service may leave it out. Anything that is not
 * a JSON object is left for the parser to refuse with its own error. */
static void with_model(pconn *c, const char *model, const char *body, size_t len,
		       const char **out, size_t *olen)
{
	*out = body;
	*olen = len;
	if (!model)
		return;
	char err[8];
	if (bj_check(body, len, err, sizeof(err)) < 0)
		return;
	bj_val v = bj_value(body, len);
	if (v.t != BJ_OBJECT)
		return;
	bj_iter it;
	bj_val k, val;
	bool empty = true;
	bj_iter_init(&it, &v);
	while (bj_obj_next(&it, &k, &val)) {
		if (bj_str_eq(&k, "model"))
			return;
		empty = false;
	}
	size_t ml = strlen(model), pre = (size_t)(v.p - body) + 1;
	char *b = arena_alloc(&c->mem, len + 6 * ml + 16);
	if (!b)
		return;
	memcpy(b, body, pre);
	size_t o = pre;
	memcpy(b + o, "\"model\":", 8);
	o += 8;
	o += bj_quote(model, ml, b + o);
	if (!empty)
		b[o++] = ',';
	memcpy(b + o, body + pre, len - pre);
	*out = b;
	*olen = o + len - pre;
}

static bool header_cb(void *ctx, const char *name, sched_str *value)
{
	const proxy_hdr *h = proxy_head_find(ctx, name);
	if (!h)
		return false;
	value->p = h->val;
	value->len = h->vlen;
	return true;
}

static sched_str hval(const proxy_head *h, const char *name)
{
	const proxy_hdr *e = proxy_head_find(h, name);
	return e ? (sched_str){e->val, e->vlen} : (sched_str){NULL, 0};
}

static void up_read(struct bufferevent *bev, void *arg);
static void up_event(struct bufferevent *bev, short what, void *arg);

/* The request as the pod gets it: hop-by-hop headers dropped, the body's
 * length, where kepp sent it, and a request id (spec §2.7 step 1). */
static void write_request(pconn *c, struct evbuffer *out)
{
	const proxy_head *h = &c->req;
	evbuffer_add_printf(out, "%.*s %.*s HTTP/1.1\r\n", (int)h->mlen, h->method, (int)h->tlen,
			    h->target);
	for (size_t i = 0; i < h->n; i++) {
		const proxy_hdr *e = &h->h[i];
		if (proxy_hop_by_hop(h, e->name, e->nlen) ||
		    (e->nlen == 14 && !strncasecmp(e->name, "content-length", 14)) ||
		    (e->nlen == 6 && !strncasecmp(e->name, "expect", 6)) ||
		    (e->nlen == 30 && !strncasecmp(e->name, "x-gateway-destination-endpoint", 30)))
			continue;
		evbuffer_add_printf(out, "%.*s: %.*s\r\n", (int)e->nlen, e->name, (int)e->vlen,
				    e->val);
	}
	if (!proxy_head_find(h, "x-request-id")) {
		char id[37];
		rand_uuid4(id);
		evbuffer_add_printf(out, "x-request-id: %s\r\n", id);
	}
	if (c->fwd_len > 0 || h->has_length || h->chunked)
		evbuffer_add_printf(out, "Content-Length: %zu\r\n", c->fwd_len);
	evbuffer_add_printf(out,
			    "x-gateway-destination-endpoint: %s\r\nX-Forwarded-For: %s\r\n"
			    "Via: 1.1 kepp\r\nConnection: close\r\n\r\n",
			    c->res.targets, c->peer);
	evbuffer_add(out, c->fwd_body, c->fwd_len);
}

static int ep_sockaddr(const store_endpoint *ep, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, ep->ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(ep->port);
		*len = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, ep->ip, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(ep->port);
		*len = sizeof(*s6);
		return 0;
	}
	return -EINVAL;
}

/* Connects to the next target of the pick that accepts a connect(). Returns
 * -1 when |c| was freed. */
static int connect_up(pconn *c)
{
	proxy *p = c->p;
	while (c->target < c->res.n_picked) {
		const store_endpoint *ep = c->res.picked[c->target];
		struct sockaddr_storage ss;
		socklen_t sl;
		if (ep_sockaddr(ep, &ss, &sl) < 0) {
			c->target++;
			continue;
		}
		c->up = bufferevent_socket_new(p->base, -1, BEV_OPT_CLOSE_ON_FREE);
		if (!c->up)
			break;
		struct timeval rt = tv_ms(p->o.upstream_timeout_ms);
		struct timeval ct = tv_ms(p->o.connect_timeout_ms);
		bufferevent_set_timeouts(c->up, &rt, &ct);
		bufferevent_setwatermark(c->up, EV_READ, 0, OUT_HIGH);
		write_request(c, bufferevent_get_output(c->up));
		c->state = ST_CONNECT;
		/* Callbacks only once connect() returned: on an immediate
		 * failure libevent reports the error synchronously. */
		if (bufferevent_socket_connect(c->up, (struct sockaddr *)&ss, (int)sl) == 0) {
			bufferevent_setcb(c->up, up_read, NULL, up_event, c);
			return 0;
		}
		bufferevent_free(c->up);
		c->up = NULL;
		c->target++;
	}
	char msg[256];
	snprintf(msg, sizeof(msg), "upstream connect error: no picked endpoint reachable (%s)",
		 c->res.targets ? c->res.targets : "");
	return send_error(c, 502, msg, false);
}

/* Runs the picker on the complete request. Returns -1 when |c| was freed. */
static int decide(pconn *c)
{
	proxy *p = c->p;
	size_t blen = evbuffer_get_length(c->body);
	const char *body = blen ? (const char *)evbuffer_pullup(c->body, -1) : "";
	if (!body)
		return send_error(c, 500, "inference error: Internal - out of memory", true);
	const char *model = service_model(c);
	c->snap = store_acquire(p->o.store);
	if (!c->snap || !c->snap->sched)
		return send_error(c, 503, "inference error: ServiceUnavailable - the picker is not ready",
				  false);
	if (blen == 0) {
		/* No body: a random endpoint, as for a header-only request (spec
		 * §2.7 step 1). */
		sched_pick_any(c->snap, &c->mem, &c->res);
		c->fwd_body = "";
		c->fwd_len = 0;
	} else {
		sched_request rq;
		memset(&rq, 0, sizeof(rq));
		rq.path = (sched_str){c->req.target, c->req.tlen};
		rq.objective = hval(&c->req, "x-gateway-inference-objective");
		rq.model_rewrite = hval(&c->req, "x-gateway-model-name-rewrite");
		rq.fairness_id = hval(&c->req, "x-gateway-inference-fairness-id");
		if (!rq.fairness_id.p)
			rq.fairness_id = (sched_str){"default-flow", 12};
		rq.request_id = hval(&c->req, "x-request-id");
		with_model(c, model, body, blen, &rq.body, &rq.body_len);
		rq.header = header_cb;
		rq.header_ctx = &c->req;
		sched_decide(c->snap->sched, c->snap, &rq, &c->mem, &c->res);
		c->scheduled = true;
		c->fwd_body = c->res.body;
		c->fwd_len = c->res.body_len;
	}
	if (c->res.err != SCHED_OK)
		return send_error(c, sched_err_http(c->res.err), c->res.error, false);
	if (c->res.n_picked == 0)
		return send_error(c, 503, "inference error: ServiceUnavailable - no endpoint picked",
				  false);
	if (log_enabled(LOG_DEBUG))
		ulog(LOG_DEBUG, "fallback proxy picked", "client", c->peer, "targets",
		     c->res.targets, NULL);
	/* The client may wait as long as the pod takes; the pod's silence is
	 * bounded instead. */
	struct timeval wt = tv_ms(p->o.upstream_timeout_ms);
	bufferevent_set_timeouts(c->down, NULL, &wt);
	c->target = 0;
	return connect_up(c);
}

/* Reads the request head and body from the client's input. Returns -1 when
 * |c| was freed. */
static int process_input(pconn *c)
{
	proxy *p = c->p;
	struct evbuffer *in = bufferevent_get_input(c->down);
	for (;;) {
		if (c->state == ST_HEAD) {
			/* RFC 9112 §2.2: blank lines before a request are ignored. */
			char crlf[2];
			while (evbuffer_copyout(in, crlf, 2) == 2 && crlf[0] == '\r' && crlf[1] == '\n')
				evbuffer_drain(in, 2);
			size_t len = evbuffer_get_length(in);
			if (len == 0)
				return 0;
			struct evbuffer_ptr e = evbuffer_search(in, "\r\n\r\n", 4, NULL);
			if (e.pos < 0 || (size_t)e.pos + 4 > p->o.max_header_bytes) {
				if (e.pos >= 0 || len > p->o.max_header_bytes)
					return send_error(c, 431, "request header section too large", true);
				return 0;
			}
			size_t hl = (size_t)e.pos + 4;
			char *head = arena_alloc(&c->mem, hl);
			if (!head)
				return send_error(c, 500, "inference error: Internal - out of memory",
						  true);
			evbuffer_remove(in, head, hl);
			const char *why = "";
			int r = proxy_parse_request(head, hl, &c->req, &why);
			if (r < 0)
				return send_error(c, r == -E2BIG ? 431 : r == -ENOTSUP ? 501 : 400, why,
						  true);
			c->req_close = c->req.close || p->draining;
			c->head_method = c->req.mlen == 4 && !memcmp(c->req.method, "HEAD", 4);
			memset(&c->ch, 0, sizeof(c->ch));
			c->body_left = c->req.has_length ? c->req.length : 0;
			if (c->body_left > p->o.max_body_bytes)
				return send_error(c, 413, "request body too large", true);
			if (c->req.expect_continue && c->req.minor == 1 &&
			    (c->req.chunked || c->body_left))
				evbuffer_add_printf(bufferevent_get_output(c->down),
						    "HTTP/1.1 100 Continue\r\n\r\n");
			c->state = ST_BODY;
		}
		if (c->state != ST_BODY)
			return 0;
		if (c->req.chunked) {
			bool done = false;
			while (!done && evbuffer_get_length(in) > 0) {
				struct evbuffer_iovec v;
				if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
					break;
				const char *d;
				size_t dl;
				ssize_t n = proxy_chunked_feed(&c->ch, v.iov_base, v.iov_len, &d, &dl,
							       &done);
				if (n < 0)
					return send_error(c, 400, "malformed chunked request body", true);
				if (dl && evbuffer_get_length(c->body) + dl > p->o.max_body_bytes)
					return send_error(c, 413, "request body too large", true);
				if (dl)
					evbuffer_add(c->body, d, dl);
				evbuffer_drain(in, (size_t)n);
			}
			if (!done)
				return 0;
		} else if (c->body_left) {
			size_t n = evbuffer_get_length(in);
			if ((uint64_t)n > c->body_left)
				n = (size_t)c->body_left;
			evbuffer_remove_buffer(in, c->body, n);
			c->body_left -= n;
			if (c->body_left)
				return 0;
		}
		if (decide(c) < 0)
			return -1;
		if (c->state != ST_HEAD)
			return 0;
	}
}

static void down_read(struct bufferevent *bev, void *arg)
{
	pconn *c = arg;
	if (c->state == ST_HEAD || c->state == ST_BODY)
		process_input(c);
}

static void down_write(struct bufferevent *bev, void *arg)
{
	pconn *c = arg;
	size_t left = evbuffer_get_length(bufferevent_get_output(bev));
	if (c->state == ST_CLOSING && left == 0)
		conn_free(c);
	else if (c->up && c->up_connected && left <= OUT_LOW)
		bufferevent_enable(c->up, EV_READ);
}

static void down_event(struct bufferevent *bev, short what, void *arg)
{
	/* EOF, error or timeout: the client is gone or too slow; whatever is
	 * in flight for it is dropped. */
	conn_free(arg);
}

/* Sends a piece of the pod's body to the client in the chosen framing. */
static void emit(pconn *c, const char *p, size_t n)
{
	struct evbuffer *out = bufferevent_get_output(c->down);
	if (n == 0)
		return;
	if (c->out == OUT_BUFFER) {
		evbuffer_add(c->rbuf, p, n);
		return;
	}
	if (c->rewrite) {
		/* Per piece, as the EPP rewrites per streamed chunk (spec §2.9). */
		sched_str s = sched_rewrite_back(p, n, c->res.target_model, c->res.incoming_model,
						 &c->scratch);
		p = s.p;
		n = s.len;
	}
	if (c->out == OUT_CHUNKED) {
		evbuffer_add_printf(out, "%zx\r\n", n);
		evbuffer_add(out, p, n);
		evbuffer_add(out, "\r\n", 2);
	} else {
		evbuffer_add(out, p, n);
	}
	arena_reset(&c->scratch);
	if (evbuffer_get_length(out) > OUT_HIGH)
		bufferevent_disable(c->up, EV_READ);
}

/* The response head to the client: the pod's, minus hop-by-hop fields, with
 * the client side's framing. */
static void write_response_head(pconn *c, size_t buffered_len)
{
	struct evbuffer *out = bufferevent_get_output(c->down);
	const proxy_head *h = &c->resp;
	count_status(c->p, h->status);
	evbuffer_add_printf(out, "HTTP/1.1 %d %.*s\r\n", h->status, (int)h->rlen, h->reason);
	for (size_t i = 0; i < h->n; i++) {
		const proxy_hdr *e = &h->h[i];
		if (proxy_hop_by_hop(h, e->name, e->nlen))
			continue;
		/* A HEAD answer keeps the pod's length; otherwise it is ours. */
		if (!c->head_method && e->nlen == 14 && !strncasecmp(e->name, "content-length", 14))
			continue;
		evbuffer_add_printf(out, "%.*s: %.*s\r\n", (int)e->nlen, e->name, (int)e->vlen,
				    e->val);
	}
	if (c->out == OUT_LENGTH)
		evbuffer_add_printf(out, "Content-Length: %llu\r\n",
				    (unsigned long long)c->resp.length);
	else if (c->out == OUT_BUFFER)
		evbuffer_add_printf(out, "Content-Length: %zu\r\n", buffered_len);
	else if (c->out == OUT_CHUNKED)
		evbuffer_add_printf(out, "Transfer-Encoding: chunked\r\n");
	evbuffer_add_printf(out, "Via: 1.1 kepp\r\n%s\r\n",
			    c->req_close || c->out == OUT_RAW ? "Connection: close\r\n" : "");
}

/* The pod's answer is complete. Returns -1 when |c| was freed. */
static int end_response(pconn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->down);
	if (c->out == OUT_CHUNKED) {
		evbuffer_add(out, "0\r\n\r\n", 5);
	} else if (c->out == OUT_BUFFER) {
		size_t n = evbuffer_get_length(c->rbuf);
		const char *b = n ? (const char *)evbuffer_pullup(c->rbuf, -1) : "";
		sched_str s = {b, n};
		if (b)
			s = sched_rewrite_back(b, n, c->res.target_model, c->res.incoming_model,
					       &c->scratch);
		if (!s.p)
			s = (sched_str){b ? b : "", b ? n : 0};
		write_response_head(c, s.len);
		evbuffer_add(out, s.p, s.len);
		arena_reset(&c->scratch);
	}
	return finish_request(c, c->out == OUT_RAW);
}

/* Decides how the body is framed both ways once the head is parsed. */
static void plan_response(pconn *c)
{
	const proxy_head *h = &c->resp;
	bool nobody = c->head_method || h->status == 204 || h->status == 304;
	c->rmode = nobody ? R_NONE : h->chunked ? R_CHUNKED : h->has_length ? R_LENGTH : R_EOF;
	c->resp_left = h->length;
	memset(&c->rch, 0, sizeof(c->rch));
	const sched_result *r = &c->res;
	c->rewrite = !nobody && c->scheduled && r->target_model.len && r->incoming_model.len &&
		     (r->target_model.len != r->incoming_model.len ||
		      memcmp(r->target_model.p, r->incoming_model.p, r->target_model.len));
	switch (c->rmode) {
	case R_NONE:
		c->out = OUT_NONE;
		break;
	case R_LENGTH:
		/* A rewrite changes the length: buffer what fits the body limit. */
		c->out = c->rewrite && h->length <= c->p->o.max_body_bytes ? OUT_BUFFER : OUT_LENGTH;
		if (c->out == OUT_LENGTH)
			c->rewrite = false;
		break;
	default:
		c->out = c->req.minor == 1 ? OUT_CHUNKED : OUT_RAW;
		break;
	}
	if (c->out == OUT_BUFFER && !c->rbuf)
		c->rbuf = evbuffer_new();
	if (c->out == OUT_BUFFER && !c->rbuf) {
		c->out = OUT_LENGTH;
		c->rewrite = false;
	}
}

/* Drops the client after a pod failure mid-answer: a truncated body must
 * not look complete. */
static void abort_client(pconn *c, const char *why)
{
	ulog(LOG_VERBOSE, "fallback proxy: the pod's answer was cut", "client", c->peer, "pod",
	     c->res.targets ? c->res.targets : "", "error", why, NULL);
	conn_free(c);
}

static void up_read(struct bufferevent *bev, void *arg)
{
	pconn *c = arg;
	proxy *p = c->p;
	struct evbuffer *in = bufferevent_get_input(bev);
	while (c->state == ST_RESP_HEAD) {
		size_t len = evbuffer_get_length(in);
		struct evbuffer_ptr e = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		if (e.pos < 0 || (size_t)e.pos + 4 > p->o.max_header_bytes) {
			if (e.pos >= 0 || len > p->o.max_header_bytes)
				resume(c, send_error(c, 502, "the pod's response head is too large",
						     false));
			return;
		}
		size_t hl = (size_t)e.pos + 4;
		char *head = arena_alloc(&c->mem, hl);
		if (!head) {
			send_error(c, 502, "out of memory", true);
			return;
		}
		evbuffer_remove(in, head, hl);
		const char *why = "";
		if (proxy_parse_response(head, hl, &c->resp, &why) < 0) {
			char msg[160];
			snprintf(msg, sizeof(msg), "malformed response from the pod: %s", why);
			resume(c, send_error(c, 502, msg, false));
			return;
		}
		if (c->resp.status < 200) {
			if (c->resp.status == 101) {
				send_error(c, 502, "the pod switched protocols", true);
				return;
			}
			continue; /* interim: 100 Continue, 103 Early Hints */
		}
		plan_response(c);
		if (c->out != OUT_BUFFER)
			write_response_head(c, 0);
		c->state = ST_RESP_BODY;
		if (c->rmode == R_NONE || (c->rmode == R_LENGTH && c->resp_left == 0)) {
			resume(c, end_response(c));
			return;
		}
	}
	if (c->state != ST_RESP_BODY)
		return;
	if (c->rmode == R_LENGTH) {
		size_t n = evbuffer_get_length(in);
		if ((uint64_t)n > c->resp_left)
			n = (size_t)c->resp_left;
		if (c->out == OUT_BUFFER) {
			evbuffer_remove_buffer(in, c->rbuf, n);
		} else {
			struct evbuffer *out = bufferevent_get_output(c->down);
			evbuffer_remove_buffer(in, out, n);
			if (evbuffer_get_length(out) > OUT_HIGH)
				bufferevent_disable(c->up, EV_READ);
		}
		c->resp_left -= n;
		if (c->resp_left == 0)
			resume(c, end_response(c));
		return;
	}
	bool done = false;
	while (!done && evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		const char *d = v.iov_base;
		size_t dl = v.iov_len;
		ssize_t n = (ssize_t)dl;
		if (c->rmode == R_CHUNKED) {
			n = proxy_chunked_feed(&c->rch, v.iov_base, v.iov_len, &d, &dl, &done);
			if (n < 0) {
				abort_client(c, "malformed chunked body");
				return;
			}
		}
		emit(c, d, dl);
		evbuffer_drain(in, (size_t)n);
	}
	if (done)
		resume(c, end_response(c));
}

static void up_event(struct bufferevent *bev, short what, void *arg)
{
	pconn *c = arg;
	if (what & BEV_EVENT_CONNECTED) {
		c->up_connected = true;
		c->state = ST_RESP_HEAD;
		/* From now on the write timeout bounds a stalled request upload. */
		struct timeval t = tv_ms(c->p->o.upstream_timeout_ms);
		bufferevent_set_timeouts(bev, &t, &t);
		bufferevent_enable(bev, EV_READ);
		return;
	}
	if (!c->up_connected) {
		/* Could not reach this pod: the pick's next target, if any. */
		if (log_enabled(LOG_VERBOSE))
			ulog(LOG_VERBOSE, "fallback proxy: cannot reach a pod", "pod",
			     c->res.picked[c->target]->addr, "error",
			     what & BEV_EVENT_TIMEOUT ? "connect timeout"
						       : evutil_socket_error_to_string(
								 EVUTIL_SOCKET_ERROR()),
			     NULL);
		bufferevent_free(c->up);
		c->up = NULL;
		c->target++;
		resume(c, connect_up(c));
		return;
	}
	/* Whatever the pod sent before closing was read first (up_read). */
	if (c->state == ST_RESP_BODY && c->rmode == R_EOF && (what & BEV_EVENT_EOF)) {
		resume(c, end_response(c));
		return;
	}
	if (c->state == ST_RESP_HEAD) {
		resume(c, send_error(c, what & BEV_EVENT_TIMEOUT ? 504 : 502,
				     what & BEV_EVENT_TIMEOUT
					     ? "the pod did not answer in time"
					     : "the pod closed the connection before answering",
				     false));
		return;
	}
	abort_client(c, what & BEV_EVENT_TIMEOUT ? "timeout" : "connection closed or reset");
}

/* The VIP:port the client reached: sk_lookup keeps the address it
 * connected to as the socket's local one. */
static void local_vip(pconn *c, int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
		c->vip[10] = c->vip[11] = 0xff;
		memcpy(c->vip + 12, &s4->sin_addr, 4);
		c->vip_port = ntohs(s4->sin_port);
		c->has_vip = true;
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
		memcpy(c->vip, &s6->sin6_addr, 16);
		c->vip_port = ntohs(s6->sin6_port);
		c->has_vip = true;
	}
}

static void peer_string(const struct sockaddr *sa, char *out, size_t cap)
{
	static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	out[0] = '\0';
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, cap);
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (!memcmp(a, pfx, 12))
			inet_ntop(AF_INET, (const uint8_t *)a + 12, out, cap);
		else
			inet_ntop(AF_INET6, a, out, cap);
	}
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int slen,
		      void *arg)
{
	proxy *p = arg;
	pconn *c = p->n_conns < p->o.max_connections ? calloc(1, sizeof(*c)) : NULL;
	if (!c) {
		evutil_closesocket(fd);
		return;
	}
	c->p = p;
	c->next = p->conns;
	if (p->conns)
		p->conns->prev = c;
	p->conns = c;
	p->n_conns++;
	arena_init(&c->mem, 16384);
	arena_init(&c->scratch, 4096);
	peer_string(sa, c->peer, sizeof(c->peer));
	local_vip(c, fd);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->body = evbuffer_new();
	c->down = bufferevent_socket_new(p->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->body || !c->down) {
		if (!c->down)
			evutil_closesocket(fd);
		conn_free(c);
		return;
	}
	bufferevent_setcb(c->down, down_read, down_write, down_event, c);
	/* Bounded input: a head, or a slice of body that is moved on at once. */
	bufferevent_setwatermark(c->down, EV_READ, 0, p->o.max_header_bytes + 16384);
	bufferevent_setwatermark(c->down, EV_WRITE, OUT_LOW, 0);
	struct timeval idle = tv_ms(p->o.idle_timeout_ms);
	bufferevent_set_timeouts(c->down, &idle, &idle);
	bufferevent_enable(c->down, EV_READ | EV_WRITE);
}

/* The drain deadline: requests still in flight are cut. */
static void drain_deadline(evutil_socket_t fd, short what, void *arg)
{
	proxy *p = arg;
	if (p->n_conns) {
		char n[16];
		snprintf(n, sizeof(n), "%u", p->n_conns);
		ulog(LOG_WARN, "fallback proxy: drain timeout, closing the connections left",
		     "connections", n, NULL);
	}
	while (p->conns)
		conn_free(p->conns);
	atomic_store(&p->drained, true);
}

static void start_drain(proxy *p)
{
	p->draining = true;
	for (int i = 0; i < 2; i++) {
		if (p->lst[i])
			evconnlistener_free(p->lst[i]);
		else if (p->fd[i] >= 0)
			close(p->fd[i]);
		p->lst[i] = NULL;
		p->fd[i] = -1;
	}
	/* Waiting for a request that has not begun: nothing is in flight, but
	 * the end of the previous answer may still be queued for the client:
	 * such a connection closes once it is written (down_write), as
	 * finish_request closes one. The others say "Connection: close" if
	 * their answer has not started. */
	for (pconn *c = p->conns, *next; c; c = next) {
		next = c->next;
		c->req_close = true;
		if (c->state != ST_HEAD || evbuffer_get_length(bufferevent_get_input(c->down)) > 0)
			continue;
		c->state = ST_CLOSING;
		bufferevent_disable(c->down, EV_READ);
		if (evbuffer_get_length(bufferevent_get_output(c->down)) == 0)
			conn_free(c);
	}
	if (p->n_conns == 0) {
		atomic_store(&p->drained, true);
		return;
	}
	struct timeval tv = tv_ms(atomic_load(&p->drain_ms));
	p->drain_ev = evtimer_new(p->base, drain_deadline, p);
	if (!p->drain_ev || evtimer_add(p->drain_ev, &tv) < 0)
		drain_deadline(-1, 0, p);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	proxy *p = arg;
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		ulog(LOG_WARN, "fallback proxy: wake-up read failed", "error", strerror(errno), NULL);
	if (atomic_load(&p->stop))
		event_base_loopbreak(p->base);
	else if (atomic_load(&p->drain_req) && !p->draining)
		start_drain(p);
}

static void wake(proxy *p)
{
	uint64_t one = 1;
	if (write(p->wake_fd, &one, sizeof(one)) < 0)
		ulog(LOG_WARN, "fallback proxy: cannot wake the thread", "error", strerror(errno),
		     NULL);
}

static void *proxy_main(void *arg)
{
	proxy *p = arg;
	event_base_dispatch(p->base);
	return NULL;
}

/* "ip:port" or "[ip6]:port" (port 0: any) into |ss|. */
static int parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *sl)
{
	char host[64];
	const char *colon = strrchr(spec, ':');
	if (!colon || (size_t)(colon - spec) >= sizeof(host))
		return -EINVAL;
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = '\0';
	char *end;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	if (!colon[1] || *end || errno || port < 0 || port > 65535)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		host[hl - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
			return -EINVAL;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*sl = sizeof(*s6);
		return 0;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
		return -EINVAL;
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)port);
	*sl = sizeof(*s4);
	return 0;
}

/* A listening socket on |spec|. */
static int listen_on(const char *spec, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	if (parse_listen(spec, &ss, &sl) < 0) {
		snprintf(err, errlen, "bad listen address %s", spec);
		return -EINVAL;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "socket for %s: %s", spec, strerror(e));
		return -e;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
		int e = errno;
		snprintf(err, errlen, "listen on %s: %s", spec, strerror(e));
		close(fd);
		return -e;
	}
	return fd;
}

proxy *proxy_new(const proxy_opts *o, char *err, size_t errlen)
{
	proxy *p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->fd[0] = p->fd[1] = -1;
	p->wake_fd = -1;
	p->o = *o;
	if (!p->o.max_body_bytes)
		p->o.max_body_bytes = 64u << 20;
	if (!p->o.max_header_bytes)
		p->o.max_header_bytes = 64u << 10;
	if (!p->o.max_connections)
		p->o.max_connections = 4096;
	if (p->o.idle_timeout_ms <= 0)
		p->o.idle_timeout_ms = 60000;
	if (p->o.connect_timeout_ms <= 0)
		p->o.connect_timeout_ms = 5000;
	if (p->o.upstream_timeout_ms <= 0)
		p->o.upstream_timeout_ms = 600000;
	if (proxy_svcs_init(&p->svcs, o->services, o->n_services) < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	p->o.services = NULL; /* the caller's; the table has the copy */
	p->o.n_services = 0;
	p->fd[0] = listen_on("127.0.0.1:0", err, errlen);
	if (p->fd[0] < 0)
		goto fail;
	char err6[128];
	p->fd[1] = listen_on("[::1]:0", err6, sizeof(err6));
	if (p->fd[1] < 0)
		ulog(LOG_DEFAULT, "fallback proxy: no IPv6 listener; IPv6 VIPs have no fallback",
		     "error", err6, NULL);
	for (int i = 0; i < 2; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (p->fd[i] >= 0 && getsockname(p->fd[i], (struct sockaddr *)&ss, &sl) == 0)
			p->port[i] = ntohs(i == 0 ? ((struct sockaddr_in *)&ss)->sin_port
						  : ((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	p->base = event_base_new();
	p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!p->base || p->wake_fd < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	p->wake_ev = event_new(p->base, p->wake_fd, EV_READ | EV_PERSIST, on_wake, p);
	if (!p->wake_ev || event_add(p->wake_ev, NULL) < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (int i = 0; i < 2; i++) {
		if (p->fd[i] < 0)
			continue;
		/* backlog 0: the socket already listens. */
		p->lst[i] = evconnlistener_new(p->base, on_accept, p, LEV_OPT_CLOSE_ON_FREE, 0,
					       p->fd[i]);
		if (!p->lst[i]) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	int r = pthread_create(&p->thread, NULL, proxy_main, p);
	if (r) {
		snprintf(err, errlen, "cannot start the proxy thread: %s", strerror(r));
		goto fail;
	}
	p->started = true;
	char port[8], port6[8];
	snprintf(port, sizeof(port), "%u", p->port[0]);
	snprintf(port6, sizeof(port6), "%u", p->port[1]);
	ulog(LOG_VERBOSE, "fallback proxy listening", "port", port, "port6", port6, NULL);
	return p;
fail:
	proxy_free(p);
	return NULL;
}

int proxy_set_services(proxy *p, const proxy_service *services, size_t n)
{
	return proxy_svcs_set(&p->svcs, services, n);
}

int proxy_fd(const proxy *p, int family)
{
	return family == AF_INET ? p->fd[0] : family == AF_INET6 ? p->fd[1] : -1;
}

uint16_t proxy_port(const proxy *p, int family)
{
	return family == AF_INET ? p->port[0] : family == AF_INET6 ? p->port[1] : 0;
}

void proxy_free(proxy *p)
{
	if (!p)
		return;
	if (p->started) {
		atomic_store(&p->stop, true);
		wake(p);
		pthread_join(p->thread, NULL);
	}
	while (p->conns)
		conn_free(p->conns);
	for (int i = 0; i < 2; i++) {
		if (p->lst[i])
			evconnlistener_free(p->lst[i]);
		else if (p->fd[i] >= 0)
			close(p->fd[i]);
	}
	if (p->wake_ev)
		event_free(p->wake_ev);
	if (p->drain_ev)
		event_free(p->drain_ev);
	if (p->base)
		event_base_free(p->base);
	if (p->wake_fd >= 0)
		close(p->wake_fd);
	proxy_svcs_destroy(&p->svcs);
	free(p);
}

void proxy_drain(proxy *p, int64_t timeout_ms)
{
	atomic_store(&p->drain_ms, timeout_ms > 0 ? timeout_ms : 0);
	atomic_store(&p->drain_req, true);
	wake(p);
}

bool proxy_drained(const proxy *p)
{
	return atomic_load(&p->drained);
}

void proxy_collect(void *ctx, adm_out *o)
{
	proxy *p = ctx;
	const char *n = "kepp_proxy_requests_total";
	char code[12];
	adm_out_family(o, n, "counter",
		       "Requests the fast path's fallback proxy answered, by HTTP status (the pod's, "
		       "or the proxy's own error).");
	for (int s = 0; s < N_STATUS; s++) {
		unsigned long long v;
		v = atomic_load_explicit(&p->status[s], memory_order_relaxed);
		if (!v)
			continue;
		snprintf(code, sizeof(code), "%d", s);
		adm_out_sample(o, n, (double)v, "code", code, NULL);
	}
}
