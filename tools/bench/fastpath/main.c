/* bench-fastpath: the pods and the load client of the kernel fast-path
 * benchmark (tools/bench/fastpath/run.py sets up the network namespace, the
 * cgroup and kepp, and runs this twice: once as pods, then as clients).
 *
 *   bench-fastpath serve IP:PORT...
 *       A trivial HTTP/1.1 responder on every address, one thread, epoll:
 *       GET /metrics answers an idle vLLM pod's gauges (so kepp scores it),
 *       anything else a fixed small JSON completion naming the address that
 *       answered. Keep-alive unless the request says Connection: close.
 *       Prints "ready" once every address listens.
 *
 *   bench-fastpath load --target IP:PORT [--conns N] [--duration S]
 *                       [--concurrency C] [--model M] [--timeout-ms T]
 *       Closed loop: C connections at a time, each one connect(), one POST
 *       /v1/completions (Connection: close), the whole answer read, close();
 *       a new one starts as soon as one ends, until N connections or S
 *       seconds. Prints one JSON line: connections per second, connect +
 *       first byte latency (p50/p90/p99/max, from just before connect() to
 *       the first byte of the answer), the whole exchange's p50/p99, errors,
 *       how many answers came through kepp's proxy (Via: 1.1 kepp) and which
 *       pods served them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTEN 64
#define MAX_CONC 4096
#define BUF_CAP 8192
#define MAX_PODS 16

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[64];
	const char *colon;
	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':' || close - s - 1 >= (long)sizeof(host))
			return -EINVAL;
		snprintf(host, sizeof(host), "%.*s", (int)(close - s - 1), s + 1);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || colon - s >= (long)sizeof(host))
			return -EINVAL;
		snprintf(host, sizeof(host), "%.*s", (int)(colon - s), s);
	}
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port <= 0 || port > 65535)
		return -EINVAL;
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*len = sizeof(*a4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*a6);
		return 0;
	}
	return -EINVAL;
}

/* The end of an HTTP head in |b|, or NULL. */
static const char *head_end(const char *b, size_t n)
{
	const char *e = memmem(b, n, "\r\n\r\n", 4);
	return e ? e + 4 : NULL;
}

/* A header's value in a head (case-insensitive name), or NULL. */
static const char *header(const char *head, size_t n, const char *name, size_t *vlen)
{
	size_t nl = strlen(name);
	const char *p = memchr(head, '\n', n);
	while (p && (size_t)(p + 1 - head) < n) {
		p++;
		size_t left = n - (size_t)(p - head);
		const char *eol = memchr(p, '\n', left);
		if (!eol)
			return NULL;
		if ((size_t)(eol - p) > nl && p[nl] == ':' && !strncasecmp(p, name, nl)) {
			const char *v = p + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			const char *ve = eol;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
				ve--;
			*vlen = (size_t)(ve - v);
			return v;
		}
		p = eol;
	}
	return NULL;
}

static long content_length(const char *head, size_t n)
{
	size_t vl;
	const char *v = header(head, n, "content-length", &vl);
	if (!v || vl == 0 || vl > 9)
		return v ? -1 : 0;
	long len = 0;
	for (size_t i = 0; i < vl; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		len = len * 10 + (v[i] - '0');
	}
	return len;
}

/* ---- serve ---- */

typedef struct sconn {
	int fd;
	char addr[64]; /* the local address that accepted it */
	char in[BUF_CAP];
	size_t in_len;
	char out[BUF_CAP];
	size_t out_len, out_off;
	bool close_after;
} sconn;

static const char METRICS[] =
	"# TYPE vllm:num_requests_waiting gauge\n"
	"vllm:num_requests_waiting{model_name=\"m\"} 0\n"
	"# TYPE vllm:num_requests_running gauge\n"
	"vllm:num_requests_running{model_name=\"m\"} 0\n"
	"# TYPE vllm:kv_cache_usage_perc gauge\n"
	"vllm:kv_cache_usage_perc{model_name=\"m\"} 0.1\n";

static void sconn_free(int ep, sconn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c);
}

/* Answers every complete request in |c|->in. Returns -1 on a request it
 * cannot parse (the connection is dropped). */
static int serve_requests(sconn *c)
{
	for (;;) {
		const char *he = head_end(c->in, c->in_len);
		if (!he)
			return c->in_len == sizeof(c->in) ? -1 : 0;
		size_t hl = (size_t)(he - c->in);
		long cl = content_length(c->in, hl);
		if (cl < 0 || hl + (size_t)cl > sizeof(c->in))
			return -1;
		if (c->in_len < hl + (size_t)cl)
			return 0;
		size_t vl;
		const char *conn = header(c->in, hl, "connection", &vl);
		c->close_after = conn && vl == 5 && !strncasecmp(conn, "close", 5);
		char body[256];
		const char *b = body;
		int blen;
		if (!strncmp(c->in, "GET /metrics ", 13)) {
			b = METRICS;
			blen = (int)sizeof(METRICS) - 1;
		} else {
			blen = snprintf(body, sizeof(body),
					"{\"object\":\"text_completion\",\"served_by\":\"%s\","
					"\"choices\":[{\"index\":0,\"text\":\"ok\"}]}",
					c->addr);
		}
		int n = snprintf(c->out + c->out_len, sizeof(c->out) - c->out_len,
				 "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
				 "%s",
				 b == METRICS ? "text/plain; version=0.0.4" : "application/json",
				 blen, c->close_after ? "Connection: close\r\n" : "", b);
		if (n < 0 || (size_t)n >= sizeof(c->out) - c->out_len)
			return -1;
		c->out_len += (size_t)n;
		memmove(c->in, c->in + hl + cl, c->in_len - hl - (size_t)cl);
		c->in_len -= hl + (size_t)cl;
		if (c->close_after)
			return 0;
	}
}

/* Writes what is pending. Returns 1 when |c| is done and to be closed, 0 to
 * keep it, -1 on error. */
static int sconn_flush(int ep, sconn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
			epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
			return 0;
		}
		if (w < 0)
			return -1;
		c->out_off += (size_t)w;
	}
	c->out_off = c->out_len = 0;
	return c->close_after ? 1 : 0;
}

static void on_readable(int ep, sconn *c)
{
	for (;;) {
		if (c->in_len == sizeof(c->in)) {
			sconn_free(ep, c);
			return;
		}
		ssize_t r = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			break;
		if (r <= 0) {
			sconn_free(ep, c);
			return;
		}
		c->in_len += (size_t)r;
	}
	if (serve_requests(c) < 0 || sconn_flush(ep, c) != 0)
		sconn_free(ep, c);
}

typedef struct listener {
	int fd;
	char addr[64];
} listener;

static int cmd_serve(int argc, char **argv)
{
	static listener ls[MAX_LISTEN];
	int n = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || argc < 1 || argc > MAX_LISTEN) {
		fprintf(stderr, "bench-fastpath serve: 1 to %d addresses\n", MAX_LISTEN);
		return 2;
	}
	for (int i = 0; i < argc; i++, n++) {
		struct sockaddr_storage ss;
		socklen_t sl;
		if (parse_addr(argv[i], &ss, &sl) < 0) {
			fprintf(stderr, "bench-fastpath: not IP:PORT: %s\n", argv[i]);
			return 2;
		}
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 4096) < 0) {
			fprintf(stderr, "bench-fastpath: listen %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		ls[n].fd = fd;
		snprintf(ls[n].addr, sizeof(ls[n].addr), "%s", argv[i]);
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ls[n]};
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	}
	signal(SIGPIPE, SIG_IGN);
	printf("ready\n");
	fflush(stdout);
	struct epoll_event evs[256];
	for (;;) {
		int k = epoll_wait(ep, evs, 256, -1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return 1;
		for (int i = 0; i < k; i++) {
			void *p = evs[i].data.ptr;
			if (p >= (void *)ls && p < (void *)(ls + MAX_LISTEN)) {
				listener *l = p;
				int fd;
				while ((fd = accept4(l->fd, NULL, NULL,
						     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					sconn *c = malloc(sizeof(*c));
					if (!c) {
						close(fd);
						continue;
					}
					c->fd = fd;
					c->in_len = c->out_len = c->out_off = 0;
					c->close_after = false;
					memcpy(c->addr, l->addr, sizeof(c->addr));
					int one = 1;
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				}
				continue;
			}
			sconn *c = p;
			if (evs[i].events & EPOLLOUT) {
				int r = sconn_flush(ep, c);
				if (r != 0) {
					sconn_free(ep, c);
					continue;
				}
				struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
			}
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				on_readable(ep, c);
		}
	}
}

/* ---- load ---- */

enum { S_IDLE, S_CONNECTING, S_READING };

typedef struct slot {
	int fd;
	int state;
	int64_t t_start, t_first, deadline;
	char in[BUF_CAP];
	size_t in_len;
} slot;

typedef struct samples {
	uint32_t *v; /* microseconds */
	size_t n, cap;
} samples;

static int samples_add(samples *s, int64_t ns)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 65536;
		uint32_t *nv = realloc(s->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		s->v = nv;
		s->cap = cap;
	}
	int64_t us = (ns + 500) / 1000;
	s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static uint32_t pct(const samples *s, double p)
{
	if (!s->n)
		return 0;
	size_t i = (size_t)(p / 100.0 * (double)(s->n - 1) + 0.5);
	return s->v[i < s->n ? i : s->n - 1];
}

typedef struct load {
	struct sockaddr_storage target;
	socklen_t target_len;
	char req[512];
	size_t req_len;
	int64_t timeout_ns;
	samples first, total;
	uint64_t errors, via_kepp, bad_status;
	char err_first[160];
	struct {
		char name[64];
		uint64_t n;
	} pods[MAX_PODS];
	int n_pods;
} load;

static void note_error(load *L, const char *what, int err)
{
	if (!L->errors++)
		snprintf(L->err_first, sizeof(L->err_first), "%s: %s", what,
			 err ? strerror(err) : "protocol");
}

static void count_pod(load *L, const char *body, size_t n)
{
	const char *k = memmem(body, n, "\"served_by\":\"", 13);
	if (!k)
		return;
	k += 13;
	const char *e = memchr(k, '"', n - (size_t)(k - body));
	if (!e || e - k >= 64)
		return;
	for (int i = 0; i < L->n_pods; i++)
		if ((size_t)(e - k) == strlen(L->pods[i].name) &&
		    !memcmp(L->pods[i].name, k, (size_t)(e - k))) {
			L->pods[i].n++;
			return;
		}
	if (L->n_pods < MAX_PODS) {
		snprintf(L->pods[L->n_pods].name, 64, "%.*s", (int)(e - k), k);
		L->pods[L->n_pods++].n = 1;
	}
}

static void slot_close(int ep, slot *s)
{
	if (s->fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
		close(s->fd);
	}
	s->fd = -1;
	s->state = S_IDLE;
}

static void slot_start(int ep, load *L, slot *s)
{
	s->in_len = 0;
	s->fd = socket(L->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		note_error(L, "socket", errno);
		s->state = S_IDLE;
		return;
	}
	int one = 1;
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->t_start = now_ns();
	s->t_first = 0;
	s->deadline = s->t_start + L->timeout_ns;
	int r = connect(s->fd, (struct sockaddr *)&L->target, L->target_len);
	if (r < 0 && errno != EINPROGRESS) {
		note_error(L, "connect", errno);
		slot_close(ep, s);
		return;
	}
	s->state = S_CONNECTING;
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
	epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
}

/* Returns true when the exchange on |s| ended (well or not). */
static bool slot_event(int ep, load *L, slot *s)
{
	if (s->state == S_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof(err);
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err) {
			note_error(L, "connect", err);
			return true;
		}
		/* A small request fits the empty send buffer of a new socket. */
		ssize_t w = send(s->fd, L->req, L->req_len, MSG_NOSIGNAL);
		if (w != (ssize_t)L->req_len) {
			note_error(L, "send", w < 0 ? errno : 0);
			return true;
		}
		s->state = S_READING;
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
		epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
		return false;
	}
	for (;;) {
		if (s->in_len == sizeof(s->in)) {
			note_error(L, "answer too large", 0);
			return true;
		}
		ssize_t r = recv(s->fd, s->in + s->in_len, sizeof(s->in) - s->in_len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return false;
		if (r < 0) {
			note_error(L, "recv", errno);
			return true;
		}
		if (r == 0) {
			note_error(L, "connection closed before the whole answer", 0);
			return true;
		}
		if (!s->t_first)
			s->t_first = now_ns();
		s->in_len += (size_t)r;
		const char *he = head_end(s->in, s->in_len);
		if (!he)
			continue;
		size_t hl = (size_t)(he - s->in);
		long cl = content_length(s->in, hl);
		if (cl < 0) {
			note_error(L, "answer without a usable Content-Length", 0);
			return true;
		}
		if (s->in_len < hl + (size_t)cl)
			continue;
		int64_t t_end = now_ns();
		if (strncmp(s->in, "HTTP/1.1 200 ", 13)) {
			L->bad_status++;
			note_error(L, "status not 200", 0);
			return true;
		}
		size_t vl;
		const char *via = header(s->in, hl, "via", &vl);
		if (via && vl >= 6 && memmem(via, vl, "kepp", 4))
			L->via_kepp++;
		count_pod(L, he, (size_t)cl);
		if (samples_add(&L->first, s->t_first - s->t_start) < 0 ||
		    samples_add(&L->total, t_end - s->t_start) < 0)
			note_error(L, "out of memory", ENOMEM);
		return true;
	}
}

static int cmd_load(int argc, char **argv)
{
	const char *target = NULL, *model = "m";
	long conns = 0, conc = 1, timeout_ms = 5000;
	double duration = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fprintf(stderr, "bench-fastpath: %s needs a value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--target"))
			target = v;
		else if (!strcmp(a, "--conns"))
			conns = atol(v);
		else if (!strcmp(a, "--duration"))
			duration = atof(v);
		else if (!strcmp(a, "--concurrency"))
			conc = atol(v);
		else if (!strcmp(a, "--model"))
			model = v;
		else if (!strcmp(a, "--timeout-ms"))
			timeout_ms = atol(v);
		else {
			fprintf(stderr, "bench-fastpath: unknown option %s\n", a);
			return 2;
		}
	}
	static load L;
	if (!target || parse_addr(target, &L.target, &L.target_len) < 0 ||
	    (conns <= 0 && duration <= 0) || conc < 1 || conc > MAX_CONC || timeout_ms < 1 ||
	    strlen(model) > 128) {
		fprintf(stderr, "usage: bench-fastpath load --target IP:PORT [--conns N] "
				"[--duration S] [--concurrency 1..%d] [--model M]\n",
			MAX_CONC);
		return 2;
	}
	char body[256];
	int bl = snprintf(body, sizeof(body), "{\"model\":\"%s\",\"prompt\":\"hi\",\"max_tokens\":1}",
			  model);
	L.req_len = (size_t)snprintf(L.req, sizeof(L.req),
				     "POST /v1/completions HTTP/1.1\r\nHost: %s\r\n"
				     "Content-Type: application/json\r\nContent-Length: %d\r\n"
				     "Connection: close\r\n\r\n%s",
				     target, bl, body);
	L.timeout_ns = timeout_ms * 1000000LL;
	signal(SIGPIPE, SIG_IGN);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	slot *slots = calloc((size_t)conc, sizeof(*slots));
	if (ep < 0 || !slots) {
		fprintf(stderr, "bench-fastpath: out of memory\n");
		return 1;
	}
	int64_t t0 = now_ns();
	int64_t end = duration > 0 ? t0 + (int64_t)(duration * 1e9) : INT64_MAX;
	long started = 0, active = 0;
	for (long i = 0; i < conc; i++)
		slots[i].fd = -1;
	for (;;) {
		int64_t now = now_ns();
		for (long i = 0; i < conc; i++) {
			slot *s = &slots[i];
			if (s->state != S_IDLE && now > s->deadline) {
				note_error(&L, "timeout", ETIMEDOUT);
				slot_close(ep, s);
				active--;
			}
			while (s->state == S_IDLE && now < end && (conns <= 0 || started < conns)) {
				started++;
				slot_start(ep, &L, s);
				if (s->state != S_IDLE)
					active++;
			}
		}
		if (!active)
			break;
		struct epoll_event evs[256];
		int k = epoll_wait(ep, evs, 256, 50);
		if (k < 0 && errno != EINTR)
			return 1;
		for (int i = 0; i < k; i++) {
			slot *s = evs[i].data.ptr;
			if (slot_event(ep, &L, s)) {
				slot_close(ep, s);
				active--;
			}
		}
	}
	double secs = (double)(now_ns() - t0) / 1e9;
	/* The client's CPU (connect4 and sockops run in its syscalls and the
	 * loopback softirqs they raise): steadier than wall time on a busy box. */
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu_us = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
			(double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
	qsort(L.first.v, L.first.n, sizeof(uint32_t), cmp_u32);
	qsort(L.total.v, L.total.n, sizeof(uint32_t), cmp_u32);
	printf("{\"target\":\"%s\",\"concurrency\":%ld,\"conns\":%zu,\"errors\":%llu,"
	       "\"seconds\":%.3f,\"cps\":%.1f,\"first_p50_us\":%u,\"first_p90_us\":%u,"
	       "\"first_p99_us\":%u,\"first_max_us\":%u,\"total_p50_us\":%u,\"total_p99_us\":%u,"
	       "\"cpu_us_per_conn\":%.1f,\"via_kepp\":%llu,\"first_error\":\"%s\","
	       "\"served_by\":{",
	       target, conc, L.first.n, (unsigned long long)L.errors, secs,
	       secs > 0 ? (double)L.first.n / secs : 0.0, pct(&L.first, 50), pct(&L.first, 90),
	       pct(&L.first, 99), L.first.n ? L.first.v[L.first.n - 1] : 0, pct(&L.total, 50),
	       pct(&L.total, 99), L.first.n ? cpu_us / (double)L.first.n : 0.0,
	       (unsigned long long)L.via_kepp, L.err_first);
	for (int i = 0; i < L.n_pods; i++)
		printf("%s\"%s\":%llu", i ? "," : "", L.pods[i].name,
		       (unsigned long long)L.pods[i].n);
	printf("}}\n");
	free(slots);
	free(L.first.v);
	free(L.total.v);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "serve"))
		return cmd_serve(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "load"))
		return cmd_load(argc - 2, argv + 2);
	fprintf(stderr, "usage: bench-fastpath serve IP:PORT...\n"
			"       bench-fastpath load --target IP:PORT [--conns N] [--duration S]\n"
			"                           [--concurrency C] [--model M] [--timeout-ms T]\n");
	return 2;
}
