/* Loader: bpffs, the BPF objects (maps pinned by name under <bpffs>/kepp/),
 * and cgroup links pinned under <bpffs>/kepp/links/. A pinned link found at
 * start-up is adopted: its program is replaced in place with
 * bpf_link__update_program, so connections never see a gap between the old
 * kepp and the new one. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <event2/event.h>

#include "kepp_sklookup.skel.h"
#include "kepp_sock.skel.h"
#include "kepp_sockops.skel.h"
#include "kernel/kern_int.h"
#include "util/log.h"

#define BPF_FS_MAGIC_ 0xcafe4a11

const char *const kern_link_names[KL_COUNT] = {
	[KL_CONNECT4] = "kepp_connect4", [KL_CONNECT6] = "kepp_connect6",
	[KL_GETPEER4] = "kepp_getpeer4", [KL_GETPEER6] = "kepp_getpeer6",
	[KL_SOCKOPS] = "kepp_sockops", [KL_SKLOOKUP] = "kepp_sk_lookup",
};

int64_t kern_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* libbpf's own messages: warnings are kepp warnings, the rest is debug. */
static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	int v = level == LIBBPF_WARN ? LOG_WARN : LOG_DEBUG;
	if (!log_enabled(v))
		return 0;
	char buf[512];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t n = strlen(buf);
	while (n && buf[n - 1] == '\n')
		buf[--n] = '\0';
	ulog(v, "libbpf", "message", buf, NULL);
	return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int ensure_bpffs(const char *path, char *err, size_t errlen)
{
	struct statfs sf;
	if (statfs(path, &sf) == 0 && sf.f_type == BPF_FS_MAGIC_)
		return 0;
	int r = mkdir_p(path, 0700);
	if (r == 0 && mount("bpf", path, "bpf", 0, "mode=0700") < 0)
		r = -errno;
	if (r < 0) {
		snprintf(err, errlen, "no bpffs at %s and cannot mount one: %s", path, strerror(-r));
		return r;
	}
	ulog(LOG_DEFAULT, "mounted bpffs", "path", path, NULL);
	return 0;
}

/* The first cgroup2 mount in /proc/mounts. */
static int cgroup2_root(char *out, size_t cap)
{
	FILE *f = fopen("/proc/mounts", "re");
	if (!f)
		return -errno;
	char dev[256], dir[PATH_MAX], type[64];
	int r = -ENOENT;
	while (fscanf(f, "%255s %4095s %63s %*s %*d %*d", dev, dir, type) == 3) {
		if (!strcmp(type, "cgroup2")) {
			snprintf(out, cap, "%s", dir);
			r = 0;
			break;
		}
	}
	fclose(f);
	return r;
}

/* Whether pinned link |info| is attached where kepp wants it: the cgroup or
 * the network namespace with inode |id|. */
static bool link_target_is(const struct bpf_link_info *info, enum bpf_link_type type, uint64_t id)
{
	if (info->type != type)
		return false;
	if (type == BPF_LINK_TYPE_CGROUP)
		return info->cgroup.cgroup_id == id;
	return info->netns.netns_ino == id;
}

/* Adopts the link pinned at |path| when it is attached to the cgroup or
 * network namespace |id| (an inode number), else attaches |prog| to
 * |target_fd| and pins the new link. */
static struct bpf_link *attach_pinned(struct bpf_program *prog, const char *path,
				      enum bpf_link_type type, int target_fd, uint64_t id,
				      char *err, size_t errlen)
{
	struct bpf_link *l = access(path, F_OK) == 0 ? bpf_link__open(path) : NULL;
	if (l) {
		struct bpf_link_info info;
		uint32_t len = sizeof(info);
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(bpf_link__fd(l), &info, &len) == 0 &&
		    link_target_is(&info, type, id) && bpf_link__update_program(l, prog) == 0) {
			ulog(LOG_VERBOSE, "adopted a pinned BPF link", "path", path, NULL);
			return l;
		}
		/* Another cgroup or namespace (or a dead one): replace it. */
		bpf_link__unpin(l);
		bpf_link__destroy(l);
		unlink(path);
	}
	l = type == BPF_LINK_TYPE_CGROUP ? bpf_program__attach_cgroup(prog, target_fd)
					 : bpf_program__attach_netns(prog, target_fd);
	if (!l) {
		int e = errno;
		snprintf(err, errlen, "attach %s: %s", bpf_program__name(prog), strerror(e));
		return NULL;
	}
	int r = bpf_link__pin(l, path);
	if (r < 0) {
		snprintf(err, errlen, "pin %s: %s", path, strerror(-r));
		bpf_link__destroy(l);
		return NULL;
	}
	return l;
}

static void kern_tick(evutil_socket_t fd, short what, void *arg)
{
	kern *k = arg;
	const store_snapshot *snap = store_acquire(k->store);
	if (snap) {
		kern_publish(k, snap);
		store_release(snap);
	}
	int64_t now = kern_now_ns();
	if (now - k->last_log_ns >= 5000000000LL) {
		k->last_log_ns = now;
		kern_log_stats(k);
	}
}

size_t kern_adopted_services(kern *k, kern_service *out, size_t cap)
{
	struct kepp_svc_key key, next, mine[KERN_MAX_SERVICES];
	struct kepp_svc_meta meta;
	for (size_t i = 0; i < k->n_svcs; i++)
		kern_svc_key(&k->svcs[i], &mine[i]);
	size_t n = 0;
	void *prev = NULL;
	while (n < cap && bpf_map_get_next_key(k->svc_fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		bool known = false;
		for (size_t i = 0; i < k->n_svcs; i++)
			known |= !memcmp(&mine[i], &next, sizeof(next));
		if (known || bpf_map_lookup_elem(k->model_fd, &next, &meta) < 0 || !meta.model[0])
			continue;
		kern_service *s = &out[n++];
		memset(s, 0, sizeof(*s));
		memcpy(s->addr, next.vip.ip, sizeof(s->addr));
		s->port = ntohs(next.vip.port);
		static const uint8_t v4[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		s->v6 = memcmp(s->addr, v4, sizeof(v4)) != 0;
		kern_format_addr(s->vip, sizeof(s->vip), s->addr, s->port);
		snprintf(s->model, sizeof(s->model), "%.*s", (int)sizeof(meta.model), meta.model);
	}
	return n;
}

kern *kern_open(const kern_opts *o, char *err, size_t errlen)
{
	kern *k = calloc(1, sizeof(*k));
	if (!k) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	k->cgroup_fd = -1;
	k->netns_fd = -1;
	arena_init(&k->mem, 16384);
	if (o->n_services > KERN_MAX_SERVICES) {
		snprintf(err, errlen, "at most %d fast-path services", KERN_MAX_SERVICES);
		goto fail;
	}
	memcpy(k->svcs, o->services, o->n_services * sizeof(*k->svcs));
	k->n_svcs = o->n_services;
	k->max_age_ns = (o->max_age_ms > 0 ? o->max_age_ms : 1000) * 1000000LL;
	k->affinity_pct = o->affinity_pct;
	k->sched = o->sched;
	k->store = o->store;
	libbpf_set_print(libbpf_log);

	const char *bpffs = o->bpffs && *o->bpffs ? o->bpffs : "/sys/fs/bpf";
	if (ensure_bpffs(bpffs, err, errlen) < 0)
		goto fail;
	char links[PATH_MAX + 16];
	snprintf(k->root, sizeof(k->root), "%s/kepp", bpffs);
	snprintf(links, sizeof(links), "%s/links", k->root);
	int r = mkdir_p(links, 0700);
	if (r < 0) {
		snprintf(err, errlen, "mkdir %s: %s", links, strerror(-r));
		goto fail;
	}

	/* Pinned maps of another layout are re-created before libbpf, which
	 * would refuse them, reuses the rest. */
	LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = k->root);
	k->sock = kepp_sock_bpf__open_opts(&oo);
	if (!k->sock || (r = kern_pins_prepare(k, k->sock->obj)) < 0 ||
	    (r = kepp_sock_bpf__load(k->sock)) < 0) {
		snprintf(err, errlen, "load kepp_sock: %s", strerror(k->sock ? -r : errno));
		goto fail;
	}
	k->sockops = kepp_sockops_bpf__open_opts(&oo);
	if (!k->sockops || (r = kern_pins_prepare(k, k->sockops->obj)) < 0 ||
	    (r = kepp_sockops_bpf__load(k->sockops)) < 0) {
		snprintf(err, errlen, "load kepp_sockops: %s", strerror(k->sockops ? -r : errno));
		goto fail;
	}
	k->sklookup = kepp_sklookup_bpf__open_opts(&oo);
	if (!k->sklookup || (r = kern_pins_prepare(k, k->sklookup->obj)) < 0 ||
	    (r = kepp_sklookup_bpf__load(k->sklookup)) < 0) {
		snprintf(err, errlen, "load kepp_sklookup: %s", strerror(k->sklookup ? -r : errno));
		goto fail;
	}

	char cg[PATH_MAX];
	if (o->cgroup && *o->cgroup)
		snprintf(cg, sizeof(cg), "%s", o->cgroup);
	else if (cgroup2_root(cg, sizeof(cg)) < 0) {
		snprintf(err, errlen, "no cgroup2 mount in /proc/mounts (give --cgroup)");
		goto fail;
	}
	struct stat st;
	k->cgroup_fd = open(cg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (k->cgroup_fd < 0 || fstat(k->cgroup_fd, &st) < 0) {
		snprintf(err, errlen, "cgroup %s: %s", cg, strerror(errno));
		goto fail;
	}
	/* sk_lookup runs in the network namespace kepp lives in. */
	struct stat ns_st;
	k->netns_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (k->netns_fd < 0 || fstat(k->netns_fd, &ns_st) < 0) {
		snprintf(err, errlen, "/proc/self/ns/net: %s", strerror(errno));
		goto fail;
	}
	struct bpf_program *progs[KL_COUNT] = {
		[KL_CONNECT4] = k->sock->progs.kepp_connect4,
		[KL_CONNECT6] = k->sock->progs.kepp_connect6,
		[KL_GETPEER4] = k->sock->progs.kepp_getpeer4,
		[KL_GETPEER6] = k->sock->progs.kepp_getpeer6,
		[KL_SOCKOPS] = k->sockops->progs.kepp_sockops,
		[KL_SKLOOKUP] = k->sklookup->progs.kepp_sk_lookup,
	};
	for (int i = 0; i < KL_COUNT; i++) {
		char path[PATH_MAX + 64];
		snprintf(path, sizeof(path), "%s/%s", links, kern_link_names[i]);
		/* A cgroup2 folder's inode number is its cgroup id; a network
		 * namespace is known by its inode too. */
		if (i == KL_SKLOOKUP)
			k->links[i] = attach_pinned(progs[i], path, BPF_LINK_TYPE_NETNS, k->netns_fd,
						    (uint64_t)ns_st.st_ino, err, errlen);
		else
			k->links[i] = attach_pinned(progs[i], path, BPF_LINK_TYPE_CGROUP,
						    k->cgroup_fd, (uint64_t)st.st_ino, err, errlen);
		if (!k->links[i])
			goto fail;
	}
	/* Every program now runs this build's code: what another version left
	 * and this one does not use goes. */
	kern_pins_prune(k);
	k->svc_fd = bpf_map__fd(k->sock->maps.kepp_svc_v1);
	k->model_fd = bpf_map__fd(k->sock->maps.kepp_model_v1);
	k->be_fd = bpf_map__fd(k->sock->maps.kepp_be_v1);
	k->verdict_fd = bpf_map__fd(k->sock->maps.kepp_verdict_v1);
	k->fallback_fd = bpf_map__fd(k->sklookup->maps.kepp_fb_v1);
	/* Without the drain the fast path still works: say so and go on. */
	if (o->drain_ms > 0) {
		char derr[256];
		if (kern_drain_open(k, o->drain_ms, derr, sizeof(derr)) < 0)
			ulog(LOG_WARN, "fast-path connections to pods that leave the pool are not "
				       "drained (--fastpath-drain=0 silences this)",
			     "error", derr, NULL);
	}
	k->vip_fd = bpf_map__fd(k->sock->maps.kepp_vip_v1);
	if (!o->keep_unknown_services)
		kern_drop_unknown_services(k);

	/* libxdp pins its dispatcher in the same bpffs as kepp's maps. */
	setenv("LIBXDP_BPFFS", bpffs, 0);
	for (size_t i = 0; i < o->n_xdp_ifaces; i++)
		if (kern_xdp_attach(k, o->xdp_ifaces[i], err, errlen) < 0)
			goto fail;

	if (o->base && o->store) {
		int64_t us = k->max_age_ns / 4000;
		if (us < 20000)
			us = 20000;
		struct timeval tv = {us / 1000000, us % 1000000};
		k->tick = event_new(o->base, -1, EV_PERSIST, kern_tick, k);
		if (!k->tick || event_add(k->tick, &tv) < 0) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	k->last_log_ns = kern_now_ns();
	char ncg[32];
	snprintf(ncg, sizeof(ncg), "%zu", k->n_svcs);
	ulog(LOG_DEFAULT, "kernel fast path loaded", "pins", k->root, "cgroup", cg, "services",
	     ncg, NULL);
	return k;
fail:
	kern_close(k);
	return NULL;
}

int kern_set_fallback(kern *k, int fd4, int fd6)
{
	int fds[KEPP_FB_SLOTS] = {[KEPP_FB_INET] = fd4, [KEPP_FB_INET6] = fd6};
	for (uint32_t slot = 0; slot < KEPP_FB_SLOTS; slot++) {
		uint64_t fd = (uint64_t)fds[slot];
		/* A previous kepp's sockets closed with it: nothing to remove. */
		if (fds[slot] >= 0 && bpf_map_update_elem(k->fallback_fd, &slot, &fd, BPF_ANY) < 0)
			return -errno;
	}
	return 0;
}

void kern_close(kern *k)
{
	if (!k)
		return;
	if (k->tick)
		event_free(k->tick);
	/* Closing a pinned link's fd keeps it attached: the pin holds it. */
	for (int i = 0; i < KL_COUNT; i++)
		bpf_link__destroy(k->links[i]);
	kern_drain_close(k);
	kepp_sklookup_bpf__destroy(k->sklookup);
	kepp_sockops_bpf__destroy(k->sockops);
	kepp_sock_bpf__destroy(k->sock);
	if (k->cgroup_fd >= 0)
		close(k->cgroup_fd);
	if (k->netns_fd >= 0)
		close(k->netns_fd);
	arena_free(&k->mem);
	free(k->bases);
	free(k);
}
