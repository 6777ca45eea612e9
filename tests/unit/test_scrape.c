/* The scraper against real HTTP servers: a poll(2) loop in a thread of the
 * test serves /metrics on several loopback ports, each with its own
 * behaviour (fast, slow, failing, hanging), and counts the requests it has
 * open per port so overlapping scrapes are seen. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "metrics/metrics.h"
#include "sched/sched.h"

enum { MODE_OK, MODE_FAIL, MODE_HANG };
enum { NPORTS = 5, MAXCONN = 64 };

typedef struct port {
	int lfd;
	uint16_t port;
	atomic_int mode, delay_ms, sglang;
	atomic_int requests, inflight, max_inflight;
} port;

typedef struct conn {
	int fd, p;
	char buf[2048];
	size_t len;
	bool have_req;
	int64_t due;
} conn;

static port ports[NPORTS];
static atomic_bool stop;

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drop(conn *c)
{
	if (c->have_req)
		atomic_fetch_sub(&ports[c->p].inflight, 1);
	close(c->fd);
	c->fd = -1;
}

static void respond(conn *c)
{
	port *p = &ports[c->p];
	char body[1024], out[1536];
	int n = atomic_load(&p->requests);
	if (atomic_load(&p->mode) == MODE_FAIL) {
		snprintf(out, sizeof(out), "HTTP/1.1 500 Internal Server Error\r\n"
			 "Content-Length: 2\r\nConnection: close\r\n\r\nno");
	} else {
		if (atomic_load(&p->sglang))
			snprintf(body, sizeof(body),
				 "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs %d\n"
				 "# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs 77\n"
				 "# TYPE sglang:token_usage gauge\nsglang:token_usage 0.3\n", n);
		else
			snprintf(body, sizeof(body),
				 "# TYPE vllm:num_requests_waiting gauge\n"
				 "vllm:num_requests_waiting %d\n"
				 "# TYPE vllm:num_requests_running gauge\n"
				 "vllm:num_requests_running %d\n"
				 "# TYPE vllm:kv_cache_usage_perc gauge\n"
				 "vllm:kv_cache_usage_perc 0.5\n"
				 "# TYPE vllm:lora_requests_info gauge\n"
				 "vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"x,y\","
				 "waiting_lora_adapters=\"\"} %d\n",
				 n, c->p, n);
		snprintf(out, sizeof(out), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", strlen(body), body);
	}
	ssize_t w = write(c->fd, out, strlen(out));
	(void)w;
	drop(c);
}

static void *serve(void *arg)
{
	conn conns[MAXCONN];
	for (int i = 0; i < MAXCONN; i++)
		conns[i].fd = -1;
	while (!atomic_load(&stop)) {
		struct pollfd pf[NPORTS + MAXCONN];
		int map[NPORTS + MAXCONN], n = 0, timeout = 10;
		int64_t now = mono_ms();
		for (int i = 0; i < NPORTS; i++) {
			pf[n] = (struct pollfd){.fd = ports[i].lfd, .events = POLLIN};
			map[n++] = -1 - i;
		}
		for (int i = 0; i < MAXCONN; i++) {
			if (conns[i].fd < 0)
				continue;
			if (conns[i].have_req && conns[i].due <= now) {
				respond(&conns[i]);
				continue;
			}
			pf[n] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
			map[n++] = i;
		}
		if (poll(pf, (nfds_t)n, timeout) <= 0)
			continue;
		for (int k = 0; k < n; k++) {
			if (!pf[k].revents)
				continue;
			if (map[k] < 0) {
				int fd = accept(pf[k].fd, NULL, NULL);
				int slot = -1;
				for (int i = 0; i < MAXCONN && slot < 0; i++)
					if (conns[i].fd < 0)
						slot = i;
				if (fd < 0)
					continue;
				if (slot < 0) {
					close(fd);
					continue;
				}
				conns[slot] = (conn){.fd = fd, .p = -1 - map[k]};
				continue;
			}
			conn *c = &conns[map[k]];
			ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
			if (r <= 0) {
				drop(c); /* the client gave up (timeout) or closed */
				continue;
			}
			c->len += (size_t)r;
			c->buf[c->len] = '\0';
			if (!c->have_req && strstr(c->buf, "\r\n\r\n")) {
				port *p = &ports[c->p];
				c->have_req = true;
				atomic_fetch_add(&p->requests, 1);
				int cur = atomic_fetch_add(&p->inflight, 1) + 1;
				if (cur > atomic_load(&p->max_inflight))
					atomic_store(&p->max_inflight, cur);
				c->due = mono_ms() + (atomic_load(&p->mode) == MODE_HANG
							      ? 3600000
							      : atomic_load(&p->delay_ms));
			}
		}
	}
	for (int i = 0; i < MAXCONN; i++)
		if (conns[i].fd >= 0)
			close(conns[i].fd);
	return NULL;
}

static void start_ports(void)
{
	for (int i = 0; i < NPORTS; i++) {
		struct sockaddr_in sa = {.sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t sl = sizeof(sa);
		ports[i].lfd = socket(AF_INET, SOCK_STREAM, 0);
		bind(ports[i].lfd, (struct sockaddr *)&sa, sizeof(sa));
		listen(ports[i].lfd, 64);
		getsockname(ports[i].lfd, (struct sockaddr *)&sa, &sl);
		ports[i].port = ntohs(sa.sin_port);
	}
}

static int updates;

static void on_update(void *ctx)
{
	updates++;
}

static void run_for(struct event_base *base, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static void test_scrape(void)
{
	enum { A, SLOW, FAILING, HANG, SGL };
	start_ports();
	atomic_store(&ports[SLOW].delay_ms, 200);
	atomic_store(&ports[HANG].mode, MODE_HANG);
	atomic_store(&ports[SGL].sglang, 1);
	pthread_t th;
	pthread_create(&th, NULL, serve, NULL);

	struct event_base *base = event_base_new();
	sched_datalayer legacy = {.legacy_metrics = true};
	mx_scraper_opts o = {.interval_ms = 50, .timeout_ms = 300};
	char err[256];
	mx_scraper *s = mx_scraper_new(base, &legacy, &o, err, sizeof(err));
	CHECK(s != NULL);
	if (!s)
		return;
	mx_scraper_on_update(s, on_update, NULL);
	store_endpoint eps[NPORTS];
	mx_target t[NPORTS];
	const char *key[] = {"inference.networking.k8s.io/engine-type"}, *val[] = {"sglang"};
	memset(eps, 0, sizeof(eps));
	for (int i = 0; i < NPORTS; i++) {
		snprintf(eps[i].ip, sizeof(eps[i].ip), "127.0.0.1");
		eps[i].port = ports[i].port;
		snprintf(eps[i].addr, sizeof(eps[i].addr), "127.0.0.1:%u", ports[i].port);
		t[i] = (mx_target){.addr = eps[i].addr, .ip = eps[i].ip, .port = eps[i].port};
	}
	t[SGL].label_keys = key;
	t[SGL].label_values = val;
	t[SGL].n_labels = 1;
	CHECK_INT(mx_scraper_set_targets(s, t, NPORTS), 0);

	run_for(base, 1000);
	arena a;
	arena_init(&a, 0);
	mx_scraper_fill(s, eps, NPORTS, &a);
	int64_t now = mono_ms();

	/* The fast endpoint is scraped about every interval despite the others. */
	CHECK(atomic_load(&ports[A].requests) >= 12);
	CHECK(eps[A].m.valid);
	CHECK(eps[A].m.waiting_queue >= 10);
	CHECK(eps[A].m.running == A);
	CHECK(eps[A].m.kv_usage == 0.5);
	CHECK_INT(eps[A].m.max_lora, 2);
	CHECK_INT(eps[A].m.n_active_models, 2);
	if (eps[A].m.n_active_models == 2)
		CHECK_STR(eps[A].m.active_models[1], "y");
	CHECK(now - eps[A].m.update_ms < 150);
	/* The slow one answers but is never asked twice at once. */
	CHECK_INT(atomic_load(&ports[SLOW].max_inflight), 1);
	CHECK(atomic_load(&ports[SLOW].requests) >= 3);
	CHECK(atomic_load(&ports[SLOW].requests) <= 6);
	CHECK(eps[SLOW].m.valid);
	/* The hanging one times out, one request at a time, and has no metrics. */
	CHECK_INT(atomic_load(&ports[HANG].max_inflight), 1);
	CHECK(atomic_load(&ports[HANG].requests) >= 2);
	CHECK(atomic_load(&ports[HANG].requests) <= 4);
	CHECK(!eps[HANG].m.valid);
	/* The engine label picks the SGLang mapping. */
	CHECK(eps[SGL].m.valid);
	CHECK(eps[SGL].m.running == 77);
	CHECK(eps[SGL].m.kv_usage == 0.3);
	mx_scraper_stats st;
	mx_scraper_stats_get(s, &st);
	CHECK(st.timeouts >= 2);
	CHECK(st.skipped >= 10);
	CHECK(st.ok >= 20);
	CHECK(updates >= 5);

	/* A failing endpoint keeps its last metrics, which age. */
	CHECK(eps[FAILING].m.valid);
	atomic_store(&ports[FAILING].mode, MODE_FAIL);
	run_for(base, 100); /* lets a scrape that was already answered land */
	store_endpoint f = eps[FAILING];
	mx_scraper_fill(s, &f, 1, &a);
	double last = f.m.waiting_queue;
	int64_t upd = f.m.update_ms;
	run_for(base, 500);
	mx_scraper_fill(s, eps, NPORTS, &a);
	now = mono_ms();
	CHECK(eps[FAILING].m.valid);
	CHECK(eps[FAILING].m.waiting_queue == last);
	CHECK_INT(eps[FAILING].m.update_ms, upd);
	CHECK(now - eps[FAILING].m.update_ms >= 450);
	CHECK(now - eps[A].m.update_ms < 150);
	mx_scraper_stats_get(s, &st);
	CHECK(st.failed >= st.timeouts + 5);

	/* Dropping endpoints (one mid-request) and keeping others keeps their
	 * metrics; a dropped address is no longer filled. */
	CHECK_INT(mx_scraper_set_endpoints(s, eps, 2), 0);
	store_endpoint g[3];
	memcpy(g, eps, sizeof(g));
	for (int i = 0; i < 3; i++)
		memset(&g[i].m, 0, sizeof(g[i].m));
	mx_scraper_fill(s, g, 3, &a);
	CHECK(g[A].m.valid);
	CHECK(!g[FAILING].m.valid);
	int before = atomic_load(&ports[FAILING].requests);
	run_for(base, 200);
	CHECK_INT(atomic_load(&ports[FAILING].requests), before);
	CHECK(atomic_load(&ports[SLOW].max_inflight) == 1);

	mx_scraper_free(s);
	arena_free(&a);
	event_base_free(base);
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	for (int i = 0; i < NPORTS; i++)
		close(ports[i].lfd);
}

static void test_bad_config(void)
{
	struct event_base *base = event_base_new();
	sched_datalayer legacy = {.legacy_metrics = true};
	mx_scraper_opts o = {.default_engine = "nope"};
	char err[256];
	CHECK(mx_scraper_new(base, &legacy, &o, err, sizeof(err)) == NULL);
	CHECK_STR(err, "unknown default engine \"nope\"");
	event_base_free(base);
}

static sched *sched_from(const char *path_param)
{
	char text[1024], err[512];
	snprintf(text, sizeof(text),
		 "apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
		 "kind: EndpointPickerConfig\n"
		 "featureGates: [dataLayer]\n"
		 "plugins:\n"
		 "- {name: src, type: metrics-data-source, parameters: {path: %s}}\n"
		 "- {name: ex, type: core-metrics-extractor}\n"
		 "- type: queue-scorer\n"
		 "dataLayer:\n"
		 "  sources:\n"
		 "  - pluginRef: src\n"
		 "    extractors:\n"
		 "    - pluginRef: ex\n",
		 path_param);
	sched_config *c = NULL;
	sched *s = NULL;
	if (sched_config_parse_text(text, strlen(text), "t.yaml", &c, err, sizeof(err)) == 0)
		s = sched_new(c, err, sizeof(err));
	sched_config_free(c);
	if (!s)
		fprintf(stderr, "config: %s\n", err);
	return s;
}

/* A reloaded config with the same data layer keeps the scraper: it is
 * pointed at the new sched's data layer and the old sched can go. */
static void test_rebind(void)
{
	struct event_base *base = event_base_new();
	char err[256];
	sched *a = sched_from("/metrics"), *b = sched_from("/metrics"), *c = sched_from("/other");
	CHECK(a && b && c);
	if (!a || !b || !c)
		goto out;
	CHECK(sched_data_layer(a)->n_sources == 1);
	mx_scraper *s = mx_scraper_new(base, sched_data_layer(a), NULL, err, sizeof(err));
	CHECK(s != NULL);
	CHECK_INT(mx_scraper_rebind(s, sched_data_layer(b)), 0);
	sched_free(a);
	a = NULL;
	CHECK_INT(mx_scraper_rebind(s, sched_data_layer(c)), -ESTALE);
	sched_datalayer legacy = {.legacy_metrics = true};
	CHECK_INT(mx_scraper_rebind(s, &legacy), -ESTALE);
	/* Still bound to b: a scrape round reads its source after the rebind. */
	store_endpoint ep = {0};
	snprintf(ep.addr, sizeof(ep.addr), "127.0.0.1:1");
	snprintf(ep.ip, sizeof(ep.ip), "127.0.0.1");
	ep.port = 1;
	CHECK_INT(mx_scraper_set_endpoints(s, &ep, 1), 0);
	struct timeval tv = {0, 120000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	mx_scraper_free(s);
	mx_scraper *l = mx_scraper_new(base, &legacy, NULL, err, sizeof(err));
	CHECK(l != NULL);
	CHECK_INT(mx_scraper_rebind(l, &legacy), 0);
	CHECK_INT(mx_scraper_rebind(l, sched_data_layer(b)), -ESTALE);
	mx_scraper_free(l);
out:
	sched_free(a);
	sched_free(b);
	sched_free(c);
	event_base_free(base);
}

int main(void)
{
	RUN(test_scrape);
	RUN(test_bad_config);
	RUN(test_rebind);
	return harness_done();
}
