/* Pins: what a kepp finds under <bpffs>/kepp/ when it starts, and what it
 * leaves when it stops.
 *
 * At start-up every pinned map is checked against this build's definition
 * before libbpf reuses it: type, key and value sizes, flags, max_entries and
 * the BTF layout of key and value (a field moved within the same size is
 * still another layout). A map an older or newer kepp left with another
 * layout is re-created (its pin removed, libbpf makes and pins a new one;
 * the old map lives on in the old programs until their links are updated),
 * never misread and never a failed start. Once the links are attached, pins
 * this build does not know (maps or links of another version) are removed.
 *
 * On a clean exit without --kernel-keep, kern_detach takes everything down:
 * links detached (BPF_LINK_DETACH, so no other holder keeps them attached),
 * XDP detached through libxdp, the drain iterator closed, every pin removed
 * and the folders with them. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "kepp_sock.skel.h"
#include "kernel/kern_int.h"
#include "util/log.h"

/* Skips typedefs and qualifiers; NULL for a bad id. */
static const struct btf_type *resolve(const struct btf *btf, uint32_t *id)
{
	for (int i = 0; i < 32; i++) {
		const struct btf_type *t = btf__type_by_id(btf, *id);
		if (!t)
			return NULL;
		switch (btf_kind(t)) {
		case BTF_KIND_TYPEDEF:
		case BTF_KIND_CONST:
		case BTF_KIND_VOLATILE:
		case BTF_KIND_RESTRICT:
		case BTF_KIND_TYPE_TAG:
			*id = t->type;
			continue;
		default:
			return t;
		}
	}
	return NULL;
}

static bool same_name(const struct btf *a, uint32_t ao, const struct btf *b, uint32_t bo)
{
	const char *x = btf__name_by_offset(a, ao), *y = btf__name_by_offset(b, bo);
	return !strcmp(x ? x : "", y ? y : "");
}

bool kern_btf_same_layout(const struct btf *a, uint32_t aid, const struct btf *b, uint32_t bid,
			  int depth)
{
	if (depth > 8)
		return false; /* deeper than any kepp type: assume it changed */
	const struct btf_type *x = resolve(a, &aid), *y = resolve(b, &bid);
	if (!x || !y || btf_kind(x) != btf_kind(y))
		return false;
	switch (btf_kind(x)) {
	case BTF_KIND_INT:
		return x->size == y->size && btf_int_encoding(x) == btf_int_encoding(y) &&
		       btf_int_bits(x) == btf_int_bits(y) && btf_int_offset(x) == btf_int_offset(y);
	case BTF_KIND_ENUM:
	case BTF_KIND_ENUM64:
	case BTF_KIND_FLOAT:
		return x->size == y->size;
	case BTF_KIND_PTR:
		return true;
	case BTF_KIND_ARRAY:
		return btf_array(x)->nelems == btf_array(y)->nelems &&
		       kern_btf_same_layout(a, btf_array(x)->type, b, btf_array(y)->type, depth + 1);
	case BTF_KIND_STRUCT:
	case BTF_KIND_UNION: {
		if (x->size != y->size || btf_vlen(x) != btf_vlen(y))
			return false;
		const struct btf_member *mx = btf_members(x), *my = btf_members(y);
		for (uint16_t i = 0; i < btf_vlen(x); i++) {
			if (!same_name(a, mx[i].name_off, b, my[i].name_off) ||
			    btf_member_bit_offset(x, i) != btf_member_bit_offset(y, i) ||
			    btf_member_bitfield_size(x, i) != btf_member_bitfield_size(y, i) ||
			    !kern_btf_same_layout(a, mx[i].type, b, my[i].type, depth + 1))
				return false;
		}
		return true;
	}
	default:
		return false;
	}
}

bool kern_map_mismatch(const kern_map_def *want, const kern_map_def *have, char *why,
		       size_t cap)
{
	if (want->type != have->type) {
		snprintf(why, cap, "map type %u, this kepp uses %u", have->type, want->type);
		return true;
	}
	if (want->key_size != have->key_size || want->value_size != have->value_size) {
		snprintf(why, cap, "key/value size %u/%u, this kepp uses %u/%u", have->key_size,
			 have->value_size, want->key_size, want->value_size);
		return true;
	}
	if (want->max_entries != have->max_entries) {
		snprintf(why, cap, "max_entries %u, this kepp uses %u", have->max_entries,
			 want->max_entries);
		return true;
	}
	if (want->flags != have->flags) {
		snprintf(why, cap, "flags 0x%x, this kepp uses 0x%x", have->flags, want->flags);
		return true;
	}
	/* Without BTF on either side the sizes are all there is to compare. */
	if (!want->btf || !have->btf)
		return false;
	if (want->key_type && have->key_type &&
	    !kern_btf_same_layout(want->btf, want->key_type, have->btf, have->key_type, 0)) {
		snprintf(why, cap, "the key's fields differ (same size, another layout)");
		return true;
	}
	if (want->value_type && have->value_type &&
	    !kern_btf_same_layout(want->btf, want->value_type, have->btf, have->value_type, 0)) {
		snprintf(why, cap, "the value's fields differ (same size, another layout)");
		return true;
	}
	return false;
}

/* Whether the map pinned at |path| can serve as |m|; *why says why not. */
static bool pin_fits(struct bpf_object *obj, const struct bpf_map *m, const char *path,
		     char *why, size_t cap)
{
	int fd = bpf_obj_get(path);
	if (fd < 0) {
		snprintf(why, cap, "cannot open it: %s", strerror(errno));
		return false;
	}
	struct bpf_map_info info;
	uint32_t len = sizeof(info);
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) < 0) {
		snprintf(why, cap, "not a map (%s)", strerror(errno));
		close(fd);
		return false;
	}
	close(fd);
	struct btf *hbtf = info.btf_id ? btf__load_from_kernel_by_id(info.btf_id) : NULL;
	if (libbpf_get_error(hbtf))
		hbtf = NULL;
	kern_map_def want = {
		.type = bpf_map__type(m), .key_size = bpf_map__key_size(m),
		.value_size = bpf_map__value_size(m), .max_entries = bpf_map__max_entries(m),
		.flags = bpf_map__map_flags(m), .btf = bpf_object__btf(obj),
		.key_type = bpf_map__btf_key_type_id(m), .value_type = bpf_map__btf_value_type_id(m),
	};
	kern_map_def have = {
		.type = info.type, .key_size = info.key_size, .value_size = info.value_size,
		.max_entries = info.max_entries, .flags = info.map_flags, .btf = hbtf,
		.key_type = info.btf_key_type_id, .value_type = info.btf_value_type_id,
	};
	bool bad = kern_map_mismatch(&want, &have, why, cap);
	btf__free(hbtf);
	return !bad;
}

int kern_pins_prepare(kern *k, struct bpf_object *obj)
{
	struct bpf_map *m;
	bpf_object__for_each_map(m, obj) {
		char path[PATH_MAX + 32], why[160];
		snprintf(path, sizeof(path), "%s/%s", k->root, bpf_map__name(m));
		if (access(path, F_OK) < 0 || pin_fits(obj, m, path, why, sizeof(why)))
			continue;
		ulog(LOG_DEFAULT,
		     "re-creating a pinned map another kepp version left with another layout",
		     "map", bpf_map__name(m), "why", why, NULL);
		if (unlink(path) < 0 && errno != ENOENT) {
			int e = errno;
			ulog(LOG_ERROR, "cannot remove the incompatible pinned map", "path", path,
			     "error", strerror(e), NULL);
			return -e;
		}
	}
	return 0;
}

/* Whether |name| is one of this build's maps (every object declares them
 * all, bpf/lib/maps.h). */
static bool known_map(kern *k, const char *name)
{
	struct bpf_map *m;
	bpf_object__for_each_map(m, k->sock->obj)
		if (!strcmp(bpf_map__name(m), name))
			return true;
	return false;
}

static bool known_link(const char *name)
{
	for (int i = 0; i < KL_COUNT; i++)
		if (!strcmp(kern_link_names[i], name))
			return true;
	return false;
}

/* Pins in |dir| this build does not know are removed: a link is detached
 * first, so no program of another version stays attached. */
static void prune_dir(kern *k, const char *dir, bool links)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		char path[PATH_MAX + 300];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (e->d_name[0] == '.' || lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (links ? known_link(e->d_name) : known_map(k, e->d_name))
			continue;
		if (links) {
			struct bpf_link *l = bpf_link__open(path);
			if (l) {
				bpf_link__detach(l);
				bpf_link__destroy(l);
			}
		}
		if (unlink(path) < 0)
			ulog(LOG_WARN, "cannot remove a pin another kepp version left", "path", path,
			     "error", strerror(errno), NULL);
		else
			ulog(LOG_DEFAULT,
			     links ? "removed a pinned link another kepp version left"
				   : "removed a pinned map another kepp version left",
			     "path", path, NULL);
	}
	closedir(d);
}

void kern_pins_prune(kern *k)
{
	char links[PATH_MAX + 16];
	snprintf(links, sizeof(links), "%s/links", k->root);
	prune_dir(k, links, true);
	prune_dir(k, k->root, false);
}

int kern_detach(kern *k)
{
	if (!k)
		return 0;
	int ret = 0, n_links = 0, n_maps = 0;
	size_t n_xdp = k->n_xdp;
	/* XDP first: it reads the maps removed below. */
	if (kern_xdp_detach(k) < 0)
		ret = -EIO;
	bpf_link__destroy(k->drain_link);
	k->drain_link = NULL;
	for (int i = 0; i < KL_COUNT; i++) {
		struct bpf_link *l = k->links[i];
		if (!l)
			continue;
		int r = bpf_link__detach(l);
		char path[PATH_MAX + 64];
		snprintf(path, sizeof(path), "%s/links/%s", k->root, kern_link_names[i]);
		if (unlink(path) < 0 && errno != ENOENT && !r)
			r = -errno;
		if (r < 0) {
			ulog(LOG_WARN, "cannot detach a fast-path program", "program",
			     kern_link_names[i], "error", strerror(-r), NULL);
			ret = ret ? ret : r;
			continue;
		}
		n_links++;
	}
	struct bpf_map *m;
	bpf_object__for_each_map(m, k->sock->obj) {
		char path[PATH_MAX + 32];
		snprintf(path, sizeof(path), "%s/%s", k->root, bpf_map__name(m));
		if (unlink(path) == 0)
			n_maps++;
		else if (errno != ENOENT)
			ret = ret ? ret : -errno;
	}
	char links[PATH_MAX + 16];
	snprintf(links, sizeof(links), "%s/links", k->root);
	rmdir(links);
	bool gone = rmdir(k->root) == 0 || errno == ENOENT;
	char nl[16], nm[16], nx[16];
	snprintf(nl, sizeof(nl), "%d", n_links);
	snprintf(nm, sizeof(nm), "%d", n_maps);
	snprintf(nx, sizeof(nx), "%zu", n_xdp);
	ulog(ret ? LOG_WARN : LOG_DEFAULT,
	     "kernel fast path removed: programs detached, pins deleted (--kernel-keep keeps them)",
	     "pins", k->root, "links", nl, "maps", nm, "xdp", nx, "folder",
	     gone ? "removed" : "kept: not empty", NULL);
	return ret;
}
