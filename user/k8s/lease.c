/* Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules
 * (tools/leaderelection): a candidate takes the Lease when it has no holder
 * or when its record has not changed for leaseDurationSeconds as measured by
 * the candidate's own clock (no clock sync is assumed); the leader renews
 * every retry period and steps down when it could not renew within the renew
 * deadline. Writes carry the resourceVersion read, so two candidates cannot
 * both win: the loser gets 409 Conflict. Losing leadership only flips the
 * readiness; the process goes on campaigning (no restart). On shutdown the
 * leader releases the Lease (ReleaseOnCancel) so a standby takes over at once. */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "k8s/k8s.h"
#include "util/log.h"
#include "util/rand.h"

struct k8s_elector {
	struct event_base *base;
	k8s_client *c;
	char *ns, *name, *identity, *coll, *item;
	int64_t lease_ms, renew_deadline_ms, retry_ms;
	void (*on_change)(void *ctx, bool leader);
	void *ctx;
	struct event *tick;
	k8s_req *req;
	bool leader;
	int64_t renewed_ms; /* monotonic time of the last successful write */
	/* The record last read or written, and when it last changed. */
	bool have;
	char *holder, *renew_time, *acquire_time, *rv;
	int64_t transitions;
	int64_t observed_ms;
	char problem[32];
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void now_micro(char *out, size_t cap)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	k8s_format_microtime(out, cap, (int64_t)tv.tv_sec * 1000000 + tv.tv_usec);
}

static void set_str(char **dst, const char *s)
{
	char *d = s ? strdup(s) : NULL;
	free(*dst);
	*dst = d;
}

static bool streq(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

static void set_leader(k8s_elector *e, bool leader, const char *why)
{
	if (e->leader == leader)
		return;
	e->leader = leader;
	ulog(leader ? LOG_DEFAULT : LOG_WARN,
	     leader ? "became the leader: readiness SERVING"
		    : "lost leadership: readiness NOT_SERVING",
	     "lease", e->name, "identity", e->identity, "reason", why, NULL);
	e->on_change(e->ctx, leader);
}

static void problem(k8s_elector *e, const k8s_result *r, const char *what)
{
	char key[32], detail[512];
	snprintf(key, sizeof(key), "%s-%ld", what, r->status);
	bool again = !strcmp(key, e->problem);
	snprintf(e->problem, sizeof(e->problem), "%s", key);
	if (r->error) {
		snprintf(detail, sizeof(detail), "%s", r->error);
	} else {
		cJSON *st = r->len ? cJSON_ParseWithLength(r->body, r->len) : NULL;
		const char *m = k8s_json_str(st, "message", NULL);
		snprintf(detail, sizeof(detail), "HTTP %ld: %s", r->status, m ? m : "");
		cJSON_Delete(st);
	}
	ulog(again ? LOG_DEBUG : (r->status == 403 ? LOG_ERROR : LOG_WARN),
	     "leader election: Lease request failed; retrying", "lease", e->name, "step", what,
	     "error", detail, r->status == 403 ? "fix" : NULL,
	     "grant kepp's service account get, create and update on resource \"leases\" of API "
	     "group coordination.k8s.io in the pool namespace (deploy/rbac.yaml)",
	     NULL);
}

/* Takes in the Lease object |lease| as read or written. */
static void observe(k8s_elector *e, const cJSON *lease)
{
	const char *holder = k8s_json_str(lease, "spec", "holderIdentity", NULL);
	const char *renew = k8s_json_str(lease, "spec", "renewTime", NULL);
	const char *rv = k8s_json_str(lease, "metadata", "resourceVersion", NULL);
	const cJSON *tr = k8s_json_get(lease, "spec", "leaseTransitions", NULL);
	if (!e->have || !streq(holder, e->holder) || !streq(renew, e->renew_time) ||
	    !streq(rv, e->rv))
		e->observed_ms = mono_ms();
	e->have = true;
	set_str(&e->holder, holder);
	set_str(&e->renew_time, renew);
	set_str(&e->acquire_time, k8s_json_str(lease, "spec", "acquireTime", NULL));
	set_str(&e->rv, rv);
	e->transitions = cJSON_IsNumber(tr) ? (int64_t)tr->valuedouble : 0;
}

/* The Lease as we want it written; |holder| NULL releases it. */
static char *lease_json(k8s_elector *e, const char *holder, bool create)
{
	char now[40];
	now_micro(now, sizeof(now));
	cJSON *o = cJSON_CreateObject(), *md = cJSON_AddObjectToObject(o, "metadata");
	cJSON *spec = cJSON_AddObjectToObject(o, "spec");
	cJSON_AddStringToObject(o, "apiVersion", "coordination.k8s.io/v1");
	cJSON_AddStringToObject(o, "kind", "Lease");
	cJSON_AddStringToObject(md, "name", e->name);
	cJSON_AddStringToObject(md, "namespace", e->ns);
	if (!create && e->rv)
		cJSON_AddStringToObject(md, "resourceVersion", e->rv);
	int64_t secs = (e->lease_ms + 999) / 1000;
	if (holder) {
		cJSON_AddStringToObject(spec, "holderIdentity", holder);
		/* A renewal keeps the acquisition; a takeover is a transition. */
		bool renewal = e->leader && e->acquire_time && !create;
		int64_t transitions = create ? 0 : e->transitions + !renewal;
		cJSON_AddStringToObject(spec, "acquireTime", renewal ? e->acquire_time : now);
		cJSON_AddNumberToObject(spec, "leaseTransitions", (double)transitions);
	} else {
		secs = 1;
		cJSON_AddStringToObject(spec, "acquireTime", now);
		cJSON_AddNumberToObject(spec, "leaseTransitions", (double)e->transitions);
	}
	cJSON_AddNumberToObject(spec, "leaseDurationSeconds", (double)secs);
	cJSON_AddStringToObject(spec, "renewTime", now);
	char *s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

static void write_done(void *ctx, const k8s_result *r)
{
	k8s_elector *e = ctx;
	e->req = NULL;
	if (!r->error && (r->status == 200 || r->status == 201)) {
		cJSON *l = cJSON_ParseWithLength(r->body, r->len);
		if (l)
			observe(e, l);
		cJSON_Delete(l);
		e->renewed_ms = mono_ms();
		e->problem[0] = '\0';
		set_leader(e, true, r->status == 201 ? "created the Lease" : "took the Lease");
		return;
	}
	if (!r->error && r->status == 409) {
		/* Someone else wrote first: read again at the next tick. */
		e->have = false;
		ulog(LOG_DEBUG, "leader election: write conflict", "lease", e->name, NULL);
		return;
	}
	e->have = false;
	problem(e, r, "write");
}

static void write_lease(k8s_elector *e, bool create)
{
	char *body = lease_json(e, e->identity, create);
	k8s_req_opts o = {
		.method = create ? "POST" : "PUT",
		.path = create ? e->coll : e->item,
		.body = body,
		.timeout_ms = e->renew_deadline_ms,
		.on_done = write_done,
		.ctx = e,
	};
	e->req = body ? k8s_request(e->c, &o) : NULL;
	free(body);
}

static void read_done(void *ctx, const k8s_result *r)
{
	k8s_elector *e = ctx;
	e->req = NULL;
	if (!r->error && r->status == 404) {
		e->have = false;
		write_lease(e, true);
		return;
	}
	if (r->error || r->status != 200) {
		problem(e, r, "read");
		return;
	}
	cJSON *l = cJSON_ParseWithLength(r->body, r->len);
	if (!l) {
		k8s_result bad = {.error = "the Lease is not JSON"};
		problem(e, &bad, "read");
		return;
	}
	observe(e, l);
	const cJSON *d = k8s_json_get(l, "spec", "leaseDurationSeconds", NULL);
	int64_t dur_ms = cJSON_IsNumber(d) && d->valuedouble > 0 ? (int64_t)d->valuedouble * 1000
								 : e->lease_ms;
	cJSON_Delete(l);
	bool other = e->holder && *e->holder && strcmp(e->holder, e->identity);
	if (other && mono_ms() < e->observed_ms + dur_ms) {
		set_leader(e, false, "another replica holds the Lease");
		return;
	}
	write_lease(e, false);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	k8s_elector *e = arg;
	if (e->leader && mono_ms() - e->renewed_ms > e->renew_deadline_ms)
		set_leader(e, false, "could not renew the Lease within the renew deadline");
	if (e->req)
		return;
	if (e->leader && e->have) {
		write_lease(e, false); /* renew straight away from the record we wrote */
		return;
	}
	k8s_req_opts o = {
		.path = e->item,
		.timeout_ms = e->renew_deadline_ms,
		.on_done = read_done,
		.ctx = e,
	};
	e->req = k8s_request(e->c, &o);
}

int k8s_lease_name(char *out, size_t cap, const char *ns, const char *pool)
{
	int n = snprintf(out, cap, "epp-%s-%s.gateway-api-inference-extension.sigs.k8s.io", ns,
			 pool);
	return n < 0 || (size_t)n >= cap || n > 253 ? -ENAMETOOLONG : 0;
}

k8s_elector *k8s_elector_new(struct event_base *base, k8s_client *c, const k8s_elector_opts *o)
{
	k8s_elector *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->base = base;
	e->c = c;
	e->lease_ms = o->lease_ms > 0 ? o->lease_ms : 15000;
	e->renew_deadline_ms = o->renew_deadline_ms > 0 ? o->renew_deadline_ms : 10000;
	e->retry_ms = o->retry_ms > 0 ? o->retry_ms : 2000;
	e->on_change = o->on_change;
	e->ctx = o->ctx;
	e->ns = strdup(o->namespace_);
	e->name = strdup(o->name);
	if (o->identity) {
		e->identity = strdup(o->identity);
	} else {
		char host[256] = "kepp", uuid[37];
		gethostname(host, sizeof(host) - 1);
		rand_uuid4(uuid);
		if (asprintf(&e->identity, "%s_%s", host, uuid) < 0)
			e->identity = NULL;
	}
	if (!e->ns || !e->name || !e->identity ||
	    asprintf(&e->coll, "/apis/coordination.k8s.io/v1/namespaces/%s/leases", e->ns) < 0 ||
	    asprintf(&e->item, "%s/%s", e->coll, e->name) < 0) {
		k8s_elector_free(e);
		return NULL;
	}
	e->tick = event_new(base, -1, EV_PERSIST, on_tick, e);
	if (!e->tick) {
		k8s_elector_free(e);
		return NULL;
	}
	struct timeval tv = {e->retry_ms / 1000, (e->retry_ms % 1000) * 1000};
	event_add(e->tick, &tv);
	event_active(e->tick, EV_TIMEOUT, 0);
	ulog(LOG_DEFAULT, "leader election: campaigning", "lease", e->name, "namespace", e->ns,
	     "identity", e->identity, NULL);
	return e;
}

bool k8s_elector_leader(const k8s_elector *e) { return e->leader; }

void k8s_elector_free(k8s_elector *e)
{
	if (!e)
		return;
	k8s_req_cancel(e->req);
	if (e->leader && e->have && e->rv) {
		char *body = lease_json(e, NULL, false);
		long code = body ? k8s_request_sync(e->c, "PUT", e->item, body, 2000) : -ENOMEM;
		free(body);
		ulog(code == 200 ? LOG_DEFAULT : LOG_WARN,
		     code == 200 ? "leader election: Lease released"
				 : "leader election: could not release the Lease; it expires on "
				   "its own",
		     "lease", e->name, NULL);
	}
	if (e->tick)
		event_free(e->tick);
	free(e->ns);
	free(e->name);
	free(e->identity);
	free(e->coll);
	free(e->item);
	free(e->holder);
	free(e->renew_time);
	free(e->acquire_time);
	free(e->rv);
	free(e);
}
