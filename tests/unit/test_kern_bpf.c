/* The BPF programs under BPF_PROG_TEST_RUN, where the kernel allows it: XDP
 * (per-VIP counters, SYN shedding) and sk_lookup (the fallback listener);
 * the drain iterator over real sockets of the test's network namespace.
 * Needs root and BPF; under CI=true a test that cannot run fails, elsewhere
 * it says SKIP loudly. Maps are created unpinned: nothing is left behind. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "harness.h"
#include "kepp_abi.h"
#include "kepp_drain.skel.h"
#include "kepp_sklookup.skel.h"
#include "kepp_sock.skel.h"
#include "kepp_sockops.skel.h"
#include "kepp_xdp.skel.h"

static int quiet(enum libbpf_print_level l, const char *fmt, va_list ap)
{
	if (l == LIBBPF_WARN)
		vfprintf(stderr, fmt, ap);
	return 0;
}

/* Whether BPF tests can run. As root a load failure is a real failure (the
 * verifier refused a program); without root it fails under CI=true and says
 * SKIP elsewhere. */
static bool can_run(const char *what, int err)
{
	if (err == 0)
		return true;
	const char *ci = getenv("CI");
	if (geteuid() == 0) {
		fprintf(stderr, "  FAIL %s: BPF load failed as root: %s\n", what, strerror(-err));
		h_cur_failed = 1;
	} else if (ci && !strcmp(ci, "true")) {
		fprintf(stderr, "  FAIL %s: cannot load BPF (%s) and CI=true\n", what, strerror(-err));
		h_cur_failed = 1;
	} else {
		fprintf(stderr, "  SKIP %s: cannot load BPF here (%s); run as root\n", what,
			strerror(-err));
	}
	return false;
}

static void unpin_all(struct bpf_object *obj)
{
	struct bpf_map *m;
	bpf_object__for_each_map(m, obj)
		bpf_map__set_pin_path(m, NULL);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct kepp_svc_key vip_key(const char *ip, uint16_t port)
{
	struct kepp_svc_key k;
	memset(&k, 0, sizeof(k));
	k.vip.ip[2] = htonl(0xffff);
	inet_pton(AF_INET, ip, &k.vip.ip[3]);
	k.vip.port = htons(port);
	return k;
}

static void put_svc(int fd, const char *ip, uint16_t port, uint32_t flags, uint64_t published)
{
	struct kepp_svc_key k = vip_key(ip, port);
	struct kepp_svc v;
	memset(&v, 0, sizeof(v));
	v.published_ns = published;
	v.max_age_ns = 5000000000ULL;
	v.flags = flags;
	CHECK_INT(bpf_map_update_elem(fd, &k, &v, BPF_ANY), 0);
}

/* Ethernet + IPv4 + TCP (no options) to |dst|:|port|. */
static size_t pkt4(uint8_t *b, const char *dst, uint16_t port, bool syn, bool ack)
{
	memset(b, 0, 54);
	b[12] = 0x08; /* ETH_P_IP */
	uint8_t *ip = b + 14;
	ip[0] = 0x45;
	ip[3] = 40; /* total length */
	ip[8] = 64;
	ip[9] = 6; /* TCP */
	inet_pton(AF_INET, "10.9.9.9", ip + 12);
	inet_pton(AF_INET, dst, ip + 16);
	uint8_t *tcp = ip + 20;
	tcp[0] = 0x9c;
	tcp[1] = 0x40; /* source port 40000 */
	tcp[2] = (uint8_t)(port >> 8);
	tcp[3] = (uint8_t)port;
	tcp[12] = 5 << 4;
	tcp[13] = (uint8_t)((syn ? 0x02 : 0) | (ack ? 0x10 : 0));
	return 54;
}

static int run_xdp(int prog, uint8_t *pkt, size_t len)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt, .data_size_in = (uint32_t)len,
		    .repeat = 1);
	int r = bpf_prog_test_run_opts(prog, &o);
	CHECK_INT(r, 0);
	return r ? -1 : (int)o.retval;
}

static void vip_stats(int fd, const char *ip, uint16_t port, struct kepp_vip_stats *sum)
{
	int ncpu = libbpf_num_possible_cpus();
	struct kepp_vip_stats *per = calloc((size_t)ncpu, sizeof(*per));
	struct kepp_svc_key k = vip_key(ip, port);
	memset(sum, 0, sizeof(*sum));
	if (per && bpf_map_lookup_elem(fd, &k, per) == 0)
		for (int c = 0; c < ncpu; c++) {
			sum->packets += per[c].packets;
			sum->bytes += per[c].bytes;
			sum->syn_shed += per[c].syn_shed;
		}
	free(per);
}

static void test_xdp_counts_and_sheds(void)
{
	struct kepp_xdp_bpf *skel = kepp_xdp_bpf__open();
	int err = skel ? 0 : -errno;
	if (skel) {
		unpin_all(skel->obj);
		err = kepp_xdp_bpf__load(skel);
	}
	if (!can_run("xdp", err)) {
		kepp_xdp_bpf__destroy(skel);
		return;
	}
	int prog = bpf_program__fd(skel->progs.kepp_xdp);
	int svc = bpf_map__fd(skel->maps.kepp_svc_v1);
	int vip = bpf_map__fd(skel->maps.kepp_vip_v1);
	uint8_t pkt[64];
	size_t n;

	/* Not a service: passes, not counted. */
	n = pkt4(pkt, "10.1.1.1", 80, true, false);
	CHECK_INT(run_xdp(prog, pkt, n), XDP_PASS);
	struct kepp_vip_stats st;
	vip_stats(vip, "10.1.1.1", 80, &st);
	CHECK_INT(st.packets, 0);

	/* A service, not saturated: SYN passes and is counted. */
	put_svc(svc, "10.1.1.1", 80, KEPP_SVC_SHEDDABLE, mono_ns());
	CHECK_INT(run_xdp(prog, pkt, n), XDP_PASS);
	vip_stats(vip, "10.1.1.1", 80, &st);
	CHECK_INT(st.packets, 1);
	CHECK_INT(st.bytes, 54);
	CHECK_INT(st.syn_shed, 0);

	/* Saturated and sheddable: SYNs drop, the rest of a connection passes. */
	put_svc(svc, "10.1.1.1", 80, KEPP_SVC_SHEDDABLE | KEPP_SVC_SATURATED, mono_ns());
	CHECK_INT(run_xdp(prog, pkt, n), XDP_DROP);
	n = pkt4(pkt, "10.1.1.1", 80, true, true);
	CHECK_INT(run_xdp(prog, pkt, n), XDP_PASS); /* SYN-ACK */
	n = pkt4(pkt, "10.1.1.1", 80, false, true);
	CHECK_INT(run_xdp(prog, pkt, n), XDP_PASS);
	vip_stats(vip, "10.1.1.1", 80, &st);
	CHECK_INT(st.packets, 4);
	CHECK_INT(st.syn_shed, 1);

	/* Saturated but not sheddable (critical): passes. */
	put_svc(svc, "10.1.1.1", 80, KEPP_SVC_SATURATED, mono_ns());
	n = pkt4(pkt, "10.1.1.1", 80, true, false);
	CHECK_INT(run_xdp(prog, pkt, n), XDP_PASS);
	/* A stale table (kepp gone): its saturation is not trusted. */
	put_svc(svc, "10.1.1.1", 80, KEPP_SVC_SHEDDABLE | KEPP_SVC_SATURATED,
		mono_ns() - 10000000000ULL);
	CHECK_INT(run_xdp(prog, pkt, n), XDP_PASS);
	/* Another port of the VIP is another service. */
	n = pkt4(pkt, "10.1.1.1", 81, true, false);
	CHECK_INT(run_xdp(prog, pkt, n), XDP_PASS);
	vip_stats(vip, "10.1.1.1", 81, &st);
	CHECK_INT(st.packets, 0);
	/* Truncated packets pass without being read past their end. */
	n = pkt4(pkt, "10.1.1.1", 80, true, false);
	for (size_t cut = 0; cut < n; cut += 7)
		CHECK_INT(run_xdp(prog, pkt, cut < 14 ? 14 : cut), XDP_PASS);
	kepp_xdp_bpf__destroy(skel);
}

static int run_sk_lookup(int prog, const char *dst, uint16_t port, uint8_t proto,
			 uint64_t *cookie)
{
	struct bpf_sk_lookup ctx;
	memset(&ctx, 0, sizeof(ctx));
	ctx.family = AF_INET;
	ctx.protocol = proto;
	inet_pton(AF_INET, "10.9.9.9", &ctx.remote_ip4);
	ctx.remote_port = htons(40000);
	inet_pton(AF_INET, dst, &ctx.local_ip4);
	ctx.local_port = port; /* host order */
	LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx),
		    .ctx_out = &ctx, .ctx_size_out = sizeof(ctx));
	int r = bpf_prog_test_run_opts(prog, &o);
	CHECK_INT(r, 0);
	*cookie = ctx.cookie;
	return r ? -1 : (int)o.retval;
}

static void test_sk_lookup_fallback(void)
{
	struct kepp_sklookup_bpf *skel = kepp_sklookup_bpf__open();
	int err = skel ? 0 : -errno;
	if (skel) {
		unpin_all(skel->obj);
		err = kepp_sklookup_bpf__load(skel);
	}
	if (!can_run("sk_lookup", err)) {
		kepp_sklookup_bpf__destroy(skel);
		return;
	}
	int prog = bpf_program__fd(skel->progs.kepp_sk_lookup);
	int svc = bpf_map__fd(skel->maps.kepp_svc_v1);
	int fb = bpf_map__fd(skel->maps.kepp_fb_v1);
	uint64_t cookie = 1;

	put_svc(svc, "10.1.1.1", 80, 0, mono_ns());
	/* No fallback listener yet: pass, nothing selected. */
	CHECK_INT(run_sk_lookup(prog, "10.1.1.1", 80, IPPROTO_TCP, &cookie), SK_PASS);
	CHECK_INT(cookie, 0);

	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	CHECK(l >= 0 && bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(l, 8) == 0);
	uint64_t want = 0;
	socklen_t sl = sizeof(want);
	CHECK_INT(getsockopt(l, SOL_SOCKET, SO_COOKIE, &want, &sl), 0);
	uint32_t zero = 0;
	uint64_t fd = (uint64_t)l;
	CHECK_INT(bpf_map_update_elem(fb, &zero, &fd, BPF_ANY), 0);

	CHECK_INT(run_sk_lookup(prog, "10.1.1.1", 80, IPPROTO_TCP, &cookie), SK_PASS);
	CHECK(want != 0);
	CHECK_INT(cookie, want);
	/* Other ports, addresses and UDP are not ours. */
	CHECK_INT(run_sk_lookup(prog, "10.1.1.1", 81, IPPROTO_TCP, &cookie), SK_PASS);
	CHECK_INT(cookie, 0);
	CHECK_INT(run_sk_lookup(prog, "10.1.1.2", 80, IPPROTO_TCP, &cookie), SK_PASS);
	CHECK_INT(cookie, 0);
	CHECK_INT(run_sk_lookup(prog, "10.1.1.1", 80, IPPROTO_UDP, &cookie), SK_PASS);
	CHECK_INT(cookie, 0);
	close(l);
	kepp_sklookup_bpf__destroy(skel);
}

/* A socket connected to |l| (loopback), and its accepted peer in *peer. */
static int connect_to(int l, int *peer)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(c >= 0);
	CHECK_INT(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
	CHECK_INT(connect(c, (struct sockaddr *)&sa, sl), 0);
	*peer = accept(l, NULL, NULL);
	CHECK(*peer >= 0);
	return c;
}

/* What connect leaves on a steered socket: its backend. */
static void steer_state(int sk_map, int fd, const char *ip, uint16_t port)
{
	struct kepp_sk_state st;
	memset(&st, 0, sizeof(st));
	st.backend.ip[2] = htonl(0xffff);
	inet_pton(AF_INET, ip, &st.backend.ip[3]);
	st.backend.port = htons(port);
	st.flags = KEPP_SK_STEERED | KEPP_SK_COUNTED;
	CHECK_INT(bpf_map_update_elem(sk_map, &fd, &st, BPF_NOEXIST), 0);
}

/* Whether |fd| still carries data: |peer| sends a byte, |fd| reads it. */
static bool alive(int fd, int peer)
{
	char b = 0;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return send(peer, "x", 1, MSG_NOSIGNAL) == 1 && poll(&p, 1, 1000) == 1 &&
	       recv(fd, &b, 1, 0) == 1 && b == 'x';
}

static void test_drain_closes_steered_sockets(void)
{
	struct kepp_drain_bpf *skel = kepp_drain_bpf__open();
	int err = skel ? 0 : -errno;
	if (skel) {
		unpin_all(skel->obj);
		err = kepp_drain_bpf__load(skel);
	}
	if (!can_run("kepp_drain", err)) {
		kepp_drain_bpf__destroy(skel);
		return;
	}
	int sk_map = bpf_map__fd(skel->maps.kepp_sk_v1);
	int drain = bpf_map__fd(skel->maps.kepp_drain_v1);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	CHECK(l >= 0 && bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(l, 8) == 0);
	CHECK_INT(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
	uint16_t port = ntohs(sa.sin_port);

	/* gone: steered to the backend that left; live: steered elsewhere;
	 * plain: never steered (a scrape, a proxy connection), same peer. */
	int gone_peer, live_peer, plain_peer;
	int gone = connect_to(l, &gone_peer), live = connect_to(l, &live_peer),
	    plain = connect_to(l, &plain_peer);
	steer_state(sk_map, gone, "127.0.0.1", port);
	steer_state(sk_map, live, "127.0.0.2", port);

	struct kepp_addr k;
	memset(&k, 0, sizeof(k));
	k.ip[2] = htonl(0xffff);
	k.ip[3] = htonl(INADDR_LOOPBACK);
	k.port = htons(port);
	struct kepp_drain d = {0};
	CHECK_INT(bpf_map_update_elem(drain, &k, &d, BPF_ANY), 0);

	struct bpf_link *link = bpf_program__attach_iter(skel->progs.kepp_drain, NULL);
	CHECK(link != NULL);
	int it = link ? bpf_iter_create(bpf_link__fd(link)) : -1;
	CHECK(it >= 0);
	char buf[64];
	ssize_t n;
	while (it >= 0 && (n = read(it, buf, sizeof(buf))) > 0)
		;
	if (it >= 0)
		close(it);
	bpf_link__destroy(link);

	CHECK_INT(bpf_map_lookup_elem(drain, &k, &d), 0);
	CHECK_INT(d.destroyed, 1);
	/* The drained socket is aborted; its peer got a reset. */
	char b;
	errno = 0;
	CHECK_INT(recv(gone, &b, 1, MSG_DONTWAIT), -1);
	CHECK_INT(errno, ECONNABORTED);
	struct pollfd p = {.fd = gone_peer, .events = POLLIN};
	CHECK_INT(poll(&p, 1, 1000), 1);
	errno = 0;
	CHECK(recv(gone_peer, &b, 1, 0) <= 0);
	/* The others are untouched. */
	CHECK(alive(live, live_peer));
	CHECK(alive(plain, plain_peer));
	int fds[] = {gone, gone_peer, live, live_peer, plain, plain_peer, l};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		close(fds[i]);
	kepp_drain_bpf__destroy(skel);
}

/* "processed N insns" of a verifier log, or -1. */
static long verified_insns(const char *log)
{
	const char *p = strstr(log, "processed ");
	return p ? strtol(p + 10, NULL, 10) : -1;
}

/* Programs BPF_PROG_TEST_RUN cannot run (cgroup sock_addr, sockops) still
 * pass the verifier here; tests/integration/test_kernel.py runs them. The
 * connect programs must also stay well inside the verifier's budget of a
 * million instructions (they once took 789,089 of it, one affinity index
 * away from a refusal). */
static void test_cgroup_objects_load(void)
{
	static char log4[1 << 16], log6[1 << 16];
	struct kepp_sock_bpf *sock = kepp_sock_bpf__open();
	int err = sock ? 0 : -errno;
	if (sock) {
		unpin_all(sock->obj);
		bpf_program__set_log_buf(sock->progs.kepp_connect4, log4, sizeof(log4));
		bpf_program__set_log_level(sock->progs.kepp_connect4, 4); /* stats only */
		bpf_program__set_log_buf(sock->progs.kepp_connect6, log6, sizeof(log6));
		bpf_program__set_log_level(sock->progs.kepp_connect6, 4);
		err = kepp_sock_bpf__load(sock);
	}
	if (can_run("kepp_sock", err)) {
		long n4 = verified_insns(log4), n6 = verified_insns(log6);
		CHECK(n4 > 0 && n4 < 250000);
		CHECK(n6 > 0 && n6 < 250000);
		if (n4 >= 250000 || n6 >= 250000)
			fprintf(stderr, "  verifier: connect4 %ld, connect6 %ld instructions\n", n4, n6);
		struct kepp_sockops_bpf *ops = kepp_sockops_bpf__open();
		err = ops ? 0 : -errno;
		if (ops) {
			unpin_all(ops->obj);
			err = kepp_sockops_bpf__load(ops);
		}
		can_run("kepp_sockops", err);
		kepp_sockops_bpf__destroy(ops);
	}
	kepp_sock_bpf__destroy(sock);
}

int main(void)
{
	libbpf_set_print(quiet);
	RUN(test_cgroup_objects_load);
	RUN(test_xdp_counts_and_sheds);
	RUN(test_sk_lookup_fallback);
	RUN(test_drain_closes_steered_sockets);
	return harness_done();
}
