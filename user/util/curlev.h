/* curlev: a libcurl multi handle driven by a libevent base (the
 * socket/timer callback pair of libcurl's multi_socket API). Shared by the
 * metrics scraper and the Kubernetes client, both on the control thread. */
#ifndef KEPP_UTIL_CURLEV_H
#define KEPP_UTIL_CURLEV_H
#include <curl/curl.h>
#include <event2/event.h>

typedef struct curlev_sock {
	struct event *ev;
	struct curlev_sock *prev, *next;
} curlev_sock;

typedef struct curlev {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	curlev_sock socks; /* list head: one event per socket curl watches */
	/* Runs after curl made progress, to collect finished transfers. */
	void (*progress)(void *ctx);
	void *ctx;
} curlev;

/* Returns 0, or -ENOMEM (then curlev_free what was made). */
int curlev_init(curlev *ce, struct event_base *base, void (*progress)(void *ctx), void *ctx);
/* Cleans the multi handle up (remove the easy handles first) and frees the
 * events of sockets curl did not report as removed. Safe on a zeroed or
 * partly made curlev. */
void curlev_free(curlev *ce);
#endif
