/* kepp: flags, wiring, worker threads and signals.
 *
 * Threads: N workers, each with its own event loop and SO_REUSEPORT ext_proc
 * listener (a gRPC stream never leaves its worker); the main thread is the
 * control thread: gRPC health server, manifest and certificate reloads, and
 * signal handling. Shared state reaches workers only through store snapshots. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "admin/admin.h"
#include "extproc/extproc.h"
#include "extproc/grpc.h"
#include "extproc/health.h"
#include "k8s/k8s.h"
#include "kernel/kernel.h"
#include "proxy/proxy.h"
#include "metrics/metrics.h"
#include "sched/config.h"
#include "sched/sched.h"
#include "store/manifest.h"
#include "store/store.h"
#include "util/log.h"
#include "util/units.h"

#define KEPP_VERSION "0.1.0"
#ifndef KEPP_COMMIT
#define KEPP_COMMIT "unknown" /* set with CFLAGS=-DKEPP_COMMIT=... */
#endif

/* ---- flags ------------------------------------------------------------- */

typedef struct flags {
	int grpc_port, grpc_health_port;
	bool secure_serving, enable_cert_reload, health_checking, disable_subset, watch_config;
	const char *cert_path;
	const char *endpoints, *manifests, *config_file, *config_text;
	const char *pool_name, *pool_namespace, *pool_group;
	const char *kubeconfig, *endpoint_selector, *endpoint_target_ports;
	bool ha_leader_election;
	int64_t ha_lease_ms, ha_renew_ms, ha_retry_ms, kube_idle_ms;
	const char *kernel;
	int64_t drain_timeout_ms;
	int64_t handshake_timeout_ms;
	int max_connections;
	const char *tls_min_version;
	int64_t refresh_metrics_ms;
	int64_t max_message_bytes, max_body_bytes;
	int workers;
	int v;
} flags;

enum ftype { F_INT, F_BOOL, F_STR, F_DURATION, F_BYTES, F_LIST };

typedef struct flagdef {
	const char *name;
	enum ftype type;
	void *dst;
	const char *help;
} flagdef;

static flags F = {
	.grpc_port = 9002,
	.grpc_health_port = 9003,
	.secure_serving = true,
	.watch_config = true,
	.pool_group = "inference.networking.k8s.io",
	.ha_lease_ms = 15000,
	.ha_renew_ms = 10000,
	.ha_retry_ms = 2000,
	.kube_idle_ms = 120000,
	.kernel = "auto",
	.drain_timeout_ms = 30000,
	.handshake_timeout_ms = 10000,
	.max_connections = 10000,
	.tls_min_version = "1.2",
	.refresh_metrics_ms = 50,
	.max_message_bytes = 4 << 20,
	.max_body_bytes = 64 << 20,
	.v = LOG_DEFAULT,
};

static const char *zap_encoder = "json";

/* A repeatable flag: every value, in order. */
typedef struct strlist {
	const char *v[KERN_MAX_SERVICES];
	int n;
} strlist;

/* Kernel fast path flags (user/kernel). */
static struct {
	strlist fastpath;
	const char *bpffs, *cgroup;
	int affinity_pct;
	strlist xdp_iface;
	int64_t drain_ms;
	bool keep;
} KF = {.bpffs = "/sys/fs/bpf", .drain_ms = 30000};

/* Observability flags (user/admin). */
static struct {
	int port;
	bool debug_endpoints;
	int64_t staleness_ms;
	bool exclude_stale;
} MF = {.port = 9090, .staleness_ms = 2000, .exclude_stale = true};

static const flagdef FLAGS[] = {
	{"grpc-port", F_INT, &F.grpc_port, "ext_proc gRPC port"},
	{"grpc-health-port", F_INT, &F.grpc_health_port, "plaintext gRPC health port"},
	{"secure-serving", F_BOOL, &F.secure_serving, "TLS on the ext_proc port"},
	{"cert-path", F_STR, &F.cert_path, "folder with tls.crt and tls.key (empty: self-signed)"},
	{"enable-cert-reload", F_BOOL, &F.enable_cert_reload, "reload tls.crt/tls.key when they change"},
	{"tls-min-version", F_STR, &F.tls_min_version, "lowest TLS version accepted: 1.2 or 1.3 (also VersionTLS12/VersionTLS13)"},
	{"handshake-timeout", F_DURATION, &F.handshake_timeout_ms, "a new ext_proc connection must finish TLS and send the HTTP/2 preface within this time"},
	{"max-connections", F_INT, &F.max_connections, "ext_proc connections held at once (all workers); more are closed at accept"},
	{"health-checking", F_BOOL, &F.health_checking, "also serve gRPC health on the ext_proc port"},
	{"endpoints", F_STR, &F.endpoints, "static pool endpoints: ip:port,ip:port (no Kubernetes)"},
	{"manifests", F_STR, &F.manifests, "YAML file or folder of InferencePool/Model/Objective/ModelRewrite manifests (reloaded on change)"},
	{"config-file", F_STR, &F.config_file, "EndpointPickerConfig YAML file"},
	{"config-text", F_STR, &F.config_text, "EndpointPickerConfig YAML text"},
	{"watch-config-file", F_BOOL, &F.watch_config, "reload --config-file when it changes (a bad one is refused, the old one serves on)"},
	{"pool-name", F_STR, &F.pool_name, "InferencePool name"},
	{"pool-namespace", F_STR, &F.pool_namespace, "InferencePool namespace (default: $NAMESPACE, then \"default\")"},
	{"pool-group", F_STR, &F.pool_group, "InferencePool API group"},
	{"endpoint-selector", F_STR, &F.endpoint_selector, "standalone, no CRDs: the pool's pods by labels k=v,k2=v2 (instead of --pool-name)"},
	{"endpoint-target-ports", F_STR, &F.endpoint_target_ports, "standalone: the pods' target ports, 8000,8001 (1 to 8)"},
	{"kubeconfig", F_STR, &F.kubeconfig, "kubeconfig file (default: $KUBECONFIG, in-cluster, then ~/.kube/config)"},
	{"kube-watch-idle-timeout", F_DURATION, &F.kube_idle_ms, "a Kubernetes watch silent this long is reopened (no event is lost)"},
	{"ha-enable-leader-election", F_BOOL, &F.ha_leader_election, "Lease-based leader election: readiness only on the leader"},
	{"ha-lease-duration", F_DURATION, &F.ha_lease_ms, "leader election: how long a Lease holds without renewal"},
	{"ha-renew-deadline", F_DURATION, &F.ha_renew_ms, "leader election: the leader steps down when it cannot renew for this long"},
	{"ha-retry-period", F_DURATION, &F.ha_retry_ms, "leader election: how often candidates try and the leader renews"},
	{"kernel", F_STR, &F.kernel, "kernel fast path: off, auto or on"},
	{"fastpath", F_LIST, &KF.fastpath, "fast-path service VIP:PORT=MODEL (repeatable)"},
	{"bpffs", F_STR, &KF.bpffs, "bpffs mount point for kepp's pinned maps and links (mounted if absent)"},
	{"cgroup", F_STR, &KF.cgroup, "cgroup v2 folder whose processes get the fast path (default: the cgroup2 root)"},
	{"xdp-iface", F_LIST, &KF.xdp_iface, "interface that gets kepp's XDP program: per-VIP counters, SYNs to sheddable services dropped while the pool is saturated (repeatable)"},
	{"fastpath-affinity-margin", F_INT, &KF.affinity_pct, "fast path: a client (cgroup) stays on its pod while the pod's weight is within this percent of the best (0: off)"},
	{"kernel-keep", F_BOOL, &KF.keep, "on a clean exit leave the fast path attached and pinned for the next kepp to adopt (default: detach it and remove its pins)"},
	{"fastpath-drain", F_DURATION, &KF.drain_ms, "fast path: connections steered to a pod that left the pool are closed after this grace period (0: never)"},
	{"refresh-metrics-interval", F_DURATION, &F.refresh_metrics_ms, "how often every endpoint's /metrics is scraped"},
	{"drain-timeout", F_DURATION, &F.drain_timeout_ms, "on SIGTERM, how long streams in flight may finish"},
	{"max-message-bytes", F_BYTES, &F.max_message_bytes, "largest gRPC message accepted"},
	{"max-body-bytes", F_BYTES, &F.max_body_bytes, "largest request (or buffered response) body accepted"},
	{"workers", F_INT, &F.workers, "worker threads (0: one per core)"},
	{"disable-endpoint-subset-filter", F_BOOL, &F.disable_subset, "ignore the gateway's endpoint subset hint"},
	{"early-pick", F_BOOL, &xp_early_pick, "FULL_DUPLEX_STREAMED: answer the request headers once the body's first messages hold the model and the prompt the scheduler reads, then stream the body through"},
	{"v", F_INT, &F.v, "log verbosity: 2 default, 3 verbose, 4 debug, 5 trace"},
	{"metrics-port", F_INT, &MF.port, "HTTP port of /metrics, /healthz and /debug/ (0: off)"},
	{"enable-debug-endpoints", F_BOOL, &MF.debug_endpoints, "serve /debug/pool and /debug/explain on the metrics port"},
	{"metrics-staleness-threshold", F_DURATION, &MF.staleness_ms, "endpoints with metrics older than this are not ready in the inference_pool_* gauges (and no candidates: --exclude-stale-endpoints)"},
	{"exclude-stale-endpoints", F_BOOL, &MF.exclude_stale, "leave endpoints with stale or missing metrics out of the candidates while others have fresh ones"},
	{"zap-encoder", F_STR, &zap_encoder, "log encoding (json only; accepted for compatibility)"},
};
#define NFLAGS (sizeof(FLAGS) / sizeof(FLAGS[0]))

static void usage(FILE *f)
{
	fprintf(f, "kepp %s: a kernel-accelerated Endpoint Picker for the Gateway API Inference Extension\n\nFlags:\n",
		KEPP_VERSION);
	for (size_t i = 0; i < NFLAGS; i++)
		fprintf(f, "  --%-32s %s\n", FLAGS[i].name, FLAGS[i].help);
}

static int set_flag(const flagdef *d, const char *val)
{
	switch (d->type) {
	case F_INT: {
		char *end;
		errno = 0;
		long v = strtol(val, &end, 10);
		if (end == val || *end || errno || v < INT_MIN || v > INT_MAX)
			return -EINVAL;
		*(int *)d->dst = (int)v;
		return 0;
	}
	case F_BOOL:
		if (!strcmp(val, "true") || !strcmp(val, "1") || !strcmp(val, "t") ||
		    !strcmp(val, "TRUE") || !strcmp(val, "True"))
			*(bool *)d->dst = true;
		else if (!strcmp(val, "false") || !strcmp(val, "0") || !strcmp(val, "f") ||
			 !strcmp(val, "FALSE") || !strcmp(val, "False"))
			*(bool *)d->dst = false;
		else
			return -EINVAL;
		return 0;
	case F_STR:
		*(const char **)d->dst = val;
		return 0;
	case F_DURATION:
		return units_duration_ms(val, d->dst);
	case F_BYTES:
		return units_quantity(val, d->dst);
	case F_LIST: {
		strlist *l = d->dst;
		if (l->n >= (int)(sizeof(l->v) / sizeof(l->v[0])))
			return -E2BIG;
		l->v[l->n++] = val;
		return 0;
	}
	}
	return -EINVAL;
}

/* Go flag syntax: -name, --name, -name=value, --name value; booleans take
 * no separate value. */
static int parse_flags(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help") || !strcmp(a, "-help")) {
			usage(stdout);
			exit(0);
		}
		if (!strcmp(a, "--version") || !strcmp(a, "-version")) {
			printf("kepp %s\n", KEPP_VERSION);
			exit(0);
		}
		if (a[0] != '-') {
			fprintf(stderr, "kepp: unexpected argument %s (flags start with --)\n", a);
			return -EINVAL;
		}
		a += a[1] == '-' ? 2 : 1;
		const char *eq = strchr(a, '=');
		size_t nl = eq ? (size_t)(eq - a) : strlen(a);
		const flagdef *d = NULL;
		for (size_t k = 0; k < NFLAGS; k++)
			if (strlen(FLAGS[k].name) == nl && !strncmp(FLAGS[k].name, a, nl))
				d = &FLAGS[k];
		if (!d) {
			fprintf(stderr, "kepp: unknown flag --%.*s (see --help)\n", (int)nl, a);
			return -EINVAL;
		}
		const char *val;
		if (eq)
			val = eq + 1;
		else if (d->type == F_BOOL)
			val = "true";
		else if (i + 1 < argc)
			val = argv[++i];
		else {
			fprintf(stderr, "kepp: flag --%s needs a value\n", d->name);
			return -EINVAL;
		}
		if (set_flag(d, val) < 0) {
			fprintf(stderr, "kepp: invalid value \"%s\" for flag --%s\n", val, d->name);
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- workers ----------------------------------------------------------- */

typedef struct worker {
	int id;
	pthread_t thread;
	struct event_base *base;
	struct event *drain_ev, *drain_tick;
	xp_server *server;
	xp_ep *ep;
	xp_method methods[4];
	size_t n_methods;
	int64_t drain_deadline_ms;
	atomic_bool done;
} worker;

typedef struct app {
	store *store;
	sched *sched;
	xp_tls *tls;
	xp_health health;
	worker *workers;
	int n_workers;
	struct event_base *base;
	xp_server *health_server;
	xp_method health_methods[4];
	size_t n_health_methods;
	struct event *sig_term, *sig_int, *reload_tick, *cert_tick, *exit_tick, *config_tick;
	uint64_t manifest_sig, config_sig;
	bool draining;
	int64_t exit_deadline_ms;
	store_manifest_opts mopts;
	/* What the next snapshot is built from: the catalog in force and the
	 * endpoints without metrics; the scraper fills a copy each time. */
	store_catalog *catalog;
	store_endpoint *eps, *eps_fill;
	uint32_t n_eps;
	bool synced;
	mx_scraper *mx;
	/* The scraper's targets with pod labels (Kubernetes pools), copied so a
	 * scraper rebuilt on a config reload gets them again; NULL for static
	 * endpoints. */
	mx_target *tgts;
	arena tgt_mem;
	k8s_client *kc;  /* the Kubernetes API, when used */
	k8s_source *ks;  /* pool, objects and pods from it */
	k8s_elector *ke; /* --ha-enable-leader-election */
	kern *kern; /* NULL when the kernel fast path is off or did not load */
	proxy *proxy; /* the fallback path of the fast path, with kern */
	adm *adm;   /* metrics, /metrics and debug endpoints */
	arena fill_mem;
} app;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void worker_drain_tick(evutil_socket_t fd, short what, void *arg)
{
	worker *w = arg;
	if (xp_server_active_streams(w->server) == 0 || now_ms() >= w->drain_deadline_ms)
		event_base_loopexit(w->base, NULL);
}

static void worker_drain(evutil_socket_t fd, short what, void *arg)
{
	worker *w = arg;
	xp_server_drain(w->server);
	w->drain_deadline_ms = now_ms() + F.drain_timeout_ms;
	struct timeval tv = {0, 20000};
	w->drain_tick = event_new(w->base, -1, EV_PERSIST, worker_drain_tick, w);
	event_add(w->drain_tick, &tv);
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	event_base_dispatch(w->base);
	/* Whatever is still open after the drain timeout is cancelled here. */
	xp_server_free(w->server);
	w->server = NULL;
	atomic_store(&w->done, true);
	return NULL;
}

static int worker_init(app *A, worker *w, int id)
{
	char err[256];
	w->id = id;
	w->base = event_base_new();
	if (!w->base)
		return -ENOMEM;
	xp_ep_opts eo = {
		.max_body_bytes = (size_t)F.max_body_bytes,
		.max_headers = 1024,
		.disable_subset = F.disable_subset,
		.obs = adm_worker_new(A->adm),
	};
	if (!eo.obs)
		return -ENOMEM;
	w->ep = xp_ep_new(A->store, &eo);
	if (!w->ep)
		return -ENOMEM;
	w->methods[0] = xp_ep_method(w->ep);
	w->n_methods = 1;
	if (F.health_checking)
		w->n_methods += xp_health_methods(&A->health, w->methods + 1, 3);
	xp_server_opts so = {
		.port = F.grpc_port,
		.tls = F.secure_serving ? A->tls : NULL,
		.max_message_bytes = (size_t)F.max_message_bytes,
		.max_concurrent_streams = 1000,
		.handshake_timeout_ms = F.handshake_timeout_ms,
		/* SO_REUSEPORT spreads connections evenly enough for a share. */
		.max_connections = (uint32_t)((F.max_connections + A->n_workers - 1) / A->n_workers),
		.methods = w->methods,
		.n_methods = w->n_methods,
		.name = "ext-proc",
	};
	w->server = xp_server_new(w->base, &so, err, sizeof(err));
	if (!w->server) {
		ulog(LOG_ERROR, "cannot start the ext_proc server", "error", err, NULL);
		return -EADDRINUSE;
	}
	w->drain_ev = event_new(w->base, -1, 0, worker_drain, w);
	return 0;
}

/* ---- control thread ---------------------------------------------------- */

static int build_catalog(app *A, store_catalog **out, char *err, size_t errlen)
{
	if (F.manifests)
		return store_manifests_load(F.manifests, &A->mopts, out, err, errlen);
	store_catalog *c = store_catalog_new();
	if (!c)
		return -ENOMEM;
	store_catalog_finish(c);
	*out = c;
	return 0;
}

/* Builds and publishes a snapshot from the catalog in force, the endpoints,
 * and the scraper's latest metrics. */
static void republish(void *arg)
{
	app *A = arg;
	if (A->n_eps)
		memcpy(A->eps_fill, A->eps, A->n_eps * sizeof(*A->eps));
	if (A->mx)
		mx_scraper_fill(A->mx, A->eps_fill, A->n_eps, &A->fill_mem);
	store_snapshot *snap = store_snapshot_new(A->catalog, A->eps_fill, A->n_eps, A->synced);
	arena_reset(&A->fill_mem);
	if (!snap) {
		ulog(LOG_ERROR, "out of memory building a snapshot; keeping the previous one", NULL);
		return;
	}
	sched_ref(A->sched);
	store_snapshot_attach_sched(snap, A->sched, sched_unref);
	if (A->kern)
		kern_publish(A->kern, snap);
	store_publish(A->store, snap);
}

/* Makes catalog |c| and the endpoints |eps| (malloc'd; taken, freed on
 * error) the state in force and publishes it. |t| gives the scraper the
 * pods' labels (NULL: each endpoint scraped on its own port). On error the
 * previous state stays in force. */
static const char *tgt_str(app *A, const char *s)
{
	return s ? arena_strdup(&A->tgt_mem, s) : NULL;
}

/* Deep-copies |t| into A->tgts (NULL when |t| is); on allocation failure
 * the endpoints are scraped without labels after a config reload. */
static void keep_targets(app *A, const mx_target *t, uint32_t n)
{
	arena_reset(&A->tgt_mem);
	A->tgts = NULL;
	if (!t || !n)
		return;
	mx_target *c = arena_calloc(&A->tgt_mem, n * sizeof(*c));
	for (uint32_t i = 0; c && i < n; i++) {
		c[i] = t[i];
		c[i].addr = tgt_str(A, t[i].addr);
		c[i].ip = tgt_str(A, t[i].ip);
		const char **k = arena_calloc(&A->tgt_mem, (t[i].n_labels + 1) * sizeof(*k));
		const char **v = arena_calloc(&A->tgt_mem, (t[i].n_labels + 1) * sizeof(*v));
		if (!c[i].addr || !c[i].ip || !k || !v)
			return;
		for (uint32_t j = 0; j < t[i].n_labels; j++)
			if (!(k[j] = tgt_str(A, t[i].label_keys[j])) ||
			    !(v[j] = tgt_str(A, t[i].label_values[j])))
				return;
		c[i].label_keys = k;
		c[i].label_values = v;
	}
	A->tgts = c;
}

static int install(app *A, store_catalog *c, store_endpoint *eps, uint32_t n, const mx_target *t,
		   bool synced)
{
	store_endpoint *fill = NULL;
	if (n && !(fill = calloc(n, sizeof(*fill)))) {
		free(eps);
		return -ENOMEM;
	}
	if (A->mx && (t ? mx_scraper_set_targets(A->mx, t, n)
			: mx_scraper_set_endpoints(A->mx, eps, n)) < 0) {
		free(eps);
		free(fill);
		return -ENOMEM;
	}
	free(A->eps);
	free(A->eps_fill);
	A->eps = eps;
	A->eps_fill = fill;
	A->n_eps = n;
	keep_targets(A, t, n);
	store_catalog_ref(c);
	if (A->catalog)
		store_catalog_unref(A->catalog);
	A->catalog = c;
	A->synced = synced;
	republish(A);
	return 0;
}

/* Makes catalog |c| the one in force with the static endpoints, parsed again
 * each time because bare IPs take the pool's target ports. On error the
 * previous state stays in force. */
static int publish(app *A, store_catalog *c)
{
	char err[512];
	store_endpoint *eps = NULL;
	uint32_t n = 0;
	if (F.endpoints && store_endpoints_parse(F.endpoints, c->has_pool ? &c->pool : NULL, &eps,
						 &n, err, sizeof(err)) < 0) {
		ulog(LOG_ERROR, "invalid --endpoints", "error", err, NULL);
		return -EINVAL;
	}
	/* Health turns SERVING once the pool is known: read from the manifests;
	 * or given by --endpoints alone when no manifests are read, or when they
	 * name no pool to wait for. With neither, the Kubernetes source says. */
	return install(A, c, eps, n, NULL,
		       c->has_pool || (F.endpoints && (!F.manifests || !F.pool_name)));
}

static void fastpath_update(app *A, const char *value);

/* The pool, its objects and its pods as the Kubernetes source sees them. */
static void k8s_update(void *arg, const k8s_view *v)
{
	app *A = arg;
	if (v->fastpath_changed)
		fastpath_update(A, v->fastpath);
	store_endpoint *eps = v->n ? malloc(v->n * sizeof(*eps)) : NULL;
	mx_target *t = v->n ? calloc(v->n, sizeof(*t)) : NULL;
	for (uint32_t i = 0; eps && t && i < v->n; i++) {
		eps[i] = v->eps[i];
		t[i] = (mx_target){
			.addr = v->eps[i].addr,
			.ip = v->eps[i].ip,
			.port = v->eps[i].port,
			.label_keys = v->labels[i].keys,
			.label_values = v->labels[i].values,
			.n_labels = v->labels[i].n,
		};
	}
	if ((v->n && (!eps || !t)) || install(A, v->catalog, eps, v->n, t, v->synced) < 0) {
		if (!t)
			free(eps);
		/* The strings of the endpoints in force go with this delivery. */
		ulog(LOG_ERROR, "out of memory taking the pool's endpoints; serving none", NULL);
		A->n_eps = 0;
		republish(A);
	}
	free(t);
}

static void k8s_leader(void *arg, bool leader)
{
	app *A = arg;
	atomic_store(&A->health.leader, leader);
}

/* The Kubernetes API client: the pool source unless --endpoints or
 * --manifests give the pool, and the leader elector when asked for. */
static int k8s_start(app *A)
{
	char err[1024];
	bool source = !F.endpoints && !F.manifests;
	A->health.leader_election = F.ha_leader_election;
	if (!source && !F.ha_leader_election)
		return 0;
	k8s_config kc;
	if (k8s_config_load(F.kubeconfig, &kc, err, sizeof(err)) < 0) {
		ulog(LOG_ERROR, "no Kubernetes API access", "error", err, NULL);
		return -EINVAL;
	}
	ulog(LOG_DEFAULT, "Kubernetes API", "server", kc.server, "config", kc.source, NULL);
	A->kc = k8s_client_new(A->base, &kc, err, sizeof(err));
	k8s_config_free(&kc);
	if (!A->kc) {
		ulog(LOG_ERROR, "cannot start the Kubernetes API client", "error", err, NULL);
		return -EINVAL;
	}
	if (source) {
		k8s_source_opts so = {
			.pool_name = F.pool_name && *F.pool_name ? F.pool_name : NULL,
			.pool_namespace = F.pool_namespace,
			.pool_group = F.pool_group,
			.endpoint_selector = F.endpoint_selector,
			.endpoint_target_ports = F.endpoint_target_ports,
			.idle_ms = F.kube_idle_ms,
			.on_update = k8s_update,
			.ctx = A,
		};
		A->ks = k8s_source_new(A->base, A->kc, &so, err, sizeof(err));
		if (!A->ks) {
			ulog(LOG_ERROR, "cannot read the pool from the Kubernetes API", "error",
			     err, NULL);
			return -EINVAL;
		}
	}
	if (F.ha_leader_election) {
		char name[320];
		const char *pool = F.pool_name && *F.pool_name ? F.pool_name : "standalone";
		if (k8s_lease_name(name, sizeof(name), F.pool_namespace, pool) < 0) {
			ulog(LOG_ERROR, "the leader election Lease name is over 253 characters",
			     NULL);
			return -EINVAL;
		}
		k8s_elector_opts eo = {
			.namespace_ = F.pool_namespace,
			.name = name,
			.lease_ms = F.ha_lease_ms,
			.renew_deadline_ms = F.ha_renew_ms,
			.retry_ms = F.ha_retry_ms,
			.on_change = k8s_leader,
			.ctx = A,
		};
		A->ke = k8s_elector_new(A->base, A->kc, &eo);
		if (!A->ke)
			return -ENOMEM;
	}
	return 0;
}

static void reload_tick(evutil_socket_t fd, short what, void *arg)
{
	app *A = arg;
	uint64_t sig;
	if (store_manifests_signature(F.manifests, &sig) < 0 || sig == A->manifest_sig)
		return;
	A->manifest_sig = sig;
	char err[512];
	store_catalog *c;
	if (store_manifests_load(F.manifests, &A->mopts, &c, err, sizeof(err)) < 0) {
		ulog(LOG_ERROR, "manifests changed but are invalid; keeping the previous ones",
		     "error", err, NULL);
		return;
	}
	if (publish(A, c) == 0)
		ulog(LOG_DEFAULT, "manifests reloaded", "path", F.manifests, NULL);
	store_catalog_unref(c);
}

static mx_scraper *scraper_new(app *A, const sched *s, char *err, size_t errlen)
{
	mx_scraper_opts mo = {.interval_ms = F.refresh_metrics_ms};
	mx_scraper *mx = mx_scraper_new(A->base, sched_data_layer(s), &mo, err, errlen);
	if (!mx)
		return NULL;
	mx_scraper_on_update(mx, republish, A);
	return mx;
}

/* A changed --config-file becomes the scheduler for new requests; streams
 * decided with the old one finish with it (their snapshots hold it). The
 * scraper goes on unless the data layer changed. */
static void config_tick(evutil_socket_t fd, short what, void *arg)
{
	app *A = arg;
	uint64_t sig;
	if (store_manifests_signature(F.config_file, &sig) < 0 || sig == A->config_sig)
		return;
	A->config_sig = sig;
	char err[1024];
	sched_config *cfg = NULL;
	sched *s = NULL;
	if (sched_config_load_file(F.config_file, &cfg, err, sizeof(err)) == 0)
		s = sched_new(cfg, err, sizeof(err));
	sched_config_free(cfg);
	if (!s) {
		ulog(LOG_ERROR, "config file changed but is invalid; keeping the previous one", "error",
		     err, NULL);
		return;
	}
	sched_set_staleness(s, MF.exclude_stale ? MF.staleness_ms : 0);
	if (mx_scraper_rebind(A->mx, sched_data_layer(s)) < 0) {
		mx_scraper *mx = scraper_new(A, s, err, sizeof(err));
		if (!mx || (A->tgts ? mx_scraper_set_targets(mx, A->tgts, A->n_eps)
				    : mx_scraper_set_endpoints(mx, A->eps, A->n_eps)) < 0) {
			ulog(LOG_ERROR, "cannot apply the new config's data layer; keeping the previous config",
			     "error", mx ? "out of memory" : err, NULL);
			mx_scraper_free(mx);
			sched_unref(s);
			return;
		}
		mx_scraper_free(A->mx);
		A->mx = mx;
	}
	sched_unref(A->sched);
	A->sched = s;
	republish(A);
	ulog(LOG_DEFAULT, "config reloaded", "path", F.config_file, "profile", sched_profile_name(s),
	     NULL);
}

static void cert_tick(evutil_socket_t fd, short what, void *arg)
{
	app *A = arg;
	char err[256];
	int r = xp_tls_maybe_reload(A->tls, err, sizeof(err));
	if (r > 0)
		ulog(LOG_DEFAULT, "TLS certificate reloaded", "path", F.cert_path, NULL);
	else if (r < 0)
		ulog(LOG_ERROR, "TLS certificate reload failed; keeping the previous one", "error",
		     err, NULL);
}

static void exit_tick(evutil_socket_t fd, short what, void *arg)
{
	app *A = arg;
	for (int i = 0; i < A->n_workers; i++)
		if (!atomic_load(&A->workers[i].done))
			return;
	/* The fallback proxy ends its own drain by --drain-timeout. */
	if (A->proxy && !proxy_drained(A->proxy))
		return;
	event_base_loopexit(A->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	app *A = arg;
	if (A->draining) {
		ulog(LOG_WARN, "second signal: exiting now", NULL);
		_exit(1);
	}
	A->draining = true;
	ulog(LOG_DEFAULT, "draining: no new connections, streams in flight may finish", "signal",
	     sig == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
	for (int i = 0; i < A->n_workers; i++)
		event_active(A->workers[i].drain_ev, 0, 0);
	if (A->proxy)
		proxy_drain(A->proxy, F.drain_timeout_ms);
	struct timeval tv = {0, 20000};
	A->exit_tick = event_new(A->base, -1, EV_PERSIST, exit_tick, A);
	event_add(A->exit_tick, &tv);
}

static kern_service kern_svcs[KERN_MAX_SERVICES];
static char kern_off[512]; /* why the kernel fast path is not loaded */

/* The fallback proxy's form of the fast-path services |s|[0..n). */
static void proxy_services(const kern_service *s, size_t n, proxy_service *out)
{
	for (size_t i = 0; i < n; i++) {
		memcpy(out[i].addr, s[i].addr, sizeof(out[i].addr));
		out[i].port = s[i].port;
		snprintf(out[i].model, sizeof(out[i].model), "%s", s[i].model);
	}
}

/* The pool's kepp.io/fastpath annotation changed (|value| NULL: gone): its
 * services join the --fastpath ones, a flag winning on the same VIP:PORT, in
 * the maps and in the fallback proxy. A malformed value changes nothing, as
 * an invalid config reload. */
static void fastpath_update(app *A, const char *value)
{
	static bool ignored;
	char pool[320], err[512], shadowed[512];
	snprintf(pool, sizeof(pool), "%s/%s", F.pool_namespace, F.pool_name);
	if (!A->kern) {
		if (value && !ignored)
			ulog(LOG_DEFAULT, "kepp.io/fastpath annotation ignored: the kernel fast path is not loaded",
			     "pool", pool, "reason", kern_off, NULL);
		ignored |= value != NULL;
		return;
	}
	static kern_service ann[KERN_MAX_SERVICES], all[KERN_MAX_SERVICES];
	int n = kern_services_parse(value ? value : "", ann, KERN_MAX_SERVICES, err, sizeof(err));
	if (n >= 0)
		n = kern_services_merge(kern_svcs, (size_t)KF.fastpath.n, ann, (size_t)n, all,
					KERN_MAX_SERVICES, shadowed, sizeof(shadowed));
	if (n == -E2BIG)
		snprintf(err, sizeof(err), "more than %d fast-path services with the --fastpath ones",
			 KERN_MAX_SERVICES);
	int r = n < 0 ? n : kern_set_services(A->kern, all, (size_t)n);
	if (r < 0) {
		if (n >= 0)
			snprintf(err, sizeof(err), "cannot set the services: %s", strerror(-r));
		ulog(LOG_ERROR, "invalid kepp.io/fastpath annotation; keeping the fast-path services in force",
		     "pool", pool, "annotation", value ? value : "", "error", err, NULL);
		return;
	}
	static proxy_service ps[KERN_MAX_SERVICES];
	proxy_services(all, (size_t)n, ps);
	if (A->proxy && proxy_set_services(A->proxy, ps, (size_t)n) < 0)
		ulog(LOG_ERROR, "out of memory: the fallback proxy keeps its previous fast-path services",
		     "pool", pool, NULL);
	if (*shadowed)
		ulog(LOG_WARN, "kepp.io/fastpath annotation: a --fastpath flag wins on the same VIP:PORT",
		     "pool", pool, "services", shadowed, NULL);
}

/* Validates --kernel and the --fastpath services before anything starts. */
/* The listeners use SO_REUSEPORT (one per worker), which would also let a
 * second kepp, or anything else with SO_REUSEPORT, bind the same port and
 * silently take half the connections. A bind without it first tells whether
 * the port is free. Returns 0, or -errno (EADDRINUSE) with the port taken. */
static int port_free(int port)
{
	if (port <= 0)
		return 0;
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
	struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool v6 = fd >= 0;
	if (!v6)
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1, zero = 0, r = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (v6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if ((v6 ? bind(fd, (struct sockaddr *)&a6, sizeof(a6))
		: bind(fd, (struct sockaddr *)&a4, sizeof(a4))) < 0)
		r = -errno;
	close(fd);
	return r;
}

static int ports_free(void)
{
	const struct {
		const char *flag;
		int port;
	} ps[] = {{"--grpc-port", F.grpc_port},
		  {"--grpc-health-port", F.grpc_health_port},
		  {"--metrics-port", MF.port}};
	for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
		int r = port_free(ps[i].port);
		if (r < 0) {
			char port[16];
			snprintf(port, sizeof(port), "%d", ps[i].port);
			ulog(LOG_ERROR, "port in use (another kepp running?)", "flag", ps[i].flag,
			     "port", port, "error", strerror(-r), NULL);
			return r;
		}
	}
	return 0;
}

static int kernel_mode_check(void)
{
	if (strcmp(F.kernel, "off") && strcmp(F.kernel, "auto") && strcmp(F.kernel, "on")) {
		ulog(LOG_ERROR, "invalid --kernel value (off, auto or on)", "kernel", F.kernel, NULL);
		return -EINVAL;
	}
	for (int i = 0; i < KF.fastpath.n; i++) {
		char err[512];
		if (kern_service_parse(KF.fastpath.v[i], &kern_svcs[i], err, sizeof(err)) < 0) {
			ulog(LOG_ERROR, "invalid --fastpath", "error", err, NULL);
			return -EINVAL;
		}
		for (int j = 0; j < i; j++)
			if (!strcmp(kern_svcs[j].vip, kern_svcs[i].vip)) {
				ulog(LOG_ERROR, "--fastpath gives a VIP:PORT twice", "service",
				     kern_svcs[i].vip, NULL);
				return -EINVAL;
			}
	}
	if (KF.affinity_pct < 0 || KF.affinity_pct > 100) {
		ulog(LOG_ERROR, "--fastpath-affinity-margin must be 0..100 (percent)", NULL);
		return -EINVAL;
	}
	if (KF.drain_ms < 0) {
		ulog(LOG_ERROR, "--fastpath-drain must be >= 0 (0: never)", NULL);
		return -EINVAL;
	}
	return 0;
}

/* Loads the kernel fast path once the store and scheduler exist: with
 * --kernel=auto a failure is one log line and kepp serves ext_proc only;
 * with --kernel=on it is fatal. */
static int kernel_start(app *A)
{
	bool on = !strcmp(F.kernel, "on");
	snprintf(kern_off, sizeof(kern_off), "--kernel=off");
	if (!strcmp(F.kernel, "off"))
		return 0;
	/* A pool from the Kubernetes API may name services in its annotation. */
	bool from_pool = !F.endpoints && !F.manifests && F.pool_name && *F.pool_name;
	if (KF.fastpath.n == 0 && !from_pool) {
		if (on) {
			ulog(LOG_ERROR, "--kernel=on needs at least one --fastpath VIP:PORT=MODEL or a pool from the Kubernetes API (--pool-name)",
			     NULL);
			return -EINVAL;
		}
		ulog(LOG_DEFAULT, "kernel fast path not loaded: no --fastpath services; serving ext_proc only",
		     "kernel", F.kernel, NULL);
		return 0;
	}
	/* A table is stale after ten missed publishes (at least a second):
	 * kepp is gone or stuck, and connections should take the fallback. */
	int64_t max_age = F.refresh_metrics_ms * 10 > 1000 ? F.refresh_metrics_ms * 10 : 1000;
	kern_opts ko = {
		.bpffs = KF.bpffs,
		.cgroup = KF.cgroup,
		.services = kern_svcs,
		.n_services = (size_t)KF.fastpath.n,
		.keep_unknown_services = from_pool,
		.max_age_ms = max_age,
		.affinity_pct = (uint32_t)KF.affinity_pct,
		.drain_ms = KF.drain_ms,
		.xdp_ifaces = KF.xdp_iface.v,
		.n_xdp_ifaces = (size_t)KF.xdp_iface.n,
		.base = A->base,
		.store = A->store,
		.sched = A->sched,
	};
	char err[512];
	A->kern = kern_open(&ko, err, sizeof(err));
	if (!A->kern) {
		snprintf(kern_off, sizeof(kern_off), "%s", err);
		if (on) {
			ulog(LOG_ERROR, "--kernel=on: cannot load the kernel fast path", "error", err,
			     NULL);
			return -ENOTSUP;
		}
		ulog(LOG_DEFAULT, "kernel fast path not loaded; serving ext_proc only", "kernel",
		     "auto", "reason", err, NULL);
		return 0;
	}
	/* The fallback path: sk_lookup hands the proxy what connect declined. */
	static proxy_service ps[KERN_MAX_SERVICES];
	static kern_service start_svcs[KERN_MAX_SERVICES];
	size_t n_start = (size_t)KF.fastpath.n;
	memcpy(start_svcs, kern_svcs, n_start * sizeof(*start_svcs));
	/* Until the pool is read, the annotation's services an earlier kepp
	 * left in the maps keep their stale tables, so their connections come
	 * here: the proxy serves them with the model the maps recorded. */
	if (from_pool)
		n_start += kern_adopted_services(A->kern, start_svcs + n_start,
						 KERN_MAX_SERVICES - n_start);
	proxy_services(start_svcs, n_start, ps);
	proxy_opts po = {.store = A->store, .services = ps, .n_services = n_start,
			 .max_body_bytes = (size_t)F.max_body_bytes};
	A->proxy = proxy_new(&po, err, sizeof(err));
	int fr = A->proxy ? kern_set_fallback(A->kern, proxy_fd(A->proxy, AF_INET),
					      proxy_fd(A->proxy, AF_INET6))
			  : -EINVAL;
	if (fr < 0) {
		if (A->proxy)
			snprintf(err, sizeof(err), "SOCKMAP update: %s", strerror(-fr));
		ulog(LOG_ERROR, "no fallback proxy: connections the kernel declines reach the VIP itself",
		     "error", err, NULL);
		if (on)
			return -ENOTSUP;
	}
	const store_snapshot *snap = store_acquire(A->store);
	kern_publish(A->kern, snap);
	store_release(snap);
	return 0;
}

/* The kernel's counters on every scrape of /metrics. */
static void kern_collect(void *ctx, adm_out *o)
{
	static kern_counters c; /* large; the control thread is the only caller */
	if (kern_stats(ctx, &c) < 0)
		return;
	const char *n = "kepp_kernel_connects_total";
	adm_out_family(o, n, "counter",
		       "connect() calls to fast-path services: steered (picked), or declined by reason.");
	adm_out_sample(o, n, (double)c.all_shed, "result", "all_shed", NULL);
	adm_out_sample(o, n, (double)c.empty, "result", "empty", NULL);
	adm_out_sample(o, n, (double)c.no_service, "result", "no_service", NULL);
	adm_out_sample(o, n, (double)c.picked, "result", "picked", NULL);
	adm_out_sample(o, n, (double)c.stale, "result", "stale", NULL);
	static const struct {
		const char *name, *type, *help;
	} fams[] = {
		{"kepp_kernel_backend_closes_total", "counter", "Steered connections closed."},
		{"kepp_kernel_backend_connects_total", "counter", "Steered connections established."},
		{"kepp_kernel_backend_in_flight_connections", "gauge", "Steered connections open."},
		{"kepp_kernel_backend_srtt_seconds", "gauge", "Smoothed TCP RTT of steered connections."},
	};
	for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
		adm_out_family(o, fams[f].name, fams[f].type, fams[f].help);
		for (size_t i = 0; i < c.n_backends && i < KERN_STATS_MAX_BACKENDS; i++) {
			const kern_backend_stats *b = &c.backends[i];
			double v[] = {(double)b->closes, (double)b->connects, (double)b->inflight,
				      b->srtt_us / 1e6};
			adm_out_sample(o, fams[f].name, v[f], "endpoint", b->addr, NULL);
		}
	}
	static const struct {
		const char *name, *help;
	} vfams[] = {
		{"kepp_kernel_vip_bytes_total", "Bytes of TCP packets to the fast-path VIP:port seen by XDP (--xdp-iface)."},
		{"kepp_kernel_vip_packets_total", "TCP packets to the fast-path VIP:port seen by XDP (--xdp-iface)."},
		{"kepp_kernel_vip_syn_shed_total", "SYNs to the VIP:port XDP dropped while the pool was saturated."},
	};
	for (size_t f = 0; f < sizeof(vfams) / sizeof(vfams[0]); f++) {
		adm_out_family(o, vfams[f].name, "counter", vfams[f].help);
		for (size_t i = 0; i < c.n_vips && i < KERN_MAX_SERVICES; i++) {
			const kern_vip_stats *s = &c.vips[i];
			double v[] = {(double)s->bytes, (double)s->packets, (double)s->syn_shed};
			adm_out_sample(o, vfams[f].name, v[f], "vip", s->vip, NULL);
		}
	}
	n = "kepp_kernel_drained_connections_total";
	adm_out_family(o, n, "counter",
		       "Steered connections closed because their pod left the pool (--fastpath-drain).");
	adm_out_sample(o, n, (double)c.drained, NULL);
}

/* Metrics tables, /metrics and the debug endpoints. A --metrics-port that
 * cannot be bound is fatal, as the ext_proc and health ports are (and as
 * the reference's manager fails to start): a kepp that came up without the
 * /metrics it was asked for would be blind to its operators. 0 turns the
 * server off. */
static int adm_start(app *A)
{
	adm_opts ao = {
		.debug_endpoints = MF.debug_endpoints,
		.staleness_ms = MF.staleness_ms,
		.store = A->store,
		.pool_name = F.pool_name,
		.pool_namespace = F.pool_namespace,
		.version = "v" KEPP_VERSION,
		.commit = KEPP_COMMIT,
		.scraper = &A->mx,
	};
	A->adm = adm_new(&ao);
	if (!A->adm)
		return -ENOMEM;
	if (A->kern && adm_register_collector(A->adm, kern_collect, A->kern) < 0)
		return -ENOMEM;
	if (A->proxy && adm_register_collector(A->adm, proxy_collect, A->proxy) < 0)
		return -ENOMEM;
	char err[256], port[16];
	int r = MF.port > 0 ? adm_listen(A->adm, A->base, MF.port, err, sizeof(err)) : 0;
	if (r < 0) {
		snprintf(port, sizeof(port), "%d", MF.port);
		ulog(LOG_ERROR, "cannot start the metrics server", "flag", "--metrics-port", "port",
		     port, "error", err, NULL);
	}
	return r;
}

/* Everything before the servers start: config, scheduler, store, TLS.
 * Errors are logged here; the caller exits 2. */
static int app_setup(app *A, sched_config **cfg)
{
	char err[1024];
	if (F.config_file && sched_config_load_file(F.config_file, cfg, err, sizeof(err)) < 0) {
		ulog(LOG_ERROR, "invalid --config-file", "error", err, NULL);
		return -EINVAL;
	}
	if (F.config_text && sched_config_parse_text(F.config_text, strlen(F.config_text),
						     "<config-text>", cfg, err, sizeof(err)) < 0) {
		ulog(LOG_ERROR, "invalid --config-text", "error", err, NULL);
		return -EINVAL;
	}
	A->sched = sched_new(*cfg, err, sizeof(err));
	if (!A->sched) {
		ulog(LOG_ERROR, "invalid scheduler configuration", "error", err, NULL);
		return -EINVAL;
	}
	sched_set_staleness(A->sched, MF.exclude_stale ? MF.staleness_ms : 0);
	A->base = event_base_new();
	if (!A->base)
		return -ENOMEM;
	arena_init(&A->fill_mem, 16384);
	arena_init(&A->tgt_mem, 4096);
	A->mx = scraper_new(A, A->sched, err, sizeof(err));
	if (!A->mx) {
		ulog(LOG_ERROR, "cannot start the metrics scraper", "error", err, NULL);
		return -EINVAL;
	}
	if (F.config_file)
		store_manifests_signature(F.config_file, &A->config_sig);
	A->mopts.pool_name = F.pool_name;
	A->mopts.pool_namespace = F.pool_namespace;
	A->mopts.pool_group = F.pool_group;
	A->store = store_new();
	if (!A->store)
		return -ENOMEM;
	store_catalog *cat;
	if (build_catalog(A, &cat, err, sizeof(err)) < 0) {
		ulog(LOG_ERROR, "invalid manifests", "error", err, NULL);
		return -EINVAL;
	}
	if (F.manifests)
		store_manifests_signature(F.manifests, &A->manifest_sig);
	int r = publish(A, cat);
	store_catalog_unref(cat);
	if (r < 0)
		return r;
	if (F.secure_serving) {
		A->tls = xp_tls_new(F.cert_path, err, sizeof(err));
		if (!A->tls) {
			ulog(LOG_ERROR, "TLS setup failed", "error", err, NULL);
			return -EINVAL;
		}
		if (xp_tls_set_min_version(A->tls, F.tls_min_version) < 0) {
			ulog(LOG_ERROR, "invalid --tls-min-version (1.2, 1.3, VersionTLS12 or VersionTLS13)",
			     "tls-min-version", F.tls_min_version, NULL);
			return -EINVAL;
		}
	}
	return 0;
}

/* Frees whatever app_setup and main created; safe on a partial start. */
static void app_free(app *A, sched_config *cfg)
{
	k8s_elector_free(A->ke); /* releases the Lease when held */
	k8s_source_free(A->ks);
	k8s_client_free(A->kc);
	kern_close(A->kern);
	proxy_free(A->proxy);
	for (int i = 0; A->workers && i < A->n_workers; i++) {
		worker *w = &A->workers[i];
		if (w->drain_tick)
			event_free(w->drain_tick);
		if (w->drain_ev)
			event_free(w->drain_ev);
		if (w->server)
			xp_server_free(w->server);
		xp_ep_free(w->ep);
		if (w->base)
			event_base_free(w->base);
	}
	free(A->workers);
	adm_free(A->adm);
	if (A->health_server)
		xp_server_free(A->health_server);
	if (A->mx)
		mx_scraper_free(A->mx);
	arena_free(&A->fill_mem);
	arena_free(&A->tgt_mem);
	free(A->eps);
	free(A->eps_fill);
	if (A->catalog)
		store_catalog_unref(A->catalog);
	struct event *evs[] = {A->sig_term, A->sig_int, A->reload_tick, A->cert_tick, A->exit_tick,
			       A->config_tick};
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i])
			event_free(evs[i]);
	if (A->base)
		event_base_free(A->base);
	if (A->tls)
		xp_tls_free(A->tls);
	if (A->store)
		store_free(A->store);
	sched_unref(A->sched);
	sched_config_free(cfg);
}

int main(int argc, char **argv)
{
	if (parse_flags(argc, argv) < 0)
		return 2;
	log_set_verbosity(F.v);
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(zap_encoder, "json") != 0)
		ulog(LOG_WARN, "only JSON logs are supported; --zap-encoder ignored", "zap-encoder",
		     zap_encoder, NULL);
	if (F.config_file && F.config_text) {
		ulog(LOG_ERROR, "--config-file and --config-text are mutually exclusive", NULL);
		return 2;
	}
	bool by_name = F.pool_name && *F.pool_name;
	bool by_labels = F.endpoint_selector && *F.endpoint_selector;
	if (!F.endpoints && !F.manifests && !by_name && !by_labels) {
		ulog(LOG_ERROR,
		     "no pool: give --pool-name (the InferencePool from the Kubernetes API), --endpoint-selector with --endpoint-target-ports (pods from the Kubernetes API, no CRDs), or --endpoints ip:port,... and/or --manifests PATH (no Kubernetes)",
		     NULL);
		return 2;
	}
	if (by_labels && (by_name || F.endpoints || F.manifests)) {
		ulog(LOG_ERROR,
		     "--endpoint-selector excludes --pool-name, --endpoints and --manifests", NULL);
		return 2;
	}
	if (F.ha_lease_ms <= F.ha_renew_ms || F.ha_renew_ms <= F.ha_retry_ms ||
	    F.ha_retry_ms <= 0) {
		ulog(LOG_ERROR,
		     "leader election needs --ha-lease-duration > --ha-renew-deadline > "
		     "--ha-retry-period > 0",
		     NULL);
		return 2;
	}
	if (F.max_connections < 0 || F.handshake_timeout_ms <= 0) {
		ulog(LOG_ERROR, "--max-connections must be >= 0 (0: no limit) and --handshake-timeout > 0",
		     NULL);
		return 2;
	}
	if (MF.port < 0 || MF.port > 65535) {
		ulog(LOG_ERROR, "--metrics-port must be 0..65535 (0: off)", NULL);
		return 2;
	}
	if (kernel_mode_check() < 0)
		return 2;
	if (!F.pool_namespace || !*F.pool_namespace) {
		const char *ns = getenv("NAMESPACE");
		F.pool_namespace = ns && *ns ? ns : "default";
	}

	/* Before any event_base: workers are woken from the control thread. */
	evthread_use_pthreads();
	static app A;
	sched_config *cfg = NULL;
	int rc = app_setup(&A, &cfg);
	if (rc == 0)
		rc = kernel_start(&A);
	if (rc == 0)
		rc = k8s_start(&A);
	if (rc < 0) {
		app_free(&A, cfg);
		return 2;
	}
	char err[1024];
	A.health.store = A.store;
	A.n_health_methods = xp_health_methods(&A.health, A.health_methods, 4);
	xp_server_opts ho = {
		.port = F.grpc_health_port,
		.max_message_bytes = 1 << 20,
		.max_concurrent_streams = 100,
		.methods = A.health_methods,
		.n_methods = A.n_health_methods,
		.name = "health",
	};
	if (ports_free() < 0) {
		app_free(&A, cfg);
		return 1;
	}
	A.health_server = xp_server_new(A.base, &ho, err, sizeof(err));
	if (!A.health_server) {
		ulog(LOG_ERROR, "cannot start the gRPC health server", "error", err, NULL);
		app_free(&A, cfg);
		return 1;
	}

	if (adm_start(&A) < 0) {
		app_free(&A, cfg);
		return 1;
	}

	A.n_workers = F.workers > 0 ? F.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (A.n_workers < 1)
		A.n_workers = 1;
	A.workers = calloc((size_t)A.n_workers, sizeof(worker));
	for (int i = 0; i < A.n_workers; i++) {
		if (worker_init(&A, &A.workers[i], i) < 0) {
			app_free(&A, cfg);
			return 1;
		}
	}
	for (int i = 0; i < A.n_workers; i++)
		pthread_create(&A.workers[i].thread, NULL, worker_main, &A.workers[i]);

	A.sig_term = evsignal_new(A.base, SIGTERM, on_signal, &A);
	A.sig_int = evsignal_new(A.base, SIGINT, on_signal, &A);
	event_add(A.sig_term, NULL);
	event_add(A.sig_int, NULL);
	if (F.manifests) {
		struct timeval tv = {1, 0};
		A.reload_tick = event_new(A.base, -1, EV_PERSIST, reload_tick, &A);
		event_add(A.reload_tick, &tv);
	}
	if (F.config_file && F.watch_config) {
		struct timeval tv = {1, 0};
		A.config_tick = event_new(A.base, -1, EV_PERSIST, config_tick, &A);
		event_add(A.config_tick, &tv);
	}
	if (F.secure_serving && F.enable_cert_reload && F.cert_path && *F.cert_path) {
		struct timeval tv = {0, 250000};
		A.cert_tick = event_new(A.base, -1, EV_PERSIST, cert_tick, &A);
		event_add(A.cert_tick, &tv);
	}

	char ports[64];
	snprintf(ports, sizeof(ports), "%d", F.grpc_port);
	char hport[16], nw[16];
	snprintf(hport, sizeof(hport), "%d", F.grpc_health_port);
	snprintf(nw, sizeof(nw), "%d", A.n_workers);
	ulog(LOG_DEFAULT, "kepp serving", "version", KEPP_VERSION, "grpc-port", ports,
	     "grpc-health-port", hport, "workers", nw, "tls", F.secure_serving ? "true" : "false",
	     "profile", sched_profile_name(A.sched), NULL);

	event_base_dispatch(A.base);

	for (int i = 0; i < A.n_workers; i++)
		pthread_join(A.workers[i].thread, NULL);
	/* A clean exit, in-flight work drained: the fast path goes with kepp
	 * unless the next kepp is to adopt it. */
	if (A.kern && !KF.keep)
		kern_detach(A.kern);
	app_free(&A, cfg);
	ulog(LOG_DEFAULT, "kepp stopped", NULL);
	return 0;
}
