/* Fast-path services: their specs (--fastpath, the kepp.io/fastpath
 * annotation), the 16-byte address form the BPF maps use, and the service
 * set changed while kepp runs. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "kernel/kern_int.h"
#include "util/log.h"

int kern_parse_ip(const char *ip, uint8_t out[16], bool *v6)
{
	struct in_addr a4;
	memset(out, 0, 16);
	if (inet_pton(AF_INET, ip, &a4) == 1) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &a4, 4);
		*v6 = false;
		return 0;
	}
	if (inet_pton(AF_INET6, ip, out) == 1) {
		static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		*v6 = memcmp(out, pfx, 12) != 0;
		return 0;
	}
	return -EINVAL;
}

void kern_format_addr(char *out, size_t cap, const uint8_t addr[16], uint16_t port)
{
	static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	char ip[INET6_ADDRSTRLEN];
	if (!memcmp(addr, pfx, 12)) {
		inet_ntop(AF_INET, addr + 12, ip, sizeof(ip));
		snprintf(out, cap, "%s:%u", ip, port);
	} else {
		inet_ntop(AF_INET6, addr, ip, sizeof(ip));
		snprintf(out, cap, "[%s]:%u", ip, port);
	}
}

int kern_service_parse(const char *spec, kern_service *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	const char *eq = strchr(spec, '=');
	if (!eq || eq == spec || !eq[1]) {
		snprintf(err, errlen, "\"%s\": want VIP:PORT=MODEL", spec);
		return -EINVAL;
	}
	size_t al = (size_t)(eq - spec), ml = strlen(eq + 1);
	if (al >= sizeof(out->vip) || ml >= sizeof(out->model)) {
		snprintf(err, errlen, "\"%s\": too long", spec);
		return -EINVAL;
	}
	char a[STORE_ADDR_MAX];
	memcpy(a, spec, al);
	a[al] = '\0';
	const char *host = a, *port;
	char *colon;
	if (a[0] == '[') {
		char *close = strchr(a, ']');
		if (!close || close[1] != ':') {
			snprintf(err, errlen, "\"%s\": want [IPv6]:PORT before '='", spec);
			return -EINVAL;
		}
		*close = '\0';
		host = a + 1;
		port = close + 2;
	} else {
		colon = strrchr(a, ':');
		if (!colon || strchr(a, ':') != colon) {
			snprintf(err, errlen, "\"%s\": want IP:PORT before '=' (IPv6 in brackets)",
				 spec);
			return -EINVAL;
		}
		*colon = '\0';
		port = colon + 1;
	}
	char *end;
	errno = 0;
	long p = strtol(port, &end, 10);
	if (!*port || *end || errno || p < 1 || p > 65535) {
		snprintf(err, errlen, "\"%s\": port must be 1..65535", spec);
		return -EINVAL;
	}
	if (kern_parse_ip(host, out->addr, &out->v6) < 0) {
		snprintf(err, errlen, "\"%s\": \"%s\" is not an IP address", spec, host);
		return -EINVAL;
	}
	out->port = (uint16_t)p;
	kern_format_addr(out->vip, sizeof(out->vip), out->addr, out->port);
	memcpy(out->model, eq + 1, ml + 1);
	return 0;
}

uint32_t kern_service_id(const kern_service *s)
{
	/* FNV-1a over the key's bytes: an id that depends on nothing else. */
	uint32_t h = 2166136261u;
	uint8_t b[18];
	memcpy(b, s->addr, 16);
	b[16] = (uint8_t)(s->port >> 8);
	b[17] = (uint8_t)s->port;
	for (size_t i = 0; i < sizeof(b); i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

static bool same_key(const kern_service *a, const kern_service *b)
{
	return a->port == b->port && !memcmp(a->addr, b->addr, 16);
}

static const kern_service *find_key(const kern_service *v, size_t n, const kern_service *s)
{
	for (size_t i = 0; i < n; i++)
		if (same_key(&v[i], s))
			return &v[i];
	return NULL;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int kern_services_parse(const char *list, kern_service *out, size_t cap, char *err,
			size_t errlen)
{
	size_t n = 0, idx = 0;
	const char *p = list;
	while (*p && blank(*p))
		p++;
	if (!*p)
		return 0;
	for (;;) {
		const char *end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		const char *a = p, *b = end;
		while (a < b && blank(*a))
			a++;
		while (b > a && blank(b[-1]))
			b--;
		idx++;
		char one[STORE_ADDR_MAX + KERN_MODEL_MAX + 2];
		if (a == b) {
			snprintf(err, errlen, "entry %zu is empty (want VIP:PORT=MODEL,...)", idx);
			return -EINVAL;
		}
		if ((size_t)(b - a) >= sizeof(one)) {
			snprintf(err, errlen, "entry %zu is too long", idx);
			return -EINVAL;
		}
		if (n == cap) {
			snprintf(err, errlen, "more than %zu services", cap);
			return -EINVAL;
		}
		memcpy(one, a, (size_t)(b - a));
		one[b - a] = '\0';
		if (kern_service_parse(one, &out[n], err, errlen) < 0)
			return -EINVAL;
		if (find_key(out, n, &out[n])) {
			snprintf(err, errlen, "%s is given twice", out[n].vip);
			return -EINVAL;
		}
		n++;
		if (!*end)
			return (int)n;
		p = end + 1;
	}
}

int kern_services_merge(const kern_service *flags, size_t n_flags, const kern_service *more,
			size_t n_more, kern_service *out, size_t cap, char *shadowed, size_t shlen)
{
	size_t n = 0, o = 0;
	if (shlen)
		shadowed[0] = '\0';
	for (size_t i = 0; i < n_flags + n_more; i++) {
		const kern_service *s = i < n_flags ? &flags[i] : &more[i - n_flags];
		const kern_service *f = i >= n_flags ? find_key(flags, n_flags, s) : NULL;
		if (f) {
			const char *sep = o ? ", " : "";
			if (strcmp(f->model, s->model) && o < shlen)
				o += (size_t)snprintf(shadowed + o, shlen - o, "%s%s", sep, s->vip);
			continue;
		}
		if (n == cap)
			return -E2BIG;
		out[n++] = *s;
	}
	return (int)n;
}

/* Deletes the map entries of every VIP:port that k->svcs lacks: those just
 * removed, and any an earlier kepp left behind. */
void kern_drop_unknown_services(kern *k)
{
	struct kepp_svc_key key, next;
	void *prev = NULL;
	while (bpf_map_get_next_key(k->svc_fd, prev, &next) == 0) {
		kern_service s;
		memset(&s, 0, sizeof(s));
		memcpy(s.addr, next.vip.ip, 16);
		s.port = ntohs(next.vip.port);
		bool gone = !find_key(k->svcs, k->n_svcs, &s);
		if (gone && bpf_map_delete_elem(k->svc_fd, &next) == 0) {
			bpf_map_delete_elem(k->vip_fd, &next); /* its XDP counters */
			char vip[STORE_ADDR_MAX];
			kern_format_addr(vip, sizeof(vip), s.addr, s.port);
			ulog(LOG_DEFAULT, "fast-path service removed", "service", vip, NULL);
			continue; /* deleted: go on from the same predecessor */
		}
		key = next;
		prev = &key;
	}
}

int kern_set_services(kern *k, const kern_service *svcs, size_t n)
{
	if (n > KERN_MAX_SERVICES)
		return -E2BIG;
	for (size_t i = 0; i < n; i++)
		if (find_key(svcs, i, &svcs[i]))
			return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const kern_service *old = find_key(k->svcs, k->n_svcs, &svcs[i]);
		if (!old)
			ulog(LOG_DEFAULT, "fast-path service added", "service", svcs[i].vip,
			     "model", svcs[i].model, NULL);
		else if (strcmp(old->model, svcs[i].model))
			ulog(LOG_DEFAULT, "fast-path service changed", "service", svcs[i].vip,
			     "model", svcs[i].model, "was", old->model, NULL);
	}
	if (n)
		memmove(k->svcs, svcs, n * sizeof(*svcs));
	k->n_svcs = n;
	kern_drop_unknown_services(k);
	return 0;
}
