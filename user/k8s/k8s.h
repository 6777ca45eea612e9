/* k8s: the Kubernetes API client. It reads the InferencePool this EPP
 * serves, the InferenceObjective, InferenceModel and InferenceModelRewrite
 * objects that reference it and the pool's Pods (list, then watch), turns
 * them into a store catalog and an endpoint list, and runs the Lease-based
 * leader election (spec §1.7, §6 "Endpoint discovery", §7.2, §7.4).
 *
 * Transport: libcurl multi on the control thread's event_base (as the metrics
 * scraper does); requests never block the loop. Lists are chunked
 * (limit/continue); watches resume from the last resourceVersion with
 * bookmarks, re-list on 410 Gone, reconnect with backoff and jitter when the
 * stream drops, and are abandoned when they stall. 403 and 404 are logged once
 * with the permission or CRD that is missing and retried; nothing here exits
 * the process.
 *
 * Threads: everything runs on the thread of the event_base; nothing is
 * thread-safe. */
#ifndef KEPP_K8S_H
#define KEPP_K8S_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "store/store.h"
#include "util/arena.h"

struct event_base;

#define K8S_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define K8S_GROUP_V1 "inference.networking.k8s.io"
#define K8S_GROUP_X "inference.networking.x-k8s.io"
#define K8S_ACTIVE_PORTS "inference.networking.k8s.io/active-ports"
/* On the InferencePool: the kernel fast path's services, "VIP:PORT=MODEL,...". */
#define K8S_FASTPATH "kepp.io/fastpath"

/* ---- connection config (config.c) ---- */

typedef struct k8s_config {
	char *server;          /* "https://host:port", no trailing slash */
	char *ca_file;         /* PEM file of the CA, or NULL */
	char *ca_pem;          /* PEM text (certificate-authority-data), or NULL */
	char *cert_file, *key_file; /* client certificate and key files, or NULL */
	char *cert_pem, *key_pem;   /* the same as PEM text (…-data), or NULL */
	char *token;           /* bearer token, or NULL */
	char *token_file;      /* file holding the token, re-read when it changes */
	char *username, *password; /* basic auth, or NULL */
	bool insecure;         /* insecure-skip-tls-verify */
	char *namespace_;      /* the context's (or the service account's) namespace */
	char *source;          /* "in-cluster" or the kubeconfig file, for logs */
} k8s_config;

/* In-cluster: KUBERNETES_SERVICE_HOST/PORT and the service account's token,
 * ca.crt and namespace under |sa_dir| (NULL: K8S_SA_DIR). */
int k8s_config_in_cluster(const char *sa_dir, k8s_config *c, char *err, size_t errlen);

/* A kubeconfig. |paths| is one file or a ':'-separated list merged as kubectl
 * does (the first file that names a cluster, user or context wins; missing
 * files are skipped). |context| NULL or "": current-context. Relative file
 * paths are taken from the folder of the file that holds them. */
int k8s_config_kubeconfig(const char *paths, const char *context, k8s_config *c, char *err,
			  size_t errlen);

/* The source controller-runtime's GetConfig picks: |kubeconfig| (the flag),
 * else $KUBECONFIG, else in-cluster, else ~/.kube/config. */
int k8s_config_load(const char *kubeconfig, k8s_config *c, char *err, size_t errlen);
void k8s_config_free(k8s_config *c);

/* ---- selectors and pods (pods.c) ---- */

/* Parses --endpoint-selector, "k=v,k2=v2" (label keys and values as
 * Kubernetes validates them; no duplicates), into arrays from |a|. */
int k8s_selector_parse(const char *s, arena *a, const char ***keys, const char ***values,
		       uint32_t *n, char *err, size_t errlen);

/* Parses --endpoint-target-ports, "8000,8001": 1 to STORE_MAX_TARGET_PORTS
 * unique ports. */
int k8s_ports_parse(const char *s, uint16_t *ports, uint32_t *n, char *err, size_t errlen);

/* The labelSelector query value of the pool's matchLabels ("k=v,k2=v2",
 * not URL-escaped), malloc'd; NULL when out of memory. */
char *k8s_selector_string(const store_pool *pool);

/* Whether the JSON object |labels| (may be NULL) holds every matchLabel. */
bool k8s_labels_match(const cJSON *labels, const store_pool *pool);

/* Whether |pod| may serve: Ready condition True, no deletionTimestamp. */
bool k8s_pod_ready(const cJSON *pod);

/* Pod labels, for the scraper's engine label (inference.networking.k8s.io/
 * engine-type by default). */
typedef struct k8s_labels {
	const char *const *keys, *const *values;
	uint32_t n;
} k8s_labels;

/* Appends the endpoints of |pod| in |pool| to |out| (room for |cap|) with
 * their labels in |labels| (may be NULL): none unless the pod matches the
 * selector, is ready and has a valid status.podIP; otherwise one per target
 * port the active-ports annotation allows (all without it), named
 * "<pod>-rank-<index in targetPorts>". Strings come from |a|. Returns how many
 * were added, -ENOSPC when |cap| is too small, or -ENOMEM. */
int k8s_pod_endpoints(const cJSON *pod, const store_pool *pool, arena *a, store_endpoint *out,
		      k8s_labels *labels, uint32_t cap);

/* ---- HTTP client (client.c) ---- */

typedef struct k8s_client k8s_client;

k8s_client *k8s_client_new(struct event_base *base, const k8s_config *cfg, char *err,
			   size_t errlen);
void k8s_client_free(k8s_client *c);
/* The namespace of the config (for --pool-namespace when unset), or NULL. */
const char *k8s_client_namespace(const k8s_client *c);

typedef struct k8s_result {
	long status;        /* HTTP status, 0 when the transfer failed */
	const char *error;  /* transfer error (timeout, reset, stalled), or NULL */
	const char *body;   /* whole body (for streams: only when status != 200) */
	size_t len;
	bool aborted;       /* on_line asked to stop */
} k8s_result;

typedef struct k8s_req_opts {
	const char *method; /* NULL: GET */
	const char *path;   /* "/api/v1/namespaces/ns/pods?..." */
	const char *body;   /* JSON for POST/PUT, or NULL */
	int64_t timeout_ms; /* whole request; <= 0: none */
	int64_t idle_ms;    /* abort when nothing arrives for this long; <= 0: none */
	/* Streams (watches): each newline-terminated line of a 200 answer goes
	 * to on_line; returning <0 aborts the transfer. It runs inside a
	 * libcurl callback: it must not start or cancel requests. */
	int (*on_line)(void *ctx, char *line, size_t len);
	/* Once at the end, outside libcurl callbacks: may start or cancel
	 * requests. Not called after k8s_req_cancel. */
	void (*on_done)(void *ctx, const k8s_result *r);
	void *ctx;
} k8s_req_opts;

typedef struct k8s_req k8s_req;

/* Starts a request; NULL when out of memory (nothing is called then). */
k8s_req *k8s_request(k8s_client *c, const k8s_req_opts *o);
/* Stops a request; its on_done is not called. Not from inside on_line. */
void k8s_req_cancel(k8s_req *r);
/* A blocking request with a short timeout, for shutdown only (releasing the
 * Lease after the event loop ended). Returns the HTTP status or <0. */
long k8s_request_sync(k8s_client *c, const char *method, const char *path, const char *body,
		      int64_t timeout_ms);

/* ---- informers: list, then watch, one resource (informer.c) ---- */

typedef struct k8s_informer k8s_informer;

typedef struct k8s_informer_opts {
	const char *group;     /* "" for the core group */
	const char *version;   /* "v1" */
	const char *resource;  /* plural: "pods", "inferencepools" */
	const char *kind;      /* "Pod": set on list items that lack it */
	const char *namespace_;
	const char *field_selector, *label_selector; /* NULL: none */
	bool optional;         /* a CRD that may be absent: 404 is not an error */
	int64_t idle_ms;       /* watch stall timeout; <= 0: 120 s */
	/* Trims an object before it is cached (it may modify it in place). */
	void (*transform)(cJSON *obj);
	/* The cache changed or a list completed; runs on its own event, never
	 * inside a transfer, coalescing bursts. */
	void (*on_change)(void *ctx);
	void *ctx;
} k8s_informer_opts;

/* Starts listing at once. Strings are copied. NULL when out of memory. */
k8s_informer *k8s_informer_new(struct event_base *base, k8s_client *c,
			       const k8s_informer_opts *o);
void k8s_informer_free(k8s_informer *inf);
/* A full list has been read (the cache is complete as of some version). */
bool k8s_informer_synced(const k8s_informer *inf);
/* Cached objects, sorted by metadata.name. */
size_t k8s_informer_count(const k8s_informer *inf);
const cJSON *k8s_informer_at(const k8s_informer *inf, size_t i);
/* The collection path, e.g. "/apis/g/v1/namespaces/ns/things". */
const char *k8s_informer_path(const k8s_informer *inf);

/* ---- the pool source: pool, objects and pods to catalog and endpoints (source.c) ---- */

/* What the source delivers; valid until the next delivery. */
typedef struct k8s_view {
	store_catalog *catalog;      /* take a reference to keep it */
	const store_endpoint *eps;   /* name, pod, ip, port, addr, rank set */
	const k8s_labels *labels;    /* the pod labels of each endpoint */
	uint32_t n;
	bool synced;                 /* the pool and its pods have been read */
	/* The pool's kepp.io/fastpath annotation (NULL: none, or no pool), and
	 * whether it differs from the previous delivery's. Both are only set
	 * once the pool has been listed: before, "none" is not known yet. */
	const char *fastpath;
	bool fastpath_changed;
} k8s_view;

typedef struct k8s_source_opts {
	const char *pool_name, *pool_namespace, *pool_group;
	/* Standalone (no CRDs, spec §6): pods by this selector and ports. */
	const char *endpoint_selector, *endpoint_target_ports;
	int64_t idle_ms; /* watch stall timeout; <= 0: 120 s */
	void (*on_update)(void *ctx, const k8s_view *v);
	void *ctx;
} k8s_source_opts;

typedef struct k8s_source k8s_source;

/* The kepp.io/fastpath annotation of InferencePool |pool| (v1 or v1alpha2),
 * or NULL when it has none or is being deleted. */
const char *k8s_pool_fastpath(const cJSON *pool);

/* Starts the watches. NULL with a reason in |err| on bad flags or no memory. */
k8s_source *k8s_source_new(struct event_base *base, k8s_client *c, const k8s_source_opts *o,
			   char *err, size_t errlen);
void k8s_source_free(k8s_source *s);

/* ---- leader election (lease.c) ---- */

typedef struct k8s_elector k8s_elector;

typedef struct k8s_elector_opts {
	const char *namespace_;
	const char *name;       /* the Lease (k8s_lease_name) */
	const char *identity;   /* NULL: "<hostname>_<uuid>" */
	int64_t lease_ms;       /* <= 0: 15 s (controller-runtime's default) */
	int64_t renew_deadline_ms; /* <= 0: 10 s */
	int64_t retry_ms;       /* <= 0: 2 s */
	void (*on_change)(void *ctx, bool leader);
	void *ctx;
} k8s_elector_opts;

/* "epp-<namespace>-<pool>.gateway-api-inference-extension.sigs.k8s.io" (spec
 * §7.4) into |out|; -ENAMETOOLONG when over 253 characters. */
int k8s_lease_name(char *out, size_t cap, const char *ns, const char *pool);

/* Starts campaigning at once. NULL when out of memory. */
k8s_elector *k8s_elector_new(struct event_base *base, k8s_client *c, const k8s_elector_opts *o);
bool k8s_elector_leader(const k8s_elector *e);
/* Gives the Lease up when held (a blocking request of at most ~2 s: call it
 * after the event loop ended), then frees. */
void k8s_elector_free(k8s_elector *e);

/* ---- helpers shared by the module and its tests (json.c) ---- */

/* Nested lookup: k8s_json_get(obj, "metadata", "name", NULL). */
const cJSON *k8s_json_get(const cJSON *obj, ...) __attribute__((sentinel));
/* The string at a nested path, or NULL. */
const char *k8s_json_str(const cJSON *obj, ...) __attribute__((sentinel));
/* Percent-encodes a query value into a malloc'd string. */
char *k8s_url_escape(const char *s);
/* RFC 3339 with microseconds in UTC, as metav1.MicroTime: cap >= 32. */
void k8s_format_microtime(char *out, size_t cap, int64_t unix_us);
#endif
