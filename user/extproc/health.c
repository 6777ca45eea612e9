#include "extproc/health.h"

#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "util/log.h"

#define PATH_CHECK "/" XP_HEALTH_SERVICE "/Check"
#define PATH_LIST "/" XP_HEALTH_SERVICE "/List"
#define PATH_WATCH "/" XP_HEALTH_SERVICE "/Watch"

static bool synced(xp_health *h)
{
	const store_snapshot *snap = store_acquire(h->store);
	if (!snap)
		return false;
	bool ok = snap->synced;
	store_release(snap);
	return ok;
}

int xp_health_status(xp_health *h, const char *service)
{
	bool live = synced(h);
	int st;

	if (!h->leader_election) {
		st = live ? XP_HEALTH_SERVING : XP_HEALTH_NOT_SERVING;
	} else if (strcmp(service, XP_HEALTH_LIVENESS) == 0) {
		/* Any replica that answers is alive; only readiness waits for
		 * leadership, so followers are not restarted. */
		st = XP_HEALTH_SERVING;
	} else if (strcmp(service, XP_HEALTH_READINESS) == 0 || *service == '\0' ||
		   strcmp(service, XP_HEALTH_EXTPROC) == 0 ||
		   strcmp(service, XP_HEALTH_INFERENCE) == 0) {
		st = live && atomic_load(&h->leader) ? XP_HEALTH_SERVING : XP_HEALTH_NOT_SERVING;
	} else {
		/* As the reference answers it: a response status, not a gRPC
		 * error, so kubelet and grpc_health_probe report
		 * "responded with SERVICE_UNKNOWN". */
		ulog(LOG_DEFAULT, "gRPC health check requested unknown service",
		     "requested-service", service, NULL);
		return XP_HEALTH_SERVICE_UNKNOWN;
	}
	if (st != XP_HEALTH_SERVING)
		ulog(LOG_DEFAULT, "gRPC health check not serving", "service", service, "synced",
		     live ? "true" : "false", "leader",
		     atomic_load(&h->leader) ? "true" : "false", NULL);
	return st;
}

/* Per-call state of the unary methods: the request is answered at
 * half-close, once it is known to be the only one. */
typedef struct hcall {
	xp_health *h;
	bool list;
	bool got;
	char *service;
} hcall;

static void *unary_open(xp_stream *st, bool list, void *method_ctx)
{
	hcall *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->h = method_ctx;
	c->list = list;
	return c;
}

static void *check_open(xp_stream *st, void *method_ctx)
{
	return unary_open(st, false, method_ctx);
}

static void *list_open(xp_stream *st, void *method_ctx)
{
	return unary_open(st, true, method_ctx);
}

static void unary_message(xp_stream *st, void *ctx, const uint8_t *msg, size_t len)
{
	hcall *c = ctx;
	if (c->got) {
		xp_stream_finish(st, XP_GRPC_INTERNAL, "grpc: more than one request message");
		return;
	}
	c->got = true;
	if (c->list) {
		Grpc__Health__V1__HealthListRequest *req =
			grpc__health__v1__health_list_request__unpack(NULL, len, msg);
		if (!req) {
			xp_stream_finish(st, XP_GRPC_INTERNAL, "grpc: error unmarshalling request");
			return;
		}
		grpc__health__v1__health_list_request__free_unpacked(req, NULL);
		return;
	}
	Grpc__Health__V1__HealthCheckRequest *req =
		grpc__health__v1__health_check_request__unpack(NULL, len, msg);
	if (!req) {
		xp_stream_finish(st, XP_GRPC_INTERNAL, "grpc: error unmarshalling request");
		return;
	}
	c->service = strdup(req->service);
	grpc__health__v1__health_check_request__free_unpacked(req, NULL);
	if (!c->service)
		xp_stream_finish(st, XP_GRPC_RESOURCE_EXHAUSTED, "out of memory");
}

static void check_reply(xp_stream *st, hcall *c)
{
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	uint8_t buf[16];
	resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)xp_health_status(
		c->h, c->service);
	size_t n = grpc__health__v1__health_check_response__pack(&resp, buf);
	xp_stream_send(st, buf, n);
	xp_stream_finish(st, XP_GRPC_OK, NULL);
}

static void list_reply(xp_stream *st, hcall *c)
{
	const char *names[5];
	size_t n = 0;
	names[n++] = XP_HEALTH_EXTPROC;
	if (c->h->leader_election) {
		names[n++] = XP_HEALTH_LIVENESS;
		names[n++] = XP_HEALTH_READINESS;
	}
	names[n++] = XP_HEALTH_INFERENCE;

	Grpc__Health__V1__HealthCheckResponse vals[5];
	Grpc__Health__V1__HealthListResponse__StatusesEntry ents[5];
	Grpc__Health__V1__HealthListResponse__StatusesEntry *ptrs[5];
	for (size_t i = 0; i < n; i++) {
		grpc__health__v1__health_check_response__init(&vals[i]);
		vals[i].status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)
			xp_health_status(c->h, names[i]);
		grpc__health__v1__health_list_response__statuses_entry__init(&ents[i]);
		ents[i].key = (char *)names[i];
		ents[i].value = &vals[i];
		ptrs[i] = &ents[i];
	}
	Grpc__Health__V1__HealthListResponse resp = GRPC__HEALTH__V1__HEALTH_LIST_RESPONSE__INIT;
	resp.n_statuses = n;
	resp.statuses = ptrs;
	uint8_t buf[512];
	size_t len = grpc__health__v1__health_list_response__get_packed_size(&resp);
	if (len > sizeof(buf)) {
		xp_stream_finish(st, XP_GRPC_INTERNAL, "health list response too large");
		return;
	}
	grpc__health__v1__health_list_response__pack(&resp, buf);
	xp_stream_send(st, buf, len);
	xp_stream_finish(st, XP_GRPC_OK, NULL);
}

static void unary_half_close(xp_stream *st, void *ctx)
{
	hcall *c = ctx;
	if (!c->got) {
		xp_stream_finish(st, XP_GRPC_INTERNAL, "grpc: no request message");
		return;
	}
	if (c->list)
		list_reply(st, c);
	else
		check_reply(st, c);
}

static void unary_close(xp_stream *st, void *ctx, bool cancelled)
{
	hcall *c = ctx;
	free(c->service);
	free(c);
}

static void *watch_open(xp_stream *st, void *method_ctx)
{
	xp_stream_finish(st, XP_GRPC_UNIMPLEMENTED, "Watch is not implemented");
	return method_ctx;
}

size_t xp_health_methods(xp_health *h, xp_method *out, size_t cap)
{
	const xp_method all[] = {
		{.path = PATH_CHECK,
		 .open = check_open,
		 .message = unary_message,
		 .half_close = unary_half_close,
		 .close = unary_close,
		 .method_ctx = h},
		{.path = PATH_LIST,
		 .open = list_open,
		 .message = unary_message,
		 .half_close = unary_half_close,
		 .close = unary_close,
		 .method_ctx = h},
		/* Finished in open: no message, half-close or state to free. */
		{.path = PATH_WATCH, .open = watch_open, .method_ctx = h},
	};
	size_t n = sizeof(all) / sizeof(all[0]);
	if (n > cap)
		n = cap;
	memcpy(out, all, n * sizeof(*out));
	return n;
}
