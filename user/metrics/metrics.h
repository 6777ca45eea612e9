/* metrics: model-server metric scraping (spec §6). The scraper polls every
 * endpoint's Prometheus text endpoint on the control thread's event loop
 * (libcurl multi), maps the engine's metric names onto store_metrics, and
 * keeps the latest result per endpoint address for the control thread to put
 * into the next store snapshot.
 *
 * Threads: everything here runs on the thread that owns the event_base given
 * to mx_scraper_new; nothing is thread-safe. */
#ifndef KEPP_METRICS_H
#define KEPP_METRICS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sched/sched.h"
#include "store/store.h"
#include "util/arena.h"

struct event_base;

/* ---- Engine mappings (extract.c) ---- */

/* One engine config of a core-metrics-extractor, with its metric specs
 * (PromQL selectors "name{label=value,...}") compiled. */
typedef struct mx_engine mx_engine;

/* Compiles |e|. Returns NULL with a reason in |err| when a spec is invalid or
 * memory runs out. */
mx_engine *mx_engine_new(const sched_engine *e, char *err, size_t errlen);
void mx_engine_free(mx_engine *e);
const char *mx_engine_name(const mx_engine *e);

/* Parses one exposition |body| and updates |m| with every metric |e| maps:
 * each metric found replaces its fields, a metric missing or in error leaves
 * them as they were (spec §6: errors in one metric don't discard the others).
 * LoRA adapter strings are allocated from |a|. Does not touch m->valid or
 * m->update_ms. Returns how many metrics were extracted (>= 0), or a negative
 * errno when the body does not parse (then |m| is untouched). |err| gets the
 * parse error, or the first per-metric problem when the return is >= 0. */
int mx_extract(const mx_engine *e, const char *body, size_t len, arena *a, store_metrics *m,
	       char *err, size_t errlen);

/* ---- Scraper (scrape.c) ---- */

typedef struct mx_scraper mx_scraper;

typedef struct mx_scraper_opts {
	int64_t interval_ms; /* --refresh-metrics-interval; <= 0: 50 */
	int64_t timeout_ms;  /* per request; <= 0: 10000 (the reference's HTTP client) */
	/* Engine for pods without the engine label in legacy-metrics mode (the
	 * data layer's extractors carry their own defaultEngine); NULL: "vllm". */
	const char *default_engine;
	size_t max_body; /* <= 0: MX_PROM_MAX_BODY (16 MiB) */
} mx_scraper_opts;

/* Builds a scraper on |base| for the data layer |dl| (sched_data_layer();
 * it must outlive the scraper). In legacy-metrics mode (or with no source)
 * it scrapes http://<ip>:<port>/metrics with the built-in engines. Returns
 * NULL with a reason in |err|. Scraping starts with the first endpoints. */
mx_scraper *mx_scraper_new(struct event_base *base, const sched_datalayer *dl,
			   const mx_scraper_opts *opts, char *err, size_t errlen);
void mx_scraper_free(mx_scraper *s);
/* Points the scraper at |dl| (a reloaded config's data layer) when it is
 * equal, field by field, to the one the scraper was built from, so scraping
 * goes on with its state; the old data layer may then be freed. Returns
 * -ESTALE when they differ: build a new scraper then. */
int mx_scraper_rebind(mx_scraper *s, const sched_datalayer *dl);

/* One endpoint to scrape. */
typedef struct mx_target {
	const char *addr;     /* store_endpoint.addr: results are kept under it */
	const char *ip;       /* without brackets */
	uint16_t port;        /* metrics port: the target port, or
				 --model-server-metrics-port with one target port */
	/* Pod labels, for the extractors' engine label; none: default engine. */
	const char *const *label_keys;
	const char *const *label_values;
	uint32_t n_labels;
} mx_target;

/* Replaces the endpoint set (copied). An endpoint whose address, port and
 * engine stay keeps its metrics and its request in flight; others are
 * dropped. Returns 0 or -ENOMEM (then the old set stays). */
int mx_scraper_set_targets(mx_scraper *s, const mx_target *t, uint32_t n);
/* The same for store endpoints without labels (static pools): each is
 * scraped on its own port. */
int mx_scraper_set_endpoints(mx_scraper *s, const store_endpoint *eps, uint32_t n);

/* |cb| runs on the event loop when metrics changed: once the requests of a
 * round have all finished, or at the next round when a slow one holds on. */
void mx_scraper_on_update(mx_scraper *s, void (*cb)(void *ctx), void *ctx);

/* Copies the latest metrics into each of |eps| whose addr is scraped (others
 * are left as they are); adapter names go to |a|. Metrics keep their
 * update_ms when scrapes fail, so consumers see them age. */
void mx_scraper_fill(const mx_scraper *s, store_endpoint *eps, uint32_t n, arena *a);

typedef struct mx_scraper_stats {
	uint64_t started;  /* requests sent */
	uint64_t ok;       /* 200 answers that parsed */
	uint64_t failed;   /* transport errors, non-200 answers, bad bodies */
	uint64_t timeouts; /* requests that hit timeout_ms (also counted in failed) */
	uint64_t skipped;  /* rounds an endpoint was skipped: its last request still ran */
	uint32_t in_flight;
} mx_scraper_stats;
void mx_scraper_stats_get(const mx_scraper *s, mx_scraper_stats *out);

/* Per endpoint, for /metrics and /debug/pool: counts since the endpoint
 * became a scrape target. */
typedef struct mx_endpoint_stats {
	uint64_t ok, failed;
	bool failing; /* the last scrape failed */
} mx_endpoint_stats;
/* Returns 0, or -ENOENT when |addr| is not scraped. */
int mx_scraper_endpoint_stats(const mx_scraper *s, const char *addr, mx_endpoint_stats *out);
#endif
