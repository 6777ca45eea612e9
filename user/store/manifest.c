/* Manifests (--manifests): InferencePool, InferenceModel, InferenceObjective
 * and InferenceModelRewrite objects read from YAML files, decoded the way
 * `kubectl apply` and the API server would take them: strict field names (an
 * unknown field is an error, as with kubectl's default --validate=strict),
 * JSON types after YAML resolution (a plain `1` is not a string), the CRDs'
 * required fields, enums, ranges, patterns and CEL rules, and the CRD
 * defaults. Errors name the file and line of the node at fault.
 *
 * Loading has two passes: every object of every file is decoded first, then
 * the pool is chosen and the other objects are filtered to it, so the order of
 * files does not matter.
 *
 * Objects from the Kubernetes API (store_objects_load) take the same decoder:
 * their JSON becomes a libyaml node tree typed as jkind() reads it back. */
#include "store/manifest.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "util/log.h"
#include "util/yaml.h"

#define GROUP_V1 "inference.networking.k8s.io"
#define GROUP_X "inference.networking.x-k8s.io"
#define API_V1 GROUP_V1 "/v1"
#define API_X GROUP_X "/v1alpha2"
#define KIND_POOL "InferencePool"
/* Nodes a file may make the decoder visit: aliases can make a small file
 * expand far beyond its size, so the walk has a budget of its own. */
#define MAX_VISITS 2000000L
#define MAX_OBJECTS 100000
#define MAX_MAP_ENTRIES 1024
#define WHERE_LEN 192

enum okind { K_POOL, K_MODEL, K_OBJECTIVE, K_REWRITE };

static const char *const kind_names[] = {
	[K_POOL] = KIND_POOL,
	[K_MODEL] = "InferenceModel",
	[K_OBJECTIVE] = "InferenceObjective",
	[K_REWRITE] = "InferenceModelRewrite",
};

/* One decoded object, before the pool filter. Strings live in the catalog
 * arena (those of dropped objects too: a reload builds a new catalog). */
typedef struct mobj {
	enum okind kind;
	const char *file;
	int line;
	const char *group; /* API group of the object itself */
	const char *ns, *name;
	int64_t created;
	uint32_t seq;      /* load order */
	const char *ref_group, *ref_kind, *ref_name; /* spec.poolRef */
	union {
		store_pool pool;
		store_model model;
		store_objective objective;
		struct {
			store_rewrite_rule *rules;
			uint32_t n;
		} rw;
	} u;
} mobj;

typedef struct mctx {
	const store_manifest_opts *o;
	store_catalog *c;
	mobj *objs;
	size_t n_objs, cap_objs;
	/* current file and document */
	const char *file;
	yaml_document_t *d;
	long budget;
	char what[320]; /* "InferencePool \"name\"" once the name is known */
	/* Objects from the API server: already validated there against the
	 * CRD it serves, which may be newer than this decoder. */
	bool api;
	char *err;
	size_t errlen;
} mctx;

static int merr(mctx *m, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int merr(mctx *m, const yaml_node_t *n, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (m->api) /* no lines: the node tree was built from JSON */
		snprintf(m->err, m->errlen, "%s: %s%s%s", m->file, m->what,
			 m->what[0] ? ": " : "", msg);
	else
		snprintf(m->err, m->errlen, "%s:%d: %s%s%s", m->file, yline(n), m->what,
			 m->what[0] ? ": " : "", msg);
	return -EINVAL;
}

static int oom(mctx *m)
{
	snprintf(m->err, m->errlen, "%s: out of memory", m->file);
	return -ENOMEM;
}

static int spend(mctx *m, const yaml_node_t *n, long cost)
{
	m->budget -= cost;
	if (m->budget < 0)
		return merr(m, n, "more than %ld YAML nodes to read (alias expansion?)",
			    MAX_VISITS);
	return 0;
}

static const char *wfmt(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static const char *wfmt(char *buf, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, WHERE_LEN, fmt, ap);
	va_end(ap);
	return buf;
}

/* ---- JSON typing of YAML nodes ------------------------------------------ */

static bool plain(const yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* What a node becomes in JSON, as sigs.k8s.io/yaml would convert it. */
static const char *jkind(const yaml_node_t *n)
{
	if (n->type == YAML_MAPPING_NODE)
		return "object";
	if (n->type == YAML_SEQUENCE_NODE)
		return "array";
	if (!plain(n))
		return "string";
	bool b;
	int64_t i;
	double d;
	if (yis_null(n))
		return "null";
	if (yto_bool(n, &b) == 0)
		return "boolean";
	if (yto_int64(n, &i) == 0)
		return "integer";
	if (yto_double(n, &d) == 0 && strpbrk(yscalar(n), "0123456789"))
		return "number";
	return "string";
}

static bool is_str(const yaml_node_t *n) { return strcmp(jkind(n), "string") == 0; }

/* ---- field access ------------------------------------------------------- */

/* Checks that |map| is a mapping (null counts as empty) whose keys are all
 * in |known|, each at most once. */
static int check_fields(mctx *m, yaml_node_t *map, const char *where, const char *const *known,
			size_t n_known)
{
	if (yis_null(map))
		return 0;
	if (map->type != YAML_MAPPING_NODE)
		return merr(m, map, "%s must be an object, not %s", *where ? where : "a manifest",
			    jkind(map));
	if (spend(m, map, 1 + (long)ymap_len(map)) < 0)
		return -EINVAL;
	for (size_t i = 0; i < ymap_len(map); i++) {
		yaml_node_t *k, *v;
		ymap_at(m->d, map, i, &k, &v);
		if (k->type != YAML_SCALAR_NODE)
			return merr(m, k, "field names in %s must be strings", where);
		const char *ks = yscalar(k);
		size_t f = 0;
		while (f < n_known && strcmp(ks, known[f]) != 0)
			f++;
		/* A field a newer CRD added: the API server accepted it. */
		if (f == n_known && m->api)
			continue;
		if (f == n_known)
			return merr(m, k, "unknown field \"%s%s%s\"", where, *where ? "." : "", ks);
		for (size_t j = 0; j < i; j++) {
			yaml_node_t *pk, *pv;
			ymap_at(m->d, map, j, &pk, &pv);
			if (strcmp(yscalar(pk), ks) == 0)
				return merr(m, k, "duplicate field \"%s%s%s\"", where,
					    *where ? "." : "", ks);
		}
	}
	return 0;
}

#define CHECK_FIELDS(m, map, where, ...)                                                       \
	({                                                                                     \
		static const char *const known_[] = {__VA_ARGS__};                             \
		check_fields(m, map, where, known_, sizeof(known_) / sizeof(known_[0]));       \
	})

/* The value of |key|, or NULL when absent or null (the Go zero value). */
static yaml_node_t *field(mctx *m, yaml_node_t *map, const char *key)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	yaml_node_t *v = ymap_get(m->d, map, key);
	return v && !yis_null(v) ? v : NULL;
}

/* "where.key", or "key" at the top level (where == ""). */
static const char *path(char *buf, const char *where, const char *key)
{
	return *where ? wfmt(buf, "%s.%s", where, key) : wfmt(buf, "%s", key);
}

/* A string field; *out stays NULL when absent. */
static int get_str(mctx *m, yaml_node_t *map, const char *key, const char *where,
		   const char **out, yaml_node_t **node)
{
	yaml_node_t *v = field(m, map, key);
	char w[WHERE_LEN];
	*out = NULL;
	if (node)
		*node = v;
	if (!v)
		return 0;
	if (!is_str(v))
		return merr(m, v, "%s must be a string, not %s", path(w, where, key), jkind(v));
	*out = arena_strdup(&m->c->mem, yscalar(v));
	return *out ? 0 : oom(m);
}

static int req_str(mctx *m, yaml_node_t *map, const char *key, const char *where,
		   const char **out, yaml_node_t **node)
{
	char w[WHERE_LEN];
	int r = get_str(m, map, key, where, out, node);
	if (r < 0)
		return r;
	if (!*out || !**out)
		return merr(m, *node ? *node : map, "%s is required", path(w, where, key));
	return 0;
}

/* An integer field in [lo, hi]; *present says whether it was given. */
static int get_int(mctx *m, yaml_node_t *map, const char *key, const char *where, int64_t lo,
		   int64_t hi, int64_t *out, bool *present)
{
	yaml_node_t *v = field(m, map, key);
	char w[WHERE_LEN];
	*present = v != NULL;
	if (!v)
		return 0;
	int64_t x;
	if (!plain(v) || yto_int64(v, &x) < 0)
		return merr(m, v, "%s must be an integer, not %s", path(w, where, key), jkind(v));
	if (x < lo || x > hi)
		return merr(m, v, "%s must be between %lld and %lld", path(w, where, key),
			    (long long)lo, (long long)hi);
	*out = x;
	return 0;
}

/* A sequence field; NULL when absent. */
static int get_seq(mctx *m, yaml_node_t *map, const char *key, const char *where,
		   yaml_node_t **out)
{
	yaml_node_t *v = field(m, map, key);
	char w[WHERE_LEN];
	*out = v;
	if (!v)
		return 0;
	if (v->type != YAML_SEQUENCE_NODE)
		return merr(m, v, "%s must be an array, not %s", path(w, where, key), jkind(v));
	return spend(m, v, 1 + (long)yseq_len(v));
}

/* A mapping field; NULL when absent. */
static int get_map(mctx *m, yaml_node_t *map, const char *key, const char *where,
		   yaml_node_t **out)
{
	yaml_node_t *v = field(m, map, key);
	char w[WHERE_LEN];
	*out = v;
	if (v && v->type != YAML_MAPPING_NODE)
		return merr(m, v, "%s must be an object, not %s", path(w, where, key), jkind(v));
	return 0;
}

/* ---- Kubernetes string formats ------------------------------------------ */

static bool lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
static bool alnum(char c) { return lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

/* RFC 1123 subdomain: dot-separated [a-z0-9]([-a-z0-9]*[a-z0-9])? labels. */
static bool dns_subdomain(const char *s, size_t max)
{
	size_t len = strlen(s);
	if (!len || len > max)
		return false;
	for (size_t i = 0; i < len; i++) {
		bool edge = i == 0 || i == len - 1 || s[i - 1] == '.' || s[i + 1] == '.';
		if (s[i] == '.' ? edge : !(lower_alnum(s[i]) || (s[i] == '-' && !edge)))
			return false;
	}
	return true;
}

static bool dns_label(const char *s) { return dns_subdomain(s, 63) && !strchr(s, '.'); }

/* ^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$, 1..63 */
static bool kind_name(const char *s)
{
	size_t len = strlen(s);
	if (!len || len > 63 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!(alnum(s[i]) || (s[i] == '-' && i < len - 1)))
			return false;
	return true;
}

/* ^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$, 0..63 */
static bool label_value(const char *s)
{
	size_t len = strlen(s);
	if (len > 63)
		return false;
	for (size_t i = 0; i < len; i++) {
		bool edge = i == 0 || i == len - 1;
		if (!(alnum(s[i]) || (!edge && (s[i] == '-' || s[i] == '_' || s[i] == '.'))))
			return false;
	}
	return true;
}

static int check_group(mctx *m, yaml_node_t *n, const char *where, const char *g)
{
	if (*g && !dns_subdomain(g, 253))
		return merr(m, n, "%s.group \"%s\" is not a valid API group", where, g);
	return 0;
}

static int check_kind(mctx *m, yaml_node_t *n, const char *where, const char *k)
{
	if (!kind_name(k))
		return merr(m, n, "%s.kind \"%s\" is not a valid kind", where, k);
	return 0;
}

static int check_len(mctx *m, yaml_node_t *n, const char *where, const char *key, const char *s,
		     size_t max)
{
	if (s && strlen(s) > max)
		return merr(m, n, "%s.%s must be at most %zu characters", where, key, max);
	return 0;
}

/* RFC 3339 ("2025-01-02T03:04:05Z", fractions and offsets allowed), as metav1.Time. */
static int parse_time(const char *s, int64_t *out)
{
	struct tm tm = {0};
	int n = 0;
	if (sscanf(s, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &n) != 3 || n != 10)
		return -EINVAL;
	s += 10;
	if (*s != 'T' && *s != 't')
		return -EINVAL;
	s++;
	if (sscanf(s, "%2d:%2d:%2d%n", &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 3 || n != 8)
		return -EINVAL;
	s += 8;
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return -EINVAL;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	long off = 0;
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		int hh, mm;
		if (sscanf(s + 1, "%2d:%2d%n", &hh, &mm, &n) != 2 || n != 5 || hh > 23 || mm > 59)
			return -EINVAL;
		off = (hh * 60L + mm) * 60 * (*s == '-' ? -1 : 1);
		s += 6;
	} else {
		return -EINVAL;
	}
	if (*s || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return -EINVAL;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	int mday = tm.tm_mday;
	time_t t = timegm(&tm);
	/* timegm normalises 2024-02-31 to March 2; Kubernetes refuses it. */
	if (tm.tm_mday != mday)
		return -EINVAL;
	*out = (int64_t)t - off;
	return 0;
}

/* ---- metadata ----------------------------------------------------------- */

/* A map of string to string (labels, annotations, matchLabels). */
static int str_map(mctx *m, yaml_node_t *map, const char *where, bool label_values)
{
	if (!map || yis_null(map))
		return 0;
	if (map->type != YAML_MAPPING_NODE)
		return merr(m, map, "%s must be an object, not %s", where, jkind(map));
	/* Far more than Kubernetes' 256 KiB of labels or annotations allows
	 * in practice; it keeps the duplicate-key check below quadratic in a
	 * small number. */
	if (ymap_len(map) > MAX_MAP_ENTRIES)
		return merr(m, map, "%s has more than %d entries", where, MAX_MAP_ENTRIES);
	if (spend(m, map, 1 + 2 * (long)ymap_len(map)) < 0)
		return -EINVAL;
	for (size_t i = 0; i < ymap_len(map); i++) {
		yaml_node_t *k, *v;
		ymap_at(m->d, map, i, &k, &v);
		if (k->type != YAML_SCALAR_NODE || !*yscalar(k))
			return merr(m, k, "keys of %s must be non-empty strings", where);
		for (size_t j = 0; j < i; j++) {
			yaml_node_t *pk, *pv;
			ymap_at(m->d, map, j, &pk, &pv);
			if (!strcmp(yscalar(pk), yscalar(k)))
				return merr(m, k, "duplicate key \"%s\" in %s", yscalar(k), where);
		}
		if (!is_str(v))
			return merr(m, v, "%s.%s must be a string, not %s", where, yscalar(k),
				    jkind(v));
		if (label_values && !label_value(yscalar(v)))
			return merr(m, v,
				    "%s.%s: \"%s\" is not a valid label value (at most 63 "
				    "characters: letters, digits, '-', '_' or '.', starting and "
				    "ending with a letter or digit)",
				    where, yscalar(k), yscalar(v));
	}
	return 0;
}

static int decode_metadata(mctx *m, yaml_node_t *root, mobj *o)
{
	yaml_node_t *md, *name_n, *ns_n, *ts_n;
	const char *ts;
	int r = get_map(m, root, "metadata", "", &md);
	if (r < 0)
		return r;
	if (!md)
		return merr(m, root, "metadata.name is required");
	if ((r = req_str(m, md, "name", "metadata", &o->name, &name_n)) < 0)
		return r;
	snprintf(m->what, sizeof(m->what), "%s \"%.250s\"", kind_names[o->kind], o->name);
	/* Every ObjectMeta field, as `kubectl get -o yaml` prints them; only
	 * name, namespace and creationTimestamp matter here. */
	r = CHECK_FIELDS(m, md, "metadata", "name", "namespace", "creationTimestamp", "labels",
			 "annotations", "uid", "resourceVersion", "generation", "generateName",
			 "selfLink", "finalizers", "ownerReferences", "managedFields",
			 "deletionTimestamp", "deletionGracePeriodSeconds");
	if (r < 0 || (r = get_str(m, md, "namespace", "metadata", &o->ns, &ns_n)) < 0 ||
	    (r = get_str(m, md, "creationTimestamp", "metadata", &ts, &ts_n)) < 0)
		return r;
	if (!dns_subdomain(o->name, 253))
		return merr(m, name_n,
			    "metadata.name \"%s\" must be a lowercase RFC 1123 subdomain "
			    "(a-z, 0-9, '-' and '.', at most 253 characters)",
			    o->name);
	if (o->ns && !dns_label(o->ns))
		return merr(m, ns_n,
			    "metadata.namespace \"%s\" must be a lowercase RFC 1123 label "
			    "(a-z, 0-9 and '-', at most 63 characters)",
			    o->ns);
	if (!o->ns)
		o->ns = m->o->pool_namespace;
	if (ts && parse_time(ts, &o->created) < 0)
		return merr(m, ts_n, "metadata.creationTimestamp \"%s\" is not an RFC 3339 time",
			    ts);
	/* Without a timestamp, "created" seconds after the epoch in load
	 * order: older than any real object, and file order breaks ties. */
	if (!ts)
		o->created = o->seq;
	if ((r = str_map(m, field(m, md, "labels"), "metadata.labels", true)) < 0 ||
	    (r = str_map(m, field(m, md, "annotations"), "metadata.annotations", false)) < 0)
		return r;
	return 0;
}

/* ---- InferencePool ------------------------------------------------------ */

static int decode_failure_mode(mctx *m, yaml_node_t *ref, const char *where, store_pool *p)
{
	const char *fm;
	yaml_node_t *n;
	int r = get_str(m, ref, "failureMode", where, &fm, &n);
	if (r < 0)
		return r;
	if (fm && strcmp(fm, "FailOpen") && strcmp(fm, "FailClose"))
		return merr(m, n, "%s.failureMode must be FailOpen or FailClose, not \"%s\"", where,
			    fm);
	p->fail_open = fm && !strcmp(fm, "FailOpen");
	return 0;
}

/* The fields endpointPickerRef (v1) and extensionRef (v1alpha2) share. */
static int decode_picker_ref(mctx *m, yaml_node_t *ref, const char *where, store_pool *p,
			     const char **kind)
{
	const char *group, *name;
	yaml_node_t *gn, *kn, *nn;
	int r;
	if ((r = get_str(m, ref, "group", where, &group, &gn)) < 0 ||
	    (r = get_str(m, ref, "kind", where, kind, &kn)) < 0 ||
	    (r = req_str(m, ref, "name", where, &name, &nn)) < 0)
		return r;
	if (group && (r = check_group(m, gn, where, group)) < 0)
		return r;
	if (*kind && (r = check_kind(m, kn, where, *kind)) < 0)
		return r;
	if ((r = check_len(m, nn, where, "name", name, 253)) < 0)
		return r;
	return decode_failure_mode(m, ref, where, p);
}

/* A label map already checked by str_map. */
static int copy_selector(mctx *m, yaml_node_t *labels, store_pool *p)
{
	uint32_t n = (uint32_t)ymap_len(labels);
	p->n_selector = n;
	if (!n)
		return 0;
	p->selector_keys = arena_calloc(&m->c->mem, n * sizeof(char *));
	p->selector_values = arena_calloc(&m->c->mem, n * sizeof(char *));
	if (!p->selector_keys || !p->selector_values)
		return oom(m);
	for (uint32_t i = 0; i < n; i++) {
		yaml_node_t *k, *v;
		ymap_at(m->d, labels, i, &k, &v);
		p->selector_keys[i] = arena_strdup(&m->c->mem, yscalar(k));
		p->selector_values[i] = arena_strdup(&m->c->mem, yscalar(v));
		if (!p->selector_keys[i] || !p->selector_values[i])
			return oom(m);
	}
	return 0;
}

static int decode_pool_v1(mctx *m, yaml_node_t *spec, store_pool *p)
{
	yaml_node_t *sel, *labels, *ports, *ref;
	int r = CHECK_FIELDS(m, spec, "spec", "selector", "targetPorts", "appProtocol",
			     "endpointPickerRef");
	if (r < 0)
		return r;

	if ((r = get_map(m, spec, "selector", "spec", &sel)) < 0)
		return r;
	if (!sel)
		return merr(m, spec, "spec.selector is required");
	if ((r = CHECK_FIELDS(m, sel, "spec.selector", "matchLabels")) < 0 ||
	    (r = get_map(m, sel, "matchLabels", "spec.selector", &labels)) < 0)
		return r;
	if (!labels)
		return merr(m, sel, "spec.selector.matchLabels is required");
	if (ymap_len(labels) < 1 || ymap_len(labels) > 64)
		return merr(m, labels, "spec.selector.matchLabels must have 1 to 64 entries");
	if ((r = str_map(m, labels, "spec.selector.matchLabels", true)) < 0 ||
	    (r = copy_selector(m, labels, p)) < 0)
		return r;

	if ((r = get_seq(m, spec, "targetPorts", "spec", &ports)) < 0)
		return r;
	if (!ports)
		return merr(m, spec, "spec.targetPorts is required");
	if (yseq_len(ports) < 1 || yseq_len(ports) > STORE_MAX_TARGET_PORTS)
		return merr(m, ports, "spec.targetPorts must have 1 to %d entries",
			    STORE_MAX_TARGET_PORTS);
	for (size_t i = 0; i < yseq_len(ports); i++) {
		yaml_node_t *port = yseq_at(m->d, ports, i);
		char w[WHERE_LEN];
		int64_t num;
		bool has;
		wfmt(w, "spec.targetPorts[%zu]", i);
		if ((r = CHECK_FIELDS(m, port, w, "number")) < 0 ||
		    (r = get_int(m, port, "number", w, 1, 65535, &num, &has)) < 0)
			return r;
		if (!has)
			return merr(m, port, "%s.number is required", w);
		for (uint32_t j = 0; j < p->n_target_ports; j++)
			if (p->target_ports[j] == num)
				return merr(m, port,
					    "spec.targetPorts: port number must be unique");
		p->target_ports[p->n_target_ports++] = (uint16_t)num;
	}

	const char *proto;
	yaml_node_t *pn;
	if ((r = get_str(m, spec, "appProtocol", "spec", &proto, &pn)) < 0)
		return r;
	if (proto && strcmp(proto, "http") && strcmp(proto, "kubernetes.io/h2c"))
		return merr(m, pn, "spec.appProtocol must be http or kubernetes.io/h2c, not \"%s\"",
			    proto);

	const char *w = "spec.endpointPickerRef", *kind;
	if ((r = get_map(m, spec, "endpointPickerRef", "spec", &ref)) < 0)
		return r;
	/* Optional in the CRDs after v1.5; the API server enforced whichever
	 * it serves. */
	if (!ref && m->api)
		return 0;
	if (!ref)
		return merr(m, spec, "%s is required", w);
	if ((r = CHECK_FIELDS(m, ref, w, "group", "kind", "name", "port", "failureMode")) < 0 ||
	    (r = decode_picker_ref(m, ref, w, p, &kind)) < 0)
		return r;
	yaml_node_t *port;
	if ((r = get_map(m, ref, "port", w, &port)) < 0)
		return r;
	if (port) {
		int64_t num;
		bool has;
		if ((r = CHECK_FIELDS(m, port, "spec.endpointPickerRef.port", "number")) < 0 ||
		    (r = get_int(m, port, "number", "spec.endpointPickerRef.port", 1, 65535, &num,
				 &has)) < 0)
			return r;
		if (!has)
			return merr(m, port, "spec.endpointPickerRef.port.number is required");
	} else if (!kind || !strcmp(kind, "Service")) {
		return merr(m, ref,
			    "spec.endpointPickerRef: port is required when kind is 'Service' or "
			    "unspecified (defaults to 'Service')");
	}
	return 0;
}

static int decode_pool_x(mctx *m, yaml_node_t *spec, store_pool *p)
{
	yaml_node_t *sel, *ref;
	int r = CHECK_FIELDS(m, spec, "spec", "selector", "targetPortNumber", "extensionRef");
	if (r < 0)
		return r;
	if ((r = get_map(m, spec, "selector", "spec", &sel)) < 0)
		return r;
	if (!sel)
		return merr(m, spec, "spec.selector is required");
	if ((r = str_map(m, sel, "spec.selector", true)) < 0 || (r = copy_selector(m, sel, p)) < 0)
		return r;

	int64_t num;
	bool has;
	if ((r = get_int(m, spec, "targetPortNumber", "spec", 1, 65535, &num, &has)) < 0)
		return r;
	if (!has)
		return merr(m, spec, "spec.targetPortNumber is required");
	p->target_ports[0] = (uint16_t)num;
	p->n_target_ports = 1;

	const char *w = "spec.extensionRef", *kind;
	if ((r = get_map(m, spec, "extensionRef", "spec", &ref)) < 0)
		return r;
	if (!ref)
		return merr(m, spec, "%s is required", w);
	if ((r = CHECK_FIELDS(m, ref, w, "group", "kind", "name", "portNumber",
			      "failureMode")) < 0 ||
	    (r = decode_picker_ref(m, ref, w, p, &kind)) < 0 ||
	    (r = get_int(m, ref, "portNumber", w, 1, 65535, &num, &has)) < 0)
		return r;
	return 0;
}

/* ---- objects that reference the pool ------------------------------------ */

static int decode_pool_ref(mctx *m, yaml_node_t *spec, mobj *o, const char *default_group)
{
	const char *w = "spec.poolRef";
	yaml_node_t *ref, *gn, *kn, *nn;
	int r = get_map(m, spec, "poolRef", "spec", &ref);
	if (r < 0)
		return r;
	if (!ref)
		return merr(m, spec, "spec.poolRef is required");
	if ((r = CHECK_FIELDS(m, ref, w, "group", "kind", "name")) < 0 ||
	    (r = get_str(m, ref, "group", w, &o->ref_group, &gn)) < 0 ||
	    (r = get_str(m, ref, "kind", w, &o->ref_kind, &kn)) < 0 ||
	    (r = req_str(m, ref, "name", w, &o->ref_name, &nn)) < 0)
		return r;
	if (o->ref_group && (r = check_group(m, gn, w, o->ref_group)) < 0)
		return r;
	if (o->ref_kind && (r = check_kind(m, kn, w, o->ref_kind)) < 0)
		return r;
	if ((r = check_len(m, nn, w, "name", o->ref_name, 253)) < 0)
		return r;
	if (!o->ref_group)
		o->ref_group = default_group;
	if (!o->ref_kind)
		o->ref_kind = KIND_POOL;
	return 0;
}

/* targetModels (InferenceModel) and targets (InferenceModelRewrite). */
static int decode_targets(mctx *m, yaml_node_t *seq, const char *where, const char *name_key,
			  bool all_or_none, store_target **out, uint32_t *n_out)
{
	uint32_t n = (uint32_t)yseq_len(seq);
	store_target *t = n ? arena_calloc(&m->c->mem, n * sizeof(*t)) : NULL;
	if (n && !t)
		return oom(m);
	for (uint32_t i = 0; i < n; i++) {
		yaml_node_t *item = yseq_at(m->d, seq, i), *nn;
		char w[WHERE_LEN];
		int64_t weight;
		int r;
		wfmt(w, "%s[%u]", where, i);
		const char *const known[] = {name_key, "weight"};
		if ((r = check_fields(m, item, w, known, 2)) < 0 ||
		    (r = req_str(m, item, name_key, w, &t[i].model, &nn)) < 0 ||
		    (r = check_len(m, nn, w, name_key, t[i].model, 253)) < 0 ||
		    (r = get_int(m, item, "weight", w, 1, 1000000, &weight, &t[i].has_weight)) < 0)
			return r;
		if (t[i].has_weight)
			t[i].weight = (int32_t)weight;
		if (all_or_none && i && t[i].has_weight != t[0].has_weight)
			return merr(m, item, "%s: Weights should be set for all models, or none of "
					     "the models.",
				    where);
	}
	*out = t;
	*n_out = n;
	return 0;
}

static int decode_model(mctx *m, yaml_node_t *spec, mobj *o)
{
	store_model *md = &o->u.model;
	yaml_node_t *nn, *cn, *targets;
	const char *crit;
	int r = CHECK_FIELDS(m, spec, "spec", "modelName", "criticality", "targetModels",
			     "poolRef");
	if (r < 0)
		return r;
	if ((r = req_str(m, spec, "modelName", "spec", &md->model_name, &nn)) < 0 ||
	    (r = check_len(m, nn, "spec", "modelName", md->model_name, 256)) < 0 ||
	    (r = get_str(m, spec, "criticality", "spec", &crit, &cn)) < 0)
		return r;
	if (crit) {
		if (!strcmp(crit, "Critical"))
			md->criticality = STORE_CRIT_CRITICAL;
		else if (!strcmp(crit, "Standard"))
			md->criticality = STORE_CRIT_STANDARD;
		else if (!strcmp(crit, "Sheddable"))
			md->criticality = STORE_CRIT_SHEDDABLE;
		else
			return merr(m, cn,
				    "spec.criticality must be Critical, Standard or Sheddable, not "
				    "\"%s\"",
				    crit);
		md->has_criticality = true;
	}
	if ((r = get_seq(m, spec, "targetModels", "spec", &targets)) < 0)
		return r;
	if (targets && yseq_len(targets) > 10)
		return merr(m, targets, "spec.targetModels must have at most 10 entries");
	if (targets && (r = decode_targets(m, targets, "spec.targetModels", "name", true,
					   &md->targets, &md->n_targets)) < 0)
		return r;
	md->name = o->name;
	md->created = o->created;
	return decode_pool_ref(m, spec, o, GROUP_X);
}

static int decode_objective(mctx *m, yaml_node_t *spec, mobj *o)
{
	int64_t prio;
	int r = CHECK_FIELDS(m, spec, "spec", "priority", "poolRef");
	if (r < 0 ||
	    (r = get_int(m, spec, "priority", "spec", INT32_MIN, INT32_MAX, &prio,
			 &o->u.objective.has_priority)) < 0)
		return r;
	o->u.objective.name = o->name;
	o->u.objective.priority = o->u.objective.has_priority ? (int32_t)prio : 0;
	return decode_pool_ref(m, spec, o, GROUP_V1);
}

static int decode_rule(mctx *m, yaml_node_t *rule, const char *where, store_rewrite_rule *out)
{
	yaml_node_t *matches, *targets;
	char w[WHERE_LEN];
	int r = CHECK_FIELDS(m, rule, where, "matches", "targets");
	if (r < 0 || (r = get_seq(m, rule, "matches", where, &matches)) < 0 ||
	    (r = get_seq(m, rule, "targets", where, &targets)) < 0)
		return r;
	uint32_t n = matches ? (uint32_t)yseq_len(matches) : 0;
	out->matches = n ? arena_calloc(&m->c->mem, n * sizeof(char *)) : NULL;
	if (n && !out->matches)
		return oom(m);
	for (uint32_t i = 0; i < n; i++) {
		yaml_node_t *match = yseq_at(m->d, matches, i), *model, *vn, *tn;
		const char *type;
		wfmt(w, "%s.matches[%u]", where, i);
		if ((r = CHECK_FIELDS(m, match, w, "model")) < 0 ||
		    (r = get_map(m, match, "model", w, &model)) < 0)
			return r;
		if (!model)
			return merr(m, match, "%s.model is required", w);
		wfmt(w, "%s.matches[%u].model", where, i);
		if ((r = CHECK_FIELDS(m, model, w, "type", "value")) < 0 ||
		    (r = get_str(m, model, "type", w, &type, &tn)) < 0 ||
		    (r = req_str(m, model, "value", w, &out->matches[i], &vn)) < 0)
			return r;
		if (type && strcmp(type, "Exact"))
			return merr(m, tn, "%s.type must be Exact, not \"%s\"", w, type);
	}
	out->n_matches = n;
	if (!targets || !yseq_len(targets))
		return merr(m, targets ? targets : rule, "%s.targets must have at least 1 entry",
			    where);
	wfmt(w, "%s.targets", where);
	return decode_targets(m, targets, w, "modelRewrite", false, &out->targets,
			      &out->n_targets);
}

static int decode_rewrite(mctx *m, yaml_node_t *spec, mobj *o)
{
	yaml_node_t *rules;
	int r = CHECK_FIELDS(m, spec, "spec", "poolRef", "rules");
	if (r < 0 || (r = get_seq(m, spec, "rules", "spec", &rules)) < 0)
		return r;
	if (!rules)
		return merr(m, spec, "spec.rules is required");
	uint32_t n = (uint32_t)yseq_len(rules);
	o->u.rw.rules = n ? arena_calloc(&m->c->mem, n * sizeof(store_rewrite_rule)) : NULL;
	if (n && !o->u.rw.rules)
		return oom(m);
	for (uint32_t i = 0; i < n; i++) {
		store_rewrite_rule *rule = &o->u.rw.rules[i];
		char w[WHERE_LEN];
		if ((r = decode_rule(m, yseq_at(m->d, rules, i), wfmt(w, "spec.rules[%u]", i),
				     rule)) < 0)
			return r;
		rule->rewrite_name = o->name;
		rule->created = o->created;
		rule->order = i;
	}
	o->u.rw.n = n;
	return decode_pool_ref(m, spec, o, GROUP_V1);
}

/* ---- documents ---------------------------------------------------------- */

static int add_obj(mctx *m, mobj **out)
{
	if (m->n_objs == MAX_OBJECTS)
		return -E2BIG;
	if (m->n_objs == m->cap_objs) {
		size_t cap = m->cap_objs ? m->cap_objs * 2 : 16;
		mobj *v = realloc(m->objs, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		m->objs = v;
		m->cap_objs = cap;
	}
	*out = &m->objs[m->n_objs];
	memset(*out, 0, sizeof(**out));
	return 0;
}

static void log_skip(mctx *m, yaml_node_t *n, const char *why, const char *kind, const char *api)
{
	char line[16];
	snprintf(line, sizeof(line), "%d", yline(n));
	ulog(LOG_DEFAULT, why, "file", m->file, "line", line, "kind", kind, "apiVersion", api,
	     NULL);
}

static int decode_doc(mctx *m, yaml_node_t *root, bool in_list);

static int decode_list(mctx *m, yaml_node_t *root)
{
	yaml_node_t *items;
	int r = CHECK_FIELDS(m, root, "", "apiVersion", "kind", "metadata", "items");
	if (r < 0 || (r = get_seq(m, root, "items", "", &items)) < 0)
		return r;
	for (size_t i = 0; items && i < yseq_len(items); i++)
		if ((r = decode_doc(m, yseq_at(m->d, items, i), true)) < 0)
			return r;
	return 0;
}

static int decode_doc(mctx *m, yaml_node_t *root, bool in_list)
{
	const char *api, *kind;
	yaml_node_t *an, *kn;
	int r;
	m->what[0] = '\0';
	if (root->type != YAML_MAPPING_NODE)
		return merr(m, root, "a manifest must be an object, not %s", jkind(root));
	if ((r = get_str(m, root, "apiVersion", "", &api, &an)) < 0 ||
	    (r = get_str(m, root, "kind", "", &kind, &kn)) < 0)
		return r;
	if (!api || !*api)
		return merr(m, root, "apiVersion is required");
	if (!kind || !*kind)
		return merr(m, root, "kind is required");
	if (!in_list && !strcmp(kind, "List") && !strcmp(api, "v1"))
		return decode_list(m, root);

	int k = -1;
	for (int i = 0; i < (int)(sizeof(kind_names) / sizeof(kind_names[0])); i++)
		if (!strcmp(kind, kind_names[i]))
			k = i;
	const char *slash = strchr(api, '/');
	size_t glen = slash ? (size_t)(slash - api) : 0;
	bool ours = glen && ((glen == strlen(GROUP_V1) && !strncmp(api, GROUP_V1, glen)) ||
			     (glen == strlen(GROUP_X) && !strncmp(api, GROUP_X, glen)));
	if (k < 0 || !ours) {
		log_skip(m, root, "manifest object skipped: not a kind kepp reads", kind, api);
		return 0;
	}
	bool v1 = !strcmp(api, API_V1), x = !strcmp(api, API_X);
	if (!(k == K_POOL ? v1 || x : x))
		return merr(m, an, "no kind %s in version \"%s\" (use %s)", kind, api,
			    k == K_POOL ? API_V1 " or " API_X : API_X);

	mobj *o;
	if ((r = add_obj(m, &o)) < 0)
		return r == -E2BIG ? merr(m, root, "more than %d objects", MAX_OBJECTS) : oom(m);
	o->kind = (enum okind)k;
	o->file = m->file;
	o->line = yline(root);
	o->group = v1 ? GROUP_V1 : GROUP_X;
	o->seq = (uint32_t)m->n_objs;
	snprintf(m->what, sizeof(m->what), "%s", kind);
	yaml_node_t *spec;
	if ((r = decode_metadata(m, root, o)) < 0 ||
	    (r = CHECK_FIELDS(m, root, "", "apiVersion", "kind", "metadata", "spec",
			      "status")) < 0 ||
	    (r = get_map(m, root, "spec", "", &spec)) < 0)
		return r;
	if (!spec)
		return merr(m, root, "spec is required");
	switch (o->kind) {
	case K_POOL:
		o->u.pool.name = o->name;
		o->u.pool.namespace_ = o->ns;
		o->u.pool.group = o->group;
		r = v1 ? decode_pool_v1(m, spec, &o->u.pool) : decode_pool_x(m, spec, &o->u.pool);
		break;
	case K_MODEL:
		r = decode_model(m, spec, o);
		break;
	case K_OBJECTIVE:
		r = decode_objective(m, spec, o);
		break;
	case K_REWRITE:
		r = decode_rewrite(m, spec, o);
		break;
	}
	if (r < 0)
		return r;
	m->n_objs++;
	return 0;
}

static int load_file(mctx *m, const char *path)
{
	yfile f;
	m->file = arena_strdup(&m->c->mem, path);
	if (!m->file) {
		snprintf(m->err, m->errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	int r = yfile_load(path, 0, &f, m->err, m->errlen);
	if (r < 0)
		return r;
	m->budget = MAX_VISITS;
	for (size_t i = 0; i < f.n_docs && r == 0; i++) {
		yaml_node_t *root = ydoc_root(&f.docs[i]);
		m->d = &f.docs[i];
		if (root && !yis_null(root))
			r = decode_doc(m, root, false);
	}
	yfile_free(&f);
	return r;
}

/* ---- files -------------------------------------------------------------- */

static int manifest_file(const struct dirent *e)
{
	const char *dot = strrchr(e->d_name, '.');
	return e->d_name[0] != '.' && dot &&
	       (!strcmp(dot, ".yaml") || !strcmp(dot, ".yml") || !strcmp(dot, ".json"));
}

/* The files |path| stands for, in name order; *n is 0 and *list NULL for a
 * plain file. */
static int list_files(const char *path, struct dirent ***list, int *n, bool *is_dir)
{
	struct stat st;
	*list = NULL;
	*n = 0;
	if (stat(path, &st) < 0)
		return -errno;
	*is_dir = S_ISDIR(st.st_mode);
	if (!*is_dir)
		return 0;
	*n = scandir(path, list, manifest_file, alphasort);
	if (*n < 0)
		return -errno;
	if (*n > STORE_MANIFEST_MAX_FILES) {
		for (int i = 0; i < *n; i++)
			free((*list)[i]);
		free(*list);
		*list = NULL;
		return -E2BIG;
	}
	return 0;
}

static void free_list(struct dirent **list, int n)
{
	for (int i = 0; i < n; i++)
		free(list[i]);
	free(list);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ULL;
	return h;
}

static uint64_t stat_sig(uint64_t h, const char *name, const struct stat *st)
{
	int64_t v[5] = {st->st_size, st->st_mtim.tv_sec, st->st_mtim.tv_nsec, (int64_t)st->st_ino,
			(int64_t)st->st_dev};
	h = fnv(h, name, strlen(name) + 1);
	return fnv(h, v, sizeof(v));
}

int store_manifests_signature(const char *path, uint64_t *sig)
{
	struct dirent **list;
	int n;
	bool is_dir;
	int r = list_files(path, &list, &n, &is_dir);
	if (r < 0)
		return r;
	uint64_t h = 0xcbf29ce484222325ULL;
	struct stat st;
	if (!is_dir) {
		if (stat(path, &st) < 0)
			return -errno;
		*sig = stat_sig(h, path, &st);
		return 0;
	}
	char full[4096];
	for (int i = 0; i < n; i++) {
		snprintf(full, sizeof(full), "%s/%s", path, list[i]->d_name);
		/* A file that vanished between the listing and stat still
		 * changes the signature (its name is hashed either way). */
		if (stat(full, &st) < 0)
			memset(&st, 0, sizeof(st));
		h = stat_sig(h, list[i]->d_name, &st);
	}
	free_list(list, n);
	*sig = h;
	return 0;
}

/* ---- choosing the pool and filtering ------------------------------------ */

static bool streq(const char *a, const char *b) { return a && b && !strcmp(a, b); }

static int cmp_identity(const void *a, const void *b)
{
	const mobj *x = *(const mobj *const *)a, *y = *(const mobj *const *)b;
	int r = (int)x->kind - (int)y->kind;
	if (!r)
		r = strcmp(x->group, y->group);
	if (!r)
		r = strcmp(x->ns, y->ns);
	if (!r)
		r = strcmp(x->name, y->name);
	return r ? r : (x->seq > y->seq) - (x->seq < y->seq);
}

/* Two objects of one kind, group, namespace and name: `kubectl apply` would
 * keep only the last, which is never what a folder of manifests meant. */
static int check_duplicates(mctx *m)
{
	if (m->n_objs < 2)
		return 0;
	const mobj **v = malloc(m->n_objs * sizeof(*v));
	if (!v)
		return oom(m);
	for (size_t i = 0; i < m->n_objs; i++)
		v[i] = &m->objs[i];
	qsort(v, m->n_objs, sizeof(*v), cmp_identity);
	int r = 0;
	for (size_t i = 1; i < m->n_objs && !r; i++) {
		const mobj *a = v[i - 1], *b = v[i];
		if (a->kind == b->kind && !strcmp(a->group, b->group) && !strcmp(a->ns, b->ns) &&
		    !strcmp(a->name, b->name)) {
			snprintf(m->err, m->errlen,
				 "%s:%d: %s \"%s\" in namespace \"%s\" is defined twice (first at "
				 "%s:%d)",
				 b->file, b->line, kind_names[b->kind], b->name, b->ns, a->file,
				 a->line);
			r = -EINVAL;
		}
	}
	free(v);
	return r;
}

/* The pool this EPP serves: NULL when none is known from the manifests. */
static int choose_pool(mctx *m, const mobj **pool)
{
	const store_manifest_opts *o = m->o;
	const mobj *found = NULL;
	*pool = NULL;
	for (size_t i = 0; i < m->n_objs; i++) {
		const mobj *p = &m->objs[i];
		if (p->kind != K_POOL)
			continue;
		if (o->pool_name) {
			if (!streq(p->name, o->pool_name) || !streq(p->ns, o->pool_namespace))
				continue;
			/* Two groups define the name: --pool-group picks. */
			if (!found || streq(p->group, o->pool_group))
				found = p;
			continue;
		}
		if (found) {
			snprintf(m->err, m->errlen,
				 "%s:%d: more than one InferencePool (\"%s\" at %s:%d, \"%s\" "
				 "here); choose one with --pool-name",
				 p->file, p->line, found->name, found->file, found->line, p->name);
			return -EINVAL;
		}
		found = p;
	}
	*pool = found;
	return 0;
}

static void log_ignored(const mobj *x, const char *why)
{
	char line[16];
	snprintf(line, sizeof(line), "%d", x->line);
	ulog(LOG_VERBOSE, "manifest object ignored", "reason", why, "kind", kind_names[x->kind],
	     "name", x->name, "namespace", x->ns, "file", x->file, "line", line, NULL);
}

static bool keep(const mobj *x, const char *pool_name, const char *pool_ns, const char *group)
{
	if (!pool_name)
		return true;
	if (!streq(x->ns, pool_ns)) {
		log_ignored(x, "not in the pool namespace");
		return false;
	}
	if (!streq(x->ref_name, pool_name) || !streq(x->ref_group, group) ||
	    !streq(x->ref_kind, KIND_POOL)) {
		log_ignored(x, "poolRef names another pool");
		return false;
	}
	return true;
}

static int fill_catalog(mctx *m)
{
	const mobj *pool;
	int r = check_duplicates(m);
	if (r < 0 || (r = choose_pool(m, &pool)) < 0)
		return r;
	store_catalog *c = m->c;
	const char *pname = m->o->pool_name, *pns = m->o->pool_namespace, *group = m->o->pool_group;
	if (pool) {
		c->has_pool = true;
		c->pool = pool->u.pool;
		pname = pool->name;
		group = pool->group;
	}

	uint32_t n_obj = 0, n_model = 0, n_rule = 0;
	for (size_t i = 0; i < m->n_objs; i++) {
		const mobj *x = &m->objs[i];
		if (x->kind == K_OBJECTIVE)
			n_obj++;
		else if (x->kind == K_MODEL)
			n_model++;
		else if (x->kind == K_REWRITE)
			n_rule += x->u.rw.n;
	}
	c->objectives = n_obj ? arena_calloc(&c->mem, n_obj * sizeof(*c->objectives)) : NULL;
	c->models = n_model ? arena_calloc(&c->mem, n_model * sizeof(*c->models)) : NULL;
	c->rules = n_rule ? arena_calloc(&c->mem, n_rule * sizeof(*c->rules)) : NULL;
	if ((n_obj && !c->objectives) || (n_model && !c->models) || (n_rule && !c->rules))
		return oom(m);

	for (size_t i = 0; i < m->n_objs; i++) {
		const mobj *x = &m->objs[i];
		if (x->kind == K_POOL) {
			if (pool && x != pool)
				log_ignored(x, "another InferencePool");
			continue;
		}
		if (!keep(x, pname, pns, group))
			continue;
		if (x->kind == K_OBJECTIVE)
			c->objectives[c->n_objectives++] = x->u.objective;
		else if (x->kind == K_MODEL)
			c->models[c->n_models++] = x->u.model;
		else
			for (uint32_t j = 0; j < x->u.rw.n; j++)
				c->rules[c->n_rules++] = x->u.rw.rules[j];
	}
	store_catalog_finish(c);
	return 0;
}

int store_manifests_load(const char *path, const store_manifest_opts *o, store_catalog **out,
			 char *err, size_t errlen)
{
	store_manifest_opts opts = {
		.pool_name = o && o->pool_name && *o->pool_name ? o->pool_name : NULL,
		.pool_namespace = o && o->pool_namespace && *o->pool_namespace ? o->pool_namespace
									       : "default",
		.pool_group = o && o->pool_group && *o->pool_group ? o->pool_group : GROUP_V1,
	};
	mctx m = {.o = &opts, .err = err, .errlen = errlen};
	struct dirent **list;
	int n;
	bool is_dir;
	*out = NULL;
	int r = list_files(path, &list, &n, &is_dir);
	if (r < 0) {
		if (r == -E2BIG)
			snprintf(err, errlen, "%s: more than %d manifest files", path,
				 STORE_MANIFEST_MAX_FILES);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	if (is_dir && n == 0) {
		snprintf(err, errlen, "%s: no *.yaml, *.yml or *.json files", path);
		free_list(list, n);
		return -ENOENT;
	}
	m.c = store_catalog_new();
	if (!m.c) {
		free_list(list, n);
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	if (!is_dir) {
		r = load_file(&m, path);
	} else {
		char full[4096];
		for (int i = 0; i < n && r == 0; i++) {
			if ((size_t)snprintf(full, sizeof(full), "%s/%s", path, list[i]->d_name) >=
			    sizeof(full)) {
				snprintf(err, errlen, "%s: path too long", path);
				r = -ENAMETOOLONG;
				break;
			}
			r = load_file(&m, full);
		}
	}
	free_list(list, n);
	if (r == 0)
		r = fill_catalog(&m);
	free(m.objs);
	if (r < 0) {
		store_catalog_unref(m.c);
		return r;
	}
	*out = m.c;
	return 0;
}

/* ---- objects from the Kubernetes API ------------------------------------ */

#define JSON_MAX_DEPTH 64

/* Adds |j| to |d| as nodes typed the way jkind() reads them back: strings
 * double-quoted, numbers, booleans and null plain. Returns the node id, or 0
 * when memory runs out or the tree is too deep or too large. */
static int json_node(yaml_document_t *d, const cJSON *j, int depth, long *budget)
{
	char num[64];
	const char *plain_text = NULL;
	if (depth > JSON_MAX_DEPTH)
		*budget = -1; /* tells "too large" from out of memory */
	if (depth > JSON_MAX_DEPTH || --*budget < 0)
		return 0;
	if (cJSON_IsString(j))
		return yaml_document_add_scalar(d, NULL, (yaml_char_t *)j->valuestring, -1,
						YAML_DOUBLE_QUOTED_SCALAR_STYLE);
	if (cJSON_IsNumber(j)) {
		double v = j->valuedouble;
		/* Integers as integers: yto_int64 refuses "8000.0". */
		if (v == (double)(int64_t)v && v > -9e15 && v < 9e15)
			snprintf(num, sizeof(num), "%lld", (long long)v);
		else
			snprintf(num, sizeof(num), "%.17g", v);
		plain_text = num;
	} else if (cJSON_IsBool(j)) {
		plain_text = cJSON_IsTrue(j) ? "true" : "false";
	} else if (cJSON_IsNull(j)) {
		plain_text = "null";
	}
	if (plain_text)
		return yaml_document_add_scalar(d, NULL, (yaml_char_t *)plain_text, -1,
						YAML_PLAIN_SCALAR_STYLE);
	if (cJSON_IsArray(j)) {
		int id = yaml_document_add_sequence(d, NULL, YAML_FLOW_SEQUENCE_STYLE);
		for (const cJSON *c = j->child; id && c; c = c->next) {
			int v = json_node(d, c, depth + 1, budget);
			if (!v || !yaml_document_append_sequence_item(d, id, v))
				return 0;
		}
		return id;
	}
	if (cJSON_IsObject(j)) {
		int id = yaml_document_add_mapping(d, NULL, YAML_FLOW_MAPPING_STYLE);
		for (const cJSON *c = j->child; id && c; c = c->next) {
			int k = yaml_document_add_scalar(d, NULL, (yaml_char_t *)c->string, -1,
							 YAML_DOUBLE_QUOTED_SCALAR_STYLE);
			int v = k ? json_node(d, c, depth + 1, budget) : 0;
			if (!v || !yaml_document_append_mapping_pair(d, id, k, v))
				return 0;
		}
		return id;
	}
	return 0;
}

int store_objects_load(const store_api_object *objs, size_t n, const store_manifest_opts *o,
		       store_catalog **out)
{
	store_manifest_opts opts = {
		.pool_name = o && o->pool_name && *o->pool_name ? o->pool_name : NULL,
		.pool_namespace = o && o->pool_namespace && *o->pool_namespace ? o->pool_namespace
									       : "default",
		.pool_group = o && o->pool_group && *o->pool_group ? o->pool_group : GROUP_V1,
	};
	char err[768];
	mctx m = {.o = &opts, .api = true, .err = err, .errlen = sizeof(err)};
	int r = 0;
	*out = NULL;
	m.c = store_catalog_new();
	if (!m.c)
		return -ENOMEM;
	for (size_t i = 0; i < n && r != -ENOMEM; i++) {
		yaml_document_t d;
		if (!yaml_document_initialize(&d, NULL, NULL, NULL, 1, 1)) {
			r = -ENOMEM;
			break;
		}
		long budget = MAX_VISITS;
		int root = json_node(&d, objs[i].obj, 0, &budget);
		m.file = arena_strdup(&m.c->mem, objs[i].origin ? objs[i].origin : "object");
		m.d = &d;
		m.budget = MAX_VISITS;
		err[0] = '\0';
		if (!m.file)
			r = -ENOMEM;
		else if (!root)
			r = budget < 0 ? -E2BIG : -ENOMEM;
		else
			r = decode_doc(&m, yaml_document_get_node(&d, root), true);
		yaml_document_delete(&d);
		if (r == -E2BIG)
			snprintf(err, sizeof(err), "%s: nested deeper than %d or over %ld values",
				 m.file ? m.file : "object", JSON_MAX_DEPTH, MAX_VISITS);
		if (r < 0 && r != -ENOMEM) {
			ulog(LOG_WARN, "Kubernetes object ignored: it does not validate", "error",
			     err, NULL);
			r = 0;
		}
	}
	if (r == 0) {
		r = fill_catalog(&m);
		if (r < 0 && r != -ENOMEM)
			ulog(LOG_ERROR, "Kubernetes objects refused", "error", err, NULL);
	}
	free(m.objs);
	if (r < 0) {
		store_catalog_unref(m.c);
		return r;
	}
	*out = m.c;
	return 0;
}
