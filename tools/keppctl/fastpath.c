/* keppctl fastpath: the kernel fast path as the BPF maps pinned under
 * <bpffs>/kepp/ show it, read with libbpf (no kepp process needed: the
 * pins outlive it). Layouts come from bpf/kepp_abi.h.
 *
 * A service's model and pool come from kepp_model_v1. Pins an older kepp
 * left have no such map: the model then comes from the command line
 * (--fastpath VIP:PORT=MODEL) of the kepp process that holds the service
 * map open, found by the map's id in /proc/PID/fdinfo, and is unknown when
 * no process does. */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cjson/cJSON.h>

#include "kepp_abi.h"
#include "kernel/kernel.h"
#include "keppctl.h"

#define MAX_CMDLINE (256u << 10)

typedef struct svc_entry {
	struct kepp_svc_key key;
	struct kepp_svc val;
	char vip[64];
	char model[KERN_MODEL_MAX];
	char pool[KEPP_POOL_MAX];
	bool has_model;
	const char *model_source; /* "map" (kepp_model_v1) or "cmdline" */
	bool has_xdp;
	struct kepp_vip_stats xdp;
	uint64_t aff_clients;
} svc_entry;

typedef struct be_entry {
	struct kepp_addr addr;
	struct kepp_be_stats st;
	bool in_table;
} be_entry;

typedef struct view {
	char dir[4096];
	int pid; /* the kepp holding the maps, 0: none found */
	uint64_t verdicts[KEPP_VERDICTS];
	svc_entry *svcs;
	size_t n_svcs;
	be_entry *bes;
	size_t n_bes;
} view;

static const char *const verdict_names[KEPP_VERDICTS] = {
	[KEPP_PICKED] = "picked",   [KEPP_NO_SERVICE] = "no_service", [KEPP_STALE] = "stale",
	[KEPP_EMPTY] = "empty",     [KEPP_ALL_SHED] = "all_shed",
};

static void fmt_addr(char *out, size_t cap, const struct kepp_addr *a)
{
	kern_format_addr(out, cap, (const uint8_t *)a->ip, ntohs(a->port));
}

/* Opens a pinned map and checks its key and value sizes against
 * kepp_abi.h. -ENOENT when absent; other errors are printed. */
static int open_map(const view *v, const char *name, uint32_t key_size, uint32_t value_size,
		    uint32_t *id)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", v->dir, name);
	int fd = bpf_obj_get(path);
	if (fd < 0) {
		int e = errno;
		if (e != ENOENT)
			fprintf(stderr, "keppctl: %s: %s%s\n", path, strerror(e),
				e == EPERM || e == EACCES ? " (needs root or CAP_BPF)" : "");
		return -e;
	}
	struct bpf_map_info info;
	uint32_t len = sizeof(info);
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) < 0 || info.key_size != key_size ||
	    info.value_size != value_size) {
		fprintf(stderr,
			"keppctl: %s: key/value sizes %u/%u, this keppctl knows %u/%u "
			"(built from another kepp_abi.h)\n",
			path, info.key_size, info.value_size, key_size, value_size);
		close(fd);
		return -EPROTO;
	}
	if (id)
		*id = info.id;
	return fd;
}

static int cmp_svc(const void *a, const void *b)
{
	const svc_entry *x = a, *y = b;
	int c = memcmp(x->key.vip.ip, y->key.vip.ip, sizeof(x->key.vip.ip));
	return c ? c : (int)ntohs(x->key.vip.port) - (int)ntohs(y->key.vip.port);
}

static int cmp_be(const void *a, const void *b)
{
	const be_entry *x = a, *y = b;
	int c = memcmp(x->addr.ip, y->addr.ip, sizeof(x->addr.ip));
	return c ? c : (int)ntohs(x->addr.port) - (int)ntohs(y->addr.port);
}

static int read_services(view *v, int fd)
{
	struct kepp_svc_key key, next;
	void *prev = NULL;
	v->svcs = calloc(KEPP_MAX_SERVICES, sizeof(*v->svcs));
	if (!v->svcs)
		return -ENOMEM;
	while (v->n_svcs < KEPP_MAX_SERVICES && bpf_map_get_next_key(fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		svc_entry *s = &v->svcs[v->n_svcs];
		if (bpf_map_lookup_elem(fd, &key, &s->val) < 0)
			continue; /* replaced or removed meanwhile */
		s->key = key;
		if (s->val.n_backends > KEPP_MAX_BACKENDS)
			s->val.n_backends = KEPP_MAX_BACKENDS;
		fmt_addr(s->vip, sizeof(s->vip), &key.vip);
		v->n_svcs++;
	}
	qsort(v->svcs, v->n_svcs, sizeof(*v->svcs), cmp_svc);
	return 0;
}

static int read_backends(view *v, int fd)
{
	struct kepp_addr key, next;
	void *prev = NULL;
	v->bes = calloc(KEPP_MAX_ENDPOINTS, sizeof(*v->bes));
	if (!v->bes)
		return -ENOMEM;
	while (v->n_bes < KEPP_MAX_ENDPOINTS && bpf_map_get_next_key(fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		be_entry *b = &v->bes[v->n_bes];
		if (bpf_map_lookup_elem(fd, &key, &b->st) < 0)
			continue;
		b->addr = key;
		v->n_bes++;
	}
	qsort(v->bes, v->n_bes, sizeof(*v->bes), cmp_be);
	return 0;
}

static be_entry *find_be(view *v, const struct kepp_addr *a)
{
	for (size_t i = 0; i < v->n_bes; i++)
		if (!memcmp(v->bes[i].addr.ip, a->ip, sizeof(a->ip)) && v->bes[i].addr.port == a->port)
			return &v->bes[i];
	return NULL;
}

static int read_verdicts(view *v, int fd, int ncpu)
{
	uint64_t *per = calloc((size_t)ncpu, sizeof(*per));
	if (!per)
		return -ENOMEM;
	for (uint32_t k = 0; k < KEPP_VERDICTS; k++) {
		if (bpf_map_lookup_elem(fd, &k, per) < 0)
			continue;
		for (int c = 0; c < ncpu; c++)
			v->verdicts[k] += per[c];
	}
	free(per);
	return 0;
}

static int read_xdp(view *v, int fd, int ncpu)
{
	struct kepp_vip_stats *per = calloc((size_t)ncpu, sizeof(*per));
	if (!per)
		return -ENOMEM;
	for (size_t i = 0; i < v->n_svcs; i++) {
		svc_entry *s = &v->svcs[i];
		if (bpf_map_lookup_elem(fd, &s->key, per) < 0)
			continue;
		s->has_xdp = true;
		for (int c = 0; c < ncpu; c++) {
			s->xdp.packets += per[c].packets;
			s->xdp.bytes += per[c].bytes;
			s->xdp.syn_shed += per[c].syn_shed;
		}
	}
	free(per);
	return 0;
}

/* Model and pool of every service from kepp_model_v1. */
static void read_meta(view *v, int fd)
{
	for (size_t i = 0; i < v->n_svcs; i++) {
		svc_entry *s = &v->svcs[i];
		struct kepp_svc_meta m;
		if (bpf_map_lookup_elem(fd, &s->key, &m) < 0)
			continue;
		/* Bounded: the map's strings need not be NUL-terminated. */
		snprintf(s->model, sizeof(s->model), "%.*s", (int)sizeof(m.model), m.model);
		snprintf(s->pool, sizeof(s->pool), "%.*s", (int)sizeof(m.pool), m.pool);
		s->has_model = true;
		s->model_source = "map";
	}
}

/* Clients (cgroups) with an affinity entry, per service. */
static void read_affinity(view *v, int fd)
{
	struct kepp_aff_key key, next;
	void *prev = NULL;
	for (int n = 0; n < 65536 && bpf_map_get_next_key(fd, prev, &next) == 0; n++) {
		key = next;
		prev = &key;
		for (size_t i = 0; i < v->n_svcs; i++)
			if (v->svcs[i].val.id == key.svc_id)
				v->svcs[i].aff_clients++;
	}
}

/* The whole of a small /proc file, NUL-terminated; NULL when unreadable. */
static char *slurp(const char *path, size_t max, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	char *b = malloc(max + 1);
	size_t n = 0;
	while (b && n < max) {
		ssize_t r = read(fd, b + n, max - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (b) {
		b[n] = '\0';
		*len = n;
	}
	return b;
}

static bool holds_map(int pid, uint32_t map_id)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fdinfo", pid);
	DIR *d = opendir(path);
	if (!d)
		return false;
	bool found = false;
	struct dirent *e;
	while (!found && (e = readdir(d))) {
		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		char fp[320];
		snprintf(fp, sizeof(fp), "/proc/%d/fdinfo/%s", pid, e->d_name);
		size_t n;
		char *b = slurp(fp, 4096, &n);
		const char *m = b ? strstr(b, "\nmap_id:\t") : NULL;
		if (m && strtoul(m + 9, NULL, 10) == map_id)
			found = true;
		free(b);
	}
	closedir(d);
	return found;
}

/* The value of --fastpath in argv element |a| (|next| is the element after
 * it), or NULL. kepp takes Go flag syntax: -name or --name, =value or the
 * next argument. */
static const char *fastpath_arg(const char *a, const char *next)
{
	if (a[0] != '-')
		return NULL;
	a += a[1] == '-' ? 2 : 1;
	if (strncmp(a, "fastpath", 8))
		return NULL;
	if (a[8] == '=')
		return a + 9;
	return a[8] == '\0' ? next : NULL;
}

/* Finds the kepp process that holds the service map |map_id| and takes the
 * models the map kepp_model_v1 did not give from its --fastpath flags. */
static void find_models(view *v, uint32_t map_id)
{
	DIR *d = opendir("/proc");
	if (!d)
		return;
	int self = getpid();
	struct dirent *e;
	while (!v->pid && (e = readdir(d))) {
		int pid = atoi(e->d_name);
		if (pid <= 0 || pid == self)
			continue;
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
		size_t n;
		char *cl = slurp(path, MAX_CMDLINE, &n);
		if (!cl)
			continue;
		if (!memmem(cl, n, "fastpath", 8) || !holds_map(pid, map_id)) {
			free(cl);
			continue;
		}
		v->pid = pid;
		/* argv is NUL-separated; walk it pairwise. */
		for (size_t off = 0; off < n;) {
			const char *a = cl + off;
			size_t al = strlen(a);
			const char *next = off + al + 1 < n ? a + al + 1 : NULL;
			const char *spec = fastpath_arg(a, next);
			kern_service ks;
			char err[128];
			if (spec && kern_service_parse(spec, &ks, err, sizeof(err)) == 0) {
				for (size_t i = 0; i < v->n_svcs; i++) {
					svc_entry *s = &v->svcs[i];
					if (!s->has_model && !memcmp(s->key.vip.ip, ks.addr, 16) &&
					    ntohs(s->key.vip.port) == ks.port) {
						snprintf(s->model, sizeof(s->model), "%s", ks.model);
						s->has_model = true;
						s->model_source = "cmdline";
					}
				}
			}
			off += al + 1;
		}
		free(cl);
	}
	closedir(d);
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double age_ms(const svc_entry *s, int64_t now)
{
	int64_t age = now - (int64_t)s->val.published_ns;
	return age > 0 ? (double)age / 1e6 : 0;
}

static void flag_names(uint32_t flags, char *out, size_t cap)
{
	snprintf(out, cap, "%s%s%s%s", flags & KEPP_SVC_SHEDDABLE ? "sheddable," : "",
		 flags & KEPP_SVC_SATURATED ? "saturated," : "",
		 flags & KEPP_SVC_AFFINITY ? "affinity," : "", flags ? "" : "-");
	size_t l = strlen(out);
	if (l && out[l - 1] == ',')
		out[l - 1] = '\0';
}

static cJSON *be_json(const char *addr, const struct kepp_be_stats *st)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "addr", addr);
	cJSON_AddNumberToObject(o, "inflight", st ? (double)st->inflight : 0);
	cJSON_AddNumberToObject(o, "connects", st ? (double)st->connects : 0);
	cJSON_AddNumberToObject(o, "closes", st ? (double)st->closes : 0);
	cJSON_AddNumberToObject(o, "srtt_us", st ? st->srtt_us : 0);
	return o;
}

static int print_json(view *v, int64_t now)
{
	cJSON *root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "pins", v->dir);
	if (v->pid)
		cJSON_AddNumberToObject(root, "kepp_pid", v->pid);
	else
		cJSON_AddNullToObject(root, "kepp_pid");
	cJSON *vd = cJSON_AddObjectToObject(root, "verdicts");
	for (int k = 0; k < KEPP_VERDICTS; k++)
		cJSON_AddNumberToObject(vd, verdict_names[k], (double)v->verdicts[k]);
	cJSON *arr = cJSON_AddArrayToObject(root, "services");
	for (size_t i = 0; i < v->n_svcs; i++) {
		const svc_entry *s = &v->svcs[i];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddItemToArray(arr, o);
		cJSON_AddStringToObject(o, "vip", s->vip);
		if (s->has_model) {
			cJSON_AddStringToObject(o, "model", s->model);
			cJSON_AddStringToObject(o, "model_source", s->model_source);
		} else {
			cJSON_AddNullToObject(o, "model");
			cJSON_AddNullToObject(o, "model_source");
		}
		if (s->pool[0])
			cJSON_AddStringToObject(o, "pool", s->pool);
		else
			cJSON_AddNullToObject(o, "pool");
		cJSON_AddNumberToObject(o, "id", s->val.id);
		cJSON_AddNumberToObject(o, "age_ms", age_ms(s, now));
		cJSON_AddNumberToObject(o, "max_age_ms", (double)s->val.max_age_ns / 1e6);
		cJSON_AddBoolToObject(o, "fresh", age_ms(s, now) * 1e6 <= (double)s->val.max_age_ns);
		cJSON *fl = cJSON_AddArrayToObject(o, "flags");
		if (s->val.flags & KEPP_SVC_SHEDDABLE)
			cJSON_AddItemToArray(fl, cJSON_CreateString("sheddable"));
		if (s->val.flags & KEPP_SVC_SATURATED)
			cJSON_AddItemToArray(fl, cJSON_CreateString("saturated"));
		if (s->val.flags & KEPP_SVC_AFFINITY)
			cJSON_AddItemToArray(fl, cJSON_CreateString("affinity"));
		cJSON_AddNumberToObject(o, "affinity_pct", s->val.affinity_pct);
		cJSON_AddNumberToObject(o, "affinity_clients", (double)s->aff_clients);
		cJSON *bes = cJSON_AddArrayToObject(o, "backends");
		for (uint32_t b = 0; b < s->val.n_backends; b++) {
			char addr[64];
			fmt_addr(addr, sizeof(addr), &s->val.be[b].addr);
			be_entry *live = find_be(v, &s->val.be[b].addr);
			cJSON *bo = be_json(addr, live ? &live->st : NULL);
			cJSON_AddNumberToObject(bo, "weight", s->val.be[b].weight);
			cJSON_AddNumberToObject(bo, "base_inflight", s->val.be[b].inflight);
			cJSON_AddItemToArray(bes, bo);
		}
		if (s->has_xdp) {
			cJSON *x = cJSON_AddObjectToObject(o, "xdp");
			cJSON_AddNumberToObject(x, "packets", (double)s->xdp.packets);
			cJSON_AddNumberToObject(x, "bytes", (double)s->xdp.bytes);
			cJSON_AddNumberToObject(x, "syn_shed", (double)s->xdp.syn_shed);
		} else {
			cJSON_AddNullToObject(o, "xdp");
		}
	}
	cJSON *other = cJSON_AddArrayToObject(root, "other_backends");
	for (size_t i = 0; i < v->n_bes; i++) {
		if (v->bes[i].in_table)
			continue;
		char addr[64];
		fmt_addr(addr, sizeof(addr), &v->bes[i].addr);
		cJSON_AddItemToArray(other, be_json(addr, &v->bes[i].st));
	}
	char *text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (!text) {
		fprintf(stderr, "keppctl: out of memory\n");
		return 1;
	}
	printf("%s\n", text);
	free(text);
	return 0;
}

static void print_be_row(const char *addr, const char *weight, const char *base,
			 const struct kepp_be_stats *st)
{
	printf("  %-40s %7s %5s %9lld %10llu %10llu %8u\n", addr, weight, base,
	       st ? (long long)st->inflight : 0LL, st ? (unsigned long long)st->connects : 0ULL,
	       st ? (unsigned long long)st->closes : 0ULL, st ? st->srtt_us : 0u);
}

static void print_be_head(void)
{
	printf("  %-40s %7s %5s %9s %10s %10s %8s\n", "BACKEND", "WEIGHT", "BASE", "IN-FLIGHT",
	       "CONNECTS", "CLOSES", "SRTT-US");
}

static int print_text(view *v, int64_t now)
{
	printf("fast path pinned under %s", v->dir);
	if (v->pid)
		printf(" (kepp pid %d)\n", v->pid);
	else
		printf(" (no kepp process holds it)\n");
	printf("connect(): %llu steered; declined: %llu no service, %llu stale, %llu empty, "
	       "%llu all shed\n",
	       (unsigned long long)v->verdicts[KEPP_PICKED],
	       (unsigned long long)v->verdicts[KEPP_NO_SERVICE],
	       (unsigned long long)v->verdicts[KEPP_STALE],
	       (unsigned long long)v->verdicts[KEPP_EMPTY],
	       (unsigned long long)v->verdicts[KEPP_ALL_SHED]);
	if (!v->n_svcs)
		printf("\nno service published\n");
	for (size_t i = 0; i < v->n_svcs; i++) {
		const svc_entry *s = &v->svcs[i];
		char flags[64];
		flag_names(s->val.flags, flags, sizeof(flags));
		double age = age_ms(s, now), max = (double)s->val.max_age_ns / 1e6;
		printf("\n%s  model %s  id %u  table %.0f ms old (%s after %.0f ms)  flags %s", s->vip,
		       s->has_model ? s->model : "?", s->val.id, age,
		       age <= max ? "fresh, stale" : "STALE", max, flags);
		if (s->pool[0])
			printf("  pool %s", s->pool);
		if (s->val.flags & KEPP_SVC_AFFINITY)
			printf("  affinity %u%%, %llu clients remembered", s->val.affinity_pct,
			       (unsigned long long)s->aff_clients);
		printf("\n");
		if (s->has_xdp)
			printf("  XDP: %llu packets, %llu bytes, %llu SYNs shed\n",
			       (unsigned long long)s->xdp.packets, (unsigned long long)s->xdp.bytes,
			       (unsigned long long)s->xdp.syn_shed);
		if (!s->val.n_backends) {
			printf("  no backend (connect declines)\n");
			continue;
		}
		print_be_head();
		for (uint32_t b = 0; b < s->val.n_backends; b++) {
			char addr[64], w[16], base[16];
			fmt_addr(addr, sizeof(addr), &s->val.be[b].addr);
			snprintf(w, sizeof(w), "%u", s->val.be[b].weight);
			snprintf(base, sizeof(base), "%u", s->val.be[b].inflight);
			be_entry *live = find_be(v, &s->val.be[b].addr);
			print_be_row(addr, w, base, live ? &live->st : NULL);
		}
	}
	bool head = false;
	for (size_t i = 0; i < v->n_bes; i++) {
		if (v->bes[i].in_table)
			continue;
		if (!head) {
			printf("\nbackends in no table (left the pool, or another family's)\n");
			print_be_head();
			head = true;
		}
		char addr[64];
		fmt_addr(addr, sizeof(addr), &v->bes[i].addr);
		print_be_row(addr, "-", "-", &v->bes[i].st);
	}
	return 0;
}

int kctl_fastpath(int argc, char **argv)
{
	const char *bpffs = "/sys/fs/bpf";
	bool json = false;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--bpffs") && i + 1 < argc) {
			bpffs = argv[++i];
		} else {
			fprintf(stderr, "keppctl: fastpath takes [--bpffs DIR] [--json], not %s\n",
				argv[i]);
			return 2;
		}
	}
	static view v;
	snprintf(v.dir, sizeof(v.dir), "%s/kepp", bpffs);
	int ncpu = libbpf_num_possible_cpus();
	if (ncpu <= 0) {
		fprintf(stderr, "keppctl: cannot count the possible CPUs\n");
		return 1;
	}
	uint32_t svc_id = 0;
	int svc_fd = open_map(&v, "kepp_svc_v1", sizeof(struct kepp_svc_key),
			      sizeof(struct kepp_svc), &svc_id);
	if (svc_fd == -ENOENT)
		fprintf(stderr, "keppctl: no fast path pinned under %s (kepp --kernel with "
				"--fastpath and --bpffs %s)\n",
			v.dir, bpffs);
	if (svc_fd < 0)
		return 1;
	int be_fd = open_map(&v, "kepp_be_v1", sizeof(struct kepp_addr),
			     sizeof(struct kepp_be_stats), NULL);
	int vd_fd = open_map(&v, "kepp_verdict_v1", sizeof(uint32_t), sizeof(uint64_t), NULL);
	int rc = 1;
	if (be_fd < 0 || vd_fd < 0) {
		if (be_fd == -ENOENT || vd_fd == -ENOENT)
			fprintf(stderr, "keppctl: %s holds kepp_svc_v1 but not kepp_be_v1 and "
					"kepp_verdict_v1\n",
				v.dir);
		goto out;
	}
	if (read_services(&v, svc_fd) < 0 || read_backends(&v, be_fd) < 0 ||
	    read_verdicts(&v, vd_fd, ncpu) < 0) {
		fprintf(stderr, "keppctl: out of memory\n");
		goto out;
	}
	/* XDP counters and affinity exist with --xdp-iface and the affinity margin. */
	int x_fd = open_map(&v, "kepp_vip_v1", sizeof(struct kepp_svc_key),
			    sizeof(struct kepp_vip_stats), NULL);
	if (x_fd >= 0) {
		int r = read_xdp(&v, x_fd, ncpu);
		close(x_fd);
		if (r < 0)
			goto out;
	}
	int a_fd = open_map(&v, "kepp_aff_v1", sizeof(struct kepp_aff_key),
			    sizeof(struct kepp_aff_val), NULL);
	if (a_fd >= 0) {
		read_affinity(&v, a_fd);
		close(a_fd);
	}
	for (size_t i = 0; i < v.n_svcs; i++)
		for (uint32_t b = 0; b < v.svcs[i].val.n_backends; b++) {
			be_entry *e = find_be(&v, &v.svcs[i].val.be[b].addr);
			if (e)
				e->in_table = true;
		}
	int m_fd = open_map(&v, "kepp_model_v1", sizeof(struct kepp_svc_key),
			    sizeof(struct kepp_svc_meta), NULL);
	if (m_fd >= 0) {
		read_meta(&v, m_fd);
		close(m_fd);
	}
	find_models(&v, svc_id);
	int64_t now = mono_ns();
	rc = json ? print_json(&v, now) : print_text(&v, now);
out:
	close(svc_fd);
	if (be_fd >= 0)
		close(be_fd);
	if (vd_fd >= 0)
		close(vd_fd);
	free(v.svcs);
	free(v.bes);
	return rc;
}
