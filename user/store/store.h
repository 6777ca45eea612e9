/* store: what kepp knows about its InferencePool — the pool, its endpoints and
 * their latest metrics, and the models, objectives and rewrites that reference
 * it — published to worker threads as immutable snapshots.
 *
 * Ownership and threads: the control thread builds snapshots (store_builder)
 * and publishes them with store_publish (one atomic pointer swap). Workers call
 * store_acquire/store_release around each request; a snapshot is freed when
 * its last reference goes. Nothing in a published snapshot ever changes.
 *
 * The catalog (pool, models, objectives, rewrites) changes only when manifests
 * or Kubernetes objects change; endpoints change with pods and metrics. A new
 * snapshot shares the previous catalog by reference when only endpoints moved.
 */
#ifndef KEPP_STORE_H
#define KEPP_STORE_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/arena.h"

#define STORE_MAX_TARGET_PORTS 8
#define STORE_ADDR_MAX 64 /* "[ipv6]:port" fits */

/* Latest model-server metrics of one endpoint (filled by the metrics module). */
typedef struct store_metrics {
	bool valid;             /* at least one scrape extracted something */
	int64_t update_ms;      /* CLOCK_MONOTONIC ms of the last successful scrape */
	double waiting_queue;   /* TotalQueuedRequests */
	double running;         /* TotalRunningRequests */
	double kv_usage;        /* KVCacheUtilization, fraction 0..1 */
	int32_t max_lora;       /* max_lora label of the LoRA info metric, 0 if unknown */
	uint32_t n_active_models, n_waiting_models;
	const char **active_models;  /* running LoRA adapters */
	const char **waiting_models; /* waiting LoRA adapters */
	int32_t cache_block_size;    /* tokens per KV block, 0 if unknown */
	int64_t cache_num_blocks;    /* GPU KV blocks, 0 if unknown */
} store_metrics;

typedef struct store_endpoint {
	const char *name;          /* "<pod>-rank-<i>", or the address for static endpoints */
	const char *pod;           /* pod name ("" for static endpoints) */
	char addr[STORE_ADDR_MAX]; /* "ip:port" ("[ip]:port" for IPv6): what Envoy gets */
	char ip[48];               /* IP without brackets */
	uint16_t port;
	uint32_t rank;             /* index of the port in the pool's targetPorts */
	uint32_t index;            /* position in store_snapshot.endpoints */
	/* XXH64(name, seed 0), computed once per snapshot so the request path
	 * does not hash names per endpoint per request; 0: not computed (an
	 * endpoint built outside store_snapshot_new), use store_name_hash. */
	uint64_t name_hash;
	store_metrics m;
} store_endpoint;

enum store_criticality {
	STORE_CRIT_STANDARD = 0, /* unset is Standard */
	STORE_CRIT_CRITICAL = 1,
	STORE_CRIT_SHEDDABLE = 2,
};

typedef struct store_target {
	const char *model;
	int32_t weight;
	bool has_weight;
} store_target;

/* InferenceObjective (v1alpha2, inference.networking.x-k8s.io). */
typedef struct store_objective {
	const char *name; /* metadata.name: the x-gateway-inference-objective value */
	int32_t priority;
	bool has_priority; /* unset means 0 */
} store_objective;

/* InferenceModel (v1alpha2, up to v0.5). */
typedef struct store_model {
	const char *name;       /* metadata.name */
	const char *model_name; /* spec.modelName, matched against the body "model" */
	int criticality;        /* enum store_criticality */
	bool has_criticality;
	store_target *targets;
	uint32_t n_targets;
	int64_t created; /* metadata.creationTimestamp, unix seconds (oldest wins) */
} store_model;

/* One rule of an InferenceModelRewrite, flattened; rules are kept sorted by
 * precedence: exact-match rules first, then generic ones; within each, older
 * parent objects first, then list order. */
typedef struct store_rewrite_rule {
	const char *rewrite_name; /* parent metadata.name (for metrics) */
	int64_t created;
	uint32_t order;           /* index of the rule in its parent */
	const char **matches;     /* exact model values; none means every request */
	uint32_t n_matches;
	store_target *targets;    /* weight carried in store_target.weight */
	uint32_t n_targets;
} store_rewrite_rule;

typedef struct store_pool {
	const char *name;
	const char *namespace_;
	const char *group;       /* API group the pool came from */
	uint16_t target_ports[STORE_MAX_TARGET_PORTS];
	uint32_t n_target_ports;
	const char **selector_keys, **selector_values; /* matchLabels */
	uint32_t n_selector;
	bool fail_open;          /* endpointPickerRef.failureMode == FailOpen */
} store_pool;

/* Refcounted, immutable. */
typedef struct store_catalog {
	atomic_uint refs;
	bool has_pool; /* an InferencePool was read (manifest or API) */
	store_pool pool;
	store_objective *objectives; /* sorted by name */
	uint32_t n_objectives;
	store_model *models;         /* sorted by model_name, then created */
	uint32_t n_models;
	store_rewrite_rule *rules;   /* sorted by precedence (see above) */
	uint32_t n_rules;
	arena mem;                   /* owns every string and array above */
} store_catalog;

struct sched;

typedef struct store_snapshot {
	atomic_uint refs;
	/* The scheduler in force when the snapshot was built (NULL in tests that
	 * build snapshots alone); the snapshot holds a reference on it, so a
	 * stream keeps the sched it decided with until it ends. */
	const struct sched *sched;
	void (*sched_release)(const struct sched *s);
	uint64_t generation;
	/* Unique per snapshot in the process (store_snapshot_new): a cache
	 * keyed by the snapshot's address tells a new snapshot from a freed
	 * one at the same address with it. */
	uint64_t serial;
	bool synced;                /* the pool has been read: health SERVING */
	store_catalog *catalog;     /* never NULL */
	store_endpoint *endpoints;
	uint32_t n_endpoints;
	arena mem;                  /* owns endpoints and their strings */
	/* What the scheduler derives from the snapshot once, by the first
	 * request that needs it (the in-flight slots of the endpoints, by
	 * store_endpoint.index): malloc'd, set once by compare-and-swap, freed
	 * with the snapshot. The snapshot's own data never changes. */
	_Atomic(void *) derived;
} store_snapshot;

typedef struct store store;

store *store_new(void);
/* Frees the store and its current snapshot (when no worker holds it). */
void store_free(store *s);

/* Worker side. Lock-free; the returned snapshot stays valid until released. */
const store_snapshot *store_acquire(store *s);
void store_release(const store_snapshot *snap);

/* Control side: publishes |snap| (the store takes the caller's reference) and
 * drops the store's reference on the previous one. */
void store_publish(store *s, store_snapshot *snap);

/* Catalog construction (control thread). A new catalog has refs == 1. */
store_catalog *store_catalog_new(void);
void store_catalog_ref(store_catalog *c);
void store_catalog_unref(store_catalog *c);
/* Sorts the arrays into the documented orders; call after filling them. */
void store_catalog_finish(store_catalog *c);

/* Snapshot construction: takes a reference on |catalog|; endpoints are copied.
 * Returns NULL on allocation failure. */
store_snapshot *store_snapshot_new(store_catalog *catalog, const store_endpoint *eps,
				   uint32_t n_eps, bool synced);

/* Attaches |s| (whose reference the snapshot takes over) and the function
 * that drops it when the snapshot is freed. */
void store_snapshot_attach_sched(store_snapshot *snap, const struct sched *s,
				 void (*release)(const struct sched *s));

/* Lookups on a snapshot's catalog. Lengths allow non-NUL-terminated keys. */
const store_objective *store_objective_find(const store_catalog *c, const char *name,
					    size_t len);
const store_model *store_model_find(const store_catalog *c, const char *model, size_t len);
/* The first rule by precedence that matches |model| (exact, else generic). */
const store_rewrite_rule *store_rewrite_find(const store_catalog *c, const char *model,
					     size_t len);
const store_endpoint *store_endpoint_find(const store_snapshot *snap, const char *ip,
					  size_t ip_len, int port /* -1: any port */);

/* XXH64 of |name| with seed 0 (what store_endpoint.name_hash holds). */
uint64_t store_name_hash(const char *name);
/* ep->name_hash, or the hash of ep->name when the endpoint was not built by
 * store_snapshot_new. */
static inline uint64_t store_endpoint_hash(const store_endpoint *ep)
{
	return ep->name_hash ? ep->name_hash : store_name_hash(ep->name ? ep->name : "");
}

/* Formats ip:port as Envoy expects it ("[ip]:port" for IPv6) into |out|. */
int store_format_addr(char *out, size_t cap, const char *ip, uint16_t port);
#endif
