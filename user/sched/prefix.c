/* prefix-cache-scorer (spec §4.2) with its approximate prefix index: the
 * request's user input is cut into blocks of blockSizeTokens x 4 characters
 * and chained with xxhash64; an endpoint scores the share of leading blocks
 * the index believes it holds. The index learns from the primary pick.
 *
 * Concurrency: the index is shared by all workers. Servers (endpoints) have
 * their own lock over their LRU; the reverse map hash -> servers is split in
 * shards with a lock each. A request takes one shard lock per block looked
 * up and one server lock to learn; the only global lock is taken the first
 * time a server name is seen, and by the two-minute cleanup.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* XXH64_state_t on the stack: no allocation per request. */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "sched/plugins.h"

#define MAX_SERVERS 1024
#define SERVER_NAME_MAX 128
#define NSHARDS 64
#define CLEANUP_NS (120LL * 1000000000LL) /* servers gone from the pool */
#define CHARS_PER_TOKEN 4

/* ---- block hashes ------------------------------------------------------------ */

#define XP1 0x9E3779B185EBCA87ULL
#define XP2 0xC2B2AE3D27D4EB4FULL
#define XP3 0x165667B19E3779F9ULL
#define XP4 0x85EBCA77C2B2AE63ULL
#define XP5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl64(uint64_t v, int r)
{
	return (v << r) | (v >> (64 - r));
}

static inline uint64_t rd64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static inline uint64_t rd32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap32(v);
#endif
	return v;
}

static inline uint64_t xx_round(uint64_t acc, uint64_t in)
{
	acc += in * XP2;
	return rotl64(acc, 31) * XP1;
}

static inline uint64_t xx_merge(uint64_t acc, uint64_t v)
{
	acc ^= xx_round(0, v);
	return acc * XP1 + XP4;
}

/* XXH64 (seed 0) of block || LE64(prev), the reference's chain step, without
 * building the concatenation: the block's whole 32-byte stripes are read in
 * place, only its last partial stripe and the 8 bytes of |prev| go through a
 * 40-byte buffer. XXH64's algorithm as xxhash.h has it; test_sched compares
 * the values with XXH64() of the concatenation. */
uint64_t prefix_block_hash(const void *block, size_t n, uint64_t prev)
{
	const unsigned char *p = block;
	size_t stripes = n & ~(size_t)31, r = n - stripes;
	unsigned char tail[40];
	memcpy(tail, p + stripes, r);
	for (int k = 0; k < 8; k++)
		tail[r + k] = (unsigned char)(prev >> (8 * k));
	const unsigned char *t = tail;
	size_t tlen = r + 8;
	uint64_t h;
	if (n + 8 >= 32) {
		uint64_t v1 = XP1 + XP2, v2 = XP2, v3 = 0, v4 = 0 - XP1;
		for (const unsigned char *q = p, *end = p + stripes; q < end; q += 32) {
			v1 = xx_round(v1, rd64(q));
			v2 = xx_round(v2, rd64(q + 8));
			v3 = xx_round(v3, rd64(q + 16));
			v4 = xx_round(v4, rd64(q + 24));
		}
		if (tlen >= 32) {
			v1 = xx_round(v1, rd64(t));
			v2 = xx_round(v2, rd64(t + 8));
			v3 = xx_round(v3, rd64(t + 16));
			v4 = xx_round(v4, rd64(t + 24));
			t += 32;
			tlen -= 32;
		}
		h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
		h = xx_merge(h, v1);
		h = xx_merge(h, v2);
		h = xx_merge(h, v3);
		h = xx_merge(h, v4);
	} else {
		h = XP5;
	}
	h += (uint64_t)(n + 8);
	for (; tlen >= 8; t += 8, tlen -= 8) {
		h ^= xx_round(0, rd64(t));
		h = rotl64(h, 27) * XP1 + XP4;
	}
	if (tlen >= 4) {
		h ^= rd32(t) * XP1;
		h = rotl64(h, 23) * XP2 + XP3;
		t += 4;
		tlen -= 4;
	}
	for (; tlen > 0; t++, tlen--) {
		h ^= *t * XP5;
		h = rotl64(h, 11) * XP1;
	}
	h ^= h >> 33;
	h *= XP2;
	h ^= h >> 29;
	h *= XP3;
	h ^= h >> 32;
	return h;
}

/* ---- per-server LRU ---------------------------------------------------------- */

struct lru_node {
	uint64_t hash;
	int32_t prev, next;
};

/* Open-addressed index hash -> node, with the nodes in a list by recency.
 * Both grow with the entries, up to what the capacity needs: memory follows
 * what a server holds, not the capacity it reports (tens of thousands of
 * blocks per vLLM pod). */
struct lru {
	struct lru_node *nodes;
	int32_t *index; /* node, or IDX_EMPTY / IDX_DELETED */
	size_t n, cap_nodes, index_size, deleted;
	size_t capacity, max_index_size;
	int32_t head, tail; /* head: most recent */
};

#define IDX_EMPTY (-1)
#define IDX_DELETED (-2)
#define LRU_MAX_CAPACITY (1u << 22)
#define LRU_MIN_INDEX 64

static size_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (size_t)h;
}

static int lru_init(struct lru *l, size_t capacity)
{
	memset(l, 0, sizeof(*l));
	l->head = l->tail = -1;
	if (capacity > LRU_MAX_CAPACITY)
		capacity = LRU_MAX_CAPACITY;
	l->capacity = capacity ? capacity : 1;
	size_t max = 16;
	while (max < 2 * l->capacity)
		max *= 2;
	l->max_index_size = max;
	size_t sz = max < LRU_MIN_INDEX ? max : LRU_MIN_INDEX;
	l->index = malloc(sz * sizeof(*l->index));
	if (!l->index)
		return -ENOMEM;
	for (size_t i = 0; i < sz; i++)
		l->index[i] = IDX_EMPTY;
	l->index_size = sz;
	return 0;
}

static void lru_clear(struct lru *l)
{
	free(l->nodes);
	free(l->index);
	memset(l, 0, sizeof(*l));
	l->head = l->tail = -1;
}

static int32_t lru_find(const struct lru *l, uint64_t hash, size_t *slot)
{
	size_t mask = l->index_size - 1;
	for (size_t i = mix(hash) & mask;; i = (i + 1) & mask) {
		int32_t v = l->index[i];
		if (v == IDX_EMPTY)
			return -1;
		if (v >= 0 && l->nodes[v].hash == hash) {
			*slot = i;
			return v;
		}
	}
}

static void lru_index_put(struct lru *l, uint64_t hash, int32_t node)
{
	size_t mask = l->index_size - 1;
	for (size_t i = mix(hash) & mask;; i = (i + 1) & mask)
		if (l->index[i] < 0) {
			if (l->index[i] == IDX_DELETED)
				l->deleted--;
			l->index[i] = node;
			return;
		}
}

/* Drops the deleted markers by re-indexing the list, in place. */
static void lru_reindex(struct lru *l)
{
	for (size_t i = 0; i < l->index_size; i++)
		l->index[i] = IDX_EMPTY;
	l->deleted = 0;
	for (int32_t v = l->head; v >= 0; v = l->nodes[v].next)
		lru_index_put(l, l->nodes[v].hash, v);
}

static void lru_unlink(struct lru *l, int32_t v)
{
	struct lru_node *x = &l->nodes[v];
	if (x->prev >= 0)
		l->nodes[x->prev].next = x->next;
	else
		l->head = x->next;
	if (x->next >= 0)
		l->nodes[x->next].prev = x->prev;
	else
		l->tail = x->prev;
}

static void lru_push_front(struct lru *l, int32_t v)
{
	l->nodes[v].prev = -1;
	l->nodes[v].next = l->head;
	if (l->head >= 0)
		l->nodes[l->head].prev = v;
	l->head = v;
	if (l->tail < 0)
		l->tail = v;
}

/* Adds or refreshes |hash|. Returns 2 when it was held already (now the most
 * recent), 1 and sets *evicted when the oldest entry had to go (the LRU is
 * at its capacity, or |full|: the whole index is at its bound and a server
 * replaces its own oldest), 0 when added, -ENOMEM (nothing changed) when
 * the node array could not grow. */
static int lru_add(struct lru *l, uint64_t hash, bool full, uint64_t *evicted)
{
	size_t slot;
	int32_t v = lru_find(l, hash, &slot);
	if (v >= 0) {
		if (v != l->head) {
			lru_unlink(l, v);
			lru_push_front(l, v);
		}
		return 2;
	}
	int ret = 0;
	if ((l->n + 1) * 2 > l->index_size && l->index_size < l->max_index_size) {
		/* More than half in use: twice the slots (at most what the
		 * capacity needs). */
		int32_t *ni = malloc(2 * l->index_size * sizeof(*ni));
		if (ni) {
			free(l->index);
			l->index = ni;
			l->index_size *= 2;
			lru_reindex(l);
		} else if ((l->n + 1) * 4 > l->index_size * 3) {
			return -ENOMEM;
		}
	}
	if (l->n == l->capacity || (full && l->n > 0)) {
		v = l->tail;
		*evicted = l->nodes[v].hash;
		if (lru_find(l, *evicted, &slot) >= 0) {
			l->index[slot] = IDX_DELETED;
			l->deleted++;
		}
		lru_unlink(l, v);
		ret = 1;
	} else {
		if (l->n == l->cap_nodes) {
			size_t nc = l->cap_nodes ? l->cap_nodes * 2 : 256;
			if (nc > l->capacity)
				nc = l->capacity;
			struct lru_node *nn = realloc(l->nodes, nc * sizeof(*nn));
			if (!nn)
				return -ENOMEM;
			l->nodes = nn;
			l->cap_nodes = nc;
		}
		v = (int32_t)l->n++;
	}
	l->nodes[v].hash = hash;
	lru_push_front(l, v);
	if ((l->n + l->deleted) * 4 > l->index_size * 3)
		lru_reindex(l);
	else
		lru_index_put(l, hash, v);
	return ret;
}

/* ---- the index ------------------------------------------------------------------ */

struct pair {
	uint64_t hash;
	uint16_t sid;
	uint8_t state; /* 0 empty, 1 used, 2 deleted */
};

struct shard {
	pthread_mutex_t mu;
	struct pair *t;
	size_t size, used, deleted;
};

struct server {
	pthread_mutex_t mu;
	char name[SERVER_NAME_MAX];
	struct lru lru;
};

#define KEY_FREE 2 /* even: never a live key */

struct prefix_index {
	pthread_mutex_t reg; /* registering and removing servers */
	_Atomic int64_t last_cleanup_ns;
	_Atomic int64_t entries; /* sum of the servers' LRU sizes */
	/* A new value (unique in the process: new_reg_gen) whenever a server id
	 * is given or retired. */
	_Atomic uint64_t reg_gen;
	int64_t max_entries;     /* bound on entries (0: none) */
	struct shard shards[NSHARDS];
	/* Server i's key: name hash | 1; 0 never used; KEY_FREE after removal.
	 * Apart from the servers so that the lookup of every candidate per
	 * request probes 8 KB, not 1,024 server structs. */
	_Atomic uint64_t keys[MAX_SERVERS];
	struct server servers[MAX_SERVERS];
};

static size_t shard_idx(uint64_t hash)
{
	return (hash >> 58) & (NSHARDS - 1);
}

static struct shard *shard_of(struct prefix_index *x, uint64_t hash)
{
	return &x->shards[shard_idx(hash)];
}

static int shard_grow(struct shard *s)
{
	size_t sz = s->size ? s->size : 64;
	while ((s->used + 1) * 2 > sz)
		sz *= 2;
	struct pair *nt = calloc(sz, sizeof(*nt));
	if (!nt)
		return -ENOMEM;
	for (size_t i = 0; i < s->size; i++) {
		if (s->t[i].state != 1)
			continue;
		size_t j = mix(s->t[i].hash) & (sz - 1);
		while (nt[j].state)
			j = (j + 1) & (sz - 1);
		nt[j] = s->t[i];
	}
	free(s->t);
	s->t = nt;
	s->size = sz;
	s->deleted = 0;
	return 0;
}

static void shard_add(struct shard *s, uint64_t hash, uint16_t sid)
{
	if ((s->used + s->deleted + 1) * 4 > s->size * 3)
		shard_grow(s);
	/* Without room (allocation failed) the pair is simply not indexed. */
	if ((s->used + s->deleted + 1) >= s->size)
		return;
	size_t mask = s->size - 1, free_slot = (size_t)-1;
	for (size_t i = mix(hash) & mask;; i = (i + 1) & mask) {
		struct pair *p = &s->t[i];
		if (p->state == 1 && p->hash == hash && p->sid == sid)
			return;
		if (p->state == 2 && free_slot == (size_t)-1)
			free_slot = i;
		if (p->state == 0) {
			if (free_slot == (size_t)-1)
				free_slot = i;
			else
				s->deleted--;
			s->t[free_slot] = (struct pair){hash, sid, 1};
			s->used++;
			return;
		}
	}
}

static void shard_del(struct shard *s, uint64_t hash, uint16_t sid)
{
	if (!s->size)
		return;
	size_t mask = s->size - 1;
	for (size_t i = mix(hash) & mask;; i = (i + 1) & mask) {
		struct pair *p = &s->t[i];
		if (p->state == 0)
			return;
		if (p->state == 1 && p->hash == hash && p->sid == sid) {
			p->state = 2;
			s->used--;
			s->deleted++;
			return;
		}
	}
}

/* Counts one match for each candidate (|cand_of| maps server ids to
 * candidate positions, -1 for none) holding |hash|. A pair is indexed at most
 * once (shard_add), so nothing is counted twice. Returns whether any server
 * holds it. One lock per block: taking each shard's lock once for a window
 * of blocks grouped by shard measured ~1 us slower at 256 blocks (the
 * sorting and the held-block bookkeeping cost more than the uncontended
 * locks; the probes' cache misses stay either way). */
static bool index_match(struct prefix_index *x, uint64_t hash, const int32_t *cand_of,
			uint16_t *match)
{
	struct shard *s = shard_of(x, hash);
	bool any = false;
	pthread_mutex_lock(&s->mu);
	if (s->size) {
		size_t mask = s->size - 1;
		for (size_t i = mix(hash) & mask; s->t[i].state; i = (i + 1) & mask)
			if (s->t[i].state == 1 && s->t[i].hash == hash) {
				int32_t k = cand_of[s->t[i].sid];
				if (k >= 0)
					match[k]++;
				any = true;
			}
	}
	pthread_mutex_unlock(&s->mu);
	return any;
}

/* A server's key: the endpoint name's hash (store_endpoint.name_hash, which
 * each snapshot computes once), odd so that 0 and KEY_FREE are never keys. */
static uint64_t ep_key(const store_endpoint *ep)
{
	return store_endpoint_hash(ep) | 1;
}

static uint64_t new_reg_gen(void)
{
	static _Atomic uint64_t gens;
	return atomic_fetch_add(&gens, 1) + 1;
}

/* Server id of a name key, or -1. Lock-free: readers compare the published
 * 64-bit keys only; names are read and written under the registry lock. */
static int server_find(struct prefix_index *x, uint64_t key)
{
	for (size_t k = 0, i = key % MAX_SERVERS; k < MAX_SERVERS; k++, i = (i + 1) % MAX_SERVERS) {
		uint64_t v = atomic_load(&x->keys[i]);
		if (v == 0)
			return -1;
		if (v == key)
			return (int)i;
	}
	return -1;
}

/* Server ids of a snapshot's endpoints (by store_endpoint.index), kept per
 * worker thread while the snapshot and the registry stay the same: a
 * request looks up its candidates in the array instead of probing the keys
 * once per candidate. Snapshots change every few ms (metric scrapes), so
 * the array is rebuilt about every hundred requests. */
#define SID_CACHE_MAX 4096

static __thread struct sid_cache {
	const struct prefix_index *x;
	const store_snapshot *snap;
	uint64_t serial, reg_gen;
	int16_t sid[SID_CACHE_MAX];
} sid_cache;

static const int16_t *sid_cache_of(struct prefix_index *x, const store_snapshot *snap)
{
	if (!snap || snap->n_endpoints > SID_CACHE_MAX)
		return NULL;
	struct sid_cache *sc = &sid_cache;
	uint64_t reg = atomic_load(&x->reg_gen);
	if (sc->x == x && sc->snap == snap && sc->serial == snap->serial && sc->reg_gen == reg)
		return sc->sid;
	for (uint32_t i = 0; i < snap->n_endpoints; i++)
		sc->sid[i] = (int16_t)server_find(x, ep_key(&snap->endpoints[i]));
	/* A server given an id meanwhile only misses this request's match. */
	sc->x = x;
	sc->snap = snap;
	sc->serial = snap->serial;
	sc->reg_gen = reg;
	return sc->sid;
}

static int server_get_or_add(struct prefix_index *x, const char *name, uint64_t key,
			     size_t capacity)
{
	int id = server_find(x, key);
	if (id >= 0 || strlen(name) >= SERVER_NAME_MAX)
		return id;
	pthread_mutex_lock(&x->reg);
	id = server_find(x, key);
	for (size_t k = 0, i = key % MAX_SERVERS; id < 0 && k < MAX_SERVERS;
	     k++, i = (i + 1) % MAX_SERVERS) {
		uint64_t v = atomic_load(&x->keys[i]);
		if (v != 0 && v != KEY_FREE)
			continue;
		struct server *sv = &x->servers[i];
		pthread_mutex_lock(&sv->mu);
		snprintf(sv->name, sizeof(sv->name), "%s", name);
		lru_clear(&sv->lru);
		int rc = lru_init(&sv->lru, capacity);
		pthread_mutex_unlock(&sv->mu);
		if (rc < 0)
			break;
		atomic_store(&x->keys[i], key);
		atomic_store(&x->reg_gen, new_reg_gen());
		id = (int)i;
	}
	pthread_mutex_unlock(&x->reg);
	return id;
}

/* Shard updates of one learn call: collected in order, then applied shard by
 * shard under one lock each instead of one lock per block. The order within
 * a shard is kept, so the shards end as if each update went alone. */
#define LEARN_BATCH 256

struct shard_op {
	uint64_t hash;
	bool del;
};

static void shard_apply(struct prefix_index *x, const struct shard_op *ops, size_t n,
			uint16_t id)
{
	struct shard_op sorted[2 * LEARN_BATCH];
	size_t at[NSHARDS + 1] = {0};
	for (size_t i = 0; i < n; i++)
		at[shard_idx(ops[i].hash) + 1]++;
	for (size_t k = 1; k <= NSHARDS; k++)
		at[k] += at[k - 1];
	size_t pos[NSHARDS];
	memcpy(pos, at, sizeof(pos));
	for (size_t i = 0; i < n; i++)
		sorted[pos[shard_idx(ops[i].hash)]++] = ops[i];
	for (size_t k = 0; k < NSHARDS; k++) {
		if (at[k] == at[k + 1])
			continue;
		struct shard *s = &x->shards[k];
		pthread_mutex_lock(&s->mu);
		for (size_t i = at[k]; i < at[k + 1]; i++) {
			if (sorted[i].del)
				shard_del(s, sorted[i].hash, id);
			else
				shard_add(s, sorted[i].hash, id);
		}
		pthread_mutex_unlock(&s->mu);
	}
}

static void index_learn(struct prefix_index *x, const uint64_t *hashes, size_t n,
			const char *server, uint64_t key, size_t capacity)
{
	int id = server_get_or_add(x, server, key, capacity);
	if (id < 0)
		return;
	struct server *sv = &x->servers[id];
	struct shard_op ops[2 * LEARN_BATCH];
	size_t n_ops = 0;
	pthread_mutex_lock(&sv->mu);
	/* The slot may have been retired between lookup and lock. */
	if (atomic_load(&x->keys[id]) == key) {
		for (size_t i = 0; i < n; i++) {
			uint64_t ev;
			size_t before = sv->lru.n;
			/* A few blocks ahead: random reads into the LRU's index. */
			if (i + 4 < n)
				__builtin_prefetch(&sv->lru.index[mix(hashes[i + 4]) &
								  (sv->lru.index_size - 1)]);
			bool full = x->max_entries > 0 &&
				    atomic_load_explicit(&x->entries, memory_order_relaxed) >=
					    x->max_entries;
			int r = lru_add(&sv->lru, hashes[i], full, &ev);
			if (r < 0)
				break;
			/* A block the server held is in its shard already (a pair
			 * whose shard could not grow stays out until learned anew). */
			if (r == 2)
				continue;
			if (sv->lru.n != before)
				atomic_fetch_add_explicit(&x->entries, 1, memory_order_relaxed);
			if (r == 1)
				ops[n_ops++] = (struct shard_op){ev, true};
			ops[n_ops++] = (struct shard_op){hashes[i], false};
			if (n_ops + 2 > 2 * LEARN_BATCH) {
				shard_apply(x, ops, n_ops, (uint16_t)id);
				n_ops = 0;
			}
		}
		shard_apply(x, ops, n_ops, (uint16_t)id);
	}
	pthread_mutex_unlock(&sv->mu);
}

static void server_remove(struct prefix_index *x, int id)
{
	struct server *sv = &x->servers[id];
	pthread_mutex_lock(&sv->mu);
	atomic_fetch_sub_explicit(&x->entries, (int64_t)sv->lru.n, memory_order_relaxed);
	for (int32_t v = sv->lru.head; v >= 0; v = sv->lru.nodes[v].next) {
		struct shard *s = shard_of(x, sv->lru.nodes[v].hash);
		pthread_mutex_lock(&s->mu);
		shard_del(s, sv->lru.nodes[v].hash, (uint16_t)id);
		pthread_mutex_unlock(&s->mu);
	}
	lru_clear(&sv->lru);
	atomic_store(&x->keys[id], KEY_FREE);
	atomic_store(&x->reg_gen, new_reg_gen());
	sv->name[0] = '\0';
	pthread_mutex_unlock(&sv->mu);
}

/* Every two minutes, forget servers that are no longer endpoints. */
static void index_cleanup(struct prefix_index *x, const store_snapshot *snap, int64_t now)
{
	int64_t last = atomic_load(&x->last_cleanup_ns);
	if (now - last < CLEANUP_NS ||
	    !atomic_compare_exchange_strong(&x->last_cleanup_ns, &last, now))
		return;
	pthread_mutex_lock(&x->reg);
	for (int i = 0; i < MAX_SERVERS; i++) {
		uint64_t k = atomic_load(&x->keys[i]);
		if (k == 0 || k == KEY_FREE)
			continue;
		/* Same name, same key: the names of key matches only are compared. */
		bool live = false;
		for (uint32_t e = 0; e < snap->n_endpoints && !live; e++)
			live = ep_key(&snap->endpoints[e]) == k &&
			       strncmp(snap->endpoints[e].name, x->servers[i].name,
				       SERVER_NAME_MAX) == 0;
		if (!live)
			server_remove(x, i);
	}
	pthread_mutex_unlock(&x->reg);
}

static struct prefix_index *index_new(void)
{
	struct prefix_index *x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	pthread_mutex_init(&x->reg, NULL);
	atomic_init(&x->reg_gen, new_reg_gen());
	for (int i = 0; i < NSHARDS; i++)
		pthread_mutex_init(&x->shards[i].mu, NULL);
	for (int i = 0; i < MAX_SERVERS; i++) {
		pthread_mutex_init(&x->servers[i].mu, NULL);
		x->servers[i].lru.head = x->servers[i].lru.tail = -1;
	}
	return x;
}

static void index_free(struct prefix_index *x)
{
	if (!x)
		return;
	for (int i = 0; i < NSHARDS; i++) {
		free(x->shards[i].t);
		pthread_mutex_destroy(&x->shards[i].mu);
	}
	for (int i = 0; i < MAX_SERVERS; i++) {
		lru_clear(&x->servers[i].lru);
		pthread_mutex_destroy(&x->servers[i].mu);
	}
	pthread_mutex_destroy(&x->reg);
	free(x);
}

/* ---- the plugin ------------------------------------------------------------------- */

struct prefix_cfg {
	bool auto_tune;
	long long block_tokens, max_blocks, max_tokens, lru_capacity, max_entries;
	struct prefix_index *index;
};

/* kepp's bound on the whole index (maxIndexEntries): ~65 bytes per entry
 * measured, so ~33 MB. The reference has none: servers x
 * lruCapacityPerServer (or x the KV blocks each pod reports, tens of
 * thousands on vLLM) can reach hundreds of MB. */
#define DEFAULT_MAX_ENTRIES 500000

/* Per-request state from prepare() to score() and pre_request(). */
struct prefix_state {
	uint64_t *hashes;
	size_t n;
	uint16_t *match; /* per candidate, by position */
	const store_endpoint *const *cands;
	size_t n_cands;
	/* Candidate position by store_endpoint.index (-1: not a candidate), so
	 * score and pre_request find an endpoint's match in O(1); built when
	 * first needed (filters reordered or dropped candidates). */
	int32_t *pos;
	uint32_t n_pos;
};

/* Position of |ep| among the candidates prepare saw; |i|: where the caller
 * has it, the same position when no filter dropped any. */
static int32_t cand_pos(struct prefix_state *st, arena *a, size_t i, const store_endpoint *ep)
{
	if (i < st->n_cands && st->cands[i] == ep)
		return (int32_t)i;
	if (!st->pos && st->n_pos) {
		st->pos = arena_alloc(a, st->n_pos * sizeof(*st->pos));
		if (!st->pos)
			return -1;
		memset(st->pos, 0xff, st->n_pos * sizeof(*st->pos));
		for (size_t k = 0; k < st->n_cands; k++)
			if (st->cands[k]->index < st->n_pos)
				st->pos[st->cands[k]->index] = (int32_t)k;
	}
	if (!st->pos || ep->index >= st->n_pos)
		return -1;
	int32_t k = st->pos[ep->index];
	return k >= 0 && (size_t)k < st->n_cands && st->cands[k] == ep ? k : -1;
}

static int prefix_create(sched_plugin *p, const cJSON *params, sched_build *b)
{
	struct prefix_cfg v = {true, 16, 256, 0, 31250, DEFAULT_MAX_ENTRIES, NULL};
	long long block_chars = 0;
	param_spec spec[] = {
		{"autoTune", P_BOOL, &v.auto_tune, NULL},
		{"blockSizeTokens", P_INT, &v.block_tokens, NULL},
		{"blockSize", P_INT, &block_chars, NULL},
		{"maxPrefixBlocksToMatch", P_INT, &v.max_blocks, NULL},
		{"maxPrefixTokensToMatch", P_INT, &v.max_tokens, NULL},
		{"lruCapacityPerServer", P_INT, &v.lru_capacity, NULL},
		{"maxIndexEntries", P_INT, &v.max_entries, NULL},
	};
	if (params_parse(b, params, spec, 7) < 0)
		return -EINVAL;
	if (block_chars > 0 && v.block_tokens <= 0)
		return plugin_error(b,
				    "invalid configuration: BlockSize (%lld) is deprecated; please "
				    "use BlockSizeTokens instead to define the cache block size in "
				    "tokens",
				    block_chars);
	if (!v.auto_tune && v.block_tokens <= 0)
		return plugin_error(b, "invalid configuration: BlockSizeTokens must be > 0 when "
				    "AutoTune is disabled (current value: %lld)",
				    v.block_tokens);
	if (v.max_tokens < 0)
		return plugin_error(b, "invalid configuration: MaxPrefixTokensToMatch must be >= 0 "
				    "(current value: %lld)",
				    v.max_tokens);
	if (v.max_entries < 0)
		return plugin_error(b, "invalid configuration: maxIndexEntries must be >= 0 (0: no "
				    "bound; current value: %lld)",
				    v.max_entries);
	if (v.lru_capacity <= 0 || v.lru_capacity > INT32_MAX)
		v.lru_capacity = 31250;
	struct prefix_cfg *cfg = build_alloc(b, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	*cfg = v;
	cfg->index = index_new();
	if (!cfg->index)
		return -ENOMEM;
	cfg->index->max_entries = v.max_entries;
	p->cfg = cfg;
	return 0;
}

static void prefix_destroy(const sched_plugin *p)
{
	const struct prefix_cfg *cfg = p->cfg;
	if (cfg)
		index_free(cfg->index);
}

static long long block_size(const struct prefix_cfg *cfg, const store_endpoint *first)
{
	if (cfg->auto_tune && first && first->m.cache_block_size > 0)
		return first->m.cache_block_size;
	return cfg->block_tokens;
}

static bool append(char *buf, size_t cap, size_t *o, const char *p, size_t n)
{
	if (*o + n > cap)
		return false;
	memcpy(buf + *o, p, n);
	*o += n;
	return true;
}

/* The bytes the reference hashes per API (getUserInputBytes). Structured
 * inputs are the client's JSON text of the same members; the reference
 * re-encodes them with Go's encoder, which only changes which requests share
 * a prefix if clients format identical messages differently. A prompt is
 * decoded up to |max| bytes only (at least |max| when it is longer): no more
 * is hashed, and a 1 MB prompt would otherwise be decoded whole. */
const char *sched_prefix_user_input(enum sched_api api, const body_req *r, arena *a, size_t max,
				    size_t *len)
{
	*len = 0;
	if (!r)
		return NULL;
	switch (api) {
	case SCHED_API_CONVERSATIONS:
		*len = r->items.n;
		return r->items.p;
	case SCHED_API_CHAT:
		*len = r->messages.n;
		return r->messages.p;
	case SCHED_API_EMBEDDINGS:
		*len = r->input.n;
		return r->input.p;
	case SCHED_API_RESPONSES: {
		const bj_val *parts[3] = {&r->instructions, &r->tools, &r->input};
		static const char *const keys[3] = {"{\"instructions\":", "{\"tools\":",
						    "{\"input\":"};
		size_t cap = r->instructions.n + r->tools.n + r->input.n + 64;
		char *buf = arena_alloc(a, cap);
		size_t o = 0;
		if (!buf)
			return NULL;
		append(buf, cap, &o, "[", 1);
		for (int i = 0; i < 3; i++) {
			bool null = parts[i]->t == BJ_NONE || parts[i]->t == BJ_NULL;
			if (i < 2 && null)
				continue;
			if (o > 1)
				append(buf, cap, &o, ",", 1);
			append(buf, cap, &o, keys[i], strlen(keys[i]));
			if (null)
				append(buf, cap, &o, "null", 4);
			else
				append(buf, cap, &o, parts[i]->p, parts[i]->n);
			append(buf, cap, &o, "}", 1);
		}
		append(buf, cap, &o, "]", 1);
		*len = o;
		return buf;
	}
	case SCHED_API_COMPLETIONS: {
		/* Prompt.PlainText: the string, or the strings joined by " ". */
		const bj_val *pr = &r->prompt;
		if (pr->t != BJ_STRING && pr->t != BJ_ARRAY)
			return NULL;
		size_t cap = 3 * pr->n + 1;
		if (max < SIZE_MAX - 8 && cap > max + 8)
			cap = max + 8; /* bj_unquote_n writes at most 4 past its bound */
		char *buf = arena_alloc(a, cap);
		if (!buf)
			return NULL;
		if (pr->t == BJ_STRING) {
			*len = bj_unquote_n(pr, buf, max);
			return buf;
		}
		size_t o = 0;
		bool first = true;
		bj_iter it;
		bj_val e;
		bj_iter_init(&it, pr);
		while (o < max && bj_arr_next(&it, &e)) {
			if (!first)
				buf[o++] = ' ';
			first = false;
			if (e.t == BJ_STRING)
				o += bj_unquote_n(&e, buf + o, max - o);
		}
		*len = o;
		return buf;
	}
	}
	return NULL;
}

static void prefix_prepare(const sched_plugin *p, const sched_ctx *c,
			   const store_endpoint *const *cands, size_t n)
{
	const struct prefix_cfg *cfg = p->cfg;
	struct prefix_state *st = arena_calloc(c->a, sizeof(*st));
	if (!st)
		return;
	c->state[p->slot] = st;
	st->cands = cands;
	st->n_cands = n;
	st->n_pos = c->snap ? c->snap->n_endpoints : 0;
	long long bs = block_size(cfg, n ? cands[0] : NULL);
	long long max_blocks = cfg->max_blocks;
	if (cfg->max_tokens > 0 && bs > 0)
		max_blocks = cfg->max_tokens / bs;
	long long chars = bs * CHARS_PER_TOKEN;
	if (chars <= 0 || max_blocks <= 0)
		return;
	size_t len, max_len = SIZE_MAX;
	if ((unsigned long long)max_blocks <= SIZE_MAX / (unsigned long long)chars)
		max_len = (size_t)max_blocks * (size_t)chars;
	const char *in = sched_prefix_user_input(c->api, c->body, c->a, max_len, &len);
	if (!in || len < (size_t)chars)
		return;
	size_t nb = len / (size_t)chars;
	if (nb > (size_t)max_blocks)
		nb = (size_t)max_blocks;
	st->hashes = arena_alloc(c->a, nb * sizeof(*st->hashes));
	st->match = arena_calloc(c->a, (n ? n : 1) * sizeof(*st->match));
	if (!st->hashes || !st->match)
		return;
	/* h0 = xxh64(model || cache_salt); h_i = xxh64(block_i || LE64(h_i-1)) */
	XXH64_state_t hs, *h = &hs;
	XXH64_reset(h, 0);
	XXH64_update(h, c->target_model.p, c->target_model.len);
	if (c->body->cache_salt.t == BJ_STRING && c->body->cache_salt.n > 2) {
		size_t sl;
		char *salt = bj_unquote_dup(&c->body->cache_salt, c->a, &sl);
		if (salt)
			XXH64_update(h, salt, sl);
	}
	uint64_t prev = XXH64_digest(h);
	for (size_t i = 0; i < nb; i++)
		prev = st->hashes[i] =
			prefix_block_hash(in + i * (size_t)chars, (size_t)chars, prev);
	st->n = nb;

	/* Only the holders are visited, through the candidate of each server
	 * id (the ids of the snapshot's endpoints come from sid_cache_of):
	 * linear in the holders. */
	int32_t *cand_of = arena_alloc(c->a, MAX_SERVERS * sizeof(*cand_of));
	if (!cand_of)
		return;
	memset(cand_of, 0xff, MAX_SERVERS * sizeof(*cand_of));
	const int16_t *sid = sid_cache_of(cfg->index, c->snap);
	for (size_t k = 0; k < n; k++) {
		const store_endpoint *ep = cands[k];
		int id = sid && ep->index < c->snap->n_endpoints &&
					 ep == &c->snap->endpoints[ep->index]
				 ? sid[ep->index]
				 : server_find(cfg->index, ep_key(ep));
		if (id >= 0)
			cand_of[id] = (int32_t)k;
	}
	/* Longest prefix: walk the blocks until none is held by any server. */
	for (size_t i = 0; i < nb; i++)
		if (!index_match(cfg->index, st->hashes[i], cand_of, st->match))
			break;
}

static void prefix_score(const sched_plugin *p, const sched_ctx *c,
			 const store_endpoint *const *eps, size_t n, double *out)
{
	struct prefix_state *st = c->state[p->slot];
	bool none = !st || !st->n || !st->match;
	for (size_t i = 0; i < n; i++) {
		out[i] = 0;
		if (none)
			continue;
		int32_t k = i < st->n_cands && st->cands[i] == eps[i]
				    ? (int32_t)i
				    : cand_pos(st, c->a, i, eps[i]);
		/* Most candidates hold nothing: no division for them. */
		if (k >= 0 && st->match[k])
			out[i] = (double)st->match[k] / (double)st->n;
	}
}

static void prefix_pre_request(const sched_plugin *p, const sched_ctx *c,
			       const store_endpoint *const *picked, size_t n)
{
	const struct prefix_cfg *cfg = p->cfg;
	struct prefix_state *st = c->state[p->slot];
	if (c->snap)
		index_cleanup(cfg->index, c->snap, c->now_ns);
	if (c->trace && st && n > 0) {
		/* The reference's RecordPrefixCacheMatch: blocks x block size x 4
		 * characters, matched by the primary pick and in total. */
		const store_endpoint *first = st->n_cands ? st->cands[0] : NULL;
		int64_t chars = block_size(cfg, first) * CHARS_PER_TOKEN;
		int64_t matched = 0;
		int32_t k = cand_pos(st, c->a, SIZE_MAX, picked[0]);
		if (st->match && k >= 0)
			matched = st->match[k];
		c->trace->prefix_match = true;
		c->trace->prefix_hit_bytes = matched * chars;
		c->trace->prefix_total_bytes = (int64_t)st->n * chars;
	}
	if (!st || !st->n || n == 0 || !picked[0]->name)
		return;
	size_t cap = (size_t)cfg->lru_capacity;
	if (cfg->auto_tune && picked[0]->m.cache_num_blocks > 0 &&
	    picked[0]->m.cache_num_blocks <= INT32_MAX)
		cap = (size_t)picked[0]->m.cache_num_blocks;
	index_learn(cfg->index, st->hashes, st->n, picked[0]->name, ep_key(picked[0]), cap);
}

static const plugin_type prefix_scorer = {
	.type = "prefix-cache-scorer",
	.kinds = PK_SCORER,
	.create = prefix_create,
	.score = prefix_score,
	.prepare = prefix_prepare,
	.pre_request = prefix_pre_request,
	.destroy = prefix_destroy,
};

const plugin_type *const sched_prefix_types[] = {&prefix_scorer, NULL};

bool sched_prefix_index_size(const sched *s, int64_t *entries)
{
	bool found = false;
	*entries = 0;
	for (size_t i = 0; s && i < s->n_plugins; i++) {
		const sched_plugin *p = s->plugins[i];
		if (p->type != &prefix_scorer || !p->cfg)
			continue;
		const struct prefix_cfg *cfg = p->cfg;
		*entries += atomic_load_explicit(&cfg->index->entries, memory_order_relaxed);
		found = true;
	}
	return found;
}

/* The early pick (user/sched/early.c) waits for this much user input: the
 * most prefix_prepare() can read, whichever endpoint turns out to be the
 * first candidate (its reported block size decides with autoTune). */
size_t sched_prefix_input_budget(const sched *s, const store_snapshot *snap)
{
	size_t most = 0;
	for (size_t i = 0; s && i < s->n_plugins; i++) {
		const sched_plugin *p = s->plugins[i];
		if (p->type != &prefix_scorer || !p->cfg)
			continue;
		const struct prefix_cfg *cfg = p->cfg;
		size_t n_eps = snap && cfg->auto_tune ? snap->n_endpoints : 0;
		for (size_t k = 0; k <= n_eps; k++) {
			long long bs = k < n_eps ? snap->endpoints[k].m.cache_block_size
						 : cfg->block_tokens;
			if (bs <= 0 || (k < n_eps && bs == cfg->block_tokens))
				continue;
			long long max_blocks = cfg->max_blocks;
			if (cfg->max_tokens > 0)
				max_blocks = cfg->max_tokens / bs;
			if (max_blocks <= 0)
				continue;
			unsigned long long chars = (unsigned long long)bs * CHARS_PER_TOKEN;
			if ((unsigned long long)max_blocks > SIZE_MAX / chars)
				return SIZE_MAX;
			size_t len = (size_t)max_blocks * (size_t)chars;
			if (len > most)
				most = len;
		}
	}
	return most;
}
