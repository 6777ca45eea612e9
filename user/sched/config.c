/* EndpointPickerConfig decoding (spec §4.4), as strict as the reference's
 * Kubernetes codec with EnableStrict: the apiVersion and kind must match, an
 * unknown or repeated field at any level is an error, and every value must
 * have the type of its Go field (a plain `5` is a number, so it is not a
 * string). Plugin parameters stay free-form JSON for the plugin factories.
 */
#include "sched/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/yaml.h"

#define CFG_API_VERSION "inference.networking.x-k8s.io/v1alpha1"
#define CFG_KIND "EndpointPickerConfig"
/* Nodes visited in total, parameters included: aliases can make a small
 * file expand without end, so the walk has a budget of its own. */
#define CFG_MAX_NODES 100000L
#define WHERE_LEN 160

typedef struct dec {
	yaml_document_t *d;
	sched_config *c;
	const char *src;
	char *err;
	size_t errlen;
	long budget;
} dec;

static int derr(dec *x, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int derr(dec *x, const yaml_node_t *n, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n)
		snprintf(x->err, x->errlen, "%s:%d: %s", x->src, yline(n), msg);
	else
		snprintf(x->err, x->errlen, "%s: %s", x->src, msg);
	return -EINVAL;
}

static int oom(dec *x)
{
	snprintf(x->err, x->errlen, "%s: out of memory", x->src);
	return -ENOMEM;
}

static int spend(dec *x, const yaml_node_t *n, long cost)
{
	x->budget -= cost;
	if (x->budget < 0)
		return derr(x, n, "more than %ld YAML nodes (alias expansion?)", CFG_MAX_NODES);
	return 0;
}

/* What a node decodes to in JSON terms, for type errors. */
static const char *vkind(dec *x, yaml_node_t *n)
{
	if (n->type == YAML_MAPPING_NODE)
		return "mapping";
	if (n->type == YAML_SEQUENCE_NODE)
		return "sequence";
	char e[64];
	cJSON *j = yto_json(x->d, n, e, sizeof(e));
	const char *k = !j                  ? "scalar"
			: cJSON_IsString(j) ? "string"
			: cJSON_IsNumber(j) ? "number"
			: cJSON_IsBool(j)   ? "boolean"
					    : "null";
	cJSON_Delete(j);
	return k;
}

static bool is_kind(dec *x, yaml_node_t *n, const char *kind)
{
	return strcmp(vkind(x, n), kind) == 0;
}

/* Formats a field path such as "schedulingProfiles[0].plugins[2]" into a
 * WHERE_LEN buffer; real paths are far shorter, a longer one is cut. */
static const char *wfmt(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static const char *wfmt(char *buf, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, WHERE_LEN, fmt, ap);
	va_end(ap);
	return buf;
}

/* |where| is NULL for the top level. */
static const char *child_where(char *buf, const char *where, const char *key)
{
	return where ? wfmt(buf, "%s.%s", where, key) : wfmt(buf, "%s", key);
}

/* Checks that |m| is a mapping (a null value counts as an empty one) whose
 * keys are all in |known|, each at most once. */
static int check_fields(dec *x, yaml_node_t *m, const char *where, const char *const *known,
			size_t n_known)
{
	if (yis_null(m))
		return 0;
	if (m->type != YAML_MAPPING_NODE)
		return derr(x, m, "%s must be a mapping, not a %s", where, vkind(x, m));
	if (spend(x, m, 1 + (long)ymap_len(m)) < 0)
		return -EINVAL;
	for (size_t i = 0; i < ymap_len(m); i++) {
		yaml_node_t *k, *v;
		ymap_at(x->d, m, i, &k, &v);
		const char *ks = yscalar(k);
		if (!ks)
			return derr(x, k, "field names in %s must be strings, not a %s", where,
				    vkind(x, k));
		size_t f = 0;
		while (f < n_known && strcmp(ks, known[f]) != 0)
			f++;
		if (f == n_known)
			return derr(x, k, "unknown field \"%s\" in %s", ks, where);
		for (size_t j = 0; j < i; j++) {
			yaml_node_t *pk, *pv;
			ymap_at(x->d, m, j, &pk, &pv);
			if (strcmp(yscalar(pk), ks) == 0)
				return derr(x, k, "duplicate field \"%s\" in %s", ks, where);
		}
	}
	return 0;
}

/* The value of |key| in |m|, or NULL when absent or null (Go leaves the
 * field at its zero value then). */
static yaml_node_t *field(dec *x, yaml_node_t *m, const char *key)
{
	if (!m || m->type != YAML_MAPPING_NODE)
		return NULL;
	yaml_node_t *v = ymap_get(x->d, m, key);
	return v && !yis_null(v) ? v : NULL;
}

/* A string field: *out stays NULL when absent. */
static int get_str(dec *x, yaml_node_t *m, const char *key, const char *where, const char **out,
		   int *line)
{
	yaml_node_t *v = field(x, m, key);
	*out = NULL;
	if (line)
		*line = v ? yline(v) : yline(m);
	if (!v)
		return 0;
	if (!is_kind(x, v, "string")) {
		char w[WHERE_LEN];
		return derr(x, v, "%s must be a string, not a %s", child_where(w, where, key),
			    vkind(x, v));
	}
	*out = arena_strdup(&x->c->mem, yscalar(v));
	return *out ? 0 : oom(x);
}

/* A sequence field: NULL when absent. Items are charged to the budget. */
static int get_seq(dec *x, yaml_node_t *m, const char *key, const char *where, yaml_node_t **out)
{
	yaml_node_t *v = field(x, m, key);
	*out = v;
	if (!v)
		return 0;
	if (v->type != YAML_SEQUENCE_NODE) {
		char w[WHERE_LEN];
		return derr(x, v, "%s must be a sequence, not a %s", child_where(w, where, key),
			    vkind(x, v));
	}
	return spend(x, v, 1 + (long)yseq_len(v));
}

static void *alloc_array(dec *x, size_t n, size_t size)
{
	return n ? arena_calloc(&x->c->mem, n * size) : NULL;
}

/* A Kubernetes Quantity (string or number); 0 when absent. */
static int get_quantity(dec *x, yaml_node_t *m, const char *key, const char *where,
			long long *out)
{
	yaml_node_t *v = field(x, m, key);
	int64_t q = 0;
	char w[WHERE_LEN];
	if (v && (v->type != YAML_SCALAR_NODE || yto_quantity(v, &q) < 0))
		return derr(x, v, "%s must be a quantity such as 1Gi or 500M",
			    child_where(w, where, key));
	*out = q;
	return 0;
}

static int decode_gates(dec *x, yaml_node_t *root)
{
	yaml_node_t *s;
	if (get_seq(x, root, "featureGates", NULL, &s) < 0)
		return -EINVAL;
	size_t n = yseq_len(s);
	x->c->feature_gates = alloc_array(x, n, sizeof(*x->c->feature_gates));
	if (n && !x->c->feature_gates)
		return oom(x);
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *g = yseq_at(x->d, s, i);
		if (!is_kind(x, g, "string"))
			return derr(x, g, "featureGates[%zu] must be a string, not a %s", i,
				    vkind(x, g));
		x->c->feature_gates[i] = arena_strdup(&x->c->mem, yscalar(g));
		if (!x->c->feature_gates[i])
			return oom(x);
	}
	x->c->n_feature_gates = n;
	return 0;
}

/* Nodes under |n| (aliases counted each time they are reached), stopping
 * once past |limit|. Too deep a tree (an alias can even point at its own
 * ancestor) is not followed further: yto_json refuses it by its depth. */
static long count_nodes(dec *x, yaml_node_t *n, long limit, int depth)
{
	if (limit <= 0)
		return limit + 1;
	long c = 1;
	if (depth > 64)
		return c;
	if (n->type == YAML_SEQUENCE_NODE) {
		for (size_t i = 0; i < yseq_len(n) && c <= limit; i++)
			c += count_nodes(x, yseq_at(x->d, n, i), limit - c, depth + 1);
	} else if (n->type == YAML_MAPPING_NODE) {
		for (size_t i = 0; i < ymap_len(n) && c <= limit; i++) {
			yaml_node_t *k, *v;
			ymap_at(x->d, n, i, &k, &v);
			c += 1 + count_nodes(x, v, limit - c - 1, depth + 1);
		}
	}
	return c;
}

static int decode_params(dec *x, yaml_node_t *v, size_t idx, cJSON **out)
{
	*out = NULL;
	if (!v)
		return 0;
	if (spend(x, v, count_nodes(x, v, x->budget, 0)) < 0)
		return -EINVAL;
	char e[256];
	*out = yto_json(x->d, v, e, sizeof(e));
	if (*out)
		return 0;
	/* yto_json says "line N: reason"; keep the position in our format. */
	int line = 0, off = 0;
	if (sscanf(e, "line %d: %n", &line, &off) == 1 && off > 0)
		snprintf(x->err, x->errlen, "%s:%d: plugins[%zu].parameters: %s", x->src, line,
			 idx, e + off);
	else
		derr(x, v, "plugins[%zu].parameters: %s", idx, e);
	return -EINVAL;
}

static int decode_plugins(dec *x, yaml_node_t *root)
{
	static const char *const known[] = {"name", "type", "parameters"};
	yaml_node_t *s;
	if (get_seq(x, root, "plugins", NULL, &s) < 0)
		return -EINVAL;
	size_t n = yseq_len(s);
	sched_plugin_spec *ps = alloc_array(x, n, sizeof(*ps));
	if (n && !ps)
		return oom(x);
	x->c->plugins = ps;
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *it = yseq_at(x->d, s, i);
		char where[WHERE_LEN];
		wfmt(where, "plugins[%zu]", i);
		if (check_fields(x, it, where, known, 3) < 0 ||
		    get_str(x, it, "name", where, &ps[i].name, NULL) < 0 ||
		    get_str(x, it, "type", where, &ps[i].type, NULL) < 0 ||
		    decode_params(x, field(x, it, "parameters"), i, &ps[i].params) < 0)
			return -EINVAL;
		ps[i].line = yline(it);
		/* Counted only now, so sched_config_free releases what exists. */
		x->c->n_plugins = i + 1;
		if (!ps[i].type)
			ps[i].type = "";
		if (!ps[i].name || !*ps[i].name)
			ps[i].name = ps[i].type; /* the reference's applyStaticDefaults */
	}
	/* The reference checks these when it instantiates the plugins, in
	 * config order, after the whole document decoded. */
	for (size_t i = 0; i < n; i++) {
		if (!*ps[i].type)
			return derr(x, yseq_at(x->d, s, i), "plugin '%s' is missing a type",
				    ps[i].name);
		for (size_t j = 0; j < i; j++)
			if (strcmp(ps[j].name, ps[i].name) == 0)
				return derr(x, yseq_at(x->d, s, i), "duplicate plugin name '%s'",
					    ps[i].name);
	}
	return 0;
}

static int decode_ref(dec *x, yaml_node_t *it, const char *where, sched_profile_ref *r)
{
	static const char *const known[] = {"pluginRef", "weight"};
	if (check_fields(x, it, where, known, 2) < 0 ||
	    get_str(x, it, "pluginRef", where, &r->plugin_ref, NULL) < 0)
		return -EINVAL;
	r->line = yline(it);
	yaml_node_t *w = field(x, it, "weight");
	if (w) {
		if (!is_kind(x, w, "number") || yto_double(w, &r->weight) < 0)
			return derr(x, w, "%s.weight must be a number, not a %s", where,
				    vkind(x, w));
		r->has_weight = true;
	}
	return 0;
}

static int decode_profiles(dec *x, yaml_node_t *root)
{
	static const char *const known[] = {"name", "plugins"};
	yaml_node_t *s;
	if (get_seq(x, root, "schedulingProfiles", NULL, &s) < 0)
		return -EINVAL;
	size_t n = yseq_len(s);
	sched_profile_spec *ps = alloc_array(x, n, sizeof(*ps));
	if (n && !ps)
		return oom(x);
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *it = yseq_at(x->d, s, i), *refs;
		char where[WHERE_LEN];
		wfmt(where, "schedulingProfiles[%zu]", i);
		if (check_fields(x, it, where, known, 2) < 0 ||
		    get_str(x, it, "name", where, &ps[i].name, NULL) < 0 ||
		    get_seq(x, it, "plugins", where, &refs) < 0)
			return -EINVAL;
		ps[i].line = yline(it);
		ps[i].n_refs = yseq_len(refs);
		ps[i].refs = alloc_array(x, ps[i].n_refs, sizeof(*ps[i].refs));
		if (ps[i].n_refs && !ps[i].refs)
			return oom(x);
		for (size_t j = 0; j < ps[i].n_refs; j++) {
			char rw[WHERE_LEN];
			wfmt(rw, "%s.plugins[%zu]", where, j);
			if (decode_ref(x, yseq_at(x->d, refs, j), rw, &ps[i].refs[j]) < 0)
				return -EINVAL;
		}
	}
	x->c->profiles = ps;
	x->c->n_profiles = n;
	return 0;
}

/* saturationDetector and parser: {pluginRef: <name>}. */
static int decode_ref_section(dec *x, yaml_node_t *root, const char *key, const char **ref,
			      int *line)
{
	static const char *const known[] = {"pluginRef"};
	yaml_node_t *v = field(x, root, key);
	*ref = NULL;
	*line = 0;
	if (!v)
		return 0;
	return check_fields(x, v, key, known, 1) < 0 ? -EINVAL
						      : get_str(x, v, "pluginRef", key, ref, line);
}

static int decode_data_layer(dec *x, yaml_node_t *root)
{
	static const char *const known[] = {"sources"};
	static const char *const src_known[] = {"pluginRef", "extractors"};
	static const char *const ex_known[] = {"pluginRef"};
	yaml_node_t *dl = field(x, root, "dataLayer"), *s;
	if (!dl)
		return 0;
	x->c->has_data_layer = true;
	if (check_fields(x, dl, "dataLayer", known, 1) < 0 ||
	    get_seq(x, dl, "sources", "dataLayer", &s) < 0)
		return -EINVAL;
	size_t n = yseq_len(s);
	struct sched_datasource *ds = alloc_array(x, n, sizeof(*ds));
	if (n && !ds)
		return oom(x);
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *it = yseq_at(x->d, s, i), *exs;
		char where[WHERE_LEN];
		wfmt(where, "dataLayer.sources[%zu]", i);
		if (check_fields(x, it, where, src_known, 2) < 0 ||
		    get_str(x, it, "pluginRef", where, &ds[i].plugin_ref, NULL) < 0 ||
		    get_seq(x, it, "extractors", where, &exs) < 0)
			return -EINVAL;
		ds[i].line = yline(it);
		ds[i].n_extractors = yseq_len(exs);
		ds[i].extractor_refs = alloc_array(x, ds[i].n_extractors, sizeof(char *));
		if (ds[i].n_extractors && !ds[i].extractor_refs)
			return oom(x);
		for (size_t j = 0; j < ds[i].n_extractors; j++) {
			yaml_node_t *e = yseq_at(x->d, exs, j);
			char ew[WHERE_LEN];
			wfmt(ew, "%s.extractors[%zu]", where, j);
			if (check_fields(x, e, ew, ex_known, 1) < 0 ||
			    get_str(x, e, "pluginRef", ew, &ds[i].extractor_refs[j], NULL) < 0)
				return -EINVAL;
		}
	}
	x->c->sources = ds;
	x->c->n_sources = n;
	return 0;
}

static int decode_band(dec *x, yaml_node_t *b, const char *where, sched_priority_band *out)
{
	static const char *const known[] = {"priority", "maxBytes", "maxRequests",
					    "fairnessPolicyRef", "orderingPolicyRef"};
	if (check_fields(x, b, where, known, 5) < 0)
		return -EINVAL;
	out->line = yline(b);
	yaml_node_t *p = field(x, b, "priority");
	int64_t prio = 0;
	if (p && (!is_kind(x, p, "number") || yto_int64(p, &prio) < 0))
		return derr(x, p, "%s.priority must be an integer", where);
	out->priority = prio;
	if (get_quantity(x, b, "maxBytes", where, &out->max_bytes) < 0 ||
	    get_quantity(x, b, "maxRequests", where, &out->max_requests) < 0 ||
	    get_str(x, b, "fairnessPolicyRef", where, &out->fairness_policy_ref, NULL) < 0 ||
	    get_str(x, b, "orderingPolicyRef", where, &out->ordering_policy_ref, NULL) < 0)
		return -EINVAL;
	return 0;
}

static int decode_flow_control(dec *x, yaml_node_t *root)
{
	static const char *const known[] = {"maxBytes", "maxRequests", "defaultRequestTTL",
					    "defaultPriorityBand", "priorityBands",
					    "usageLimitPolicyPluginRef"};
	sched_config *c = x->c;
	yaml_node_t *fc = field(x, root, "flowControl"), *bands;
	if (!fc)
		return 0;
	c->has_flow_control = true;
	if (check_fields(x, fc, "flowControl", known, 6) < 0 ||
	    get_quantity(x, fc, "maxBytes", "flowControl", &c->fc_max_bytes) < 0 ||
	    get_quantity(x, fc, "maxRequests", "flowControl", &c->fc_max_requests) < 0 ||
	    get_str(x, fc, "usageLimitPolicyPluginRef", "flowControl",
		    &c->fc_usage_limit_policy_ref, NULL) < 0)
		return -EINVAL;
	/* metav1.Duration decodes only from a string. */
	yaml_node_t *ttl = field(x, fc, "defaultRequestTTL");
	int64_t ms = 0;
	if (ttl && (!is_kind(x, ttl, "string") || yto_duration_ms(ttl, &ms) < 0))
		return derr(x, ttl, "flowControl.defaultRequestTTL must be a duration such as 30s");
	c->fc_default_ttl_ms = ms;
	yaml_node_t *db = field(x, fc, "defaultPriorityBand");
	if (db) {
		if (decode_band(x, db, "flowControl.defaultPriorityBand", &c->fc_default_band) < 0)
			return -EINVAL;
		c->has_default_band = true;
	}
	if (get_seq(x, fc, "priorityBands", "flowControl", &bands) < 0)
		return -EINVAL;
	size_t n = yseq_len(bands);
	c->fc_bands = alloc_array(x, n, sizeof(*c->fc_bands));
	if (n && !c->fc_bands)
		return oom(x);
	for (size_t i = 0; i < n; i++) {
		char where[WHERE_LEN];
		wfmt(where, "flowControl.priorityBands[%zu]", i);
		if (decode_band(x, yseq_at(x->d, bands, i), where, &c->fc_bands[i]) < 0)
			return -EINVAL;
	}
	c->n_fc_bands = n;
	return 0;
}

/* apiVersion and kind first, as the codec resolves the type before it
 * decodes fields: a manifest of another kind gets the clearer message. */
static int check_type_meta(dec *x, yaml_node_t *root)
{
	static const struct {
		const char *key, *want;
	} tm[] = {{"apiVersion", CFG_API_VERSION}, {"kind", CFG_KIND}};
	for (size_t i = 0; i < 2; i++) {
		yaml_node_t *v = ymap_get(x->d, root, tm[i].key);
		const char *s = v && is_kind(x, v, "string") ? yscalar(v) : NULL;
		if (!v || yis_null(v))
			return derr(x, root, "missing %s: want \"%s\"", tm[i].key, tm[i].want);
		if (!s)
			return derr(x, v, "%s must be a string, not a %s", tm[i].key,
				    vkind(x, v));
		if (strcmp(s, tm[i].want) != 0)
			return derr(x, v, "%s \"%s\" is not supported: want \"%s\"", tm[i].key, s,
				    tm[i].want);
	}
	return 0;
}

static int decode(dec *x, yaml_node_t *root)
{
	static const char *const known[] = {"apiVersion", "kind", "featureGates",
					    "plugins", "schedulingProfiles", "saturationDetector",
					    "dataLayer", "flowControl", "parser"};
	sched_config *c = x->c;
	if (root->type != YAML_MAPPING_NODE)
		return derr(x, root, "an EndpointPickerConfig must be a mapping, not a %s",
			    vkind(x, root));
	if (check_type_meta(x, root) < 0 ||
	    check_fields(x, root, "EndpointPickerConfig", known, 9) < 0 ||
	    decode_gates(x, root) < 0 || decode_plugins(x, root) < 0 ||
	    decode_profiles(x, root) < 0 ||
	    decode_ref_section(x, root, "saturationDetector", &c->saturation_detector_ref,
			       &c->saturation_detector_line) < 0 ||
	    decode_data_layer(x, root) < 0 || decode_flow_control(x, root) < 0 ||
	    decode_ref_section(x, root, "parser", &c->parser_ref, &c->parser_line) < 0)
		return -EINVAL;
	return 0;
}

/* Decodes the one non-empty document of |f|. */
static int decode_file(yfile *f, const char *source, sched_config **out, char *err,
		       size_t errlen)
{
	sched_config *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "%s: out of memory", source);
		return -ENOMEM;
	}
	arena_init(&c->mem, 8192);
	dec x = {.c = c, .src = source, .err = err, .errlen = errlen, .budget = CFG_MAX_NODES};
	int r = -EINVAL;
	c->source = arena_strdup(&c->mem, source);
	if (!c->source) {
		r = oom(&x);
		goto fail;
	}
	yaml_node_t *root = NULL;
	for (size_t i = 0; i < f->n_docs; i++) {
		yaml_node_t *n = ydoc_root(&f->docs[i]);
		if (!n || yis_null(n))
			continue;
		if (root) {
			x.d = &f->docs[i];
			r = derr(&x, n, "only one YAML document is allowed in a config");
			goto fail;
		}
		root = n;
		x.d = &f->docs[i];
	}
	if (!root) {
		r = derr(&x, NULL, "empty config: want an " CFG_KIND " document");
		goto fail;
	}
	r = decode(&x, root);
	if (r < 0)
		goto fail;
	*out = c;
	return 0;
fail:
	sched_config_free(c);
	return r;
}

int sched_config_parse_text(const char *text, size_t len, const char *source,
			    sched_config **out, char *err, size_t errlen)
{
	if (!source || !*source)
		source = "<config-text>";
	*out = NULL;
	if (len > YAML_MAX_BYTES) {
		snprintf(err, errlen, "%s: %zu bytes is over the limit of %u", source, len,
			 YAML_MAX_BYTES);
		return -EFBIG;
	}
	yfile f;
	int r = yfile_load_string(text, len, source, &f, err, errlen);
	if (r < 0)
		return r;
	r = decode_file(&f, source, out, err, errlen);
	yfile_free(&f);
	return r;
}

int sched_config_load_file(const char *path, sched_config **out, char *err, size_t errlen)
{
	*out = NULL;
	yfile f;
	int r = yfile_load(path, 0, &f, err, errlen);
	if (r < 0)
		return r;
	r = decode_file(&f, path, out, err, errlen);
	yfile_free(&f);
	return r;
}

void sched_config_free(sched_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_plugins; i++)
		cJSON_Delete(c->plugins[i].params);
	arena_free(&c->mem);
	free(c);
}
