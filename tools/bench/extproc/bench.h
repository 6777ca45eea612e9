/* bench-extproc: an ext_proc load generator that plays Envoy (see main.c). */
#ifndef KEPP_BENCH_EXTPROC_H
#define KEPP_BENCH_EXTPROC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- pb.c: the messages Envoy sends, and a reader for kepp's answers ---- */

/* ProcessingResponse oneof field numbers. */
enum {
	PR_REQUEST_HEADERS = 1,
	PR_RESPONSE_HEADERS = 2,
	PR_REQUEST_BODY = 3,
	PR_RESPONSE_BODY = 4,
	PR_REQUEST_TRAILERS = 5,
	PR_RESPONSE_TRAILERS = 6,
	PR_IMMEDIATE = 7,
};

typedef struct bbuf {
	uint8_t *p;
	size_t len, cap;
} bbuf;

void bb_put(bbuf *b, const void *p, size_t n);
void bb_free(bbuf *b);

typedef struct kv {
	const char *k, *v;
} kv;

/* A gRPC-framed ProcessingRequest with request_headers (values in
 * raw_value, as Envoy sends them) and, when |protocol|, a protocol_config of
 * FULL_DUPLEX_STREAMED both ways. Appended to |out|. */
void pb_request_headers(bbuf *out, const kv *h, size_t n, bool eos, bool protocol);
/* response_headers, the same way. */
void pb_response_headers(bbuf *out, const kv *h, size_t n, bool eos);
/* A framed request_body (|request|) or response_body message. */
void pb_body(bbuf *out, bool request, const uint8_t *p, size_t n, bool eos);
/* A framed request_trailers message with no trailers. */
void pb_request_trailers(bbuf *out);

/* What one ProcessingResponse says, as far as the benchmark checks it. */
typedef struct presp {
	int kind;            /* PR_* or 0 when unreadable */
	size_t body_len;     /* streamed_response body bytes */
	bool body_eos;       /* streamed_response end_of_stream */
	const uint8_t *dest; /* x-gateway-destination-endpoint value (in the message) */
	size_t dest_len;
	int status;          /* immediate_response HTTP status */
} presp;

int pb_read_response(const uint8_t *p, size_t n, presp *r);

/* ---- client.c: connections and requests --------------------------------- */

typedef struct bench_opts {
	const char *host;
	int port;
	bool tls;
	int conns, streams;  /* closed loop: conns x streams requests in flight */
	double rate;         /* > 0: open loop at this many requests per second */
	double duration, warmup;
	size_t body_size, chunk;
	int variants;
	bool trailers;       /* end the request with trailers instead of eos */
	bool response;       /* run the response phases too */
	bool unique;         /* a new prompt prefix on every request */
	double pace_us;      /* > 0: one body message every pace_us (a client
			      * uploading at a bounded rate); 0: all at once */
	int objectives;      /* > 0: x-gateway-inference-objective obj-<i % n> */
	const char *model;
	int pid;             /* server process to measure, 0: none */
	double idle;         /* seconds of idle server CPU sampled before the load */
	double rss_every;    /* > 0: sample the server's VmRSS this often */
	bool json;
	const char *label;
} bench_opts;

int bench_run(const bench_opts *o);

/* ---- main.c helpers shared with client.c -------------------------------- */

uint64_t now_ns(void);
#endif
