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
