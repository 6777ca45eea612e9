#include "extproc/grpc_codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A split-message buffer at most this big is kept for the stream's next
 * message; a bigger one goes back to malloc once delivered. */
#define DEC_KEEP_BYTES 65536
#define DEC_MIN_GROW 4096

void xp_dec_init(xp_dec *d, size_t max_message_bytes)
{
	memset(d, 0, sizeof(*d));
	d->max = max_message_bytes;
}

void xp_dec_free(xp_dec *d)
{
	free(d->buf);
	d->buf = NULL;
	d->len = d->cap = 0;
}

void xp_dec_reset(xp_dec *d, size_t max_message_bytes)
{
	uint8_t *buf = d->buf;
	size_t cap = d->cap;
	xp_dec_init(d, max_message_bytes);
	d->buf = buf;
	d->cap = cap;
}

bool xp_dec_partial(const xp_dec *d)
{
	return d->hdr_len > 0;
}

/* Validates the prefix just completed in |d->hdr|. */
static int dec_start(xp_dec *d)
{
	if (d->hdr[0] == 1)
		return -ENOTSUP;
	if (d->hdr[0] != 0)
		return -EPROTO;
	uint32_t len = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 |
		       (uint32_t)d->hdr[3] << 8 | d->hdr[4];
	if (len > d->max) {
		d->bad_len = len;
		return -EMSGSIZE;
	}
	d->need = len;
	d->len = 0;
	return 0;
}

/* Makes room for |want| bytes; never beyond the current message's length,
 * which dec_start already bounded. */
static int dec_grow(xp_dec *d, size_t want)
{
	if (want <= d->cap)
		return 0;
	size_t cap = d->cap * 2;
	if (cap < DEC_MIN_GROW)
		cap = DEC_MIN_GROW;
	if (cap < want)
		cap = want;
	if (cap > d->need)
		cap = d->need;
	uint8_t *b = realloc(d->buf, cap);
	if (!b)
		return -ENOMEM;
	d->buf = b;
	d->cap = cap;
	return 0;
}

/* Ends the current message before handing it out, so the decoder is ready
 * for the next one whatever the callback returns. */
static void dec_done(xp_dec *d)
{
	d->hdr_len = 0;
	d->len = 0;
}

int xp_dec_feed(xp_dec *d, const uint8_t *p, size_t n, xp_dec_cb cb, void *arg)
{
	int r;

	if (d->err)
		return d->err;
	while (n > 0) {
		if (d->hdr_len < XP_GRPC_PREFIX) {
			size_t k = XP_GRPC_PREFIX - d->hdr_len;
			if (k > n)
				k = n;
			memcpy(d->hdr + d->hdr_len, p, k);
			d->hdr_len += k;
			p += k;
			n -= k;
			if (d->hdr_len < XP_GRPC_PREFIX)
				return 0;
			r = dec_start(d);
			if (r < 0)
				return d->err = r;
			if (d->need == 0) {
				dec_done(d);
				r = cb(arg, (const uint8_t *)"", 0);
				if (r)
					return r;
			}
			continue;
		}
		size_t want = d->need - d->len;
		if (d->len == 0 && n >= want) {
			/* The whole message is in the input: hand it out in place. */
			const uint8_t *msg = p;
			p += want;
			n -= want;
			dec_done(d);
			r = cb(arg, msg, want);
			if (r)
				return r;
			continue;
		}
		size_t k = want < n ? want : n;
		r = dec_grow(d, d->len + k);
		if (r < 0)
			return d->err = r;
		memcpy(d->buf + d->len, p, k);
		d->len += k;
		p += k;
		n -= k;
		if (d->len < d->need)
			return 0;
		size_t len = d->len;
		dec_done(d);
		r = cb(arg, d->buf, len);
		if (d->cap > DEC_KEEP_BYTES)
			xp_dec_free(d);
		if (r)
			return r;
	}
	return 0;
}

void xp_grpc_prefix(uint8_t out[XP_GRPC_PREFIX], uint32_t len)
{
	out[0] = 0;
	out[1] = (uint8_t)(len >> 24);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
}

/* ---- ProcessingRequest's body case, by hand ------------------------------- */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* A varint of at most |max| bytes (protobuf-c reads 10 for values, 5 for
 * tags and lengths); false when truncated or longer. |nonzero| is what
 * protobuf-c reads as a bool: any payload bit set, even past 64. */
static bool pb_varint(const uint8_t **p, const uint8_t *end, unsigned max, uint64_t *v,
		      bool *nonzero)
{
	uint64_t x = 0;
	bool nz = false;
	for (unsigned i = 0; i < max && *p < end; i++) {
		uint8_t b = *(*p)++;
		nz |= (b & 0x7f) != 0;
		x |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*v = x;
			if (nonzero)
				*nonzero = nz;
			return true;
		}
	}
	return false;
}

/* Tag of the next field: number and wire type; false on a malformed tag
 * (field 0, over 32 bits, truncated). */
static bool pb_tag(const uint8_t **p, const uint8_t *end, uint32_t *field, unsigned *wt)
{
	uint64_t t;
	if (!pb_varint(p, end, 5, &t, NULL) || t >> 32 || (t >> 3) == 0)
		return false;
	*field = (uint32_t)(t >> 3);
	*wt = (unsigned)(t & 7);
	return true;
}

/* The payload of a length-delimited field (a length over 32 bits, which
 * protobuf-c would truncate, is left to it). */
static bool pb_len(const uint8_t **p, const uint8_t *end, const uint8_t **data, size_t *n)
{
	uint64_t l;
	if (!pb_varint(p, end, 5, &l, NULL) || l >> 32 || l > (uint64_t)(end - *p))
		return false;
	*data = *p;
	*n = (size_t)l;
	*p += l;
	return true;
}

/* Skips a field of wire type |wt|; groups (3, 4) and the invalid types are
 * left to protobuf-c. */
static bool pb_skip(const uint8_t **p, const uint8_t *end, unsigned wt)
{
	uint64_t v;
	const uint8_t *d;
	size_t n;
	switch (wt) {
	case WT_VARINT:
		return pb_varint(p, end, 10, &v, NULL);
	case WT_I64:
		if (end - *p < 8)
			return false;
		*p += 8;
		return true;
	case WT_LEN:
		return pb_len(p, end, &d, &n);
	case WT_I32:
		if (end - *p < 4)
			return false;
		*p += 4;
		return true;
	default:
		return false;
	}
}

static bool http_body(const uint8_t *p, const uint8_t *end, xp_pb_body *out)
{
	unsigned seen = 0;
	while (p < end) {
		uint32_t f;
		unsigned wt;
		if (!pb_tag(&p, end, &f, &wt))
			return false;
		if (f < 1 || f > 4) {
			if (!pb_skip(&p, end, wt))
				return false;
			continue;
		}
		/* A repeated known field: protobuf-c's merge rules decide. */
		if (seen & (1u << f))
			return false;
		seen |= 1u << f;
		if (f == 1) {
			if (wt != WT_LEN || !pb_len(&p, end, &out->body, &out->len))
				return false;
			continue;
		}
		uint64_t v;
		bool nz;
		if (wt != WT_VARINT || !pb_varint(&p, end, 10, &v, &nz))
			return false;
		if (f == 2)
			out->end_of_stream = nz;
		else if (f == 3)
			out->end_of_stream_without_message = nz;
		else
			out->grpc_message_compressed = nz;
	}
	return true;
}

bool xp_pb_body_decode(const uint8_t *msg, size_t len, xp_pb_body *out)
{
	const uint8_t *p = msg, *end = msg + len;
	const uint8_t *body = NULL;
	size_t body_len = 0;
	memset(out, 0, sizeof(*out));
	out->body = (const uint8_t *)"";
	while (p < end) {
		uint32_t f;
		unsigned wt;
		if (!pb_tag(&p, end, &f, &wt))
			return false;
		/* Fields 2-11 are ProcessingRequest's (1 is reserved): only one
		 * body case, once, is decoded here. */
		if (f >= 2 && f <= 11) {
			if ((f != 4 && f != 5) || out->field || wt != WT_LEN ||
			    !pb_len(&p, end, &body, &body_len))
				return false;
			out->field = f;
			continue;
		}
		if (!pb_skip(&p, end, wt))
			return false;
	}
	if (!out->field)
		return false;
	return http_body(body, body + body_len, out);
}

size_t xp_grpc_percent_encode(char *out, size_t cap, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (cap == 0)
		return 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 0x20 && c <= 0x7e && c != '%') {
			if (o + 1 >= cap)
				break;
			out[o++] = (char)c;
			continue;
		}
		if (o + 3 >= cap)
			break;
		out[o++] = '%';
		out[o++] = hex[c >> 4];
		out[o++] = hex[c & 15];
	}
	out[o] = '\0';
	return o;
}

/* ---- hand-packed ProcessingResponse ------------------------------------ */

#define NS_LB "envoy.lb"

static size_t vlen(size_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* A length-delimited field of |n| bytes with a one-byte tag. */
static size_t ld(size_t n)
{
	return 1 + vlen(n) + n;
}

static uint8_t *put_varint(uint8_t *p, size_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static uint8_t *put_ld(uint8_t *p, uint8_t tag, size_t n)
{
	*p++ = tag;
	return put_varint(p, n);
}

static uint8_t *put_bytes(uint8_t *p, uint8_t tag, const void *v, size_t n)
{
	p = put_ld(p, tag, n);
	if (n)
		memcpy(p, v, n);
	return p + n;
}

/* HeaderValue{key = 1, raw_value = 3}: proto3, empty ones are left out. */
static size_t hv_size(const xp_pb_hdr *h)
{
	return (h->klen ? ld(h->klen) : 0) + (h->vlen ? ld(h->vlen) : 0);
}

static size_t mutation_size(const xp_pb_resp *r)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n_set; i++)
		n += ld(ld(hv_size(&r->set[i]))); /* set_headers{header = 1} */
	return n;
}

static size_t streamed_size(const xp_pb_resp *r)
{
	return (r->body_len ? ld(r->body_len) : 0) + (r->end_of_stream ? 2 : 0);
}

static size_t common_size(const xp_pb_resp *r, size_t hm, size_t sb)
{
	return (r->mutation ? ld(hm) : 0) + (r->streamed ? ld(ld(sb)) : 0) +
	       (r->clear_route_cache ? 2 : 0);
}

/* {"envoy.lb": {key: "value"}}: Struct{fields = 1: entry{key = 1, value = 2}},
 * Value{string_value = 3 | struct_value = 5}. */
static size_t md_inner_entry(const xp_pb_resp *r)
{
	return (r->md_key_len ? ld(r->md_key_len) : 0) + ld(ld(r->md_value_len));
}

static size_t md_outer_entry(const xp_pb_resp *r)
{
	return ld(sizeof(NS_LB) - 1) + ld(ld(ld(md_inner_entry(r))));
}

size_t xp_pb_resp_size(const xp_pb_resp *r)
{
	size_t n = ld(ld(common_size(r, r->mutation ? mutation_size(r) : 0, streamed_size(r))));
	if (r->md_key)
		n += ld(ld(md_outer_entry(r)));
	return n;
}

void xp_pb_resp_pack(const xp_pb_resp *r, uint8_t *p)
{
	size_t hm = r->mutation ? mutation_size(r) : 0, sb = streamed_size(r);
	size_t cr = common_size(r, hm, sb);
	p = put_ld(p, (uint8_t)(r->field << 3 | 2), ld(cr));
	p = put_ld(p, 0x0a, cr); /* HeadersResponse / BodyResponse.response */
	if (r->mutation) {
		p = put_ld(p, 0x12, hm);
		for (size_t i = 0; i < r->n_set; i++) {
			const xp_pb_hdr *h = &r->set[i];
			size_t hv = hv_size(h);
			p = put_ld(p, 0x0a, ld(hv));
			p = put_ld(p, 0x0a, hv);
			if (h->klen)
				p = put_bytes(p, 0x0a, h->key, h->klen);
			if (h->vlen)
				p = put_bytes(p, 0x1a, h->val, h->vlen);
		}
	}
	if (r->streamed) {
		p = put_ld(p, 0x1a, ld(sb)); /* body_mutation */
		p = put_ld(p, 0x1a, sb);     /* streamed_response */
		if (r->body_len)
			p = put_bytes(p, 0x0a, r->body, r->body_len);
		if (r->end_of_stream) {
			*p++ = 0x10;
			*p++ = 1;
		}
	}
	if (r->clear_route_cache) {
		*p++ = 0x28;
		*p++ = 1;
	}
	if (!r->md_key)
		return;
	size_t inner = md_inner_entry(r), outer = md_outer_entry(r);
	p = put_ld(p, 0x42, ld(outer)); /* dynamic_metadata */
	p = put_ld(p, 0x0a, outer);
	p = put_bytes(p, 0x0a, NS_LB, sizeof(NS_LB) - 1);
	p = put_ld(p, 0x12, ld(ld(inner))); /* Value */
	p = put_ld(p, 0x2a, ld(inner));     /* struct_value */
	p = put_ld(p, 0x0a, inner);
	if (r->md_key_len)
		p = put_bytes(p, 0x0a, r->md_key, r->md_key_len);
	p = put_ld(p, 0x12, ld(r->md_value_len));
	put_bytes(p, 0x1a, r->md_value, r->md_value_len);
}
