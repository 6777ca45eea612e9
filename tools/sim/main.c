/* kepp-sim entry point: flags, instances on consecutive addresses, one event
 * loop, clean exit on SIGTERM/SIGINT. */
#include "sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>

#include "util/log.h"
#include "util/rand.h"

enum ftype { F_INT, F_LONG, F_DBL, F_STR, F_ENGINE, F_MXFAULT, F_ADDR, F_U64 };

struct flag {
	const char *name;
	enum ftype type;
	void *ptr;
	double min, max;
	const char *help;
};

static struct sim_config cfg = {
	.instances = 1,
	.port = 8000,
	.engine = SIM_VLLM,
	.model = "meta-llama/Llama-3.1-8B-Instruct",
	.loras = "",
	.max_num_seqs = 64,
	.max_num_batched_tokens = 8192,
	.num_gpu_blocks = 4096,
	.block_size = 16,
	.max_loras = 4,
	.max_waiting = 10000,
	.output_tokens = 16,
	.time_scale = 1.0,
	.decode_ms = 10,
	.decode_ms_per_seq = 0.2,
	.prefill_ms_per_token = 0.05,
	.lora_load_ms = 100,
	.max_body_bytes = 8 << 20,
	.metrics_delay_ms = 2000,
};
static int verbosity = LOG_DEFAULT;

static const struct flag flags[] = {
	{ "instances", F_INT, &cfg.instances, 1, 4096, "simulated servers in this process" },
	{ "base-addr", F_ADDR, &cfg.base_addr, 0, 0, "IPv4 address of instance 0; instance i "
	  "listens on base-addr + i (default 127.0.1.1)" },
	{ "port", F_INT, &cfg.port, 1, 65535, "port of every instance" },
	{ "engine", F_ENGINE, &cfg.engine, 0, 0, "metric names: vllm, sglang, trtllm-serve" },
	{ "model", F_STR, &cfg.model, 0, 0, "base model name" },
	{ "lora", F_STR, &cfg.loras, 0, 0, "comma list of LoRA adapters registered at start" },
	{ "max-num-seqs", F_INT, &cfg.max_num_seqs, 1, 1 << 16, "largest running batch" },
	{ "max-num-batched-tokens", F_INT, &cfg.max_num_batched_tokens, 1, 1 << 24,
	  "prefill tokens admitted per step (one request always fits)" },
	{ "num-gpu-blocks", F_INT, &cfg.num_gpu_blocks, 1, 1 << 24, "KV cache blocks" },
	{ "block-size", F_INT, &cfg.block_size, 1, 4096, "tokens per KV cache block" },
	{ "max-model-len", F_INT, &cfg.max_model_len, 1, 1 << 24, "largest prompt plus output "
	  "(default min(8192, KV cache tokens))" },
	{ "max-loras", F_INT, &cfg.max_loras, 1, 64, "LoRA adapters resident at once" },
	{ "lora-load-ms", F_DBL, &cfg.lora_load_ms, 0, 1e6, "step time added per adapter load" },
	{ "max-waiting", F_INT, &cfg.max_waiting, 1, 1 << 24, "waiting queue bound (then 503)" },
	{ "output-tokens", F_INT, &cfg.output_tokens, 1, 1 << 20, "tokens generated when a "
	  "request sets no max_tokens" },
	{ "decode-ms", F_DBL, &cfg.decode_ms, 0, 1e6, "base step time" },
	{ "decode-ms-per-seq", F_DBL, &cfg.decode_ms_per_seq, 0, 1e6, "step time per running "
	  "request" },
	{ "prefill-ms-per-token", F_DBL, &cfg.prefill_ms_per_token, 0, 1e6, "step time per "
	  "uncached prompt token" },
	{ "time-scale", F_DBL, &cfg.time_scale, 0, 1e6, "wall-clock time per modelled time "
	  "(0.1: ten times faster)" },
	{ "max-body-bytes", F_LONG, &cfg.max_body_bytes, 64, 1 << 30, "largest request body "
	  "(then 413)" },
	{ "metrics-fault", F_MXFAULT, &cfg.metrics_fault, 0, 0, "/metrics: ok, slow, fail, "
	  "garbage" },
	{ "metrics-delay-ms", F_INT, &cfg.metrics_delay_ms, 0, 600000, "delay of a slow "
	  "/metrics" },
	{ "http5xx", F_DBL, &cfg.http5xx, 0, 1, "share of inference requests answered 503" },
	{ "drop", F_DBL, &cfg.drop, 0, 1, "share of inference connections dropped unanswered" },
	{ "seed", F_U64, &cfg.seed, 0, 0, "random seed (0: from the kernel)" },
	{ "v", F_INT, &verbosity, -2, 10, "log verbosity" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: sim [--flag value | --flag=value]...\n");
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		fprintf(f, "  --%-24s %s\n", flags[i].name, flags[i].help);
}

static int set_flag(const struct flag *f, const char *v)
{
	char *end;
	double d;

	switch (f->type) {
	case F_STR:
		*(const char **)f->ptr = v;
		return 0;
	case F_ENGINE:
		if (!strcmp(v, "vllm"))
			*(enum sim_engine_kind *)f->ptr = SIM_VLLM;
		else if (!strcmp(v, "sglang"))
			*(enum sim_engine_kind *)f->ptr = SIM_SGLANG;
		else if (!strcmp(v, "trtllm-serve"))
			*(enum sim_engine_kind *)f->ptr = SIM_TRTLLM;
		else
			return -EINVAL;
		return 0;
	case F_MXFAULT: {
		int m = sim_metrics_fault_parse(v);

		if (m < 0)
			return m;
		*(enum sim_metrics_fault *)f->ptr = m;
		return 0;
	}
	case F_ADDR: {
		struct in_addr a;

		if (inet_pton(AF_INET, v, &a) != 1)
			return -EINVAL;
		*(uint32_t *)f->ptr = ntohl(a.s_addr);
		return 0;
	}
	case F_U64:
		errno = 0;
		*(uint64_t *)f->ptr = strtoull(v, &end, 0);
		return errno || !*v || *end ? -EINVAL : 0;
	default:
		break;
	}
	errno = 0;
	d = strtod(v, &end);
	if (errno || !*v || *end || !(d >= f->min && d <= f->max))
		return -EINVAL;
	if (f->type == F_DBL) {
		*(double *)f->ptr = d;
		return 0;
	}
	if (d != (double)(long)d)
		return -EINVAL;
	if (f->type == F_INT)
		*(int *)f->ptr = (int)d;
	else
		*(long *)f->ptr = (long)d;
	return 0;
}

static int parse_flags(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *eq, *v;
		const struct flag *f = NULL;
		size_t n;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		if (strncmp(a, "--", 2)) {
			fprintf(stderr, "sim: unexpected argument %s\n", a);
			return -EINVAL;
		}
		a += 2;
		eq = strchr(a, '=');
		n = eq ? (size_t)(eq - a) : strlen(a);
		for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++)
			if (strlen(flags[k].name) == n && !strncmp(flags[k].name, a, n))
				f = &flags[k];
		if (!f) {
			fprintf(stderr, "sim: unknown flag --%.*s\n", (int)n, a);
			return -EINVAL;
		}
		if (eq) {
			v = eq + 1;
		} else if (i + 1 < argc) {
			v = argv[++i];
		} else {
			fprintf(stderr, "sim: flag --%s needs a value\n", f->name);
			return -EINVAL;
		}
		if (set_flag(f, v)) {
			fprintf(stderr, "sim: invalid value \"%s\" for flag --%s\n", v, f->name);
			return -EINVAL;
		}
	}
	return 0;
}

static int check_config(void)
{
	long kv_tokens = (long)cfg.num_gpu_blocks * cfg.block_size;

	if (!cfg.max_model_len)
		cfg.max_model_len = kv_tokens < 8192 ? (int)kv_tokens : 8192;
	if (cfg.max_model_len > kv_tokens) {
		fprintf(stderr, "sim: --max-model-len %d exceeds the KV cache (%ld tokens)\n",
			cfg.max_model_len, kv_tokens);
		return -EINVAL;
	}
	if ((uint64_t)cfg.base_addr + (uint64_t)cfg.instances - 1 > 0xffffffffULL) {
		fprintf(stderr, "sim: --base-addr + --instances runs past 255.255.255.255\n");
		return -EINVAL;
	}
	return 0;
}

static int register_loras(struct sim_inst *in)
{
	char *list = strdup(cfg.loras), *save = NULL;
	int err = list ? 0 : -ENOMEM;

	for (char *t = list ? strtok_r(list, ",", &save) : NULL; t && !err;
	     t = strtok_r(NULL, ",", &save)) {
		while (*t == ' ')
			t++;
		if (*t) {
			err = sim_adapter_add(in, t, t);
			if (err)
				fprintf(stderr, "sim: cannot register LoRA adapter \"%s\": %s\n", t,
					strerror(-err));
		}
	}
	free(list);
	return err;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	ulog(LOG_DEFAULT, "simulator stopping", "signal", strsignal((int)sig), NULL);
	event_base_loopexit(arg, NULL);
}

int main(int argc, char **argv)
{
	struct event_base *base;
	struct event *sigterm, *sigint;
	struct sim_inst *insts;
	char fields[256];
	int err = 0, ran = 0;

	cfg.base_addr = 0x7f000101; /* 127.0.1.1 */
	if (parse_flags(argc, argv) || check_config())
		return 2;
	log_set_verbosity(verbosity);
	if (cfg.seed)
		rand_seed(cfg.seed);
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	insts = calloc((size_t)cfg.instances, sizeof(*insts));
	if (!base || !insts) {
		fprintf(stderr, "sim: out of memory\n");
		return 1;
	}
	for (; ran < cfg.instances && !err; ran++) {
		struct sim_inst *in = &insts[ran];
		struct in_addr a = { .s_addr = htonl(cfg.base_addr + (uint32_t)ran) };

		in->idx = ran;
		in->cfg = &cfg;
		in->base = base;
		in->faults = (struct sim_faults){ cfg.metrics_fault, cfg.metrics_delay_ms,
						  cfg.http5xx, cfg.drop };
		inet_ntop(AF_INET, &a, in->addr, sizeof(in->addr));
		snprintf(in->hostport, sizeof(in->hostport), "%s:%d", in->addr, cfg.port);
		err = sim_engine_init(in);
		if (!err)
			err = register_loras(in);
		if (!err) {
			err = sim_http_init(in);
			if (err)
				ulog(LOG_ERROR, "cannot listen", "address", in->hostport, "error",
				     strerror(-err), NULL);
		}
	}
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	if (!err && (!sigterm || !sigint || evsignal_add(sigterm, NULL) ||
		     evsignal_add(sigint, NULL)))
		err = -ENOMEM;
	if (!err) {
		snprintf(fields, sizeof(fields), "\"instances\":%d,\"first\":\"%s\","
			 "\"last\":\"%s\",\"engine\":\"%s\"", cfg.instances, insts[0].hostport,
			 insts[cfg.instances - 1].hostport, cfg.engine == SIM_VLLM ? "vllm" :
			 cfg.engine == SIM_SGLANG ? "sglang" : "trtllm-serve");
		ulog_raw(LOG_DEFAULT, "simulator serving", fields);
		event_base_dispatch(base);
	}
	/* Answer what is in flight, give the answers one loop turn to go out. */
	for (int i = 0; i < ran; i++)
		if (insts[i].adapters)
			sim_engine_abort_all(&insts[i]);
	event_base_loop(base, EVLOOP_NONBLOCK);
	for (int i = 0; i < ran; i++) {
		sim_http_free(&insts[i]);
		sim_engine_free(&insts[i]);
	}
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	free(insts);
	event_base_free(base);
	return err ? 1 : 0;
}
