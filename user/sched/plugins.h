/* plugins: the scheduling framework inside sched (spec §4.1): the registry of
 * built-in plugin types, plugin instances, profiles, and the shared pieces
 * the filters, scorers and pickers use. Internal to user/sched/.
 */
#ifndef KEPP_SCHED_PLUGINS_H
#define KEPP_SCHED_PLUGINS_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "sched/body.h"
#include "sched/sched.h"

/* What a plugin type can do (a type may be several, e.g. a saturation
 * detector is also a filter, as in the reference). */
enum {
	PK_FILTER = 1 << 0,
	PK_SCORER = 1 << 1,
	PK_PICKER = 1 << 2,
	PK_HANDLER = 1 << 3,
	PK_PARSER = 1 << 4,
	PK_SATURATION = 1 << 5,
	PK_SOURCE = 1 << 6,
	PK_EXTRACTOR = 1 << 7,
	PK_RESPONSE = 1 << 8, /* response-header plugin */
	PK_OTHER = 1 << 9,    /* accepted, no scheduling role */
};

typedef struct sched_plugin sched_plugin;

/* Per-request view every plugin gets. */
typedef struct sched_ctx {
	const sched *s;
	const sched_request *req;
	sched_str target_model;
	int64_t now_ns; /* CLOCK_MONOTONIC */
	arena *a;
	enum sched_api api;
	const body_req *body;        /* NULL with the passthrough parser */
	const store_snapshot *snap;
	void **state;                /* per-request plugin state, by sched_plugin.slot */
	sched_trace *trace;          /* NULL unless the caller observes the decision */
	/* The in-flight slots of snap's endpoints (inflight_view_of); NULL:
	 * every lookup hashes the name. */
	const struct inflight_view *inflight_view;
} sched_ctx;

typedef struct sched_scored {
	const store_endpoint *ep;
	double score;
} sched_scored;

/* Build-time context handed to plugin factories. */
typedef struct sched_build {
	sched *s;
	const char *source;
	const sched_plugin *self; /* plugin being created */
	char *err;
	size_t errlen;
} sched_build;

typedef struct plugin_type {
	const char *type;
	unsigned kinds;
	bool needs_inflight; /* reads the per-endpoint in-flight counters */
	/* Validates |params| (NULL when absent) and sets p->cfg. Returns 0 or
	 * -EINVAL after plugin_error(). */
	int (*create)(sched_plugin *p, const cJSON *params, sched_build *b);
	/* Writes the kept endpoints to |out| (room for |n|); returns how many. */
	size_t (*filter)(const sched_plugin *p, const sched_ctx *c, const store_endpoint *const *in,
			 size_t n, const store_endpoint **out);
	/* Raw scores (the framework clamps them to [0,1]). */
	void (*score)(const sched_plugin *p, const sched_ctx *c, const store_endpoint *const *eps,
		      size_t n, double *out);
	/* Orders |sc| in place and returns how many of its first entries win. */
	size_t (*pick)(const sched_plugin *p, const sched_ctx *c, sched_scored *sc, size_t n);
	double (*saturation)(const sched_plugin *p, const sched_ctx *c,
			     const store_endpoint *const *eps, size_t n);
	/* PrepareData: runs on all candidates before the profile; may keep
	 * request state in c->state[p->slot]. */
	void (*prepare)(const sched_plugin *p, const sched_ctx *c, const store_endpoint *const *eps,
			size_t n);
	/* PreRequest: runs after a successful pick (primary first). */
	void (*pre_request)(const sched_plugin *p, const sched_ctx *c,
			    const store_endpoint *const *picked, size_t n);
	/* Frees what create() allocated outside the sched's arena. */
	void (*destroy)(const sched_plugin *p);
} plugin_type;

struct sched_plugin {
	const char *name;
	const plugin_type *type;
	int line;
	size_t slot;     /* index into sched_ctx.state */
	const void *cfg; /* type-specific, owned by the sched's arena */
};

typedef struct sched_weighted {
	const sched_plugin *p;
	double weight;
} sched_weighted;

typedef struct sched_profile {
	const char *name;
	const sched_plugin **filters;
	size_t n_filters;
	sched_weighted *scorers;
	size_t n_scorers;
	const sched_plugin *picker;
} sched_profile;

typedef struct inflight inflight;

struct sched {
	atomic_uint refs; /* sched_new's, plus one per snapshot that carries it */
	arena mem;
	const char *source;
	sched_plugin **plugins;
	size_t n_plugins, cap_plugins;
	sched_profile *profiles;
	size_t n_profiles;
	const sched_plugin *handler, *parser, *saturation;
	const sched_plugin **responders; /* response-header plugins */
	size_t n_responders;
	bool passthrough;
	const sched_plugin **preparers; /* plugins with prepare/pre_request hooks */
	size_t n_preparers;
	inflight *inflight; /* NULL when no plugin reads in-flight counts */
	int64_t stale_ms;   /* sched_set_staleness; 0: off */
	sched_datalayer dl;
};

/* Registry tables, one per file. */
extern const plugin_type *const sched_scorer_types[];
extern const plugin_type *const sched_filter_types[];
extern const plugin_type *const sched_picker_types[];
extern const plugin_type *const sched_prefix_types[];
extern const plugin_type *const sched_affinity_types[];

const plugin_type *sched_find_type(const char *name);

/* The prefix-cache scorer's chain step (prefix.c): XXH64 of |block| (|n|
 * bytes) || LE64(|prev|), the value the reference computes. */
uint64_t prefix_block_hash(const void *block, size_t n, uint64_t prev);
const sched_plugin *sched_find_plugin(const sched *s, const char *name);

/* "<source>:<line>: failed to create plugin '<name>' (type: <type>): <msg>". */
int plugin_error(sched_build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void *build_alloc(sched_build *b, size_t n);
char *build_strdup(sched_build *b, const char *s);

/* Strict parameter decoding: every member of |params| must be listed in
 * |spec| (matched case-insensitively, like Go's struct fields) and have the
 * listed type; |set| flags say which were present. */
enum param_kind { P_INT, P_FLOAT, P_BOOL, P_STRING, P_DURATION, P_OBJECT, P_ARRAY };
typedef struct param_spec {
	const char *key;
	enum param_kind kind;
	void *dst;  /* long long, double, bool, const char *, int64_t ns, const cJSON * */
	bool *set;
} param_spec;
int params_parse(sched_build *b, const cJSON *params, const param_spec *spec, size_t n);
/* Factory for types without parameters: refuses any. */
int plugin_no_params(sched_plugin *p, const cJSON *params, sched_build *b);
/* Same for a nested object, errors naming "<where>.<key>". */
int params_parse_at(sched_build *b, const char *where, const cJSON *obj, const param_spec *spec,
		    size_t n);
/* Go's time.ParseDuration into nanoseconds; false when malformed. */
bool parse_go_duration(const char *s, int64_t *ns);

/* Per-endpoint in-flight counters, keyed by endpoint name across snapshots. */
inflight *inflight_new(void);
void inflight_free(inflight *t);
void *inflight_acquire(inflight *t, const char *name, int64_t tokens);
void inflight_release(void *slot, int64_t tokens);
void inflight_get(const inflight *t, const char *name, int64_t *requests, int64_t *tokens);
/* Counts a request held in |slot| as sent after the scrape of |scrape_ms|
 * (the update_ms its snapshot showed); returns the mark to undo it with. */
uint64_t inflight_mark_sent(void *slot, int64_t scrape_ms);
void inflight_unmark_sent(void *slot, uint64_t mark);
/* Unfinished requests sent to |name| after its scrape of |scrape_ms|. */
int64_t inflight_since(const inflight *t, const char *name, int64_t scrape_ms);

/* The in-flight slots of |snap|'s endpoints, resolved (claimed when new) by
 * the first request on the snapshot and kept with it, so per-endpoint reads
 * index an array instead of hashing names and probing the table. NULL when
 * |snap| has no endpoints or already carries another table's view. */
struct inflight_view;
const struct inflight_view *inflight_view_of(inflight *t, const store_snapshot *snap);
/* inflight_since / inflight_get for a candidate, through c->inflight_view
 * when it covers |ep| (by its name hash otherwise); 0 without counters. */
int64_t inflight_since_ep(const sched_ctx *c, const store_endpoint *ep);
void inflight_get_ep(const sched_ctx *c, const store_endpoint *ep, int64_t *requests,
		     int64_t *tokens);

/* Endpoint is fresh: metrics scraped within |threshold_ns| of |now_ns|
 * (inline: every candidate of every request is checked). */
static inline bool metrics_fresh(const store_endpoint *ep, int64_t now_ns, int64_t threshold_ns)
{
	return ep->m.valid && now_ns - ep->m.update_ms * 1000000LL <= threshold_ns;
}
/* Go net.SplitHostPort; false when |s| is not host:port. */
bool split_host_port(const char *s, size_t n, sched_str *host, sched_str *port);
#endif
