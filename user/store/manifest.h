/* store/manifest: the pool and its objects from YAML manifests (--manifests)
 * or from the Kubernetes API (store_objects_load, for k8s/), and static
 * endpoints (--endpoints).
 *
 * Manifests are read the way `kubectl apply -f PATH` would take them: a file,
 * or every *.yaml, *.yml and *.json file of a folder (not recursive, in name
 * order), each possibly holding several documents or a `kind: List`.
 * InferencePool (inference.networking.k8s.io/v1 and
 * inference.networking.x-k8s.io/v1alpha2), InferenceModel, InferenceObjective
 * and InferenceModelRewrite (v1alpha2) are decoded strictly and validated as
 * their CRDs do; other kinds are skipped with a log line. */
#ifndef KEPP_STORE_MANIFEST_H
#define KEPP_STORE_MANIFEST_H
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "store/store.h"

#define STORE_MANIFEST_MAX_FILES 1024
#define STORE_ENDPOINTS_MAX 4096

typedef struct store_manifest_opts {
	const char *pool_name;      /* NULL: the only InferencePool in the manifests, if any */
	const char *pool_namespace; /* "default" when unset */
	const char *pool_group;     /* "inference.networking.k8s.io" by default */
} store_manifest_opts;

/* Loads a YAML file or a folder of .yaml, .yml and .json files into a new catalog
 * (store_catalog_new/finish; refs 1). On error returns <0 with "<file>:<line>: <reason>".
 *
 * Objects without metadata.namespace belong to the pool namespace. When a pool
 * is known (opts->pool_name, or the only InferencePool of the manifests) only
 * objects of its namespace whose poolRef names it (same group, kind
 * InferencePool) are kept; the others are ignored with a log line. A pool of
 * either API group is found by name; opts->pool_group picks between two pools
 * of the same name and is the group poolRefs must name when the manifests hold
 * no pool. Objects without creationTimestamp count as created at the epoch, in
 * file order. */
int store_manifests_load(const char *path, const store_manifest_opts *o, store_catalog **out,
			 char *err, size_t errlen);

/* One object as the Kubernetes API server returns it (an item of a list or
 * the object of a watch event, with apiVersion and kind). */
typedef struct store_api_object {
	const cJSON *obj;
	const char *origin; /* names the object in messages, e.g. its API path */
} store_api_object;

/* Builds a catalog from API objects with the decoding, validation, pool
 * choice and filtering of store_manifests_load, except that (1) fields this
 * version does not know are ignored and spec.endpointPickerRef may be absent:
 * the API server already validated the object against the CRD it serves,
 * which may be newer; (2) an object that does not validate is left out with a
 * log line naming it, the others are kept. Returns 0, -ENOMEM, or -EINVAL
 * (logged) when the set is inconsistent (two pools and no opts->pool_name). */
int store_objects_load(const store_api_object *objs, size_t n, const store_manifest_opts *o,
		       store_catalog **out);

/* A cheap signature of the files (names, sizes, mtimes in ns) for reload polling. */
int store_manifests_signature(const char *path, uint64_t *sig);

/* Parses --endpoints ("ip:port", "[v6]:port", or a bare IP meaning one endpoint per
 * pool targetPort; |pool| may be NULL) into a malloc'd array the caller frees with free().
 * name/pod are left NULL: store_snapshot_new names static endpoints by their address.
 * Sets ip (canonical form), port, addr (store_format_addr) and rank (the index of the
 * port in the pool's targetPorts, 0 when there is no pool or the port is not one of
 * them). Duplicates and malformed entries are refused with a reason naming the entry. */
int store_endpoints_parse(const char *spec, const store_pool *pool, store_endpoint **out,
			  uint32_t *n, char *err, size_t errlen);
#endif
