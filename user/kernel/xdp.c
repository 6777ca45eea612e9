/* XDP on --xdp-iface interfaces, through libxdp's multiprog dispatcher so
 * kepp shares an interface with other XDP programs. libxdp pins the
 * dispatcher under $LIBXDP_BPFFS/xdp (kepp points it at --bpffs); the
 * program stays attached when kepp exits with --kernel-keep (else
 * kern_xdp_detach takes it off). A restarted kepp adopts an
 * attached kepp_xdp that uses its pinned maps, and replaces one that does
 * not (an older layout): with a dispatcher the new program comes before the
 * old one leaves, so the interface is never unprotected. Kernels that
 * refuse BPF_PROG_TYPE_EXT (no dispatcher) get kepp_xdp alone, which libxdp
 * does by itself; the interface is then not shared. */
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>

#include "kepp_xdp.skel.h"
#include "kernel/kern_int.h"
#include "util/log.h"

/* Whether the loaded program |fd| reads the map with id |map_id|. */
static bool prog_uses_map(int fd, uint32_t map_id)
{
	uint32_t ids[32];
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);
	memset(&info, 0, sizeof(info));
	info.nr_map_ids = sizeof(ids) / sizeof(ids[0]);
	info.map_ids = (uint64_t)(uintptr_t)ids;
	if (bpf_obj_get_info_by_fd(fd, &info, &len) < 0)
		return false;
	for (uint32_t i = 0; i < info.nr_map_ids && i < sizeof(ids) / sizeof(ids[0]); i++)
		if (ids[i] == map_id)
			return true;
	return false;
}

static uint32_t map_id(int fd)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);
	memset(&info, 0, sizeof(info));
	return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

static int libxdp_log(enum libxdp_print_level level, const char *fmt, va_list ap)
{
	int v = level == LIBXDP_WARN ? LOG_WARN : LOG_DEBUG;
	if (!log_enabled(v))
		return 0;
	char buf[512];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t n = strlen(buf);
	while (n && buf[n - 1] == '\n')
		buf[--n] = '\0';
	ulog(v, "libxdp", "message", buf, NULL);
	return 0;
}

int kern_xdp_attach(kern *k, const char *iface, char *err, size_t errlen)
{
	if (k->n_xdp >= KERN_MAX_XDP) {
		snprintf(err, errlen, "at most %d --xdp-iface", KERN_MAX_XDP);
		return -E2BIG;
	}
	libxdp_set_print(libxdp_log);
	int ifindex = (int)if_nametoindex(iface);
	if (!ifindex) {
		snprintf(err, errlen, "--xdp-iface %s: no such interface", iface);
		return -ENODEV;
	}
	uint32_t svc_id = map_id(k->svc_fd);

	/* A kepp_xdp already attached: adopt it when it uses our maps, else
	 * (an older layout) replace it. Where the kernel cannot run libxdp's
	 * dispatcher (no BPF_PROG_TYPE_EXT), libxdp attaches one program alone
	 * ("legacy"); the old one must then leave before the new one comes. */
	struct xdp_program *old = NULL;
	bool legacy = false;
	struct xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(ifindex);
	if (!libxdp_get_error(mp) && mp) {
		legacy = xdp_multiprog__is_legacy(mp);
		for (struct xdp_program *p = legacy ? xdp_multiprog__main_prog(mp)
						    : xdp_multiprog__next_prog(NULL, mp);
		     p && !old; p = legacy ? NULL : xdp_multiprog__next_prog(p, mp)) {
			if (strcmp(xdp_program__name(p), "kepp_xdp"))
				continue;
			if (prog_uses_map(xdp_program__fd(p), svc_id)) {
				xdp_multiprog__close(mp);
				ulog(LOG_VERBOSE, "adopted the attached XDP program", "iface", iface,
				     NULL);
				snprintf(k->xdp[k->n_xdp].iface, sizeof(k->xdp[0].iface), "%s", iface);
				k->xdp[k->n_xdp++].ifindex = ifindex;
				return 0;
			}
			old = xdp_program__from_id(xdp_program__id(p));
			if (libxdp_get_error(old))
				old = NULL;
		}
		xdp_multiprog__close(mp);
	}
	if (old && legacy) {
		int dr = xdp_program__detach(old, ifindex, XDP_MODE_UNSPEC, 0);
		xdp_program__close(old);
		old = NULL;
		if (dr) {
			snprintf(err, errlen, "cannot detach the previous kepp_xdp from %s", iface);
			return dr < 0 ? dr : -EBUSY;
		}
	}

	LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = k->root);
	struct kepp_xdp_bpf *skel = kepp_xdp_bpf__open_opts(&oo);
	if (!skel) {
		snprintf(err, errlen, "open kepp_xdp: %s", strerror(errno));
		xdp_program__close(old);
		return -EINVAL;
	}
	int pr = kern_pins_prepare(k, skel->obj);
	if (pr < 0) {
		snprintf(err, errlen, "kepp_xdp's maps: %s", strerror(-pr));
		kepp_xdp_bpf__destroy(skel);
		xdp_program__close(old);
		return pr;
	}
	DECLARE_LIBXDP_OPTS(xdp_program_opts, xo, .obj = skel->obj, .prog_name = "kepp_xdp");
	struct xdp_program *prog = xdp_program__create(&xo);
	int r = (int)libxdp_get_error(prog);
	if (!r)
		r = xdp_program__attach(prog, ifindex, XDP_MODE_UNSPEC, 0);
	if (r) {
		char msg[128];
		libxdp_strerror(r, msg, sizeof(msg));
		snprintf(err, errlen, "attach XDP to %s: %s", iface, msg);
		if (!libxdp_get_error(prog))
			xdp_program__close(prog);
		kepp_xdp_bpf__destroy(skel);
		xdp_program__close(old);
		return r < 0 ? r : -EINVAL;
	}
	if (old) {
		int dr = xdp_program__detach(old, ifindex, XDP_MODE_UNSPEC, 0);
		ulog(dr ? LOG_WARN : LOG_VERBOSE,
		     dr ? "cannot detach the previous kepp_xdp" : "replaced the previous kepp_xdp",
		     "iface", iface, NULL);
		xdp_program__close(old);
	}
	/* The dispatcher and its pins keep the program attached; kepp's
	 * handles go now. */
	xdp_program__close(prog);
	kepp_xdp_bpf__destroy(skel);
	snprintf(k->xdp[k->n_xdp].iface, sizeof(k->xdp[0].iface), "%s", iface);
	k->xdp[k->n_xdp++].ifindex = ifindex;
	ulog(LOG_DEFAULT, "XDP attached", "iface", iface, NULL);
	return 0;
}

int kern_xdp_detach(kern *k)
{
	uint32_t svc_id = map_id(k->svc_fd);
	int ret = 0;
	for (size_t i = 0; i < k->n_xdp; i++) {
		int ifindex = k->xdp[i].ifindex;
		struct xdp_program *p = NULL, *ours = NULL;
		struct xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(ifindex);
		if (libxdp_get_error(mp) || !mp)
			continue; /* nothing attached any more */
		bool legacy = xdp_multiprog__is_legacy(mp);
		for (p = legacy ? xdp_multiprog__main_prog(mp) : xdp_multiprog__next_prog(NULL, mp);
		     p && !ours; p = legacy ? NULL : xdp_multiprog__next_prog(p, mp)) {
			if (strcmp(xdp_program__name(p), "kepp_xdp") ||
			    !prog_uses_map(xdp_program__fd(p), svc_id))
				continue;
			ours = xdp_program__from_id(xdp_program__id(p));
			if (libxdp_get_error(ours))
				ours = NULL;
		}
		xdp_multiprog__close(mp);
		if (!ours)
			continue;
		/* With a dispatcher libxdp removes it (and its pins) with the last
		 * program. */
		int r = xdp_program__detach(ours, ifindex, XDP_MODE_UNSPEC, 0);
		xdp_program__close(ours);
		if (r) {
			ulog(LOG_WARN, "cannot detach kepp_xdp", "iface", k->xdp[i].iface, NULL);
			ret = r < 0 ? r : -EBUSY;
		}
	}
	k->n_xdp = 0;
	return ret;
}
