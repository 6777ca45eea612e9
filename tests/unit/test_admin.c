/* Unit tests for user/admin: the per-worker tables and their bound, bucket
 * edges, Go's float format, the exposition after known decisions (the
 * reference's hermetic lines), error and running counts, the decision trace
 * of sched, and /debug/explain: its table matches the pick of the same
 * request and it records nothing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "admin/adm_int.h"
#include "harness.h"
#include "sched/config.h"
#include "sched/sched.h"
#include "store/store.h"

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool has_line(const adm_buf *b, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = b->p; p && (p = strstr(p, line)); p++)
		if ((p == b->p || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

/* ---- fixtures ---- */

#define NEP 3
static store_endpoint eps[NEP];
static char names[NEP][32];

/* Three endpoints 10.0.0.{1,2,3}:8000 with queue |q| and KV |kv|. */
static store_snapshot *snapshot(store_catalog *cat, const double *q, const double *kv,
				const sched *s)
{
	memset(eps, 0, sizeof(eps));
	for (int i = 0; i < NEP; i++) {
		store_endpoint *e = &eps[i];
		snprintf(names[i], sizeof(names[i]), "pod-%d-rank-0", i);
		e->name = names[i];
		e->pod = names[i];
		snprintf(e->ip, sizeof(e->ip), "10.0.0.%d", i + 1);
		e->port = 8000;
		snprintf(e->addr, sizeof(e->addr), "10.0.0.%d:8000", i + 1);
		e->index = (uint32_t)i;
		e->m.valid = true;
		e->m.update_ms = now_ms();
		e->m.waiting_queue = q[i];
		e->m.kv_usage = kv[i];
	}
	store_snapshot *snap = store_snapshot_new(cat, eps, NEP, true);
	if (snap && s) {
		sched_ref(s);
		store_snapshot_attach_sched(snap, s, sched_unref);
	}
	return snap;
}

static store_catalog *catalog(const char *pool)
{
	store_catalog *c = store_catalog_new();
	if (pool) {
		c->has_pool = true;
		c->pool.name = pool;
		c->pool.namespace_ = "ns1";
	}
	c->objectives = arena_calloc(&c->mem, sizeof(store_objective));
	c->objectives[0] = (store_objective){"my-model", 2, true};
	c->n_objectives = 1;
	store_catalog_finish(c);
	return c;
}

static sched *sched_of(const char *yaml)
{
	char err[512];
	sched_config *cfg = NULL;
	if (yaml &&
	    sched_config_parse_text(yaml, strlen(yaml), "<test>", &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "config: %s\n", err);
		return NULL;
	}
	sched *s = sched_new(cfg, err, sizeof(err));
	sched_config_free(cfg);
	if (!s)
		fprintf(stderr, "sched: %s\n", err);
	return s;
}

static const char *DETERMINISTIC = "apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
				   "kind: EndpointPickerConfig\n"
				   "plugins:\n"
				   "- type: queue-scorer\n"
				   "- type: kv-cache-utilization-scorer\n"
				   "- type: prefix-cache-scorer\n"
				   "- type: max-score-picker\n"
				   "schedulingProfiles:\n"
				   "- name: default\n"
				   "  plugins:\n"
				   "  - pluginRef: queue-scorer\n"
				   "    weight: 2\n"
				   "  - pluginRef: kv-cache-utilization-scorer\n"
				   "    weight: 1\n"
				   "  - pluginRef: prefix-cache-scorer\n"
				   "    weight: 1\n"
				   "  - pluginRef: max-score-picker\n";

struct hdrs {
	const char *k[4], *v[4];
	int n;
};

static bool hdr_cb(void *ctx, const char *name, sched_str *v)
{
	struct hdrs *h = ctx;
	for (int i = 0; i < h->n; i++)
		if (!strcmp(h->k[i], name)) {
			*v = (sched_str){h->v[i], strlen(h->v[i])};
			return true;
		}
	return false;
}

static const char *BODY =
	"{\"model\":\"my-model\",\"prompt\":\"The quick brown fox jumps over the lazy dog, "
	"then over the lazy cat, then over the sleepy hound, and home again.\"}";

static void request(sched_request *rq, struct hdrs *h, sched_trace *tr)
{
	memset(rq, 0, sizeof(*rq));
	rq->path = (sched_str){"/v1/completions", 15};
	rq->objective = (sched_str){"my-model", 8};
	rq->model_rewrite = (sched_str){"my-model-12345", 14};
	rq->request_id = (sched_str){"r1", 2};
	rq->body = BODY;
	rq->body_len = strlen(BODY);
	rq->header = hdr_cb;
	rq->header_ctx = h;
	rq->trace = tr;
}

/* ---- tests ---- */

static void test_table_bound_and_identity(void)
{
	adm_tbl t;
	CHECK_INT(adm_tbl_init(&t, "fam", 4, sizeof(uint64_t)), 0);
	const char *k1[2] = {"a", "b"}, *k2[2] = {"ab", ""}, *k3[2] = {"a", "c"};
	void *p1 = adm_tbl_get(&t, k1, 2);
	CHECK(p1 != NULL);
	CHECK(adm_tbl_get(&t, k1, 2) == p1);
	void *p2 = adm_tbl_get(&t, k2, 2); /* same bytes joined, other keys */
	CHECK(p2 != NULL && p2 != p1);
	CHECK(adm_tbl_get(&t, k3, 2) != NULL);
	const char *k4[1] = {"x"}, *k5[1] = {"y"};
	CHECK(adm_tbl_get(&t, k4, 1) != NULL);
	CHECK_INT(t.n, 4);
	/* Full: a new label set is refused and counted; known ones still work. */
	CHECK(adm_tbl_get(&t, k5, 1) == NULL);
	CHECK(adm_tbl_get(&t, k5, 1) == NULL);
	CHECK_INT(ld(&t.dropped), 2);
	CHECK(adm_tbl_get(&t, k1, 2) == p1);
	size_t seen = 0;
	for (size_t i = 0; i < adm_tbl_slots(&t); i++)
		seen += adm_tbl_at(&t, i) != NULL;
	CHECK_INT(seen, 4);
	adm_tbl_free(&t);
}

static void test_hist_edges(void)
{
	adm_hist h;
	memset(&h, 0, sizeof(h));
	hist_observe(&h, &H_HIT_RATIO, 0.0); /* le="0" */
	hist_observe(&h, &H_HIT_RATIO, 0.1); /* le="0.1": bounds are inclusive */
	hist_observe(&h, &H_HIT_RATIO, 0.15);
	hist_observe(&h, &H_HIT_RATIO, 1.5); /* +Inf */
	CHECK_INT(ld(&h.b[0]), 1);
	CHECK_INT(ld(&h.b[1]), 1);
	CHECK_INT(ld(&h.b[2]), 1);
	CHECK_INT(ld(&h.b[H_HIT_RATIO.n]), 1);
	CHECK(hist_sum(&h) > 1.749 && hist_sum(&h) < 1.751);
	CHECK_INT(H_LATENCY.n, 35);
	CHECK_INT(H_REQ_SIZE.n, 25);
	CHECK_INT(H_RESP_SIZE.n, 15);
}

static void test_go_floats(void)
{
	static const struct {
		double v;
		const char *s;
	} cases[] = {
		{0, "0"},          {1, "1"},           {0.005, "0.005"},
		{3600, "3600"},    {32778, "32778"},   {1048576, "1.048576e+06"},
		{1e6, "1e+06"},    {524288, "524288"}, {0.0001, "0.0001"},
		{1e-05, "1e-05"},  {0.1, "0.1"},       {1073741824, "1.073741824e+09"},
		{2.5, "2.5"},      {-3, "-3"},         {123456.5, "123456.5"},
		{1.0 / 3, "0.3333333333333333"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		adm_buf b = {0};
		buf_float(&b, cases[i].v);
		CHECK_STR(b.p, cases[i].s);
		adm_buf_free(&b);
	}
}

static void test_exposition_after_decisions(void)
{
	sched *s = sched_of(NULL);
	store *st = store_new();
	store_catalog *cat = catalog("vllm-qwen3-32b-pool");
	double q[NEP] = {3, 0, 10}, kv[NEP] = {0.2, 0.1, 0.2};
	store_publish(st, snapshot(cat, q, kv, s));
	adm_opts o = {.store = st, .version = "v1", .commit = "abc"};
	adm *a = adm_new(&o);
	adm_worker *w0 = adm_worker_new(a), *w1 = adm_worker_new(a);
	CHECK(a && w0 && w1);

	/* Case 1 of the hermetic tests, once on each worker: merged. */
	arena ar;
	arena_init(&ar, 4096);
	const store_snapshot *snap = store_acquire(st);
	adm_req r0, r1;
	sched_result res0, res1;
	struct hdrs h = {0};
	sched_trace tr0 = {0}, tr1 = {0};
	sched_request rq;
	adm_stream_open(w0, &r0);
	adm_request_received(&r0);
	request(&rq, &h, &tr0);
	sched_decide(s, snap, &rq, &ar, &res0);
	CHECK_INT(res0.err, SCHED_OK);
	CHECK_STR(res0.targets, "10.0.0.2:8000");
	CHECK(tr0.scheduled && tr0.n_calls >= 5 && tr0.prefix_match);
	adm_request_decided(w0, &r0, snap, &rq, &res0, 1000);
	adm_stream_open(w1, &r1);
	adm_request_received(&r1);
	request(&rq, &h, &tr1);
	sched_decide(s, snap, &rq, &ar, &res1);
	adm_request_decided(w1, &r1, snap, &rq, &res1, 1000);

	adm_buf b = {0};
	CHECK_INT(adm_metrics_render(a, &b), 0);
	CHECK(has_line(&b, "# HELP inference_objective_request_total [ALPHA] Counter of inference "
			   "objective requests broken out for each model and target model."));
	CHECK(has_line(&b, "# TYPE inference_objective_request_total counter"));
	CHECK(has_line(&b, "inference_objective_request_total{model_name=\"my-model\","
			   "priority=\"2\",target_model_name=\"my-model-12345\"} 2"));
	CHECK(has_line(&b, "# HELP inference_pool_ready_pods [ALPHA] The number of ready pods in "
			   "the inference server pool."));
	CHECK(has_line(&b, "inference_pool_ready_pods{name=\"vllm-qwen3-32b-pool\"} 3"));
	CHECK(has_line(&b, "inference_objective_running_requests{model_name=\"my-model\"} 2"));
	CHECK(has_line(&b, "inference_extension_scheduler_attempts_total{namespace=\"ns1\","
			   "pod_name=\"pod-1-rank-0\",port=\"8000\",status=\"success\","
			   "target_model_name=\"my-model-12345\"} 2"));
	CHECK(has_line(&b, "inference_extension_scheduler_e2e_duration_seconds_count 2"));
	CHECK(has_line(&b, "inference_extension_plugin_duration_seconds_count{"
			   "extension_point=\"Scorer\",plugin_name=\"queue-scorer\","
			   "plugin_type=\"queue-scorer\"} 2"));
	CHECK(has_line(&b, "inference_objective_request_sizes_bucket{model_name=\"my-model\","
			   "target_model_name=\"my-model-12345\",le=\"64\"} 0"));
	CHECK(has_line(&b, "inference_objective_request_sizes_count{model_name=\"my-model\","
			   "target_model_name=\"my-model-12345\"} 2"));
	CHECK(has_line(&b, "inference_pool_per_pod_queue_size{model_server_pod=\"pod-2-rank-0\","
			   "name=\"vllm-qwen3-32b-pool\"} 10"));
	CHECK(has_line(&b, "inference_pool_average_queue_size{name=\"vllm-qwen3-32b-pool\"} "
			   "4.333333333333333"));
	CHECK(has_line(&b, "inference_extension_info{build_ref=\"v1\",commit=\"abc\"} 1"));
	CHECK(has_line(&b, "kepp_endpoint_picks_total{endpoint=\"10.0.0.2:8000\"} 2"));
	CHECK(has_line(&b, "kepp_endpoint_in_flight_requests{endpoint=\"10.0.0.2:8000\"} 2"));
	CHECK(has_line(&b, "kepp_worker_streams{worker=\"1\"} 1"));
	/* No response yet: no latency family at all. */
	CHECK(!strstr(b.p, "inference_objective_request_duration_seconds"));
	adm_buf_free(&b);

	/* A response with usage completes worker 0's request; worker 1's ends
	 * with a model-server error. */
	sched_usage u = {.found = true, .prompt_tokens = 7, .completion_tokens = 10};
	adm_response_bytes(&r0, 100);
	adm_response_done(w0, &r0, &res0, &u);
	adm_response_done(w0, &r0, &res0, &u); /* once only */
	adm_stream_close(w0, &r0, &res0);
	adm_response_status(&r1, "503", 3);
	adm_stream_close(w1, &r1, &res1);
	CHECK_INT(adm_metrics_render(a, &b), 0);
	CHECK(has_line(&b, "inference_objective_input_tokens_sum{model_name=\"my-model\","
			   "target_model_name=\"my-model-12345\"} 7"));
	CHECK(has_line(&b, "inference_objective_input_tokens_count{model_name=\"my-model\","
			   "target_model_name=\"my-model-12345\"} 1"));
	CHECK(has_line(&b, "inference_objective_output_tokens_bucket{model_name=\"my-model\","
			   "target_model_name=\"my-model-12345\",le=\"16\"} 1"));
	CHECK(has_line(&b, "inference_objective_response_sizes_sum{model_name=\"my-model\","
			   "target_model_name=\"my-model-12345\"} 100"));
	CHECK(has_line(&b, "inference_objective_request_duration_seconds_count{model_name="
			   "\"my-model\",target_model_name=\"my-model-12345\"} 1"));
	CHECK(has_line(&b, "inference_objective_request_error_total{"
			   "error_code=\"ModelServerError\",model_name=\"my-model\","
			   "target_model_name=\"my-model-12345\"} 1"));
	CHECK(has_line(&b, "inference_objective_running_requests{model_name=\"my-model\"} 0"));
	CHECK(has_line(&b, "kepp_endpoint_in_flight_requests{endpoint=\"10.0.0.2:8000\"} 0"));
	CHECK(has_line(&b, "kepp_worker_streams{worker=\"0\"} 0"));
	CHECK(has_line(&b, "kepp_worker_streams_total{worker=\"0\"} 1"));
	adm_buf_free(&b);

	/* A refused request: error counted with its code and empty models. */
	adm_req r2;
	sched_result none;
	memset(&none, 0, sizeof(none));
	adm_stream_open(w0, &r2);
	adm_request_failed(&r2, "BadRequest");
	adm_stream_close(w0, &r2, &none);
	CHECK_INT(adm_metrics_render(a, &b), 0);
	CHECK(has_line(&b, "inference_objective_request_error_total{error_code=\"BadRequest\","
			   "model_name=\"\",target_model_name=\"\"} 1"));
	adm_buf_free(&b);

	arena_free(&ar);
	store_release(snap);
	adm_free(a);
	store_free(st);
	store_catalog_unref(cat);
	sched_unref(s);
}

static void test_series_cap_counts_drops(void)
{
	store *st = store_new();
	store_catalog *cat = catalog(NULL);
	double q[NEP] = {0}, kv[NEP] = {0};
	store_publish(st, snapshot(cat, q, kv, NULL));
	adm_opts o = {.store = st, .max_series = 2};
	adm *a = adm_new(&o);
	adm_worker *w = adm_worker_new(a);
	char model[3][16];
	for (int i = 0; i < 3; i++) {
		snprintf(model[i], sizeof(model[i]), "m%d", i);
		sched_result res;
		memset(&res, 0, sizeof(res));
		res.incoming_model = res.target_model = (sched_str){model[i], 2};
		res.n_picked = 1;
		res.picked[0] = &eps[0];
		sched_request rq = {0};
		adm_req r;
		adm_stream_open(w, &r);
		adm_request_decided(w, &r, NULL, &rq, &res, 10);
		adm_stream_close(w, &r, &res);
	}
	adm_buf b = {0};
	CHECK_INT(adm_metrics_render(a, &b), 0);
	CHECK(has_line(&b, "kepp_metrics_series_dropped_total{family=\"inference_objective\"} 1"));
	CHECK(has_line(&b, "inference_objective_request_total{model_name=\"m0\",priority=\"0\","
			   "target_model_name=\"m0\"} 1"));
	CHECK(!strstr(b.p, "model_name=\"m2\""));
	/* Without a pool name, no pool gauges. */
	CHECK(!strstr(b.p, "inference_pool_ready_pods"));
	adm_buf_free(&b);
	adm_free(a);
	store_free(st);
	store_catalog_unref(cat);
}

static void kern_like(void *ctx, adm_out *o)
{
	int *calls = ctx;
	(*calls)++;
	adm_out_family(o, "kepp_test_total", "counter", "A test\\help\nline.");
	adm_out_sample(o, "kepp_test_total", 3, "result", "a\"b", NULL);
	adm_out_sample(o, "kepp_test_total", 0.25, NULL);
}

static void test_collector_output(void)
{
	store *st = store_new();
	adm_opts o = {.store = st};
	adm *a = adm_new(&o);
	int calls = 0;
	CHECK_INT(adm_register_collector(a, kern_like, &calls), 0);
	adm_buf b = {0};
	CHECK_INT(adm_metrics_render(a, &b), 0);
	CHECK_INT(calls, 1);
	CHECK(has_line(&b, "# HELP kepp_test_total A test\\\\help\\nline."));
	CHECK(has_line(&b, "kepp_test_total{result=\"a\\\"b\"} 3"));
	CHECK(has_line(&b, "kepp_test_total 0.25"));
	adm_buf_free(&b);
	adm_free(a);
	store_free(st);
}

static cJSON *find_ep(cJSON *root, const char *addr)
{
	cJSON *e;
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(root, "endpoints"))
	{
		cJSON *x = cJSON_GetObjectItem(e, "endpoint");
		if (cJSON_IsString(x) && !strcmp(x->valuestring, addr))
			return e;
	}
	return NULL;
}

static double score(cJSON *ep, const char *scorer)
{
	cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(ep, "scores"), scorer);
	return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static void test_explain_matches_pick_and_records_nothing(void)
{
	sched *s = sched_of(DETERMINISTIC);
	CHECK(s != NULL);
	if (!s)
		return;
	store *st = store_new();
	store_catalog *cat = catalog("pool");
	double q[NEP] = {8, 2, 0}, kv[NEP] = {0.9, 0.1, 0.5};
	store_publish(st, snapshot(cat, q, kv, s));
	adm_opts o = {.store = st, .debug_endpoints = true};
	adm *a = adm_new(&o);
	adm_worker *w = adm_worker_new(a);
	struct hdrs h = {.k = {"x-gateway-inference-objective", "x-gateway-model-name-rewrite"},
			 .v = {"my-model", "my-model-12345"},
			 .n = 2};
	adm_explain_req in = {.body = BODY, .body_len = strlen(BODY), .header = hdr_cb,
			      .header_ctx = &h};
	adm_buf b = {0};
	CHECK_INT(adm_explain(a, &in, &b), 0);
	cJSON *root = cJSON_Parse(b.p ? b.p : "");
	CHECK(root != NULL);
	CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(root, "pick")), "10.0.0.3:8000");
	CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(root, "target_model")),
		  "my-model-12345");
	CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(root, "priority")), 2);
	cJSON *e0 = find_ep(root, "10.0.0.1:8000"), *e2 = find_ep(root, "10.0.0.3:8000");
	CHECK(e0 && e2);
	CHECK(score(e0, "queue-scorer") == 0.0);
	CHECK(score(e2, "queue-scorer") == 1.0);
	CHECK(score(e2, "kv-cache-utilization-scorer") > 0.49 &&
	      score(e2, "kv-cache-utilization-scorer") < 0.51);
	CHECK(score(e2, "prefix-cache-scorer") == 0.0);
	CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(e2, "rank")), 0);
	/* total = 2 x queue + kv + prefix */
	CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(e2, "total")) > 2.49);
	cJSON_Delete(root);
	adm_buf_free(&b);

	/* Nothing recorded: no prefix entries, no metrics, no picks. */
	int64_t entries = -1;
	CHECK(sched_prefix_index_size(s, &entries));
	CHECK_INT(entries, 0);
	uint64_t picks;
	int64_t inflight;
	adm_endpoint_totals(a, "10.0.0.3:8000", &picks, &inflight);
	CHECK_INT(picks, 0);

	/* The same request for real picks the same endpoint, and learns. */
	const store_snapshot *snap = store_acquire(st);
	arena ar;
	arena_init(&ar, 4096);
	sched_trace tr = {.want_table = true};
	sched_request rq;
	request(&rq, &h, &tr);
	sched_result res;
	sched_decide(s, snap, &rq, &ar, &res);
	CHECK_STR(res.targets, "10.0.0.3:8000");
	CHECK(tr.table && tr.table->n_eps == NEP && tr.table->rank[2] == 0);
	CHECK(sched_prefix_index_size(s, &entries));
	CHECK(entries > 0);
	sched_request_done(s, &res);
	arena_free(&ar);
	store_release(snap);

	/* A bad body is an explained error, not a failed explain. */
	in.body = "{\"prompt\":\"x\"}";
	in.body_len = strlen(in.body);
	CHECK_INT(adm_explain(a, &in, &b), 0);
	root = cJSON_Parse(b.p ? b.p : "");
	cJSON *err = cJSON_GetObjectItem(root, "error");
	CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(err, "status")), 400);
	CHECK(cJSON_IsNull(cJSON_GetObjectItem(root, "pick")));
	cJSON_Delete(root);
	adm_buf_free(&b);

	/* /debug/pool lists the endpoints with their metrics. */
	CHECK_INT(adm_debug_pool(a, &b), 0);
	root = cJSON_Parse(b.p ? b.p : "");
	cJSON *eps_j = cJSON_GetObjectItem(root, "endpoints");
	CHECK_INT(cJSON_GetArraySize(eps_j), NEP);
	cJSON *m = cJSON_GetObjectItem(cJSON_GetArrayItem(eps_j, 0), "metrics");
	CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(m, "waiting_queue")), 8);
	CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(root, "prefix_index_size")) > 0);
	cJSON_Delete(root);
	adm_buf_free(&b);
	(void)w;
	adm_free(a);
	store_free(st);
	store_catalog_unref(cat);
	sched_unref(s);
}

static void test_dry_run_skips_inflight(void)
{
	sched *s = sched_of("apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
			    "kind: EndpointPickerConfig\n"
			    "plugins:\n"
			    "- type: token-load-scorer\n"
			    "- type: max-score-picker\n"
			    "schedulingProfiles:\n"
			    "- name: default\n"
			    "  plugins:\n"
			    "  - pluginRef: token-load-scorer\n"
			    "  - pluginRef: max-score-picker\n");
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = catalog("pool");
	double q[NEP] = {0}, kv[NEP] = {0};
	store_snapshot *snap = snapshot(cat, q, kv, s);
	arena ar;
	arena_init(&ar, 4096);
	struct hdrs h = {0};
	sched_request rq;
	request(&rq, &h, NULL);
	rq.dry_run = true;
	sched_result res;
	sched_decide(s, snap, &rq, &ar, &res);
	CHECK_INT(res.err, SCHED_OK);
	CHECK(res.inflight == NULL);
	rq.dry_run = false;
	sched_decide(s, snap, &rq, &ar, &res);
	CHECK(res.inflight != NULL);
	sched_request_done(s, &res);
	arena_free(&ar);
	store_release(snap);
	store_catalog_unref(cat);
	sched_unref(s);
}

int main(void)
{
	RUN(test_table_bound_and_identity);
	RUN(test_hist_edges);
	RUN(test_go_floats);
	RUN(test_exposition_after_decisions);
	RUN(test_series_cap_counts_drops);
	RUN(test_collector_output);
	RUN(test_explain_matches_pick_and_records_nothing);
	RUN(test_dry_run_skips_inflight);
	return harness_done();
}
