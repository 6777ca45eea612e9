/* The proxy's fast-path service table, swapped whole while requests read it.
 *
 * A table is immutable once published and lives while it has references:
 * the slot holds one, each reader one while it looks a service up. The race
 * of a plain refcount (a reader loads the pointer, the publisher swaps and
 * drops the last reference, the reader increments freed memory) is closed
 * with two reader counters, one per epoch parity, as RCU's grace period: a
 * reader counts itself in the current epoch's counter between loading the
 * pointer and taking its reference; the publisher, after the swap, closes
 * the epoch twice, each time waiting for the counter of the one it closed to
 * drain. A reader that counted itself after that counter read zero loads the
 * pointer after the swap, so never the old one; the readers of a closed
 * epoch are only those already inside, a few instructions each, so the
 * publisher waits briefly and is never starved by new readers. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy_int.h"

static proxy_svc_table *table_new(const proxy_service *v, size_t n)
{
	if (n > (SIZE_MAX - sizeof(proxy_svc_table)) / sizeof(proxy_service))
		return NULL;
	proxy_svc_table *t = malloc(sizeof(*t) + n * sizeof(*v));
	if (!t)
		return NULL;
	atomic_init(&t->refs, 1);
	t->n = n;
	if (n)
		memcpy(t->v, v, n * sizeof(*v));
	return t;
}

int proxy_svcs_init(proxy_svcs *s, const proxy_service *v, size_t n)
{
	memset(s, 0, sizeof(*s));
	proxy_svc_table *t = table_new(v, n);
	if (!t)
		return -ENOMEM;
	atomic_init(&s->cur, t);
	atomic_init(&s->epoch, 0);
	atomic_init(&s->active[0], 0);
	atomic_init(&s->active[1], 0);
	pthread_mutex_init(&s->publish, NULL);
	return 0;
}

const proxy_svc_table *proxy_svcs_acquire(proxy_svcs *s)
{
	unsigned e = atomic_load(&s->epoch) & 1;
	atomic_fetch_add(&s->active[e], 1);
	proxy_svc_table *t = atomic_load(&s->cur);
	atomic_fetch_add(&t->refs, 1);
	atomic_fetch_sub(&s->active[e], 1);
	return t;
}

void proxy_svcs_release(const proxy_svc_table *t)
{
	proxy_svc_table *m = (proxy_svc_table *)t;
	if (m && atomic_fetch_sub(&m->refs, 1) == 1)
		free(m);
}

int proxy_svcs_set(proxy_svcs *s, const proxy_service *v, size_t n)
{
	proxy_svc_table *t = table_new(v, n);
	if (!t)
		return -ENOMEM;
	pthread_mutex_lock(&s->publish);
	proxy_svc_table *old = atomic_exchange(&s->cur, t);
	for (int i = 0; i < 2; i++) {
		unsigned closed = atomic_fetch_add(&s->epoch, 1) & 1;
		while (atomic_load(&s->active[closed]))
			sched_yield();
	}
	pthread_mutex_unlock(&s->publish);
	proxy_svcs_release(old);
	return 0;
}

const proxy_service *proxy_svcs_find(const proxy_svc_table *t, const uint8_t addr[16],
				     uint16_t port)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i].port == port && !memcmp(t->v[i].addr, addr, 16))
			return &t->v[i];
	return NULL;
}

void proxy_svcs_destroy(proxy_svcs *s)
{
	proxy_svc_table *t = atomic_exchange(&s->cur, NULL);
	if (!t)
		return; /* never initialised */
	proxy_svcs_release(t);
	pthread_mutex_destroy(&s->publish);
}
