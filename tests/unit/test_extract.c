#include <errno.h>
#include <stdlib.h>

#include "harness.h"
#include "metrics/metrics.h"

static const sched_engine *engine(const char *name)
{
	size_t n;
	const sched_engine *e = sched_builtin_engines(&n);
	for (size_t i = 0; i < n; i++)
		if (strcmp(e[i].name, name) == 0)
			return &e[i];
	return NULL;
}

static int run(const char *eng, const char *body, store_metrics *m, arena *a, char *err)
{
	mx_engine *e = mx_engine_new(engine(eng), err, 256);
	CHECK(e != NULL);
	if (!e)
		return -1;
	int rc = mx_extract(e, body, strlen(body), a, m, err, 256);
	mx_engine_free(e);
	return rc;
}

static void test_vllm(void)
{
	const char *b =
		"# TYPE vllm:num_requests_waiting gauge\n"
		"vllm:num_requests_waiting{model_name=\"m\"} 4.0\n"
		"# TYPE vllm:num_requests_running gauge\n"
		"vllm:num_requests_running{model_name=\"m\"} 7.0\n"
		"# TYPE vllm:kv_cache_usage_perc gauge\n"
		"vllm:kv_cache_usage_perc{model_name=\"m\"} 0.42\n"
		"# TYPE vllm:lora_requests_info gauge\n"
		"vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"a1, a2\","
		"waiting_lora_adapters=\"\"} 1.7e9\n"
		"vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"old\","
		"waiting_lora_adapters=\"w\"} 1.6e9\n"
		"vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\" a3 ,a4,\","
		"waiting_lora_adapters=\" w1 \"} 1.8e9\n"
		"vllm:lora_requests_info{max_lora=\"9\",running_lora_adapters=\"\","
		"waiting_lora_adapters=\"\"} 1.9e9\n"
		"# TYPE vllm:cache_config_info gauge\n"
		"vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"2048\"} 1\n";
	store_metrics m = {0};
	arena a;
	arena_init(&a, 0);
	char err[256];
	CHECK_INT(run("vllm", b, &m, &a, err), 5);
	CHECK_STR(err, "");
	CHECK(m.waiting_queue == 4.0);
	CHECK(m.running == 7.0);
	CHECK(m.kv_usage == 0.42);
	/* The largest value wins; the empty-lists series is ignored. */
	CHECK_INT(m.max_lora, 4);
	CHECK_INT(m.n_active_models, 2);
	if (m.n_active_models == 2) {
		CHECK_STR(m.active_models[0], "a3");
		CHECK_STR(m.active_models[1], "a4");
	}
	CHECK_INT(m.n_waiting_models, 1);
	if (m.n_waiting_models == 1)
		CHECK_STR(m.waiting_models[0], "w1");
	CHECK_INT(m.cache_block_size, 16);
	CHECK_INT(m.cache_num_blocks, 2048);
	CHECK(!m.valid);
	CHECK_INT(m.update_ms, 0);
	arena_free(&a);
}

static void test_missing_and_bad_keep_old(void)
{
	store_metrics m = {.waiting_queue = 9, .running = 8, .kv_usage = 0.5, .max_lora = 3};
	const char *names[] = {"keep"};
	m.active_models = names;
	m.n_active_models = 1;
	arena a;
	arena_init(&a, 0);
	char err[256];
	/* running is untyped (not gauge/counter), kv missing, LoRA only empty. */
	const char *b = "# TYPE vllm:num_requests_waiting gauge\n"
			"vllm:num_requests_waiting 2\n"
			"vllm:num_requests_running 1\n"
			"# TYPE vllm:lora_requests_info gauge\n"
			"vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"\"} 5\n";
	CHECK_INT(run("vllm", b, &m, &a, err), 1);
	CHECK(m.waiting_queue == 2);
	CHECK(m.running == 8);
	CHECK(m.kv_usage == 0.5);
	CHECK_INT(m.n_active_models, 1);
	CHECK(m.active_models == names);
	CHECK(strstr(err, "runningRequests: metric \"vllm:num_requests_running\" is neither") !=
	      NULL);
	/* A body that does not parse changes nothing. */
	CHECK_INT(run("vllm", "vllm:num_requests_waiting 5\nbad line here\n", &m, &a, err),
		  -EINVAL);
	CHECK(m.waiting_queue == 2);
	CHECK(strstr(err, "line 2:") != NULL);
	/* Nothing of ours in the body: zero extracted, the family named. */
	CHECK_INT(run("vllm", "# TYPE other gauge\nother 1\n", &m, &a, err), 0);
	CHECK(strstr(err, "metric family \"vllm:num_requests_waiting\" not found") != NULL);
	arena_free(&a);
}

static void test_sglang(void)
{
	const char *b = "# TYPE sglang:num_queue_reqs gauge\n"
			"sglang:num_queue_reqs{model_name=\"m\"} 3\n"
			"# TYPE sglang:num_running_reqs gauge\n"
			"sglang:num_running_reqs{model_name=\"m\"} 2\n"
			"# TYPE sglang:token_usage gauge\n"
			"sglang:token_usage{model_name=\"m\"} 0.25\n"
			"# TYPE sglang:cache_config_info gauge\n"
			"sglang:cache_config_info{page_size=\"64\",num_pages=\"1000\"} 1\n";
	store_metrics m = {0};
	arena a;
	arena_init(&a, 0);
	char err[256];
	CHECK_INT(run("sglang", b, &m, &a, err), 4);
	CHECK(m.waiting_queue == 3 && m.running == 2 && m.kv_usage == 0.25);
	CHECK_INT(m.cache_block_size, 64);
	CHECK_INT(m.cache_num_blocks, 1000);
	/* vllm's mapping finds none of it. */
	store_metrics v = {0};
	CHECK_INT(run("vllm", b, &v, &a, err), 0);
	arena_free(&a);
}

static void test_trtllm(void)
{
	const char *serve = "# TYPE trtllm_num_requests_waiting gauge\n"
			    "trtllm_num_requests_waiting 6\n"
			    "# TYPE trtllm_num_requests_running gauge\n"
			    "trtllm_num_requests_running 5\n"
			    "# TYPE trtllm_kv_cache_utilization gauge\n"
			    "trtllm_kv_cache_utilization 0.75\n"
			    "# TYPE trtllm_kv_cache_tokens_per_block gauge\n"
			    "trtllm_kv_cache_tokens_per_block 32\n"
			    "# TYPE trtllm_kv_cache_max_blocks gauge\n"
			    "trtllm_kv_cache_max_blocks 4096\n";
	store_metrics m = {0};
	arena a;
	arena_init(&a, 0);
	char err[256];
	CHECK_INT(run("trtllm-serve", serve, &m, &a, err), 5);
	CHECK(m.waiting_queue == 6 && m.running == 5 && m.kv_usage == 0.75);
	CHECK_INT(m.cache_block_size, 32);
	CHECK_INT(m.cache_num_blocks, 4096);

	/* Triton: label selectors; the greatest timestamp wins among matches. */
	const char *triton =
		"# TYPE nv_trt_llm_request_metrics gauge\n"
		"nv_trt_llm_request_metrics{model=\"x\",request_type=\"context\"} 99\n"
		"nv_trt_llm_request_metrics{model=\"x\",request_type=\"waiting\"} 1 100\n"
		"nv_trt_llm_request_metrics{model=\"x\",request_type=\"waiting\"} 2 300\n"
		"nv_trt_llm_request_metrics{model=\"x\",request_type=\"waiting\"} 3 200\n"
		"nv_trt_llm_request_metrics{model=\"x\",request_type=\"scheduled\"} 4\n"
		"nv_trt_llm_request_metrics{model=\"x\",request_type=\"scheduled\"} 5\n"
		"# TYPE nv_trt_llm_kv_cache_block_metrics gauge\n"
		"nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"fraction\"} 0.5\n"
		"nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"tokens_per\"} 64\n"
		"nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\"} 512\n";
	memset(&m, 0, sizeof(m));
	CHECK_INT(run("triton-tensorrt-llm", triton, &m, &a, err), 5);
	CHECK(m.waiting_queue == 2);
	CHECK(m.running == 4); /* no timestamps: the first match */
	CHECK(m.kv_usage == 0.5);
	CHECK_INT(m.cache_block_size, 64);
	CHECK_INT(m.cache_num_blocks, 512);
	arena_free(&a);
}

static void test_custom_specs(void)
{
	sched_engine se = {
		.name = "custom",
		.queued_requests_spec = "q{kind=\"a b\", __x=\"ignored\", other!=\"z\"}",
		.running_requests_spec = "",
		.kv_usage_spec = "kv",
		.lora_spec = "",
		.cache_info_spec = "ci",
		.cache_block_size_label = "bs",
		.cache_num_blocks_label = "nb",
	};
	char err[256];
	mx_engine *e = mx_engine_new(&se, err, sizeof(err));
	CHECK(e != NULL);
	if (!e)
		return;
	CHECK_STR(mx_engine_name(e), "custom");
	const char *b = "# TYPE q counter\nq{kind=\"b\"} 1\nq{kind=\"a b\",other=\"z\"} 2\n"
			"# TYPE kv gauge\nkv 0.1\n"
			"# TYPE ci gauge\nci{bs=\"8\",nb=\"x\"} 1\n";
	store_metrics m = {0};
	arena a;
	arena_init(&a, 0);
	CHECK_INT(mx_extract(e, b, strlen(b), &a, &m, err, sizeof(err)), 3);
	CHECK(m.waiting_queue == 2);
	CHECK(m.kv_usage == 0.1);
	CHECK_INT(m.cache_block_size, 8);
	CHECK_INT(m.cache_num_blocks, 0);
	CHECK(strstr(err, "cacheInfo: no valid label \"nb\"") != NULL);
	mx_engine_free(e);
	arena_free(&a);

	sched_engine bad = {.name = "bad", .kv_usage_spec = "kv{a=}"};
	CHECK(mx_engine_new(&bad, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "engine \"bad\": invalid metric specification \"kv{a=}\"") != NULL);
	bad.kv_usage_spec = "1kv";
	CHECK(mx_engine_new(&bad, err, sizeof(err)) == NULL);
	bad.kv_usage_spec = "kv{a=\"b\"";
	CHECK(mx_engine_new(&bad, err, sizeof(err)) == NULL);
}

int main(void)
{
	RUN(test_vllm);
	RUN(test_missing_and_bad_keep_old);
	RUN(test_sglang);
	RUN(test_trtllm);
	RUN(test_custom_specs);
	return harness_done();
}
