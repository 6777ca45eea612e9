/* The protobuf wire format of the few messages the benchmark sends, written by
 * hand so a request costs the client a few hundred bytes of writes (body chunk
 * messages are encoded once, at start-up), and a reader that walks kepp's
 * answers for the fields it checks without decoding the bodies. */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

#include "extproc/grpc_codec.h"

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

void bb_put(bbuf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n)
			cap *= 2;
		uint8_t *q = realloc(b->p, cap);
		if (!q)
			abort(); /* a benchmark without memory has nothing to measure */
		b->p = q;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

void bb_free(bbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

static size_t varint(uint8_t *out, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		out[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static void put_tag_len(bbuf *b, unsigned field, size_t len)
{
	uint8_t t[16];
	size_t n = varint(t, (uint64_t)field << 3 | WT_LEN);
	n += varint(t + n, len);
	bb_put(b, t, n);
}

static void put_bytes(bbuf *b, unsigned field, const void *p, size_t len)
{
	put_tag_len(b, field, len);
	bb_put(b, p, len);
}

static void put_varint(bbuf *b, unsigned field, uint64_t v)
{
	uint8_t t[24];
	size_t n = varint(t, (uint64_t)field << 3 | WT_VARINT);
	n += varint(t + n, v);
	bb_put(b, t, n);
}

/* Nested messages are built inside out: |inner| becomes field |field| of |outer|. */
static void put_msg(bbuf *outer, unsigned field, const bbuf *inner)
{
	put_bytes(outer, field, inner->p, inner->len);
}

static void frame(bbuf *out, const bbuf *msg)
{
	uint8_t pre[XP_GRPC_PREFIX];
	xp_grpc_prefix(pre, (uint32_t)msg->len);
	bb_put(out, pre, sizeof(pre));
	bb_put(out, msg->p, msg->len);
}

/* HttpHeaders{headers: HeaderMap{headers: [HeaderValue{key, raw_value}]}, end_of_stream} */
static void http_headers(bbuf *hh, const kv *h, size_t n, bool eos)
{
	bbuf map = {0}, hv = {0};
	for (size_t i = 0; i < n; i++) {
		hv.len = 0;
		put_bytes(&hv, 1, h[i].k, strlen(h[i].k));
		put_bytes(&hv, 3, h[i].v, strlen(h[i].v));
		put_msg(&map, 1, &hv);
	}
	put_msg(hh, 1, &map);
	if (eos)
		put_varint(hh, 3, 1);
	bb_free(&map);
	bb_free(&hv);
}

void pb_request_headers(bbuf *out, const kv *h, size_t n, bool eos, bool protocol)
{
	bbuf hh = {0}, req = {0}, pc = {0};
	http_headers(&hh, h, n, eos);
	put_msg(&req, 2, &hh);
	if (protocol) {
		/* ProtocolConfiguration{request_body_mode, response_body_mode}:
		 * FULL_DUPLEX_STREAMED = 4. */
		put_varint(&pc, 1, 4);
		put_varint(&pc, 2, 4);
		put_msg(&req, 11, &pc);
	}
	frame(out, &req);
	bb_free(&hh);
	bb_free(&req);
	bb_free(&pc);
}

void pb_response_headers(bbuf *out, const kv *h, size_t n, bool eos)
{
	bbuf hh = {0}, req = {0};
	http_headers(&hh, h, n, eos);
	put_msg(&req, 3, &hh);
	frame(out, &req);
	bb_free(&hh);
	bb_free(&req);
}

void pb_body(bbuf *out, bool request, const uint8_t *p, size_t n, bool eos)
{
	/* Written straight into |out|: ProcessingRequest{4|5: HttpBody{1: body, 2: eos}}. */
	size_t body_msg = 1 + varint_len(n) + n + (eos ? 2 : 0);
	size_t req_len = 1 + varint_len(body_msg) + body_msg;
	uint8_t pre[XP_GRPC_PREFIX];
	xp_grpc_prefix(pre, (uint32_t)req_len);
	bb_put(out, pre, sizeof(pre));
	put_tag_len(out, request ? 4 : 5, body_msg);
	put_tag_len(out, 1, n);
	bb_put(out, p, n);
	if (eos)
		put_varint(out, 2, 1);
}

void pb_request_trailers(bbuf *out)
{
	/* ProcessingRequest{6: HttpTrailers{1: HeaderMap{}}} */
	static const uint8_t msg[] = {0x32, 0x02, 0x0a, 0x00};
	uint8_t pre[XP_GRPC_PREFIX];
	xp_grpc_prefix(pre, sizeof(msg));
	bb_put(out, pre, sizeof(pre));
	bb_put(out, msg, sizeof(msg));
}

/* ---- reading ------------------------------------------------------------- */

typedef struct field {
	unsigned num;
	int wt;
	uint64_t v;
	const uint8_t *p;
	size_t len;
} field;

static int get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (int shift = 0; shift < 64 && *pp < end; shift += 7) {
		uint8_t b = *(*pp)++;
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* The next field of [*pp, end): 1 when read, 0 at the end, -1 when malformed. */
static int next_field(const uint8_t **pp, const uint8_t *end, field *f)
{
	uint64_t tag;
	if (*pp >= end)
		return 0;
	if (get_varint(pp, end, &tag) < 0)
		return -1;
	f->num = (unsigned)(tag >> 3);
	f->wt = (int)(tag & 7);
	switch (f->wt) {
	case WT_VARINT:
		return get_varint(pp, end, &f->v) < 0 ? -1 : 1;
	case WT_I64:
		if (end - *pp < 8)
			return -1;
		*pp += 8;
		return 1;
	case WT_I32:
		if (end - *pp < 4)
			return -1;
		*pp += 4;
		return 1;
	case WT_LEN:
		if (get_varint(pp, end, &f->v) < 0 || f->v > (uint64_t)(end - *pp))
			return -1;
		f->p = *pp;
		f->len = (size_t)f->v;
		*pp += f->len;
		return 1;
	default:
		return -1;
	}
}

/* The last length-delimited field |num| of a message, as protobuf merges. */
static bool sub(const uint8_t *p, size_t n, unsigned num, const uint8_t **sp, size_t *sn)
{
	const uint8_t *end = p + n;
	field f;
	bool found = false;
	int r;
	while ((r = next_field(&p, end, &f)) == 1) {
		if (f.num == num && f.wt == WT_LEN) {
			*sp = f.p;
			*sn = f.len;
			found = true;
		}
	}
	return r == 0 && found;
}

static void read_streamed(const uint8_t *p, size_t n, presp *r)
{
	/* BodyResponse{1: CommonResponse{3: BodyMutation{3: StreamedBodyResponse}}} */
	const uint8_t *c, *bm, *sb;
	size_t cn, bmn, sbn;
	if (!sub(p, n, 1, &c, &cn) || !sub(c, cn, 3, &bm, &bmn) || !sub(bm, bmn, 3, &sb, &sbn))
		return;
	const uint8_t *end = sb + sbn;
	field f;
	while (next_field(&sb, end, &f) == 1) {
		if (f.num == 1 && f.wt == WT_LEN)
			r->body_len = f.len;
		else if (f.num == 2 && f.wt == WT_VARINT)
			r->body_eos = f.v != 0;
	}
}

static void read_dest(const uint8_t *p, size_t n, presp *r)
{
	/* HeadersResponse{1: CommonResponse{2: HeaderMutation{1: [HeaderValueOption{1: HeaderValue}]}}} */
	const uint8_t *c, *hm;
	size_t cn, hmn;
	if (!sub(p, n, 1, &c, &cn) || !sub(c, cn, 2, &hm, &hmn))
		return;
	const uint8_t *end = hm + hmn;
	field f;
	while (next_field(&hm, end, &f) == 1) {
		const uint8_t *hv;
		size_t hvn;
		if (f.num != 1 || f.wt != WT_LEN || !sub(f.p, f.len, 1, &hv, &hvn))
			continue;
		const uint8_t *key = NULL, *val = NULL, *hend = hv + hvn;
		size_t klen = 0, vlen = 0;
		field g;
		while (next_field(&hv, hend, &g) == 1) {
			if (g.num == 1 && g.wt == WT_LEN)
				key = g.p, klen = g.len;
			else if ((g.num == 3 || (g.num == 2 && !val)) && g.wt == WT_LEN)
				val = g.p, vlen = g.len;
		}
		if (key && klen == 30 && memcmp(key, "x-gateway-destination-endpoint", 30) == 0) {
			r->dest = val;
			r->dest_len = vlen;
		}
	}
}

int pb_read_response(const uint8_t *p, size_t n, presp *r)
{
	memset(r, 0, sizeof(*r));
	const uint8_t *end = p + n;
	field f;
	int rv;
	while ((rv = next_field(&p, end, &f)) == 1) {
		if (f.wt != WT_LEN || f.num < PR_REQUEST_HEADERS || f.num > PR_IMMEDIATE)
			continue;
		r->kind = (int)f.num;
		if (f.num == PR_REQUEST_BODY || f.num == PR_RESPONSE_BODY) {
			read_streamed(f.p, f.len, r);
		} else if (f.num == PR_REQUEST_HEADERS) {
			read_dest(f.p, f.len, r);
		} else if (f.num == PR_IMMEDIATE) {
			const uint8_t *st;
			size_t stn;
			field g;
			if (sub(f.p, f.len, 1, &st, &stn) && next_field(&st, st + stn, &g) == 1 &&
			    g.wt == WT_VARINT)
				r->status = (int)g.v;
		}
	}
	return rv < 0 || !r->kind ? -1 : 0;
}
