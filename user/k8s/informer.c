/* One resource, listed then watched, cached by name: the reflector of
 * client-go in small. Lists are read in pages (limit/continue) into a new
 * cache that replaces the old one only when complete; the watch then starts
 * at the list's resourceVersion with bookmarks and follows it. A watch that
 * ends normally (the server's timeoutSeconds) is reopened at once; one that
 * drops or stalls is reopened after a backoff with jitter, from the last
 * resourceVersion seen, so no event is lost; 410 Gone, as an HTTP status or
 * as an ERROR event, means that version is compacted away: list again. */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s/k8s.h"
#include "util/log.h"
#include "util/rand.h"

#define PAGE_LIMIT	500
#define LIST_TIMEOUT_MS 60000
#define IDLE_DEFAULT_MS 120000
#define BACKOFF_BASE_MS 250
#define BACKOFF_MAX_MS	30000

typedef struct item {
	char *name;
	cJSON *obj;
} item;

typedef struct cache {
	item *v;
	size_t n, cap;
} cache;

struct k8s_informer {
	struct event_base *base;
	k8s_client *c;
	k8s_informer_opts o;
	char *path, *what, *query; /* query: "&fieldSelector=..&labelSelector=.." */
	cache items, pending;
	char *cont, *rv;
	bool synced, listing, relist;
	int attempts;
	char problem[64]; /* what was last logged as failing, "" when fine */
	k8s_req *req;
	struct event *retry_ev, *notify_ev;
};

static void cache_clear(cache *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->v[i].name);
		cJSON_Delete(c->v[i].obj);
	}
	free(c->v);
	memset(c, 0, sizeof(*c));
}

/* Index of |name|, or of where it would go (with *found false). */
static size_t cache_find(const cache *c, const char *name, bool *found)
{
	size_t lo = 0, hi = c->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int r = strcmp(c->v[mid].name, name);
		if (r == 0) {
			*found = true;
			return mid;
		}
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

/* Takes |obj|. */
static int cache_put(cache *c, const char *name, cJSON *obj)
{
	bool found;
	size_t i = cache_find(c, name, &found);
	if (found) {
		cJSON_Delete(c->v[i].obj);
		c->v[i].obj = obj;
		return 0;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		item *nv = realloc(c->v, cap * sizeof(*nv));
		if (!nv)
			goto oom;
		c->v = nv;
		c->cap = cap;
	}
	char *nm = strdup(name);
	if (!nm)
		goto oom;
	memmove(&c->v[i + 1], &c->v[i], (c->n - i) * sizeof(item));
	c->v[i] = (item){nm, obj};
	c->n++;
	return 0;
oom:
	cJSON_Delete(obj);
	return -ENOMEM;
}

static void cache_del(cache *c, const char *name)
{
	bool found;
	size_t i = cache_find(c, name, &found);
	if (!found)
		return;
	free(c->v[i].name);
	cJSON_Delete(c->v[i].obj);
	memmove(&c->v[i], &c->v[i + 1], (c->n - i - 1) * sizeof(item));
	c->n--;
}

static void set_str(char **dst, const char *s)
{
	char *d = s ? strdup(s) : NULL;
	free(*dst);
	*dst = d;
}

static void notify(k8s_informer *inf) { event_active(inf->notify_ev, 0, 0); }

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
	k8s_informer *inf = arg;
	inf->o.on_change(inf->o.ctx);
}

/* ---- logging problems once ---------------------------------------------- */

static void problem(k8s_informer *inf, const char *key, int level, const char *msg,
		    const char *detail, const char *hint)
{
	bool again = !strcmp(inf->problem, key);
	snprintf(inf->problem, sizeof(inf->problem), "%s", key);
	if (again && !log_enabled(LOG_DEBUG))
		return;
	ulog(again ? LOG_DEBUG : level, msg, "resource", inf->what, "path", inf->path, "error",
	     detail ? detail : "", hint ? "fix" : NULL, hint, NULL);
}

static void recovered(k8s_informer *inf)
{
	if (inf->problem[0])
		ulog(LOG_DEFAULT, "Kubernetes API reads work again", "resource", inf->what, NULL);
	inf->problem[0] = '\0';
}

/* The message of a Status answer, or the start of the body. */
static void status_message(const k8s_result *r, char *out, size_t cap)
{
	cJSON *st = r->body && r->len ? cJSON_ParseWithLength(r->body, r->len) : NULL;
	const char *m = k8s_json_str(st, "message", NULL);
	if (m)
		snprintf(out, cap, "HTTP %ld: %s", r->status, m);
	else
		snprintf(out, cap, "HTTP %ld: %.200s", r->status, r->body ? r->body : "");
	cJSON_Delete(st);
}

/* A failed list or watch: says what is wrong and how to fix it. */
static void report(k8s_informer *inf, const k8s_result *r, const char *verb)
{
	char detail[600], hint[600], key[32];
	if (r->error) {
		snprintf(key, sizeof(key), "transport-%s", verb);
		problem(inf, key, LOG_WARN, "Kubernetes API request failed; retrying", r->error,
			NULL);
		return;
	}
	status_message(r, detail, sizeof(detail));
	snprintf(key, sizeof(key), "%ld", r->status);
	const char *g = *inf->o.group ? inf->o.group : "\"\" (core)";
	switch (r->status) {
	case 401:
		problem(inf, key, LOG_ERROR,
			"Kubernetes API refused the credentials (401); retrying", detail,
			"check the token or client certificate of the kubeconfig or service "
			"account");
		break;
	case 403:
		snprintf(hint, sizeof(hint),
			 "grant kepp's service account the verbs get, list and watch on resource "
			 "\"%s\" of API group %s in namespace \"%s\" (a Role and RoleBinding, see "
			 "deploy/rbac.yaml)",
			 inf->o.resource, g, inf->o.namespace_);
		problem(inf, key, LOG_ERROR,
			"forbidden by RBAC: kepp may not read this resource; "
			"serving what it has and retrying",
			detail, hint);
		break;
	case 404:
		snprintf(hint, sizeof(hint),
			 "install the CRD for %s.%s (version %s), or ignore this if the pool does "
			 "not use this kind",
			 inf->o.resource, inf->o.group, inf->o.version);
		problem(inf, key, inf->o.optional ? LOG_DEFAULT : LOG_ERROR,
			"the API server does not serve this resource (CRD not installed?); "
			"retrying",
			detail, hint);
		break;
	default:
		problem(inf, key, LOG_WARN, "Kubernetes API request failed; retrying", detail,
			NULL);
	}
}

/* ---- list and watch ----------------------------------------------------- */

static void start_list(k8s_informer *inf);
static void start_watch(k8s_informer *inf);

static void schedule_retry(k8s_informer *inf)
{
	int64_t ms = BACKOFF_BASE_MS;
	for (int i = 0; i < inf->attempts && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	ms = (int64_t)((double)ms * (0.5 + rand_double()));
	inf->attempts++;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(inf->retry_ev, &tv);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	k8s_informer *inf = arg;
	if (inf->listing || !inf->rv)
		start_list(inf);
	else
		start_watch(inf);
}

/* Names the object and fills in what list items may lack. */
static const char *prepare(k8s_informer *inf, cJSON *obj, const char *api_version)
{
	if (!cJSON_IsObject(obj))
		return NULL;
	if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(obj, "apiVersion")) && api_version)
		cJSON_AddStringToObject(obj, "apiVersion", api_version);
	if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(obj, "kind")))
		cJSON_AddStringToObject(obj, "kind", inf->o.kind);
	cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
	cJSON_DeleteItemFromObjectCaseSensitive(md, "managedFields");
	if (inf->o.transform)
		inf->o.transform(obj);
	const char *name = k8s_json_str(obj, "metadata", "name", NULL);
	return name && *name ? name : NULL;
}

static void list_done(void *ctx, const k8s_result *r)
{
	k8s_informer *inf = ctx;
	inf->req = NULL;
	if (r->error || r->status != 200) {
		cache_clear(&inf->pending);
		set_str(&inf->cont, NULL);
		if (r->status == 410 && !r->error) {
			/* The continue token expired: start over. */
			ulog(LOG_VERBOSE, "list continuation expired; listing again", "resource",
			     inf->what, NULL);
			start_list(inf);
			return;
		}
		report(inf, r, "list");
		schedule_retry(inf);
		return;
	}
	cJSON *list = cJSON_ParseWithLength(r->body, r->len);
	const cJSON *items = cJSON_GetObjectItemCaseSensitive(list, "items");
	const char *rv = k8s_json_str(list, "metadata", "resourceVersion", NULL);
	if (!list || (!cJSON_IsArray(items) && !cJSON_IsNull(items) && items) || !rv) {
		k8s_result bad = {.error = "the list answer is not a Kubernetes list"};
		cJSON_Delete(list);
		cache_clear(&inf->pending);
		set_str(&inf->cont, NULL);
		report(inf, &bad, "list");
		schedule_retry(inf);
		return;
	}
	const char *api = k8s_json_str(list, "apiVersion", NULL);
	cJSON *it;
	while (cJSON_IsArray(items) && (it = cJSON_DetachItemFromArray((cJSON *)items, 0))) {
		const char *name = prepare(inf, it, api);
		if (!name) {
			cJSON_Delete(it);
			continue;
		}
		if (cache_put(&inf->pending, name, it) < 0)
			ulog(LOG_ERROR, "out of memory caching a Kubernetes object", "resource",
			     inf->what, NULL);
	}
	const char *cont = k8s_json_str(list, "metadata", "continue", NULL);
	if (cont && *cont) {
		set_str(&inf->cont, cont);
		cJSON_Delete(list);
		start_list(inf);
		return;
	}
	set_str(&inf->rv, rv);
	cJSON_Delete(list);
	cache_clear(&inf->items);
	inf->items = inf->pending;
	memset(&inf->pending, 0, sizeof(inf->pending));
	set_str(&inf->cont, NULL);
	inf->listing = false;
	inf->synced = true;
	inf->attempts = 0;
	recovered(inf);
	ulog(LOG_VERBOSE, "listed", "resource", inf->what, "resourceVersion", inf->rv, NULL);
	notify(inf);
	start_watch(inf);
}

static void start_list(k8s_informer *inf)
{
	char path[8192];
	char *cont = inf->cont ? k8s_url_escape(inf->cont) : NULL;
	inf->listing = true;
	inf->relist = false;
	snprintf(path, sizeof(path), "%s?limit=%d%s%s%s", inf->path, PAGE_LIMIT,
		 cont ? "&continue=" : "", cont ? cont : "", inf->query);
	free(cont);
	k8s_req_opts o = {
		.path = path,
		.timeout_ms = LIST_TIMEOUT_MS,
		.on_done = list_done,
		.ctx = inf,
	};
	inf->req = k8s_request(inf->c, &o);
	if (!inf->req) {
		ulog(LOG_ERROR, "cannot start a Kubernetes API request (out of memory)", NULL);
		schedule_retry(inf);
	}
}

static int watch_line(void *ctx, char *line, size_t len)
{
	k8s_informer *inf = ctx;
	cJSON *ev = cJSON_ParseWithLength(line, len);
	const char *type = k8s_json_str(ev, "type", NULL);
	cJSON *obj = cJSON_DetachItemFromObjectCaseSensitive(ev, "object");
	const char *rv = k8s_json_str(obj, "metadata", "resourceVersion", NULL);
	int r = 0;
	if (log_enabled(LOG_TRACE))
		ulog(LOG_TRACE, "watch event", "resource", inf->what, "type", type ? type : "",
		     "name", k8s_json_str(obj, "metadata", "name", NULL) ?: "", "resourceVersion",
		     rv ? rv : "", NULL);
	if (!type || !cJSON_IsObject(obj)) {
		k8s_result bad = {.error = "a watch event is not valid JSON"};
		report(inf, &bad, "watch");
		r = -1;
	} else if (!strcmp(type, "ERROR")) {
		const cJSON *code = cJSON_GetObjectItemCaseSensitive(obj, "code");
		if (cJSON_IsNumber(code) && code->valuedouble == 410) {
			inf->relist = true;
		} else {
			char *txt = cJSON_PrintUnformatted(obj);
			k8s_result bad = {.error = txt ? txt : "watch ERROR event"};
			report(inf, &bad, "watch");
			free(txt);
		}
		r = -1;
	} else if (!strcmp(type, "BOOKMARK")) {
		if (rv)
			set_str(&inf->rv, rv);
	} else if (!strcmp(type, "ADDED") || !strcmp(type, "MODIFIED") ||
		   !strcmp(type, "DELETED")) {
		char *nrv = rv ? strdup(rv) : NULL;
		const char *name = prepare(inf, obj, NULL);
		if (name && type[0] == 'D') {
			cache_del(&inf->items, name);
		} else if (name) {
			cache_put(&inf->items, name, obj);
			obj = NULL;
		}
		if (nrv) {
			free(inf->rv);
			inf->rv = nrv;
		}
		inf->attempts = 0;
		recovered(inf);
		notify(inf);
	}
	cJSON_Delete(obj);
	cJSON_Delete(ev);
	return r;
}

static void watch_done(void *ctx, const k8s_result *r)
{
	k8s_informer *inf = ctx;
	inf->req = NULL;
	if (inf->relist || (r->status == 410 && !r->error)) {
		ulog(LOG_VERBOSE, "watch resourceVersion expired (410 Gone); listing again",
		     "resource", inf->what, "resourceVersion", inf->rv ? inf->rv : "", NULL);
		start_list(inf);
		return;
	}
	if (r->aborted) {
		schedule_retry(inf);
		return;
	}
	if (r->status == 200 && !r->error) {
		start_watch(inf); /* the server's timeoutSeconds ran out */
		return;
	}
	if (r->status == 200) {
		/* Dropped or stalled mid-stream: resume where it stopped. */
		ulog(LOG_VERBOSE, "watch dropped; resuming", "resource", inf->what,
		     "resourceVersion", inf->rv ? inf->rv : "", "error", r->error, NULL);
		schedule_retry(inf);
		return;
	}
	report(inf, r, "watch");
	schedule_retry(inf);
}

static void start_watch(k8s_informer *inf)
{
	char path[8192];
	char *rv = k8s_url_escape(inf->rv ? inf->rv : "");
	/* As client-go: a random 5-10 minute server-side timeout spreads the
	 * reconnects of many watchers. */
	long timeout_s = 300 + (long)rand_below(300);
	snprintf(path, sizeof(path),
		 "%s?watch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%ld%s",
		 inf->path, rv ? rv : "", timeout_s, inf->query);
	free(rv);
	k8s_req_opts o = {
		.path = path,
		.timeout_ms = (timeout_s + 60) * 1000,
		.idle_ms = inf->o.idle_ms > 0 ? inf->o.idle_ms : IDLE_DEFAULT_MS,
		.on_line = watch_line,
		.on_done = watch_done,
		.ctx = inf,
	};
	inf->relist = false;
	inf->req = k8s_request(inf->c, &o);
	if (!inf->req) {
		ulog(LOG_ERROR, "cannot start a Kubernetes API request (out of memory)", NULL);
		schedule_retry(inf);
	}
}

/* ---- public ------------------------------------------------------------- */

static char *query_of(const k8s_informer_opts *o)
{
	char *f = o->field_selector ? k8s_url_escape(o->field_selector) : NULL;
	char *l = o->label_selector ? k8s_url_escape(o->label_selector) : NULL;
	char *q = NULL;
	if ((!o->field_selector || f) && (!o->label_selector || l) &&
	    asprintf(&q, "%s%s%s%s", f ? "&fieldSelector=" : "", f ? f : "",
		     l ? "&labelSelector=" : "", l ? l : "") < 0)
		q = NULL;
	free(f);
	free(l);
	return q;
}

k8s_informer *k8s_informer_new(struct event_base *base, k8s_client *c, const k8s_informer_opts *o)
{
	k8s_informer *inf = calloc(1, sizeof(*inf));
	if (!inf)
		return NULL;
	inf->base = base;
	inf->c = c;
	inf->o = *o;
	bool core = !o->group || !*o->group;
	int r1 = asprintf(&inf->path, "%s%s%s/%s/namespaces/%s/%s", core ? "/api" : "/apis/",
			  core ? "" : o->group, core ? "" : "", o->version, o->namespace_,
			  o->resource);
	int r2 = asprintf(&inf->what, "%s%s%s", o->resource, core ? "" : ".", core ? "" : o->group);
	if (r1 < 0)
		inf->path = NULL;
	if (r2 < 0)
		inf->what = NULL;
	inf->o.group = strdup(core ? "" : o->group);
	inf->o.version = strdup(o->version);
	inf->o.resource = strdup(o->resource);
	inf->o.kind = strdup(o->kind);
	inf->o.namespace_ = strdup(o->namespace_);
	inf->o.field_selector = NULL;
	inf->o.label_selector = NULL;
	inf->query = query_of(o);
	inf->retry_ev = evtimer_new(base, on_retry, inf);
	inf->notify_ev = event_new(base, -1, 0, on_notify, inf);
	if (!inf->path || !inf->what || !inf->o.group || !inf->o.version || !inf->o.resource ||
	    !inf->o.kind || !inf->o.namespace_ || !inf->query || !inf->retry_ev ||
	    !inf->notify_ev) {
		k8s_informer_free(inf);
		return NULL;
	}
	start_list(inf);
	return inf;
}

void k8s_informer_free(k8s_informer *inf)
{
	if (!inf)
		return;
	k8s_req_cancel(inf->req);
	if (inf->retry_ev)
		event_free(inf->retry_ev);
	if (inf->notify_ev)
		event_free(inf->notify_ev);
	cache_clear(&inf->items);
	cache_clear(&inf->pending);
	free(inf->cont);
	free(inf->rv);
	free(inf->path);
	free(inf->what);
	free(inf->query);
	free((char *)inf->o.group);
	free((char *)inf->o.version);
	free((char *)inf->o.resource);
	free((char *)inf->o.kind);
	free((char *)inf->o.namespace_);
	free(inf);
}

bool k8s_informer_synced(const k8s_informer *inf) { return inf->synced; }
size_t k8s_informer_count(const k8s_informer *inf) { return inf->items.n; }
const cJSON *k8s_informer_at(const k8s_informer *inf, size_t i) { return inf->items.v[i].obj; }
const char *k8s_informer_path(const k8s_informer *inf) { return inf->path; }
