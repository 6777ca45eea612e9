/* A gRPC server over HTTP/2 (nghttp2 + libevent, OpenSSL for TLS with ALPN
 * "h2", or plaintext h2c). One xp_server per worker thread, each with its own
 * SO_REUSEPORT listener on the same port, so a connection and all of its
 * streams live on one thread from start to end: no locks on the request path.
 *
 * The layer knows gRPC framing (length-prefixed messages, trailers,
 * grpc-status) but not protobuf. Handler call order on one stream:
 *
 *     open          0 or 1   request headers complete, method matched
 *     message       0 or more, one per complete request message
 *     half_close    0 or 1   the client sent END_STREAM
 *     close         exactly 1 after a successful open: the stream is gone
 *                  (finished, reset by the client, or its connection closed)
 *
 * After xp_stream_finish no further message callbacks are made. xp_stream
 * pointers are valid from open until close returns.
 */
#ifndef KEPP_EXTPROC_GRPC_H
#define KEPP_EXTPROC_GRPC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct event_base;

typedef struct xp_stream xp_stream;
typedef struct xp_server xp_server;
typedef struct xp_tls xp_tls;

/* gRPC status codes used here. */
enum {
	XP_GRPC_OK = 0,
	XP_GRPC_CANCELLED = 1,
	XP_GRPC_UNKNOWN = 2,
	XP_GRPC_INVALID_ARGUMENT = 3,
	XP_GRPC_RESOURCE_EXHAUSTED = 8,
	XP_GRPC_UNIMPLEMENTED = 12,
	XP_GRPC_INTERNAL = 13,
	XP_GRPC_UNAVAILABLE = 14,
};

typedef struct xp_method {
	const char *path; /* e.g. "/envoy.service.ext_proc.v3.ExternalProcessor/Process" */
	/* Returns the per-stream context, or NULL to fail the stream with
	 * INTERNAL (allocation failure). */
	void *(*open)(xp_stream *st, void *method_ctx);
	/* One complete message; |msg| is valid only during the call. */
	void (*message)(xp_stream *st, void *stream_ctx, const uint8_t *msg, size_t len);
	void (*half_close)(xp_stream *st, void *stream_ctx);
	/* |cancelled|: the stream ended before xp_stream_finish (RST_STREAM,
	 * connection loss, drain timeout, or this layer failed it: oversize,
	 * compressed or truncated message). Free |stream_ctx| here. */
	void (*close)(xp_stream *st, void *stream_ctx, bool cancelled);
	void *method_ctx;
} xp_method;

/* Queues one response message (framed by this layer). Returns 0, or
 * -ECANCELED when the stream is already finished or gone, -EMSGSIZE over
 * 4 GiB - 1, -ENOMEM. May be called from open on. Response headers go out
 * with the first message. */
int xp_stream_send(xp_stream *st, const uint8_t *msg, size_t len);
/* The same for a message that |pack| writes (|len| bytes, from |msg|)
 * straight into the stream's output: no intermediate copy. */
int xp_stream_send_packed(xp_stream *st, size_t len, void (*pack)(const void *msg, uint8_t *out),
			  const void *msg);
/* Ends the stream with trailers grpc-status (and grpc-message when not NULL,
 * percent-encoded here), after every queued message; before any message it
 * is a Trailers-Only response. Idempotent; a no-op once the stream is gone. */
void xp_stream_finish(xp_stream *st, int grpc_status, const char *grpc_message);
/* The value of request header |name| (lowercase), or NULL. */
const char *xp_stream_header(const xp_stream *st, const char *name);

/* gRPC's usual default receive limit. */
#define XP_DEFAULT_MAX_MESSAGE (4u << 20)

typedef struct xp_server_opts {
	const char *bind_addr;    /* NULL: all addresses (IPv6 dual-stack, else IPv4) */
	int port;
	xp_tls *tls;              /* NULL: plaintext h2c */
	size_t max_message_bytes; /* larger messages fail the stream with RESOURCE_EXHAUSTED;
				   * 0: XP_DEFAULT_MAX_MESSAGE */
	uint32_t max_concurrent_streams;
	/* A new connection must finish its TLS handshake and send the HTTP/2
	 * preface and SETTINGS within this time, else it is closed (a client that
	 * connects and says nothing holds no fd for long). 0: 10 s. */
	int64_t handshake_timeout_ms;
	/* Connections this server holds at once; more are accepted and closed at
	 * once (logged once a second). 0: no limit beyond the fd limit. */
	uint32_t max_connections;
	const xp_method *methods; /* not copied: must outlive the server */
	size_t n_methods;
	const char *name;         /* for logs, e.g. "ext-proc" or "health" */
} xp_server_opts;

/* Creates the listener (SO_REUSEPORT) and registers it on |base|. */
xp_server *xp_server_new(struct event_base *base, const xp_server_opts *o, char *err,
			 size_t errlen);
/* Stops accepting, sends GOAWAY on every connection; streams in flight go on. */
void xp_server_drain(xp_server *s);
/* Streams open on this server right now. Safe to call from any thread. */
size_t xp_server_active_streams(const xp_server *s);
/* The port the listener was bound to (the kernel's pick when opts.port was 0). */
int xp_server_port(const xp_server *s);
/* Cancels what is left (close callbacks run with cancelled = true) and frees. */
void xp_server_free(xp_server *s);

/* TLS material shared by all workers. Loads <cert_dir>/tls.crt and tls.key,
 * or generates a self-signed RSA certificate (Organization "Inference Ext",
 * 10 years, serverAuth) when |cert_dir| is NULL or empty. */
xp_tls *xp_tls_new(const char *cert_dir, char *err, size_t errlen);
/* The lowest TLS version accepted from now on: "1.2" (the default) or "1.3",
 * also in Kubernetes' spelling "VersionTLS12" / "VersionTLS13". Older
 * versions are refused. Returns 0 or -EINVAL. */
int xp_tls_set_min_version(xp_tls *t, const char *version);
/* Reloads the files when they changed (called by the control thread, e.g.
 * every 250 ms with --enable-cert-reload); new connections use the new pair,
 * live ones keep theirs. Returns 1 when reloaded, 0 unchanged, <0 error
 * (the old pair stays in use; the same broken files are not retried, so the
 * error is reported once per change). */
int xp_tls_maybe_reload(xp_tls *t, char *err, size_t errlen);
/* A new server-side SSL for one connection, on the current pair (it holds
 * its own reference to it). Safe to call from any thread; NULL on failure. */
SSL *xp_tls_ssl_new(xp_tls *t);
void xp_tls_free(xp_tls *t);
#endif
