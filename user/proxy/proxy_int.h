/* Internal to user/proxy/: the bounded HTTP/1.1 message parsers (http.c),
 * kept free of sockets so tests/unit/test_kern_proxy.c can feed them bytes,
 * and the live service table (services.c). */
#ifndef KEPP_PROXY_INT_H
#define KEPP_PROXY_INT_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proxy/proxy.h"

#define PROXY_MAX_HEADERS 128

typedef struct proxy_hdr {
	const char *name, *val; /* inside the parsed buffer, not NUL-terminated */
	size_t nlen, vlen;      /* the value without surrounding blanks */
} proxy_hdr;

/* A request or response head. */
typedef struct proxy_head {
	const char *method, *target; /* request line */
	size_t mlen, tlen;
	int status;                  /* status line */
	const char *reason;
	size_t rlen;
	int minor;                   /* HTTP/1.<minor>: 0 or 1 */
	proxy_hdr h[PROXY_MAX_HEADERS];
	size_t n;
	/* Framing and connection handling from the headers. */
	bool chunked;    /* Transfer-Encoding: chunked */
	bool has_length; /* Content-Length */
	uint64_t length;
	bool close;      /* no persistent connection after this message */
	bool expect_continue;
} proxy_head;

/* Parses a head: |buf| holds it whole, up to and including the blank line.
 * Returns 0, or -EINVAL (malformed: 400 / bad gateway), -E2BIG (too many
 * headers: 431), -ENOTSUP (a transfer coding other than chunked: 501), with
 * the reason in *why. */
int proxy_parse_request(const char *buf, size_t len, proxy_head *h, const char **why);
int proxy_parse_response(const char *buf, size_t len, proxy_head *h, const char **why);

/* The header |name| (case-insensitive), or NULL. */
const proxy_hdr *proxy_head_find(const proxy_head *h, const char *name);
/* Whether |name| is hop-by-hop in |h| (RFC 9110 §7.6.1: the fixed list and
 * every option the Connection header names): a proxy never forwards it. */
bool proxy_hop_by_hop(const proxy_head *h, const char *name, size_t nlen);

/* Chunked transfer coding decoder (RFC 9112 §7.1), fed any slices. */
typedef struct proxy_chunked {
	int state;
	uint64_t left;   /* data bytes left in the current chunk */
	size_t line;     /* bytes of the current size or trailer line */
	size_t trailers; /* bytes of trailer section */
	unsigned digits;
} proxy_chunked;

/* Consumes bytes of |p|[0..n): returns how many (>= 0), or -EINVAL on a
 * framing error. When it stops at chunk data, *data and *dlen are that data (a
 * span of |p| inside the consumed bytes), else *dlen is 0. *done is set
 * once the last chunk and the trailer section are consumed. */
ssize_t proxy_chunked_feed(proxy_chunked *c, const char *p, size_t n, const char **data,
			   size_t *dlen, bool *done);

/* One published set of fast-path services: never changed once published. */
typedef struct proxy_svc_table {
	atomic_uint refs;
	size_t n;
	proxy_service v[];
} proxy_svc_table;

/* The set in force: swapped whole by any thread, read by any number of
 * threads without a lock (services.c says how). */
typedef struct proxy_svcs {
	_Atomic(proxy_svc_table *) cur;
	atomic_uint epoch;
	atomic_uint active[2]; /* readers between load and reference, per epoch parity */
	pthread_mutex_t publish; /* one publisher at a time */
} proxy_svcs;

/* Starts with a copy of |v|[0..n). Returns 0 or -ENOMEM. */
int proxy_svcs_init(proxy_svcs *s, const proxy_service *v, size_t n);
/* Publishes a copy of |v|[0..n) (any thread); readers holding the previous
 * table keep it until they release it. Returns 0, or -ENOMEM with the set in
 * force unchanged. */
int proxy_svcs_set(proxy_svcs *s, const proxy_service *v, size_t n);
/* The table in force, never NULL; give it back with proxy_svcs_release. */
const proxy_svc_table *proxy_svcs_acquire(proxy_svcs *s);
void proxy_svcs_release(const proxy_svc_table *t);
/* The service of |addr| (16-byte form) and |port| (host order) in |t|, or NULL. */
const proxy_service *proxy_svcs_find(const proxy_svc_table *t, const uint8_t addr[16],
				     uint16_t port);
/* Drops the slot's table (no reader may be left); a no-op when init failed. */
void proxy_svcs_destroy(proxy_svcs *s);
#endif
