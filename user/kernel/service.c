/* Fast-path service specs and the 16-byte address form the BPF maps use. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel/kernel.h"

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
