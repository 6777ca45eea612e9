#include "extproc/extproc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "envoy/service/ext_proc/v3/external_processor.pb-c.h"
#include "extproc/grpc_codec.h"
#include "sched/early.h"
#include "util/log.h"
#include "util/rand.h"

/* Short names for the generated protobuf-c types. */
typedef Envoy__Service__ExtProc__V3__ProcessingRequest PReq;
typedef Envoy__Service__ExtProc__V3__ProcessingResponse PResp;
typedef Envoy__Service__ExtProc__V3__HttpHeaders HttpHeaders;
typedef Envoy__Service__ExtProc__V3__HttpBody HttpBody;
typedef Envoy__Service__ExtProc__V3__BodyResponse BodyResponse;
typedef Envoy__Service__ExtProc__V3__TrailersResponse TrailersResponse;
typedef Envoy__Service__ExtProc__V3__CommonResponse CommonResponse;
typedef Envoy__Service__ExtProc__V3__HeaderMutation HeaderMutation;
typedef Envoy__Service__ExtProc__V3__BodyMutation BodyMutation;
typedef Envoy__Service__ExtProc__V3__ImmediateResponse ImmediateResponse;
typedef Envoy__Config__Core__V3__HeaderValueOption HeaderValueOption;
typedef Envoy__Config__Core__V3__HeaderValue HeaderValue;
typedef Envoy__Config__Core__V3__HeaderMap HeaderMap;
typedef Envoy__Config__Core__V3__Metadata Metadata;
typedef Envoy__Type__V3__HttpStatus HttpStatus;
typedef Google__Protobuf__Struct PbStruct;
typedef Google__Protobuf__Struct__FieldsEntry PbField;
typedef Google__Protobuf__Value PbValue;

#define BODY_MODE_BUFFERED ENVOY__EXTENSIONS__FILTERS__HTTP__EXT_PROC__V3__PROCESSING_MODE__BODY_SEND_MODE__BUFFERED

#define H_DEST "x-gateway-destination-endpoint"
#define NS_LB "envoy.lb"
#define NS_SUBSET "envoy.lb.subset_hint"
#define K_SUBSET "x-gateway-destination-endpoint-subset"
#define K_SERVED "x-gateway-destination-endpoint-served"

/* Ended streams kept per worker for reuse with their arena and small
 * buffers: the steady state allocates no per-stream memory. */
#define EP_CACHE 128
/* A body buffer at most this big stays with a stream kept for reuse. */
#define BUF_KEEP_BYTES (64 * 1024)
#define PRESIZE_MAX (16 << 20)

typedef struct ep_stream ep_stream;

struct xp_ep {
	store *store;
	xp_ep_opts o;
	arena scratch; /* one message's decode and encode; reset after each */
	ProtobufCAllocator pb_alloc;
	ep_stream *free_streams; /* linked by next_free */
	uint32_t n_free;
};

typedef struct hdr {
	const char *key;
	size_t klen;
	const char *val;
	size_t vlen;
} hdr;

typedef struct hdrs {
	hdr *v;
	size_t n, cap;
} hdrs;

typedef struct buf {
	char *p;
	size_t len, cap;
} buf;

/* Per-stream state (spec §2.7's RequestReceived .. TrailerResponseResponsesComplete). */
struct ep_stream {
	xp_ep *ep;
	ep_stream *next_free;    /* in xp_ep.free_streams */
	xp_stream *st;
	arena mem;               /* lives as long as the stream */
	bool failed;             /* an ImmediateResponse or error ended processing */
	bool req_headers_done;
	bool req_decided;        /* the request-direction answer was sent */
	bool req_body_eos;       /* later body messages are ignored (envoy#46237) */
	bool buffered;           /* request_body_mode BUFFERED (spec §2.11) */
	bool resp_buffered;      /* response_body_mode BUFFERED */
	bool resp_streaming;     /* SSE response: chunks answered one for one */
	bool resp_headers_done;
	bool resp_body_eos;
	hdrs req_h;
	buf body;                /* request body until the decision */
	buf resp_body;           /* non-streaming response body until end of stream */
	/* Latest subset hint seen on any message (spec §2.4). */
	bool has_subset;
	bool subset_is_string;
	sched_str *subset;
	size_t n_subset;
	/* Latest envoy.lb served endpoint (spec §2.6). */
	bool have_lb;
	bool have_served;
	char *served;
	size_t served_len;
	sched_result res;        /* the decision, for the response path */
	bool decided;
	bool scheduled;          /* sched_decide ran: sched_request_done is owed */
	const store_snapshot *snap; /* held from the decision until the stream ends */
	sched_usage usage;
	adm_req m;               /* metrics of this stream (user/admin) */
	/* Early pick: the scan over a body that comes in several messages, and
	 * once the headers were answered before its end, the pass-through. */
	bool early_scanning;
	bool early_sent;
	early_scan es;
	size_t early_total;      /* body bytes received */
	size_t early_fwd;        /* body bytes forwarded (the model rewritten) */
	unsigned early_models;   /* "model" members when picked */
	int64_t early_ns;        /* decision latency, recorded at the body's end */
	sched_trace *early_tr;
};

bool xp_early_pick = true;

static void *pb_alloc(void *ctx, size_t n) { return arena_alloc(ctx, n); }
static void pb_free(void *ctx, void *p) { (void)ctx, (void)p; }

static void *must(void *p)
{
	if (!p) {
		ulog(LOG_ERROR, "out of memory", NULL);
		abort();
	}
	return p;
}

#define ANEW(a, T, INIT)                                                                   \
	({                                                                                 \
		T *_p = must(arena_alloc((a), sizeof(T)));                                 \
		T _i = INIT;                                                               \
		*_p = _i;                                                                  \
		_p;                                                                        \
	})

static int buf_append(buf *b, const void *p, size_t n, size_t limit)
{
	if (n > limit || b->len > limit - n)
		return -EMSGSIZE;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n)
			cap *= 2;
		if (cap > limit)
			cap = limit;
		char *q = realloc(b->p, cap);
		if (!q)
			return -ENOMEM;
		b->p = q;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

static void buf_free(buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* Done with the contents: a small buffer is kept for the next body. */
static void buf_done(buf *b)
{
	if (b->cap > BUF_KEEP_BYTES)
		buf_free(b);
	b->len = 0;
}

/* Header values: raw_value when non-empty, else value (spec §2.3). */
static void header_value(const HeaderValue *h, const char **v, size_t *len)
{
	if (h->raw_value.len > 0) {
		*v = (const char *)h->raw_value.data;
		*len = h->raw_value.len;
	} else if (h->value) {
		*v = h->value;
		*len = strlen(h->value);
	} else {
		*v = "";
		*len = 0;
	}
}

/* Header names compare case-insensitively; HTTP/2 and Envoy send them in
 * lowercase, so the length and then the bytes decide almost every time. */
static bool name_eq(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && (memcmp(a, b, alen) == 0 || strncasecmp(a, b, alen) == 0);
}

static hdr *hdrs_find_n(const hdrs *h, const char *name, size_t len)
{
	for (size_t i = 0; i < h->n; i++)
		if (name_eq(h->v[i].key, h->v[i].klen, name, len))
			return &h->v[i];
	return NULL;
}

static hdr *hdrs_find(const hdrs *h, const char *name)
{
	return hdrs_find_n(h, name, strlen(name));
}

/* Stores a header; a later duplicate overwrites (spec §2.7 step 1). */
static int hdrs_set(arena *a, hdrs *h, const char *key, const char *val, size_t vlen,
		    size_t limit)
{
	size_t klen = strlen(key);
	hdr *e = hdrs_find_n(h, key, klen);
	if (!e) {
		if (h->n == h->cap) {
			if (h->n >= limit)
				return -E2BIG;
			size_t cap = h->cap ? h->cap * 2 : 16;
			hdr *nv = must(arena_alloc(a, cap * sizeof(hdr)));
			if (h->n)
				memcpy(nv, h->v, h->n * sizeof(hdr));
			h->v = nv;
			h->cap = cap;
		}
		e = &h->v[h->n++];
		e->key = must(arena_strndup(a, key, klen));
		e->klen = klen;
	}
	e->val = must(arena_strndup(a, val, vlen));
	e->vlen = vlen;
	return 0;
}

/* Request headers the EPP reads but never echoes back (pkg/epp/util/request/headers.go). */
static bool system_owned(const char *k, size_t klen)
{
#define SO(n) {n, sizeof(n) - 1}
	static const struct {
		const char *name;
		size_t len;
	} names[] = {
		SO("x-gateway-inference-fairness-id"), SO("x-gateway-inference-objective"),
		SO("x-gateway-model-name-rewrite"),    SO(K_SUBSET),
		SO(H_DEST),                            SO(K_SERVED),
		SO("content-length"),
	};
#undef SO
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (name_eq(k, klen, names[i].name, names[i].len))
			return true;
	return false;
}

/* ---- encoding ---------------------------------------------------------- */

/* Headers to set: the hand packer's list (xp_pb_resp), turned into
 * protobuf-c's messages only for the rare responses it packs (mutation). */
typedef struct setlist {
	xp_pb_hdr *v;
	size_t n, cap;
} setlist;

static void set_add(arena *a, setlist *l, const char *k, const char *v, size_t vlen)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		xp_pb_hdr *nv = must(arena_alloc(a, cap * sizeof(*nv)));
		if (l->n)
			memcpy(nv, l->v, l->n * sizeof(*nv));
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n++] = (xp_pb_hdr){k, v, strlen(k), vlen};
}

static HeaderMutation *mutation(arena *a, setlist *l)
{
	HeaderMutation *m = ANEW(a, HeaderMutation, ENVOY__SERVICE__EXT_PROC__V3__HEADER_MUTATION__INIT);
	m->n_set_headers = l->n;
	m->set_headers = must(arena_alloc(a, (l->n ? l->n : 1) * sizeof(*m->set_headers)));
	for (size_t i = 0; i < l->n; i++) {
		HeaderValue *hv = ANEW(a, HeaderValue, ENVOY__CONFIG__CORE__V3__HEADER_VALUE__INIT);
		hv->key = (char *)l->v[i].key;
		hv->raw_value.data = (uint8_t *)l->v[i].val;
		hv->raw_value.len = l->v[i].vlen;
		HeaderValueOption *o = ANEW(a, HeaderValueOption,
					    ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__INIT);
		o->header = hv;
		m->set_headers[i] = o;
	}
	return m;
}

static PbValue *pb_string(arena *a, const char *s)
{
	PbValue *v = ANEW(a, PbValue, GOOGLE__PROTOBUF__VALUE__INIT);
	v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v->string_value = (char *)s;
	return v;
}

/* {"envoy.lb": {"x-gateway-destination-endpoint": "<targets>"}} (spec §2.5). */
static PbStruct *dest_metadata(arena *a, const char *targets)
{
	PbField *inner_f = ANEW(a, PbField, GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT);
	inner_f->key = (char *)H_DEST;
	inner_f->value = pb_string(a, targets);
	PbStruct *inner = ANEW(a, PbStruct, GOOGLE__PROTOBUF__STRUCT__INIT);
	inner->n_fields = 1;
	inner->fields = must(arena_alloc(a, sizeof(PbField *)));
	inner->fields[0] = inner_f;
	PbValue *iv = ANEW(a, PbValue, GOOGLE__PROTOBUF__VALUE__INIT);
	iv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
	iv->struct_value = inner;
	PbField *outer_f = ANEW(a, PbField, GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT);
	outer_f->key = (char *)NS_LB;
	outer_f->value = iv;
	PbStruct *outer = ANEW(a, PbStruct, GOOGLE__PROTOBUF__STRUCT__INIT);
	outer->n_fields = 1;
	outer->fields = must(arena_alloc(a, sizeof(PbField *)));
	outer->fields[0] = outer_f;
	return outer;
}

static void pack_resp(const void *msg, uint8_t *out)
{
	protobuf_c_message_pack(msg, out);
}

/* Packed straight into the stream's output. */
static void send_resp(ep_stream *s, PResp *r)
{
	size_t n = protobuf_c_message_get_packed_size(&r->base);
	xp_stream_send_packed(s->st, n, pack_resp, &r->base);
}

static void pack_fast(const void *msg, uint8_t *out)
{
	xp_pb_resp_pack(msg, out);
}

/* The common responses, packed by hand (grpc_codec.c). */
static void send_fast(ep_stream *s, const xp_pb_resp *r)
{
	xp_stream_send_packed(s->st, xp_pb_resp_size(r), pack_fast, r);
}

/* A headers response: |sl| (NULL: no header_mutation), clear_route_cache,
 * and with |dest| the envoy.lb metadata naming it (spec §2.5). */
static void send_headers_fast(ep_stream *s, bool request, const setlist *sl, bool clear_route,
			      const char *dest)
{
	xp_pb_resp r = {.field = request ? 1 : 2, .clear_route_cache = clear_route};
	if (sl) {
		r.mutation = true;
		r.set = sl->v;
		r.n_set = sl->n;
	}
	if (dest) {
		r.md_key = H_DEST;
		r.md_key_len = strlen(H_DEST);
		r.md_value = dest;
		r.md_value_len = strlen(dest);
	}
	send_fast(s, &r);
}

static PResp *new_resp(arena *a)
{
	return ANEW(a, PResp, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT);
}

static CommonResponse *new_common(arena *a)
{
	return ANEW(a, CommonResponse, ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT);
}

/* One ImmediateResponse ends processing; the gRPC stream then closes OK (spec §2.8).
 * Decisions log their own line (adm_log_decision); other errors log here. */
static void send_immediate_quiet(ep_stream *s, enum sched_err err, const char *text)
{
	arena *a = &s->ep->scratch;
	ImmediateResponse *ir =
		ANEW(a, ImmediateResponse, ENVOY__SERVICE__EXT_PROC__V3__IMMEDIATE_RESPONSE__INIT);
	HttpStatus *st = ANEW(a, HttpStatus, ENVOY__TYPE__V3__HTTP_STATUS__INIT);
	st->code = sched_err_http(err);
	ir->status = st;
	ir->body.data = (uint8_t *)text;
	ir->body.len = strlen(text);
	PResp *r = new_resp(a);
	r->response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_IMMEDIATE_RESPONSE;
	r->immediate_response = ir;
	send_resp(s, r);
	s->failed = true;
	adm_request_failed(&s->m, sched_err_name(err));
	xp_stream_finish(s->st, XP_GRPC_OK, NULL);
}

static void send_immediate(ep_stream *s, enum sched_err err, const char *text)
{
	send_immediate_quiet(s, err, text);
	ulog(LOG_DEBUG, "request rejected", "status", sched_err_name(err), "body", text, NULL);
}

/* Sends |len| bytes as streamed body responses of at most XP_BODY_CHUNK bytes;
 * end_of_stream only on the last when |eos|. An empty body still yields one
 * message. */
static void send_body_chunks(ep_stream *s, bool request, const char *p, size_t len, bool eos)
{
	size_t off = 0;
	do {
		size_t n = len - off > XP_BODY_CHUNK ? XP_BODY_CHUNK : len - off;
		xp_pb_resp r = {.field = request ? 3 : 4, .streamed = true,
				.body = (const uint8_t *)p + off, .body_len = n,
				.end_of_stream = off + n == len && eos};
		send_fast(s, &r);
		off += n;
	} while (off < len);
}

static void send_trailers_resp(ep_stream *s, bool request)
{
	arena *a = &s->ep->scratch;
	TrailersResponse *tr =
		ANEW(a, TrailersResponse, ENVOY__SERVICE__EXT_PROC__V3__TRAILERS_RESPONSE__INIT);
	PResp *r = new_resp(a);
	if (request) {
		r->response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_TRAILERS;
		r->request_trailers = tr;
	} else {
		r->response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_TRAILERS;
		r->response_trailers = tr;
	}
	send_resp(s, r);
}

/* ---- metadata ---------------------------------------------------------- */

static const PbStruct *md_namespace(const Metadata *md, const char *ns)
{
	if (!md)
		return NULL;
	for (size_t i = 0; i < md->n_filter_metadata; i++) {
		const Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *e = md->filter_metadata[i];
		if (e && e->key && strcmp(e->key, ns) == 0)
			return e->value;
	}
	return NULL;
}

static const PbValue *struct_get(const PbStruct *st, const char *key)
{
	if (!st)
		return NULL;
	for (size_t i = 0; i < st->n_fields; i++)
		if (st->fields[i] && st->fields[i]->key && strcmp(st->fields[i]->key, key) == 0)
			return st->fields[i]->value;
	return NULL;
}

static void add_subset_entry(ep_stream *s, size_t *cap, const char *p, size_t n)
{
	while (n && (*p == ' ' || *p == '\t'))
		p++, n--;
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	if (!n)
		return;
	if (s->n_subset == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		sched_str *nv = must(arena_alloc(&s->mem, nc * sizeof(*nv)));
		if (s->n_subset)
			memcpy(nv, s->subset, s->n_subset * sizeof(*nv));
		s->subset = nv;
		*cap = nc;
	}
	s->subset[s->n_subset].p = must(arena_strndup(&s->mem, p, n));
	s->subset[s->n_subset].len = n;
	s->n_subset++;
}

/* Takes the subset hint and the served endpoint from whichever message
 * carries them; the latest wins (spec §2.4, §2.6). */
static void read_metadata(ep_stream *s, const Metadata *md)
{
	const PbStruct *hint = md_namespace(md, NS_SUBSET);
	const PbValue *v = struct_get(hint, K_SUBSET);
	if (v) {
		size_t cap = 0;
		s->has_subset = true;
		s->subset_is_string = v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
		s->subset = NULL;
		s->n_subset = 0;
		if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE && v->list_value) {
			for (size_t i = 0; i < v->list_value->n_values; i++) {
				const PbValue *e = v->list_value->values[i];
				/* Non-string list entries are ignored. */
				if (e && e->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE &&
				    e->string_value)
					add_subset_entry(s, &cap, e->string_value,
							 strlen(e->string_value));
			}
		} else if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE &&
			   v->string_value) {
			/* A comma string, as Envoy's header-to-metadata filter produces. */
			const char *p = v->string_value;
			for (;;) {
				const char *c = strchr(p, ',');
				size_t n = c ? (size_t)(c - p) : strlen(p);
				add_subset_entry(s, &cap, p, n);
				if (!c)
					break;
				p = c + 1;
			}
		}
	}
	const PbStruct *lb = md_namespace(md, NS_LB);
	if (lb) {
		s->have_lb = true;
		const PbValue *sv = struct_get(lb, K_SERVED);
		if (sv && sv->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE &&
		    sv->string_value) {
			s->served_len = strlen(sv->string_value);
			s->served = must(arena_strndup(&s->mem, sv->string_value, s->served_len));
			s->have_served = true;
		}
	}
}

/* ---- request direction ------------------------------------------------- */

static bool header_cb(void *ctx, const char *name, sched_str *value)
{
	const hdr *h = hdrs_find(ctx, name);
	if (!h)
		return false;
	value->p = h->val;
	value->len = h->vlen;
	return true;
}

static sched_str hval(const hdrs *h, const char *name)
{
	sched_str r = {NULL, 0};
	const hdr *e = hdrs_find(h, name);
	if (e) {
		r.p = e->val;
		r.len = e->vlen;
	}
	return r;
}

static sched_str req_path(const ep_stream *s)
{
	sched_str p = hval(&s->req_h, ":path");
	if (!p.p)
		p = hval(&s->req_h, "x-original-path");
	if (!p.p)
		p = hval(&s->req_h, "x-forwarded-path");
	return p;
}

/* The scheduler's view of the request but its body. */
static void fill_request(ep_stream *s, sched_request *rq, const char *body, size_t body_len)
{
	xp_ep *ep = s->ep;
	sched_request r = {0};
	*rq = r;
	rq->path = req_path(s);
	rq->objective = hval(&s->req_h, "x-gateway-inference-objective");
	rq->model_rewrite = hval(&s->req_h, "x-gateway-model-name-rewrite");
	rq->fairness_id = hval(&s->req_h, "x-gateway-inference-fairness-id");
	if (!rq->fairness_id.p) {
		rq->fairness_id.p = "default-flow";
		rq->fairness_id.len = strlen("default-flow");
	}
	rq->request_id = hval(&s->req_h, "x-request-id");
	rq->body = body ? body : "";
	rq->body_len = body_len;
	if (!ep->o.disable_subset && s->has_subset) {
		rq->has_subset = true;
		rq->subset = s->subset;
		rq->n_subset = s->n_subset;
		rq->subset_is_string = s->subset_is_string;
	}
	rq->header = header_cb;
	rq->header_ctx = &s->req_h;
}

/* FULL_DUPLEX_STREAMED (spec §2.7 step 4): the request-headers response with
 * the destination, |clen| (NULL: none), every header but the system-owned
 * ones, and the envoy.lb metadata. */
static void send_dest_headers(ep_stream *s, const char *clen)
{
	arena *a = &s->ep->scratch;
	setlist sl = {0};
	set_add(a, &sl, H_DEST, s->res.targets, strlen(s->res.targets));
	if (clen)
		set_add(a, &sl, "Content-Length", clen, strlen(clen));
	for (size_t i = 0; i < s->req_h.n; i++) {
		const hdr *h = &s->req_h.v[i];
		if (!system_owned(h->key, h->klen))
			set_add(a, &sl, h->key, h->val, h->vlen);
	}
	send_headers_fast(s, true, &sl, true, s->res.targets);
}

/* Decides on |body| (the buffered body, or the single body message itself)
 * and answers. */
static void decide_and_answer(ep_stream *s, const char *body, size_t body_len,
			      bool trailers_follow)
{
	xp_ep *ep = s->ep;
	const store_snapshot *snap = store_acquire(ep->store);
	sched_request rq;
	fill_request(s, &rq, body, body_len);
	/* Plugin timings for the metrics; the score table only for the debug
	 * line (it costs arena memory per request). */
	bool debug = log_enabled(LOG_DEBUG);
	sched_trace tr;
	if (ep->o.obs || debug) {
		tr.want_table = debug;
		rq.trace = &tr;
	}

	/* The snapshot (and the sched it carries) stays held until the stream
	 * ends: sched_request_done needs the same sched. */
	s->snap = snap;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	sched_decide(snap->sched, snap, &rq, &s->mem, &s->res);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s->scheduled = true;
	adm_request_decided(ep->o.obs, &s->m, snap, &rq, &s->res,
			    (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000LL +
				    (t1.tv_nsec - t0.tv_nsec));
	if (debug)
		adm_log_decision(&rq, &s->res);
	if (s->res.err != SCHED_OK) {
		send_immediate_quiet(s, s->res.err, s->res.error);
		return;
	}
	s->decided = true;
	s->req_decided = true;

	arena *a = &ep->scratch;
	char clen[24];
	snprintf(clen, sizeof(clen), "%zu", s->res.body_len);

	if (s->buffered) {
		/* BUFFERED (spec §2.11): headers were answered already; the body
		 * response carries the destination, Content-Length and the body. */
		setlist sl = {0};
		set_add(a, &sl, H_DEST, s->res.targets, strlen(s->res.targets));
		if (s->res.body_len > 0)
			set_add(a, &sl, "Content-Length", clen, strlen(clen));
		PbStruct *md = dest_metadata(a, s->res.targets);
		CommonResponse *cr = new_common(a);
		cr->header_mutation = mutation(a, &sl);
		BodyMutation *bm =
			ANEW(a, BodyMutation, ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__INIT);
		bm->mutation_case = ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__MUTATION_BODY;
		bm->body.data = (uint8_t *)s->res.body;
		bm->body.len = s->res.body_len;
		cr->body_mutation = bm;
		BodyResponse *br =
			ANEW(a, BodyResponse, ENVOY__SERVICE__EXT_PROC__V3__BODY_RESPONSE__INIT);
		br->response = cr;
		PResp *r = new_resp(a);
		r->response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_BODY;
		r->request_body = br;
		r->dynamic_metadata = md;
		send_resp(s, r);
		arena_reset(a);
		return;
	}

	/* FULL_DUPLEX_STREAMED (spec §2.7 step 4): the headers response with the
	 * destination, then the body in chunks. */
	send_dest_headers(s, s->res.body_len > 0 ? clen : NULL);
	/* No arena_reset here: the body may live in the scratch arena (the
	 * decoded message it came in). */
	send_body_chunks(s, true, s->res.body, s->res.body_len, !trailers_follow);
	/* res.body may point into that message: not used after this. */
	s->res.body = NULL;
}

static void on_request_headers(ep_stream *s, const HttpHeaders *hh)
{
	xp_ep *ep = s->ep;
	if (s->req_headers_done)
		return;
	s->req_headers_done = true;
	const HeaderMap *hm = hh ? hh->headers : NULL;
	bool eos = hh && hh->end_of_stream;
	arena *a = &ep->scratch;
	adm_request_received(&s->m);

	if (eos) {
		/* No body (e.g. GET): a random endpoint at once (spec §2.7 step 1). */
		bool have_id = false;
		for (size_t i = 0; hm && i < hm->n_headers; i++)
			if (hm->headers[i] && hm->headers[i]->key &&
			    strcasecmp(hm->headers[i]->key, "x-request-id") == 0)
				have_id = true;
		s->snap = store_acquire(ep->store);
		sched_pick_any(s->snap, &s->mem, &s->res);
		if (s->res.err != SCHED_OK) {
			send_immediate(s, s->res.err, s->res.error);
			return;
		}
		adm_request_decided(ep->o.obs, &s->m, s->snap, NULL, &s->res, 0);
		s->decided = true;
		s->req_decided = true;
		s->req_body_eos = true;
		setlist sl = {0};
		set_add(a, &sl, H_DEST, s->res.targets, strlen(s->res.targets));
		char id[37];
		if (!have_id) {
			rand_uuid4(id);
			set_add(a, &sl, "x-request-id", id, 36);
		}
		send_headers_fast(s, true, &sl, true, s->res.targets);
		return;
	}

	for (size_t i = 0; hm && i < hm->n_headers; i++) {
		const HeaderValue *h = hm->headers[i];
		if (!h || !h->key)
			continue;
		const char *v;
		size_t vl;
		header_value(h, &v, &vl);
		if (hdrs_set(&s->mem, &s->req_h, h->key, v, vl, ep->o.max_headers) < 0) {
			send_immediate(s, SCHED_BAD_REQUEST,
				       "inference error: BadRequest - too many request headers");
			return;
		}
	}
	if (!hdrs_find(&s->req_h, "x-request-id")) {
		char id[37];
		rand_uuid4(id);
		hdrs_set(&s->mem, &s->req_h, "x-request-id", id, 36, ep->o.max_headers + 1);
	}
	if (s->buffered) {
		/* BUFFERED: Envoy waits for this answer before sending the body. */
		send_headers_fast(s, true, NULL, true, NULL);
	}
}

static void body_too_big(ep_stream *s)
{
	char msg[160];
	snprintf(msg, sizeof(msg), "inference error: BadRequest - request body exceeds %zu bytes",
		 s->ep->o.max_body_bytes);
	send_immediate(s, SCHED_BAD_REQUEST, msg);
}

/* Content-length of the request, when it had a valid one. */
static bool request_clen(const ep_stream *s, size_t *out)
{
	sched_str cl = hval(&s->req_h, "content-length");
	size_t v = 0;
	if (!cl.p || !cl.len || cl.len > 19)
		return false;
	for (size_t i = 0; i < cl.len; i++) {
		if (cl.p[i] < '0' || cl.p[i] > '9')
			return false;
		v = v * 10 + (size_t)(cl.p[i] - '0');
	}
	*out = v;
	return true;
}

/* A body in several messages: one buffer of the announced content-length
 * (within the limit) instead of doubling it as the chunks come. */
static void body_presize(ep_stream *s)
{
	size_t want;
	if (!request_clen(s, &want))
		return;
	/* Past PRESIZE_MAX the buffer grows with what actually arrives: an
	 * announced length reserves no more than that. */
	if (want <= s->body.cap || want > s->ep->o.max_body_bytes || want > PRESIZE_MAX)
		return;
	char *q = realloc(s->body.p, want);
	if (q) {
		s->body.p = q;
		s->body.cap = want;
	}
}


/* ---- early pick -------------------------------------------------------- */

/* With FULL_DUPLEX_STREAMED and a body in several messages, the request
 * headers are answered as soon as the scan (sched/early.h) knows what the
 * scheduler reads: the model, and the prompt up to the prefix-cache
 * scorer's budget. The body received so far follows with the model
 * rewritten; every later message passes straight through. Nothing of the
 * body is kept after that but the scan's state.
 *
 * Errors after the early answer: the scan goes on over every message, and
 * when the body turns out invalid (Go's syntax error as it happens, the
 * openai-parser's validation and "model not found" at the end, exactly the
 * full path's texts) the stream ends with that 400 ImmediateResponse
 * instead of the rest of the body. Envoy handles an ImmediateResponse at any
 * point of the stream the same way: Filter::onReceiveMessage
 * (source/extensions/filters/http/ext_proc/ext_proc.cc, kImmediateResponse)
 * closes the ext_proc stream and calls sendLocalReply, which resets the
 * upstream request still being sent, so the model server never gets the
 * whole invalid body. A second top-level "model" member after the pick is
 * refused the same way (the pick and the rewrite were for the first). */

static void early_fail(ep_stream *s, const char *text)
{
	s->res.err = SCHED_BAD_REQUEST;
	snprintf(s->res.error, sizeof(s->res.error), "%s", text);
	sched_request rq = {.trace = s->early_tr};
	adm_request_decided(s->ep->o.obs, &s->m, s->snap, &rq, &s->res, s->early_ns);
	s->req_body_eos = true;
	send_immediate(s, SCHED_BAD_REQUEST, s->res.error);
}

/* Tries to decide on what s->body holds so far. */
static void early_try(ep_stream *s)
{
	xp_ep *ep = s->ep;
	if (s->es.failed || !s->es.model.done)
		return;
	const store_snapshot *snap = store_acquire(ep->store);
	size_t need;
	body_req facts;
	if (sched_early_need(snap->sched, snap, s->es.api, &need) < 0 ||
	    !early_facts(&s->es, s->body.p, need, &ep->scratch, &facts)) {
		store_release(snap);
		return;
	}
	size_t clen = 0;
	bool have_clen = request_clen(s, &clen);
	sched_request rq;
	fill_request(s, &rq, s->body.p, have_clen ? clen : s->body.len);
	bool debug = log_enabled(LOG_DEBUG);
	if (ep->o.obs || debug) {
		s->early_tr = must(arena_alloc(&s->mem, sizeof(*s->early_tr)));
		s->early_tr->want_table = debug;
		rq.trace = s->early_tr;
	}
	s->snap = snap;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	sched_decide_early(snap->sched, snap, &rq, &facts, &s->mem, &s->res);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s->scheduled = true;
	s->early_ns = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	if (debug)
		adm_log_decision(&rq, &s->res);
	if (s->res.err != SCHED_OK) {
		/* As the full path would: errors that do not depend on the rest of
		 * the body (no candidates, shedding, scheduling). */
		adm_request_decided(ep->o.obs, &s->m, snap, &rq, &s->res, s->early_ns);
		s->req_body_eos = true;
		send_immediate_quiet(s, s->res.err, s->res.error);
		return;
	}
	s->decided = true;
	s->req_decided = true;
	s->early_sent = true;
	s->early_models = s->es.n_model;

	const char *out = s->body.p;
	size_t outlen = s->body.len;
	if (s->res.target_model.len != s->res.incoming_model.len ||
	    memcmp(s->res.target_model.p, s->res.incoming_model.p, s->res.target_model.len) != 0) {
		if (body_rewrite_model(s->body.p, s->body.len, &facts.model, s->res.target_model.p,
				       s->res.target_model.len, &ep->scratch, &out, &outlen) < 0) {
			early_fail(s, "inference error: Internal - Error marshalling request body");
			return;
		}
	}
	s->early_total = s->body.len;
	s->early_fwd = outlen;
	/* The announced length, changed by what the rewrite changed; without
	 * one Envoy streams the body chunked, and none is invented. */
	char cl[24];
	bool send_cl = have_clen && clen + outlen >= s->body.len;
	if (send_cl)
		snprintf(cl, sizeof(cl), "%zu", clen + outlen - s->body.len);
	send_dest_headers(s, send_cl ? cl : NULL);
	send_body_chunks(s, true, out, outlen, false);
	buf_done(&s->body);
}

/* The body of an early-answered request ended (its last message, or the
 * trailers): the final checks, then the deferred request metrics. Returns
 * false when the stream ended with an error. */
static bool early_end(ep_stream *s)
{
	char msg[448], text[512];
	bool checked, model_ok;
	s->req_body_eos = true;
	if (early_finish(&s->es, &checked, &model_ok, msg, sizeof(msg)) < 0) {
		snprintf(text, sizeof(text), "inference error: BadRequest - %s", msg);
		early_fail(s, text);
		return false;
	}
	if (!model_ok) {
		early_fail(s, "inference error: BadRequest - model not found in request body");
		return false;
	}
	if (s->es.n_model != s->early_models) {
		early_fail(s, "inference error: BadRequest - model appears again in the request "
			      "body after the endpoint was picked (--early-pick)");
		return false;
	}
	if (!checked)
		ulog(LOG_VERBOSE, "early pick: body structure over the skeleton bound, only its "
				  "syntax was checked", NULL);
	s->res.stream = s->es.stream;
	sched_early_body_done(s->snap->sched, &s->res, s->early_fwd);
	sched_request rq = {.trace = s->early_tr};
	adm_request_decided(s->ep->o.obs, &s->m, s->snap, &rq, &s->res, s->early_ns);
	return true;
}

/* A body message after the early answer: scanned, then passed through. */
static void early_pass(ep_stream *s, const HttpBody *b)
{
	const char *p = b && b->body.len ? (const char *)b->body.data : "";
	size_t len = b ? b->body.len : 0;
	bool eos = b && b->end_of_stream;
	if (len > s->ep->o.max_body_bytes - s->early_total) {
		char msg[160];
		snprintf(msg, sizeof(msg),
			 "inference error: BadRequest - request body exceeds %zu bytes",
			 s->ep->o.max_body_bytes);
		early_fail(s, msg);
		return;
	}
	s->early_total += len;
	s->early_fwd += len;
	if (len && early_feed(&s->es, p, len) < 0) {
		char goerr[128], text[256];
		early_error(&s->es, goerr, sizeof(goerr));
		snprintf(text, sizeof(text),
			 "inference error: BadRequest - error unmarshaling request bodyMap: %s",
			 goerr);
		early_fail(s, text);
		return;
	}
	if (eos && !early_end(s))
		return;
	if (len || eos)
		send_body_chunks(s, true, p, len, eos);
}

static void on_request_body(ep_stream *s, const HttpBody *b)
{
	if (!s->req_headers_done || s->req_body_eos)
		return; /* duplicate end-of-stream chunks are ignored (envoy#46237) */
	if (s->early_sent) {
		early_pass(s, b);
		return;
	}
	bool last = (b && b->end_of_stream) || s->buffered;
	if (last && !s->body.len) {
		/* The whole body in one message (the common case up to Envoy's
		 * chunk size): decide on the message's bytes, no copy. */
		size_t len = b ? b->body.len : 0;
		if (len > s->ep->o.max_body_bytes) {
			body_too_big(s);
			return;
		}
		s->req_body_eos = true;
		decide_and_answer(s, len ? (const char *)b->body.data : "", len, false);
		return;
	}
	if (b && b->body.len && !s->body.len) {
		body_presize(s);
		s->early_scanning = xp_early_pick && !s->buffered;
		if (s->early_scanning) {
			sched_str path = req_path(s);
			early_init(&s->es, sched_api_from_path(path.p, path.len));
		}
	}
	size_t old = s->body.len;
	if (b && b->body.len &&
	    buf_append(&s->body, b->body.data, b->body.len, s->ep->o.max_body_bytes) < 0) {
		body_too_big(s);
		return;
	}
	/* In BUFFERED mode the single body message is the whole body. */
	if (last) {
		s->req_body_eos = true;
		decide_and_answer(s, s->body.p, s->body.len, false);
		buf_done(&s->body);
		return;
	}
	/* A scan that fails stops: the full path answers the error at the end. */
	if (s->early_scanning && s->body.len > old &&
	    early_feed(&s->es, s->body.p + old, s->body.len - old) == 0)
		early_try(s);
}

static void on_request_trailers(ep_stream *s)
{
	if (!s->req_headers_done)
		return;
	if (s->early_sent && !s->req_body_eos && !early_end(s))
		return;
	if (!s->req_decided) {
		/* With trailers the last body chunk has no end_of_stream: the body is
		 * complete now. Body responses keep end_of_stream false, then the
		 * trailers response follows, keeping headers -> body -> trailers. */
		s->req_body_eos = true;
		decide_and_answer(s, s->body.p, s->body.len, true);
		buf_done(&s->body);
		if (s->failed)
			return;
	}
	send_trailers_resp(s, true);
}

/* ---- response direction ------------------------------------------------ */

typedef struct resp_hdr_ctx {
	arena *a;
	setlist *sl;
} resp_hdr_ctx;

static void add_resp_header(void *ctx, const char *name, const char *value, size_t len)
{
	resp_hdr_ctx *c = ctx;
	set_add(c->a, c->sl, must(arena_strdup(c->a, name)), must(arena_strndup(c->a, value, len)),
		len);
}

static void on_response_headers(ep_stream *s, const HttpHeaders *hh)
{
	if (s->resp_headers_done)
		return;
	s->resp_headers_done = true;
	arena *a = &s->ep->scratch;
	const HeaderMap *hm = hh ? hh->headers : NULL;
	setlist sl = {0};
	set_add(a, &sl, "x-went-into-resp-headers", "true", 4);
	for (size_t i = 0; hm && i < hm->n_headers; i++) {
		const HeaderValue *h = hm->headers[i];
		if (!h || !h->key)
			continue;
		const char *v;
		size_t vl;
		header_value(h, &v, &vl);
		if (strcmp(h->key, "content-type") == 0 && memmem(v, vl, "text/event-stream", 17))
			s->resp_streaming = true;
		if (!strcmp(h->key, ":status") || !strcmp(h->key, "status"))
			adm_response_status(&s->m, v, vl);
		if (!system_owned(h->key, strlen(h->key)))
			set_add(a, &sl, h->key, v, vl);
	}
	if (s->decided && s->res.stream)
		s->resp_streaming = true;
	resp_hdr_ctx c = {a, &sl};
	sched_str served = {s->served, s->served_len};
	/* A stream that reached the response without a decision (the gateway
	 * routed it elsewhere) uses the sched in force now. */
	const store_snapshot *snap = s->snap ? s->snap : store_acquire(s->ep->store);
	sched_response_headers(snap->sched, s->have_lb, s->have_served ? &served : NULL,
			       add_resp_header, &c);
	if (snap != s->snap)
		store_release(snap);
	send_headers_fast(s, false, &sl, false, NULL);
	if (hh && hh->end_of_stream)
		s->resp_body_eos = true;
}

static sched_str rewrite_back(ep_stream *s, const char *p, size_t len)
{
	if (!s->decided || !s->res.target_model.p || !s->res.incoming_model.p ||
	    !s->res.target_model.len || !s->res.incoming_model.len ||
	    (s->res.target_model.len == s->res.incoming_model.len &&
	     memcmp(s->res.target_model.p, s->res.incoming_model.p, s->res.target_model.len) == 0))
		return (sched_str){p, len};
	return sched_rewrite_back(p, len, s->res.target_model, s->res.incoming_model,
				  &s->ep->scratch);
}

static void answer_buffered_response(ep_stream *s, const char *p, size_t len)
{
	/* BUFFERED response mode: replace the body only when it changed. */
	arena *a = &s->ep->scratch;
	sched_str out = rewrite_back(s, p, len);
	CommonResponse *cr = new_common(a);
	if (out.p != p) {
		BodyMutation *bm =
			ANEW(a, BodyMutation, ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__INIT);
		bm->mutation_case = ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__MUTATION_BODY;
		bm->body.data = (uint8_t *)out.p;
		bm->body.len = out.len;
		cr->body_mutation = bm;
	}
	BodyResponse *br = ANEW(a, BodyResponse, ENVOY__SERVICE__EXT_PROC__V3__BODY_RESPONSE__INIT);
	br->response = cr;
	PResp *r = new_resp(a);
	r->response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_BODY;
	r->response_body = br;
	send_resp(s, r);
}

/* The response is complete (once per stream): latency, size and tokens. */
static void response_done(ep_stream *s)
{
	adm_response_done(s->ep->o.obs, &s->m, &s->res, &s->usage);
}

/* The whole response body is |p|: the buffered one, or the only message. */
static void finish_response_body_at(ep_stream *s, const char *p, size_t len, bool eos)
{
	if (!s->res.raw_payload)
		sched_usage_parse_json(p, len, &s->usage);
	response_done(s);
	if (s->resp_buffered) {
		answer_buffered_response(s, p, len);
	} else {
		sched_str out = rewrite_back(s, p, len);
		send_body_chunks(s, false, out.p, out.len, eos);
	}
}

static void finish_response_body(ep_stream *s, bool eos)
{
	finish_response_body_at(s, s->resp_body.p ? s->resp_body.p : "", s->resp_body.len, eos);
	buf_done(&s->resp_body);
}

static void on_response_body(ep_stream *s, const HttpBody *b)
{
	if (s->resp_body_eos)
		return;
	const char *p = b && b->body.len ? (const char *)b->body.data : "";
	size_t len = b ? b->body.len : 0;
	bool eos = b && b->end_of_stream;
	adm_response_bytes(&s->m, len);
	if (s->resp_streaming && !s->resp_buffered) {
		/* SSE: every chunk answered at once (spec §2.9). */
		if (!s->res.raw_payload)
			sched_usage_parse_sse(p, len, &s->usage);
		sched_str out = rewrite_back(s, p, len);
		send_body_chunks(s, false, out.p, out.len, eos);
		if (eos) {
			s->resp_body_eos = true;
			response_done(s);
		}
		return;
	}
	if ((eos || s->resp_buffered) && !s->resp_body.len && len <= s->ep->o.max_body_bytes) {
		/* The whole body in one message: answered from it, no copy. */
		s->resp_body_eos = true;
		finish_response_body_at(s, p, len, true);
		return;
	}
	if (len && buf_append(&s->resp_body, p, len, s->ep->o.max_body_bytes) < 0) {
		/* Too big to buffer: pass what we have and the rest through as is. */
		ulog(LOG_WARN, "response body over the buffering limit: forwarded without rewrite",
		     NULL);
		send_body_chunks(s, false, s->resp_body.p ? s->resp_body.p : "", s->resp_body.len,
				 false);
		buf_free(&s->resp_body);
		s->resp_streaming = true;
		send_body_chunks(s, false, p, len, eos);
		if (eos) {
			s->resp_body_eos = true;
			response_done(s);
		}
		return;
	}
	if (eos || s->resp_buffered) {
		s->resp_body_eos = true;
		finish_response_body(s, eos || s->resp_buffered);
	}
}

static void on_response_trailers(ep_stream *s)
{
	/* gRPC-style responses: finish the body with end_of_stream false, then an
	 * empty TrailersResponse (spec §2.9). */
	if (!s->resp_body_eos) {
		s->resp_body_eos = true;
		if (!s->resp_streaming || s->resp_body.len)
			finish_response_body(s, false);
	}
	response_done(s);
	send_trailers_resp(s, false);
}

/* ---- stream callbacks -------------------------------------------------- */

static void *ep_open(xp_stream *st, void *method_ctx)
{
	xp_ep *ep = method_ctx;
	ep_stream *s = ep->free_streams;
	if (s) {
		/* A cached stream: everything starts over but its memory. */
		ep->free_streams = s->next_free;
		ep->n_free--;
		arena mem = s->mem;
		buf body = s->body, resp_body = s->resp_body;
		char *skel = s->es.skel;
		size_t scap = s->es.scap;
		memset(s, 0, sizeof(*s));
		s->mem = mem;
		s->body = body;
		s->resp_body = resp_body;
		s->es.skel = skel;
		s->es.scap = scap;
		arena_reset(&s->mem);
	} else {
		s = calloc(1, sizeof(*s));
		if (!s)
			return NULL;
		/* Room for the request headers, the decision and the trace of a
		 * usual request in the first block. */
		arena_init(&s->mem, 16384);
	}
	s->ep = ep;
	s->st = st;
	adm_stream_open(ep->o.obs, &s->m);
	return s;
}

static void ep_destroy(ep_stream *s)
{
	buf_free(&s->body);
	buf_free(&s->resp_body);
	early_free(&s->es);
	arena_free(&s->mem);
	free(s);
}

static void ep_message(xp_stream *st, void *ctx, const uint8_t *msg, size_t len)
{
	ep_stream *s = ctx;
	xp_ep *ep = s->ep;
	if (s->failed)
		return;
	/* A body message is decoded by hand, its body left in the gRPC message
	 * (protobuf-c would copy it); anything else goes through protobuf-c. */
	xp_pb_body pb;
	HttpBody hb = ENVOY__SERVICE__EXT_PROC__V3__HTTP_BODY__INIT;
	PReq body_rq = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__INIT, *rq = &body_rq;
	if (xp_pb_body_decode(msg, len, &pb)) {
		hb.body.data = (uint8_t *)pb.body;
		hb.body.len = pb.len;
		hb.end_of_stream = pb.end_of_stream;
		hb.end_of_stream_without_message = pb.end_of_stream_without_message;
		hb.grpc_message_compressed = pb.grpc_message_compressed;
		/* The oneof's case values are the field numbers (4, 5). */
		body_rq.request_case = pb.field;
		*(pb.field == 4 ? &body_rq.request_body : &body_rq.response_body) = &hb;
	} else {
		rq = envoy__service__ext_proc__v3__processing_request__unpack(&ep->pb_alloc, len,
									      msg);
	}
	if (!rq) {
		ulog(LOG_VERBOSE, "malformed ProcessingRequest: stream failed", NULL);
		s->failed = true;
		xp_stream_finish(st, XP_GRPC_INVALID_ARGUMENT,
				 "kepp: cannot decode envoy.service.ext_proc.v3.ProcessingRequest");
		arena_reset(&ep->scratch);
		return;
	}
	if (rq->protocol_config) {
		s->buffered = rq->protocol_config->request_body_mode == BODY_MODE_BUFFERED;
		s->resp_buffered = rq->protocol_config->response_body_mode == BODY_MODE_BUFFERED;
	}
	read_metadata(s, rq->metadata_context);
	switch (rq->request_case) {
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_HEADERS:
		on_request_headers(s, rq->request_headers);
		break;
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_BODY:
		on_request_body(s, rq->request_body);
		break;
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_TRAILERS:
		on_request_trailers(s);
		break;
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_HEADERS:
		on_response_headers(s, rq->response_headers);
		break;
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_BODY:
		on_response_body(s, rq->response_body);
		break;
	case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_TRAILERS:
		on_response_trailers(s);
		break;
	default:
		/* A message with no phase set carries nothing to answer. */
		break;
	}
	arena_reset(&ep->scratch);
}

static void ep_half_close(xp_stream *st, void *ctx)
{
	(void)ctx;
	xp_stream_finish(st, XP_GRPC_OK, NULL);
}

static void ep_close(xp_stream *st, void *ctx, bool cancelled)
{
	(void)st;
	ep_stream *s = ctx;
	if (cancelled)
		ulog(LOG_DEBUG, "ext_proc stream cancelled", NULL);
	adm_stream_close(s->ep->o.obs, &s->m, &s->res);
	if (s->scheduled)
		sched_request_done(s->snap->sched, &s->res);
	if (s->snap)
		store_release(s->snap);
	xp_ep *ep = s->ep;
	if (ep->n_free >= EP_CACHE) {
		ep_destroy(s);
		return;
	}
	buf_done(&s->body);
	buf_done(&s->resp_body);
	if (s->es.scap > BUF_KEEP_BYTES / 4)
		early_free(&s->es);
	s->next_free = ep->free_streams;
	ep->free_streams = s;
	ep->n_free++;
}

xp_ep *xp_ep_new(store *st, const xp_ep_opts *o)
{
	xp_ep *ep = calloc(1, sizeof(*ep));
	if (!ep)
		return NULL;
	ep->store = st;
	ep->o = *o;
	if (!ep->o.max_headers)
		ep->o.max_headers = 1024;
	arena_init(&ep->scratch, 64 * 1024);
	ep->pb_alloc.alloc = pb_alloc;
	ep->pb_alloc.free = pb_free;
	ep->pb_alloc.allocator_data = &ep->scratch;
	return ep;
}

void xp_ep_free(xp_ep *ep)
{
	if (!ep)
		return;
	while (ep->free_streams) {
		ep_stream *s = ep->free_streams;
		ep->free_streams = s->next_free;
		ep_destroy(s);
	}
	arena_free(&ep->scratch);
	free(ep);
}

xp_method xp_ep_method(xp_ep *ep)
{
	xp_method m = {
		.path = XP_EXTPROC_METHOD,
		.open = ep_open,
		.message = ep_message,
		.half_close = ep_half_close,
		.close = ep_close,
		.method_ctx = ep,
	};
	return m;
}
