/* Internal to user/admin/: the per-worker metric tables (stats.c), read by
 * the exposition (expo.c) and the debug endpoints (http.c).
 *
 * Single writer, one reader: a worker updates its counters with a relaxed
 * load and store (no read-modify-write is needed with one writer), and
 * publishes a new table entry with a release store of its pointer once the
 * entry is complete; the control thread reads pointers with acquire loads
 * and counters with relaxed loads. Entries are never removed while the
 * worker's tables live, so a pointer read once stays valid. */
#ifndef KEPP_ADMIN_INT_H
#define KEPP_ADMIN_INT_H
#include <stdatomic.h>

#include "admin/admin.h"

#define ADM_MAX_KEYS 5
#define ADM_HIST_MAX 36 /* 35 bounds (the longest list, latency) + +Inf */
#define ADM_PRIO_MAX 8  /* priorities per (model, target) series */

typedef struct adm_hspec {
	const double *le;
	size_t n;
} adm_hspec;

typedef struct adm_hist {
	_Atomic uint64_t b[ADM_HIST_MAX]; /* per bucket, not cumulative; [n] is +Inf */
	_Atomic uint64_t sum;             /* double bits */
} adm_hist;

static inline void ctr_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline void gauge_add(_Atomic int64_t *g, int64_t n)
{
	atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint64_t ld(const _Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

void hist_observe(adm_hist *h, const adm_hspec *spec, double v);
double hist_sum(const adm_hist *h);

/* Bucket lists of the reference (pkg/epp/metrics/metrics.go). */
extern const adm_hspec H_LATENCY, H_REQ_SIZE, H_RESP_SIZE, H_IN_TOKENS, H_OUT_TOKENS,
	H_NTPOT, H_SCHED, H_HIT_RATIO, H_HIT_BYTES, H_DECIDE;

/* Error codes counted per series: the spec §2.8 names and ModelServerError. */
#define ADM_N_ERR 8
extern const char *const adm_err_codes[ADM_N_ERR];

/* Per (model_name, target_model_name). */
typedef struct adm_series {
	int32_t prio[ADM_PRIO_MAX];
	_Atomic uint32_t n_prio; /* published after prio[i] is written */
	_Atomic uint64_t requests[ADM_PRIO_MAX];
	_Atomic uint64_t errors[ADM_N_ERR];
	_Atomic int64_t running;
	adm_hist duration, req_size, resp_size, in_tokens, out_tokens, cached_tokens, ntpot;
} adm_series;

/* Per primary-pick endpoint address. */
typedef struct adm_endpoint {
	_Atomic uint64_t picks;
	_Atomic int64_t in_flight;
} adm_endpoint;

typedef struct adm_entry {
	uint64_t hash;
	uint32_t n_keys;
	const char *keys[ADM_MAX_KEYS]; /* copies, after the payload */
	void *payload;                  /* zeroed, 64-byte aligned */
} adm_entry;

/* Open addressing over twice |max| slots; at most |max| entries. */
typedef struct adm_tbl {
	const char *family; /* for kepp_metrics_series_dropped_total */
	size_t payload, max, mask, n;
	_Atomic(adm_entry *) *slots;
	_Atomic uint64_t dropped;
} adm_tbl;

/* Label order of the keys is the sorted label-name order of the family,
 * as client_golang prints them. */
struct adm_worker {
	adm *a;
	int id;
	adm_tbl series;    /* model_name, target_model_name */
	adm_tbl attempts;  /* namespace, pod_name, port, status, target_model_name */
	adm_tbl plugins;   /* extension_point, plugin_name, plugin_type */
	adm_tbl rewrites;  /* model_name, model_rewrite_name, target_model */
	adm_tbl endpoints; /* endpoint */
	_Atomic uint64_t prio_dropped; /* a series' priorities over ADM_PRIO_MAX */
	adm_hist e2e, decide, hit_ratio, hit_bytes;
	_Atomic uint64_t streams_total;
	_Atomic int64_t streams_open;
};

typedef struct adm_collector {
	adm_collect_fn fn;
	void *ctx;
} adm_collector;

struct adm {
	adm_opts o;
	adm_worker **workers;
	size_t n_workers;
	adm_collector *collectors;
	size_t n_collectors;
	struct evhttp *http;
};

int adm_tbl_init(adm_tbl *t, const char *family, size_t max, size_t payload);
void adm_tbl_free(adm_tbl *t);
/* The entry's payload for these keys, added when absent; NULL when the
 * table is full (counted as dropped) or memory ran out. Owner thread only. */
void *adm_tbl_get(adm_tbl *t, const char *const *keys, uint32_t n);
/* Entry |i| of the slots for readers, or NULL. */
static inline const adm_entry *adm_tbl_at(const adm_tbl *t, size_t i)
{
	return atomic_load_explicit(&t->slots[i], memory_order_acquire);
}
static inline size_t adm_tbl_slots(const adm_tbl *t)
{
	return t->mask + 1;
}

void adm_workers_free(adm *a);

/* Sums over workers, for the debug endpoints and kepp_* gauges. */
void adm_endpoint_totals(const adm *a, const char *addr, uint64_t *picks, int64_t *in_flight);

/* Buffer helpers. */
void buf_put(adm_buf *b, const char *s, size_t n);
void buf_puts(adm_buf *b, const char *s);
void buf_printf(adm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A double as Go's strconv.FormatFloat(v, 'g', -1, 64) writes it (the
 * Prometheus text format of client_golang), e.g. 0.005, 3600, 1.048576e+06. */
void buf_float(adm_buf *b, double v);

/* The current pool's name and namespace for labels; name NULL when unknown. */
void adm_pool_names(const adm *a, const store_snapshot *snap, const char **name, const char **ns);
#endif
