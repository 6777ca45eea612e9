/* The standard gRPC health service (grpc.health.v1.Health) with the
 * reference EPP's rules (spec §7.2, cmd/epp/runner/health.go):
 *
 * leader election off: Check(any service) is SERVING iff the store is synced.
 * leader election on:  "liveness" is always SERVING; "readiness", "",
 *   "envoy.service.ext_proc.v3.ExternalProcessor" and "inference-extension"
 *   are SERVING iff synced and leader; any other name is SERVICE_UNKNOWN.
 * List reports the ext_proc service and "inference-extension" (plus
 * "liveness" and "readiness" with leader election). Watch is UNIMPLEMENTED.
 *
 * Methods run on whichever thread serves them; they only read the store
 * snapshot and the atomic leader flag. */
#ifndef KEPP_EXTPROC_HEALTH_H
#define KEPP_EXTPROC_HEALTH_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "extproc/grpc.h"
#include "store/store.h"

#define XP_HEALTH_SERVICE "grpc.health.v1.Health"
#define XP_HEALTH_EXTPROC "envoy.service.ext_proc.v3.ExternalProcessor"
#define XP_HEALTH_LIVENESS "liveness"
#define XP_HEALTH_READINESS "readiness"
#define XP_HEALTH_INFERENCE "inference-extension"

/* grpc.health.v1.HealthCheckResponse.ServingStatus */
enum {
	XP_HEALTH_UNKNOWN = 0,
	XP_HEALTH_SERVING = 1,
	XP_HEALTH_NOT_SERVING = 2,
	XP_HEALTH_SERVICE_UNKNOWN = 3,
};

typedef struct xp_health {
	store *store;         /* SERVING needs store_acquire(store)->synced */
	bool leader_election; /* --ha-enable-leader-election */
	atomic_bool leader;   /* set by the leader elector */
} xp_health;

/* Fills |out| with the grpc.health.v1.Health methods (Check, List, Watch)
 * bound to |h|; returns how many were written (at most |cap|, 3 in all). */
size_t xp_health_methods(xp_health *h, xp_method *out, size_t cap);

/* The status Check answers for |service| right now. */
int xp_health_status(xp_health *h, const char *service);
#endif
