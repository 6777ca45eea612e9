/* The ext_proc Process stream handler (spec §2): one state machine per gRPC
 * stream, on the worker thread that owns the stream. It decodes each
 * ProcessingRequest, asks sched for a decision once the request body is
 * complete, and answers in the order Envoy requires (headers, body chunks,
 * trailers per direction), or with one ImmediateResponse on error.
 *
 * An xp_ep is per worker thread (it owns the worker's scratch memory); the
 * store it points to is shared, and every snapshot published there must carry
 * a sched (store_snapshot_attach_sched). */
#ifndef KEPP_EXTPROC_H
#define KEPP_EXTPROC_H
#include <stdbool.h>
#include <stddef.h>

#include "admin/admin.h"
#include "extproc/grpc.h"
#include "sched/sched.h"
#include "store/store.h"

#define XP_EXTPROC_METHOD "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
/* Envoy's recommended upper bound per streamed body chunk (spec §2.7 step 4). */
#define XP_BODY_CHUNK 62000

typedef struct xp_ep_opts {
	size_t max_body_bytes;  /* request or buffered response body limit */
	size_t max_headers;     /* header count limit per header map */
	bool disable_subset;    /* --disable-endpoint-subset-filter */
	adm_worker *obs;        /* this worker's metric tables; NULL: no metrics */
} xp_ep_opts;

typedef struct xp_ep xp_ep;

/* --early-pick (default true): with FULL_DUPLEX_STREAMED, answer the request
 * headers once the body's first messages hold what the scheduler reads (see
 * extproc.c). Set once before the workers start. */
extern bool xp_early_pick;

xp_ep *xp_ep_new(store *st, const xp_ep_opts *o);
void xp_ep_free(xp_ep *ep);
/* The Process method bound to |ep|, for xp_server_opts.methods. */
xp_method xp_ep_method(xp_ep *ep);
#endif
