/* sched: the request director and the scheduling framework (spec §2.7 step 3,
 * §4, §5). It turns one parsed request into a decision: the target endpoints,
 * the body to forward (the model rewritten in place), or an error with the
 * exact status and text of spec §2.8.
 *
 * Threads: a sched is built on the control thread (at start-up, and again
 * when the config file changes) and reaches workers inside store snapshots,
 * which hold a reference on it; its configuration is read-only, so every
 * worker uses the same one without locks. Per-request memory comes from
 * the caller's arena; nothing is allocated with malloc on the request path.
 */
#ifndef KEPP_SCHED_H
#define KEPP_SCHED_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sched/config.h"
#include "store/store.h"
#include "util/arena.h"

typedef struct sched sched;

/* Error codes of spec §2.8 (internal code names). */
enum sched_err {
	SCHED_OK = 0,
	SCHED_BAD_REQUEST,        /* 400 */
	SCHED_UNAUTHORIZED,       /* 401 */
	SCHED_FORBIDDEN,          /* 403 */
	SCHED_NOT_FOUND,          /* 404 */
	SCHED_RESOURCE_EXHAUSTED, /* 429 */
	SCHED_INTERNAL,           /* 500 */
	SCHED_SERVICE_UNAVAILABLE,/* 503 */
};
/* HTTP status and code name ("BadRequest", ...) of an error. */
int sched_err_http(enum sched_err e);
const char *sched_err_name(enum sched_err e);

/* API type, chosen by the :path suffix (spec §2.7 step 3a). */
enum sched_api {
	SCHED_API_COMPLETIONS = 0,
	SCHED_API_CHAT,
	SCHED_API_RESPONSES,
	SCHED_API_CONVERSATIONS,
	SCHED_API_EMBEDDINGS,
};
enum sched_api sched_api_from_path(const char *path, size_t len);

typedef struct sched_str {
	const char *p;
	size_t len;
} sched_str;

/* Request headers are looked up through this callback so the caller keeps
 * its own storage. |name| is lowercase; returns false when absent. */
typedef bool (*sched_header_fn)(void *ctx, const char *name, sched_str *value);

typedef struct sched_request {
	sched_str path;          /* :path (or x-original-path / x-forwarded-path) */
	sched_str objective;     /* x-gateway-inference-objective, p == NULL if absent */
	sched_str model_rewrite; /* x-gateway-model-name-rewrite, p == NULL if absent */
	sched_str fairness_id;   /* x-gateway-inference-fairness-id, default "default-flow" */
	sched_str request_id;
	const char *body;        /* the whole request body */
	size_t body_len;
	/* envoy.lb.subset_hint / x-gateway-destination-endpoint-subset (spec §2.4):
	 * has_subset is false when the key is absent. Entries are "ip[:port]". */
	bool has_subset;
	const sched_str *subset;
	size_t n_subset;
	/* The hint was one comma-separated string (lwepp form): an entry
	 * "ip:port" matches exactly, a bare "ip" every port. The list form
	 * matches by IP only, as the reference EPP does. */
	bool subset_is_string;
	sched_header_fn header;  /* all request headers, for plugins */
	void *header_ctx;
	/* Observability (user/admin): when |trace| is set, sched_decide fills
	 * it. With |dry_run| it decides without side effects: no PreRequest
	 * plugins (the prefix index and session affinity learn nothing) and no
	 * in-flight accounting (sched_request_done is then a no-op). */
	struct sched_trace *trace;
	bool dry_run;
} sched_request;

#define SCHED_MAX_TARGETS 16

typedef struct sched_result {
	enum sched_err err;
	char error[512];          /* the ImmediateResponse body: "inference error: <Code> - <msg>" */
	const char *targets;      /* "ip:port[,ip:port...]" (arena) */
	const store_endpoint *picked[SCHED_MAX_TARGETS];
	size_t n_picked;
	sched_str incoming_model; /* body "model" as sent (decoded) */
	sched_str target_model;   /* after header and InferenceModelRewrite rewrites */
	const char *rewrite_name; /* the InferenceModelRewrite that decided, or NULL */
	int priority;
	bool stream;              /* "stream": true */
	bool raw_payload;         /* passthrough-parser: body untouched, no usage parsing */
	const char *body;         /* body to forward: the input itself when unchanged */
	size_t body_len;
	/* In-flight accounting of the primary pick (concurrency-detector,
	 * token-load-scorer); released by sched_request_done. */
	void *inflight;
	int64_t inflight_tokens;
	uint64_t inflight_mark; /* counted as sent after the last scrape */
} sched_result;

/* What one decision did, for metrics, the per-decision log line and
 * /debug/explain. Plugin calls are timed with CLOCK_MONOTONIC (a vDSO call)
 * only when a trace is given. */
#define SCHED_TRACE_MAX_CALLS 48 /* later calls are not timed */

typedef struct sched_plugin_time {
	const char *ext_point; /* the reference's extension point: "Filter", "Scorer", ...
				* (static, as |type|; |name| lives with the sched) */
	const char *type, *name;
	int64_t ns;
} sched_plugin_time;

/* Every candidate with the filter that dropped it or its per-scorer scores
 * (clamped to [0,1], before weights). Arena memory of the decision. */
typedef struct sched_score_table {
	const char *profile;
	size_t n_filters;
	const char **filters;  /* plugin names, in order */
	size_t n_scorers;
	const char **scorers;  /* plugin names */
	const char **scorer_types;
	const double *weights;
	size_t n_eps;
	const store_endpoint **eps; /* the candidates (after the subset hint) */
	int *dropped_by;            /* filter index, or -1 when every filter kept it */
	double *scores;             /* [ep * n_scorers + scorer]; kept endpoints only */
	double *total;              /* weighted sum */
	int *rank;                  /* position among the picker's targets, or -1 */
} sched_score_table;

typedef struct sched_trace {
	bool want_table;  /* in: fill |table| */
	bool scheduled;   /* the scheduler ran (an attempt in the reference's terms) */
	int64_t sched_ns; /* scheduler end to end: profile handler and profiles */
	sched_plugin_time calls[SCHED_TRACE_MAX_CALLS];
	size_t n_calls;
	/* The prefix-cache scorer's match for the primary pick (PreRequest):
	 * matched and total prefix bytes, as the reference reports them. */
	bool prefix_match;
	int64_t prefix_hit_bytes, prefix_total_bytes;
	sched_score_table *table;
} sched_trace;

/* Entries in the prefix-cache index of |s| (every prefix-cache-scorer);
 * false when the config has none. Any thread. */
bool sched_prefix_index_size(const sched *s, int64_t *entries);

/* Builds the scheduler from |cfg| (NULL: the v1.5.0 built-in default of spec
 * §4.3). Applies the defaulting rules of §4.3 and validates: unknown plugin
 * type, duplicate name, bad reference or parameter are refused with
 * "<file>:<line>: <reason>" in |err|. */
sched *sched_new(const sched_config *cfg, char *err, size_t errlen);
void sched_free(sched *s);
/* Reference counting for a sched shared with snapshots: sched_new returns
 * one reference; sched_unref of the last one frees it. */
void sched_ref(const sched *s);
void sched_unref(const sched *s);
/* Endpoints whose metrics are missing or older than |ms| are no candidates
 * while another candidate has fresh metrics (0: off, the reference's
 * behaviour). Call before the sched is published. */
void sched_set_staleness(sched *s, int64_t ms);
/* Name of the primary scheduling profile (for logs and error texts). */
const char *sched_profile_name(const sched *s);

/* Decides one request with a body (spec §2.7 step 3). Always fills |res|:
 * res->err == SCHED_OK on success, else res->error holds the full text. */
void sched_decide(const sched *s, const store_snapshot *snap, const sched_request *req,
		  arena *a, sched_result *res);

/* Deciding before the body ends (--early-pick, user/extproc with
 * user/sched/early.h). sched_early_need says what this config reads of the
 * body for |api|: 0 and *input_bytes, the user input the prefix-cache scorer
 * hashes at most (0: only the model is read), or -ENOTSUP when it cannot
 * decide early (the passthrough parser; the responses API, whose hashed
 * input is three members in any order, with a prefix-cache scorer). */
int sched_early_need(const sched *s, const store_snapshot *snap, enum sched_api api,
		     size_t *input_bytes);
/* The user input bytes the prefix-cache scorers read at most (prefix.c). */
size_t sched_prefix_input_budget(const sched *s, const store_snapshot *snap);

/* The user input the prefix-cache scorer hashes for a request of |api|
 * parsed into |r| (the reference's per-API form: the decoded prompt for
 * completions, the raw JSON of messages / input / items, the joined parts of
 * /responses), at least its first |max| bytes when it has them; memory from
 * |a|. NULL (with *len 0) when the request has none. */
struct body_req;
const char *sched_prefix_user_input(enum sched_api api, const struct body_req *r, arena *a,
				    size_t max, size_t *len);

/* sched_decide on facts from the body's first part instead of the whole
 * body: |facts| holds the model and hashed-input spans (early_facts);
 * req->body_len is the announced body length (or what arrived), for the
 * in-flight token estimate. res->body stays NULL: the caller forwards the
 * body and rewrites the model itself. */
struct body_req;
void sched_decide_early(const sched *s, const store_snapshot *snap, const sched_request *req,
			const struct body_req *facts, arena *a, sched_result *res);
/* The body of an early decision ended at |body_len| forwarded bytes: the
 * size for the metrics and the in-flight token estimate follow it. */
void sched_early_body_done(const sched *s, sched_result *res, size_t body_len);

/* A request without a body: a uniformly random endpoint of the pool, or
 * SCHED_INTERNAL "no pods available in datastore". */
void sched_pick_any(const store_snapshot *snap, arena *a, sched_result *res);

/* Ends the in-flight accounting of a request that sched_decide scheduled:
 * call exactly once when its ext_proc stream ends, however it ends. A no-op
 * when nothing was counted (errors, header-only picks, no plugin needs it). */
void sched_request_done(const sched *s, const sched_result *res);

/* The data layer of the config (spec §6): where and how the metrics module
 * scrapes. legacy_metrics is true with the enableLegacyMetrics gate; then
 * there are no sources and the metrics module uses its built-in mapping. */
typedef struct sched_engine {
	const char *name;
	const char *queued_requests_spec, *running_requests_spec, *kv_usage_spec, *lora_spec,
		*cache_info_spec;
	const char *cache_block_size_label, *cache_num_blocks_label; /* "" when unset */
	const char *cache_block_size_spec, *cache_num_blocks_spec;   /* "" when unset */
} sched_engine;

typedef struct sched_extractor {
	const char *name;             /* plugin name */
	const char *engine_label_key; /* pod label choosing the engine */
	const char *default_engine;
	const sched_engine *engines;  /* user-defined first, then built-ins not overridden */
	size_t n_engines;
} sched_extractor;

typedef struct sched_metrics_source {
	const char *name;             /* plugin name */
	const char *scheme, *path;    /* "http"|"https", "/metrics" */
	bool insecure_skip_verify;
	const sched_extractor *const *extractors;
	size_t n_extractors;
} sched_metrics_source;

typedef struct sched_datalayer {
	bool legacy_metrics;
	const sched_metrics_source *sources;
	size_t n_sources;
} sched_datalayer;

const sched_datalayer *sched_data_layer(const sched *s);
/* The built-in engine configs of v1.5.0 (vllm, sglang, trtllm-serve,
 * triton-tensorrt-llm): appended to user engines, and used alone in
 * legacy-metrics mode. */
const sched_engine *sched_builtin_engines(size_t *n);

/* Response side (spec §2.9). */

/* Headers that response-header plugins add (the conformance
 * destination-endpoint-served-verifier); |served| is the
 * envoy.lb/x-gateway-destination-endpoint-served value or NULL when
 * |have_lb| is false (no envoy.lb namespace) or the key is absent. */
typedef void (*sched_add_header_fn)(void *ctx, const char *name, const char *value,
				    size_t value_len);
void sched_response_headers(const sched *s, bool have_lb, const sched_str *served,
			    sched_add_header_fn add, void *ctx);

typedef struct sched_usage {
	bool found;
	bool has_cached; /* prompt_token_details.cached_tokens was present */
	int64_t prompt_tokens, completion_tokens, total_tokens, cached_tokens;
} sched_usage;

/* Parses usage from a complete JSON response body or from SSE chunk text
 * (spec §2.9). Leaves |u| untouched when nothing is found. */
void sched_usage_parse_json(const char *body, size_t len, sched_usage *u);
void sched_usage_parse_sse(const char *chunk, size_t len, sched_usage *u);

/* Rewrites "model":"<target>" back to "model":"<incoming>" (then the
 * one-space form when the first changed nothing), spec §2.9. Returns the input
 * unchanged (no copy) when nothing matched, else a new arena buffer. */
sched_str sched_rewrite_back(const char *buf, size_t len, sched_str target, sched_str incoming,
			     arena *a);

/* Kernel fast path (user/sched/fastpath.c). */
#define SCHED_FASTPATH_WMAX 10000 /* weight of a perfect score on every scorer */

typedef struct sched_fastpath_info {
	bool sheddable; /* the model's requests may be shed (no objective) */
	bool saturated; /* the saturation detector says the pool is full */
	uint32_t n_kept; /* endpoints every filter kept (weight > 0) */
} sched_fastpath_info;

/* Per-endpoint weights for connections to |model| that carry no request yet:
 * the primary profile's filters and weighted scorers on the snapshot's
 * candidates (with sched_set_staleness on, endpoints with stale metrics get 0
 * while any endpoint is fresh, as on the ext_proc path), scaled to
 * 0..SCHED_FASTPATH_WMAX (0: a filter dropped it, shed).
 * |weights| has room for snap->n_endpoints, indexed like snap->endpoints.
 * Scratch memory comes from |a|. Returns 0 or -ENOMEM. */
int sched_fastpath_weights(const sched *s, const store_snapshot *snap, const char *model,
			   arena *a, uint32_t *weights, sched_fastpath_info *info);
#endif
