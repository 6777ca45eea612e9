/* The admin HTTP server (libevent evhttp on the control thread's loop):
 * /metrics, /healthz, and with --enable-debug-endpoints /debug/pool and
 * /debug/explain. Read-only: nothing served changes kepp's state. Bounded:
 * header and body sizes are capped by evhttp, which answers 413 or 400. */
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "admin/adm_int.h"
#include "util/log.h"

#define MAX_HEADERS_SIZE (64u << 10)
#define MAX_BODY_SIZE (8u << 20)   /* an explain body */
#define MAX_QUERY_VALUE (1u << 20) /* a GET explain prompt */

adm *adm_new(const adm_opts *o)
{
	adm *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->o = *o;
	if (a->o.staleness_ms <= 0)
		a->o.staleness_ms = 2000;
	if (!a->o.max_series)
		a->o.max_series = 1024;
	return a;
}

void adm_free(adm *a)
{
	if (!a)
		return;
	if (a->http)
		evhttp_free(a->http);
	adm_workers_free(a);
	free(a->collectors);
	free(a);
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
		  const char *body, size_t len)
{
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
	if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
		evbuffer_add(b, body, len);
	evhttp_send_reply(req, code, reason, b);
	evbuffer_free(b);
}

static void reply_buf(struct evhttp_request *req, int rc, adm_buf *out, const char *type)
{
	if (rc == -ENOENT)
		reply(req, 503, "Service Unavailable", "text/plain; charset=utf-8",
		      "no pool snapshot yet\n", 21);
	else if (rc < 0)
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
	else
		reply(req, 200, "OK", type, out->p ? out->p : "", out->len);
	adm_buf_free(out);
}

static void text(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
	reply(req, code, reason, "text/plain; charset=utf-8", msg, strlen(msg));
}

static bool header_cb(void *ctx, const char *name, sched_str *value)
{
	const char *v = evhttp_find_header(ctx, name);
	if (!v)
		return false;
	value->p = v;
	value->len = strlen(v);
	return true;
}

/* GET ?model=M&prompt=P builds a completions body; POST sends the body as
 * the client would. Either way the HTTP headers are the request headers
 * (x-gateway-inference-objective, x-gateway-model-name-rewrite, ...), and
 * ?path= and ?subset= set :path and the endpoint subset hint. */
static void explain(adm *a, struct evhttp_request *req, const struct evhttp_uri *uri)
{
	struct evkeyvalq q;
	TAILQ_INIT(&q);
	const char *qs = evhttp_uri_get_query(uri);
	if (qs && evhttp_parse_query_str(qs, &q) < 0) {
		text(req, 400, "Bad Request", "malformed query string\n");
		return;
	}
	adm_explain_req in = {
		.path = evhttp_find_header(&q, "path"),
		.subset = evhttp_find_header(&q, "subset"),
		.header = header_cb,
		.header_ctx = evhttp_request_get_input_headers(req),
	};
	char *made = NULL;
	if (evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
		struct evbuffer *b = evhttp_request_get_input_buffer(req);
		in.body_len = evbuffer_get_length(b);
		in.body = (const char *)evbuffer_pullup(b, -1);
	} else {
		const char *model = evhttp_find_header(&q, "model");
		const char *prompt = evhttp_find_header(&q, "prompt");
		if (!model || strlen(model) > MAX_QUERY_VALUE ||
		    (prompt && strlen(prompt) > MAX_QUERY_VALUE)) {
			evhttp_clear_headers(&q);
			text(req, 400, "Bad Request",
			     "GET /debug/explain?model=M&prompt=P, or POST the request body\n");
			return;
		}
		cJSON *o = cJSON_CreateObject();
		if (o) {
			cJSON_AddStringToObject(o, "model", model);
			cJSON_AddStringToObject(o, "prompt", prompt ? prompt : "");
			made = cJSON_PrintUnformatted(o);
			cJSON_Delete(o);
		}
		if (!made) {
			evhttp_clear_headers(&q);
			evhttp_send_error(req, HTTP_INTERNAL, NULL);
			return;
		}
		in.body = made;
		in.body_len = strlen(made);
	}
	adm_buf out = {0};
	int rc = adm_explain(a, &in, &out);
	free(made);
	evhttp_clear_headers(&q);
	reply_buf(req, rc, &out, "application/json");
}

static void handle(struct evhttp_request *req, void *arg)
{
	adm *a = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
	if (!path) {
		text(req, 400, "Bad Request", "bad request\n");
		return;
	}
	if (!strcmp(path, "/metrics")) {
		if (!get) {
			text(req, 405, "Method Not Allowed", "GET /metrics\n");
			return;
		}
		adm_buf out = {0};
		int rc = adm_metrics_render(a, &out);
		reply_buf(req, rc, &out, "text/plain; version=0.0.4; charset=utf-8");
		return;
	}
	if (!strcmp(path, "/healthz")) {
		text(req, 200, "OK", "ok\n");
		return;
	}
	if (a->o.debug_endpoints && !strcmp(path, "/debug/pool")) {
		if (!get) {
			text(req, 405, "Method Not Allowed", "GET /debug/pool\n");
			return;
		}
		adm_buf out = {0};
		int rc = adm_debug_pool(a, &out);
		reply_buf(req, rc, &out, "application/json");
		return;
	}
	if (a->o.debug_endpoints && !strcmp(path, "/debug/explain")) {
		explain(a, req, uri);
		return;
	}
	text(req, 404, "Not Found",
	     a->o.debug_endpoints || strncmp(path, "/debug/", 7)
		     ? "not found\n"
		     : "not found (debug endpoints are off: --enable-debug-endpoints)\n");
}

/* A listening socket on |port| of every address: IPv6 and IPv4 on one
 * dual-stack socket (an IPv6-only pod has no IPv4 address to bind), IPv4
 * alone where the kernel has no IPv6. Returns the fd or -errno. */
static int listen_any(int port)
{
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
	struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	bool v6 = fd >= 0;
	if (!v6 && errno == EAFNOSUPPORT)
		fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (v6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if ((v6 ? bind(fd, (struct sockaddr *)&a6, sizeof(a6))
		: bind(fd, (struct sockaddr *)&a4, sizeof(a4))) < 0 ||
	    listen(fd, 128) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int adm_listen(adm *a, struct event_base *base, int port, char *err, size_t errlen)
{
	if (port <= 0 || port > 65535) {
		snprintf(err, errlen, "invalid port %d", port);
		return -EINVAL;
	}
	int fd = listen_any(port);
	if (fd < 0) {
		snprintf(err, errlen, "cannot listen on port %d: %s", port, strerror(-fd));
		return fd;
	}
	struct evhttp *http = evhttp_new(base);
	if (!http) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	evhttp_set_max_headers_size(http, MAX_HEADERS_SIZE);
	evhttp_set_max_body_size(http, MAX_BODY_SIZE);
	evhttp_set_timeout(http, 30);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
	evhttp_set_gencb(http, handle, a);
	/* 0: the socket already listens. The listener closes it when freed. */
	struct evconnlistener *l = evconnlistener_new(base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE, 0, fd);
	if (!l)
		close(fd);
	if (!l || !evhttp_bind_listener(http, l)) {
		if (l)
			evconnlistener_free(l);
		evhttp_free(http);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	a->http = http;
	return 0;
}
