/* proxy: kepp's userspace fallback path, a small HTTP/1.1 reverse proxy.
 *
 * Connections the kernel fast path cannot steer (the table is stale, empty
 * or all shed, or the client is outside the steered cgroup) reach a
 * fast-path VIP:port, and sk_lookup hands them to this proxy's listener.
 * For each request it reads the whole body, runs the real scheduler
 * (sched_decide on the current snapshot, as for an ext_proc request),
 * forwards the request to the picked pod and streams the answer back (SSE
 * too), with keep-alive. A scheduling error is answered with the status and
 * text of spec §2.8.
 *
 * Threads: the proxy runs its own thread and event loop; it only reads the
 * store (lock-free snapshots) and calls the sched like a worker does. The
 * service set is swapped whole by proxy_set_services from any thread and
 * read per request without a lock.
 */
#ifndef KEPP_PROXY_H
#define KEPP_PROXY_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define PROXY_MODEL_MAX 256

/* A fast-path service: requests that reached |addr|:|port| and whose body
 * names no model are for |model|. */
typedef struct proxy_service {
	uint8_t addr[16]; /* network order; IPv4 as ::ffff:a.b.c.d */
	uint16_t port;    /* host order */
	char model[PROXY_MODEL_MAX];
} proxy_service;

typedef struct proxy_opts {
	store *store;
	const proxy_service *services; /* the set at start (copied) */
	size_t n_services;
	size_t max_body_bytes;   /* larger request bodies get 413 (0: 64 MiB) */
	size_t max_header_bytes; /* request or response head (0: 64 KiB) */
	uint32_t max_connections; /* client connections at once (0: 4096) */
	int64_t idle_timeout_ms;  /* client silent this long while sending a request (0: 60s) */
	int64_t connect_timeout_ms;  /* to a pod (0: 5s) */
	int64_t upstream_timeout_ms; /* pod silent this long mid-answer (0: 10 min) */
} proxy_opts;

typedef struct proxy proxy;

/* Listens on 127.0.0.1 and [::1] (a port the kernel chooses: sk_lookup
 * assigns by socket, not by port; IPv6 only where the host has it) and
 * starts the proxy thread. NULL with the reason in |err| (not logged). */
proxy *proxy_new(const proxy_opts *o, char *err, size_t errlen);

/* Makes a copy of |services|[0..n) the fast-path service set (any thread).
 * Every request is matched, when its body is complete, against the set in
 * force at that moment, by the VIP:port its client reached: a body naming
 * no model gets that service's model. A request on a connection whose
 * service has left the set is served as one for no service (the body's own
 * model), and its answer closes the connection, so the client's next
 * connection goes wherever the VIP now leads. Returns 0, or -ENOMEM with the
 * set in force unchanged. */
int proxy_set_services(proxy *p, const proxy_service *services, size_t n);

/* The listening socket of |family| (AF_INET, AF_INET6), or -1. */
int proxy_fd(const proxy *p, int family);
/* Its port (host order), or 0. */
uint16_t proxy_port(const proxy *p, int family);

/* Starts the drain (SIGTERM; any thread): the listeners close, so no new
 * connection arrives; idle connections close; requests in flight finish
 * (their connections close after the answer) for up to |timeout_ms|, then
 * the rest are cut. */
void proxy_drain(proxy *p, int64_t timeout_ms);
/* Whether the drain is over: no connection left (any thread). */
bool proxy_drained(const proxy *p);

/* An adm_collect_fn (ctx: the proxy): kepp_proxy_requests_total{code}, the
 * answers by HTTP status. Safe from any thread (atomic counters). */
struct adm_out;
void proxy_collect(void *ctx, struct adm_out *o);

/* Stops the thread and closes every connection (requests in flight are cut). */
void proxy_free(proxy *p);
#endif
