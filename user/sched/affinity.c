/* session-affinity-scorer: keeps a conversation on the endpoint that served
 * it. The session is named by a request header; the primary pick of each
 * request is remembered (PreRequest), and later requests of the session score
 * 1.0 on that endpoint while it is not saturated, 0 everywhere else.
 *
 * The memory is a fixed set-associative table (8 ways a bucket, the least
 * recently written way evicted) of session-hash -> address-hash, allocated
 * once at build. Each entry is a tiny seqlock: readers never wait, a writer
 * that finds the entry busy skips the update (the next request of the session
 * records it again), so there is no lock on the request path.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "sched/plugins.h"

#define AFF_WAYS 8
#define AFF_MAX_CAPACITY (1 << 24)

struct aff_entry {
	_Atomic uint64_t seq;   /* odd while a writer fills the entry */
	_Atomic uint64_t key;   /* session hash, 0 when empty */
	_Atomic uint64_t addr;  /* endpoint address hash */
	_Atomic int64_t stamp;  /* ms of the last write, for eviction */
};

struct aff_cfg {
	char *header;           /* lowercase, as the header callback wants it */
	long long queue;        /* utilization rule of spec §5.2 */
	double kv;
	int64_t stale_ns;
	size_t mask;            /* buckets - 1 */
	struct aff_entry *tab;  /* (mask + 1) * AFF_WAYS entries */
};

static bool header_token_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

static int aff_create(sched_plugin *p, const cJSON *params, sched_build *b)
{
	const char *header = "x-session-token";
	long long capacity = 65536, queue = 5;
	double kv = 0.8;
	int64_t stale_ns = 200000000;
	param_spec spec[] = {
		{"headerName", P_STRING, &header, NULL},
		{"capacity", P_INT, &capacity, NULL},
		{"queueDepthThreshold", P_INT, &queue, NULL},
		{"kvCacheUtilThreshold", P_FLOAT, &kv, NULL},
		{"metricsStalenessThreshold", P_DURATION, &stale_ns, NULL},
	};
	if (params_parse(b, params, spec, sizeof(spec) / sizeof(spec[0])) < 0)
		return -EINVAL;
	char *h = build_strdup(b, header);
	if (!h)
		return -ENOMEM;
	if (!*h)
		return plugin_error(b, "headerName must not be empty");
	for (char *c = h; *c; c++) {
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
		if (!header_token_char(*c))
			return plugin_error(b, "headerName \"%s\" is not a valid header name",
					    header);
	}
	if (capacity <= 0 || capacity > AFF_MAX_CAPACITY)
		return plugin_error(b, "capacity must be in [1, %d], got %lld", AFF_MAX_CAPACITY,
				    capacity);
	if (queue <= 0)
		return plugin_error(b, "queueDepthThreshold must be strictly positive, got %lld",
				    queue);
	if (kv <= 0.0 || kv > 1.0)
		return plugin_error(b, "kvCacheUtilThreshold must be in (0.0, 1.0], got %f", kv);
	if (stale_ns <= 0)
		return plugin_error(b, "metricsStalenessThreshold must be strictly positive");
	size_t buckets = 1;
	while (buckets * AFF_WAYS < (size_t)capacity)
		buckets <<= 1;
	struct aff_cfg *cfg = build_alloc(b, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	cfg->tab = calloc(buckets * AFF_WAYS, sizeof(*cfg->tab));
	if (!cfg->tab)
		return plugin_error(b, "out of memory");
	cfg->header = h;
	cfg->queue = queue;
	cfg->kv = kv;
	cfg->stale_ns = stale_ns;
	cfg->mask = buckets - 1;
	p->cfg = cfg;
	return 0;
}

static void aff_destroy(const sched_plugin *p)
{
	const struct aff_cfg *cfg = p->cfg;
	if (cfg)
		free(cfg->tab);
}

static uint64_t hash_nz(const void *s, size_t n)
{
	return XXH64(s, n, 0) | 1;
}

/* The session's hash, 0 when the request has no (or an empty) header. */
static uint64_t session_key(const struct aff_cfg *cfg, const sched_ctx *c)
{
	sched_str v;
	if (!c->req->header || !c->req->header(c->req->header_ctx, cfg->header, &v) || !v.len)
		return 0;
	return hash_nz(v.p, v.len);
}

static struct aff_entry *bucket(const struct aff_cfg *cfg, uint64_t key)
{
	return &cfg->tab[((key >> 7) & cfg->mask) * AFF_WAYS];
}

/* The address hash remembered for |key|, 0 when none. Two writers racing on
 * a new session may leave it in two ways: the newest write wins. */
static uint64_t aff_lookup(const struct aff_cfg *cfg, uint64_t key)
{
	struct aff_entry *e = bucket(cfg, key);
	uint64_t best = 0;
	int64_t best_stamp = 0;
	for (size_t i = 0; i < AFF_WAYS; i++) {
		uint64_t s1 = atomic_load(&e[i].seq);
		if (s1 & 1)
			continue;
		uint64_t k = atomic_load(&e[i].key), a = atomic_load(&e[i].addr);
		int64_t st = atomic_load(&e[i].stamp);
		if (atomic_load(&e[i].seq) != s1 || k != key)
			continue;
		if (!best || st > best_stamp) {
			best = a;
			best_stamp = st;
		}
	}
	return best;
}

static void aff_record(const struct aff_cfg *cfg, uint64_t key, uint64_t addr, int64_t now_ms)
{
	struct aff_entry *e = bucket(cfg, key), *victim = NULL;
	for (size_t i = 0; i < AFF_WAYS && !victim; i++)
		if (atomic_load(&e[i].key) == key)
			victim = &e[i];
	for (size_t i = 0; i < AFF_WAYS && !victim; i++)
		if (atomic_load(&e[i].key) == 0)
			victim = &e[i];
	if (!victim) {
		victim = &e[0];
		for (size_t i = 1; i < AFF_WAYS; i++)
			if (atomic_load(&e[i].stamp) < atomic_load(&victim->stamp))
				victim = &e[i];
	}
	uint64_t s = atomic_load(&victim->seq);
	if ((s & 1) || !atomic_compare_exchange_strong(&victim->seq, &s, s + 1))
		return;
	atomic_store(&victim->key, key);
	atomic_store(&victim->addr, addr);
	atomic_store(&victim->stamp, now_ms);
	atomic_store(&victim->seq, s + 2);
}

/* The utilization rule of spec §5.2 for one endpoint: stale or missing
 * metrics, or max(queue/Q, kv/K) >= 1. The queue includes the requests kepp
 * sent after the last scrape, as the queue-scorer sees it. */
static bool saturated(const struct aff_cfg *cfg, const sched_ctx *c, const store_endpoint *ep)
{
	if (!metrics_fresh(ep, c->now_ns, cfg->stale_ns))
		return true;
	long long q = (long long)ep->m.waiting_queue;
	q += inflight_since_ep(c, ep);
	return q >= cfg->queue || ep->m.kv_usage >= cfg->kv;
}

static void aff_score(const sched_plugin *p, const sched_ctx *c, const store_endpoint *const *eps,
		      size_t n, double *out)
{
	const struct aff_cfg *cfg = p->cfg;
	uint64_t key = session_key(cfg, c);
	uint64_t addr = key ? aff_lookup(cfg, key) : 0;
	for (size_t i = 0; i < n; i++) {
		out[i] = 0.0;
		if (addr && hash_nz(eps[i]->addr, strlen(eps[i]->addr)) == addr &&
		    !saturated(cfg, c, eps[i]))
			out[i] = 1.0;
	}
}

static void aff_pre_request(const sched_plugin *p, const sched_ctx *c,
			    const store_endpoint *const *picked, size_t n)
{
	const struct aff_cfg *cfg = p->cfg;
	uint64_t key = session_key(cfg, c);
	if (!key || n == 0)
		return;
	aff_record(cfg, key, hash_nz(picked[0]->addr, strlen(picked[0]->addr)),
		   c->now_ns / 1000000);
}

static const plugin_type session_affinity_scorer = {
	.type = "session-affinity-scorer",
	.kinds = PK_SCORER,
	.needs_inflight = true,
	.create = aff_create,
	.score = aff_score,
	.pre_request = aff_pre_request,
	.destroy = aff_destroy,
};

const plugin_type *const sched_affinity_types[] = {&session_affinity_scorer, NULL};
