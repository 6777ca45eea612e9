/* Static endpoints from --endpoints: "ip:port", "[v6]:port", or a bare IP that
 * stands for one endpoint per pool targetPort (the data-parallel ranks of one
 * pod). Addresses are kept in canonical form so the subset filter and Envoy see
 * the same text for the same endpoint. */
#include "store/manifest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENTRY_MAX 128 /* longer than any "[ipv6]:port" */
#define STR_(x) #x
#define STR(x) STR_(x)

static int bad(char *err, size_t errlen, const char *entry, size_t len, const char *why)
{
	snprintf(err, errlen, "--endpoints entry \"%.*s\": %s",
		 (int)(len > ENTRY_MAX ? ENTRY_MAX : len), entry, why);
	return -EINVAL;
}

/* Canonical text of an IP, or -EINVAL. IPv6 zones are refused: Envoy cannot
 * connect to "fe80::1%eth0" from another host anyway. */
static int canon_ip(const char *s, char *out, size_t cap, int *family)
{
	unsigned char buf[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, s, buf) == 1)
		*family = AF_INET;
	else if (inet_pton(AF_INET6, s, buf) == 1)
		*family = AF_INET6;
	else
		return -EINVAL;
	return inet_ntop(*family, buf, out, (socklen_t)cap) ? 0 : -EINVAL;
}

static int parse_port(const char *s, uint16_t *out)
{
	unsigned v = 0;
	if (!*s || strlen(s) > 5)
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (v < 1 || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

static uint32_t rank_of(const store_pool *pool, uint16_t port)
{
	for (uint32_t i = 0; pool && i < pool->n_target_ports; i++)
		if (pool->target_ports[i] == port)
			return i;
	return 0;
}

struct eplist {
	store_endpoint *v;
	uint32_t n, cap;
};

static int add(struct eplist *l, const char *ip, uint16_t port, uint32_t rank, const char *entry,
	       size_t len, char *err, size_t errlen)
{
	for (uint32_t i = 0; i < l->n; i++)
		if (l->v[i].port == port && strcmp(l->v[i].ip, ip) == 0)
			return bad(err, errlen, entry, len, "duplicate endpoint");
	if (l->n == l->cap)
		return bad(err, errlen, entry, len,
			   "more than " STR(STORE_ENDPOINTS_MAX) " endpoints");
	store_endpoint *e = &l->v[l->n];
	memset(e, 0, sizeof(*e));
	snprintf(e->ip, sizeof(e->ip), "%s", ip);
	e->port = port;
	e->rank = rank;
	e->index = l->n;
	if (store_format_addr(e->addr, sizeof(e->addr), ip, port) < 0)
		return bad(err, errlen, entry, len, "address too long");
	l->n++;
	return 0;
}

/* One comma-separated entry, already trimmed, |len| bytes at |s|. */
static int parse_entry(const char *s, size_t len, const store_pool *pool, struct eplist *l,
		       char *err, size_t errlen)
{
	char buf[ENTRY_MAX + 1];
	if (len > ENTRY_MAX)
		return bad(err, errlen, s, len, "too long");
	memcpy(buf, s, len);
	buf[len] = '\0';

	const char *host = buf, *port_s = NULL;
	bool bracketed = false;
	if (buf[0] == '[') {
		char *close = strchr(buf, ']');
		if (!close)
			return bad(err, errlen, s, len, "missing \"]\" after the IPv6 address");
		*close = '\0';
		host = buf + 1;
		bracketed = true;
		if (close[1] == ':')
			port_s = close + 2;
		else if (close[1])
			return bad(err, errlen, s, len, "expected \":port\" after \"]\"");
	} else {
		char *colon = strchr(buf, ':');
		/* One colon is ip:port; more is a bare IPv6 address. */
		if (colon && !strchr(colon + 1, ':')) {
			*colon = '\0';
			port_s = colon + 1;
		}
	}

	char ip[INET6_ADDRSTRLEN];
	int family;
	if (canon_ip(host, ip, sizeof(ip), &family) < 0)
		return bad(err, errlen, s, len, "not an IPv4 or IPv6 address");
	if (bracketed && family != AF_INET6)
		return bad(err, errlen, s, len, "brackets are for IPv6 addresses only");

	if (port_s) {
		uint16_t port;
		if (parse_port(port_s, &port) < 0)
			return bad(err, errlen, s, len, "port must be a number from 1 to 65535");
		return add(l, ip, port, rank_of(pool, port), s, len, err, errlen);
	}
	if (!pool || !pool->n_target_ports)
		return bad(err, errlen, s, len,
			   "no port, and no InferencePool targetPorts to take the ports from");
	for (uint32_t i = 0; i < pool->n_target_ports; i++) {
		int r = add(l, ip, pool->target_ports[i], i, s, len, err, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}

int store_endpoints_parse(const char *spec, const store_pool *pool, store_endpoint **out,
			  uint32_t *n_out, char *err, size_t errlen)
{
	*out = NULL;
	*n_out = 0;
	size_t cap = 1;
	for (const char *c = spec; *c; c++)
		cap += *c == ',';
	if (pool && pool->n_target_ports > 1)
		cap *= pool->n_target_ports;
	if (cap > STORE_ENDPOINTS_MAX)
		cap = STORE_ENDPOINTS_MAX;
	store_endpoint *eps = calloc(cap, sizeof(*eps));
	if (!eps) {
		snprintf(err, errlen, "--endpoints: out of memory");
		return -ENOMEM;
	}
	struct eplist l = {eps, 0, (uint32_t)cap};
	const char *p = spec;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *s = p;
		while (len && (*s == ' ' || *s == '\t'))
			s++, len--;
		while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
			len--;
		int r = -EINVAL;
		if (len)
			r = parse_entry(s, len, pool, &l, err, errlen);
		else
			snprintf(err, errlen, "--endpoints: empty entry in \"%.*s\"", ENTRY_MAX,
				 spec);
		if (r < 0) {
			free(eps);
			return r;
		}
		if (!end)
			break;
		p = end + 1;
	}
	*out = eps;
	*n_out = l.n;
	return 0;
}
