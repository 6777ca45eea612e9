/* admin: kepp's own observability. Prometheus metrics with the reference
 * EPP's names, labels and buckets (spec §7.1) plus kepp_* metrics, served
 * with /healthz and the debug endpoints (/debug/pool, /debug/explain) by an
 * HTTP server on --metrics-port; and the per-decision debug log line.
 *
 * Threads: what requests record lives in one adm_worker per worker thread,
 * written only by that worker (relaxed atomic loads and stores: no locks, no
 * syscalls, and no allocation once a label set has been seen) and read by
 * the control thread with atomic loads when /metrics is scraped. Each
 * labelled family keeps at most adm_opts.max_series label sets per worker;
 * a request with a new label set beyond that is not counted there, but in
 * kepp_metrics_series_dropped_total{family}. Everything else (adm_new,
 * adm_worker_new, the HTTP server, collectors) runs on the control thread.
 *
 * Families of the reference that kepp does not produce, because kepp has no
 * such feature: the latency predictor's (inference_objective_request_ttft_*,
 * _tpot_*, _predicted_*, _slo_violation_total, _inference_request_metric)
 * and flow control's (inference_extension_flow_control_*).
 */
#ifndef KEPP_ADMIN_H
#define KEPP_ADMIN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/metrics.h"
#include "sched/sched.h"
#include "store/store.h"

struct event_base;
typedef struct adm adm;
typedef struct adm_worker adm_worker;

typedef struct adm_opts {
	bool debug_endpoints; /* --enable-debug-endpoints: /debug/pool, /debug/explain */
	int64_t staleness_ms; /* --metrics-staleness-threshold; <= 0: 2000 */
	size_t max_series;    /* per labelled family and worker; 0: 1024 (endpoints: at
			       * least 8192; an endpoint address seen once keeps its
			       * entry for the worker's life) */
	store *store;         /* the snapshots gauges and debug endpoints read */
	/* For pool gauges when the catalog names no InferencePool (static
	 * pools): the --pool-name / --pool-namespace flags. With no name at
	 * all, the inference_pool_* gauges are left out. */
	const char *pool_name, *pool_namespace;
	const char *version, *commit; /* inference_extension_info{build_ref,commit} */
	/* Where the current scraper is (it is replaced on some config reloads);
	 * NULL, or pointing at NULL: no per-endpoint scrape metrics. */
	mx_scraper *const *scraper;
} adm_opts;

/* The options are copied; strings must outlive the adm. */
adm *adm_new(const adm_opts *o);
/* Serves /metrics, /healthz and (when enabled) /debug/ on |port| of every
 * address, IPv6 and IPv4, on |base|'s loop. Returns 0 or a negative errno
 * with the reason in |err|. */
int adm_listen(adm *a, struct event_base *base, int port, char *err, size_t errlen);
/* Frees the server, the collectors and every adm_worker; after the workers
 * have stopped. */
void adm_free(adm *a);

/* One worker's tables. Call on the control thread before the worker runs;
 * the adm owns it. NULL on allocation failure. */
adm_worker *adm_worker_new(adm *a);

/* ---- the request path (the worker thread that owns |w|) ----
 * Every function accepts w == NULL (no metrics) and does nothing then. */

/* One ext_proc stream's metric state; zeroed by adm_stream_open. */
typedef struct adm_req {
	struct adm_series *series;    /* (model, target) of the decision */
	struct adm_endpoint *ep;      /* the primary pick's in-flight counter */
	int64_t received_ns;          /* CLOCK_MONOTONIC at the request headers */
	uint64_t response_bytes;
	const char *err_code;         /* error_code label (a static string), or NULL */
	bool running;                 /* counted in inference_objective_running_requests */
	bool completed;               /* response metrics recorded */
} adm_req;

void adm_stream_open(adm_worker *w, adm_req *r);
/* The request headers arrived: the request's latency starts. */
void adm_request_received(adm_req *r);
/* A decision was made. |rq| is NULL for a request without a body (a random
 * pick: only the endpoint counters move); else |rq|->trace, if set, holds
 * the plugin timings and |decide_ns| is how long sched_decide took. On
 * success the request is counted as running until adm_stream_close. */
void adm_request_decided(adm_worker *w, adm_req *r, const store_snapshot *snap,
			 const sched_request *rq, const sched_result *res, int64_t decide_ns);
/* The stream ends with this error (spec §2.8 code name, e.g. "BadRequest"),
 * counted once at adm_stream_close. */
void adm_request_failed(adm_req *r, const char *code);
/* Response headers: a status other than 200 counts as "ModelServerError". */
void adm_response_status(adm_req *r, const char *status, size_t len);
void adm_response_bytes(adm_req *r, size_t n);
/* The response is complete: latency, sizes, tokens (|u| may be NULL).
 * |res| names the model (NULL or undecided: empty labels). Once per stream. */
void adm_response_done(adm_worker *w, adm_req *r, const sched_result *res, const sched_usage *u);
/* The stream ended, however: errors, running and in-flight counts. */
void adm_stream_close(adm_worker *w, adm_req *r, const sched_result *res);

/* The per-decision debug line (--v=4): request id, model, target model,
 * every candidate with its score per scorer (or the filter that dropped it),
 * and the pick or the error. Needs |rq|->trace with want_table for scores. */
void adm_log_decision(const sched_request *rq, const sched_result *res);

/* ---- exposition and debug output (control thread) ---- */

typedef struct adm_buf {
	char *p;
	size_t len, cap;
	bool oom; /* an append failed: the content is incomplete */
} adm_buf;
void adm_buf_free(adm_buf *b);

/* The whole /metrics text into |out|. Returns 0 or -ENOMEM. */
int adm_metrics_render(adm *a, adm_buf *out);

/* Collectors add metrics of other modules to every scrape, e.g. the kernel
 * fast path's counters from kern_stats(). |fn| runs on the control thread
 * and writes with adm_out_family/adm_out_sample; families are printed in
 * the order written, after kepp's own. */
typedef struct adm_out adm_out;
typedef void (*adm_collect_fn)(void *ctx, adm_out *out);
int adm_register_collector(adm *a, adm_collect_fn fn, void *ctx);
/* |type| is "counter", "gauge" or "untyped"; |help| is printed as given. */
void adm_out_family(adm_out *o, const char *name, const char *type, const char *help);
/* One sample: label name/value pairs then NULL. Values are escaped. */
void adm_out_sample(adm_out *o, const char *name, double value, ...) __attribute__((sentinel));

/* GET /debug/pool as JSON. */
int adm_debug_pool(adm *a, adm_buf *out);

/* /debug/explain: decides |body| against the current snapshot without
 * recording anything (sched_request.dry_run: no in-flight counts, no prefix
 * index update, no metrics) and writes the score table as JSON. */
typedef struct adm_explain_req {
	const char *body;
	size_t body_len;
	const char *path;   /* :path; NULL: /v1/completions */
	const char *subset; /* endpoint subset hint, the comma-string form; NULL: none */
	sched_header_fn header; /* request headers (x-gateway-inference-objective, ...) */
	void *header_ctx;
} adm_explain_req;
int adm_explain(adm *a, const adm_explain_req *in, adm_buf *out);
#endif
