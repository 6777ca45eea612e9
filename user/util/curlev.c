/* libcurl multi_socket on libevent: curl says which sockets to watch and
 * when to time out; each readiness or timeout goes back to curl, then to the
 * owner's progress callback. */
#include <errno.h>
#include <stdlib.h>

#include "util/curlev.h"

static void on_sock_event(evutil_socket_t fd, short what, void *arg)
{
	curlev *ce = arg;
	int running, act = (what & EV_READ ? CURL_CSELECT_IN : 0) |
			   (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
	curl_multi_socket_action(ce->multi, fd, act, &running);
	ce->progress(ce->ctx);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	curlev *ce = arg;
	int running;
	curl_multi_socket_action(ce->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	ce->progress(ce->ctx);
}

static void sock_unlink(curlev_sock *se)
{
	se->prev->next = se->next;
	se->next->prev = se->prev;
	event_free(se->ev);
	free(se);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
	curlev *ce = userp;
	curlev_sock *se = sockp;
	if (what == CURL_POLL_REMOVE) {
		if (se) {
			sock_unlink(se);
			curl_multi_assign(ce->multi, fd, NULL);
		}
		return 0;
	}
	short kind = (short)((what & CURL_POLL_IN ? EV_READ : 0) |
			     (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST);
	if (se) {
		event_del(se->ev);
		event_assign(se->ev, ce->base, fd, kind, on_sock_event, ce);
	} else {
		se = calloc(1, sizeof(*se));
		if (!se)
			return -1;
		se->ev = event_new(ce->base, fd, kind, on_sock_event, ce);
		if (!se->ev) {
			free(se);
			return -1;
		}
		se->next = ce->socks.next;
		se->prev = &ce->socks;
		se->next->prev = se;
		ce->socks.next = se;
		curl_multi_assign(ce->multi, fd, se);
	}
	event_add(se->ev, NULL);
	return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	curlev *ce = userp;
	if (timeout_ms < 0) {
		evtimer_del(ce->timer);
		return 0;
	}
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	evtimer_add(ce->timer, &tv);
	return 0;
}

int curlev_init(curlev *ce, struct event_base *base, void (*progress)(void *ctx), void *ctx)
{
	ce->base = base;
	ce->progress = progress;
	ce->ctx = ctx;
	ce->socks.next = ce->socks.prev = &ce->socks;
	ce->multi = curl_multi_init();
	ce->timer = evtimer_new(base, on_timer, ce);
	if (!ce->multi || !ce->timer)
		return -ENOMEM;
	curl_multi_setopt(ce->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(ce->multi, CURLMOPT_SOCKETDATA, ce);
	curl_multi_setopt(ce->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(ce->multi, CURLMOPT_TIMERDATA, ce);
	return 0;
}

void curlev_free(curlev *ce)
{
	if (ce->multi)
		curl_multi_cleanup(ce->multi);
	ce->multi = NULL;
	while (ce->socks.next && ce->socks.next != &ce->socks)
		sock_unlink(ce->socks.next);
	if (ce->timer)
		event_free(ce->timer);
	ce->timer = NULL;
}
