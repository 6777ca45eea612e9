/* Drain: connect() pins a connection to its pod for the connection's whole
 * life, so a pod that leaves the pool (deleted, not Ready, drained) keeps
 * its steered connections. kepp notes when each backend the datapath knows
 * (a key of kepp_be_v1: every endpoint published, by this kepp or an
 * earlier one) is no longer in the snapshot; one that comes back before
 * --fastpath-drain is forgotten. Once the grace period is over, the backends
 * that still have steered connections go into kepp_drain_v1 and the
 * kepp_drain TCP iterator closes those connections with bpf_sock_destroy;
 * the clients reconnect and connect() steers them to a live pod.
 *
 * The iterator walks the TCP sockets of kepp's network namespace, so only
 * clients in that namespace are drained; the run is synchronous on the
 * control thread and costs one pass over the namespace's sockets, only when
 * a grace period ends. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "kepp_drain.skel.h"
#include "kernel/kern_int.h"
#include "util/log.h"

static int addr_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct kepp_addr));
}

static bool in_set(const struct kepp_addr *a, const struct kepp_addr *set, size_t n)
{
	return n && bsearch(a, set, n, sizeof(*set), addr_cmp);
}

static kern_left *left_find(kern_leftset *s, const struct kepp_addr *a)
{
	for (uint32_t i = 0; i < s->n; i++)
		if (!addr_cmp(&s->v[i].addr, a))
			return &s->v[i];
	return NULL;
}

static void left_remove(kern_leftset *s, kern_left *e)
{
	*e = s->v[--s->n];
}

int kern_left_step(kern_leftset *s, const struct kepp_addr *known, size_t n_known,
		   const struct kepp_addr *present, size_t n_present, int64_t now,
		   kern_left_fn note, void *ctx)
{
	for (uint32_t i = 0; i < s->n;) {
		if (in_set(&s->v[i].addr, present, n_present)) {
			if (note)
				note(ctx, &s->v[i].addr, false);
			left_remove(s, &s->v[i]);
			continue;
		}
		i++;
	}
	for (size_t i = 0; i < n_known; i++) {
		if (in_set(&known[i], present, n_present) || left_find(s, &known[i]))
			continue;
		if (s->n == s->cap) {
			uint32_t cap = s->cap ? s->cap * 2 : 16;
			kern_left *v = realloc(s->v, cap * sizeof(*v));
			if (!v)
				return -ENOMEM;
			s->v = v;
			s->cap = cap;
		}
		s->v[s->n++] = (kern_left){.addr = known[i], .since_ns = now};
		if (note)
			note(ctx, &known[i], true);
	}
	return 0;
}

void kern_leftset_free(kern_leftset *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

int kern_drain_open(kern *k, int64_t drain_ms, char *err, size_t errlen)
{
	LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = k->root);
	int r = 0;
	k->drain = kepp_drain_bpf__open_opts(&oo);
	if (!k->drain || (r = kern_pins_prepare(k, k->drain->obj)) < 0 ||
	    (r = kepp_drain_bpf__load(k->drain)) < 0) {
		snprintf(err, errlen, "load kepp_drain (bpf_sock_destroy needs Linux 6.5+): %s",
			 strerror(k->drain ? -r : errno));
		r = -EINVAL;
		goto fail;
	}
	k->drain_link = bpf_program__attach_iter(k->drain->progs.kepp_drain, NULL);
	if (!k->drain_link) {
		r = -errno;
		snprintf(err, errlen, "attach the kepp_drain iterator: %s", strerror(-r));
		goto fail;
	}
	k->drain_fd = bpf_map__fd(k->drain->maps.kepp_drain_v1);
	k->drain_ns = drain_ms * 1000000LL;
	return 0;
fail:
	kepp_drain_bpf__destroy(k->drain);
	k->drain = NULL;
	return r;
}

void kern_drain_close(kern *k)
{
	bpf_link__destroy(k->drain_link);
	kepp_drain_bpf__destroy(k->drain);
	kern_leftset_free(&k->left);
}

static void fmt(char *out, size_t cap, const struct kepp_addr *a)
{
	kern_format_addr(out, cap, (const uint8_t *)a->ip, ntohs(a->port));
}

static void note_change(void *ctx, const struct kepp_addr *a, bool gone)
{
	kern *k = ctx;
	char addr[STORE_ADDR_MAX], grace[32];
	fmt(addr, sizeof(addr), a);
	snprintf(grace, sizeof(grace), "%.3gs", (double)k->drain_ns / 1e9);
	if (gone)
		ulog(LOG_VERBOSE,
		     "a backend left the pool; its fast-path connections close after the grace "
		     "period",
		     "backend", addr, "grace", grace, NULL);
	else
		ulog(LOG_VERBOSE,
		     "a backend came back within the grace period; its connections stay",
		     "backend", addr, NULL);
}

/* Every backend the datapath knows (kepp_be_v1 keys) into a new array. */
static struct kepp_addr *known_backends(kern *k, size_t *n)
{
	struct kepp_addr *v = malloc(KEPP_MAX_ENDPOINTS * sizeof(*v));
	struct kepp_addr key, next;
	void *prev = NULL;
	*n = 0;
	if (!v)
		return NULL;
	while (*n < KEPP_MAX_ENDPOINTS && bpf_map_get_next_key(k->be_fd, prev, &next) == 0) {
		v[(*n)++] = next;
		key = next;
		prev = &key;
	}
	return v;
}

/* The snapshot's endpoints, sorted for bsearch. */
static struct kepp_addr *present_backends(const store_snapshot *snap, size_t *n)
{
	struct kepp_addr *v = malloc((snap->n_endpoints ? snap->n_endpoints : 1) * sizeof(*v));
	*n = 0;
	if (!v)
		return NULL;
	for (uint32_t i = 0; i < snap->n_endpoints; i++) {
		bool v6;
		if (kern_ep_addr(&snap->endpoints[i], &v[*n], &v6) == 0)
			(*n)++;
	}
	qsort(v, *n, sizeof(*v), addr_cmp);
	return v;
}

static int64_t be_inflight(kern *k, const struct kepp_addr *a)
{
	struct kepp_be_stats st;
	return bpf_map_lookup_elem(k->be_fd, a, &st) == 0 ? st.inflight : 0;
}

/* Runs the iterator once over kepp's network namespace. */
static int run_iterator(kern *k)
{
	int fd = bpf_iter_create(bpf_link__fd(k->drain_link));
	if (fd < 0)
		return -errno;
	char buf[256];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		;
	int r = n < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* Closes the steered connections of the backends whose grace period is
 * over. A backend left with no connection is simply forgotten (and its
 * counters removed); one whose connections the iterator could not reach
 * (clients in another network namespace) is tried again a grace period
 * later. */
static void drain_due(kern *k, int64_t now)
{
	uint32_t queued = 0;
	for (uint32_t i = 0; i < k->left.n;) {
		kern_left *e = &k->left.v[i];
		if (now - e->since_ns < k->drain_ns) {
			i++;
			continue;
		}
		if (be_inflight(k, &e->addr) <= 0) {
			bpf_map_delete_elem(k->be_fd, &e->addr);
			left_remove(&k->left, e);
			continue;
		}
		struct kepp_drain zero = {0};
		if (bpf_map_update_elem(k->drain_fd, &e->addr, &zero, BPF_ANY) == 0) {
			e->queued = true;
			queued++;
		}
		i++;
	}
	if (!queued)
		return;
	int r = run_iterator(k);
	if (r < 0)
		ulog(LOG_WARN, "the fast-path drain iterator failed", "error", strerror(-r), NULL);
	for (uint32_t i = 0; i < k->left.n;) {
		kern_left *e = &k->left.v[i];
		if (!e->queued) {
			i++;
			continue;
		}
		struct kepp_drain d = {0};
		bpf_map_lookup_elem(k->drain_fd, &e->addr, &d);
		bpf_map_delete_elem(k->drain_fd, &e->addr);
		e->queued = false;
		k->drained += d.destroyed;
		char addr[STORE_ADDR_MAX], n[24];
		fmt(addr, sizeof(addr), &e->addr);
		snprintf(n, sizeof(n), "%llu", (unsigned long long)d.destroyed);
		int64_t left = be_inflight(k, &e->addr);
		ulog(d.destroyed ? LOG_DEFAULT : LOG_VERBOSE,
		     "closed the fast-path connections to a backend that left the pool", "backend",
		     addr, "connections", n, NULL);
		if (left <= 0) {
			bpf_map_delete_elem(k->be_fd, &e->addr);
			left_remove(&k->left, e);
			continue;
		}
		e->since_ns = now;
		i++;
	}
}

/* FNV-1a of the sorted backend set: a new snapshot comes with every scrape,
 * the set changes far more rarely. */
static uint64_t set_sig(const struct kepp_addr *v, size_t n)
{
	const unsigned char *p = (const unsigned char *)v;
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n * sizeof(*v); i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

void kern_drain_tick(kern *k, const store_snapshot *snap, int64_t now)
{
	/* Before the pool has been read, every backend would look gone. */
	if (!k->drain_link || !snap->synced)
		return;
	size_t np = 0, nk = 0;
	struct kepp_addr *present = present_backends(snap, &np);
	if (!present) {
		ulog(LOG_ERROR, "out of memory tracking backends that left the pool", NULL);
		return;
	}
	uint64_t sig = set_sig(present, np);
	if (!k->drain_scanned || sig != k->drain_sig) {
		struct kepp_addr *known = known_backends(k, &nk);
		int r = -ENOMEM;
		if (known)
			r = kern_left_step(&k->left, known, nk, present, np, now, note_change, k);
		free(known);
		if (r < 0) {
			free(present);
			ulog(LOG_ERROR, "out of memory tracking backends that left the pool", NULL);
			return;
		}
		k->drain_sig = sig;
		k->drain_scanned = true;
	}
	free(present);
	drain_due(k, now);
}
