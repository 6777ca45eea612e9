/* The ext_proc per-stream state machine (user/extproc/extproc.c) driven
 * through its xp_method callbacks, with this file standing in for the HTTP/2
 * layer (every xp_stream_* function of grpc.h), so no socket
 * is involved. The store holds a pool of three endpoints with an
 * InferenceModelRewrite, an InferenceObjective and an InferenceModel.
 *
 * Input: [setup] then records [op][flags][md][len lo][len hi][payload]:
 *   op % 8: 0 request headers, 1 request body, 2 request trailers,
 *           3 response headers, 4 response body, 5 response trailers,
 *           6 payload is a raw ProcessingRequest, 7 the client half-closes.
 *   flags:  bit 0 end_of_stream, bit 1 header values in raw_value.
 *   md:     bit 0 protocol_config (bit 1 request BUFFERED, bit 2 response
 *           BUFFERED, else FULL_DUPLEX_STREAMED), bit 3 a subset hint (form in
 *           bits 4-5), bit 6 envoy.lb with a served endpoint, bit 7 without.
 *   Header payloads are "name=value" lines.
 *   setup:  bits 0-1 scheduler (default, conformance plugins, passthrough
 *           parser), bit 2 a 4 KiB body limit, bit 3 at most 8 headers,
 *           bit 4 --disable-endpoint-subset-filter, bit 5 RST_STREAM at the end.
 *
 * Every answer must decode as a ProcessingResponse and follow the protocol:
 * nothing after the stream is finished or after an ImmediateResponse, body
 * chunks of at most XP_BODY_CHUNK bytes, at most one end_of_stream body
 * chunk per direction and nothing in that direction after it, and
 * destinations that are endpoints of the pool. When the stream is closed it
 * must have given back every snapshot reference it took. */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "envoy/service/ext_proc/v3/external_processor.pb-c.h"
#include "extproc/extproc.h"
#include "fuzz.h"
#include "store/manifest.h"
#include "util/log.h"
#include "util/rand.h"

typedef Envoy__Service__ExtProc__V3__ProcessingRequest PReq;
typedef Envoy__Service__ExtProc__V3__ProcessingResponse PResp;
typedef Envoy__Service__ExtProc__V3__CommonResponse Common;
typedef Envoy__Config__Core__V3__HeaderValue HeaderValue;
typedef Google__Protobuf__Value PbValue;
typedef Google__Protobuf__Struct PbStruct;
typedef Google__Protobuf__Struct__FieldsEntry PbField;

#define RC(x) ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_##x
#define SC(x) ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_##x
#define MODE(x) ENVOY__EXTENSIONS__FILTERS__HTTP__EXT_PROC__V3__PROCESSING_MODE__BODY_SEND_MODE__##x

static const char manifests[] =
	"apiVersion: inference.networking.k8s.io/v1\n"
	"kind: InferencePool\n"
	"metadata: {name: pool, namespace: default}\n"
	"spec:\n"
	"  selector: {matchLabels: {app: m}}\n"
	"  targetPorts: [{number: 8000}]\n"
	"  endpointPickerRef: {name: epp, port: {number: 9002}}\n"
	"---\n"
	"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
	"kind: InferenceModelRewrite\n"
	"metadata: {name: rw, namespace: default}\n"
	"spec:\n"
	"  poolRef: {group: inference.networking.k8s.io, name: pool}\n"
	"  rules:\n"
	"  - matches: [{model: {type: Exact, value: food-review}}]\n"
	"    targets: [{modelRewrite: food-review-1, weight: 90}, "
	"{modelRewrite: food-review-2, weight: 10}]\n"
	"---\n"
	"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
	"kind: InferenceObjective\n"
	"metadata: {name: batch, namespace: default}\n"
	"spec: {priority: -1, poolRef: {group: inference.networking.k8s.io, name: pool}}\n"
	"---\n"
	"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
	"kind: InferenceModel\n"
	"metadata: {name: chat, namespace: default}\n"
	"spec:\n"
	"  modelName: chat\n"
	"  criticality: Critical\n"
	"  poolRef: {group: inference.networking.k8s.io, name: pool}\n"
	"  targetModels: [{name: chat-v2, weight: 1}]\n";

static const char conformance[] =
	"apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
	"kind: EndpointPickerConfig\n"
	"plugins:\n"
	"- type: header-based-testing-filter\n"
	"- type: destination-endpoint-served-verifier\n"
	"- type: session-affinity-scorer\n"
	"schedulingProfiles:\n"
	"- name: conformance-profile\n"
	"  plugins:\n"
	"  - pluginRef: header-based-testing-filter\n"
	"  - pluginRef: session-affinity-scorer\n";

static const char passthrough[] =
	"apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
	"kind: EndpointPickerConfig\n"
	"plugins:\n"
	"- type: passthrough-parser\n"
	"- type: random-picker\n"
	"schedulingProfiles:\n"
	"- name: default\n"
	"  plugins:\n"
	"  - pluginRef: random-picker\n"
	"parser: {pluginRef: passthrough-parser}\n";

static store *stores[3];
static const store_snapshot *pool_snap;
static xp_ep *eps[3][8];
static unsigned base_refs[3]; /* references on each store's snapshot between streams */

/* ---- the stand-in for h2.c ----------------------------------------------- */

struct xp_stream {
	bool finished;
	bool immediate;     /* an ImmediateResponse went out */
	bool eos[2];        /* an end_of_stream body chunk went out: request, response */
};

static void check_dest(const char *v, size_t len)
{
	FUZZ_CHECK(len > 0);
	const char *p = v, *end = v + len;
	while (p <= end) {
		const char *c = memchr(p, ',', (size_t)(end - p));
		size_t n = c ? (size_t)(c - p) : (size_t)(end - p);
		bool found = false;
		for (uint32_t i = 0; i < pool_snap->n_endpoints; i++)
			if (strlen(pool_snap->endpoints[i].addr) == n &&
			    !memcmp(pool_snap->endpoints[i].addr, p, n))
				found = true;
		FUZZ_CHECK(found);
		p += n + 1;
	}
}

static void check_common(xp_stream *s, const Common *c, int dir)
{
	if (!c)
		return;
	if (c->header_mutation)
		for (size_t i = 0; i < c->header_mutation->n_set_headers; i++) {
			const HeaderValue *h = c->header_mutation->set_headers[i]->header;
			FUZZ_CHECK(h && h->key);
			if (!strcmp(h->key, "x-gateway-destination-endpoint"))
				check_dest((const char *)h->raw_value.data, h->raw_value.len);
		}
	const Envoy__Service__ExtProc__V3__BodyMutation *bm = c->body_mutation;
	if (bm && bm->mutation_case ==
			  ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__MUTATION_STREAMED_RESPONSE) {
		FUZZ_CHECK(bm->streamed_response->body.len <= XP_BODY_CHUNK);
		FUZZ_CHECK(!s->eos[dir]);
		s->eos[dir] = bm->streamed_response->end_of_stream;
	}
}

int xp_stream_send(xp_stream *s, const uint8_t *msg, size_t len)
{
	FUZZ_CHECK(!s->finished);
	FUZZ_CHECK(!s->immediate);
	PResp *r = envoy__service__ext_proc__v3__processing_response__unpack(NULL, len, msg);
	FUZZ_CHECK(r != NULL);
	switch (r->response_case) {
	case SC(REQUEST_HEADERS):
		check_common(s, r->request_headers->response, 0);
		break;
	case SC(REQUEST_BODY):
		FUZZ_CHECK(!s->eos[0]);
		check_common(s, r->request_body->response, 0);
		break;
	case SC(RESPONSE_HEADERS):
		check_common(s, r->response_headers->response, 1);
		break;
	case SC(RESPONSE_BODY):
		FUZZ_CHECK(!s->eos[1]);
		check_common(s, r->response_body->response, 1);
		break;
	case SC(IMMEDIATE_RESPONSE):
		FUZZ_CHECK(r->immediate_response->status);
		s->immediate = true;
		break;
	case SC(REQUEST_TRAILERS):
	case SC(RESPONSE_TRAILERS):
		break;
	default:
		FUZZ_CHECK(!"a ProcessingResponse without a response");
	}
	envoy__service__ext_proc__v3__processing_response__free_unpacked(r, NULL);
	return 0;
}

int xp_stream_send_packed(xp_stream *s, size_t len, void (*pack)(const void *msg, uint8_t *out),
			  const void *msg)
{
	/* An exact-size buffer: a pack that writes past |len| is caught. */
	uint8_t *out = malloc(len ? len : 1);
	FUZZ_CHECK(out);
	pack(msg, out);
	int r = xp_stream_send(s, out, len);
	free(out);
	return r;
}

void xp_stream_finish(xp_stream *s, int grpc_status, const char *grpc_message)
{
	(void)grpc_status, (void)grpc_message;
	s->finished = true;
}

const char *xp_stream_header(const xp_stream *s, const char *name)
{
	(void)s, (void)name;
	return NULL;
}

/* ---- setup --------------------------------------------------------------- */

static unsigned snap_refs(store *s)
{
	const store_snapshot *snap = store_acquire(s);
	unsigned n = atomic_load(&snap->refs) - 1;
	store_release(snap);
	return n;
}

static sched *sched_from(const char *text)
{
	sched_config *cfg = NULL;
	char err[256];
	if (!text) {
		sched *s = sched_new(NULL, err, sizeof(err));
		FUZZ_CHECK(s);
		return s;
	}
	FUZZ_CHECK(sched_config_parse_text(text, strlen(text), "fuzz", &cfg, err, sizeof(err)) ==
		   0);
	sched *s = sched_new(cfg, err, sizeof(err));
	if (!s)
		fprintf(stderr, "%s\n", err);
	FUZZ_CHECK(s);
	sched_config_free(cfg);
	return s;
}

static void setup(void)
{
	log_set_verbosity(-100);
	int fd = memfd_create("pool.yaml", 0);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(write(fd, manifests, sizeof(manifests) - 1) == (ssize_t)sizeof(manifests) - 1);
	char path[64], err[512];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	store_catalog *c;
	if (store_manifests_load(path, NULL, &c, err, sizeof(err)) < 0)
		fprintf(stderr, "%s\n", err);
	FUZZ_CHECK(c);
	close(fd);
	store_endpoint *e;
	uint32_t n;
	FUZZ_CHECK(store_endpoints_parse("10.0.0.1,10.0.0.2:8000,[fd00::1]:8000", &c->pool, &e, &n,
					 err, sizeof(err)) == 0);
	e[0].m = (store_metrics){.valid = true, .waiting_queue = 1, .kv_usage = 0.5};
	e[1].m = (store_metrics){.valid = true, .waiting_queue = 9, .kv_usage = 0.99};
	/* One store per scheduler: a snapshot carries the sched in force. */
	static const char *const configs[3] = {NULL, conformance, passthrough};
	for (int i = 0; i < 3; i++) {
		stores[i] = store_new();
		FUZZ_CHECK(stores[i]);
		store_snapshot *snap = store_snapshot_new(c, e, n, true);
		FUZZ_CHECK(snap);
		store_snapshot_attach_sched(snap, sched_from(configs[i]), sched_unref);
		store_publish(stores[i], snap);
		for (int j = 0; j < 8; j++) {
			xp_ep_opts o = {
				.max_body_bytes = j & 1 ? 4096 : 1u << 20,
				.max_headers = j & 2 ? 8 : 0,
				.disable_subset = j & 4,
			};
			eps[i][j] = xp_ep_new(stores[i], &o);
			FUZZ_CHECK(eps[i][j]);
		}
	}
	pool_snap = store_acquire(stores[0]); /* kept for the whole run */
	for (int i = 0; i < 3; i++)
		base_refs[i] = snap_refs(stores[i]);
	store_catalog_unref(c);
	free(e);
}

/* ---- messages -------------------------------------------------------------- */

/* Message memory: everything one record builds, freed after packing. */
typedef struct pool {
	void *v[256];
	size_t n;
} pool;

static void *pnew(pool *p, size_t n)
{
	FUZZ_CHECK(p->n < 256);
	void *x = calloc(1, n);
	FUZZ_CHECK(x);
	return p->v[p->n++] = x;
}

static void pfree(pool *p)
{
	while (p->n)
		free(p->v[--p->n]);
}

static Envoy__Config__Core__V3__HeaderMap *header_map(pool *m, const uint8_t *p, size_t n,
						       bool raw)
{
	Envoy__Config__Core__V3__HeaderMap *hm = pnew(m, sizeof(*hm));
	envoy__config__core__v3__header_map__init(hm);
	hm->headers = pnew(m, 64 * sizeof(HeaderValue *));
	const uint8_t *end = p + n;
	while (p < end && hm->n_headers < 64) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const uint8_t *eq = memchr(p, '=', ll);
		size_t kl = eq ? (size_t)(eq - p) : ll;
		HeaderValue *h = pnew(m, sizeof(*h));
		envoy__config__core__v3__header_value__init(h);
		h->key = pnew(m, kl + 1);
		memcpy(h->key, p, kl);
		const uint8_t *v = eq ? eq + 1 : p + ll;
		size_t vl = (size_t)(p + ll - v);
		if (raw) {
			h->raw_value.data = (uint8_t *)v;
			h->raw_value.len = vl;
		} else {
			h->value = pnew(m, vl + 1);
			memcpy(h->value, v, vl);
		}
		hm->headers[hm->n_headers++] = h;
		p += ll + (nl ? 1 : 0);
	}
	return hm;
}

static PbValue *str_value(pool *m, const char *s)
{
	PbValue *v = pnew(m, sizeof(*v));
	google__protobuf__value__init(v);
	v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v->string_value = (char *)s;
	return v;
}

static PbStruct *one_field(pool *m, const char *key, PbValue *v)
{
	PbField *f = pnew(m, sizeof(*f));
	google__protobuf__struct__fields_entry__init(f);
	f->key = (char *)key;
	f->value = v;
	PbStruct *s = pnew(m, sizeof(*s));
	google__protobuf__struct__init(s);
	s->n_fields = 1;
	s->fields = pnew(m, sizeof(PbField *));
	s->fields[0] = f;
	return s;
}

static Envoy__Config__Core__V3__Metadata *metadata(pool *m, uint8_t md)
{
	Envoy__Config__Core__V3__Metadata *meta = pnew(m, sizeof(*meta));
	envoy__config__core__v3__metadata__init(meta);
	meta->filter_metadata = pnew(m, 2 * sizeof(void *));
	if (md & 8) {
		PbValue *v;
		int form = (md >> 4) & 3;
		if (form == 1) {
			v = str_value(m, " 10.0.0.1:8000 , ,[fd00::1]:8000");
		} else if (form == 3) {
			v = str_value(m, "10.9.9.9");
		} else {
			Google__Protobuf__ListValue *l = pnew(m, sizeof(*l));
			google__protobuf__list_value__init(l);
			l->values = pnew(m, 2 * sizeof(PbValue *));
			l->values[l->n_values++] = str_value(m, form ? "10.9.9.9" : "10.0.0.2");
			PbValue *num = pnew(m, sizeof(*num));
			google__protobuf__value__init(num);
			num->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
			num->number_value = 5;
			l->values[l->n_values++] = form ? num : str_value(m, "10.0.0.1:8000");
			v = pnew(m, sizeof(*v));
			google__protobuf__value__init(v);
			v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
			v->list_value = l;
		}
		Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *e = pnew(m, sizeof(*e));
		envoy__config__core__v3__metadata__filter_metadata_entry__init(e);
		e->key = "envoy.lb.subset_hint";
		e->value = one_field(m, "x-gateway-destination-endpoint-subset", v);
		meta->filter_metadata[meta->n_filter_metadata++] = e;
	}
	if (md & 0xc0) {
		Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *e = pnew(m, sizeof(*e));
		envoy__config__core__v3__metadata__filter_metadata_entry__init(e);
		e->key = "envoy.lb";
		e->value = one_field(m, md & 0x40 ? "x-gateway-destination-endpoint-served" : "other",
				     str_value(m, "10.0.0.1:8000"));
		meta->filter_metadata[meta->n_filter_metadata++] = e;
	}
	return meta;
}

/* Builds and packs the message of one record; NULL for op 7. */
static uint8_t *build(uint8_t op, uint8_t flags, uint8_t md, const uint8_t *p, size_t n,
		      size_t *len)
{
	if (op == 6) {
		uint8_t *raw = malloc(n ? n : 1);
		FUZZ_CHECK(raw);
		memcpy(raw, p, n);
		*len = n;
		return raw;
	}
	pool m = {.n = 0};
	PReq *rq = pnew(&m, sizeof(*rq));
	envoy__service__ext_proc__v3__processing_request__init(rq);
	bool eos = flags & 1, raw = flags & 2;
	if (md & 1) {
		Envoy__Service__ExtProc__V3__ProtocolConfiguration *pc = pnew(&m, sizeof(*pc));
		envoy__service__ext_proc__v3__protocol_configuration__init(pc);
		pc->request_body_mode = md & 2 ? MODE(BUFFERED) : MODE(FULL_DUPLEX_STREAMED);
		pc->response_body_mode = md & 4 ? MODE(BUFFERED) : MODE(FULL_DUPLEX_STREAMED);
		rq->protocol_config = pc;
	}
	if (md & 0xc8)
		rq->metadata_context = metadata(&m, md);
	Envoy__Service__ExtProc__V3__HttpHeaders *hh = NULL;
	Envoy__Service__ExtProc__V3__HttpBody *hb = NULL;
	if (op == 0 || op == 3) {
		hh = pnew(&m, sizeof(*hh));
		envoy__service__ext_proc__v3__http_headers__init(hh);
		hh->headers = header_map(&m, p, n, raw);
		hh->end_of_stream = eos;
	} else if (op == 1 || op == 4) {
		hb = pnew(&m, sizeof(*hb));
		envoy__service__ext_proc__v3__http_body__init(hb);
		hb->body.data = (uint8_t *)p;
		hb->body.len = n;
		hb->end_of_stream = eos;
	}
	Envoy__Service__ExtProc__V3__HttpTrailers *ht = NULL;
	if (op == 2 || op == 5) {
		ht = pnew(&m, sizeof(*ht));
		envoy__service__ext_proc__v3__http_trailers__init(ht);
		ht->trailers = header_map(&m, p, n, raw);
	}
	switch (op) {
	case 0: rq->request_case = RC(REQUEST_HEADERS), rq->request_headers = hh; break;
	case 1: rq->request_case = RC(REQUEST_BODY), rq->request_body = hb; break;
	case 2: rq->request_case = RC(REQUEST_TRAILERS), rq->request_trailers = ht; break;
	case 3: rq->request_case = RC(RESPONSE_HEADERS), rq->response_headers = hh; break;
	case 4: rq->request_case = RC(RESPONSE_BODY), rq->response_body = hb; break;
	case 5: rq->request_case = RC(RESPONSE_TRAILERS), rq->response_trailers = ht; break;
	}
	*len = protobuf_c_message_get_packed_size(&rq->base);
	uint8_t *out = malloc(*len ? *len : 1);
	FUZZ_CHECK(out);
	FUZZ_CHECK(protobuf_c_message_pack(&rq->base, out) == *len);
	pfree(&m);
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!stores[0])
		setup();
	rand_seed(1);
	fin f = {data, size};
	uint8_t cfg = fin_u8(&f);
	xp_ep *ep = eps[(cfg & 3) % 3][(cfg >> 2) & 7];
	bool reset = cfg & 0x20;
	xp_method m = xp_ep_method(ep);
	xp_stream s = {0};
	void *ctx = m.open(&s, m.method_ctx);
	FUZZ_CHECK(ctx);
	bool half_closed = false;
	while (f.n && !s.finished && !half_closed) {
		uint8_t op = fin_u8(&f) % 8, flags = fin_u8(&f), md = fin_u8(&f);
		size_t n;
		const uint8_t *p = fin_take(&f, fin_u16(&f), &n);
		if (op == 7) {
			half_closed = true;
			m.half_close(&s, ctx);
			break;
		}
		size_t len;
		uint8_t *msg = build(op, flags, md, p, n, &len);
		m.message(&s, ctx, msg, len);
		free(msg);
	}
	if (!s.finished && !reset && !half_closed)
		m.half_close(&s, ctx);
	m.close(&s, ctx, !s.finished);
	for (int i = 0; i < 3; i++)
		FUZZ_CHECK(snap_refs(stores[i]) == base_refs[i]);
	return 0;
}
