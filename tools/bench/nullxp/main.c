/* bench-nullxp: a null ext_proc server for the ext_proc load benchmark.
 *
 * It runs kepp's own HTTP/2 + gRPC stack (user/extproc/grpc.h xp_server, the
 * same protobuf-c code) and answers the FULL_DUPLEX_STREAMED exchange the way
 * kepp does, with the picking left out: it buffers the request body until
 * end_of_stream (or the trailers), then answers the request headers with a
 * fixed x-gateway-destination-endpoint and envoy.lb metadata, streams the body
 * back in chunks of at most 62000 bytes, and answers the response phases
 * likewise. What kepp spends above this server is the cost of deciding.
 *
 *   bench-nullxp --port 9102 [--tls] [--workers 1] [--endpoint 10.0.0.1:8000]
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "envoy/service/ext_proc/v3/external_processor.pb-c.h"
#include "extproc/grpc.h"
#include "util/arena.h"
#include "util/log.h"

#define PROCESS "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
#define BODY_CHUNK 62000
#define MAX_BODY (64u << 20)
#define MAX_WORKERS 64

typedef Envoy__Service__ExtProc__V3__ProcessingRequest PReq;
typedef Envoy__Service__ExtProc__V3__ProcessingResponse PResp;
typedef Envoy__Service__ExtProc__V3__HeadersResponse HeadersResponse;
typedef Envoy__Service__ExtProc__V3__BodyResponse BodyResponse;
typedef Envoy__Service__ExtProc__V3__TrailersResponse TrailersResponse;
typedef Envoy__Service__ExtProc__V3__CommonResponse CommonResponse;
typedef Envoy__Service__ExtProc__V3__HeaderMutation HeaderMutation;
typedef Envoy__Service__ExtProc__V3__BodyMutation BodyMutation;
typedef Envoy__Service__ExtProc__V3__StreamedBodyResponse StreamedBody;
typedef Envoy__Config__Core__V3__HeaderValueOption HeaderValueOption;
typedef Envoy__Config__Core__V3__HeaderValue HeaderValue;
typedef Google__Protobuf__Struct PbStruct;
typedef Google__Protobuf__Struct__FieldsEntry PbField;
typedef Google__Protobuf__Value PbValue;

typedef struct worker {
	pthread_t thread;
	struct event_base *base;
	xp_server *server;
	xp_method method;
	arena scratch; /* one message's decode and encode */
	ProtobufCAllocator pb;
} worker;

typedef struct nstream {
	worker *w;
	xp_stream *st;
	uint8_t *body;
	size_t len, cap;
	bool req_done, resp_done;
} nstream;

static const char *endpoint = "10.0.0.1:8000";

static void *pb_alloc(void *ctx, size_t n) { return arena_alloc(ctx, n); }
static void pb_free(void *ctx, void *p) { (void)ctx, (void)p; }

static int body_add(nstream *s, const uint8_t *p, size_t n)
{
	if (n > MAX_BODY - s->len)
		return -EMSGSIZE;
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		while (cap < s->len + n)
			cap *= 2;
		uint8_t *q = realloc(s->body, cap);
		if (!q)
			return -ENOMEM;
		s->body = q;
		s->cap = cap;
	}
	if (n)
		memcpy(s->body + s->len, p, n);
	s->len += n;
	return 0;
}

static void send_resp(nstream *s, PResp *r)
{
	size_t n = protobuf_c_message_get_packed_size(&r->base);
	uint8_t *out = arena_alloc(&s->w->scratch, n ? n : 1);
	if (!out) {
		xp_stream_finish(s->st, XP_GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	protobuf_c_message_pack(&r->base, out);
	xp_stream_send(s->st, out, n);
}

/* The buffered body back as streamed body responses, the last with |eos|. */
static void send_body(nstream *s, bool request, bool eos)
{
	size_t off = 0;
	do {
		size_t n = s->len - off > BODY_CHUNK ? BODY_CHUNK : s->len - off;
		StreamedBody sb = ENVOY__SERVICE__EXT_PROC__V3__STREAMED_BODY_RESPONSE__INIT;
		sb.body.data = s->body + off;
		sb.body.len = n;
		sb.end_of_stream = eos && off + n == s->len;
		BodyMutation bm = ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__INIT;
		bm.mutation_case = ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__MUTATION_STREAMED_RESPONSE;
		bm.streamed_response = &sb;
		CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
		cr.body_mutation = &bm;
		BodyResponse br = ENVOY__SERVICE__EXT_PROC__V3__BODY_RESPONSE__INIT;
		br.response = &cr;
		PResp r = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
		if (request) {
			r.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_BODY;
			r.request_body = &br;
		} else {
			r.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_BODY;
			r.response_body = &br;
		}
		send_resp(s, &r);
		off += n;
	} while (off < s->len);
	s->len = 0;
}

static void send_headers(nstream *s, bool request, bool decide)
{
	HeaderValue dest = ENVOY__CONFIG__CORE__V3__HEADER_VALUE__INIT;
	dest.key = "x-gateway-destination-endpoint";
	dest.raw_value.data = (uint8_t *)endpoint;
	dest.raw_value.len = strlen(endpoint);
	char clen[24];
	snprintf(clen, sizeof(clen), "%zu", s->len);
	HeaderValue cl = ENVOY__CONFIG__CORE__V3__HEADER_VALUE__INIT;
	cl.key = "Content-Length";
	cl.raw_value.data = (uint8_t *)clen;
	cl.raw_value.len = strlen(clen);
	HeaderValueOption o1 = ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__INIT;
	HeaderValueOption o2 = ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__INIT;
	o1.header = &dest;
	o2.header = &cl;
	HeaderValueOption *set[] = {&o1, &o2};
	HeaderMutation hm = ENVOY__SERVICE__EXT_PROC__V3__HEADER_MUTATION__INIT;
	hm.set_headers = set;
	hm.n_set_headers = s->len ? 2 : 1;

	/* {"envoy.lb": {"x-gateway-destination-endpoint": endpoint}} */
	PbValue dv = GOOGLE__PROTOBUF__VALUE__INIT;
	dv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	dv.string_value = (char *)endpoint;
	PbField df = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	df.key = "x-gateway-destination-endpoint";
	df.value = &dv;
	PbField *dfs[] = {&df};
	PbStruct inner = GOOGLE__PROTOBUF__STRUCT__INIT;
	inner.fields = dfs;
	inner.n_fields = 1;
	PbValue iv = GOOGLE__PROTOBUF__VALUE__INIT;
	iv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
	iv.struct_value = &inner;
	PbField of = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	of.key = "envoy.lb";
	of.value = &iv;
	PbField *ofs[] = {&of};
	PbStruct outer = GOOGLE__PROTOBUF__STRUCT__INIT;
	outer.fields = ofs;
	outer.n_fields = 1;

	CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
	HeadersResponse hr = ENVOY__SERVICE__EXT_PROC__V3__HEADERS_RESPONSE__INIT;
	hr.response = &cr;
	PResp r = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
	if (request) {
		r.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS;
		r.request_headers = &hr;
	} else {
		r.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_HEADERS;
		r.response_headers = &hr;
	}
	if (decide) {
		cr.clear_route_cache = 1;
		cr.header_mutation = &hm;
		r.dynamic_metadata = &outer;
	}
	send_resp(s, &r);
}

static void send_trailers(nstream *s, bool request)
{
	TrailersResponse tr = ENVOY__SERVICE__EXT_PROC__V3__TRAILERS_RESPONSE__INIT;
	PResp r = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
	if (request) {
		r.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_TRAILERS;
		r.request_trailers = &tr;
	} else {
		r.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_TRAILERS;
		r.response_trailers = &tr;
	}
	send_resp(s, &r);
}

/* The request is complete: the fixed pick, then the body (kepp's order). */
static void decide(nstream *s, bool trailers_follow)
{
	s->req_done = true;
	send_headers(s, true, true);
	send_body(s, true, !trailers_follow);
}

static void on_body(nstream *s, bool request, const Envoy__Service__ExtProc__V3__HttpBody *b)
{
	if (request ? s->req_done : s->resp_done)
		return;
	if (b && b->body.len && body_add(s, b->body.data, b->body.len) < 0) {
		xp_stream_finish(s->st, XP_GRPC_RESOURCE_EXHAUSTED, "body too large");
		return;
	}
	if (!b || !b->end_of_stream)
		return;
	if (request) {
		decide(s, false);
	} else {
		s->resp_done = true;
		send_body(s, false, true);
	}
}

static void *n_open(xp_stream *st, void *ctx)
{
	nstream *s = calloc(1, sizeof(*s));
	if (s) {
		s->w = ctx;
		s->st = st;
	}
	return s;
}

static void n_message(xp_stream *st, void *ctx, const uint8_t *msg, size_t len)
{
	nstream *s = ctx;
	worker *w = s->w;
	PReq *rq = envoy__service__ext_proc__v3__processing_request__unpack(&w->pb, len, msg);
	if (!rq) {
		xp_stream_finish(st, XP_GRPC_INVALID_ARGUMENT, "cannot decode ProcessingRequest");
		arena_reset(&w->scratch);
		return;
	}
	switch (rq->request_case) {
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_HEADERS:
		if (rq->request_headers && rq->request_headers->end_of_stream)
			decide(s, false);
		break;
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_BODY:
		on_body(s, true, rq->request_body);
		break;
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_TRAILERS:
		if (!s->req_done)
			decide(s, true);
		send_trailers(s, true);
		break;
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_HEADERS:
		send_headers(s, false, false);
		if (rq->response_headers && rq->response_headers->end_of_stream)
			s->resp_done = true;
		break;
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_BODY:
		on_body(s, false, rq->response_body);
		break;
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_TRAILERS:
		if (!s->resp_done) {
			s->resp_done = true;
			send_body(s, false, false);
		}
		send_trailers(s, false);
		break;
	default:
		break;
	}
	arena_reset(&w->scratch);
}

static void n_half_close(xp_stream *st, void *ctx)
{
	xp_stream_finish(st, XP_GRPC_OK, NULL);
}

static void n_close(xp_stream *st, void *ctx, bool cancelled)
{
	nstream *s = ctx;
	free(s->body);
	free(s);
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	event_base_dispatch(w->base);
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bench-nullxp [--port N] [--tls] [--cert-path DIR] [--workers N]\n"
		   "                    [--endpoint IP:PORT] [--max-message-bytes N]\n"
		   "A null ext_proc server on kepp's HTTP/2 stack: a fixed pick for every request.\n");
}

int main(int argc, char **argv)
{
	int port = 9102, n_workers = 1;
	long max_msg = 4 << 20;
	bool tls = false;
	const char *cert_path = NULL;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--tls")) {
			tls = true;
		} else if (!strcmp(a, "--port") && v) {
			port = atoi(v), i++;
		} else if (!strcmp(a, "--workers") && v) {
			n_workers = atoi(v), i++;
		} else if (!strcmp(a, "--endpoint") && v) {
			endpoint = v, i++;
		} else if (!strcmp(a, "--cert-path") && v) {
			cert_path = v, i++;
		} else if (!strcmp(a, "--max-message-bytes") && v) {
			max_msg = atol(v), i++;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (n_workers < 1 || n_workers > MAX_WORKERS || port < 0 || port > 65535 || max_msg <= 0) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();

	char err[256];
	xp_tls *t = NULL;
	if (tls && !(t = xp_tls_new(cert_path, err, sizeof(err)))) {
		fprintf(stderr, "bench-nullxp: %s\n", err);
		return 1;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	static worker ws[MAX_WORKERS];
	for (int i = 0; i < n_workers; i++) {
		worker *w = &ws[i];
		w->base = event_base_new();
		arena_init(&w->scratch, 64 * 1024);
		w->pb.alloc = pb_alloc;
		w->pb.free = pb_free;
		w->pb.allocator_data = &w->scratch;
		w->method = (xp_method){
			.path = PROCESS,
			.open = n_open,
			.message = n_message,
			.half_close = n_half_close,
			.close = n_close,
			.method_ctx = w,
		};
		xp_server_opts so = {
			.port = port,
			.tls = t,
			.max_message_bytes = (size_t)max_msg,
			.max_concurrent_streams = 1000,
			.methods = &w->method,
			.n_methods = 1,
			.name = "nullxp",
		};
		if (!w->base || !(w->server = xp_server_new(w->base, &so, err, sizeof(err)))) {
			fprintf(stderr, "bench-nullxp: %s\n", w->base ? err : "event_base_new failed");
			return 1;
		}
	}
	for (int i = 0; i < n_workers; i++)
		pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
	fprintf(stderr, "{\"level\":\"info\",\"msg\":\"nullxp serving\",\"port\":%d,\"workers\":%d,"
			"\"tls\":%s}\n",
		xp_server_port(ws[0].server), n_workers, tls ? "true" : "false");

	int sig;
	sigwait(&set, &sig);
	for (int i = 0; i < n_workers; i++)
		event_base_loopbreak(ws[i].base);
	for (int i = 0; i < n_workers; i++) {
		pthread_join(ws[i].thread, NULL);
		xp_server_free(ws[i].server);
		arena_free(&ws[i].scratch);
		event_base_free(ws[i].base);
	}
	xp_tls_free(t);
	return 0;
}
