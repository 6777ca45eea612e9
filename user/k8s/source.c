/* The pool source: informers for the InferencePool (a field selector on its
 * name), the InferenceObjective, InferenceModel and InferenceModelRewrite
 * objects of its namespace, and its Pods (a label selector from the pool's
 * matchLabels, re-targeted when the selector changes). Any change schedules
 * one rebuild on the event loop: the catalog is decoded again by
 * store_objects_load (the same validation as --manifests) when a CRD object
 * changed, and the endpoints are recomputed from the cached pods. The pool's
 * kepp.io/fastpath annotation goes with every delivery, flagged when it
 * changed. */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s/k8s.h"
#include "store/manifest.h"
#include "util/log.h"

struct k8s_source {
	struct event_base *base;
	k8s_client *c;
	k8s_source_opts o;
	bool standalone;
	k8s_informer *pool, *objectives, *models, *rewrites, *pods;
	char *pod_selector;
	store_catalog *catalog;
	bool catalog_dirty;
	struct event *rebuild_ev;
	arena mem[2];
	int cur;
	store_endpoint *eps;
	k8s_labels *labels;
	uint32_t cap;
	uint32_t last_n;
	bool last_synced, delivered;
	char *fastpath;      /* the annotation last delivered (NULL: none) */
	bool fastpath_known; /* delivered once the pool was listed */
};

static void schedule(k8s_source *s) { event_active(s->rebuild_ev, 0, 0); }

static void crd_changed(void *ctx)
{
	k8s_source *s = ctx;
	s->catalog_dirty = true;
	schedule(s);
}

static void pods_changed(void *ctx) { schedule(ctx); }

/* Deletes every member of |obj| not named in |keep|. */
static void keep_only(cJSON *obj, const char *const *keep, size_t n)
{
	cJSON *it = cJSON_IsObject(obj) ? obj->child : NULL;
	while (it) {
		cJSON *next = it->next;
		size_t i = 0;
		while (i < n && strcmp(it->string, keep[i]))
			i++;
		if (i == n)
			cJSON_Delete(cJSON_DetachItemViaPointer(obj, it));
		it = next;
	}
}

/* Pods are cached by the thousand: keep only what endpoints are made of. */
static void trim_pod(cJSON *pod)
{
	static const char *const top[] = {"apiVersion", "kind", "metadata", "status"};
	static const char *const md[] = {"name",	"namespace",	     "labels",
					 "annotations", "deletionTimestamp", "resourceVersion"};
	static const char *const st[] = {"podIP", "conditions"};
	keep_only(pod, top, 4);
	keep_only(cJSON_GetObjectItemCaseSensitive(pod, "metadata"), md, 6);
	keep_only(cJSON_GetObjectItemCaseSensitive(pod, "status"), st, 2);
}

static bool terminating(const cJSON *obj)
{
	const cJSON *d = k8s_json_get(obj, "metadata", "deletionTimestamp", NULL);
	return d && !cJSON_IsNull(d);
}

static size_t count(const k8s_informer *inf) { return inf ? k8s_informer_count(inf) : 0; }

const char *k8s_pool_fastpath(const cJSON *pool)
{
	if (terminating(pool))
		return NULL;
	const cJSON *v = k8s_json_get(pool, "metadata", "annotations", K8S_FASTPATH, NULL);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The annotation of the watched pool in the cache. */
static const char *pool_fastpath(const k8s_source *s)
{
	for (size_t i = 0; i < count(s->pool); i++) {
		const cJSON *o = k8s_informer_at(s->pool, i);
		const char *name = k8s_json_str(o, "metadata", "name", NULL);
		if (name && !strcmp(name, s->o.pool_name))
			return k8s_pool_fastpath(o);
	}
	return NULL;
}

/* Decodes the cached CRD objects into a new catalog; keeps the old one when
 * that fails. */
static void rebuild_catalog(k8s_source *s)
{
	k8s_informer *infs[] = {s->pool, s->objectives, s->models, s->rewrites};
	size_t total = 0;
	for (size_t k = 0; k < 4; k++)
		total += count(infs[k]);
	store_api_object *objs = calloc(total ? total : 1, sizeof(*objs));
	char **origins = calloc(total ? total : 1, sizeof(char *));
	size_t n = 0;
	if (!objs || !origins)
		goto out;
	for (size_t k = 0; k < 4; k++) {
		for (size_t i = 0; i < count(infs[k]); i++) {
			const cJSON *o = k8s_informer_at(infs[k], i);
			/* A pool being deleted is gone already (as upstream). */
			if (k == 0 && terminating(o))
				continue;
			if (asprintf(&origins[n], "%s/%s", k8s_informer_path(infs[k]),
				     k8s_json_str(o, "metadata", "name", NULL)) < 0) {
				origins[n] = NULL;
				goto out;
			}
			objs[n].obj = o;
			objs[n].origin = origins[n];
			n++;
		}
	}
	store_manifest_opts mo = {
		.pool_name = s->o.pool_name,
		.pool_namespace = s->o.pool_namespace,
		.pool_group = s->o.pool_group,
	};
	store_catalog *c;
	if (store_objects_load(objs, n, &mo, &c) < 0)
		goto out;
	bool had = s->catalog && s->catalog->has_pool;
	if (c->has_pool && !had)
		ulog(LOG_DEFAULT, "InferencePool read", "name", c->pool.name, "namespace",
		     c->pool.namespace_, "group", c->pool.group, NULL);
	else if (!c->has_pool && had)
		ulog(LOG_DEFAULT, "InferencePool gone: endpoints cleared until it is back", "name",
		     s->o.pool_name, "namespace", s->o.pool_namespace, NULL);
	if (s->catalog)
		store_catalog_unref(s->catalog);
	s->catalog = c;
out:
	for (size_t i = 0; origins && i < n; i++)
		free(origins[i]);
	free(origins);
	free(objs);
}

static bool same(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

/* Points the pod watch at the pool's selector (none without a pool). */
static void retarget_pods(k8s_source *s)
{
	const store_catalog *c = s->catalog;
	char *want = c && c->has_pool && c->pool.n_selector ? k8s_selector_string(&c->pool) : NULL;
	if (same(want, s->pod_selector)) {
		free(want);
		return;
	}
	k8s_informer_free(s->pods);
	s->pods = NULL;
	free(s->pod_selector);
	s->pod_selector = want;
	if (!want)
		return;
	k8s_informer_opts io = {
		.group = "",
		.version = "v1",
		.resource = "pods",
		.kind = "Pod",
		.namespace_ = s->o.pool_namespace,
		.label_selector = want,
		.idle_ms = s->o.idle_ms,
		.transform = trim_pod,
		.on_change = pods_changed,
		.ctx = s,
	};
	s->pods = k8s_informer_new(s->base, s->c, &io);
	if (!s->pods)
		ulog(LOG_ERROR, "cannot watch pods (out of memory)", NULL);
	else
		ulog(LOG_DEFAULT, "watching the pool's pods", "namespace", s->o.pool_namespace,
		     "labelSelector", want, NULL);
}

/* Makes room for |n| endpoints. */
static int reserve(k8s_source *s, uint32_t n)
{
	if (n <= s->cap)
		return 0;
	uint32_t cap = s->cap ? s->cap : 64;
	while (cap < n)
		cap *= 2;
	store_endpoint *e = realloc(s->eps, cap * sizeof(*e));
	if (!e)
		return -ENOMEM;
	s->eps = e;
	k8s_labels *l = realloc(s->labels, cap * sizeof(*l));
	if (!l)
		return -ENOMEM;
	s->labels = l;
	s->cap = cap;
	return 0;
}

static void rebuild(evutil_socket_t fd, short what, void *arg)
{
	k8s_source *s = arg;
	if (s->catalog_dirty && !s->standalone) {
		s->catalog_dirty = false;
		rebuild_catalog(s);
	}
	retarget_pods(s);

	const store_pool *pool = s->catalog && s->catalog->has_pool ? &s->catalog->pool : NULL;
	int nxt = s->cur ^ 1;
	uint32_t n = 0;
	arena_reset(&s->mem[nxt]);
	for (size_t i = 0; pool && i < count(s->pods); i++) {
		if (reserve(s, n + pool->n_target_ports) < 0) {
			ulog(LOG_ERROR,
			     "out of memory building endpoints; keeping the previous ones", NULL);
			return;
		}
		int r = k8s_pod_endpoints(k8s_informer_at(s->pods, i), pool, &s->mem[nxt],
					  s->eps + n, s->labels + n, s->cap - n);
		if (r < 0) {
			ulog(LOG_ERROR,
			     "out of memory building endpoints; keeping the previous ones", NULL);
			return;
		}
		n += (uint32_t)r;
	}
	bool synced = pool && s->pods && k8s_informer_synced(s->pods);
	if (!s->delivered || synced != s->last_synced || n != s->last_n) {
		char num[16];
		snprintf(num, sizeof(num), "%u", n);
		ulog(synced != s->last_synced ? LOG_DEFAULT : LOG_VERBOSE, "pool endpoints",
		     "ready", num, "synced", synced ? "true" : "false", NULL);
	}
	/* "No annotation" is only known once the pool has been listed. */
	bool fp_listed = !s->standalone && s->pool && k8s_informer_synced(s->pool);
	const char *fp = fp_listed ? pool_fastpath(s) : NULL;
	bool fp_changed = fp_listed && (!s->fastpath_known || !same(fp, s->fastpath));
	char *fp_copy = fp_changed && fp ? strdup(fp) : NULL;
	if (fp && fp_changed && !fp_copy) {
		ulog(LOG_ERROR, "out of memory reading the pool's annotation; retried at the "
				"next update", "annotation", K8S_FASTPATH, NULL);
		fp_changed = false;
	}
	if (fp_changed && s->catalog) {
		free(s->fastpath);
		s->fastpath = fp_copy;
		s->fastpath_known = true;
		fp_copy = NULL;
	}
	free(fp_copy);
	k8s_view v = {
		.catalog = s->catalog,
		.eps = s->eps,
		.labels = s->labels,
		.n = n,
		.synced = synced,
		.fastpath = s->fastpath,
		.fastpath_changed = fp_changed,
	};
	if (v.catalog)
		s->o.on_update(s->o.ctx, &v);
	/* The receiver copied what it keeps; the strings of the previous
	 * delivery are no longer referenced. */
	arena_reset(&s->mem[s->cur]);
	s->cur = nxt;
	s->last_n = n;
	s->last_synced = synced;
	s->delivered = true;
}

static int watch_crd(k8s_source *s, k8s_informer **out, const char *group, const char *version,
		     const char *resource, const char *kind, const char *field_selector,
		     bool optional)
{
	k8s_informer_opts io = {
		.group = group,
		.version = version,
		.resource = resource,
		.kind = kind,
		.namespace_ = s->o.pool_namespace,
		.field_selector = field_selector,
		.optional = optional,
		.idle_ms = s->o.idle_ms,
		.on_change = crd_changed,
		.ctx = s,
	};
	*out = k8s_informer_new(s->base, s->c, &io);
	return *out ? 0 : -ENOMEM;
}

/* The pool of --endpoint-selector and --endpoint-target-ports. */
static int standalone_catalog(k8s_source *s, char *err, size_t errlen)
{
	store_catalog *c = store_catalog_new();
	if (!c)
		return -ENOMEM;
	store_pool *p = &c->pool;
	int r = k8s_selector_parse(s->o.endpoint_selector, &c->mem, &p->selector_keys,
				   &p->selector_values, &p->n_selector, err, errlen);
	if (r == 0)
		r = k8s_ports_parse(s->o.endpoint_target_ports, p->target_ports, &p->n_target_ports,
				    err, errlen);
	p->name = arena_strdup(&c->mem, s->o.pool_name ? s->o.pool_name : "");
	p->namespace_ = arena_strdup(&c->mem, s->o.pool_namespace);
	p->group = arena_strdup(&c->mem, s->o.pool_group ? s->o.pool_group : "");
	if (r == 0 && (!p->name || !p->namespace_ || !p->group))
		r = -ENOMEM;
	if (r < 0) {
		if (r == -ENOMEM)
			snprintf(err, errlen, "out of memory");
		store_catalog_unref(c);
		return r;
	}
	c->has_pool = true;
	store_catalog_finish(c);
	s->catalog = c;
	return 0;
}

k8s_source *k8s_source_new(struct event_base *base, k8s_client *c, const k8s_source_opts *o,
			   char *err, size_t errlen)
{
	k8s_source *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->base = base;
	s->c = c;
	s->o = *o;
	s->standalone = o->endpoint_selector && *o->endpoint_selector;
	arena_init(&s->mem[0], 16384);
	arena_init(&s->mem[1], 16384);
	s->rebuild_ev = event_new(base, -1, 0, rebuild, s);
	if (!s->rebuild_ev) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (s->standalone) {
		if (!o->endpoint_target_ports || !*o->endpoint_target_ports) {
			snprintf(err, errlen, "--endpoint-selector needs --endpoint-target-ports");
			goto fail;
		}
		if (standalone_catalog(s, err, errlen) < 0)
			goto fail;
		schedule(s);
		return s;
	}
	if (!o->pool_name || !*o->pool_name) {
		snprintf(err, errlen, "no pool: give --pool-name or --endpoint-selector");
		goto fail;
	}
	const char *group = o->pool_group && *o->pool_group ? o->pool_group : K8S_GROUP_V1;
	if (strcmp(group, K8S_GROUP_V1) && strcmp(group, K8S_GROUP_X)) {
		snprintf(err, errlen, "--pool-group must be %s or %s, not \"%s\"", K8S_GROUP_V1,
			 K8S_GROUP_X, group);
		goto fail;
	}
	s->o.pool_group = group;
	char fsel[320];
	snprintf(fsel, sizeof(fsel), "metadata.name=%s", o->pool_name);
	if (watch_crd(s, &s->pool, group, strcmp(group, K8S_GROUP_V1) ? "v1alpha2" : "v1",
		      "inferencepools", "InferencePool", fsel, false) < 0 ||
	    watch_crd(s, &s->objectives, K8S_GROUP_X, "v1alpha2", "inferenceobjectives",
		      "InferenceObjective", NULL, true) < 0 ||
	    watch_crd(s, &s->rewrites, K8S_GROUP_X, "v1alpha2", "inferencemodelrewrites",
		      "InferenceModelRewrite", NULL, true) < 0 ||
	    watch_crd(s, &s->models, K8S_GROUP_X, "v1alpha2", "inferencemodels", "InferenceModel",
		      NULL, true) < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	s->catalog_dirty = true;
	return s;
fail:
	k8s_source_free(s);
	return NULL;
}

void k8s_source_free(k8s_source *s)
{
	if (!s)
		return;
	k8s_informer_free(s->pool);
	k8s_informer_free(s->objectives);
	k8s_informer_free(s->models);
	k8s_informer_free(s->rewrites);
	k8s_informer_free(s->pods);
	if (s->rebuild_ev)
		event_free(s->rebuild_ev);
	if (s->catalog)
		store_catalog_unref(s->catalog);
	free(s->pod_selector);
	free(s->fastpath);
	free(s->eps);
	free(s->labels);
	arena_free(&s->mem[0]);
	arena_free(&s->mem[1]);
	free(s);
}
