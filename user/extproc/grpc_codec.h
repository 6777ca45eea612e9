/* gRPC Length-Prefixed-Message codec (grpc PROTOCOL-HTTP2.md): a 1-byte
 * Compressed-Flag, a 4-byte big-endian Message-Length, then the message.
 * Pure and transport-free so it can be fuzzed: the decoder takes bytes split
 * across DATA frames in any way and hands out whole messages.
 *
 * Bounds: a message longer than the decoder's limit is refused from its
 * 5-byte prefix, before any byte of it is buffered; the buffer then grows
 * only as the message's bytes arrive, so a client cannot make the server
 * reserve memory it never sends. */
#ifndef KEPP_EXTPROC_GRPC_CODEC_H
#define KEPP_EXTPROC_GRPC_CODEC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XP_GRPC_PREFIX 5

/* Called once per complete message; |msg| is valid only during the call (it
 * may point into the caller's input). Return 0 to go on; any other value
 * stops xp_dec_feed, which returns it. */
typedef int (*xp_dec_cb)(void *arg, const uint8_t *msg, size_t len);

typedef struct xp_dec {
	size_t max;          /* largest accepted Message-Length */
	uint8_t hdr[XP_GRPC_PREFIX];
	size_t hdr_len;      /* prefix bytes seen of the current message */
	size_t need;         /* Message-Length of the current message */
	uint8_t *buf;        /* partial message, when split across feeds */
	size_t len, cap;
	uint32_t bad_len;    /* the Message-Length that broke the limit */
	int err;             /* sticky: once set every feed returns it */
} xp_dec;

void xp_dec_init(xp_dec *d, size_t max_message_bytes);
void xp_dec_free(xp_dec *d);
/* Starts over for a new stream, keeping the buffer (xp_dec_init state). */
void xp_dec_reset(xp_dec *d, size_t max_message_bytes);

/* Consumes all |n| bytes of |p| unless stopped by |cb| or an error.
 * Returns 0, |cb|'s nonzero value, or a (sticky) error:
 *   -EMSGSIZE  a Message-Length over the limit (see xp_dec_bad_len)
 *   -ENOTSUP   the Compressed-Flag is set: compression is not supported
 *   -EPROTO    a Compressed-Flag other than 0 or 1
 *   -ENOMEM    the buffer for a split message could not grow */
int xp_dec_feed(xp_dec *d, const uint8_t *p, size_t n, xp_dec_cb cb, void *arg);

/* True when part of a message (prefix or body) is waiting for more bytes:
 * at END_STREAM that means the client sent a truncated message. */
bool xp_dec_partial(const xp_dec *d);

/* The Message-Length that made the last feed fail with -EMSGSIZE. */
static inline uint32_t xp_dec_bad_len(const xp_dec *d) { return d->bad_len; }

/* Writes the prefix of an uncompressed message of |len| bytes. */
void xp_grpc_prefix(uint8_t out[XP_GRPC_PREFIX], uint32_t len);

/* The request_body / response_body case of an ext_proc ProcessingRequest
 * (envoy.service.ext_proc.v3.HttpBody), decoded in place: |body| points
 * into the message, not into a copy as protobuf-c's unpack makes. */
typedef struct xp_pb_body {
	uint32_t field; /* ProcessingRequest field: 4 request_body, 5 response_body */
	const uint8_t *body;
	size_t len;
	bool end_of_stream, end_of_stream_without_message, grpc_message_compressed;
} xp_pb_body;

/* Decodes |msg| when it is a ProcessingRequest whose only known field is one
 * request_body or response_body (unknown fields of every wire type are
 * skipped, as protobuf-c skips them). Returns false for anything else
 * (other fields, a field repeated, groups, any malformed or truncated
 * input): the caller then unpacks with protobuf-c, which has the last word
 * on what is valid. */
bool xp_pb_body_decode(const uint8_t *msg, size_t len, xp_pb_body *out);

/* Percent-encodes |s| for the grpc-message trailer: bytes outside 0x20-0x7e
 * and '%' become "%XX". Truncates at a whole escape to fit |cap| (which
 * includes the NUL); returns the length written. */
size_t xp_grpc_percent_encode(char *out, size_t cap, const char *s);
#endif
