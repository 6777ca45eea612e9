/* The ext_proc protos compiled by protoc-c: every message kepp receives and
 * sends survives a pack/unpack round trip, and a few messages encode to (and
 * decode from) exactly the bytes the official protobuf runtime produces, so a
 * wrong field number or type in proto/ fails here rather than against Envoy.
 *
 * The golden bytes were produced once with Python protobuf 4.21 from the
 * classes `make BUILD=build-proto proto-py` generates (Python is not needed to
 * run this test):
 *
 *   import sys; sys.path.insert(0, "build-proto/py")
 *   from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
 *   from envoy.config.core.v3 import base_pb2 as base
 *   from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
 *
 *   req = ep.ProcessingRequest()
 *   h = req.request_headers
 *   h.headers.headers.add(key=":path", raw_value=b"/v1/completions")
 *   h.headers.headers.add(key="x-request-id", raw_value=b"r-1")
 *   sub = req.metadata_context.filter_metadata["envoy.lb.subset_hint"]
 *   lv = sub.fields["x-gateway-destination-endpoint-subset"].list_value
 *   lv.values.add(string_value="10.0.0.1:8000")
 *   lv.values.add(string_value="10.0.0.2:8000")
 *   req.protocol_config.request_body_mode = pm.ProcessingMode.FULL_DUPLEX_STREAMED
 *   req.protocol_config.response_body_mode = pm.ProcessingMode.FULL_DUPLEX_STREAMED
 *
 *   resp = ep.ProcessingResponse()
 *   c = resp.request_headers.response
 *   c.clear_route_cache = True
 *   c.header_mutation.set_headers.add(header=base.HeaderValue(
 *       key="x-gateway-destination-endpoint", raw_value=b"10.0.0.2:8000"))
 *   c.header_mutation.set_headers.add(header=base.HeaderValue(
 *       key="Content-Length", raw_value=b"76"))
 *   resp.dynamic_metadata.fields["envoy.lb"].struct_value.fields[
 *       "x-gateway-destination-endpoint"].string_value = "10.0.0.2:8000"
 *
 *   imm = ep.ProcessingResponse()
 *   imm.immediate_response.status.code = 503
 *   imm.immediate_response.body = (b"inference error: ServiceUnavailable - "
 *       b"failed to find endpoint candidates for serving the request")
 *
 *   body = ep.ProcessingResponse()
 *   body.request_body.response.body_mutation.streamed_response.body = b'{"model":"m"}'
 *   body.request_body.response.body_mutation.streamed_response.end_of_stream = True
 *
 *   for m in (req, resp, imm, body): print(m.SerializeToString(deterministic=True))
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/service/ext_proc/v3/external_processor.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "harness.h"

typedef Envoy__Service__ExtProc__V3__ProcessingRequest PReq;
typedef Envoy__Service__ExtProc__V3__ProcessingResponse PResp;
typedef Envoy__Service__ExtProc__V3__HttpHeaders HttpHeaders;
typedef Envoy__Service__ExtProc__V3__HttpBody HttpBody;
typedef Envoy__Service__ExtProc__V3__HttpTrailers HttpTrailers;
typedef Envoy__Service__ExtProc__V3__HeadersResponse HeadersResponse;
typedef Envoy__Service__ExtProc__V3__BodyResponse BodyResponse;
typedef Envoy__Service__ExtProc__V3__TrailersResponse TrailersResponse;
typedef Envoy__Service__ExtProc__V3__CommonResponse CommonResponse;
typedef Envoy__Service__ExtProc__V3__HeaderMutation HeaderMutation;
typedef Envoy__Service__ExtProc__V3__BodyMutation BodyMutation;
typedef Envoy__Service__ExtProc__V3__StreamedBodyResponse StreamedBody;
typedef Envoy__Service__ExtProc__V3__ImmediateResponse ImmediateResponse;
typedef Envoy__Service__ExtProc__V3__StreamedImmediateResponse StreamedImmediate;
typedef Envoy__Service__ExtProc__V3__GrpcStatus GrpcStatus;
typedef Envoy__Service__ExtProc__V3__ProtocolConfiguration ProtocolConfig;
typedef Envoy__Service__ExtProc__V3__ProcessingRequest__AttributesEntry AttrEntry;
typedef Envoy__Config__Core__V3__HeaderValue HeaderValue;
typedef Envoy__Config__Core__V3__HeaderValueOption HeaderValueOption;
typedef Envoy__Config__Core__V3__HeaderMap HeaderMap;
typedef Envoy__Config__Core__V3__Metadata Metadata;
typedef Envoy__Config__Core__V3__Metadata__FilterMetadataEntry FilterEntry;
typedef Envoy__Config__Core__V3__Metadata__TypedFilterMetadataEntry TypedFilterEntry;
typedef Envoy__Extensions__Filters__Http__ExtProc__V3__ProcessingMode ProcessingMode;
typedef Envoy__Type__V3__HttpStatus HttpStatus;
typedef Google__Protobuf__Struct PbStruct;
typedef Google__Protobuf__Struct__FieldsEntry PbField;
typedef Google__Protobuf__Value PbValue;
typedef Google__Protobuf__ListValue PbList;
typedef Google__Protobuf__Duration PbDuration;
typedef Google__Protobuf__BoolValue PbBool;
typedef Google__Protobuf__Any PbAny;

#define REQ(x) ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_##x
#define RESP(x) ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_##x
#define MUT(x) ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__MUTATION_##x
#define SIR(x) ENVOY__SERVICE__EXT_PROC__V3__STREAMED_IMMEDIATE_RESPONSE__RESPONSE_##x
#define BODY_MODE(x) ENVOY__EXTENSIONS__FILTERS__HTTP__EXT_PROC__V3__PROCESSING_MODE__BODY_SEND_MODE__##x
#define HDR_MODE(x) ENVOY__EXTENSIONS__FILTERS__HTTP__EXT_PROC__V3__PROCESSING_MODE__HEADER_SEND_MODE__##x
#define KIND(x) GOOGLE__PROTOBUF__VALUE__KIND_##x
#define APPEND(x) ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__##x

static const char GOLD_REQ[] =
	"\x12""1\x0a/\x0a\x18\x0a\x05:path\x1a\x0f/v1/completions\x0a\x13\x0a\x0cx-reques"
	"t-id\x1a\x03r-1Bi\x0ag\x0a\x14""envoy.lb.subset_hint\x12O\x0aM\x0a%x-gateway-des"
	"tination-endpoint-subset\x12$2\x22\x0a\x0f\x1a\x0d""10.0.0.1:8000\x0a\x0f\x1a"
	"\x0d""10.0.0.2:8000Z\x04\x08\x04\x10\x04";
#define GOLD_REQ_LEN 164

static const char GOLD_RESP[] =
	"\x0aQ\x0aO\x12K\x0a""1\x0a/\x0a\x1ex-gateway-destination-endpoint\x1a\x0d""10.0."
	"0.2:8000\x0a\x16\x0a\x14\x0a\x0e""Content-Length\x1a\x02""76(\x01""BC\x0a""A\x0a"
	"\x08""envoy.lb\x12""5*3\x0a""1\x0a\x1ex-gateway-destination-endpoint\x12\x0f\x1a"
	"\x0d""10.0.0.2:8000";
#define GOLD_RESP_LEN 152

static const char GOLD_IMM[] =
	":g\x0a\x03\x08\xf7\x03\x1a`inference error: ServiceUnavailable - failed to find "
	"endpoint candidates for serving the request";
#define GOLD_IMM_LEN 105

static const char GOLD_BODY[] =
	"\x1a\x17\x0a\x15\x1a\x13\x1a\x11\x0a\x0d{\x22model\x22:\x22m\x22}\x10\x01";
#define GOLD_BODY_LEN 25

#define MSG_503 "inference error: ServiceUnavailable - failed to find endpoint candidates " \
		"for serving the request"

/* Packs |m| into a fresh buffer; *len gets the size. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(n ? n : 1);

	*len = protobuf_c_message_pack(m, b);
	CHECK_INT(*len, n);
	return b;
}

static int bytes_eq(const uint8_t *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen) {
		fprintf(stderr, "  length %zu != %zu\n", alen, blen);
		return 0;
	}
	for (size_t i = 0; i < alen; i++) {
		if (a[i] != (uint8_t)b[i]) {
			fprintf(stderr, "  first difference at byte %zu: %02x != %02x\n", i,
				a[i], (uint8_t)b[i]);
			return 0;
		}
	}
	return 1;
}

static int bin_eq(ProtobufCBinaryData d, const char *s)
{
	return d.len == strlen(s) && (d.len == 0 || memcmp(d.data, s, d.len) == 0);
}

static const PbValue *struct_get(const PbStruct *s, const char *key)
{
	for (size_t i = 0; s && i < s->n_fields; i++)
		if (strcmp(s->fields[i]->key, key) == 0)
			return s->fields[i]->value;
	return NULL;
}

static const PbStruct *filter_get(const Metadata *md, const char *ns)
{
	for (size_t i = 0; md && i < md->n_filter_metadata; i++)
		if (strcmp(md->filter_metadata[i]->key, ns) == 0)
			return md->filter_metadata[i]->value;
	return NULL;
}

/* Builders over caller-provided storage, so a test owns no heap but the
 * packed buffers. */
static void hv_set(HeaderValue *hv, const char *k, const char *raw)
{
	envoy__config__core__v3__header_value__init(hv);
	hv->key = (char *)k;
	hv->raw_value.data = (uint8_t *)raw;
	hv->raw_value.len = strlen(raw);
}

static void hvo_set(HeaderValueOption *o, HeaderValue *hv, const char *k, const char *raw)
{
	envoy__config__core__v3__header_value_option__init(o);
	hv_set(hv, k, raw);
	o->header = hv;
}

static void value_str(PbValue *v, const char *s)
{
	google__protobuf__value__init(v);
	v->kind_case = KIND(STRING_VALUE);
	v->string_value = (char *)s;
}

/* The golden request, built field by field the way Envoy would send it. */
static void test_golden_request_encode(void)
{
	HeaderValue hv[2];
	HeaderValue *hvp[2] = { &hv[0], &hv[1] };
	HeaderMap map = ENVOY__CONFIG__CORE__V3__HEADER_MAP__INIT;
	HttpHeaders hh = ENVOY__SERVICE__EXT_PROC__V3__HTTP_HEADERS__INIT;
	PbValue items[2], list_v;
	PbValue *itemp[2] = { &items[0], &items[1] };
	PbList list = GOOGLE__PROTOBUF__LIST_VALUE__INIT;
	PbField field = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	PbField *fieldp = &field;
	PbStruct hint = GOOGLE__PROTOBUF__STRUCT__INIT;
	FilterEntry fe = ENVOY__CONFIG__CORE__V3__METADATA__FILTER_METADATA_ENTRY__INIT;
	FilterEntry *fep = &fe;
	Metadata md = ENVOY__CONFIG__CORE__V3__METADATA__INIT;
	ProtocolConfig pc = ENVOY__SERVICE__EXT_PROC__V3__PROTOCOL_CONFIGURATION__INIT;
	PReq req = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__INIT;
	size_t len;
	uint8_t *b;

	hv_set(&hv[0], ":path", "/v1/completions");
	hv_set(&hv[1], "x-request-id", "r-1");
	map.n_headers = 2;
	map.headers = hvp;
	hh.headers = &map;
	value_str(&items[0], "10.0.0.1:8000");
	value_str(&items[1], "10.0.0.2:8000");
	list.n_values = 2;
	list.values = itemp;
	google__protobuf__value__init(&list_v);
	list_v.kind_case = KIND(LIST_VALUE);
	list_v.list_value = &list;
	field.key = "x-gateway-destination-endpoint-subset";
	field.value = &list_v;
	hint.n_fields = 1;
	hint.fields = &fieldp;
	fe.key = "envoy.lb.subset_hint";
	fe.value = &hint;
	md.n_filter_metadata = 1;
	md.filter_metadata = &fep;
	pc.request_body_mode = BODY_MODE(FULL_DUPLEX_STREAMED);
	pc.response_body_mode = BODY_MODE(FULL_DUPLEX_STREAMED);
	req.request_case = REQ(REQUEST_HEADERS);
	req.request_headers = &hh;
	req.metadata_context = &md;
	req.protocol_config = &pc;

	b = pack(&req.base, &len);
	CHECK(bytes_eq(b, len, GOLD_REQ, GOLD_REQ_LEN));
	free(b);
}

static void test_golden_request_decode(void)
{
	PReq *r = envoy__service__ext_proc__v3__processing_request__unpack(
		NULL, GOLD_REQ_LEN, (const uint8_t *)GOLD_REQ);
	const PbStruct *hint;
	const PbValue *v;

	CHECK(r != NULL);
	if (!r)
		return;
	CHECK_INT(r->request_case, REQ(REQUEST_HEADERS));
	CHECK(r->request_headers->headers != NULL);
	CHECK_INT(r->request_headers->end_of_stream, 0);
	CHECK_INT(r->request_headers->headers->n_headers, 2);
	CHECK_STR(r->request_headers->headers->headers[0]->key, ":path");
	CHECK(bin_eq(r->request_headers->headers->headers[0]->raw_value, "/v1/completions"));
	CHECK_STR(r->request_headers->headers->headers[0]->value, "");
	CHECK_STR(r->request_headers->headers->headers[1]->key, "x-request-id");
	CHECK(bin_eq(r->request_headers->headers->headers[1]->raw_value, "r-1"));
	CHECK(r->protocol_config != NULL);
	CHECK_INT(r->protocol_config->request_body_mode, 4);
	CHECK_INT(r->protocol_config->response_body_mode, 4);
	CHECK_INT(r->protocol_config->send_body_without_waiting_for_header_response, 0);
	hint = filter_get(r->metadata_context, "envoy.lb.subset_hint");
	CHECK(hint != NULL);
	v = struct_get(hint, "x-gateway-destination-endpoint-subset");
	CHECK(v != NULL);
	if (v) {
		CHECK_INT(v->kind_case, KIND(LIST_VALUE));
		CHECK_INT(v->list_value->n_values, 2);
		CHECK_INT(v->list_value->values[0]->kind_case, KIND(STRING_VALUE));
		CHECK_STR(v->list_value->values[0]->string_value, "10.0.0.1:8000");
		CHECK_STR(v->list_value->values[1]->string_value, "10.0.0.2:8000");
	}
	envoy__service__ext_proc__v3__processing_request__free_unpacked(r, NULL);
}

/* kepp's headers answer: destination header, Content-Length, clear_route_cache
 * and envoy.lb dynamic metadata (spec §2.5, §2.7 step 4). */
static void test_golden_response_encode(void)
{
	HeaderValue hv[2];
	HeaderValueOption opt[2];
	HeaderValueOption *optp[2] = { &opt[0], &opt[1] };
	HeaderMutation hm = ENVOY__SERVICE__EXT_PROC__V3__HEADER_MUTATION__INIT;
	CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
	HeadersResponse hr = ENVOY__SERVICE__EXT_PROC__V3__HEADERS_RESPONSE__INIT;
	PbValue dest, lb_v;
	PbField dest_f = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	PbField lb_f = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	PbField *dest_fp = &dest_f, *lb_fp = &lb_f;
	PbStruct lb = GOOGLE__PROTOBUF__STRUCT__INIT;
	PbStruct dm = GOOGLE__PROTOBUF__STRUCT__INIT;
	PResp resp = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
	size_t len;
	uint8_t *b;

	hvo_set(&opt[0], &hv[0], "x-gateway-destination-endpoint", "10.0.0.2:8000");
	hvo_set(&opt[1], &hv[1], "Content-Length", "76");
	hm.n_set_headers = 2;
	hm.set_headers = optp;
	cr.header_mutation = &hm;
	cr.clear_route_cache = 1;
	hr.response = &cr;
	value_str(&dest, "10.0.0.2:8000");
	dest_f.key = "x-gateway-destination-endpoint";
	dest_f.value = &dest;
	lb.n_fields = 1;
	lb.fields = &dest_fp;
	google__protobuf__value__init(&lb_v);
	lb_v.kind_case = KIND(STRUCT_VALUE);
	lb_v.struct_value = &lb;
	lb_f.key = "envoy.lb";
	lb_f.value = &lb_v;
	dm.n_fields = 1;
	dm.fields = &lb_fp;
	resp.response_case = RESP(REQUEST_HEADERS);
	resp.request_headers = &hr;
	resp.dynamic_metadata = &dm;

	b = pack(&resp.base, &len);
	CHECK(bytes_eq(b, len, GOLD_RESP, GOLD_RESP_LEN));
	free(b);
}

static void test_golden_response_decode(void)
{
	PResp *r = envoy__service__ext_proc__v3__processing_response__unpack(
		NULL, GOLD_RESP_LEN, (const uint8_t *)GOLD_RESP);
	const PbValue *lb, *dest;
	HeaderMutation *hm;

	CHECK(r != NULL);
	if (!r)
		return;
	CHECK_INT(r->response_case, RESP(REQUEST_HEADERS));
	CHECK_INT(r->request_headers->response->clear_route_cache, 1);
	CHECK_INT(r->request_headers->response->status, 0);
	CHECK(r->request_headers->response->body_mutation == NULL);
	hm = r->request_headers->response->header_mutation;
	CHECK_INT(hm->n_set_headers, 2);
	CHECK_INT(hm->n_remove_headers, 0);
	CHECK_STR(hm->set_headers[0]->header->key, "x-gateway-destination-endpoint");
	CHECK(bin_eq(hm->set_headers[0]->header->raw_value, "10.0.0.2:8000"));
	CHECK(hm->set_headers[0]->append == NULL);
	CHECK_INT(hm->set_headers[0]->append_action, APPEND(APPEND_IF_EXISTS_OR_ADD));
	CHECK_STR(hm->set_headers[1]->header->key, "Content-Length");
	CHECK(bin_eq(hm->set_headers[1]->header->raw_value, "76"));
	lb = struct_get(r->dynamic_metadata, "envoy.lb");
	CHECK(lb != NULL && lb->kind_case == KIND(STRUCT_VALUE));
	dest = lb ? struct_get(lb->struct_value, "x-gateway-destination-endpoint") : NULL;
	CHECK(dest != NULL && dest->kind_case == KIND(STRING_VALUE));
	if (dest)
		CHECK_STR(dest->string_value, "10.0.0.2:8000");
	envoy__service__ext_proc__v3__processing_response__free_unpacked(r, NULL);
}

static void test_golden_immediate(void)
{
	HttpStatus st = ENVOY__TYPE__V3__HTTP_STATUS__INIT;
	ImmediateResponse ir = ENVOY__SERVICE__EXT_PROC__V3__IMMEDIATE_RESPONSE__INIT;
	PResp resp = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
	PResp *r;
	size_t len;
	uint8_t *b;

	st.code = ENVOY__TYPE__V3__STATUS_CODE__ServiceUnavailable;
	ir.status = &st;
	ir.body.data = (uint8_t *)MSG_503;
	ir.body.len = strlen(MSG_503);
	resp.response_case = RESP(IMMEDIATE_RESPONSE);
	resp.immediate_response = &ir;
	b = pack(&resp.base, &len);
	CHECK(bytes_eq(b, len, GOLD_IMM, GOLD_IMM_LEN));
	free(b);

	r = envoy__service__ext_proc__v3__processing_response__unpack(NULL, GOLD_IMM_LEN,
								    (const uint8_t *)GOLD_IMM);
	CHECK(r != NULL);
	if (!r)
		return;
	CHECK_INT(r->response_case, RESP(IMMEDIATE_RESPONSE));
	CHECK_INT(r->immediate_response->status->code, 503);
	CHECK(bin_eq(r->immediate_response->body, MSG_503));
	CHECK(r->immediate_response->headers == NULL);
	CHECK(r->immediate_response->grpc_status == NULL);
	CHECK_STR(r->immediate_response->details, "");
	envoy__service__ext_proc__v3__processing_response__free_unpacked(r, NULL);
}

static void test_golden_streamed_body(void)
{
	StreamedBody sb = ENVOY__SERVICE__EXT_PROC__V3__STREAMED_BODY_RESPONSE__INIT;
	BodyMutation bm = ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__INIT;
	CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
	BodyResponse br = ENVOY__SERVICE__EXT_PROC__V3__BODY_RESPONSE__INIT;
	PResp resp = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
	PResp *r;
	size_t len;
	uint8_t *b;

	sb.body.data = (uint8_t *)"{\"model\":\"m\"}";
	sb.body.len = 13;
	sb.end_of_stream = 1;
	bm.mutation_case = MUT(STREAMED_RESPONSE);
	bm.streamed_response = &sb;
	cr.body_mutation = &bm;
	br.response = &cr;
	resp.response_case = RESP(REQUEST_BODY);
	resp.request_body = &br;
	b = pack(&resp.base, &len);
	CHECK(bytes_eq(b, len, GOLD_BODY, GOLD_BODY_LEN));
	free(b);

	r = envoy__service__ext_proc__v3__processing_response__unpack(NULL, GOLD_BODY_LEN,
								    (const uint8_t *)GOLD_BODY);
	CHECK(r != NULL);
	if (!r)
		return;
	CHECK_INT(r->response_case, RESP(REQUEST_BODY));
	CHECK_INT(r->request_body->response->body_mutation->mutation_case, MUT(STREAMED_RESPONSE));
	CHECK(bin_eq(r->request_body->response->body_mutation->streamed_response->body,
		     "{\"model\":\"m\"}"));
	CHECK_INT(r->request_body->response->body_mutation->streamed_response->end_of_stream, 1);
	envoy__service__ext_proc__v3__processing_response__free_unpacked(r, NULL);
}

static PReq *req_roundtrip(const PReq *in)
{
	size_t len;
	uint8_t *b = pack(&in->base, &len);
	PReq *out = envoy__service__ext_proc__v3__processing_request__unpack(NULL, len, b);

	free(b);
	CHECK(out != NULL);
	return out;
}

static PResp *resp_roundtrip(const PResp *in)
{
	size_t len;
	uint8_t *b = pack(&in->base, &len);
	PResp *out = envoy__service__ext_proc__v3__processing_response__unpack(NULL, len, b);

	free(b);
	CHECK(out != NULL);
	return out;
}

/* Every request part Envoy sends, with the fields a newer Envoy may add. */
static void test_request_parts_roundtrip(void)
{
	HeaderValue hv;
	HeaderValue *hvp = &hv;
	HeaderMap map = ENVOY__CONFIG__CORE__V3__HEADER_MAP__INIT;
	HttpHeaders hh = ENVOY__SERVICE__EXT_PROC__V3__HTTP_HEADERS__INIT;
	HttpBody hb = ENVOY__SERVICE__EXT_PROC__V3__HTTP_BODY__INIT;
	HttpTrailers ht = ENVOY__SERVICE__EXT_PROC__V3__HTTP_TRAILERS__INIT;
	PbValue served;
	PbField served_f = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	PbField *served_fp = &served_f;
	PbStruct lb = GOOGLE__PROTOBUF__STRUCT__INIT;
	FilterEntry fe = ENVOY__CONFIG__CORE__V3__METADATA__FILTER_METADATA_ENTRY__INIT;
	FilterEntry *fep = &fe;
	PbAny any = GOOGLE__PROTOBUF__ANY__INIT;
	TypedFilterEntry te = ENVOY__CONFIG__CORE__V3__METADATA__TYPED_FILTER_METADATA_ENTRY__INIT;
	TypedFilterEntry *tep = &te;
	Metadata md = ENVOY__CONFIG__CORE__V3__METADATA__INIT;
	PbStruct attr = GOOGLE__PROTOBUF__STRUCT__INIT;
	AttrEntry ae = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__ATTRIBUTES_ENTRY__INIT;
	AttrEntry *aep = &ae;
	PReq in = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__INIT;
	PReq *out;
	const PbValue *v;

	/* response_headers carrying the served endpoint (spec §2.6) and legacy
	 * string values. */
	envoy__config__core__v3__header_value__init(&hv);
	hv.key = "content-type";
	hv.value = "text/event-stream";
	map.n_headers = 1;
	map.headers = &hvp;
	hh.headers = &map;
	value_str(&served, "10.0.0.7:8000");
	served_f.key = "x-gateway-destination-endpoint-served";
	served_f.value = &served;
	lb.n_fields = 1;
	lb.fields = &served_fp;
	fe.key = "envoy.lb";
	fe.value = &lb;
	any.type_url = "type.googleapis.com/google.protobuf.Struct";
	te.key = "typed.ns";
	te.value = &any;
	md.n_filter_metadata = 1;
	md.filter_metadata = &fep;
	md.n_typed_filter_metadata = 1;
	md.typed_filter_metadata = &tep;
	ae.key = "envoy.filters.http.ext_proc";
	ae.value = &attr;
	in.request_case = REQ(RESPONSE_HEADERS);
	in.response_headers = &hh;
	in.metadata_context = &md;
	in.n_attributes = 1;
	in.attributes = &aep;
	in.observability_mode = 1;
	out = req_roundtrip(&in);
	if (out) {
		CHECK_INT(out->request_case, REQ(RESPONSE_HEADERS));
		CHECK_STR(out->response_headers->headers->headers[0]->key, "content-type");
		CHECK_STR(out->response_headers->headers->headers[0]->value, "text/event-stream");
		CHECK_INT(out->response_headers->headers->headers[0]->raw_value.len, 0);
		v = struct_get(filter_get(out->metadata_context, "envoy.lb"),
			       "x-gateway-destination-endpoint-served");
		CHECK(v != NULL && v->kind_case == KIND(STRING_VALUE));
		if (v)
			CHECK_STR(v->string_value, "10.0.0.7:8000");
		CHECK_INT(out->metadata_context->n_typed_filter_metadata, 1);
		CHECK_STR(out->metadata_context->typed_filter_metadata[0]->value->type_url,
			  "type.googleapis.com/google.protobuf.Struct");
		CHECK_INT(out->n_attributes, 1);
		CHECK_STR(out->attributes[0]->key, "envoy.filters.http.ext_proc");
		CHECK_INT(out->observability_mode, 1);
		CHECK(out->protocol_config == NULL);
		envoy__service__ext_proc__v3__processing_request__free_unpacked(out, NULL);
	}

	/* request_body and response_body chunks, with the GRPC-mode flags. */
	hb.body.data = (uint8_t *)"{\"model\":";
	hb.body.len = 9;
	hb.end_of_stream = 1;
	hb.end_of_stream_without_message = 1;
	hb.grpc_message_compressed = 1;
	envoy__service__ext_proc__v3__processing_request__init(&in);
	in.request_case = REQ(REQUEST_BODY);
	in.request_body = &hb;
	out = req_roundtrip(&in);
	if (out) {
		CHECK_INT(out->request_case, REQ(REQUEST_BODY));
		CHECK(bin_eq(out->request_body->body, "{\"model\":"));
		CHECK_INT(out->request_body->end_of_stream, 1);
		CHECK_INT(out->request_body->end_of_stream_without_message, 1);
		CHECK_INT(out->request_body->grpc_message_compressed, 1);
		envoy__service__ext_proc__v3__processing_request__free_unpacked(out, NULL);
	}
	in.request_case = REQ(RESPONSE_BODY);
	in.response_body = &hb;
	hb.end_of_stream_without_message = 0;
	hb.grpc_message_compressed = 0;
	out = req_roundtrip(&in);
	if (out) {
		CHECK_INT(out->request_case, REQ(RESPONSE_BODY));
		CHECK_INT(out->response_body->end_of_stream, 1);
		CHECK_INT(out->response_body->grpc_message_compressed, 0);
		envoy__service__ext_proc__v3__processing_request__free_unpacked(out, NULL);
	}

	/* Trailers both ways, one of them with a header. */
	ht.trailers = &map;
	in.request_case = REQ(REQUEST_TRAILERS);
	in.request_trailers = &ht;
	out = req_roundtrip(&in);
	if (out) {
		CHECK_INT(out->request_case, REQ(REQUEST_TRAILERS));
		CHECK_INT(out->request_trailers->trailers->n_headers, 1);
		envoy__service__ext_proc__v3__processing_request__free_unpacked(out, NULL);
	}
	ht.trailers = NULL;
	in.request_case = REQ(RESPONSE_TRAILERS);
	in.response_trailers = &ht;
	out = req_roundtrip(&in);
	if (out) {
		CHECK_INT(out->request_case, REQ(RESPONSE_TRAILERS));
		CHECK(out->response_trailers->trailers == NULL);
		envoy__service__ext_proc__v3__processing_request__free_unpacked(out, NULL);
	}
}

/* Every response kepp sends, plus the rarely used fields of the protocol. */
static void test_response_parts_roundtrip(void)
{
	HeaderValue hv[2];
	HeaderValueOption opt[2];
	HeaderValueOption *optp[2] = { &opt[0], &opt[1] };
	char *removes[1] = { "x-drop" };
	PbBool append = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
	HeaderMutation hm = ENVOY__SERVICE__EXT_PROC__V3__HEADER_MUTATION__INIT;
	BodyMutation bm = ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__INIT;
	CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
	HeadersResponse hr = ENVOY__SERVICE__EXT_PROC__V3__HEADERS_RESPONSE__INIT;
	BodyResponse br = ENVOY__SERVICE__EXT_PROC__V3__BODY_RESPONSE__INIT;
	StreamedBody sb = ENVOY__SERVICE__EXT_PROC__V3__STREAMED_BODY_RESPONSE__INIT;
	ProcessingMode mode = ENVOY__EXTENSIONS__FILTERS__HTTP__EXT_PROC__V3__PROCESSING_MODE__INIT;
	PbDuration timeout = GOOGLE__PROTOBUF__DURATION__INIT;
	PResp in = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
	PResp *out;

	/* response_headers: echo with x-went-into-resp-headers (spec §2.9), plus
	 * every HeaderValueOption field and remove_headers. */
	hvo_set(&opt[0], &hv[0], "x-went-into-resp-headers", "true");
	hvo_set(&opt[1], &hv[1], "content-type", "application/json");
	opt[1].append = &append;
	opt[1].append_action = APPEND(OVERWRITE_IF_EXISTS_OR_ADD);
	opt[1].keep_empty_value = 1;
	hm.n_set_headers = 2;
	hm.set_headers = optp;
	hm.n_remove_headers = 1;
	hm.remove_headers = removes;
	cr.header_mutation = &hm;
	hr.response = &cr;
	in.response_case = RESP(RESPONSE_HEADERS);
	in.response_headers = &hr;
	out = resp_roundtrip(&in);
	if (out) {
		HeaderMutation *m = out->response_headers->response->header_mutation;

		CHECK_INT(out->response_case, RESP(RESPONSE_HEADERS));
		CHECK(out->dynamic_metadata == NULL);
		CHECK_INT(m->n_set_headers, 2);
		CHECK_STR(m->set_headers[0]->header->key, "x-went-into-resp-headers");
		CHECK(bin_eq(m->set_headers[0]->header->raw_value, "true"));
		CHECK(m->set_headers[1]->append != NULL);
		CHECK_INT(m->set_headers[1]->append ? m->set_headers[1]->append->value : 1, 0);
		CHECK_INT(m->set_headers[1]->append_action, APPEND(OVERWRITE_IF_EXISTS_OR_ADD));
		CHECK_INT(m->set_headers[1]->keep_empty_value, 1);
		CHECK_INT(m->n_remove_headers, 1);
		CHECK_STR(m->remove_headers[0], "x-drop");
		envoy__service__ext_proc__v3__processing_response__free_unpacked(out, NULL);
	}

	/* BUFFERED answer (spec §2.11): header mutation and a whole-body
	 * replacement on the request_body response. */
	bm.mutation_case = MUT(BODY);
	bm.body.data = (uint8_t *)"{}";
	bm.body.len = 2;
	cr.body_mutation = &bm;
	br.response = &cr;
	envoy__service__ext_proc__v3__processing_response__init(&in);
	in.response_case = RESP(REQUEST_BODY);
	in.request_body = &br;
	out = resp_roundtrip(&in);
	if (out) {
		CHECK_INT(out->response_case, RESP(REQUEST_BODY));
		CHECK_INT(out->request_body->response->body_mutation->mutation_case, MUT(BODY));
		CHECK(bin_eq(out->request_body->response->body_mutation->body, "{}"));
		CHECK_INT(out->request_body->response->header_mutation->n_set_headers, 2);
		envoy__service__ext_proc__v3__processing_response__free_unpacked(out, NULL);
	}

	/* response_body: an empty last chunk still says end_of_stream. */
	sb.end_of_stream = 1;
	bm.mutation_case = MUT(STREAMED_RESPONSE);
	bm.streamed_response = &sb;
	envoy__service__ext_proc__v3__common_response__init(&cr);
	cr.body_mutation = &bm;
	cr.status = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__RESPONSE_STATUS__CONTINUE_AND_REPLACE;
	in.response_case = RESP(RESPONSE_BODY);
	in.response_body = &br;
	out = resp_roundtrip(&in);
	if (out) {
		StreamedBody *s = out->response_body->response->body_mutation->streamed_response;

		CHECK_INT(out->response_case, RESP(RESPONSE_BODY));
		CHECK_INT(out->response_body->response->status, 1);
		CHECK_INT(s->body.len, 0);
		CHECK_INT(s->end_of_stream, 1);
		envoy__service__ext_proc__v3__processing_response__free_unpacked(out, NULL);
	}

	/* clear_body, mode_override, override_message_timeout, request_drain. */
	bm.mutation_case = MUT(CLEAR_BODY);
	bm.clear_body = 1;
	mode.request_header_mode = HDR_MODE(SEND);
	mode.response_body_mode = BODY_MODE(BUFFERED_PARTIAL);
	mode.response_trailer_mode = HDR_MODE(SKIP);
	timeout.seconds = 3;
	timeout.nanos = 500000000;
	in.mode_override = &mode;
	in.override_message_timeout = &timeout;
	in.request_drain = 1;
	out = resp_roundtrip(&in);
	if (out) {
		CHECK_INT(out->response_body->response->body_mutation->mutation_case,
			  MUT(CLEAR_BODY));
		CHECK_INT(out->response_body->response->body_mutation->clear_body, 1);
		CHECK_INT(out->mode_override->request_header_mode, 1);
		CHECK_INT(out->mode_override->response_body_mode, 3);
		CHECK_INT(out->mode_override->response_trailer_mode, 2);
		CHECK_INT(out->override_message_timeout->seconds, 3);
		CHECK_INT(out->override_message_timeout->nanos, 500000000);
		CHECK_INT(out->request_drain, 1);
		envoy__service__ext_proc__v3__processing_response__free_unpacked(out, NULL);
	}
}

/* An empty TrailersResponse must still be on the wire: the submessage is
 * present with length 0 (spec §2.9: trailers are answered with it). */
static void test_empty_trailers_response(void)
{
	TrailersResponse tr = ENVOY__SERVICE__EXT_PROC__V3__TRAILERS_RESPONSE__INIT;
	PResp in = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
	PResp *out;
	size_t len;
	uint8_t *b;

	in.response_case = RESP(RESPONSE_TRAILERS);
	in.response_trailers = &tr;
	b = pack(&in.base, &len);
	CHECK(bytes_eq(b, len, "\x32\x00", 2));
	free(b);
	in.response_case = RESP(REQUEST_TRAILERS);
	in.request_trailers = &tr;
	b = pack(&in.base, &len);
	CHECK(bytes_eq(b, len, "\x2a\x00", 2));
	free(b);
	out = envoy__service__ext_proc__v3__processing_response__unpack(NULL, 2,
								      (const uint8_t *)"\x32\x00");
	CHECK(out != NULL);
	if (out) {
		CHECK_INT(out->response_case, RESP(RESPONSE_TRAILERS));
		CHECK(out->response_trailers != NULL);
		CHECK(out->response_trailers->header_mutation == NULL);
		envoy__service__ext_proc__v3__processing_response__free_unpacked(out, NULL);
	}
}

/* Field numbers that appear in no golden message, checked against their
 * upstream wire tags by hand: ProcessingResponse.request_drain = 12 (0x60),
 * streamed_immediate_response = 11 (0x5a); ProcessingRequest
 * observability_mode = 10 (0x50); ImmediateResponse grpc_status = 4,
 * details = 5; ProtocolConfiguration.send_body_without_... = 3. */
static void test_wire_tags(void)
{
	static const char resp_bytes[] = "\x60\x01\x5a\x06\x12\x04\x0a\x00\x10\x01";
	static const char req_bytes[] = "\x50\x01\x5a\x02\x18\x01\x22\x02\x10\x01";
	static const char imm_bytes[] = "\x3a\x0d\x0a\x03\x08\xad\x03\x22\x02\x08\x07\x2a\x02hi";
	PResp *r;
	PReq *q;

	r = envoy__service__ext_proc__v3__processing_response__unpack(
		NULL, sizeof(resp_bytes) - 1, (const uint8_t *)resp_bytes);
	CHECK(r != NULL);
	if (r) {
		StreamedImmediate *si = r->streamed_immediate_response;

		CHECK_INT(r->request_drain, 1);
		CHECK_INT(r->response_case, RESP(STREAMED_IMMEDIATE_RESPONSE));
		CHECK_INT(si->response_case, SIR(BODY_RESPONSE));
		CHECK_INT(si->body_response->body.len, 0);
		CHECK_INT(si->body_response->end_of_stream, 1);
		envoy__service__ext_proc__v3__processing_response__free_unpacked(r, NULL);
	}
	q = envoy__service__ext_proc__v3__processing_request__unpack(
		NULL, sizeof(req_bytes) - 1, (const uint8_t *)req_bytes);
	CHECK(q != NULL);
	if (q) {
		CHECK_INT(q->observability_mode, 1);
		CHECK_INT(q->protocol_config->send_body_without_waiting_for_header_response, 1);
		CHECK_INT(q->request_case, REQ(REQUEST_BODY));
		CHECK_INT(q->request_body->end_of_stream, 1);
		envoy__service__ext_proc__v3__processing_request__free_unpacked(q, NULL);
	}
	r = envoy__service__ext_proc__v3__processing_response__unpack(
		NULL, sizeof(imm_bytes) - 1, (const uint8_t *)imm_bytes);
	CHECK(r != NULL);
	if (r) {
		CHECK_INT(r->immediate_response->status->code,
			  ENVOY__TYPE__V3__STATUS_CODE__TooManyRequests);
		CHECK_INT(r->immediate_response->grpc_status->status, 7);
		CHECK_STR(r->immediate_response->details, "hi");
		envoy__service__ext_proc__v3__processing_response__free_unpacked(r, NULL);
	}
}

/* The StreamedImmediateResponse variants and a StatusCode spot check. */
static void test_streamed_immediate_roundtrip(void)
{
	HeaderValue hv;
	HeaderValue *hvp = &hv;
	HeaderMap map = ENVOY__CONFIG__CORE__V3__HEADER_MAP__INIT;
	HttpHeaders hh = ENVOY__SERVICE__EXT_PROC__V3__HTTP_HEADERS__INIT;
	StreamedImmediate si = ENVOY__SERVICE__EXT_PROC__V3__STREAMED_IMMEDIATE_RESPONSE__INIT;
	PResp in = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
	PResp *out;

	hv_set(&hv, ":status", "503");
	map.n_headers = 1;
	map.headers = &hvp;
	hh.headers = &map;
	si.response_case = SIR(HEADERS_RESPONSE);
	si.headers_response = &hh;
	in.response_case = RESP(STREAMED_IMMEDIATE_RESPONSE);
	in.streamed_immediate_response = &si;
	out = resp_roundtrip(&in);
	if (out) {
		CHECK_INT(out->streamed_immediate_response->response_case, SIR(HEADERS_RESPONSE));
		CHECK(bin_eq(out->streamed_immediate_response->headers_response->headers
				     ->headers[0]->raw_value, "503"));
		envoy__service__ext_proc__v3__processing_response__free_unpacked(out, NULL);
	}
	si.response_case = SIR(TRAILERS_RESPONSE);
	si.trailers_response = &map;
	out = resp_roundtrip(&in);
	if (out) {
		CHECK_INT(out->streamed_immediate_response->response_case, SIR(TRAILERS_RESPONSE));
		CHECK_STR(out->streamed_immediate_response->trailers_response->headers[0]->key,
			  ":status");
		envoy__service__ext_proc__v3__processing_response__free_unpacked(out, NULL);
	}
	CHECK_INT(ENVOY__TYPE__V3__STATUS_CODE__BadRequest, 400);
	CHECK_INT(ENVOY__TYPE__V3__STATUS_CODE__NotFound, 404);
	CHECK_INT(ENVOY__TYPE__V3__STATUS_CODE__InternalServerError, 500);
	CHECK_INT(ENVOY__TYPE__V3__STATUS_CODE__NetworkAuthenticationRequired, 511);
	CHECK_INT(ENVOY__TYPE__V3__STATUS_CODE__Empty, 0);
}

/* Bad input: every truncation of a valid message is rejected or decodes to
 * a prefix without crashing; lengths past the end and bad wire types are
 * rejected; unknown fields (a newer Envoy) are skipped. */
static void test_malformed(void)
{
	static const char overlong[] = "\x12\x7f\x0a\x02";      /* length 127, 2 bytes left */
	static const char bad_wire[] = "\x13\x00";              /* field 2, start-group */
	static const char huge_len[] = "\x22\xff\xff\xff\xff\x0f"; /* 4 GiB body */
	static const char unknown[] = "\xc8\x3e\x05\x22\x02\x10\x01"; /* field 1001 = 5 */
	PReq *q;
	int rejected = 0;

	for (size_t n = 1; n < GOLD_REQ_LEN; n++) {
		q = envoy__service__ext_proc__v3__processing_request__unpack(
			NULL, n, (const uint8_t *)GOLD_REQ);
		if (!q)
			rejected++;
		else
			envoy__service__ext_proc__v3__processing_request__free_unpacked(q, NULL);
	}
	/* Only cuts that fall on a top-level field boundary can decode. */
	CHECK(rejected >= GOLD_REQ_LEN - 4);
	q = envoy__service__ext_proc__v3__processing_request__unpack(
		NULL, sizeof(overlong) - 1, (const uint8_t *)overlong);
	CHECK(q == NULL);
	q = envoy__service__ext_proc__v3__processing_request__unpack(
		NULL, sizeof(bad_wire) - 1, (const uint8_t *)bad_wire);
	CHECK(q == NULL);
	q = envoy__service__ext_proc__v3__processing_request__unpack(
		NULL, sizeof(huge_len) - 1, (const uint8_t *)huge_len);
	CHECK(q == NULL);
	q = envoy__service__ext_proc__v3__processing_request__unpack(
		NULL, sizeof(unknown) - 1, (const uint8_t *)unknown);
	CHECK(q != NULL);
	if (q) {
		CHECK_INT(q->request_case, REQ(REQUEST_BODY));
		CHECK_INT(q->request_body->end_of_stream, 1);
		envoy__service__ext_proc__v3__processing_request__free_unpacked(q, NULL);
	}
}

int main(void)
{
	RUN(test_golden_request_encode);
	RUN(test_golden_request_decode);
	RUN(test_golden_response_encode);
	RUN(test_golden_response_decode);
	RUN(test_golden_immediate);
	RUN(test_golden_streamed_body);
	RUN(test_request_parts_roundtrip);
	RUN(test_response_parts_roundtrip);
	RUN(test_empty_trailers_response);
	RUN(test_wire_tags);
	RUN(test_streamed_immediate_roundtrip);
	RUN(test_malformed);
	return harness_done();
}
