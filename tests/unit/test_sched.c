/* Unit tests for the director and the scheduling framework (user/sched/):
 * the hermetic cases of spec §8.2 on hermetic store snapshots, every scorer,
 * filter and picker, subset rules, admission, weighted draws, in-flight
 * accounting, and the defaulting and validation rules of spec §4.3. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "harness.h"
#include "sched/plugins.h"
#include "sched/sched.h"
#include "store/store.h"
#include "util/rand.h"

/* ---- fixtures --------------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define MAXP 16

struct pod {
	double q, kv;
	const char *active[4];
	double running;
	uint16_t port;   /* 0: 8000 */
	const char *ip;  /* NULL: 192.168.1.<i+1> */
	bool stale;
	int max_lora;
};

/* queue, kv, running LoRA adapters */
#define P(qq, kk, ...) {.q = (qq), .kv = (kk), .active = {__VA_ARGS__}}

static store_endpoint eps[MAXP];
static char names[MAXP][32];
static const char *actives[MAXP][4];

static store_snapshot *snap_of(store_catalog *cat, const struct pod *p, size_t n)
{
	memset(eps, 0, sizeof(eps));
	for (size_t i = 0; i < n; i++) {
		store_endpoint *e = &eps[i];
		snprintf(names[i], sizeof(names[i]), "pod-%zu-rank-0", i);
		e->name = names[i];
		e->pod = names[i];
		if (p[i].ip)
			snprintf(e->ip, sizeof(e->ip), "%s", p[i].ip);
		else
			snprintf(e->ip, sizeof(e->ip), "192.168.1.%zu", i + 1);
		e->port = p[i].port ? p[i].port : 8000;
		if (strchr(e->ip, ':'))
			snprintf(e->addr, sizeof(e->addr), "[%s]:%u", e->ip, e->port);
		else
			snprintf(e->addr, sizeof(e->addr), "%s:%u", e->ip, e->port);
		e->index = (uint32_t)i;
		e->m.valid = true;
		e->m.update_ms = p[i].stale ? now_ms() - 5000 : now_ms();
		e->m.waiting_queue = p[i].q;
		e->m.kv_usage = p[i].kv;
		e->m.running = p[i].running;
		e->m.max_lora = p[i].max_lora;
		uint32_t na = 0;
		for (; na < 4 && p[i].active[na]; na++)
			actives[i][na] = p[i].active[na];
		e->m.active_models = actives[i];
		e->m.n_active_models = na;
	}
	return store_snapshot_new(cat, eps, (uint32_t)n, true);
}

/* The hermetic catalog of spec §8.2: objectives and the rewrite-test rule. */
static store_catalog *hermetic_catalog(void)
{
	store_catalog *c = store_catalog_new();
	static const struct {
		const char *name;
		int prio;
		bool has;
	} objs[] = {{"sql-lora", 2, true},     {"sql-lora-sheddable", 0, false},
		    {"my-model", 2, true},     {"direct-model", 2, true},
		    {"inference-objective-with-priority-4", 4, true},
		    {"sheddable", -1, true}};
	size_t n = sizeof(objs) / sizeof(objs[0]);
	c->objectives = arena_calloc(&c->mem, n * sizeof(*c->objectives));
	for (size_t i = 0; i < n; i++)
		c->objectives[i] = (store_objective){objs[i].name, objs[i].prio, objs[i].has};
	c->n_objectives = (uint32_t)n;
	c->rules = arena_calloc(&c->mem, sizeof(*c->rules));
	static const char *match[] = {"model-to-be-rewritten"};
	static store_target tgt[] = {{"rewritten-model", 100, true}};
	c->rules[0] = (store_rewrite_rule){"rewrite-test", 0, 0, match, 1, tgt, 1};
	c->n_rules = 1;
	store_catalog_finish(c);
	return c;
}

struct hdr {
	const char *k, *v;
};

struct reqb {
	sched_request r;
	struct hdr h[8];
	size_t nh;
	char body[512];
};

static bool hdr_cb(void *ctx, const char *name, sched_str *v)
{
	struct reqb *b = ctx;
	for (size_t i = 0; i < b->nh; i++)
		if (strcmp(b->h[i].k, name) == 0) {
			v->p = b->h[i].v;
			v->len = strlen(b->h[i].v);
			return true;
		}
	return false;
}

static sched_str sstr(const char *s)
{
	return (sched_str){s, s ? strlen(s) : 0};
}

static void add_hdr(struct reqb *b, const char *k, const char *v)
{
	b->h[b->nh++] = (struct hdr){k, v};
	if (strcmp(k, "x-gateway-inference-objective") == 0)
		b->r.objective = sstr(v);
	else if (strcmp(k, "x-gateway-model-name-rewrite") == 0)
		b->r.model_rewrite = sstr(v);
	else if (strcmp(k, ":path") == 0)
		b->r.path = sstr(v);
}

static void req_body(struct reqb *b, const char *body)
{
	memset(b, 0, sizeof(*b));
	snprintf(b->body, sizeof(b->body), "%s", body);
	b->r.body = b->body;
	b->r.body_len = strlen(b->body);
	b->r.header = hdr_cb;
	b->r.header_ctx = b;
	b->r.fairness_id = sstr("default-flow");
}

/* ReqLLM(prompt, model, target) of the hermetic tests. */
static void req_llm(struct reqb *b, const char *prompt, const char *model, const char *target)
{
	char body[256];
	snprintf(body, sizeof(body),
		 "{\"max_tokens\":100,\"model\":\"%s\",\"prompt\":\"%s\",\"temperature\":0}", model,
		 prompt);
	req_body(b, body);
	add_hdr(b, "hi", "mom");
	add_hdr(b, "x-request-id", "test-request-id");
	add_hdr(b, "x-gateway-inference-objective", model);
	add_hdr(b, "x-gateway-model-name-rewrite", target);
}

/* sched_config built by hand (the YAML loader is another module's). */
struct tcfg {
	sched_config c;
	sched_plugin_spec plugins[16];
	sched_profile_spec profiles[4];
	sched_profile_ref refs[4][16];
	const char *gates[4];
};

static struct tcfg *cfg_new(void)
{
	struct tcfg *t = calloc(1, sizeof(*t));
	t->c.source = "test.yaml";
	t->c.plugins = t->plugins;
	t->c.profiles = t->profiles;
	t->c.feature_gates = t->gates;
	return t;
}

static void cfg_plugin(struct tcfg *t, const char *name, const char *type, const char *params,
		       int line)
{
	sched_plugin_spec *p = &t->plugins[t->c.n_plugins++];
	p->name = name;
	p->type = type;
	p->params = params ? cJSON_Parse(params) : NULL;
	if (params && !p->params)
		fprintf(stderr, "bad test JSON: %s\n", params);
	p->line = line;
}

static sched_profile_spec *cfg_profile(struct tcfg *t, const char *name, int line)
{
	size_t i = t->c.n_profiles++;
	sched_profile_spec *p = &t->profiles[i];
	p->name = name;
	p->refs = t->refs[i];
	p->line = line;
	return p;
}

static void cfg_ref(sched_profile_spec *p, const char *ref, double weight, int line)
{
	sched_profile_ref *r = &p->refs[p->n_refs++];
	r->plugin_ref = ref;
	r->has_weight = !isnan(weight);
	r->weight = isnan(weight) ? 0 : weight;
	r->line = line;
}

static void cfg_free(struct tcfg *t)
{
	for (size_t i = 0; i < t->c.n_plugins; i++)
		cJSON_Delete(t->plugins[i].params);
	free(t);
}

static char err[512];

static sched *build(struct tcfg *t)
{
	err[0] = '\0';
	sched *s = sched_new(&t->c, err, sizeof(err));
	if (!s)
		fprintf(stderr, "  sched_new: %s\n", err);
	return s;
}

/* The error text of a config sched_new refuses. */
static const char *build_err(struct tcfg *t)
{
	err[0] = '\0';
	sched *s = sched_new(&t->c, err, sizeof(err));
	if (s) {
		sched_free(s);
		return "(accepted)";
	}
	return err;
}

/* The hermetic default config: queue, kv, lora scorers, weight 1 each. */
static sched *hermetic_sched(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 3);
	cfg_plugin(t, NULL, "kv-cache-utilization-scorer", NULL, 4);
	cfg_plugin(t, NULL, "lora-affinity-scorer", NULL, 5);
	sched *s = build(t);
	cfg_free(t);
	return s;
}

static arena A;
static sched_result res;

static void decide(const sched *s, const store_snapshot *snap, struct reqb *b)
{
	arena_reset(&A);
	sched_decide(s, snap, &b->r, &A, &res);
}

static bool body_is(const char *want)
{
	return res.body_len == strlen(want) && memcmp(res.body, want, res.body_len) == 0;
}

/* Raw scores are clamped to [0,1] before the weights, NaN counting as 0
 * (kv-cache-utilization-scorer scores 1 - kv_usage). */
static void test_score_clamp(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "kv-cache-utilization-scorer", NULL, 2);
	cfg_plugin(t, NULL, "max-score-picker", NULL, 3);
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(0, 1.5), P(0, NAN), P(0, -1), P(0, 0.75), P(0, -0.0)};
	store_snapshot *snap = snap_of(cat, pods, 5);
	struct reqb b;
	req_body(&b, "{\"model\":\"m\",\"prompt\":\"hi\"}");
	sched_trace tr = {.want_table = true};
	b.r.trace = &tr;
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	CHECK(tr.table != NULL);
	if (tr.table) {
		const double want[5] = {0, 0, 1, 0.25, 1};
		for (int i = 0; i < 5; i++) {
			size_t r = 0;
			while (r < tr.table->n_eps && tr.table->eps[r] != &snap->endpoints[i])
				r++;
			CHECK(r < tr.table->n_eps && tr.table->scores[r] == want[i] &&
			      tr.table->total[r] == want[i]);
		}
	}
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* ---- hermetic director cases (spec §8.2) ------------------------------------ */

static void test_hermetic_lower_queue_and_kv(void)
{
	sched *s = hermetic_sched();
	store_catalog *cat = hermetic_catalog();
	struct pod pods[] = {P(3, 0.2), P(0, 0.1), P(10, 0.2)};
	store_snapshot *snap = snap_of(cat, pods, 3);
	struct reqb b;
	req_llm(&b, "test1", "my-model", "my-model-12345");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	CHECK_STR(res.targets, "192.168.1.2:8000");
	CHECK_INT(res.priority, 2);
	CHECK(res.incoming_model.len == 8 && memcmp(res.incoming_model.p, "my-model", 8) == 0);
	CHECK(res.target_model.len == 14 && memcmp(res.target_model.p, "my-model-12345", 14) == 0);
	CHECK(body_is("{\"max_tokens\":100,\"model\":\"my-model-12345\",\"prompt\":\"test1\","
		      "\"temperature\":0}"));
	CHECK(res.rewrite_name == NULL);
	CHECK(!res.stream);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_hermetic_lora_affinity(void)
{
	sched *s = hermetic_sched();
	store_catalog *cat = hermetic_catalog();
	/* "select lora despite higher kv cache": totals 1.8, 2.6, 1.7. */
	struct pod pods[] = {P(10, 0.2, "foo", "bar"),
			     P(10, 0.4, "foo", "sql-lora-1fdg2"),
			     P(10, 0.3, "foo")};
	store_snapshot *snap = snap_of(cat, pods, 3);
	struct reqb b;
	for (int i = 0; i < 20; i++) {
		req_llm(&b, "test3", "sql-lora", "sql-lora-1fdg2");
		decide(s, snap, &b);
		CHECK_STR(res.targets, "192.168.1.2:8000");
		/* Independent requests: each finishes before the next one. */
		sched_request_done(s, &res);
	}
	/* "select active lora, low queue". */
	struct pod pods2[] = {P(0, 0.2, "foo", "bar"),
			      P(0, 0.1, "foo", "sql-lora-1fdg2"),
			      P(10, 0.2, "foo", "bar")};
	store_release(snap);
	snap = snap_of(cat, pods2, 3);
	req_llm(&b, "test2", "sql-lora", "sql-lora-1fdg2");
	decide(s, snap, &b);
	CHECK_STR(res.targets, "192.168.1.2:8000");
	CHECK_INT(res.priority, 2);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_hermetic_do_not_shed(void)
{
	sched *s = hermetic_sched();
	store_catalog *cat = hermetic_catalog();
	/* Saturated by the default detector, but priority 2 is not
	 * sheddable: scores 2.2, 1.15, 0.1. */
	struct pod pods[] = {P(6, 0.2, "foo", "bar", "sql-lora-1fdg2"),
			     P(0, 0.85, "foo"),
			     P(10, 0.9, "foo")};
	store_snapshot *snap = snap_of(cat, pods, 3);
	struct reqb b;
	req_llm(&b, "test4", "sql-lora", "sql-lora-1fdg2");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	CHECK_STR(res.targets, "192.168.1.1:8000");
	/* The same load with a sheddable objective is dropped. */
	req_llm(&b, "test4", "sheddable", "sql-lora-1fdg2");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_RESOURCE_EXHAUSTED);
	CHECK_STR(
		res.error,
		"inference error: ResourceExhausted - system saturated, sheddable request dropped");
	CHECK_INT(sched_err_http(res.err), 429);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_hermetic_errors(void)
{
	sched *s = hermetic_sched();
	store_catalog *cat = hermetic_catalog();
	struct pod pods[] = {P(0, 0.2, "foo", "bar")};
	store_snapshot *snap = snap_of(cat, pods, 1);
	struct reqb b;
	req_body(&b, "{\"prompt\":\"hello world\"}");
	add_hdr(&b, "content-type", "application/json");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_BAD_REQUEST);
	CHECK_STR(res.error, "inference error: BadRequest - model not found in request body");
	CHECK_INT(sched_err_http(res.err), 400);
	req_body(&b, "no healthy upstream");
	decide(s, snap, &b);
	CHECK_STR(res.error, "inference error: BadRequest - error unmarshaling request bodyMap: "
			     "invalid character 'o' in literal null (expecting 'u')");
	req_body(&b, "{\"model\":7,\"prompt\":\"x\"}");
	decide(s, snap, &b);
	CHECK_STR(res.error, "inference error: BadRequest - model not found in request body");
	/* Validation comes before the model check, chosen by :path. */
	req_body(&b, "{\"model\":\"m\"}");
	add_hdr(&b, ":path", "/v1/chat/completions");
	decide(s, snap, &b);
	CHECK_STR(res.error, "inference error: BadRequest - invalid chat completions request: must "
			     "have valid messages field");
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_hermetic_split_and_passthrough_model(void)
{
	sched *s = hermetic_sched();
	store_catalog *cat = hermetic_catalog();
	/* "split body across chunks": the concatenated body, header rewrite. */
	struct pod pods[] = {P(4, 0.2, "foo", "bar", "sql-lora-1fdg3"),
			     P(4, 0.85, "foo", "sql-lora-1fdg3")};
	store_snapshot *snap = snap_of(cat, pods, 2);
	struct reqb b;
	req_body(&b, "{\"max_tokens\":100,\"model\":\"sql-lora-sheddable\",\"prompt\":\"test6\","
		     "\"temperature\":0}");
	add_hdr(&b, "x-gateway-inference-objective", "sql-lora-sheddable");
	add_hdr(&b, "x-gateway-model-name-rewrite", "sql-lora-1fdg3");
	decide(s, snap, &b);
	CHECK_STR(res.targets, "192.168.1.1:8000");
	CHECK_INT(res.priority, 0);
	CHECK(body_is("{\"max_tokens\":100,\"model\":\"sql-lora-1fdg3\",\"prompt\":\"test6\","
		      "\"temperature\":0}"));
	CHECK_INT(res.body_len, 76);
	/* "model not in objectives": same name in header and body: the body is
	 * forwarded as is, no copy. */
	req_body(&b, "{\"max_tokens\":100,\"model\":\"direct-model\",\"prompt\":\"test6\","
		     "\"temperature\":0}");
	add_hdr(&b, "x-gateway-inference-objective", "direct-model");
	add_hdr(&b, "x-gateway-model-name-rewrite", "direct-model");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	CHECK(res.body == b.r.body);
	CHECK_INT(res.priority, 2);
	/* An empty rewrite header means no rewrite. */
	req_body(&b, "{\"model\":\"m\",\"prompt\":\"x\",\"stream\":true}");
	add_hdr(&b, "x-gateway-model-name-rewrite", "");
	decide(s, snap, &b);
	CHECK(res.body == b.r.body);
	CHECK(res.stream);
	CHECK(res.target_model.len == 1 && res.target_model.p[0] == 'm');
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_rewrite_rule_beats_header(void)
{
	sched *s = hermetic_sched();
	store_catalog *cat = hermetic_catalog();
	struct pod pods[] = {P(0, 0.1, "foo", "rewritten-model")};
	store_snapshot *snap = snap_of(cat, pods, 1);
	struct reqb b;
	req_llm(&b, "test-rewrite", "model-to-be-rewritten", "model-to-be-rewritten");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	CHECK_STR(res.targets, "192.168.1.1:8000");
	CHECK(body_is(
		"{\"max_tokens\":100,\"model\":\"rewritten-model\",\"prompt\":\"test-rewrite\","
		"\"temperature\":0}"));
	CHECK_STR(res.rewrite_name, "rewrite-test");
	CHECK_INT(res.priority, 0);
	CHECK(res.incoming_model.len == 21);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* ---- subset hint (spec §2.4) ---------------------------------------------------- */

static void test_subset(void)
{
	sched *s = hermetic_sched();
	store_catalog *cat = hermetic_catalog();
	struct pod pods[] = {P(0, 0.2, "foo"), P(0, 0.1, "foo", "sql-lora-1fdg2"),
			     P(10, 0.2, "foo")};
	store_snapshot *snap = snap_of(cat, pods, 3);
	struct reqb b;
	sched_str all[] = {sstr("192.168.1.1:8000"), sstr("192.168.1.2:8000"),
			   sstr("192.168.1.3:8000")};
	req_llm(&b, "test2", "sql-lora", "sql-lora-1fdg2");
	b.r.has_subset = true;
	b.r.subset = all;
	b.r.n_subset = 3;
	decide(s, snap, &b);
	CHECK_STR(res.targets, "192.168.1.2:8000");
	sched_str one[] = {sstr("192.168.1.3:8000")};
	b.r.subset = one;
	b.r.n_subset = 1;
	decide(s, snap, &b);
	CHECK_STR(res.targets, "192.168.1.3:8000");
	/* By IP only in the list form: the port does not matter. */
	sched_str other_port[] = {sstr("192.168.1.3:9999")};
	b.r.subset = other_port;
	decide(s, snap, &b);
	CHECK_STR(res.targets, "192.168.1.3:8000");
	sched_str none[] = {sstr("192.168.1.99:8000")};
	b.r.subset = none;
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_SERVICE_UNAVAILABLE);
	CHECK_STR(res.error, "inference error: ServiceUnavailable - failed to find endpoint "
			     "candidates for serving the request");
	CHECK_INT(sched_err_http(res.err), 503);
	b.r.n_subset = 0;
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_SERVICE_UNAVAILABLE);
	store_release(snap);

	/* A data-parallel pool: two ports per IP, plus IPv6. */
	struct pod dp[] = {{.kv = 0.5, .ip = "192.168.1.1"},
			   {.kv = 0.5, .port = 8001, .ip = "192.168.1.1"},
			   {.kv = 0.5, .ip = "192.168.1.9"},
			   {.kv = 0.5, .ip = "fd00::1"}};
	snap = snap_of(cat, dp, 4);
	req_llm(&b, "x", "m", "m");
	b.r.has_subset = true;
	b.r.subset_is_string = true;
	sched_str exact[] = {sstr("192.168.1.1:8001")};
	b.r.subset = exact;
	b.r.n_subset = 1;
	for (int i = 0; i < 10; i++) {
		decide(s, snap, &b);
		CHECK_STR(res.targets, "192.168.1.1:8001");
	}
	sched_str bare[] = {sstr("192.168.1.1")};
	b.r.subset = bare;
	int seen[2] = {0, 0};
	for (int i = 0; i < 200; i++) {
		decide(s, snap, &b);
		seen[0] += strcmp(res.targets, "192.168.1.1:8000") == 0;
		seen[1] += strcmp(res.targets, "192.168.1.1:8001") == 0;
	}
	CHECK(seen[0] > 0 && seen[1] > 0 && seen[0] + seen[1] == 200);
	sched_str v6[] = {sstr("[fd00::1]:8000")};
	b.r.subset = v6;
	decide(s, snap, &b);
	CHECK_STR(res.targets, "[fd00::1]:8000");
	b.r.subset_is_string = false;
	decide(s, snap, &b);
	CHECK_STR(res.targets, "[fd00::1]:8000");
	sched_str v6bare[] = {sstr("fd00::1")};
	b.r.subset = v6bare;
	decide(s, snap, &b);
	CHECK_STR(res.targets, "[fd00::1]:8000");
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* ---- weighted draws -------------------------------------------------------------- */

static void test_rewrite_weighted_draw(void)
{
	sched *s = hermetic_sched();
	store_catalog *cat = store_catalog_new();
	static const char *m1[] = {"split"};
	static store_target t1[] = {{"a", 30, true}, {"b", 70, true}};
	static const char *m2[] = {"even"};
	static store_target t2[] = {{"x", 0, true}, {"y", 0, true}, {"z", 0, true}};
	cat->rules = arena_calloc(&cat->mem, 2 * sizeof(*cat->rules));
	cat->rules[0] = (store_rewrite_rule){"r1", 0, 0, m1, 1, t1, 2};
	cat->rules[1] = (store_rewrite_rule){"r2", 0, 0, m2, 1, t2, 3};
	cat->n_rules = 2;
	store_catalog_finish(cat);
	struct pod pods[] = {P(0, 0.1)};
	store_snapshot *snap = snap_of(cat, pods, 1);
	rand_seed(42);
	struct reqb b;
	int nb = 0, counts[3] = {0, 0, 0};
	const int N = 10000;
	for (int i = 0; i < N; i++) {
		req_body(&b, "{\"model\":\"split\",\"prompt\":\"p\"}");
		decide(s, snap, &b);
		CHECK_INT(res.err, SCHED_OK);
		nb += res.target_model.len == 1 && res.target_model.p[0] == 'b';
		req_body(&b, "{\"model\":\"even\",\"prompt\":\"p\"}");
		decide(s, snap, &b);
		counts[res.target_model.p[0] - 'x']++;
	}
	/* 70% +- 4.5 sigma (sigma = 0.46%). */
	CHECK(fabs((double)nb / N - 0.7) < 0.021);
	for (int i = 0; i < 3; i++)
		CHECK(fabs((double)counts[i] / N - 1.0 / 3) < 0.022);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_inference_model_v1alpha2(void)
{
	sched *s = hermetic_sched();
	store_catalog *cat = store_catalog_new();
	static store_target w[] = {{"w-a", 1, true}, {"w-b", 3, true}};
	static store_target u[] = {{"u-a", 0, false}, {"u-b", 0, false}};
	cat->models = arena_calloc(&cat->mem, 3 * sizeof(*cat->models));
	cat->models[0] = (store_model){"weighted", "weighted", STORE_CRIT_CRITICAL, true, w, 2, 0};
	cat->models[1] = (store_model){"uniform", "uniform", STORE_CRIT_SHEDDABLE, true, u, 2, 0};
	cat->models[2] = (store_model){"std", "std", 0, false, NULL, 0, 0};
	cat->n_models = 3;
	store_catalog_finish(cat);
	struct pod pods[] = {P(0, 0.1)};
	store_snapshot *snap = snap_of(cat, pods, 1);
	rand_seed(7);
	struct reqb b;
	int nb = 0, nu = 0;
	const int N = 8000;
	for (int i = 0; i < N; i++) {
		req_body(&b, "{\"model\":\"weighted\",\"prompt\":\"p\"}");
		decide(s, snap, &b);
		nb += res.target_model.p[2] == 'b';
		req_body(&b, "{\"model\":\"uniform\",\"prompt\":\"p\"}");
		decide(s, snap, &b);
		nu += res.target_model.p[2] == 'b';
	}
	CHECK(fabs((double)nb / N - 0.75) < 0.025);
	CHECK(fabs((double)nu / N - 0.5) < 0.025);
	/* A header rewrite wins over the InferenceModel split. */
	req_body(&b, "{\"model\":\"weighted\",\"prompt\":\"p\"}");
	add_hdr(&b, "x-gateway-model-name-rewrite", "pinned");
	decide(s, snap, &b);
	CHECK(res.target_model.len == 6 && memcmp(res.target_model.p, "pinned", 6) == 0);
	store_release(snap);

	/* Criticality: anything but Critical is shed on a saturated pool. */
	struct pod busy[] = {P(50, 0.95)};
	snap = snap_of(cat, busy, 1);
	req_body(&b, "{\"model\":\"weighted\",\"prompt\":\"p\"}");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	req_body(&b, "{\"model\":\"uniform\",\"prompt\":\"p\"}");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_RESOURCE_EXHAUSTED);
	req_body(&b, "{\"model\":\"std\",\"prompt\":\"p\"}");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_RESOURCE_EXHAUSTED);
	req_body(&b, "{\"model\":\"no-such-model\",\"prompt\":\"p\"}");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* ---- admission and saturation (spec §5) -------------------------------------- */

static void test_admission_staleness(void)
{
	sched *s = hermetic_sched();
	store_catalog *cat = hermetic_catalog();
	struct reqb b;
	/* Fresh and light: admitted. */
	struct pod light[] = {P(1, 0.1), P(2, 0.2)};
	store_snapshot *snap = snap_of(cat, light, 2);
	req_llm(&b, "p", "sheddable", "sheddable");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	store_release(snap);
	/* Stale metrics count as saturated (score 1 each). */
	struct pod stale[] = {{.stale = true}, {.stale = true}};
	snap = snap_of(cat, stale, 2);
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_RESOURCE_EXHAUSTED);
	store_release(snap);
	/* Mean of max(q/5, kv/0.8): (1.0 + 0.5) / 2 < 1 admitted; (1.2+0.8)/2 >= 1 not. */
	struct pod mixed[] = {P(5, 0.1), P(0, 0.4)};
	snap = snap_of(cat, mixed, 2);
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	store_release(snap);
	struct pod over[] = {P(6, 0.1), P(0, 0.64)};
	snap = snap_of(cat, over, 2);
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_RESOURCE_EXHAUSTED);
	/* No candidates: saturation 1.0, so a sheddable request gets 429
	 * before the 503 a normal request gets. */
	sched_str none[] = {sstr("10.0.0.1:1")};
	b.r.has_subset = true;
	b.r.subset = none;
	b.r.n_subset = 1;
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_RESOURCE_EXHAUSTED);
	req_llm(&b, "p", "sql-lora", "sql-lora");
	b.r.has_subset = true;
	b.r.subset = none;
	b.r.n_subset = 1;
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_SERVICE_UNAVAILABLE);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_saturation_detectors(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "util", "utilization-detector",
		   "{\"queueDepthThreshold\":10,\"kvCacheUtilThreshold\":0.5,"
		   "\"metricsStalenessThreshold\":\"1.5s\",\"headroom\":0.2}",
		   2);
	cfg_plugin(t, "conc", "concurrency-detector", "{\"maxConcurrency\":2}", 3);
	cfg_plugin(t, "tok", "concurrency-detector",
		   "{\"concurrencyMode\":\"tokens\",\"maxTokenConcurrency\":100}", 4);
	cfg_plugin(t, NULL, "random-picker", NULL, 5);
	sched_profile_spec *p = cfg_profile(t, "default", 6);
	cfg_ref(p, "random-picker", NAN, 7);
	t->c.saturation_detector_ref = "util";
	sched *s = build(t);
	CHECK(s != NULL);
	cfg_free(t);
	if (!s)
		return;
	const sched_plugin *util = sched_find_plugin(s, "util");
	const sched_plugin *conc = sched_find_plugin(s, "conc");
	const sched_plugin *tok = sched_find_plugin(s, "tok");
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(5, 0.1), P(0, 0.4), {.stale = true}};
	store_snapshot *snap = snap_of(cat, pods, 3);
	const store_endpoint *e[3] = {&snap->endpoints[0], &snap->endpoints[1],
				      &snap->endpoints[2]};
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	arena_reset(&A);
	struct reqb b;
	req_body(&b, "{}");
	sched_ctx c = {.s = s,
		       .req = &b.r,
		       .target_model = sstr("m"),
		       .now_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec,
		       .a = &A};
	/* max(0.5, 0.2) + max(0, 0.8) + 1 (stale, 5 s > 1.5 s) */
	CHECK(fabs(util->type->saturation(util, &c, e, 3) - (0.5 + 0.8 + 1.0) / 3) < 1e-9);
	CHECK(util->type->saturation(util, &c, e, 0) == 1.0);
	/* Filter: fresh and under limits 12 / 0.6. */
	const store_endpoint *out[3];
	size_t k = util->type->filter(util, &c, e, 3, out);
	CHECK_INT(k, 2);
	/* Fails open when nothing qualifies. */
	k = util->type->filter(util, &c, e + 2, 1, out);
	CHECK_INT(k, 1);
	CHECK(out[0] == e[2]);

	/* Concurrency: in-flight counts from picks, released when done. */
	CHECK(conc->type->saturation(conc, &c, e, 3) == 0.0);
	void *h1 = inflight_acquire(s->inflight, e[0]->name, 40);
	void *h2 = inflight_acquire(s->inflight, e[0]->name, 70);
	CHECK(h1 != NULL && h2 != NULL);
	CHECK(fabs(conc->type->saturation(conc, &c, e, 3) - 2.0 / 6) < 1e-9);
	CHECK(fabs(tok->type->saturation(tok, &c, e, 3) - 110.0 / 300) < 1e-9);
	k = conc->type->filter(conc, &c, e, 3, out);
	CHECK_INT(k, 2); /* e[0] is at its limit of 2 */
	CHECK(out[0] == e[1]);
	k = tok->type->filter(tok, &c, e, 3, out);
	CHECK_INT(k, 2); /* 110 tokens >= 100 */
	inflight_release(h1, 40);
	inflight_release(h2, 70);
	CHECK(conc->type->saturation(conc, &c, e, 3) == 0.0);
	CHECK(tok->type->saturation(tok, &c, e, 0) == 1.0);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* ---- scorers and the default config (spec §4.2, §4.3) ----------------------------- */

static void score(const sched *s, const char *name, const store_endpoint *const *e, size_t n,
		  const char *model, double *out)
{
	const sched_plugin *p = sched_find_plugin(s, name);
	struct reqb b;
	req_body(&b, "{}");
	arena_reset(&A);
	sched_ctx c = {.s = s, .req = &b.r, .target_model = sstr(model), .a = &A};
	p->type->score(p, &c, e, n, out);
}

static void test_scorers(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 1);
	cfg_plugin(t, NULL, "kv-cache-utilization-scorer", NULL, 2);
	cfg_plugin(t, NULL, "lora-affinity-scorer", NULL, 3);
	cfg_plugin(t, NULL, "running-requests-size-scorer", NULL, 4);
	cfg_plugin(t, "tl", "token-load-scorer", "{\"queueThresholdTokens\":1000}", 5);
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {{.q = 3, .kv = 0.2, .active = {"a"}, .running = 4},
			     {.q = 0, .kv = 0.1, .running = 8},
			     {.q = 10, .kv = 0.25, .active = {"x", "y"}}};
	store_snapshot *snap = snap_of(cat, pods, 3);
	store_endpoint *ep = snap->endpoints;
	const store_endpoint *e[3] = {&ep[0], &ep[1], &ep[2]};
	double o[3];
	score(s, "queue-scorer", e, 3, "m", o);
	CHECK(fabs(o[0] - 0.7) < 1e-12 && o[1] == 1.0 && o[2] == 0.0);
	score(s, "queue-scorer", e, 1, "m", o);
	CHECK(o[0] == 1.0);
	score(s, "kv-cache-utilization-scorer", e, 3, "m", o);
	CHECK(fabs(o[0] - 0.8) < 1e-12 && fabs(o[1] - 0.9) < 1e-12 && fabs(o[2] - 0.75) < 1e-12);
	score(s, "running-requests-size-scorer", e, 3, "m", o);
	CHECK(o[0] == 0.5 && o[1] == 0.0 && o[2] == 1.0);
	/* LoRA: active 1.0; room to load 0.8; waiting 0.6; else 0. */
	static const char *waiting[] = {"a"};
	ep[1].m.waiting_models = waiting;
	ep[1].m.n_waiting_models = 1;
	ep[2].m.max_lora = 3;
	score(s, "lora-affinity-scorer", e, 3, "a", o);
	CHECK(o[0] == 1.0 && o[1] == 0.6 && o[2] == 0.8);
	ep[2].m.max_lora = 2;
	score(s, "lora-affinity-scorer", e, 3, "a", o);
	CHECK(o[2] == 0.0);
	/* Token load: 1 - min(1, tokens/threshold). */
	score(s, "tl", e, 3, "m", o);
	CHECK(o[0] == 1.0 && o[1] == 1.0 && o[2] == 1.0);
	void *h = inflight_acquire(s->inflight, ep[0].name, 250);
	void *h2 = inflight_acquire(s->inflight, ep[1].name, 5000);
	score(s, "tl", e, 3, "m", o);
	CHECK(o[0] == 0.75 && o[1] == 0.0 && o[2] == 1.0);
	inflight_release(h, 250);
	inflight_release(h2, 5000);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_default_config(void)
{
	char e[256];
	sched *s = sched_new(NULL, e, sizeof(e));
	CHECK(s != NULL);
	if (!s)
		return;
	CHECK_STR(sched_profile_name(s), "default");
	const sched_profile *p = &s->profiles[0];
	CHECK_INT(p->n_filters, 0);
	CHECK_STR(p->picker->type->type, "max-score-picker");
	CHECK_STR(s->handler->type->type, "single-profile-handler");
	CHECK_STR(s->parser->type->type, "openai-parser");
	CHECK_STR(s->saturation->type->type, "utilization-detector");
	bool prefix = sched_find_type("prefix-cache-scorer") != NULL;
	CHECK_INT(p->n_scorers, prefix ? 3 : 2);
	CHECK_STR(p->scorers[0].p->name, "queue-scorer");
	CHECK(p->scorers[0].weight == 2.0);
	CHECK_STR(p->scorers[1].p->name, "kv-cache-utilization-scorer");
	CHECK(p->scorers[1].weight == 2.0);
	if (prefix)
		CHECK(p->scorers[2].weight == 3.0);
	const sched_datalayer *dl = sched_data_layer(s);
	CHECK(!dl->legacy_metrics);
	CHECK_INT(dl->n_sources, 1);
	CHECK_STR(dl->sources[0].scheme, "http");
	CHECK_STR(dl->sources[0].path, "/metrics");
	CHECK(dl->sources[0].insecure_skip_verify);
	CHECK_INT(dl->sources[0].n_extractors, 1);
	const sched_extractor *ex = dl->sources[0].extractors[0];
	CHECK_STR(ex->default_engine, "vllm");
	CHECK_STR(ex->engine_label_key, "inference.networking.k8s.io/engine-type");
	CHECK_INT(ex->n_engines, 4);
	CHECK_STR(ex->engines[0].queued_requests_spec, "vllm:num_requests_waiting");

	/* "select lower queue and kv cache" with weights 2/2: 3.0, 3.8, 1.6. */
	store_catalog *cat = hermetic_catalog();
	struct pod pods[] = {P(3, 0.2), P(0, 0.1), P(10, 0.2)};
	store_snapshot *snap = snap_of(cat, pods, 3);
	struct reqb b;
	req_llm(&b, "test1", "my-model", "my-model-12345");
	decide(s, snap, &b);
	CHECK_STR(res.targets, "192.168.1.2:8000");
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* ---- pickers ------------------------------------------------------------------- */

static void test_max_score_picker(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 1);
	cfg_plugin(t, NULL, "max-score-picker", "{\"maxNumOfEndpoints\":3}", 2);
	sched *s = build(t);
	cfg_free(t);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(5, 0), P(0, 0), P(10, 0), P(2, 0), P(8, 0)};
	store_snapshot *snap = snap_of(cat, pods, 5);
	struct reqb b;
	req_body(&b, "{\"model\":\"m\",\"prompt\":\"p\"}");
	decide(s, snap, &b);
	CHECK_INT(res.n_picked, 3);
	CHECK_STR(res.targets, "192.168.1.2:8000,192.168.1.4:8000,192.168.1.1:8000");
	/* Ties are broken at random. */
	struct pod flat[] = {P(1, 0), P(1, 0), P(1, 0), P(1, 0)};
	store_release(snap);
	snap = snap_of(cat, flat, 4);
	int first[4] = {0};
	for (int i = 0; i < 400; i++) {
		decide(s, snap, &b);
		first[res.targets[10] - '1']++;
	}
	for (int i = 0; i < 4; i++)
		CHECK(first[i] > 50);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_random_and_weighted_pickers(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "rnd", "random-picker", "{\"maxNumOfEndpoints\":2}", 1);
	cfg_plugin(t, "wr", "weighted-random-picker", NULL, 2);
	cfg_plugin(t, "wr3", "weighted-random-picker", "{\"maxNumOfEndpoints\":0}", 3);
	sched_profile_spec *p = cfg_profile(t, "default", 4);
	cfg_ref(p, "rnd", NAN, 5);
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(0, 0), P(0, 0), P(0, 0)};
	store_snapshot *snap = snap_of(cat, pods, 3);
	const store_endpoint *e = snap->endpoints;
	const sched_plugin *rnd = sched_find_plugin(s, "rnd");
	const sched_plugin *wr = sched_find_plugin(s, "wr");
	const sched_plugin *wr3 = sched_find_plugin(s, "wr3");
	struct reqb b;
	req_body(&b, "{}");
	sched_ctx c = {.s = s, .req = &b.r, .target_model = sstr("m"), .a = &A};
	rand_seed(1);
	int hits[3] = {0};
	const int N = 9000;
	for (int i = 0; i < N; i++) {
		arena_reset(&A);
		sched_scored sc[3] = {{&e[0], 0.1}, {&e[1], 0.3}, {&e[2], 0.6}};
		size_t k = rnd->type->pick(rnd, &c, sc, 3);
		CHECK_INT(k, 2);
		CHECK(sc[0].ep != sc[1].ep);
		hits[sc[0].ep - e]++;
	}
	for (int i = 0; i < 3; i++)
		CHECK(fabs((double)hits[i] / N - 1.0 / 3) < 0.03);
	/* A-Res: P(first) is proportional to the score. */
	memset(hits, 0, sizeof(hits));
	for (int i = 0; i < N; i++) {
		arena_reset(&A);
		sched_scored sc[3] = {{&e[0], 0.1}, {&e[1], 0.3}, {&e[2], 0.6}};
		size_t k = wr->type->pick(wr, &c, sc, 3);
		CHECK_INT(k, 1);
		hits[sc[0].ep - e]++;
	}
	CHECK(fabs((double)hits[0] / N - 0.1) < 0.02);
	CHECK(fabs((double)hits[1] / N - 0.3) < 0.03);
	CHECK(fabs((double)hits[2] / N - 0.6) < 0.03);
	/* Zero scores are never chosen while another is positive. */
	for (int i = 0; i < 200; i++) {
		arena_reset(&A);
		sched_scored sc[3] = {{&e[0], 0}, {&e[1], -1}, {&e[2], 0.5}};
		wr3->type->pick(wr3, &c, sc, 3);
		CHECK(sc[0].ep == &e[2]);
	}
	/* All zero: uniform like random-picker. */
	memset(hits, 0, sizeof(hits));
	for (int i = 0; i < 3000; i++) {
		arena_reset(&A);
		sched_scored sc[3] = {{&e[0], 0}, {&e[1], 0}, {&e[2], 0}};
		wr->type->pick(wr, &c, sc, 3);
		hits[sc[0].ep - e]++;
	}
	for (int i = 0; i < 3; i++)
		CHECK(hits[i] > 800);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* ---- filters --------------------------------------------------------------------- */

/* The conformance config of spec §4.4. */
static sched *conformance_sched(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "header-based-testing-filter", NULL, 4);
	cfg_plugin(t, NULL, "destination-endpoint-served-verifier", NULL, 5);
	sched_profile_spec *p = cfg_profile(t, "conformance-profile", 7);
	cfg_ref(p, "header-based-testing-filter", NAN, 9);
	sched *s = build(t);
	cfg_free(t);
	return s;
}

static const char *pick_with_header(const sched *s, const store_snapshot *snap, const char *hv)
{
	struct reqb b;
	req_body(&b, "{\"model\":\"conformance-fake-model\",\"prompt\":\"Write as if you were a "
		     "critic: San Francisco\"}");
	if (hv)
		add_hdr(&b, "test-epp-endpoint-selection", hv);
	decide(s, snap, &b);
	return res.err == SCHED_OK ? res.targets : res.error;
}

static void test_header_filter(void)
{
	sched *s = conformance_sched();
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {{.port = 3000, .ip = "10.0.0.1"}, {.port = 3002, .ip = "10.0.0.1"},
			     {.port = 3002, .ip = "10.0.0.2"}, {.port = 3004, .ip = "10.0.0.3"},
			     {.port = 3002, .ip = "fd00::1"},  {.port = 3004, .ip = "fd00::2"}};
	store_snapshot *snap = snap_of(cat, pods, 6);
	const char *fail = "inference error: ResourceExhausted - failed to find target endpoint: "
			   "failed to run scheduler profile 'conformance-profile'";
	CHECK_STR(pick_with_header(s, snap, NULL), fail);
	CHECK_STR(pick_with_header(s, snap, "  "), fail);
	CHECK_STR(pick_with_header(s, snap, "10.0.0.99"), fail);
	CHECK_STR(pick_with_header(s, snap, "10.0.0.1:9999"), fail);
	CHECK_STR(pick_with_header(s, snap, "10.0.0.1:3002"), "10.0.0.1:3002");
	CHECK_STR(pick_with_header(s, snap, "10.0.0.2"), "10.0.0.2:3002");
	/* A bare IP is the last endpoint with that IP. */
	CHECK_STR(pick_with_header(s, snap, "10.0.0.1"), "10.0.0.1:3002");
	CHECK_STR(pick_with_header(s, snap, "[fd00::1]:3002"), "[fd00::1]:3002");
	CHECK_STR(pick_with_header(s, snap, "fd00::2"), "[fd00::2]:3004");
	CHECK_STR(pick_with_header(s, snap, "[fd00::2]"), "[fd00::2]:3004");
	/* Order, trimming and de-duplication by IP, via the filter itself. */
	const sched_plugin *f = sched_find_plugin(s, "header-based-testing-filter");
	struct reqb b;
	req_body(&b, "{}");
	add_hdr(&b, "test-epp-endpoint-selection", "10.0.0.3:3004, 10.0.0.2, 10.0.0.3,,");
	sched_ctx c = {.s = s, .req = &b.r, .target_model = sstr("m"), .a = &A};
	const store_endpoint *in[6], *out[6];
	for (int i = 0; i < 6; i++)
		in[i] = &snap->endpoints[i];
	size_t k = f->type->filter(f, &c, in, 6, out);
	CHECK_INT(k, 2);
	CHECK(out[0] == in[3] && out[1] == in[2]);
	/* Uniform among several listed endpoints (all scores 0). */
	int hits[2] = {0, 0};
	for (int i = 0; i < 300; i++) {
		const char *t = pick_with_header(s, snap, "10.0.0.2,10.0.0.3");
		hits[0] += strcmp(t, "10.0.0.2:3002") == 0;
		hits[1] += strcmp(t, "10.0.0.3:3004") == 0;
	}
	CHECK(hits[0] > 100 && hits[1] > 100 && hits[0] + hits[1] == 300);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void add_header(void *ctx, const char *name, const char *value, size_t len)
{
	char *out = ctx;
	snprintf(out, 256, "%s: %.*s", name, (int)len, value);
}

static void test_served_verifier(void)
{
	sched *s = conformance_sched();
	if (!s)
		return;
	char out[256] = "";
	sched_str served = sstr("10.0.0.1:3000");
	sched_response_headers(s, true, &served, add_header, out);
	CHECK_STR(out, "x-conformance-test-served-endpoint: 10.0.0.1:3000");
	sched_response_headers(s, false, NULL, add_header, out);
	CHECK_STR(out, "x-conformance-test-served-endpoint: fail: missing envoy lb metadata");
	sched_response_headers(s, true, NULL, add_header, out);
	CHECK_STR(out, "x-conformance-test-served-endpoint: fail: missing destination endpoint "
		       "served metadata");
	sched_free(s);
	/* Without the plugin nothing is added. */
	s = hermetic_sched();
	out[0] = '\0';
	sched_response_headers(s, true, &served, add_header, out);
	CHECK_STR(out, "");
	sched_free(s);
}

static size_t run_filter(const sched *s, const char *name, const store_snapshot *snap,
			 const char *model, const store_endpoint **out)
{
	const sched_plugin *f = sched_find_plugin(s, name);
	struct reqb b;
	req_body(&b, "{}");
	arena_reset(&A);
	sched_ctx c = {.s = s, .req = &b.r, .target_model = sstr(model), .a = &A};
	const store_endpoint *in[MAXP];
	for (uint32_t i = 0; i < snap->n_endpoints; i++)
		in[i] = &snap->endpoints[i];
	return f->type->filter(f, &c, in, snap->n_endpoints, out);
}

static void test_legacy_filters(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "lowq", "low-queue-filter", "{\"threshold\":5}", 1);
	cfg_plugin(t, NULL, "least-queue-filter", NULL, 2);
	cfg_plugin(t, NULL, "least-kv-cache-filter", NULL, 3);
	cfg_plugin(t, "lora1", "lora-affinity-filter", "{\"threshold\":1.0}", 4);
	cfg_plugin(t, "lora0", "lora-affinity-filter", "{\"threshold\":0}", 5);
	cfg_plugin(t, NULL, "low-queue-filter", NULL, 6);
	cfg_plugin(t, NULL, "lora-affinity-filter", NULL, 7);
	/* The v0.5.1 chart tree (spec §4.5). */
	cfg_plugin(
		t, "low-latency-filter", "decision-tree-filter",
		"{\"current\":{\"pluginRef\":\"low-queue-filter\"},"
		"\"nextOnSuccess\":{\"decisionTree\":{\"current\":{\"pluginRef\":"
		"\"lora-affinity-filter\"},\"nextOnSuccessOrFailure\":{\"decisionTree\":{"
		"\"current\":{\"pluginRef\":\"least-queue-filter\"},\"nextOnSuccessOrFailure\":{"
		"\"decisionTree\":{\"current\":{\"pluginRef\":\"least-kv-cache-filter\"}}}}}}},"
		"\"nextOnFailure\":{\"decisionTree\":{\"current\":{\"pluginRef\":"
		"\"least-queue-filter\"},\"nextOnSuccessOrFailure\":{\"decisionTree\":{"
		"\"current\":{\"pluginRef\":\"lora-affinity-filter\"},\"nextOnSuccessOrFailure\":{"
		"\"decisionTree\":{\"current\":{\"pluginRef\":\"least-kv-cache-filter\"}}}}}}}}",
		8);
	cfg_plugin(t, NULL, "random-picker", NULL, 9);
	sched_profile_spec *p = cfg_profile(t, "default", 10);
	cfg_ref(p, "low-latency-filter", NAN, 11);
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	/* queue 0,3,5,9,200; kv .1 .2 .5 .9 .3 */
	struct pod pods[] = {P(0, 0.1, "x"), P(3, 0.2), P(5, 0.5, "sql"), P(9, 0.9),
			     P(200, 0.3, "sql")};
	store_snapshot *snap = snap_of(cat, pods, 5);
	const store_endpoint *o[MAXP];
	size_t k = run_filter(s, "lowq", snap, "m", o);
	CHECK_INT(k, 3); /* <= 5 */
	/* Bucket: q in [0, 0 + 200/5 = 40] */
	k = run_filter(s, "least-queue-filter", snap, "m", o);
	CHECK_INT(k, 4);
	/* kv in [0.1, 0.1 + 0.8/5 = 0.26] */
	k = run_filter(s, "least-kv-cache-filter", snap, "m", o);
	CHECK_INT(k, 2);
	CHECK(o[0] == &snap->endpoints[0] && o[1] == &snap->endpoints[1]);
	/* Affinity: endpoints with "sql"; the others have no room (max_lora 0). */
	k = run_filter(s, "lora1", snap, "sql", o);
	CHECK_INT(k, 2);
	for (int i = 0; i < 5; i++)
		snap->endpoints[i].m.max_lora = 4;
	k = run_filter(s, "lora1", snap, "sql", o);
	CHECK_INT(k, 2);
	CHECK(o[0] == &snap->endpoints[2] && o[1] == &snap->endpoints[4]);
	k = run_filter(s, "lora0", snap, "sql", o);
	CHECK_INT(k, 3);
	/* The tree: low-queue (<=128) keeps 4; lora (no affinity, all have
	 * room) keeps them; least-queue [0, 9/4=2] keeps q=0; least-kv keeps it. */
	k = run_filter(s, "low-latency-filter", snap, "nothing", o);
	CHECK_INT(k, 1);
	CHECK(o[0] == &snap->endpoints[0]);
	/* Failure branch: every queue over 128 goes to least-queue on all. */
	struct pod busy[] = {P(300, 0.5), P(200, 0.1), P(900, 0.2)};
	store_release(snap);
	snap = snap_of(cat, busy, 3);
	k = run_filter(s, "low-latency-filter", snap, "nothing", o);
	CHECK_INT(k, 1);
	CHECK(o[0] == &snap->endpoints[1]);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* ---- in-flight accounting through the director -------------------------------------- */

static void test_inflight_accounting(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "conc", "concurrency-detector", "{\"maxConcurrency\":1}", 1);
	cfg_plugin(t, NULL, "max-score-picker", NULL, 2);
	sched_profile_spec *p = cfg_profile(t, "default", 3);
	cfg_ref(p, "conc", NAN, 4);
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(0, 0), P(0, 0)};
	store_snapshot *snap = snap_of(cat, pods, 2);
	struct reqb b;
	req_body(&b, "{\"model\":\"m\",\"prompt\":\"0123456789abcdef\"}");
	/* Results point into the arena each decide() resets: keep copies. */
	char t1[64], t2[64];
	decide(s, snap, &b);
	sched_result r1 = res;
	snprintf(t1, sizeof(t1), "%s", res.targets);
	decide(s, snap, &b);
	sched_result r2 = res;
	snprintf(t2, sizeof(t2), "%s", res.targets);
	/* Each endpoint takes one request; a third finds none under the limit. */
	CHECK_INT(r1.err, SCHED_OK);
	CHECK_INT(r2.err, SCHED_OK);
	CHECK(strcmp(t1, t2) != 0);
	CHECK(r1.inflight != NULL);
	/* 41 bytes: 10 input tokens + 15 output. */
	CHECK_INT(r1.inflight_tokens, 25);
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_RESOURCE_EXHAUSTED);
	CHECK(res.inflight == NULL);
	sched_request_done(s, &r1);
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	CHECK_STR(res.targets, t1);
	sched_request_done(s, &res);
	sched_request_done(s, &r2);
	int64_t rq, tk;
	inflight_get(s->inflight, snap->endpoints[0].name, &rq, &tk);
	CHECK(rq == 0 && tk == 0);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_inflight_table(void)
{
	inflight *t = inflight_new();
	/* Many names come and go: released slots are reused. */
	char name[64];
	for (int round = 0; round < 50; round++) {
		void *h[200];
		for (int i = 0; i < 200; i++) {
			snprintf(name, sizeof(name), "pod-%d-%d-rank-0", round, i);
			h[i] = inflight_acquire(t, name, i);
			CHECK(h[i] != NULL);
		}
		snprintf(name, sizeof(name), "pod-%d-%d-rank-0", round, 7);
		int64_t r, k;
		inflight_get(t, name, &r, &k);
		CHECK(r == 1 && k == 7);
		for (int i = 0; i < 200; i++)
			inflight_release(h[i], i);
		inflight_get(t, name, &r, &k);
		CHECK(r == 0 && k == 0);
	}
	inflight_free(t);
}

static sched *lora_sched(const char *params)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "lora", "lora-affinity-scorer", params, 3);
	cfg_plugin(t, "max", "max-score-picker", NULL, 4);
	sched_profile_spec *p = cfg_profile(t, "default", 5);
	cfg_ref(p, "lora", 1, 6);
	cfg_ref(p, "max", NAN, 7);
	sched *s = build(t);
	cfg_free(t);
	return s;
}

static const char *lora_pick(const sched *s, const store_snapshot *snap, const char *adapter,
			     const char *only)
{
	struct reqb b;
	char body[128];
	snprintf(body, sizeof(body), "{\"model\":\"%s\",\"prompt\":\"x\"}", adapter);
	req_body(&b, body);
	sched_str sub1[] = {sstr(only ? only : "")};
	if (only) {
		b.r.has_subset = true;
		b.r.subset = sub1;
		b.r.n_subset = 1;
	}
	decide(s, snap, &b);
	static char out[64];
	snprintf(out, sizeof(out), "%s", res.err == SCHED_OK ? res.targets : "error");
	sched_request_done(s, &res);
	return out;
}

/* residentAdapters: adapters kepp sent to a pod stay "loaded" there, in an
 * LRU of the pod's max_lora slots, though the metrics no longer list them. */
static const char *build_err_lora(const char *params)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "lora", "lora-affinity-scorer", params, 3);
	const char *e = build_err(t);
	cfg_free(t);
	return e;
}

static void test_lora_resident_adapters(void)
{
	store_catalog *cat = store_catalog_new();
	store_catalog_finish(cat);
	struct pod pods[] = {{.max_lora = 2}, {.max_lora = 2}};
	store_snapshot *snap = snap_of(cat, pods, 2);
	sched *ref = lora_sched(NULL), *res_s = lora_sched("{\"residentAdapters\": true}");
	CHECK(ref && res_s);
	if (!ref || !res_s)
		goto out;
	/* Without the model both pods score 0.8 (room to load): ties drawn at
	 * random, so 20 picks land on both. */
	bool seen[2] = {false, false};
	for (int i = 0; i < 40; i++)
		seen[strcmp(lora_pick(ref, snap, "a", NULL), "192.168.1.1:8000") == 0 ? 0 : 1] = true;
	CHECK(seen[0] && seen[1]);
	/* With it, the pod that got "a" first keeps it. */
	const char *first = lora_pick(res_s, snap, "a", NULL);
	char want[64];
	snprintf(want, sizeof(want), "%s", first);
	for (int i = 0; i < 20; i++)
		CHECK_STR(lora_pick(res_s, snap, "a", NULL), want);
	/* LRU of max_lora = 2: b and c sent to pod 1 push a out there. */
	CHECK_STR(lora_pick(res_s, snap, "b", "192.168.1.1:8000"), "192.168.1.1:8000");
	CHECK_STR(lora_pick(res_s, snap, "c", "192.168.1.1:8000"), "192.168.1.1:8000");
	for (int i = 0; i < 10; i++) {
		CHECK_STR(lora_pick(res_s, snap, "c", NULL), "192.168.1.1:8000");
		CHECK_STR(lora_pick(res_s, snap, "b", NULL), "192.168.1.1:8000");
	}
	/* A dry run (explain) learns nothing. */
	struct reqb b;
	req_body(&b, "{\"model\":\"d\",\"prompt\":\"x\"}");
	b.r.dry_run = true;
	sched_str p2[] = {sstr("192.168.1.2:8000")};
	b.r.has_subset = true;
	b.r.subset = p2;
	b.r.n_subset = 1;
	decide(res_s, snap, &b);
	const store_endpoint *both[] = {&snap->endpoints[0], &snap->endpoints[1]};
	double sc[2];
	score(res_s, "lora", both, 2, "d", sc);
	CHECK(sc[0] == 0.8 && sc[1] == 0.8);
	score(res_s, "lora", both, 2, "c", sc);
	CHECK(sc[0] == 0.9 && sc[1] == 0.8);
	CHECK(strcmp(build_err_lora("{\"residentAdapters\": 3}"), "(accepted)") != 0);
out:
	sched_free(ref);
	sched_free(res_s);
	store_release(snap);
	store_catalog_unref(cat);
}

/* Stale candidates leave while others are fresh; all stale: all stay. */
static void test_stale_candidates(void)
{
	store_catalog *cat = store_catalog_new();
	store_catalog_finish(cat);
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "q", "queue-scorer", NULL, 3);
	cfg_plugin(t, "max", "max-score-picker", NULL, 4);
	sched_profile_spec *p = cfg_profile(t, "default", 5);
	cfg_ref(p, "q", 1, 6);
	cfg_ref(p, "max", NAN, 7);
	sched *s = build(t);
	cfg_free(t);
	struct pod pods[] = {{.q = 0, .stale = true}, {.q = 5}};
	store_snapshot *snap = snap_of(cat, pods, 2);
	struct pod all_stale[] = {{.q = 0, .stale = true}, {.q = 5, .stale = true}};
	store_snapshot *snap2 = snap_of(cat, all_stale, 2);
	CHECK(s != NULL);
	if (s) {
		CHECK_STR(lora_pick(s, snap, "m", NULL), "192.168.1.1:8000"); /* off: reference */
		sched_set_staleness(s, 2000);
		CHECK_STR(lora_pick(s, snap, "m", NULL), "192.168.1.2:8000");
		CHECK_STR(lora_pick(s, snap2, "m", NULL), "192.168.1.1:8000");
		/* The subset hint applies first: a stale pod it names alone stays. */
		CHECK_STR(lora_pick(s, snap, "m", "192.168.1.1:8000"), "192.168.1.1:8000");
	}
	sched_free(s);
	store_release(snap);
	store_release(snap2);
	store_catalog_unref(cat);
}

static void test_pick_any(void)
{
	store_catalog *cat = store_catalog_new();
	store_snapshot *snap = snap_of(cat, NULL, 0);
	arena_reset(&A);
	sched_pick_any(snap, &A, &res);
	CHECK_INT(res.err, SCHED_INTERNAL);
	CHECK_STR(res.error, "inference error: Internal - no pods available in datastore");
	CHECK_INT(sched_err_http(res.err), 500);
	store_release(snap);
	struct pod pods[] = {P(0, 0), P(0, 0), P(0, 0)};
	snap = snap_of(cat, pods, 3);
	int hits[3] = {0};
	for (int i = 0; i < 3000; i++) {
		sched_pick_any(snap, &A, &res);
		CHECK_INT(res.err, SCHED_OK);
		hits[res.targets[10] - '1']++;
	}
	for (int i = 0; i < 3; i++)
		CHECK(hits[i] > 850);
	store_release(snap);
	store_catalog_unref(cat);
}

static void test_passthrough_parser(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 1);
	cfg_plugin(t, NULL, "kv-cache-utilization-scorer", NULL, 2);
	cfg_plugin(t, NULL, "passthrough-parser", NULL, 3);
	t->c.parser_ref = "passthrough-parser";
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = hermetic_catalog();
	struct pod pods[] = {P(3, 0.2), P(0, 0.1), P(10, 0.2)};
	store_snapshot *snap = snap_of(cat, pods, 3);
	struct reqb b;
	req_body(&b, "passthrough-parser");
	add_hdr(&b, "hi", "mom");
	add_hdr(&b, "x-gateway-inference-objective", "my-model");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	CHECK_STR(res.targets, "192.168.1.2:8000");
	CHECK(res.body == b.r.body && res.body_len == 18);
	CHECK(res.raw_payload);
	CHECK_INT(res.incoming_model.len, 0);
	CHECK_INT(res.target_model.len, 0);
	CHECK_INT(res.priority, 2);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_api_from_path(void)
{
	CHECK_INT(sched_api_from_path("/v1/chat/completions", 20), SCHED_API_CHAT);
	CHECK_INT(sched_api_from_path("/v1/completions", 15), SCHED_API_COMPLETIONS);
	CHECK_INT(sched_api_from_path("/v1/responses", 13), SCHED_API_RESPONSES);
	CHECK_INT(sched_api_from_path("/v1/conversations", 17), SCHED_API_CONVERSATIONS);
	CHECK_INT(sched_api_from_path("/v1/embeddings", 14), SCHED_API_EMBEDDINGS);
	const char *vtx = "/v1/projects/p/locations/l/endpoints/openapi/chat/completions";
	CHECK_INT(sched_api_from_path(vtx, strlen(vtx)), SCHED_API_CHAT);
	CHECK_INT(sched_api_from_path("/v1/chat/completions?x=1", 24), SCHED_API_COMPLETIONS);
	CHECK_INT(sched_api_from_path("/healthz", 8), SCHED_API_COMPLETIONS);
	CHECK_INT(sched_api_from_path(NULL, 0), SCHED_API_COMPLETIONS);
	CHECK_STR(sched_err_name(SCHED_NOT_FOUND), "NotFound");
	CHECK_INT(sched_err_http(SCHED_UNAUTHORIZED), 401);
	CHECK_INT(sched_err_http(SCHED_FORBIDDEN), 403);
	CHECK_INT(sched_err_http(SCHED_NOT_FOUND), 404);
}

/* ---- defaulting and validation (spec §4.3) ------------------------------------------ */

static void test_defaulting(void)
{
	/* No profiles: one "default" with every filter/scorer/picker in
	 * config order; a picker and the handler are added. */
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "hf", "header-based-testing-filter", NULL, 1);
	cfg_plugin(t, "q", "queue-scorer", NULL, 2);
	cfg_plugin(t, "sat", "utilization-detector", NULL, 3);
	cfg_plugin(t, "kv", "kv-cache-utilization-scorer", NULL, 4);
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (s) {
		const sched_profile *p = &s->profiles[0];
		CHECK_STR(p->name, "default");
		CHECK_INT(p->n_filters, 2);
		CHECK_STR(p->filters[0]->name, "hf");
		CHECK_STR(p->filters[1]->name, "sat");
		CHECK_INT(p->n_scorers, 2);
		CHECK(p->scorers[0].weight == 1.0 && p->scorers[1].weight == 1.0);
		CHECK_STR(p->picker->name, "max-score-picker");
		CHECK_STR(s->handler->name, "single-profile-handler");
		/* The configured detector is not the saturation detector
		 * unless referenced: the default one is added. */
		CHECK_STR(s->saturation->name, "utilization-detector");
		sched_free(s);
	}
	/* A declared picker is appended to profiles without one; weights kept. */
	t = cfg_new();
	cfg_plugin(t, "q", "queue-scorer", NULL, 1);
	cfg_plugin(t, "pick", "random-picker", NULL, 2);
	sched_profile_spec *p = cfg_profile(t, "mine", 3);
	cfg_ref(p, "q", 2.5, 4);
	s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (s) {
		CHECK_STR(s->profiles[0].picker->name, "pick");
		CHECK(s->profiles[0].scorers[0].weight == 2.5);
		CHECK_STR(sched_profile_name(s), "mine");
		sched_free(s);
	}
}

#define EXPECT_ERR(t, want)                                \
	do {                                               \
		CHECK_STR(build_err(t), want);             \
		cfg_free(t);                               \
	} while (0)

static void test_validation_errors(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "no-such-scorer", NULL, 7);
	EXPECT_ERR(t, "test.yaml:7: plugin type 'no-such-scorer' is not registered");

	t = cfg_new();
	cfg_plugin(t, "a", "queue-scorer", NULL, 3);
	cfg_plugin(t, "a", "kv-cache-utilization-scorer", NULL, 5);
	EXPECT_ERR(t, "test.yaml:5: duplicate plugin name 'a'");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 3);
	cfg_plugin(t, NULL, "queue-scorer", NULL, 4);
	EXPECT_ERR(t, "test.yaml:4: duplicate plugin name 'queue-scorer'");

	t = cfg_new();
	cfg_plugin(t, "x", NULL, NULL, 9);
	EXPECT_ERR(t, "test.yaml:9: plugin 'x' is missing a type");

	t = cfg_new();
	cfg_plugin(t, "h1", "single-profile-handler", NULL, 2);
	cfg_plugin(t, "h2", "single-profile-handler", NULL, 3);
	EXPECT_ERR(t, "test.yaml:3: multiple profile handlers found ('h1', 'h2'); only one is "
		      "allowed");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	cfg_plugin(t, NULL, "single-profile-handler", NULL, 3);
	cfg_ref(cfg_profile(t, "a", 5), "queue-scorer", NAN, 6);
	cfg_ref(cfg_profile(t, "b", 7), "queue-scorer", NAN, 8);
	EXPECT_ERR(t, "test.yaml:3: SingleProfileHandler cannot support multiple scheduling "
		      "profiles");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	cfg_ref(cfg_profile(t, "a", 5), "queue-scorer", NAN, 6);
	cfg_ref(cfg_profile(t, "b", 7), "queue-scorer", NAN, 8);
	EXPECT_ERR(t, "test.yaml: no profile handler configured");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	cfg_ref(cfg_profile(t, "a", 5), "kv", NAN, 6);
	EXPECT_ERR(t, "test.yaml:6: schedulingProfiles[a] references undefined plugin 'kv'");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	cfg_ref(cfg_profile(t, "a", 5), NULL, NAN, 6);
	EXPECT_ERR(t, "test.yaml:6: schedulingProfiles[a].plugins[0] is missing a 'pluginRef'");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	cfg_ref(cfg_profile(t, NULL, 5), "queue-scorer", NAN, 6);
	EXPECT_ERR(t, "test.yaml:5: schedulingProfiles[0] is missing a name");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	cfg_plugin(t, NULL, "single-profile-handler", NULL, 3);
	cfg_ref(cfg_profile(t, "a", 5), "queue-scorer", NAN, 6);
	cfg_ref(cfg_profile(t, "a", 8), "queue-scorer", NAN, 9);
	EXPECT_ERR(t, "test.yaml:8: schedulingProfiles[1] has duplicate name 'a'");

	t = cfg_new();
	cfg_plugin(t, "p1", "max-score-picker", NULL, 2);
	cfg_plugin(t, "p2", "random-picker", NULL, 3);
	sched_profile_spec *p = cfg_profile(t, "a", 5);
	cfg_ref(p, "p1", NAN, 6);
	cfg_ref(p, "p2", NAN, 7);
	EXPECT_ERR(t, "test.yaml:7: failed to add plugin 'p2' to profile 'a': failed to set 'p2' "
		      "as picker, already have a registered picker plugin 'p1'");

	t = cfg_new();
	cfg_plugin(t, "pk", "max-score-picker", "{\"maxNumOfEndpoint\":2}", 4);
	EXPECT_ERR(t, "test.yaml:4: failed to create plugin 'pk' (type: max-score-picker): "
		      "unknown parameter 'maxNumOfEndpoint'");

	t = cfg_new();
	cfg_plugin(t, "pk", "max-score-picker", "{\"maxNumOfEndpoints\":\"2\"}", 4);
	EXPECT_ERR(t, "test.yaml:4: failed to create plugin 'pk' (type: max-score-picker): "
		      "parameter 'maxNumOfEndpoints' must be an integer");

	t = cfg_new();
	cfg_plugin(t, "pk", "max-score-picker", "{\"maxNumOfEndpoints\":1.5}", 4);
	EXPECT_ERR(t, "test.yaml:4: failed to create plugin 'pk' (type: max-score-picker): "
		      "parameter 'maxNumOfEndpoints' must be an integer");

	t = cfg_new();
	cfg_plugin(t, "pk", "max-score-picker", "[1]", 4);
	EXPECT_ERR(t, "test.yaml:4: failed to create plugin 'pk' (type: max-score-picker): "
		      "parameters must be an object");

	t = cfg_new();
	cfg_plugin(t, "q", "queue-scorer", "{\"weight\":2}", 4);
	EXPECT_ERR(t, "test.yaml:4: failed to create plugin 'q' (type: queue-scorer): unknown "
		      "parameter 'weight'");

	t = cfg_new();
	cfg_plugin(t, "u", "utilization-detector", "{\"kvCacheUtilThreshold\":1.5}", 4);
	EXPECT_ERR(t, "test.yaml:4: failed to create plugin 'u' (type: utilization-detector): "
		      "invalid utilization detector configuration: kvCacheUtilThreshold must be in "
		      "(0.0, 1.0], got 1.500000");

	t = cfg_new();
	cfg_plugin(t, "u", "utilization-detector", "{\"metricsStalenessThreshold\":200}", 4);
	EXPECT_ERR(t, "test.yaml:4: failed to create plugin 'u' (type: utilization-detector): "
		      "parameter 'metricsStalenessThreshold' must be a duration string such as "
		      "\"200ms\"");

	t = cfg_new();
	cfg_plugin(t, "u", "utilization-detector", "{\"queueDepthThreshold\":0}", 4);
	EXPECT_ERR(t, "test.yaml:4: failed to create plugin 'u' (type: utilization-detector): "
		      "invalid utilization detector configuration: queueDepthThreshold must be "
		      "strictly positive, got 0");

	t = cfg_new();
	cfg_plugin(t, "c", "concurrency-detector", "{\"concurrencyMode\":\"bytes\"}", 4);
	EXPECT_ERR(t, "test.yaml:4: failed to create plugin 'c' (type: concurrency-detector): "
		      "invalid concurrency detector configuration: unsupported concurrencyMode: "
		      "\"bytes\"");

	t = cfg_new();
	cfg_plugin(t, "pk", "max-score-picker", "{\"maxNumOfEndpoints\":17}", 4);
	EXPECT_ERR(t, "test.yaml:4: failed to create plugin 'pk' (type: max-score-picker): "
		      "maxNumOfEndpoints 17 is above the supported maximum 16");

	t = cfg_new();
	t->gates[t->c.n_feature_gates++] = "noSuchGate";
	EXPECT_ERR(t, "test.yaml: feature gate 'noSuchGate' is unknown or unregistered");

	t = cfg_new();
	t->gates[t->c.n_feature_gates++] = "flowControl";
	EXPECT_ERR(t, "test.yaml: feature gate 'flowControl': the flow control layer is not "
		      "supported yet; remove the gate");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	t->c.saturation_detector_ref = "sat";
	t->c.saturation_detector_line = 12;
	EXPECT_ERR(t, "test.yaml:12: saturation detector references undefined plugin 'sat'");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	t->c.saturation_detector_ref = "queue-scorer";
	t->c.saturation_detector_line = 12;
	EXPECT_ERR(t, "test.yaml:12: plugin 'queue-scorer' is not a saturation detector");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	t->c.parser_ref = "my-parser";
	t->c.parser_line = 14;
	EXPECT_ERR(t, "test.yaml:14: the configured parser 'my-parser' is not loaded");

	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	t->c.parser_ref = "queue-scorer";
	t->c.parser_line = 14;
	EXPECT_ERR(t, "test.yaml:14: the specified plugin 'queue-scorer' is not a parser plugin");

	/* prefix-cache-scorer is refused while it is not implemented. */
	if (!sched_find_type("prefix-cache-scorer")) {
		t = cfg_new();
		cfg_plugin(t, NULL, "prefix-cache-scorer", NULL, 6);
		EXPECT_ERR(t, "test.yaml:6: plugin type 'prefix-cache-scorer' is not registered");
	}
}

static void test_decision_tree_errors(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "dt", "decision-tree-filter", NULL, 3);
	EXPECT_ERR(t, "test.yaml:3: failed to create plugin 'dt' (type: decision-tree-filter): a "
		      "current filter must be specified");

	t = cfg_new();
	cfg_plugin(t, "dt", "decision-tree-filter", "{\"current\":{\"pluginRef\":\"later\"}}", 3);
	cfg_plugin(t, "later", "least-queue-filter", NULL, 4);
	EXPECT_ERR(t, "test.yaml:3: failed to create plugin 'dt' (type: decision-tree-filter): "
		      "later is a reference to an undefined Plugin");

	t = cfg_new();
	cfg_plugin(t, "q", "queue-scorer", NULL, 2);
	cfg_plugin(t, "dt", "decision-tree-filter", "{\"current\":{\"pluginRef\":\"q\"}}", 3);
	EXPECT_ERR(t, "test.yaml:3: failed to create plugin 'dt' (type: decision-tree-filter): q "
		      "is not a filter");

	t = cfg_new();
	cfg_plugin(t, "f", "least-queue-filter", NULL, 2);
	cfg_plugin(t, "dt", "decision-tree-filter",
		   "{\"current\":{\"pluginRef\":\"f\",\"decisionTree\":{}}}", 3);
	EXPECT_ERR(t, "test.yaml:3: failed to create plugin 'dt' (type: decision-tree-filter): "
		      "both pluginRef and decisionTree may not be specified");

	t = cfg_new();
	cfg_plugin(t, "dt", "decision-tree-filter", "{\"current\":{}}", 3);
	EXPECT_ERR(t, "test.yaml:3: failed to create plugin 'dt' (type: decision-tree-filter): "
		      "either pluginRef or decisionTree must be specified");

	t = cfg_new();
	cfg_plugin(t, "f", "least-queue-filter", NULL, 2);
	cfg_plugin(t, "dt", "decision-tree-filter",
		   "{\"current\":{\"pluginRef\":\"f\"},\"nextOnSuccess\":{\"bogus\":1}}", 3);
	EXPECT_ERR(t, "test.yaml:3: failed to create plugin 'dt' (type: decision-tree-filter): "
		      "unknown parameter 'nextOnSuccess.bogus'");
}

static void test_data_layer(void)
{
	struct tcfg *t = cfg_new();
	t->gates[t->c.n_feature_gates++] = "enableLegacyMetrics";
	t->gates[t->c.n_feature_gates++] = "dataLayer";
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (s) {
		CHECK(sched_data_layer(s)->legacy_metrics);
		CHECK_INT(sched_data_layer(s)->n_sources, 0);
		sched_free(s);
	}

	t = cfg_new();
	cfg_plugin(t, "src", "metrics-data-source",
		   "{\"scheme\":\"https\",\"path\":\"/prometheus/metrics\","
		   "\"insecureSkipVerify\":false}",
		   2);
	cfg_plugin(t, "ex", "core-metrics-extractor",
		   "{\"defaultEngine\":\"mine\",\"engineConfigs\":[{\"name\":\"mine\","
		   "\"queuedRequestsSpec\":\"q{a=b, c=\\\"d\\\"}\",\"kvUsageSpec\":\"kv\"},"
		   "{\"name\":\"sglang\",\"queuedRequestsSpec\":\"sq\"}]}",
		   3);
	struct sched_datasource ds;
	const char *exref = "ex";
	ds.plugin_ref = "src";
	ds.extractor_refs = &exref;
	ds.n_extractors = 1;
	ds.line = 9;
	t->c.sources = &ds;
	t->c.n_sources = 1;
	t->c.has_data_layer = true;
	s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (s) {
		const sched_datalayer *dl = sched_data_layer(s);
		CHECK_INT(dl->n_sources, 1);
		CHECK_STR(dl->sources[0].name, "src");
		CHECK_STR(dl->sources[0].scheme, "https");
		CHECK_STR(dl->sources[0].path, "/prometheus/metrics");
		CHECK(!dl->sources[0].insecure_skip_verify);
		const sched_extractor *ex = dl->sources[0].extractors[0];
		CHECK_STR(ex->name, "ex");
		CHECK_STR(ex->default_engine, "mine");
		/* user engines first, then built-ins that were not overridden */
		CHECK_INT(ex->n_engines, 5);
		CHECK_STR(ex->engines[0].name, "mine");
		CHECK_STR(ex->engines[0].queued_requests_spec, "q{a=b, c=\"d\"}");
		CHECK_STR(ex->engines[0].running_requests_spec, "");
		CHECK_STR(ex->engines[1].name, "sglang");
		CHECK_STR(ex->engines[1].queued_requests_spec, "sq");
		CHECK_STR(ex->engines[2].name, "vllm");
		CHECK_STR(ex->engines[4].name, "triton-tensorrt-llm");
		sched_free(s);
	}

	t = cfg_new();
	cfg_plugin(t, "src", "metrics-data-source", "{\"scheme\":\"ftp\"}", 2);
	EXPECT_ERR(t, "test.yaml:2: failed to create plugin 'src' (type: metrics-data-source): "
		      "unsupported scheme: ftp");
	t = cfg_new();
	cfg_plugin(t, "ex", "core-metrics-extractor", "{\"defaultEngine\":\"nope\"}", 2);
	EXPECT_ERR(t, "test.yaml:2: failed to create plugin 'ex' (type: core-metrics-extractor): "
		      "defaultEngine \"nope\" not found in engineConfigs");
	t = cfg_new();
	cfg_plugin(t, "ex", "core-metrics-extractor",
		   "{\"engineConfigs\":[{\"name\":\"default\"}]}", 2);
	EXPECT_ERR(t, "test.yaml:2: failed to create plugin 'ex' (type: core-metrics-extractor): "
		      "engine config name cannot be \"default\" (reserved)");
	t = cfg_new();
	cfg_plugin(t, "ex", "core-metrics-extractor",
		   "{\"engineConfigs\":[{\"name\":\"e\",\"kvUsageSpec\":\"bad{\"}]}", 2);
	EXPECT_ERR(t, "test.yaml:2: failed to create plugin 'ex' (type: core-metrics-extractor): "
		      "failed to create mapping for engine \"e\": invalid metric specification "
		      "\"bad{\"");
	t = cfg_new();
	cfg_plugin(t, "ex", "core-metrics-extractor",
		   "{\"engineConfigs\":[{\"name\":\"e\",\"loraSpec\":5}]}", 2);
	EXPECT_ERR(t, "test.yaml:2: failed to create plugin 'ex' (type: core-metrics-extractor): "
		      "parameter 'engineConfigs[0].loraSpec' must be a string");
	t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	struct sched_datasource bad = {"queue-scorer", NULL, 0, 11};
	t->c.sources = &bad;
	t->c.n_sources = 1;
	t->c.has_data_layer = true;
	EXPECT_ERR(t, "test.yaml:11: the plugin 'queue-scorer' is not a data source");
}

static void test_durations(void)
{
	int64_t ns;
	CHECK(parse_go_duration("200ms", &ns) && ns == 200000000);
	CHECK(parse_go_duration("1.5s", &ns) && ns == 1500000000);
	CHECK(parse_go_duration("1h2m3s", &ns) && ns == 3723000000000LL);
	CHECK(parse_go_duration("0", &ns) && ns == 0);
	CHECK(parse_go_duration("-3us", &ns) && ns == -3000);
	CHECK(parse_go_duration("10\xc2\xb5s", &ns) && ns == 10000);
	CHECK(parse_go_duration(".5m", &ns) && ns == 30000000000LL);
	CHECK(!parse_go_duration("", &ns));
	CHECK(!parse_go_duration("200", &ns));
	CHECK(!parse_go_duration("1d", &ns));
	CHECK(!parse_go_duration("ms", &ns));
	CHECK(!parse_go_duration("3000000h", &ns));
}

/* ---- prefix-cache-scorer (spec §4.2) ----------------------------------------------- */

static sched *prefix_sched(const char *params)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "prefix-cache-scorer", params, 2);
	cfg_plugin(t, NULL, "max-score-picker", NULL, 3);
	sched *s = build(t);
	cfg_free(t);
	return s;
}

/* Prefix scores of every endpoint for a completions prompt. */
static void prefix_scores(const sched *s, const store_snapshot *snap, const char *model,
			  const char *prompt, double *out)
{
	const sched_plugin *p = sched_find_plugin(s, "prefix-cache-scorer");
	struct reqb b;
	char body[256];
	snprintf(body, sizeof(body), "{\"model\":\"%s\",\"prompt\":\"%s\"}", model, prompt);
	req_body(&b, body);
	arena_reset(&A);
	body_req br;
	char e[128];
	CHECK(body_parse_request(b.r.body, b.r.body_len, SCHED_API_COMPLETIONS, &br, e,
				 sizeof(e)) == 0);
	void *state[4] = {0};
	sched_ctx c = {.s = s, .req = &b.r, .target_model = sstr(model), .a = &A,
		       .api = SCHED_API_COMPLETIONS, .body = &br, .snap = snap, .state = state};
	const store_endpoint *e3[MAXP];
	for (uint32_t i = 0; i < snap->n_endpoints; i++)
		e3[i] = &snap->endpoints[i];
	p->type->prepare(p, &c, e3, snap->n_endpoints);
	p->type->score(p, &c, e3, snap->n_endpoints, out);
}

static const char *decide_prompt(const sched *s, const store_snapshot *snap, const char *model,
				 const char *prompt)
{
	static char t[600];
	struct reqb b;
	char body[256];
	snprintf(body, sizeof(body), "{\"model\":\"%s\",\"prompt\":\"%s\"}", model, prompt);
	req_body(&b, body);
	decide(s, snap, &b);
	snprintf(t, sizeof(t), "%s", res.err == SCHED_OK ? res.targets : res.error);
	return t;
}

static void test_prefix_scorer(void)
{
	/* 1 token per block: 4-character blocks. */
	sched *s = prefix_sched("{\"autoTune\":false,\"blockSizeTokens\":1}");
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(0, 0), P(0, 0), P(0, 0)};
	store_snapshot *snap = snap_of(cat, pods, 3);
	double sc[3];
	prefix_scores(s, snap, "m", "aaaabbbbccccdddd", sc);
	CHECK(sc[0] == 0 && sc[1] == 0 && sc[2] == 0);
	/* The pick teaches the index; the same prompt then goes there. */
	char first[64];
	snprintf(first, sizeof(first), "%s", decide_prompt(s, snap, "m", "aaaabbbbccccdddd"));
	for (int i = 0; i < 20; i++)
		CHECK_STR(decide_prompt(s, snap, "m", "aaaabbbbccccdddd"), first);
	int who = first[10] - '1';
	prefix_scores(s, snap, "m", "aaaabbbbccccdddd", sc);
	CHECK(sc[who] == 1.0 && sc[(who + 1) % 3] == 0);
	/* Half the blocks shared; a trailing partial block is ignored. */
	prefix_scores(s, snap, "m", "aaaabbbbXXXXYYYYzz", sc);
	CHECK(sc[who] == 0.5);
	/* The chain starts from the model: another model shares nothing. */
	prefix_scores(s, snap, "other", "aaaabbbbccccdddd", sc);
	CHECK(sc[who] == 0);
	/* Shorter than one block: no hashes, score 0. */
	prefix_scores(s, snap, "m", "aaa", sc);
	CHECK(sc[who] == 0);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* The chain step without the concatenation gives XXH64 of block || LE64(prev)
 * for every length around the 4-, 8- and 32-byte steps of the algorithm. */
static void test_prefix_block_hash(void)
{
	unsigned char buf[600];
	rand_seed(11);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)rand_u64();
	for (size_t n = 0; n + 8 <= sizeof(buf); n++) {
		for (int r = 0; r < 4; r++) {
			uint64_t prev = r == 0 ? 0 : r == 1 ? ~0ULL : rand_u64();
			size_t off = (size_t)r; /* unaligned blocks too */
			if (off + n + 8 > sizeof(buf))
				off = 0;
			unsigned char cat[600];
			memcpy(cat, buf + off, n);
			for (int k = 0; k < 8; k++)
				cat[n + k] = (unsigned char)(prev >> (8 * k));
			if (prefix_block_hash(buf + off, n, prev) != XXH64(cat, n + 8, 0)) {
				CHECK_INT((int)n, -1);
				return;
			}
		}
	}
}

/* The longest held prefix: a prompt sharing the first L of 50 learned blocks
 * scores L / 50. Learning the prompt again refreshes its blocks without
 * indexing them twice. */
static void test_prefix_longest_match(void)
{
	sched *s = prefix_sched("{\"autoTune\":false,\"blockSizeTokens\":1}");
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(0, 0), P(0, 0), P(0, 0)};
	store_snapshot *snap = snap_of(cat, pods, 3);
	char prompt[201];
	for (int i = 0; i < 200; i++)
		prompt[i] = (char)('a' + (i / 4) % 26);
	prompt[200] = '\0';
	char first[64];
	snprintf(first, sizeof(first), "%s", decide_prompt(s, snap, "m", prompt));
	int who = first[10] - '1';
	CHECK_STR(decide_prompt(s, snap, "m", prompt), first);
	int64_t entries = 0;
	CHECK(sched_prefix_index_size(s, &entries));
	CHECK_INT((int)entries, 50);
	double sc[3];
	for (int l = 0; l <= 50; l++) {
		char q[201];
		memcpy(q, prompt, sizeof(q));
		if (l < 50)
			q[4 * l] = 'Z';
		prefix_scores(s, snap, "m", q, sc);
		if (sc[who] != l / 50.0 || sc[(who + 1) % 3] != 0) {
			CHECK_INT(l, -1);
			break;
		}
	}
	sched_free(s);
	/* A server that holds 40 blocks has dropped the oldest, the first 10:
	 * the blocks it still holds after them match nothing. */
	s = prefix_sched("{\"autoTune\":false,\"blockSizeTokens\":1,\"lruCapacityPerServer\":40}");
	CHECK(s != NULL);
	if (s) {
		snprintf(first, sizeof(first), "%s", decide_prompt(s, snap, "m", prompt));
		who = first[10] - '1';
		CHECK(sched_prefix_index_size(s, &entries));
		CHECK_INT((int)entries, 40);
		prefix_scores(s, snap, "m", prompt, sc);
		CHECK(sc[who] == 0);
		sched_free(s);
	}
	/* A miss with held blocks after it: the server learns
	 * P (50 blocks), then Q (P's first 25 and 25 of its own) with room for
	 * 60, which drops P's blocks 25-39 and keeps 40-49. P matches 25. */
	s = prefix_sched("{\"autoTune\":false,\"blockSizeTokens\":1,\"lruCapacityPerServer\":60}");
	CHECK(s != NULL);
	if (s) {
		snprintf(first, sizeof(first), "%s", decide_prompt(s, snap, "m", prompt));
		char q[201];
		memcpy(q, prompt, sizeof(q));
		for (int i = 100; i < 200; i++)
			q[i] = (char)(q[i] - 'a' + 'A');
		CHECK_STR(decide_prompt(s, snap, "m", q), first);
		who = first[10] - '1';
		CHECK(sched_prefix_index_size(s, &entries));
		CHECK_INT((int)entries, 60);
		prefix_scores(s, snap, "m", prompt, sc);
		CHECK(sc[who] == 0.5);
		sched_free(s);
	}
	store_release(snap);
	store_catalog_unref(cat);
}

static void test_prefix_lru_and_autotune(void)
{
	sched *s = prefix_sched("{\"autoTune\":false,\"blockSizeTokens\":1,"
				"\"lruCapacityPerServer\":2}");
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(0, 0)};
	store_snapshot *snap = snap_of(cat, pods, 1);
	double sc[1];
	decide_prompt(s, snap, "m", "aaaabbbbccccdddd");
	/* Only the two newest blocks stay: the walk stops at block 0. */
	prefix_scores(s, snap, "m", "aaaabbbbccccdddd", sc);
	CHECK(sc[0] == 0);
	decide_prompt(s, snap, "m", "aaaabbbb");
	prefix_scores(s, snap, "m", "aaaabbbbccccdddd", sc);
	CHECK(sc[0] == 0.5);
	store_release(snap);
	sched_free(s);

	/* autoTune: the first candidate's block size (2 tokens = 8 chars). */
	s = prefix_sched(NULL);
	snap = snap_of(cat, pods, 1);
	snap->endpoints[0].m.cache_block_size = 2;
	decide_prompt(s, snap, "m", "aaaabbbbccccdddd");
	prefix_scores(s, snap, "m", "aaaabbbbXXXXdddd", sc);
	CHECK(sc[0] == 0.5);
	prefix_scores(s, snap, "m", "aaaabbbbccccdddd", sc);
	CHECK(sc[0] == 1.0);
	store_release(snap);
	sched_free(s);

	/* maxPrefixTokensToMatch caps the blocks: 2 tokens = 2 blocks. */
	s = prefix_sched("{\"autoTune\":false,\"blockSizeTokens\":1,\"maxPrefixTokensToMatch\":2}");
	snap = snap_of(cat, pods, 1);
	decide_prompt(s, snap, "m", "aaaabbbbccccdddd");
	prefix_scores(s, snap, "m", "aaaabbbbXXXXdddd", sc);
	CHECK(sc[0] == 1.0);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* The per-server index grows with what it holds (not sized for the
 * capacity up front) and keeps every entry through the growth; the whole
 * index is bounded by maxIndexEntries, a server then replacing its own
 * oldest entries. */
static void test_prefix_index_growth_and_bound(void)
{
	sched *s = prefix_sched("{\"autoTune\":false,\"blockSizeTokens\":1}");
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(0, 0)};
	store_snapshot *snap = snap_of(cat, pods, 1);
	double sc[1];
	char prompt[64];
	for (int i = 0; i < 300; i++) {
		snprintf(prompt, sizeof(prompt), "%04dA%03dB%03dC%03d", i, i % 1000, i, i);
		decide_prompt(s, snap, "m", prompt);
	}
	int64_t entries = 0;
	CHECK(sched_prefix_index_size(s, &entries));
	CHECK_INT(entries, 1200);
	int held = 0;
	for (int i = 0; i < 300; i++) {
		snprintf(prompt, sizeof(prompt), "%04dA%03dB%03dC%03d", i, i % 1000, i, i);
		prefix_scores(s, snap, "m", prompt, sc);
		held += sc[0] == 1.0;
	}
	CHECK_INT(held, 300);
	store_release(snap);
	sched_free(s);

	s = prefix_sched("{\"autoTune\":false,\"blockSizeTokens\":1,\"maxIndexEntries\":6}");
	CHECK(s != NULL);
	if (!s) {
		store_catalog_unref(cat);
		return;
	}
	snap = snap_of(cat, pods, 1);
	decide_prompt(s, snap, "m", "aaaabbbbccccdddd");
	decide_prompt(s, snap, "m", "eeeeffffgggghhhh");
	CHECK(sched_prefix_index_size(s, &entries));
	CHECK_INT(entries, 6);
	prefix_scores(s, snap, "m", "eeeeffffgggghhhh", sc);
	CHECK(sc[0] == 1.0);
	/* The two oldest blocks (aaaa, bbbb) made room: the walk stops at once. */
	prefix_scores(s, snap, "m", "aaaabbbbccccdddd", sc);
	CHECK(sc[0] == 0);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);

	struct tcfg *t = cfg_new();
	cfg_plugin(t, "px", "prefix-cache-scorer", "{\"maxIndexEntries\":-1}", 5);
	EXPECT_ERR(t, "test.yaml:5: failed to create plugin 'px' (type: prefix-cache-scorer): "
		      "invalid configuration: maxIndexEntries must be >= 0 (0: no bound; current "
		      "value: -1)");
}

static void test_prefix_cleanup(void)
{
	sched *s = prefix_sched("{\"autoTune\":false,\"blockSizeTokens\":1}");
	if (!s)
		return;
	const sched_plugin *p = sched_find_plugin(s, "prefix-cache-scorer");
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(0, 0), P(0, 0)};
	store_snapshot *snap = snap_of(cat, pods, 2);
	double sc[2];
	/* Learn on endpoint 1 directly. */
	struct reqb b;
	req_body(&b, "{\"model\":\"m\",\"prompt\":\"aaaabbbb\"}");
	body_req br;
	char e[128];
	CHECK(body_parse_request(b.r.body, b.r.body_len, SCHED_API_COMPLETIONS, &br, e,
				 sizeof(e)) == 0);
	void *state[4] = {0};
	arena_reset(&A);
	sched_ctx c = {.s = s, .req = &b.r, .target_model = sstr("m"), .a = &A, .now_ns = 1,
		       .api = SCHED_API_COMPLETIONS, .body = &br, .snap = snap, .state = state};
	const store_endpoint *all[2] = {&snap->endpoints[0], &snap->endpoints[1]};
	p->type->prepare(p, &c, all, 2);
	p->type->pre_request(p, &c, &all[1], 1);
	prefix_scores(s, snap, "m", "aaaabbbb", sc);
	CHECK(sc[0] == 0 && sc[1] == 1.0);
	/* Two minutes later endpoint 1 is gone from the pool: forgotten. */
	store_snapshot *only0 = snap_of(cat, pods, 1);
	arena_reset(&A);
	c.snap = only0;
	c.now_ns = 300LL * 1000000000LL;
	p->type->prepare(p, &c, all, 1);
	p->type->pre_request(p, &c, all, 0);
	store_release(only0);
	prefix_scores(s, snap, "m", "aaaabbbb", sc);
	CHECK(sc[1] == 0);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_prefix_validation(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "px", "prefix-cache-scorer", "{\"autoTune\":false,\"blockSizeTokens\":0}", 5);
	EXPECT_ERR(t,
		   "test.yaml:5: failed to create plugin 'px' (type: prefix-cache-scorer): "
		   "invalid configuration: BlockSizeTokens must be > 0 when AutoTune is disabled "
		   "(current value: 0)");
	t = cfg_new();
	cfg_plugin(t, "px", "prefix-cache-scorer", "{\"blockSize\":64,\"blockSizeTokens\":0}", 5);
	EXPECT_ERR(t, "test.yaml:5: failed to create plugin 'px' (type: prefix-cache-scorer): "
		      "invalid configuration: BlockSize (64) is deprecated; please use "
		      "BlockSizeTokens instead to define the cache block size in tokens");
	t = cfg_new();
	cfg_plugin(t, "px", "prefix-cache-scorer", "{\"maxPrefixTokensToMatch\":-1}", 5);
	EXPECT_ERR(t, "test.yaml:5: failed to create plugin 'px' (type: prefix-cache-scorer): "
		      "invalid configuration: MaxPrefixTokensToMatch must be >= 0 (current value: "
		      "-1)");
	t = cfg_new();
	cfg_plugin(t, "px", "prefix-cache-scorer", "{\"hashBlockSize\":64}", 5);
	EXPECT_ERR(t, "test.yaml:5: failed to create plugin 'px' (type: prefix-cache-scorer): "
		      "unknown parameter 'hashBlockSize'");
}

/* Workers share one sched: decisions, in-flight counts and the prefix
 * index from several threads at once. */
struct worker {
	const sched *s;
	const store_snapshot *snap;
	int ok;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	arena a;
	arena_init(&a, 16384);
	sched_result r;
	char body[160];
	for (int i = 0; i < 3000; i++) {
		snprintf(body, sizeof(body),
			 "{\"model\":\"m%d\",\"prompt\":\"%d-shared-prefix-of-some-length-%d\"}",
			 i % 3, i % 7, i);
		sched_request rq = {0};
		rq.body = body;
		rq.body_len = strlen(body);
		arena_reset(&a);
		sched_decide(w->s, w->snap, &rq, &a, &r);
		if (r.err == SCHED_OK)
			w->ok++;
		sched_request_done(w->s, &r);
	}
	arena_free(&a);
	return NULL;
}

static void test_concurrent_workers(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "prefix-cache-scorer", "{\"autoTune\":false,\"blockSizeTokens\":2}", 1);
	cfg_plugin(t, NULL, "token-load-scorer", NULL, 2);
	cfg_plugin(t, NULL, "queue-scorer", NULL, 3);
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(1, 0.1), P(2, 0.2), P(3, 0.3), P(0, 0.4)};
	store_snapshot *snap = snap_of(cat, pods, 4);
	struct worker w[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){s, snap, 0};
		pthread_create(&th[i], NULL, worker_main, &w[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK_INT(w[i].ok, 3000);
	}
	for (int i = 0; i < 4; i++) {
		int64_t rq, tk;
		inflight_get(s->inflight, snap->endpoints[i].name, &rq, &tk);
		CHECK(rq == 0 && tk == 0);
	}
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* ---- in-flight requests between scrapes --------------------------------------- */

static sched *queue_only_sched(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "queue-scorer", NULL, 1);
	cfg_plugin(t, NULL, "max-score-picker", NULL, 2);
	cfg_ref(cfg_profile(t, "default", 3), "queue-scorer", NAN, 4);
	sched *s = build(t);
	cfg_free(t);
	return s;
}

static void test_inflight_between_scrapes(void)
{
	sched *s = queue_only_sched();
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct reqb b;
	req_body(&b, "{\"model\":\"m\",\"prompt\":\"hello\"}");
	sched_result held[16];
	int count[5] = {0};

	/* 10 decisions, no new scrape, 5 equal pods: 2 each, not 10 on one. */
	struct pod eq[] = {P(0, 0), P(0, 0), P(0, 0), P(0, 0), P(0, 0)};
	store_snapshot *snap = snap_of(cat, eq, 5);
	for (int i = 0; i < 10; i++) {
		decide(s, snap, &b);
		CHECK_INT(res.err, SCHED_OK);
		held[i] = res;
		count[res.picked[0]->index]++;
	}
	for (int i = 0; i < 5; i++)
		CHECK_INT(count[i], 2);
	for (int i = 0; i < 10; i++)
		sched_request_done(s, &held[i]);
	for (int i = 0; i < 5; i++)
		CHECK_INT(inflight_since(s->inflight, snap->endpoints[i].name,
					 snap->endpoints[i].m.update_ms), 0);
	store_release(snap);

	/* The idle-looking pod takes requests only until it catches up. */
	struct pod uneq[] = {P(0, 0), P(2, 0), P(2, 0)};
	snap = snap_of(cat, uneq, 3);
	memset(count, 0, sizeof(count));
	for (int i = 0; i < 11; i++) {
		decide(s, snap, &b);
		held[i] = res;
		if (i < 2)
			CHECK_INT(res.picked[0]->index, 0);
		count[res.picked[0]->index]++;
	}
	CHECK(count[0] == 5 && count[1] == 3 && count[2] == 3);
	/* A newer scrape of pod 0 has seen its requests: its own gauge counts. */
	snap->endpoints[0].m.update_ms += 10;
	decide(s, snap, &b);
	CHECK_INT(res.picked[0]->index, 0);
	sched_request_done(s, &res);
	for (int i = 0; i < 11; i++)
		sched_request_done(s, &held[i]);
	for (int i = 0; i < 3; i++) {
		int64_t rq, tk;
		inflight_get(s->inflight, snap->endpoints[i].name, &rq, &tk);
		CHECK(rq == 0 && tk == 0);
	}
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* max-score-picker without a full shuffle: the same result as shuffling and
 * sorting stably, as far as the winners go; every entry is kept. */
static void test_max_score_ties(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "m1", "max-score-picker", NULL, 1);
	cfg_plugin(t, "m4", "max-score-picker", "{\"maxNumOfEndpoints\":4}", 2);
	cfg_plugin(t, "m16", "max-score-picker", "{\"maxNumOfEndpoints\":16}", 3);
	cfg_ref(cfg_profile(t, "default", 4), "m1", NAN, 5);
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[7] = {P(0, 0), P(0, 0), P(0, 0), P(0, 0), P(0, 0), P(0, 0), P(0, 0)};
	store_snapshot *snap = snap_of(cat, pods, 7);
	const store_endpoint *e = snap->endpoints;
	static const double score[7] = {0.5, 0.9, 0.5, 0.9, 0.7, 0.5, 0.2};
	struct reqb b;
	req_body(&b, "{}");
	sched_ctx c = {.s = s, .req = &b.r, .target_model = sstr("m"), .a = &A};
	const sched_plugin *m1 = sched_find_plugin(s, "m1"), *m4 = sched_find_plugin(s, "m4");
	const sched_plugin *m16 = sched_find_plugin(s, "m16");
	rand_seed(3);
	const int N = 6000;
	int first[7] = {0}, fourth[7] = {0}, one[7] = {0}, last_two[7] = {0};
	for (int r = 0; r < N; r++) {
		sched_scored sc[7];
		for (int i = 0; i < 7; i++)
			sc[i] = (sched_scored){&e[i], score[i]};
		CHECK_INT(m4->type->pick(m4, &c, sc, 7), 4);
		int seen = 0;
		for (int i = 0; i < 7; i++)
			seen |= 1 << (sc[i].ep - e);
		CHECK_INT(seen, 0x7f);
		CHECK(sc[0].score == 0.9 && sc[1].score == 0.9 && sc[2].score == 0.7 &&
		      sc[3].score == 0.5);
		first[sc[0].ep - e]++;
		fourth[sc[3].ep - e]++;
		for (int i = 0; i < 7; i++)
			sc[i] = (sched_scored){&e[i], score[i]};
		CHECK_INT(m1->type->pick(m1, &c, sc, 7), 1);
		one[sc[0].ep - e]++;
		/* k >= n: the whole order, ties at random. */
		for (int i = 0; i < 7; i++)
			sc[i] = (sched_scored){&e[i], score[i]};
		CHECK_INT(m16->type->pick(m16, &c, sc, 7), 7);
		for (int i = 1; i < 7; i++)
			CHECK(sc[i - 1].score >= sc[i].score);
		last_two[sc[3].ep - e]++;
	}
	/* 1/2 each (sigma 0.65%), 1/3 each (sigma 0.61%): within 4 sigma. */
	CHECK(fabs((double)first[1] / N - 0.5) < 0.026 && first[1] + first[3] == N);
	CHECK(fabs((double)one[1] / N - 0.5) < 0.026 && one[1] + one[3] == N);
	for (int i = 0; i < 7; i++) {
		if (score[i] != 0.5)
			continue;
		CHECK(fabs((double)fourth[i] / N - 1.0 / 3) < 0.025);
		CHECK(fabs((double)last_two[i] / N - 1.0 / 3) < 0.025);
	}
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* The per-snapshot in-flight view answers as the name-hashed table does,
 * also past the table's room (endpoints without a slot, slots taken over by
 * other names), and belongs to one table. */
static void test_inflight_view(void)
{
	sched *s = queue_only_sched();
	CHECK(s != NULL);
	if (!s)
		return;
	enum { NEPS = 5000 };
	static store_endpoint many[NEPS];
	static char nm[NEPS][24];
	for (int i = 0; i < NEPS; i++) {
		snprintf(nm[i], sizeof(nm[i]), "view-%d-rank-0", i);
		many[i] = (store_endpoint){.name = nm[i], .pod = nm[i], .port = 8000};
		snprintf(many[i].ip, sizeof(many[i].ip), "10.%d.%d.1", i / 256, i % 256);
		many[i].m.valid = true;
		many[i].m.update_ms = 1000;
	}
	store_catalog *cat = store_catalog_new();
	store_catalog_finish(cat);
	store_snapshot *snap = store_snapshot_new(cat, many, NEPS, true);
	const struct inflight_view *v = inflight_view_of(s->inflight, snap);
	CHECK(v != NULL);
	CHECK(inflight_view_of(s->inflight, snap) == v);
	inflight *other = inflight_new();
	CHECK(inflight_view_of(other, snap) == NULL);
	inflight_free(other);
	struct reqb b;
	req_body(&b, "{}");
	sched_ctx c = {.s = s, .req = &b.r, .a = &A, .snap = snap, .inflight_view = v};
	sched_ctx hashed = c;
	hashed.inflight_view = NULL;
	/* Requests on every 7th endpoint, after the view claimed its slots:
	 * names without one take over idle slots of others. */
	void *held[NEPS];
	uint64_t marks[NEPS];
	for (int i = 0; i < NEPS; i++) {
		held[i] = NULL;
		if (i % 7)
			continue;
		held[i] = inflight_acquire(s->inflight, nm[i], i);
		marks[i] = inflight_mark_sent(held[i], 1000);
	}
	int with = 0;
	for (int i = 0; i < NEPS; i++) {
		const store_endpoint *ep = &snap->endpoints[i];
		int64_t r1, k1, r2, k2, r3, k3;
		inflight_get_ep(&c, ep, &r1, &k1);
		inflight_get_ep(&hashed, ep, &r2, &k2);
		inflight_get(s->inflight, nm[i], &r3, &k3);
		CHECK(r1 == r3 && k1 == k3 && r2 == r3 && k2 == k3);
		int64_t s3 = inflight_since(s->inflight, nm[i], 1000);
		CHECK(inflight_since_ep(&c, ep) == s3);
		with += r3 > 0;
		if (held[i])
			CHECK(r3 == 1 && k3 == i && s3 == 1);
	}
	/* The table holds 4,096 names: some of the 715 requests found none. */
	CHECK(with > 500);
	for (int i = 0; i < NEPS; i++)
		if (held[i]) {
			inflight_unmark_sent(held[i], marks[i]);
			inflight_release(held[i], i);
		}
	for (int i = 0; i < NEPS; i += 7) {
		int64_t r, k;
		inflight_get_ep(&c, &snap->endpoints[i], &r, &k);
		CHECK(r == 0 && k == 0 && inflight_since_ep(&c, &snap->endpoints[i]) == 0);
	}
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_inflight_since_epochs(void)
{
	inflight *t = inflight_new();
	const char *n = "pod-a-rank-0";
	void *h1 = inflight_acquire(t, n, 1), *h2 = inflight_acquire(t, n, 1);
	uint64_t m1 = inflight_mark_sent(h1, 1000);
	CHECK(m1 != 0);
	CHECK_INT(inflight_since(t, n, 1000), 1);
	CHECK_INT(inflight_since(t, n, 999), 1);  /* older snapshot: still unseen */
	CHECK_INT(inflight_since(t, n, 1001), 0); /* newer scrape saw it */
	CHECK_INT(inflight_since(t, "pod-b-rank-0", 1000), 0);
	/* A request picked on a newer scrape starts the count over. */
	uint64_t m2 = inflight_mark_sent(h2, 1001);
	CHECK_INT(inflight_since(t, n, 1001), 1);
	inflight_unmark_sent(h1, m1); /* from the old epoch: no effect */
	CHECK_INT(inflight_since(t, n, 1001), 1);
	inflight_unmark_sent(h2, m2);
	CHECK_INT(inflight_since(t, n, 1001), 0);
	inflight_unmark_sent(h2, m2); /* never below zero */
	CHECK_INT(inflight_since(t, n, 1001), 0);
	inflight_release(h1, 1);
	inflight_release(h2, 1);
	/* The epoch is the low 32 bits of the ms clock: wrap-around is newer. */
	n = "pod-c-rank-0";
	h1 = inflight_acquire(t, n, 1);
	h2 = inflight_acquire(t, n, 1);
	m1 = inflight_mark_sent(h1, 0xffffffffLL);
	CHECK_INT(inflight_since(t, n, 0xffffffffLL), 1);
	CHECK_INT(inflight_since(t, n, 0x100000000LL), 0);
	m2 = inflight_mark_sent(h2, 0x100000000LL);
	CHECK_INT(inflight_since(t, n, 0x100000000LL), 1);
	inflight_unmark_sent(h1, m1);
	CHECK_INT(inflight_since(t, n, 0x100000000LL), 1);
	inflight_unmark_sent(h2, m2);
	inflight_release(h1, 1);
	inflight_release(h2, 1);
	inflight_free(t);
}

static void test_running_scorer_inflight(void)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, NULL, "running-requests-size-scorer", NULL, 1);
	sched *s = build(t);
	cfg_free(t);
	CHECK(s != NULL && s->inflight != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {{.running = 2}, {.running = 1}};
	store_snapshot *snap = snap_of(cat, pods, 2);
	store_endpoint *ep = snap->endpoints;
	const store_endpoint *e[2] = {&ep[0], &ep[1]};
	double o[2];
	score(s, "running-requests-size-scorer", e, 2, "m", o);
	CHECK(o[0] == 0.0 && o[1] == 1.0);
	void *h = inflight_acquire(s->inflight, ep[1].name, 1);
	void *h2 = inflight_acquire(s->inflight, ep[1].name, 1);
	uint64_t m = inflight_mark_sent(h, ep[1].m.update_ms);
	uint64_t m2 = inflight_mark_sent(h2, ep[1].m.update_ms);
	score(s, "running-requests-size-scorer", e, 2, "m", o);
	CHECK(o[0] == 1.0 && o[1] == 0.0); /* 2 vs 1 + 2 */
	inflight_unmark_sent(h, m);
	inflight_unmark_sent(h2, m2);
	inflight_release(h, 1);
	inflight_release(h2, 1);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

/* ---- session-affinity-scorer ------------------------------------------------- */

static int64_t mono_ns(void)
{
	return now_ms() * 1000000LL;
}

/* Scores of plugin |name| for a request carrying |hdr|: |val| (none: NULL). */
static void aff_scores(const sched *s, const char *name, const char *hdr, const char *val,
		       const store_endpoint *const *e, size_t n, double *out)
{
	const sched_plugin *p = sched_find_plugin(s, name);
	struct reqb b;
	req_body(&b, "{}");
	if (val)
		add_hdr(&b, hdr, val);
	arena_reset(&A);
	sched_ctx c = {.s = s, .req = &b.r, .now_ns = mono_ns(), .a = &A};
	p->type->score(p, &c, e, n, out);
}

static void aff_record(const sched *s, const char *name, const char *val,
		       const store_endpoint *ep, int64_t now)
{
	const sched_plugin *p = sched_find_plugin(s, name);
	struct reqb b;
	req_body(&b, "{}");
	add_hdr(&b, "x-session-token", val);
	sched_ctx c = {.s = s, .req = &b.r, .now_ns = now, .a = &A};
	p->type->pre_request(p, &c, &ep, 1);
}

static sched *affinity_sched(const char *params)
{
	struct tcfg *t = cfg_new();
	cfg_plugin(t, "aff", "session-affinity-scorer", params, 1);
	cfg_plugin(t, NULL, "queue-scorer", NULL, 2);
	cfg_plugin(t, NULL, "max-score-picker", NULL, 3);
	sched_profile_spec *pr = cfg_profile(t, "default", 4);
	cfg_ref(pr, "aff", 10, 5);
	cfg_ref(pr, "queue-scorer", 1, 6);
	sched *s = build(t);
	cfg_free(t);
	return s;
}

static void test_session_affinity(void)
{
	sched *s = affinity_sched(NULL);
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(0, 0), P(0, 0), P(0, 0), P(0, 0)};
	store_snapshot *snap = snap_of(cat, pods, 4);
	const store_endpoint *e[4] = {&snap->endpoints[0], &snap->endpoints[1],
				      &snap->endpoints[2], &snap->endpoints[3]};
	struct reqb b;
	req_body(&b, "{\"model\":\"m\",\"prompt\":\"hi\"}");
	add_hdr(&b, "x-session-token", "conv-1");
	decide(s, snap, &b);
	CHECK_INT(res.err, SCHED_OK);
	uint32_t home = res.picked[0]->index;
	sched_request_done(s, &res);
	/* Equal pods would be a random draw each time: the session stays. */
	for (int i = 0; i < 12; i++) {
		decide(s, snap, &b);
		CHECK_INT(res.picked[0]->index, home);
		sched_request_done(s, &res);
	}
	double o[4];
	aff_scores(s, "aff", "x-session-token", "conv-1", e, 4, o);
	for (uint32_t i = 0; i < 4; i++)
		CHECK(o[i] == (i == home ? 1.0 : 0.0));
	/* Another session, or none, has no pod yet. */
	aff_scores(s, "aff", "x-session-token", "conv-2", e, 4, o);
	CHECK(o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] == 0);
	aff_scores(s, "aff", "x-session-token", NULL, e, 4, o);
	CHECK(o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] == 0);
	aff_scores(s, "aff", "x-session-token", "", e, 4, o);
	CHECK(o[home] == 0);

	/* The home pod saturates (queue 5 of 5): the session moves and stays
	 * on its new pod. */
	struct pod busy[4] = {P(0, 0), P(0, 0), P(0, 0), P(0, 0)};
	busy[home].q = 5;
	store_release(snap);
	snap = snap_of(cat, busy, 4);
	for (int i = 0; i < 4; i++)
		e[i] = &snap->endpoints[i];
	aff_scores(s, "aff", "x-session-token", "conv-1", e, 4, o);
	CHECK(o[home] == 0.0);
	decide(s, snap, &b);
	uint32_t moved = res.picked[0]->index;
	CHECK(moved != home);
	sched_request_done(s, &res);
	for (int i = 0; i < 6; i++) {
		decide(s, snap, &b);
		CHECK_INT(res.picked[0]->index, moved);
		sched_request_done(s, &res);
	}
	/* KV use at the threshold, and stale metrics, count as saturated too. */
	snap->endpoints[moved].m.kv_usage = 0.8;
	aff_scores(s, "aff", "x-session-token", "conv-1", e, 4, o);
	CHECK(o[moved] == 0.0);
	snap->endpoints[moved].m.kv_usage = 0.79;
	aff_scores(s, "aff", "x-session-token", "conv-1", e, 4, o);
	CHECK(o[moved] == 1.0);
	snap->endpoints[moved].m.update_ms -= 1000;
	aff_scores(s, "aff", "x-session-token", "conv-1", e, 4, o);
	CHECK(o[moved] == 0.0);
	store_release(snap);
	store_catalog_unref(cat);
	sched_free(s);
}

static void test_session_affinity_params(void)
{
	/* A custom header, matched case-insensitively (lowercase lookup). */
	sched *s = affinity_sched("{\"headerName\":\"X-Conversation\",\"capacity\":1,"
				  "\"queueDepthThreshold\":2}");
	CHECK(s != NULL);
	if (!s)
		return;
	store_catalog *cat = store_catalog_new();
	struct pod pods[] = {P(0, 0), P(1, 0), P(2, 0)};
	store_snapshot *snap = snap_of(cat, pods, 3);
	const store_endpoint *e[3] = {&snap->endpoints[0], &snap->endpoints[1],
				      &snap->endpoints[2]};
	struct reqb b;
	req_body(&b, "{\"model\":\"m\",\"prompt\":\"hi\"}");
	add_hdr(&b, "x-conversation", "c");
	decide(s, snap, &b);
	CHECK_INT(res.picked[0]->index, 0);
	sched_request_done(s, &res);
	double o[3];
	aff_scores(s, "aff", "x-conversation", "c", e, 3, o);
	CHECK(o[0] == 1.0 && o[1] == 0.0);
	aff_scores(s, "aff", "x-session-token", "c", e, 3, o);
	CHECK(o[0] == 0.0);
	sched_free(s);

	/* capacity 1 is one bucket of 8: the least recently written goes. */
	s = affinity_sched("{\"capacity\":1}");
	CHECK(s != NULL);
	if (!s)
		return;
	char key[16];
	int64_t t0 = mono_ns();
	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "s%d", i);
		aff_record(s, "aff", key, e[1], t0 + i * 1000000LL);
	}
	aff_record(s, "aff", "s0", e[1], t0 + 8000000LL); /* rewritten: now newest */
	aff_record(s, "aff", "s8", e[1], t0 + 9000000LL);
	aff_scores(s, "aff", "x-session-token", "s1", e, 3, o);
	CHECK(o[1] == 0.0);
	aff_scores(s, "aff", "x-session-token", "s0", e, 3, o);
	CHECK(o[1] == 1.0);
	aff_scores(s, "aff", "x-session-token", "s8", e, 3, o);
	CHECK(o[1] == 1.0);
	aff_scores(s, "aff", "x-session-token", "s2", e, 3, o);
	CHECK(o[1] == 1.0);
	/* A session re-recorded elsewhere follows its newest pick. */
	aff_record(s, "aff", "s2", e[0], t0 + 10000000LL);
	aff_scores(s, "aff", "x-session-token", "s2", e, 3, o);
	CHECK(o[0] == 1.0 && o[1] == 0.0);
	sched_free(s);
	store_release(snap);
	store_catalog_unref(cat);

	static const struct {
		const char *params, *err;
	} bad[] = {
		{"{\"header\":\"x\"}", "unknown parameter 'header'"},
		{"{\"headerName\":7}", "parameter 'headerName' must be a string"},
		{"{\"headerName\":\"\"}", "headerName must not be empty"},
		{"{\"headerName\":\"x session\"}",
		 "headerName \"x session\" is not a valid header name"},
		{"{\"capacity\":0}", "capacity must be in [1, 16777216], got 0"},
		{"{\"capacity\":1.5}", "parameter 'capacity' must be an integer"},
		{"{\"queueDepthThreshold\":0}",
		 "queueDepthThreshold must be strictly positive, got 0"},
		{"{\"kvCacheUtilThreshold\":1.5}",
		 "kvCacheUtilThreshold must be in (0.0, 1.0], got 1.500000"},
		{"{\"metricsStalenessThreshold\":\"0s\"}",
		 "metricsStalenessThreshold must be strictly positive"},
		{"{\"metricsStalenessThreshold\":\"soon\"}",
		 "parameter 'metricsStalenessThreshold' must be a duration string such as "
		 "\"200ms\""},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct tcfg *t = cfg_new();
		cfg_plugin(t, "aff", "session-affinity-scorer", bad[i].params, 1);
		char want[512];
		snprintf(want, sizeof(want),
			 "test.yaml:1: failed to create plugin 'aff' "
			 "(type: session-affinity-scorer): %s",
			 bad[i].err);
		EXPECT_ERR(t, want);
	}
}

int main(void)
{
	arena_init(&A, 16384);
	RUN(test_api_from_path);
	RUN(test_hermetic_lower_queue_and_kv);
	RUN(test_hermetic_lora_affinity);
	RUN(test_hermetic_do_not_shed);
	RUN(test_hermetic_errors);
	RUN(test_hermetic_split_and_passthrough_model);
	RUN(test_rewrite_rule_beats_header);
	RUN(test_subset);
	RUN(test_rewrite_weighted_draw);
	RUN(test_inference_model_v1alpha2);
	RUN(test_admission_staleness);
	RUN(test_saturation_detectors);
	RUN(test_scorers);
	RUN(test_default_config);
	RUN(test_max_score_picker);
	RUN(test_random_and_weighted_pickers);
	RUN(test_max_score_ties);
	RUN(test_header_filter);
	RUN(test_served_verifier);
	RUN(test_legacy_filters);
	RUN(test_inflight_accounting);
	RUN(test_inflight_table);
	RUN(test_lora_resident_adapters);
	RUN(test_stale_candidates);
	RUN(test_pick_any);
	RUN(test_passthrough_parser);
	RUN(test_defaulting);
	RUN(test_validation_errors);
	RUN(test_decision_tree_errors);
	RUN(test_data_layer);
	RUN(test_durations);
	RUN(test_score_clamp);
	RUN(test_prefix_scorer);
	RUN(test_prefix_block_hash);
	RUN(test_prefix_longest_match);
	RUN(test_prefix_lru_and_autotune);
	RUN(test_prefix_index_growth_and_bound);
	RUN(test_prefix_cleanup);
	RUN(test_prefix_validation);
	RUN(test_concurrent_workers);
	RUN(test_inflight_between_scrapes);
	RUN(test_inflight_since_epochs);
	RUN(test_inflight_view);
	RUN(test_running_scorer_inflight);
	RUN(test_session_affinity);
	RUN(test_session_affinity_params);
	arena_free(&A);
	return harness_done();
}
