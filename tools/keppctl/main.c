/* keppctl: a command-line client of kepp's admin port (--metrics-port).
 *
 *   keppctl explain --admin HOST:PORT [--path P] [--subset A,B] [-H 'name: value']... < body.json
 *       POSTs the request body to /debug/explain (kepp needs
 *       --enable-debug-endpoints) and prints every candidate's score per
 *       scorer, the filter that dropped it, and the pick. Nothing is recorded.
 *   keppctl top --admin HOST:PORT [--once] [--interval SECONDS]
 *       A live table of the pool from /metrics: queue, running, KV use,
 *       in-flight requests and picks per second per endpoint. --once prints
 *       one table (measured over one interval) and exits.
 *   keppctl fastpath [--bpffs /sys/fs/bpf] [--json]
 *       The kernel fast path from the maps pinned under <bpffs>/kepp/
 *       (fastpath.c): services, their weighted backends with live in-flight
 *       counts and RTT, connect() verdicts, XDP counters.
 */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "keppctl.h"
#include "metrics/prom.h"

#define MAX_REPLY (64u << 20)
#define MAX_BODY (8u << 20) /* kepp's admin server refuses larger bodies */
#define MAX_HEADERS 32

static void usage(FILE *f)
{
	fprintf(f, "usage: keppctl explain --admin HOST:PORT [--path P] [--subset A,B]\n"
		   "                       [-H 'name: value']... < body.json\n"
		   "       keppctl top --admin HOST:PORT [--once] [--interval SECONDS]\n"
		   "       keppctl fastpath [--bpffs /sys/fs/bpf] [--json]\n");
}

/* ---- HTTP/1.0 over one blocking connection ---- */

typedef struct reply {
	int status;
	char *body; /* NUL-terminated */
	size_t len;
	char *raw;
} reply;

static int split_hostport(const char *hp, char *host, size_t hcap, char *port, size_t pcap)
{
	const char *colon;
	if (hp[0] == '[') {
		const char *close = strchr(hp, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		snprintf(host, hcap, "%.*s", (int)(close - hp - 1), hp + 1);
		colon = close + 1;
	} else {
		colon = strrchr(hp, ':');
		if (!colon)
			return -EINVAL;
		snprintf(host, hcap, "%.*s", (int)(colon - hp), hp);
	}
	snprintf(port, pcap, "%s", colon + 1);
	return host[0] && port[0] ? 0 : -EINVAL;
}

static int dial(const char *hostport)
{
	char host[256], port[16];
	if (split_hostport(hostport, host, sizeof(host), port, sizeof(port)) < 0) {
		fprintf(stderr, "keppctl: --admin must be HOST:PORT, not %s\n", hostport);
		return -1;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		fprintf(stderr, "keppctl: %s: %s\n", hostport, gai_strerror(rc));
		return -1;
	}
	int fd = -1;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0)
			continue;
		struct timeval tv = {10, 0};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		fprintf(stderr, "keppctl: cannot connect to %s: %s\n", hostport, strerror(errno));
	return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int http(const char *hostport, const char *method, const char *path, const char *headers,
		const char *body, size_t blen, reply *out)
{
	memset(out, 0, sizeof(*out));
	int fd = dial(hostport);
	if (fd < 0)
		return -1;
	char head[8192];
	int hn = snprintf(head, sizeof(head),
			  "%s %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n%s"
			  "Content-Length: %zu\r\n\r\n",
			  method, path, hostport, headers ? headers : "", blen);
	if (hn < 0 || (size_t)hn >= sizeof(head) || send_all(fd, head, (size_t)hn) < 0 ||
	    (blen && send_all(fd, body, blen) < 0)) {
		fprintf(stderr, "keppctl: cannot send the request to %s\n", hostport);
		close(fd);
		return -1;
	}
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf)
			break;
		if (len + 4096 + 1 > cap) {
			if (cap >= MAX_REPLY) {
				fprintf(stderr, "keppctl: reply over %u bytes\n", MAX_REPLY);
				free(buf);
				close(fd);
				return -1;
			}
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "keppctl: reading from %s: %s\n", hostport,
				strerror(errno));
			free(buf);
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	if (!buf) {
		fprintf(stderr, "keppctl: out of memory\n");
		return -1;
	}
	buf[len] = '\0';
	char *sep = strstr(buf, "\r\n\r\n");
	if (strncmp(buf, "HTTP/1.", 7) != 0 || len < 12 || !sep) {
		fprintf(stderr, "keppctl: %s did not answer HTTP\n", hostport);
		free(buf);
		return -1;
	}
	out->status = atoi(buf + 9);
	out->raw = buf;
	out->body = sep + 4;
	out->len = len - (size_t)(out->body - buf);
	return 0;
}

/* Percent-encodes a query value. */
static void qenc(char *out, size_t cap, const char *s)
{
	size_t o = 0;
	for (; *s && o + 4 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("-_.~/:", c))
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, cap - o, "%%%02X", c);
	}
	out[o] = '\0';
}

/* ---- explain ---- */

static const char *jstr(const cJSON *o, const char *k)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, k));
	return s ? s : "";
}

typedef struct eprow {
	const cJSON *j;
	int rank;        /* -1: not a target */
	double total;
	bool dropped;
} eprow;

static int cmp_eprow(const void *a, const void *b)
{
	const eprow *x = a, *y = b;
	if (x->dropped != y->dropped)
		return x->dropped ? 1 : -1;
	if ((x->rank >= 0) != (y->rank >= 0))
		return x->rank >= 0 ? -1 : 1;
	if (x->rank >= 0 && x->rank != y->rank)
		return x->rank - y->rank;
	return (x->total < y->total) - (x->total > y->total);
}

static int print_explain(const char *json)
{
	cJSON *root = cJSON_Parse(json);
	if (!root) {
		fprintf(stderr, "keppctl: /debug/explain answered something that is not JSON\n");
		return 1;
	}
	printf("request %s: model \"%s\" -> \"%s\" (priority %d)", jstr(root, "request_id"),
	       jstr(root, "model"), jstr(root, "target_model"),
	       (int)cJSON_GetNumberValue(cJSON_GetObjectItem(root, "priority")));
	if (cJSON_IsString(cJSON_GetObjectItem(root, "model_rewrite")))
		printf(", rewrite %s", jstr(root, "model_rewrite"));
	if (cJSON_IsString(cJSON_GetObjectItem(root, "profile")))
		printf(", profile %s", jstr(root, "profile"));
	printf("\n");
	const cJSON *filters = cJSON_GetObjectItem(root, "filters");
	if (cJSON_GetArraySize(filters) > 0) {
		printf("filters:");
		const cJSON *f;
		cJSON_ArrayForEach(f, filters)
			printf(" %s", cJSON_GetStringValue(f) ? cJSON_GetStringValue(f) : "");
		printf("\n");
	}
	const cJSON *scorers = cJSON_GetObjectItem(root, "scorers");
	const cJSON *eps = cJSON_GetObjectItem(root, "endpoints");
	int n = cJSON_GetArraySize(eps), ns = cJSON_GetArraySize(scorers);
	if (n > 0) {
		int width[64];
		printf("  %-24s", "ENDPOINT");
		for (int k = 0; k < ns && k < 64; k++) {
			const cJSON *s = cJSON_GetArrayItem(scorers, k);
			char h[160];
			snprintf(h, sizeof(h), "%s(x%g)", jstr(s, "name"),
				 cJSON_GetNumberValue(cJSON_GetObjectItem(s, "weight")));
			width[k] = (int)strlen(h) > 8 ? (int)strlen(h) : 8;
			printf("  %*s", width[k], h);
		}
		printf("  %8s\n", "TOTAL");
		eprow *rows = calloc((size_t)n, sizeof(*rows));
		for (int i = 0; rows && i < n; i++) {
			const cJSON *e = cJSON_GetArrayItem(eps, i);
			const cJSON *rk = cJSON_GetObjectItem(e, "rank");
			rows[i] = (eprow){e, cJSON_IsNumber(rk) ? (int)rk->valuedouble : -1,
					  cJSON_GetNumberValue(cJSON_GetObjectItem(e, "total")),
					  cJSON_IsString(cJSON_GetObjectItem(e, "filtered_by"))};
			if (isnan(rows[i].total))
				rows[i].total = 0;
		}
		if (rows)
			qsort(rows, (size_t)n, sizeof(*rows), cmp_eprow);
		for (int i = 0; rows && i < n; i++) {
			const cJSON *e = rows[i].j;
			printf("%c %-24s", rows[i].rank == 0 ? '*' : rows[i].rank > 0 ? '+' : ' ',
			       jstr(e, "endpoint"));
			if (rows[i].dropped) {
				printf("  dropped by %s\n", jstr(e, "filtered_by"));
				continue;
			}
			const cJSON *sc = cJSON_GetObjectItem(e, "scores");
			for (int k = 0; k < ns && k < 64; k++) {
				const char *name = jstr(cJSON_GetArrayItem(scorers, k), "name");
				printf("  %*.3f", width[k],
				       cJSON_GetNumberValue(cJSON_GetObjectItem(sc, name)));
			}
			printf("  %8.3f\n", rows[i].total);
		}
		free(rows);
	}
	const cJSON *err = cJSON_GetObjectItem(root, "error");
	int rc = 0;
	if (cJSON_IsObject(err)) {
		int status = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(err, "status"));
		printf("error %d: %s\n", status, jstr(err, "message"));
		rc = 3;
	} else {
		printf("pick: %s\n", jstr(root, "targets"));
	}
	cJSON_Delete(root);
	return rc;
}

static char *read_stdin(size_t *len)
{
	size_t cap = 65536;
	char *b = malloc(cap);
	*len = 0;
	while (b) {
		if (*len == cap) {
			if (cap >= MAX_BODY) {
				fprintf(stderr, "keppctl: body over %u bytes\n", MAX_BODY);
				free(b);
				return NULL;
			}
			char *nb = realloc(b, cap * 2);
			if (!nb)
				break;
			b = nb;
			cap *= 2;
		}
		size_t r = fread(b + *len, 1, cap - *len, stdin);
		*len += r;
		if (r == 0)
			return b;
	}
	free(b);
	return NULL;
}

static int cmd_explain(const char *admin, const char *path, const char *subset,
		       const char *const *hdrs, int n_hdrs)
{
	size_t blen;
	char *body = read_stdin(&blen);
	if (!body)
		return 1;
	char headers[4096] = "", target[4096] = "/debug/explain";
	size_t ho = 0;
	for (int i = 0; i < n_hdrs; i++) {
		if (strpbrk(hdrs[i], "\r\n") || !strchr(hdrs[i], ':')) {
			fprintf(stderr, "keppctl: -H takes 'name: value'\n");
			free(body);
			return 2;
		}
		int w = snprintf(headers + ho, sizeof(headers) - ho, "%s\r\n", hdrs[i]);
		if (w < 0 || (size_t)w >= sizeof(headers) - ho) {
			fprintf(stderr, "keppctl: headers too long\n");
			free(body);
			return 2;
		}
		ho += (size_t)w;
	}
	char enc[1024];
	char sep = '?';
	if (path) {
		qenc(enc, sizeof(enc), path);
		size_t l = strlen(target);
		snprintf(target + l, sizeof(target) - l, "%cpath=%s", sep, enc);
		sep = '&';
	}
	if (subset) {
		qenc(enc, sizeof(enc), subset);
		size_t l = strlen(target);
		snprintf(target + l, sizeof(target) - l, "%csubset=%s", sep, enc);
	}
	reply r;
	int rc = http(admin, "POST", target, headers, body, blen, &r);
	free(body);
	if (rc < 0)
		return 1;
	if (r.status != 200) {
		fprintf(stderr, "keppctl: /debug/explain: HTTP %d: %s", r.status, r.body);
		if (r.status == 404)
			fprintf(stderr, "(is kepp running with --enable-debug-endpoints?)\n");
		free(r.raw);
		return 1;
	}
	rc = print_explain(r.body);
	free(r.raw);
	return rc;
}

/* ---- top ---- */

enum { C_QUEUE, C_RUNNING, C_KV, C_INFLIGHT, C_PICKS, C_AGE, C_SCRAPE_ERR, NCOLS };

static const char *const col_metric[NCOLS] = {
	"kepp_endpoint_queue_size",          "kepp_endpoint_running_requests",
	"kepp_endpoint_kv_cache_utilization", "kepp_endpoint_in_flight_requests",
	"kepp_endpoint_picks_total",          "kepp_endpoint_metrics_age_seconds",
	"kepp_endpoint_scrapes_total",
};

typedef struct eprow_top {
	char addr[96];
	double v[NCOLS];
	bool has[NCOLS];
} eprow_top;

typedef struct table {
	eprow_top *rows;
	size_t n, cap;
	char pool[128];
} table;

static eprow_top *row_for(table *t, const char *addr, size_t len)
{
	for (size_t i = 0; i < t->n; i++)
		if (strlen(t->rows[i].addr) == len && !memcmp(t->rows[i].addr, addr, len))
			return &t->rows[i];
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		eprow_top *nv = realloc(t->rows, cap * sizeof(*nv));
		if (!nv)
			return NULL;
		t->rows = nv;
		t->cap = cap;
	}
	eprow_top *r = &t->rows[t->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->addr, sizeof(r->addr), "%.*s", (int)len, addr);
	return r;
}

static const mx_prom_label *label(const mx_prom_sample *s, const char *name)
{
	for (uint32_t i = 0; i < s->n_labels; i++)
		if (strlen(name) == s->labels[i].name_len &&
		    !memcmp(s->labels[i].name, name, s->labels[i].name_len))
			return &s->labels[i];
	return NULL;
}

static bool name_is(const mx_prom_sample *s, const char *name)
{
	return strlen(name) == s->name_len && !memcmp(s->name, name, s->name_len);
}

static int on_sample(void *ctx, const mx_prom_sample *s)
{
	table *t = ctx;
	if (name_is(s, "inference_pool_ready_pods")) {
		const mx_prom_label *l = label(s, "name");
		if (l)
			snprintf(t->pool, sizeof(t->pool), "%.*s", (int)l->value_len, l->value);
		return 0;
	}
	for (int c = 0; c < NCOLS; c++) {
		if (!name_is(s, col_metric[c]))
			continue;
		const mx_prom_label *ep = label(s, "endpoint");
		if (!ep)
			return 0;
		if (c == C_SCRAPE_ERR) {
			const mx_prom_label *res = label(s, "result");
			if (!res || res->value_len != 6 || memcmp(res->value, "failed", 6))
				return 0;
		}
		eprow_top *r = row_for(t, ep->value, ep->value_len);
		if (r) {
			r->v[c] = s->value;
			r->has[c] = true;
		}
		return 0;
	}
	return 0;
}

static int fetch_table(const char *admin, table *t)
{
	t->n = 0;
	t->pool[0] = '\0';
	reply r;
	if (http(admin, "GET", "/metrics", NULL, NULL, 0, &r) < 0)
		return -1;
	if (r.status != 200) {
		fprintf(stderr, "keppctl: /metrics: HTTP %d\n", r.status);
		free(r.raw);
		return -1;
	}
	char err[256];
	int rc = mx_prom_parse(r.body, r.len, NULL, on_sample, t, err, sizeof(err));
	free(r.raw);
	if (rc < 0) {
		fprintf(stderr, "keppctl: /metrics does not parse: %s\n", err);
		return -1;
	}
	return 0;
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_top(const void *a, const void *b)
{
	return strcmp(((const eprow_top *)a)->addr, ((const eprow_top *)b)->addr);
}

static void print_top(const char *admin, const table *prev, table *cur, double dt, bool clear)
{
	qsort(cur->rows, cur->n, sizeof(*cur->rows), cmp_top);
	double total_rate = 0;
	double *rate = calloc(cur->n ? cur->n : 1, sizeof(*rate));
	for (size_t i = 0; rate && i < cur->n; i++) {
		for (size_t k = 0; k < prev->n; k++)
			if (!strcmp(prev->rows[k].addr, cur->rows[i].addr) && dt > 0) {
				double d = cur->rows[i].v[C_PICKS] - prev->rows[k].v[C_PICKS];
				rate[i] = d > 0 ? d / dt : 0;
			}
		total_rate += rate[i];
	}
	if (clear)
		printf("\033[H\033[2J");
	time_t now = time(NULL);
	char ts[32];
	strftime(ts, sizeof(ts), "%H:%M:%S", localtime(&now));
	printf("kepp %s  pool %s  %zu endpoints  %.1f picks/s  %s\n", admin,
	       cur->pool[0] ? cur->pool : "-", cur->n, total_rate, ts);
	printf("%-24s %7s %8s %6s %10s %8s %8s %11s\n", "ENDPOINT", "QUEUE", "RUNNING", "KV%",
	       "IN-FLIGHT", "PICKS/S", "AGE-MS", "SCRAPE-ERRS");
	for (size_t i = 0; i < cur->n; i++) {
		const eprow_top *r = &cur->rows[i];
		char q[16] = "-", run[16] = "-", kv[16] = "-", age[16] = "-";
		if (r->has[C_QUEUE])
			snprintf(q, sizeof(q), "%.0f", r->v[C_QUEUE]);
		if (r->has[C_RUNNING])
			snprintf(run, sizeof(run), "%.0f", r->v[C_RUNNING]);
		if (r->has[C_KV])
			snprintf(kv, sizeof(kv), "%.1f", r->v[C_KV] * 100);
		if (r->has[C_AGE])
			snprintf(age, sizeof(age), "%.0f", r->v[C_AGE] * 1000);
		printf("%-24s %7s %8s %6s %10.0f %8.1f %8s %11.0f\n", r->addr, q, run, kv,
		       r->v[C_INFLIGHT], rate ? rate[i] : 0, age, r->v[C_SCRAPE_ERR]);
	}
	fflush(stdout);
	free(rate);
}

static volatile sig_atomic_t stop;
static void on_int(int sig)
{
	(void)sig;
	stop = 1;
}

static int cmd_top(const char *admin, bool once, double interval)
{
	table a = {0}, b = {0};
	table *prev = &a, *cur = &b;
	signal(SIGINT, on_int);
	signal(SIGTERM, on_int);
	if (fetch_table(admin, prev) < 0)
		return 1;
	double t0 = mono_s();
	int rc = 0;
	while (!stop) {
		struct timespec ts = {(time_t)interval,
				      (long)((interval - (double)(time_t)interval) * 1e9)};
		nanosleep(&ts, NULL);
		if (stop)
			break;
		if (fetch_table(admin, cur) < 0) {
			rc = 1;
			break;
		}
		double t1 = mono_s();
		print_top(admin, prev, cur, t1 - t0, !once);
		if (once)
			break;
		table *t = prev;
		prev = cur;
		cur = t;
		t0 = t1;
	}
	free(a.rows);
	free(b.rows);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1], *admin = NULL, *path = NULL, *subset = NULL;
	const char *hdrs[MAX_HEADERS];
	int n_hdrs = 0;
	bool once = false;
	double interval = 1.0;
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "fastpath"))
		return kctl_fastpath(argc - 2, argv + 2);
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--once")) {
			once = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "keppctl: %s needs a value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--admin"))
			admin = v;
		else if (!strcmp(a, "--path"))
			path = v;
		else if (!strcmp(a, "--subset"))
			subset = v;
		else if (!strcmp(a, "--interval"))
			interval = atof(v);
		else if (!strcmp(a, "-H") && n_hdrs < MAX_HEADERS)
			hdrs[n_hdrs++] = v;
		else {
			fprintf(stderr, "keppctl: unknown or repeated option %s\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (!admin) {
		fprintf(stderr, "keppctl: --admin HOST:PORT is required (kepp's --metrics-port)\n");
		return 2;
	}
	if (!(interval >= 0.05 && interval <= 3600)) {
		fprintf(stderr, "keppctl: --interval is seconds between 0.05 and 3600\n");
		return 2;
	}
	if (!strcmp(cmd, "explain"))
		return cmd_explain(admin, path, subset, hdrs, n_hdrs);
	if (!strcmp(cmd, "top"))
		return cmd_top(admin, once, interval);
	fprintf(stderr, "keppctl: unknown command %s\n", cmd);
	usage(stderr);
	return 2;
}
