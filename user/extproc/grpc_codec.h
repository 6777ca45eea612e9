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

/* The ProcessingResponses kepp sends for almost every request, packed by
 * hand (protobuf-c sizes every nested message again at each level of its
 * pack, six levels deep for a header): a headers or body response whose
 * CommonResponse has at most set_headers (key and raw_value), a
 * streamed_response body and clear_route_cache, and dynamic_metadata
 * {"envoy.lb": {<md_key>: <md_value>}}. The bytes are protobuf-c's for the
 * same message (test_grpc_codec compares them); anything else is built and
 * packed with protobuf-c. */
typedef struct xp_pb_hdr {
	const char *key, *val;
	size_t klen, vlen;
} xp_pb_hdr;

typedef struct xp_pb_resp {
	uint32_t field;        /* ProcessingResponse field: 1 request_headers,
				* 2 response_headers, 3 request_body, 4 response_body */
	bool mutation;         /* header_mutation with the |n_set| set_headers */
	const xp_pb_hdr *set;
	size_t n_set;
	bool streamed;         /* body_mutation.streamed_response with body, eos */
	const uint8_t *body;
	size_t body_len;
	bool end_of_stream;
	bool clear_route_cache;
	const char *md_key;    /* NULL: no dynamic_metadata */
	const char *md_value;
	size_t md_key_len, md_value_len;
} xp_pb_resp;

/* Packed size of |r|; xp_pb_resp_pack writes exactly that many bytes. */
size_t xp_pb_resp_size(const xp_pb_resp *r);
void xp_pb_resp_pack(const xp_pb_resp *r, uint8_t *out);

/* Percent-encodes |s| for the grpc-message trailer: bytes outside 0x20-0x7e
 * and '%' become "%XX". Truncates at a whole escape to fit |cap| (which
 * includes the NUL); returns the length written. */
size_t xp_grpc_percent_encode(char *out, size_t cap, const char *s);
#endif
