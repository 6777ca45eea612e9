/* bench-extproc: ext_proc load generator that plays Envoy against kepp (or
 * any ext_proc server): many HTTP/2 connections, many concurrent Process
 * streams each, the FULL_DUPLEX_STREAMED message sequence per request
 * (client.c), open loop at a fixed rate or closed loop at a fixed
 * concurrency. Reports requests per second, the decision latency
 * percentiles, and with --pid the server's CPU seconds per request
 * (/proc/PID/stat utime+stime over the measured window) and peak RSS
 * (VmHWM).
 *
 *   bench-extproc --port 9002 --pid $(pidof kepp) --body 1k --duration 5
 *   bench-extproc --port 9002 --rate 5000 --body 1k --json
 *
 * tools/bench/extproc/run.py runs the whole comparison. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/units.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench-extproc [flags]\n"
		"  --host IP             server address (127.0.0.1)\n"
		"  --port N              ext_proc port (9002)\n"
		"  --tls                 TLS with ALPN h2 (certificate not verified, as gateways do)\n"
		"  --conns N             HTTP/2 connections (4)\n"
		"  --streams N           concurrent streams per connection (16); in open loop\n"
		"                        the most in flight per connection\n"
		"  --rate R              open loop at R requests/s (default: closed loop)\n"
		"  --duration S          measured seconds (5)\n"
		"  --warmup S            seconds before the measured window (1)\n"
		"  --body SIZE           request body bytes: 1k, 16k, 256k, 1Mi, ... (1k)\n"
		"  --chunk SIZE          body bytes per request_body message (16k: one HTTP/2\n"
		"                        DATA frame of the downstream, as Envoy forwards them)\n"
		"  --variants N          distinct prompts, in groups of 4 sharing a prefix (64;\n"
		"                        fewer when they would take more than 64 MiB)\n"
		"  --pace-us U           hand over one body message every U microseconds (a\n"
		"                        client uploading at a bounded rate; default: all at once)\n"
		"  --trailers            end the request with request_trailers, not end_of_stream\n"
		"  --response            run the response phases (headers, body) too\n"
		"  --unique              a new prompt prefix on every request (fills the\n"
		"                        prefix-cache index; costs the client a body copy)\n"
		"  --objectives N        x-gateway-inference-objective: obj-<i mod N>\n"
		"  --model NAME          model in the body (meta-llama/Llama-3.1-8B-Instruct)\n"
		"  --pid PID             server process: CPU per request, VmHWM, VmRSS\n"
		"  --idle S              sample the server's idle CPU for S seconds first (0)\n"
		"  --rss-every S         sample the server's VmRSS every S seconds\n"
		"  --label TEXT          name printed with the results\n"
		"  --json                one JSON object on stdout\n");
}

static int size_arg(const char *v, size_t *out)
{
	int64_t n;
	char buf[32];
	size_t l = strlen(v);
	/* Accept "1k"/"1m" as KiB/MiB too, besides Kubernetes quantities. */
	if (l && l < sizeof(buf) - 2 && (v[l - 1] == 'k' || v[l - 1] == 'm' || v[l - 1] == 'K' ||
					  v[l - 1] == 'M')) {
		memcpy(buf, v, l - 1);
		buf[l - 1] = v[l - 1] == 'k' || v[l - 1] == 'K' ? 'K' : 'M';
		buf[l] = 'i';
		buf[l + 1] = 0;
		v = buf;
	}
	if (units_quantity(v, &n) < 0 || n < 0)
		return -1;
	*out = (size_t)n;
	return 0;
}

int main(int argc, char **argv)
{
	bench_opts o = {
		.host = "127.0.0.1",
		.port = 9002,
		.conns = 4,
		.streams = 16,
		.duration = 5,
		.warmup = 1,
		.body_size = 1024,
		.chunk = 16384,
		.variants = 64,
		.model = "meta-llama/Llama-3.1-8B-Instruct",
	};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		int bad = 0;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--tls")) {
			o.tls = true;
		} else if (!strcmp(a, "--trailers")) {
			o.trailers = true;
		} else if (!strcmp(a, "--response")) {
			o.response = true;
		} else if (!strcmp(a, "--unique")) {
			o.unique = true;
		} else if (!strcmp(a, "--json")) {
			o.json = true;
		} else if (!v) {
			bad = 1;
		} else if (++i, !strcmp(a, "--host")) {
			o.host = v;
		} else if (!strcmp(a, "--port")) {
			o.port = atoi(v);
		} else if (!strcmp(a, "--conns")) {
			o.conns = atoi(v);
		} else if (!strcmp(a, "--streams")) {
			o.streams = atoi(v);
		} else if (!strcmp(a, "--rate")) {
			o.rate = atof(v);
		} else if (!strcmp(a, "--duration")) {
			o.duration = atof(v);
		} else if (!strcmp(a, "--warmup")) {
			o.warmup = atof(v);
		} else if (!strcmp(a, "--body")) {
			bad = size_arg(v, &o.body_size);
		} else if (!strcmp(a, "--chunk")) {
			bad = size_arg(v, &o.chunk);
		} else if (!strcmp(a, "--pace-us")) {
			o.pace_us = atof(v);
		} else if (!strcmp(a, "--variants")) {
			o.variants = atoi(v);
		} else if (!strcmp(a, "--objectives")) {
			o.objectives = atoi(v);
		} else if (!strcmp(a, "--model")) {
			o.model = v;
		} else if (!strcmp(a, "--pid")) {
			o.pid = atoi(v);
		} else if (!strcmp(a, "--idle")) {
			o.idle = atof(v);
		} else if (!strcmp(a, "--rss-every")) {
			o.rss_every = atof(v);
		} else if (!strcmp(a, "--label")) {
			o.label = v;
		} else {
			bad = 1;
		}
		if (bad) {
			fprintf(stderr, "bench-extproc: bad flag or value: %s\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (o.conns < 1 || o.conns > 4096 || o.streams < 1 || o.streams > 1000 || o.chunk < 1 ||
	    o.chunk > (16u << 20) || o.body_size > (64u << 20) || o.variants < 1 ||
	    o.variants > 1024 || o.duration <= 0 || o.warmup < 0 || o.rate < 0 || o.idle < 0 ||
	    o.rss_every < 0 || o.pace_us < 0 || (o.pace_us > 0 && o.unique) || o.port < 1 ||
	    o.port > 65535 || strlen(o.model) > 256) {
		fprintf(stderr, "bench-extproc: a flag is out of range\n");
		usage(stderr);
		return 2;
	}
	/* The encoded bodies stay in memory for the whole run. */
	while (o.variants > 1 && o.body_size * (size_t)o.variants > (64u << 20))
		o.variants /= 2;
	return bench_run(&o);
}
