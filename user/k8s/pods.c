/* Pods to endpoints (spec §6 "Endpoint discovery", as v1.5.0's datastore
 * does it) and the standalone flags --endpoint-selector and
 * --endpoint-target-ports. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s/k8s.h"

static bool alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], at most |max|; empty when |empty_ok|. */
static bool label_name(const char *s, size_t len, size_t max, bool empty_ok)
{
	if (!len)
		return empty_ok;
	if (len > max || !alnum(s[0]) || !alnum(s[len - 1]))
		return false;
	for (size_t i = 1; i + 1 < len; i++)
		if (!alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
			return false;
	return true;
}

/* RFC 1123 subdomain, the optional prefix of a label key. */
static bool dns_subdomain(const char *s, size_t len)
{
	if (!len || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		bool edge = i == 0 || i == len - 1 || s[i - 1] == '.' || s[i + 1] == '.';
		bool ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9');
		if (s[i] == '.' ? edge : !(ok || (s[i] == '-' && !edge)))
			return false;
	}
	return true;
}

static bool label_key(const char *s, size_t len)
{
	const char *slash = memchr(s, '/', len);
	if (!slash)
		return label_name(s, len, 63, false);
	size_t plen = (size_t)(slash - s);
	return dns_subdomain(s, plen) && label_name(slash + 1, len - plen - 1, 63, false);
}

int k8s_selector_parse(const char *s, arena *a, const char ***keys, const char ***values,
		       uint32_t *n, char *err, size_t errlen)
{
	uint32_t cap = 1;
	*n = 0;
	for (const char *c = s; *c; c++)
		cap += *c == ',';
	if (!*s || cap > 64) {
		snprintf(err, errlen, "--endpoint-selector must hold 1 to 64 key=value pairs");
		return -EINVAL;
	}
	*keys = arena_calloc(a, cap * sizeof(char *));
	*values = arena_calloc(a, cap * sizeof(char *));
	if (!*keys || !*values)
		return -ENOMEM;
	for (const char *p = s;;) {
		const char *end = strchr(p, ','), *eq;
		size_t len = end ? (size_t)(end - p) : strlen(p);
		eq = memchr(p, '=', len);
		if (!eq) {
			snprintf(err, errlen, "--endpoint-selector: \"%.*s\" is not key=value",
				 (int)(len > 200 ? 200 : len), p);
			return -EINVAL;
		}
		size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
		if (!label_key(p, klen) || !label_name(eq + 1, vlen, 63, true) ||
		    memchr(eq + 1, '=', vlen)) {
			snprintf(err, errlen,
				 "--endpoint-selector: \"%.*s\" is not a valid label key=value",
				 (int)(len > 200 ? 200 : len), p);
			return -EINVAL;
		}
		char *k = arena_strndup(a, p, klen), *v = arena_strndup(a, eq + 1, vlen);
		if (!k || !v)
			return -ENOMEM;
		for (uint32_t i = 0; i < *n; i++)
			if (!strcmp((*keys)[i], k)) {
				snprintf(err, errlen, "--endpoint-selector: key \"%s\" given twice",
					 k);
				return -EINVAL;
			}
		(*keys)[*n] = k;
		(*values)[*n] = v;
		(*n)++;
		if (!end)
			return 0;
		p = end + 1;
	}
}

int k8s_ports_parse(const char *s, uint16_t *ports, uint32_t *n, char *err, size_t errlen)
{
	*n = 0;
	for (const char *p = s;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		unsigned long v = 0;
		bool ok = len > 0 && len <= 5;
		for (size_t i = 0; ok && i < len; i++) {
			ok = p[i] >= '0' && p[i] <= '9';
			v = v * 10 + (unsigned long)(p[i] - '0');
		}
		if (!ok || v < 1 || v > 65535) {
			snprintf(err, errlen,
				 "--endpoint-target-ports: \"%.*s\" is not a port number (1-65535)",
				 (int)(len > 32 ? 32 : len), p);
			return -EINVAL;
		}
		for (uint32_t i = 0; i < *n; i++)
			if (ports[i] == v) {
				snprintf(err, errlen,
					 "--endpoint-target-ports: port %lu given twice", v);
				return -EINVAL;
			}
		if (*n == STORE_MAX_TARGET_PORTS) {
			snprintf(err, errlen, "--endpoint-target-ports: at most %d ports",
				 STORE_MAX_TARGET_PORTS);
			return -EINVAL;
		}
		ports[(*n)++] = (uint16_t)v;
		if (!end)
			return 0;
		p = end + 1;
	}
}

char *k8s_selector_string(const store_pool *pool)
{
	size_t len = 1;
	for (uint32_t i = 0; i < pool->n_selector; i++)
		len += strlen(pool->selector_keys[i]) + strlen(pool->selector_values[i]) + 2;
	char *s = malloc(len), *o = s;
	if (!s)
		return NULL;
	*o = '\0';
	for (uint32_t i = 0; i < pool->n_selector; i++)
		o += sprintf(o, "%s%s=%s", i ? "," : "", pool->selector_keys[i],
			     pool->selector_values[i]);
	return s;
}

bool k8s_labels_match(const cJSON *labels, const store_pool *pool)
{
	/* An empty selector selects nothing here: a pool always has one, and
	 * a pod watch without a selector would take every pod. */
	if (!pool->n_selector)
		return false;
	for (uint32_t i = 0; i < pool->n_selector; i++) {
		const cJSON *v = k8s_json_get(labels, pool->selector_keys[i], NULL);
		if (!cJSON_IsString(v) || strcmp(v->valuestring, pool->selector_values[i]))
			return false;
	}
	return true;
}

bool k8s_pod_ready(const cJSON *pod)
{
	const cJSON *del = k8s_json_get(pod, "metadata", "deletionTimestamp", NULL);
	if (del && !cJSON_IsNull(del))
		return false;
	const cJSON *conds = k8s_json_get(pod, "status", "conditions", NULL), *c;
	cJSON_ArrayForEach(c, (cJSON_IsArray(conds) ? conds : NULL)) {
		const char *type = k8s_json_str(c, "type", NULL);
		if (type && !strcmp(type, "Ready")) {
			const char *st = k8s_json_str(c, "status", NULL);
			return st && !strcmp(st, "True");
		}
	}
	return false;
}

/* Go's fmt.Sscanf(strings.TrimSpace(s), "%d"): a leading signed integer,
 * whatever follows. */
static bool scan_port(const char *s, size_t len, long *out)
{
	while (len && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) {
		s++;
		len--;
	}
	bool neg = false;
	if (len && (*s == '+' || *s == '-')) {
		neg = *s == '-';
		s++;
		len--;
	}
	long v = 0;
	size_t i = 0;
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		if ((v = v * 10 + (s[i] - '0')) > 1000000)
			v = 1000000; /* far out of range either way */
	if (!i)
		return false;
	*out = neg ? -v : v;
	return true;
}

/* Which target ports the active-ports annotation leaves on (bit i for
 * targetPorts[i]); every port without the annotation. */
static uint32_t active_ports(const cJSON *pod, const store_pool *pool)
{
	uint32_t all = (1u << pool->n_target_ports) - 1, on = 0;
	const cJSON *ann = k8s_json_get(pod, "metadata", "annotations", K8S_ACTIVE_PORTS, NULL);
	if (!cJSON_IsString(ann))
		return all;
	for (const char *p = ann->valuestring;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		long v;
		if (scan_port(p, len, &v))
			for (uint32_t i = 0; i < pool->n_target_ports; i++)
				if (pool->target_ports[i] == v)
					on |= 1u << i;
		if (!end)
			return on;
		p = end + 1;
	}
}

static int pod_labels(const cJSON *pod, arena *a, k8s_labels *out)
{
	const cJSON *labels = k8s_json_get(pod, "metadata", "labels", NULL), *l;
	uint32_t n = 0;
	memset(out, 0, sizeof(*out));
	cJSON_ArrayForEach(l, (cJSON_IsObject(labels) ? labels : NULL))
		n += cJSON_IsString(l);
	if (!n)
		return 0;
	const char **k = arena_alloc(a, n * sizeof(char *)),
		   **v = arena_alloc(a, n * sizeof(char *));
	if (!k || !v)
		return -ENOMEM;
	n = 0;
	cJSON_ArrayForEach(l, labels) {
		if (!cJSON_IsString(l))
			continue;
		k[n] = arena_strdup(a, l->string);
		v[n] = arena_strdup(a, l->valuestring);
		if (!k[n] || !v[n])
			return -ENOMEM;
		n++;
	}
	out->keys = k;
	out->values = v;
	out->n = n;
	return 0;
}

int k8s_pod_endpoints(const cJSON *pod, const store_pool *pool, arena *a, store_endpoint *out,
		      k8s_labels *labels, uint32_t cap)
{
	const char *name = k8s_json_str(pod, "metadata", "name", NULL);
	const char *ip_s = k8s_json_str(pod, "status", "podIP", NULL);
	unsigned char buf[sizeof(struct in6_addr)];
	char ip[INET6_ADDRSTRLEN];
	int family = AF_INET;
	if (!name || !ip_s || !*ip_s ||
	    !k8s_labels_match(k8s_json_get(pod, "metadata", "labels", NULL), pool) ||
	    !k8s_pod_ready(pod))
		return 0;
	if (inet_pton(AF_INET, ip_s, buf) != 1) {
		family = AF_INET6;
		if (inet_pton(AF_INET6, ip_s, buf) != 1)
			return 0;
	}
	inet_ntop(family, buf, ip, sizeof(ip));
	uint32_t on = active_ports(pod, pool), n = 0;
	k8s_labels lb = {0};
	if (on && labels && pod_labels(pod, a, &lb) < 0)
		return -ENOMEM;
	const char *pod_name = on ? arena_strdup(a, name) : NULL;
	if (on && !pod_name)
		return -ENOMEM;
	for (uint32_t i = 0; i < pool->n_target_ports; i++) {
		if (!(on & (1u << i)))
			continue;
		if (n == cap)
			return -ENOSPC;
		store_endpoint *e = &out[n];
		char ep_name[320];
		memset(e, 0, sizeof(*e));
		snprintf(ep_name, sizeof(ep_name), "%s-rank-%u", name, i);
		e->name = arena_strdup(a, ep_name);
		if (!e->name)
			return -ENOMEM;
		e->pod = pod_name;
		snprintf(e->ip, sizeof(e->ip), "%s", ip);
		e->port = pool->target_ports[i];
		e->rank = i;
		store_format_addr(e->addr, sizeof(e->addr), ip, e->port);
		if (labels)
			labels[n] = lb;
		n++;
	}
	return (int)n;
}
