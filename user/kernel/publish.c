/* Publisher: turns a snapshot into one kepp_svc table per fast-path service
 * (userspace computes, BPF indexes), and reads back what the kernel counted. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "kernel/kern_int.h"
#include "util/log.h"

void kern_svc_key(const kern_service *s, struct kepp_svc_key *key)
{
	memset(key, 0, sizeof(*key));
	memcpy(key->vip.ip, s->addr, 16);
	key->vip.port = htons(s->port);
}

/* Connections in flight to |a| now, creating its counters when absent. */
static int64_t live_inflight(kern *k, const struct kepp_addr *a)
{
	struct kepp_be_stats st;
	if (bpf_map_lookup_elem(k->be_fd, a, &st) == 0)
		return st.inflight;
	memset(&st, 0, sizeof(st));
	bpf_map_update_elem(k->be_fd, a, &st, BPF_NOEXIST);
	return 0;
}

typedef struct cand {
	struct kepp_addr addr;
	uint32_t weight, base;
} cand;

static int by_weight_desc(const void *a, const void *b)
{
	const cand *x = a, *y = b;
	return x->weight < y->weight ? 1 : x->weight > y->weight ? -1 : 0;
}

int kern_ep_addr(const store_endpoint *ep, struct kepp_addr *out, bool *v6)
{
	memset(out, 0, sizeof(*out));
	if (kern_parse_ip(ep->ip, (uint8_t *)out->ip, v6) < 0)
		return -EINVAL;
	out->port = htons(ep->port);
	return 0;
}

/* New bases for |snap|'s endpoints: kept while an endpoint shows the same
 * scrape, else taken from the live count now. */
static int update_bases(kern *k, const store_snapshot *snap)
{
	uint32_t n = snap->n_endpoints;
	kern_base *nb = calloc(n ? n : 1, sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		const store_endpoint *ep = &snap->endpoints[i];
		bool v6;
		if (kern_ep_addr(ep, &nb[i].addr, &v6) < 0)
			continue;
		const kern_base *old = NULL;
		for (uint32_t j = 0; j < k->n_bases && !old; j++)
			if (!memcmp(&k->bases[j].addr, &nb[i].addr, sizeof(nb[i].addr)))
				old = &k->bases[j];
		nb[i].update_ms = ep->m.update_ms;
		if (old && old->update_ms == ep->m.update_ms) {
			nb[i].inflight = old->inflight;
		} else {
			int64_t live = live_inflight(k, &nb[i].addr);
			nb[i].inflight = live > 0 ? (uint32_t)live : 0;
		}
	}
	free(k->bases);
	k->bases = nb;
	k->n_bases = n;
	return 0;
}

static int publish_one(kern *k, size_t idx, const store_snapshot *snap, int64_t now)
{
	const kern_service *s = &k->svcs[idx];
	uint32_t n = snap->n_endpoints;
	arena_reset(&k->mem);
	uint32_t *w = arena_alloc(&k->mem, (n ? n : 1) * sizeof(*w));
	cand *c = arena_alloc(&k->mem, (n ? n : 1) * sizeof(*c));
	if (!w || !c)
		return -ENOMEM;
	sched_fastpath_info info;
	int r = sched_fastpath_weights(k->sched, snap, s->model, &k->mem, w, &info);
	if (r < 0)
		return r;
	size_t nc = 0;
	for (uint32_t i = 0; i < n; i++) {
		bool v6;
		/* One family per VIP: an IPv4 socket cannot reach an IPv6 pod. */
		if (kern_ep_addr(&snap->endpoints[i], &c[nc].addr, &v6) < 0 || v6 != s->v6)
			continue;
		c[nc].weight = w[i] * (KEPP_WEIGHT_MAX / SCHED_FASTPATH_WMAX);
		c[nc].base = k->bases[i].inflight;
		nc++;
	}
	/* The best KEPP_MAX_BACKENDS; the order among equals is kept. */
	qsort(c, nc, sizeof(*c), by_weight_desc);
	if (nc > KEPP_MAX_BACKENDS)
		nc = KEPP_MAX_BACKENDS;
	struct kepp_svc v;
	memset(&v, 0, sizeof(v));
	v.published_ns = (uint64_t)now;
	v.max_age_ns = (uint64_t)k->max_age_ns;
	v.id = kern_service_id(s);
	v.flags = (info.sheddable ? KEPP_SVC_SHEDDABLE : 0) |
		  (info.saturated ? KEPP_SVC_SATURATED : 0) |
		  (k->affinity_pct ? KEPP_SVC_AFFINITY : 0);
	v.affinity_pct = k->affinity_pct;
	v.n_backends = (uint32_t)nc;
	for (size_t i = 0; i < nc; i++) {
		v.be[i].addr = c[i].addr;
		v.be[i].weight = c[i].weight;
		v.be[i].inflight = c[i].base;
	}
	struct kepp_svc_key key;
	kern_svc_key(s, &key);
	if (bpf_map_update_elem(k->svc_fd, &key, &v, BPF_ANY) < 0)
		return -errno;
	return 0;
}

/* kepp_model_v1: each service's model and pool, rewritten only when they
 * differ from what the map holds; entries of services no longer in
 * kepp_svc_v1 are removed whenever the service set changes. */
static void publish_meta(kern *k, const store_snapshot *snap)
{
	const store_catalog *c = snap->catalog;
	char pool[KEPP_POOL_MAX] = "";
	if (c->has_pool && c->pool.name)
		snprintf(pool, sizeof(pool), "%s/%s", c->pool.namespace_ ? c->pool.namespace_ : "",
			 c->pool.name);
	uint64_t sig = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < k->n_svcs; i++) {
		struct kepp_svc_key key;
		struct kepp_svc_meta want, have;
		kern_svc_key(&k->svcs[i], &key);
		const unsigned char *p = (const unsigned char *)&key;
		for (size_t b = 0; b < sizeof(key); b++)
			sig = (sig ^ p[b]) * 0x100000001b3ULL;
		memset(&want, 0, sizeof(want));
		snprintf(want.model, sizeof(want.model), "%s", k->svcs[i].model);
		memcpy(want.pool, pool, sizeof(want.pool));
		want.id = kern_service_id(&k->svcs[i]);
		if (bpf_map_lookup_elem(k->model_fd, &key, &have) == 0 &&
		    !memcmp(&have, &want, sizeof(want)))
			continue;
		if (bpf_map_update_elem(k->model_fd, &key, &want, BPF_ANY) < 0)
			ulog(LOG_WARN, "cannot write a fast-path service's model", "service",
			     k->svcs[i].vip, "error", strerror(errno), NULL);
	}
	if (sig == k->meta_sig)
		return;
	k->meta_sig = sig;
	struct kepp_svc_key key, next;
	struct kepp_svc v;
	void *prev = NULL;
	while (bpf_map_get_next_key(k->model_fd, prev, &next) == 0) {
		if (bpf_map_lookup_elem(k->svc_fd, &next, &v) < 0 &&
		    bpf_map_delete_elem(k->model_fd, &next) == 0)
			continue; /* deleted: restart from the same predecessor */
		key = next;
		prev = &key;
	}
}

int kern_publish(kern *k, const store_snapshot *snap)
{
	if (!k || !snap)
		return 0;
	int64_t now = kern_now_ns();
	int ret = update_bases(k, snap);
	if (ret < 0) {
		ulog(LOG_ERROR, "out of memory publishing the fast-path tables", NULL);
		return ret;
	}
	for (size_t i = 0; i < k->n_svcs; i++) {
		int r = publish_one(k, i, snap, now);
		if (r < 0) {
			ulog(LOG_ERROR, "cannot publish a fast-path table", "service", k->svcs[i].vip,
			     "error", strerror(-r), NULL);
			ret = r;
		}
	}
	publish_meta(k, snap);
	kern_drain_tick(k, snap, now);
	return ret;
}

int kern_stats(kern *k, kern_counters *out)
{
	memset(out, 0, sizeof(*out));
	out->drained = k->drained;
	int ncpu = libbpf_num_possible_cpus();
	if (ncpu <= 0)
		return ncpu < 0 ? ncpu : -EINVAL;
	uint64_t *per = calloc((size_t)ncpu, sizeof(*per));
	if (!per)
		return -ENOMEM;
	uint64_t *dst[KEPP_VERDICTS] = {
		[KEPP_PICKED] = &out->picked,   [KEPP_NO_SERVICE] = &out->no_service,
		[KEPP_STALE] = &out->stale,     [KEPP_EMPTY] = &out->empty,
		[KEPP_ALL_SHED] = &out->all_shed,
	};
	for (uint32_t v = 0; v < KEPP_VERDICTS; v++) {
		if (bpf_map_lookup_elem(k->verdict_fd, &v, per) < 0)
			continue;
		for (int c = 0; c < ncpu; c++)
			*dst[v] += per[c];
	}
	free(per);
	struct kepp_vip_stats *vs = calloc((size_t)ncpu, sizeof(*vs));
	if (!vs)
		return -ENOMEM;
	for (size_t i = 0; i < k->n_svcs; i++) {
		kern_vip_stats *o = &out->vips[out->n_vips++];
		struct kepp_svc_key key;
		snprintf(o->vip, sizeof(o->vip), "%s", k->svcs[i].vip);
		kern_svc_key(&k->svcs[i], &key);
		if (bpf_map_lookup_elem(k->vip_fd, &key, vs) < 0)
			continue;
		for (int c = 0; c < ncpu; c++) {
			o->packets += vs[c].packets;
			o->bytes += vs[c].bytes;
			o->syn_shed += vs[c].syn_shed;
		}
	}
	free(vs);
	struct kepp_addr key, next;
	void *prev = NULL;
	while (out->n_backends < KERN_STATS_MAX_BACKENDS &&
	       bpf_map_get_next_key(k->be_fd, prev, &next) == 0) {
		struct kepp_be_stats st;
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(k->be_fd, &next, &st) < 0)
			continue;
		kern_backend_stats *b = &out->backends[out->n_backends++];
		kern_format_addr(b->addr, sizeof(b->addr), (const uint8_t *)next.ip,
				 ntohs(next.port));
		b->inflight = st.inflight;
		b->connects = st.connects;
		b->closes = st.closes;
		b->srtt_us = st.srtt_us;
	}
	return 0;
}

void kern_log_stats(kern *k)
{
	if (!log_enabled(LOG_VERBOSE))
		return;
	kern_counters *c = malloc(sizeof(*c));
	if (!c || kern_stats(k, c) < 0) {
		free(c);
		return;
	}
	char buf[8192];
	size_t o = (size_t)snprintf(buf, sizeof(buf),
				    "\"picked\":%llu,\"stale\":%llu,\"empty\":%llu,\"all_shed\":%llu,"
				    "\"drained\":%llu,\"backends\":[",
				    (unsigned long long)c->picked, (unsigned long long)c->stale,
				    (unsigned long long)c->empty, (unsigned long long)c->all_shed,
				    (unsigned long long)c->drained);
	for (size_t i = 0; i < c->n_backends && o < sizeof(buf) - 160; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o,
				      "%s{\"addr\":\"%s\",\"inflight\":%lld,\"connects\":%llu,"
				      "\"srtt_us\":%u}",
				      i ? "," : "", c->backends[i].addr,
				      (long long)c->backends[i].inflight,
				      (unsigned long long)c->backends[i].connects,
				      c->backends[i].srtt_us);
	snprintf(buf + o, sizeof(buf) - o, "]");
	ulog_raw(LOG_VERBOSE, "fast path counters", buf);
	free(c);
}
