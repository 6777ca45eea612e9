/* The BPF programs under BPF_PROG_TEST_RUN, where the kernel allows it: XDP
 * (per-VIP counters, SYN shedding) and sk_lookup (the fallback listener).
 * Needs root and BPF; under CI=true a test that cannot run fails, elsewhere
 * it says SKIP loudly. Maps are created unpinned: nothing is left behind. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "harness.h"
#include "kepp_abi.h"
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

/* Programs BPF_PROG_TEST_RUN cannot run (cgroup sock_addr, sockops) still
 * pass the verifier here; tests/integration/test_kernel.py runs them. */
static void test_cgroup_objects_load(void)
{
	struct kepp_sock_bpf *sock = kepp_sock_bpf__open();
	int err = sock ? 0 : -errno;
	if (sock) {
		unpin_all(sock->obj);
		err = kepp_sock_bpf__load(sock);
	}
	if (can_run("kepp_sock", err)) {
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
	return harness_done();
}
