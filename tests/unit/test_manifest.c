/* store/manifest: kubectl-shaped manifests of both API groups, folders,
 * filtering to the pool, rewrite precedence, every validation error with its
 * exact "<file>:<line>: ..." text, reload signatures, and --endpoints.
 * Run from the repository root (tests/run.sh does): one test loads
 * deploy/examples/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"
#include "store/manifest.h"
#include "util/log.h"

static char dir[64];

static void put(const char *name, const char *text)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	CHECK(f != NULL);
	if (!f)
		return;
	fputs(text, f);
	fclose(f);
}

static void rm(const char *name)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	unlink(p);
}

static const char *fpath(const char *name)
{
	static char p[256];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return p;
}

static int load_path(const char *path, const store_manifest_opts *o, store_catalog **c,
		     char *err)
{
	err[0] = '\0';
	*c = NULL;
	int r = store_manifests_load(path, o, c, err, 512);
	CHECK(r < 0 ? *c == NULL && err[0] : *c != NULL);
	return r;
}

/* Loads |text| as m.yaml (alone in its folder: the caller cleans up). */
static store_catalog *load_text(const char *text, const store_manifest_opts *o, char *err)
{
	store_catalog *c;
	put("m.yaml", text);
	int r = load_path(fpath("m.yaml"), o, &c, err);
	rm("m.yaml");
	return r < 0 ? NULL : c;
}

/* The error for |text|, with the folder prefix removed ("m.yaml:3: ..."),
 * or "" when it loaded. */
static const char *err_of(const char *text)
{
	static char err[512];
	store_catalog *c = load_text(text, NULL, err);
	if (c) {
		store_catalog_unref(c);
		return "";
	}
	size_t n = strlen(dir);
	return strncmp(err, dir, n) == 0 && err[n] == '/' ? err + n + 1 : err;
}

#define POOL_V1                                                                                   \
	"apiVersion: inference.networking.k8s.io/v1\n"                                            \
	"kind: InferencePool\n"                                                                   \
	"metadata:\n"                                                                             \
	"  name: vllm\n"                                                                          \
	"spec:\n"                                                                                 \
	"  selector:\n"                                                                           \
	"    matchLabels:\n"                                                                      \
	"      app: vllm\n"                                                                       \
	"  targetPorts:\n"                                                                        \
	"  - number: 8000\n"                                                                      \
	"  endpointPickerRef:\n"                                                                  \
	"    name: vllm-epp\n"                                                                    \
	"    port:\n"                                                                             \
	"      number: 9002\n"

/* The shipped examples: pool, two objectives, a rewrite; the config file in
 * the same folder is another kind and is skipped. */
static void test_examples_folder(void)
{
	store_catalog *c;
	char err[512];
	store_manifest_opts o = {NULL, "default", NULL};
	CHECK_INT(load_path("deploy/examples", &o, &c, err), 0);
	CHECK_STR(err, "");
	if (!c)
		return;
	CHECK(c->has_pool);
	CHECK_STR(c->pool.name, "vllm-llama3-8b-instruct");
	CHECK_STR(c->pool.namespace_, "default");
	CHECK_STR(c->pool.group, "inference.networking.k8s.io");
	CHECK_INT(c->pool.n_target_ports, 1);
	CHECK_INT(c->pool.target_ports[0], 8000);
	CHECK_INT(c->pool.n_selector, 1);
	CHECK_STR(c->pool.selector_keys[0], "app");
	CHECK_STR(c->pool.selector_values[0], "vllm-llama3-8b-instruct");
	CHECK(!c->pool.fail_open);
	CHECK_INT(c->n_objectives, 2);
	const store_objective *ob = store_objective_find(c, "batch-summaries", 15);
	CHECK(ob && ob->priority == -1 && ob->has_priority);
	ob = store_objective_find(c, "chat-interactive", 16);
	CHECK(ob && ob->priority == 10);
	CHECK_INT(c->n_rules, 2);
	const store_rewrite_rule *r = store_rewrite_find(c, "food-review", 11);
	CHECK(r && r->n_targets == 2);
	if (r && r->n_targets == 2) {
		CHECK_STR(r->targets[0].model, "food-review-1");
		CHECK_INT(r->targets[0].weight, 90);
		CHECK_STR(r->targets[1].model, "food-review-2");
		CHECK_STR(r->rewrite_name, "food-review-canary");
	}
	r = store_rewrite_find(c, "other", 5);
	CHECK(r && r->n_matches == 0 && r->n_targets == 1 && !r->targets[0].has_weight);
	if (r)
		CHECK_STR(r->targets[0].model, "meta-llama/Llama-3.1-8B-Instruct");
	CHECK_INT(c->n_models, 0);
	store_catalog_unref(c);
}

/* What `kubectl get -o yaml` prints (status, managedFields, uid, a List)
 * loads too, next to kinds kepp does not read. */
static void test_kubectl_output_and_other_kinds(void)
{
	char err[512];
	store_catalog *c = load_text(
		"apiVersion: apps/v1\n"
		"kind: Deployment\n"
		"metadata: {name: vllm}\n"
		"spec: {replicas: 3}\n"
		"---\n"
		"apiVersion: v1\n"
		"kind: List\n"
		"items:\n"
		"- apiVersion: inference.networking.k8s.io/v1\n"
		"  kind: InferencePool\n"
		"  metadata:\n"
		"    name: vllm\n"
		"    namespace: prod\n"
		"    uid: 0c1a3b2e-1111-2222-3333-444455556666\n"
		"    resourceVersion: \"12345\"\n"
		"    generation: 1\n"
		"    creationTimestamp: \"2025-06-01T10:00:00Z\"\n"
		"    labels: {team: ml}\n"
		"    annotations: {kubectl.kubernetes.io/last-applied-configuration: '{}'}\n"
		"    managedFields: [{manager: kubectl}]\n"
		"  spec:\n"
		"    selector: {matchLabels: {app: vllm, tier: gpu}}\n"
		"    targetPorts: [{number: 8000}, {number: 8001}, {number: 8002}]\n"
		"    appProtocol: kubernetes.io/h2c\n"
		"    endpointPickerRef: {name: epp, port: {number: 9002}, failureMode: FailOpen}\n"
		"  status:\n"
		"    parents: [{parentRef: {name: gw}}]\n"
		"- apiVersion: v1\n"
		"  kind: Service\n"
		"  metadata: {name: epp}\n"
		"  spec: {ports: [{port: 9002}]}\n",
		&(store_manifest_opts){NULL, "prod", NULL}, err);
	CHECK_STR(err, "");
	if (!c)
		return;
	CHECK(c->has_pool);
	CHECK_STR(c->pool.namespace_, "prod");
	CHECK_INT(c->pool.n_target_ports, 3);
	CHECK_INT(c->pool.target_ports[2], 8002);
	CHECK_INT(c->pool.n_selector, 2);
	CHECK_STR(c->pool.selector_keys[1], "tier");
	CHECK(c->pool.fail_open);
	store_catalog_unref(c);
}

/* The v1alpha2 group: pool with targetPortNumber and extensionRef, and
 * InferenceModels; on a modelName collision the oldest wins, and objects
 * without creationTimestamp keep file order. */
static void test_v1alpha2(void)
{
	char err[512];
	store_catalog *c = load_text(
		"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		"kind: InferencePool\n"
		"metadata: {name: old-pool}\n"
		"spec:\n"
		"  selector: {app: vllm}\n"
		"  targetPortNumber: 8000\n"
		"  extensionRef: {name: epp, failureMode: FailOpen}\n"
		"---\n"
		"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		"kind: InferenceModel\n"
		"metadata: {name: chat-new, creationTimestamp: 2025-02-01T00:00:00Z}\n"
		"spec:\n"
		"  modelName: chat\n"
		"  criticality: Sheddable\n"
		"  poolRef: {name: old-pool}\n"
		"---\n"
		"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		"kind: InferenceModel\n"
		"metadata: {name: chat-old, creationTimestamp: '2025-01-01T01:00:00+01:00'}\n"
		"spec:\n"
		"  modelName: chat\n"
		"  criticality: Critical\n"
		"  targetModels: [{name: chat-v1, weight: 30}, {name: chat-v2, weight: 70}]\n"
		"  poolRef: {name: old-pool}\n"
		"---\n"
		"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		"kind: InferenceModel\n"
		"metadata: {name: zz-first}\n"
		"spec: {modelName: base, poolRef: {name: old-pool}}\n"
		"---\n"
		"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		"kind: InferenceModel\n"
		"metadata: {name: aa-second}\n"
		"spec: {modelName: base, criticality: Critical, poolRef: {name: old-pool}}\n",
		&(store_manifest_opts){NULL, NULL, "inference.networking.k8s.io"}, err);
	CHECK_STR(err, "");
	if (!c)
		return;
	CHECK(c->has_pool);
	CHECK_STR(c->pool.group, "inference.networking.x-k8s.io");
	CHECK_STR(c->pool.namespace_, "default");
	CHECK_INT(c->pool.n_target_ports, 1);
	CHECK_INT(c->pool.target_ports[0], 8000);
	CHECK_STR(c->pool.selector_values[0], "vllm");
	CHECK(c->pool.fail_open);
	CHECK_INT(c->n_models, 4);
	const store_model *m = store_model_find(c, "chat", 4);
	CHECK(m != NULL);
	if (m) {
		CHECK_STR(m->name, "chat-old");
		CHECK_INT(m->created, 1735689600); /* 2025-01-01T00:00:00Z */
		CHECK_INT(m->criticality, STORE_CRIT_CRITICAL);
		CHECK_INT(m->n_targets, 2);
		CHECK_STR(m->targets[1].model, "chat-v2");
		CHECK_INT(m->targets[1].weight, 70);
	}
	m = store_model_find(c, "base", 4);
	CHECK(m && !strcmp(m->name, "zz-first") && !m->has_criticality);
	CHECK(store_model_find(c, "bas", 3) == NULL);
	store_catalog_unref(c);
}

/* Rewrite precedence (spec §1.6): exact rules beat generic ones, then the
 * oldest parent, then list order; timestamps beat file order. */
static void test_rewrite_precedence(void)
{
	char err[512];
	store_catalog *c = load_text(
		POOL_V1
		"---\n"
		"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		"kind: InferenceModelRewrite\n"
		"metadata: {name: newer, creationTimestamp: 2025-03-01T00:00:00Z}\n"
		"spec:\n"
		"  poolRef: {name: vllm}\n"
		"  rules:\n"
		"  - targets: [{modelRewrite: generic-newer}]\n"
		"  - matches: [{model: {value: a}}, {model: {type: Exact, value: b}}]\n"
		"    targets: [{modelRewrite: a-newer}]\n"
		"---\n"
		"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		"kind: InferenceModelRewrite\n"
		"metadata: {name: older, creationTimestamp: 2025-01-01T00:00:00Z}\n"
		"spec:\n"
		"  poolRef: {name: vllm, group: inference.networking.k8s.io, kind: InferencePool}\n"
		"  rules:\n"
		"  - matches: [{model: {value: b}}]\n"
		"    targets: [{modelRewrite: b-older-1}]\n"
		"  - matches: [{model: {value: b}}]\n"
		"    targets: [{modelRewrite: b-older-2}]\n"
		"  - targets: [{modelRewrite: generic-older}]\n",
		NULL, err);
	CHECK_STR(err, "");
	if (!c)
		return;
	CHECK_INT(c->n_rules, 5);
	const store_rewrite_rule *r = store_rewrite_find(c, "a", 1);
	CHECK(r && !strcmp(r->targets[0].model, "a-newer"));
	r = store_rewrite_find(c, "b", 1);
	CHECK(r && !strcmp(r->targets[0].model, "b-older-1") && r->order == 0);
	r = store_rewrite_find(c, "c", 1);
	CHECK(r && !strcmp(r->targets[0].model, "generic-older"));
	/* Keys are length-bounded: "ab" cut to 1 byte is "a". */
	r = store_rewrite_find(c, "ab", 1);
	CHECK(r && !strcmp(r->targets[0].model, "a-newer"));
	store_catalog_unref(c);

	/* Without timestamps, the earlier object in the files is the older. */
	c = load_text(POOL_V1
		      "---\n"
		      "apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		      "kind: InferenceModelRewrite\n"
		      "metadata: {name: zz-first}\n"
		      "spec: {poolRef: {name: vllm}, rules: [{targets: [{modelRewrite: one}]}]}\n"
		      "---\n"
		      "apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		      "kind: InferenceModelRewrite\n"
		      "metadata: {name: aa-second}\n"
		      "spec: {poolRef: {name: vllm}, rules: [{targets: [{modelRewrite: two}]}]}\n",
		      NULL, err);
	CHECK_STR(err, "");
	if (!c)
		return;
	r = store_rewrite_find(c, "x", 1);
	CHECK(r && !strcmp(r->targets[0].model, "one"));
	store_catalog_unref(c);
}

#define OBJECTIVE(name, ns, ref, extra)                                                           \
	"---\n"                                                                                   \
	"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"                                    \
	"kind: InferenceObjective\n"                                                              \
	"metadata: {name: " name ", namespace: " ns "}\n"                                         \
	"spec: {priority: 1, poolRef: {name: " ref extra "}}\n"

/* Objects are kept only for the pool (name, namespace, group, kind). */
static void test_filter_to_pool(void)
{
	char err[512];
	const char *text = POOL_V1 OBJECTIVE("mine", "default", "vllm", "")
		OBJECTIVE("other-ns", "prod", "vllm", "")
		OBJECTIVE("other-pool", "default", "other", "")
		OBJECTIVE("other-group", "default", "vllm",
			  ", group: inference.networking.x-k8s.io")
		OBJECTIVE("other-kind", "default", "vllm", ", kind: Service")
		OBJECTIVE("explicit", "default", "vllm", ", group: inference.networking.k8s.io");
	store_catalog *c = load_text(text, NULL, err);
	CHECK_STR(err, "");
	if (c) {
		CHECK_INT(c->n_objectives, 2);
		CHECK(store_objective_find(c, "mine", 4) != NULL);
		CHECK(store_objective_find(c, "explicit", 8) != NULL);
		store_catalog_unref(c);
	}

	/* --pool-name with no pool in the manifests still filters. */
	c = load_text(OBJECTIVE("a", "default", "p1", "") OBJECTIVE("b", "default", "p2", ""),
		      &(store_manifest_opts){"p2", "default", NULL}, err);
	CHECK(c && !c->has_pool && c->n_objectives == 1 &&
	      store_objective_find(c, "b", 1) != NULL);
	store_catalog_unref(c);

	/* No pool known at all: everything is kept. */
	c = load_text(OBJECTIVE("a", "default", "p1", "") OBJECTIVE("b", "prod", "p2", ""), NULL,
		      err);
	CHECK(c && !c->has_pool && c->n_objectives == 2);
	store_catalog_unref(c);

	/* Two pools: --pool-name picks one (and its namespace must match). */
	const char *two = POOL_V1
		"---\n"
		"apiVersion: inference.networking.k8s.io/v1\n"
		"kind: InferencePool\n"
		"metadata: {name: second}\n"
		"spec:\n"
		"  selector: {matchLabels: {app: second}}\n"
		"  targetPorts: [{number: 9000}]\n"
		"  endpointPickerRef: {name: epp, kind: Deployment, group: apps}\n"
		OBJECTIVE("for-second", "default", "second", "");
	c = load_text(two, &(store_manifest_opts){"second", "default", NULL}, err);
	CHECK(c && c->has_pool && !strcmp(c->pool.name, "second") &&
	      c->pool.target_ports[0] == 9000 && c->n_objectives == 1);
	store_catalog_unref(c);
	/* Objects without a namespace are in the pool namespace; "for-second"
	 * names "default". */
	c = load_text(two, &(store_manifest_opts){"second", "prod", NULL}, err);
	CHECK(c && c->has_pool && !strcmp(c->pool.namespace_, "prod") && c->n_objectives == 0);
	store_catalog_unref(c);
	char want[512];
	snprintf(want, sizeof(want),
		 "m.yaml:16: more than one InferencePool (\"vllm\" at %s/m.yaml:1, \"second\" "
		 "here); choose one with --pool-name",
		 dir);
	CHECK_STR(err_of(two), want);
}

/* The same pool name in both groups: --pool-group picks. */
static void test_pool_group_choice(void)
{
	char err[512];
	const char *text = POOL_V1
		"---\n"
		"apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		"kind: InferencePool\n"
		"metadata: {name: vllm}\n"
		"spec: {selector: {app: x}, targetPortNumber: 7000, extensionRef: {name: epp}}\n";
	store_catalog *c = load_text(
		text, &(store_manifest_opts){"vllm", NULL, "inference.networking.x-k8s.io"}, err);
	CHECK(c && c->pool.target_ports[0] == 7000);
	store_catalog_unref(c);
	c = load_text(text, &(store_manifest_opts){"vllm", NULL, NULL}, err);
	CHECK(c && c->pool.target_ports[0] == 8000);
	store_catalog_unref(c);
}

/* A folder: only *.yaml, *.yml, *.json, in name order; hidden files and
 * other extensions are ignored; JSON works. */
static void test_folder(void)
{
	char err[512];
	store_catalog *c;
	put("b.yml", "apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		     "kind: InferenceModelRewrite\n"
		     "metadata: {name: second}\n"
		     "spec: {poolRef: {name: vllm}, rules: [{targets: [{modelRewrite: two}]}]}\n");
	put("a.json", "{\"apiVersion\": \"inference.networking.x-k8s.io/v1alpha2\",\n"
		      " \"kind\": \"InferenceModelRewrite\",\n"
		      " \"metadata\": {\"name\": \"first\"},\n"
		      " \"spec\": {\"poolRef\": {\"name\": \"vllm\"},\n"
		      "          \"rules\": [{\"targets\": [{\"modelRewrite\": \"one\", "
		      "\"weight\": 5}]}]}}\n");
	put("c.yaml", POOL_V1);
	put("notes.txt", "not: [yaml\n");
	put(".hidden.yaml", "not: [yaml\n");
	CHECK_INT(load_path(dir, NULL, &c, err), 0);
	CHECK_STR(err, "");
	if (c) {
		CHECK(c->has_pool);
		CHECK_INT(c->n_rules, 2);
		const store_rewrite_rule *r = store_rewrite_find(c, "m", 1);
		CHECK(r && !strcmp(r->targets[0].model, "one") && r->targets[0].weight == 5);
		store_catalog_unref(c);
	}
	/* An error names the file it is in. */
	put("d.yaml", "apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		      "kind: InferenceObjective\n"
		      "metadata: {name: x}\n"
		      "spec: {priority: high, poolRef: {name: vllm}}\n");
	CHECK(load_path(dir, NULL, &c, err) < 0);
	char want[512];
	snprintf(want, sizeof(want),
		 "%s/d.yaml:4: InferenceObjective \"x\": spec.priority must be an integer, not "
		 "string",
		 dir);
	CHECK_STR(err, want);
	/* Syntax errors keep libyaml's line and column. */
	put("d.yaml", "a: [1, 2\nb: 3\n");
	CHECK(load_path(dir, NULL, &c, err) < 0);
	snprintf(want, sizeof(want), "%s/d.yaml:", dir);
	CHECK(strncmp(err, want, strlen(want)) == 0);
	rm("d.yaml");
	/* The same object twice across files. */
	put("e.yaml", POOL_V1);
	CHECK(load_path(dir, NULL, &c, err) < 0);
	snprintf(want, sizeof(want),
		 "%s/e.yaml:1: InferencePool \"vllm\" in namespace \"default\" is defined twice "
		 "(first at %s/c.yaml:1)",
		 dir, dir);
	CHECK_STR(err, want);
	rm("e.yaml");
	rm("a.json");
	rm("b.yml");
	rm("c.yaml");
	/* Nothing to read. */
	CHECK(load_path(dir, NULL, &c, err) == -ENOENT);
	snprintf(want, sizeof(want), "%s: no *.yaml, *.yml or *.json files", dir);
	CHECK_STR(err, want);
	rm("notes.txt");
	rm(".hidden.yaml");
	CHECK(load_path("/nonexistent/kepp", NULL, &c, err) == -ENOENT);
	CHECK_STR(err, "/nonexistent/kepp: No such file or directory");
}

static void test_validation_errors(void)
{
	/* Document structure */
	CHECK_STR(err_of("- a\n"), "m.yaml:1: a manifest must be an object, not array");
	CHECK_STR(err_of("kind: InferencePool\n"), "m.yaml:1: apiVersion is required");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\n"),
		  "m.yaml:1: kind is required");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v2\nkind: InferencePool\n"),
		  "m.yaml:1: no kind InferencePool in version \"inference.networking.k8s.io/v2\" "
		  "(use inference.networking.k8s.io/v1 or inference.networking.x-k8s.io/v1alpha2)");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferenceObjective\n"),
		  "m.yaml:1: no kind InferenceObjective in version "
		  "\"inference.networking.k8s.io/v1\" "
		  "(use inference.networking.x-k8s.io/v1alpha2)");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata: {namespace: a}\n"),
		  "m.yaml:3: InferencePool: metadata.name is required");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"),
		  "m.yaml:1: InferencePool: metadata.name is required");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata: {name: Bad_Name}\n"),
		  "m.yaml:3: InferencePool \"Bad_Name\": metadata.name \"Bad_Name\" must be a "
		  "lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.', at most 253 characters)");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata: {name: p, namespace: a.b}\n"),
		  "m.yaml:3: InferencePool \"p\": metadata.namespace \"a.b\" must be a lowercase "
		  "RFC 1123 label (a-z, 0-9 and '-', at most 63 characters)");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata: {name: p, creationTimestamp: yesterday}\n"),
		  "m.yaml:3: InferencePool \"p\": metadata.creationTimestamp \"yesterday\" is not "
		  "an RFC 3339 time");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata: {name: p, creationTimestamp: '2024-02-31T00:00:00Z'}\n"),
		  "m.yaml:3: InferencePool \"p\": metadata.creationTimestamp "
		  "\"2024-02-31T00:00:00Z\" is not an RFC 3339 time");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata:\n  name: p\n  labels:\n    version: 1\n"),
		  "m.yaml:6: InferencePool \"p\": metadata.labels.version must be a string, not "
		  "integer");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata:\n  name: p\n  nmae: q\n"),
		  "m.yaml:5: InferencePool \"p\": unknown field \"metadata.nmae\"");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata: {name: p}\nspce: {}\n"),
		  "m.yaml:4: InferencePool \"p\": unknown field \"spce\"");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata: {name: p}\n"),
		  "m.yaml:1: InferencePool \"p\": spec is required");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata: {name: p}\nspec: [1]\n"),
		  "m.yaml:4: InferencePool \"p\": spec must be an object, not array");
	CHECK_STR(err_of("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
			 "metadata: {name: p, name: q}\n"),
		  "m.yaml:3: InferencePool \"p\": duplicate field \"metadata.name\"");

	/* InferencePool v1 */
#define P1 "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {name: p}\n"
	CHECK_STR(err_of(P1 "spec: {targetPorts: [{number: 1}]}\n"),
		  "m.yaml:4: InferencePool \"p\": spec.selector is required");
	CHECK_STR(err_of(P1 "spec:\n  selector: {app: x}\n"),
		  "m.yaml:5: InferencePool \"p\": unknown field \"spec.selector.app\"");
	CHECK_STR(err_of(P1 "spec:\n  selector: {matchLabels: {}}\n"),
		  "m.yaml:5: InferencePool \"p\": spec.selector.matchLabels must have 1 to 64 "
		  "entries");
	CHECK_STR(err_of(P1 "spec:\n  selector: {matchLabels: {app: -x}}\n"),
		  "m.yaml:5: InferencePool \"p\": spec.selector.matchLabels.app: \"-x\" is not a "
		  "valid label value (at most 63 characters: letters, digits, '-', '_' or '.', "
		  "starting and ending with a letter or digit)");
	CHECK_STR(err_of(P1 "spec:\n  selector:\n    matchLabels:\n      app: x\n      app: y\n"),
		  "m.yaml:8: InferencePool \"p\": duplicate key \"app\" in "
		  "spec.selector.matchLabels");
#define SEL "spec:\n  selector: {matchLabels: {app: x}}\n"
	CHECK_STR(err_of(P1 SEL), "m.yaml:5: InferencePool \"p\": spec.targetPorts is required");
	CHECK_STR(err_of(P1 SEL "  targetPorts: []\n"),
		  "m.yaml:6: InferencePool \"p\": spec.targetPorts must have 1 to 8 entries");
	CHECK_STR(err_of(P1 SEL "  targetPorts: [{number: 1}, {number: 2}, {number: 3}, "
				"{number: 4}, {number: 5}, {number: 6}, {number: 7}, "
				"{number: 8}, {number: 9}]\n"),
		  "m.yaml:6: InferencePool \"p\": spec.targetPorts must have 1 to 8 entries");
	CHECK_STR(err_of(P1 SEL "  targetPorts:\n  - number: 8000\n  - number: 8000\n"),
		  "m.yaml:8: InferencePool \"p\": spec.targetPorts: port number must be unique");
	CHECK_STR(err_of(P1 SEL "  targetPorts:\n  - number: 0\n"),
		  "m.yaml:7: InferencePool \"p\": spec.targetPorts[0].number must be between 1 "
		  "and 65535");
	CHECK_STR(err_of(P1 SEL "  targetPorts:\n  - number: \"8000\"\n"),
		  "m.yaml:7: InferencePool \"p\": spec.targetPorts[0].number must be an integer, "
		  "not string");
	CHECK_STR(err_of(P1 SEL "  targetPorts:\n  - port: 8000\n"),
		  "m.yaml:7: InferencePool \"p\": unknown field \"spec.targetPorts[0].port\"");
	CHECK_STR(err_of(P1 SEL "  targetPorts:\n  - {}\n"),
		  "m.yaml:7: InferencePool \"p\": spec.targetPorts[0].number is required");
#define PORTS "  targetPorts: [{number: 8000}]\n"
	CHECK_STR(err_of(P1 SEL PORTS),
		  "m.yaml:5: InferencePool \"p\": spec.endpointPickerRef is required");
	CHECK_STR(err_of(P1 SEL PORTS "  appProtocol: grpc\n"),
		  "m.yaml:7: InferencePool \"p\": spec.appProtocol must be http or "
		  "kubernetes.io/h2c, not \"grpc\"");
	CHECK_STR(err_of(P1 SEL PORTS "  endpointPickerRef: {port: {number: 9002}}\n"),
		  "m.yaml:7: InferencePool \"p\": spec.endpointPickerRef.name is required");
	CHECK_STR(err_of(P1 SEL PORTS "  endpointPickerRef:\n    name: epp\n"),
		  "m.yaml:8: InferencePool \"p\": spec.endpointPickerRef: port is required when "
		  "kind is 'Service' or unspecified (defaults to 'Service')");
	CHECK_STR(err_of(P1 SEL PORTS "  endpointPickerRef: {name: epp, kind: Service}\n"),
		  "m.yaml:7: InferencePool \"p\": spec.endpointPickerRef: port is required when "
		  "kind is 'Service' or unspecified (defaults to 'Service')");
	CHECK_STR(err_of(P1 SEL PORTS "  endpointPickerRef:\n    name: epp\n"
				      "    port: {number: 9002}\n    failureMode: Open\n"),
		  "m.yaml:10: InferencePool \"p\": spec.endpointPickerRef.failureMode must be "
		  "FailOpen or FailClose, not \"Open\"");
	CHECK_STR(err_of(P1 SEL PORTS "  endpointPickerRef: {name: epp, kind: 9ervice}\n"),
		  "m.yaml:7: InferencePool \"p\": spec.endpointPickerRef.kind \"9ervice\" is not a "
		  "valid kind");
	CHECK_STR(err_of(P1 SEL PORTS "  endpointPickerRef: {name: epp, group: Apps, kind: X}\n"),
		  "m.yaml:7: InferencePool \"p\": spec.endpointPickerRef.group \"Apps\" is not a "
		  "valid API group");
	CHECK_STR(err_of(P1 SEL PORTS "  endpointPickerRef: {name: epp, port: {number: 0}}\n"),
		  "m.yaml:7: InferencePool \"p\": spec.endpointPickerRef.port.number must be "
		  "between 1 and 65535");
	CHECK_STR(err_of(P1 SEL PORTS "  endpointPickerRef: {name: epp, portNumber: 9002}\n"),
		  "m.yaml:7: InferencePool \"p\": unknown field "
		  "\"spec.endpointPickerRef.portNumber\"");
	CHECK_STR(err_of(P1 SEL PORTS "  endpointPickerRef: {name: epp, kind: Deployment}\n"), "");

	/* InferencePool v1alpha2 */
#define PX "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferencePool\n" \
	   "metadata: {name: p}\n"
	CHECK_STR(err_of(PX "spec: {selector: {app: x}, targetPorts: [{number: 1}]}\n"),
		  "m.yaml:4: InferencePool \"p\": unknown field \"spec.targetPorts\"");
	CHECK_STR(err_of(PX "spec: {selector: {app: x}}\n"),
		  "m.yaml:4: InferencePool \"p\": spec.targetPortNumber is required");
	CHECK_STR(err_of(PX "spec: {selector: {app: x}, targetPortNumber: 70000}\n"),
		  "m.yaml:4: InferencePool \"p\": spec.targetPortNumber must be between 1 and "
		  "65535");
	CHECK_STR(err_of(PX "spec: {selector: {app: x}, targetPortNumber: 8000}\n"),
		  "m.yaml:4: InferencePool \"p\": spec.extensionRef is required");
	CHECK_STR(err_of(PX "spec: {selector: {app: x}, targetPortNumber: 8000,\n"
			    "  extensionRef: {name: e, portNumber: 0}}\n"),
		  "m.yaml:5: InferencePool \"p\": spec.extensionRef.portNumber must be between 1 "
		  "and 65535");
	CHECK_STR(err_of(PX "spec: {selector: {matchLabels: {app: x}}, targetPortNumber: 8000}\n"),
		  "m.yaml:4: InferencePool \"p\": spec.selector.matchLabels must be a string, "
		  "not object");

	/* InferenceModel */
#define MD "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceModel\n" \
	   "metadata: {name: m}\n"
	CHECK_STR(err_of(MD "spec: {poolRef: {name: p}}\n"),
		  "m.yaml:4: InferenceModel \"m\": spec.modelName is required");
	CHECK_STR(err_of(MD "spec: {modelName: x}\n"),
		  "m.yaml:4: InferenceModel \"m\": spec.poolRef is required");
	CHECK_STR(err_of(MD "spec: {modelName: x, poolRef: {}}\n"),
		  "m.yaml:4: InferenceModel \"m\": spec.poolRef.name is required");
	CHECK_STR(err_of(MD "spec: {modelName: x, criticality: High, poolRef: {name: p}}\n"),
		  "m.yaml:4: InferenceModel \"m\": spec.criticality must be Critical, Standard or "
		  "Sheddable, not \"High\"");
	CHECK_STR(err_of(MD "spec:\n  modelName: x\n  poolRef: {name: p}\n  targetModels:\n"
			    "  - name: a\n    weight: 1\n  - name: b\n"),
		  "m.yaml:10: InferenceModel \"m\": spec.targetModels: Weights should be set for "
		  "all models, or none of the models.");
	CHECK_STR(err_of(MD "spec:\n  modelName: x\n  poolRef: {name: p}\n  targetModels:\n"
			    "  - name: a\n    weight: 1000001\n"),
		  "m.yaml:9: InferenceModel \"m\": spec.targetModels[0].weight must be between 1 "
		  "and 1000000");
	CHECK_STR(err_of(MD "spec:\n  modelName: x\n  poolRef: {name: p}\n  targetModels:\n"
			    "  - weight: 1\n"),
		  "m.yaml:8: InferenceModel \"m\": spec.targetModels[0].name is required");
	CHECK_STR(err_of(MD "spec:\n  modelName: x\n  poolRef: {name: p}\n  targetModels: [{name: "
			    "a}, {name: a}, {name: a}, {name: a}, {name: a}, {name: a}, {name: a}, "
			    "{name: a}, {name: a}, {name: a}, {name: a}]\n"),
		  "m.yaml:7: InferenceModel \"m\": spec.targetModels must have at most 10 entries");
	CHECK_STR(err_of(MD "spec: {modelName: 5, poolRef: {name: p}}\n"),
		  "m.yaml:4: InferenceModel \"m\": spec.modelName must be a string, not integer");
	CHECK_STR(err_of(MD "spec: {modelName: true, poolRef: {name: p}}\n"),
		  "m.yaml:4: InferenceModel \"m\": spec.modelName must be a string, not boolean");
	CHECK_STR(err_of(MD "spec: {modelName: \"true\", poolRef: {name: p}}\n"), "");

	/* InferenceObjective */
#define OB "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceObjective\n" \
	   "metadata: {name: o}\n"
	CHECK_STR(err_of(OB "spec: {priority: 1.5, poolRef: {name: p}}\n"),
		  "m.yaml:4: InferenceObjective \"o\": spec.priority must be an integer, not "
		  "number");
	CHECK_STR(err_of(OB "spec: {priority: 3000000000, poolRef: {name: p}}\n"),
		  "m.yaml:4: InferenceObjective \"o\": spec.priority must be between -2147483648 "
		  "and 2147483647");
	CHECK_STR(err_of(OB "spec: {poolRef: {name: p, kind: 5}}\n"),
		  "m.yaml:4: InferenceObjective \"o\": spec.poolRef.kind must be a string, not "
		  "integer");
	CHECK_STR(err_of(OB "spec: {criticality: Critical, poolRef: {name: p}}\n"),
		  "m.yaml:4: InferenceObjective \"o\": unknown field \"spec.criticality\"");

	/* InferenceModelRewrite */
#define RW "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceModelRewrite\n" \
	   "metadata: {name: r}\n"
	CHECK_STR(err_of(RW "spec: {poolRef: {name: p}}\n"),
		  "m.yaml:4: InferenceModelRewrite \"r\": spec.rules is required");
	CHECK_STR(err_of(RW "spec:\n  poolRef: {name: p}\n  rules:\n  - matches: [{model: {value: "
			    "a}}]\n"),
		  "m.yaml:7: InferenceModelRewrite \"r\": spec.rules[0].targets must have at "
		  "least 1 entry");
	CHECK_STR(err_of(RW "spec:\n  poolRef: {name: p}\n  rules:\n  - targets: []\n"),
		  "m.yaml:7: InferenceModelRewrite \"r\": spec.rules[0].targets must have at "
		  "least 1 entry");
	CHECK_STR(err_of(RW "spec:\n  poolRef: {name: p}\n  rules:\n  - targets: [{weight: 1}]\n"),
		  "m.yaml:7: InferenceModelRewrite \"r\": spec.rules[0].targets[0].modelRewrite is "
		  "required");
	CHECK_STR(err_of(RW "spec:\n  poolRef: {name: p}\n  rules:\n  - matches: [{model: {type: "
			    "Prefix, value: a}}]\n    targets: [{modelRewrite: b}]\n"),
		  "m.yaml:7: InferenceModelRewrite \"r\": spec.rules[0].matches[0].model.type "
		  "must be Exact, not \"Prefix\"");
	CHECK_STR(err_of(RW "spec:\n  poolRef: {name: p}\n  rules:\n  - matches: [{model: {value: "
			    "\"\"}}]\n    targets: [{modelRewrite: b}]\n"),
		  "m.yaml:7: InferenceModelRewrite \"r\": spec.rules[0].matches[0].model.value is "
		  "required");
	CHECK_STR(err_of(RW "spec:\n  poolRef: {name: p}\n  rules:\n  - matches: [{}]\n"
			    "    targets: [{modelRewrite: b}]\n"),
		  "m.yaml:7: InferenceModelRewrite \"r\": spec.rules[0].matches[0].model is "
		  "required");
	CHECK_STR(err_of(RW "spec:\n  poolRef: {name: p}\n  rules:\n"
			    "  - targets: [{modelRewrite: b, "
			    "weight: 0}]\n"),
		  "m.yaml:7: InferenceModelRewrite \"r\": spec.rules[0].targets[0].weight must be "
		  "between 1 and 1000000");
	/* Rewrite weights need not be all-or-none (the CRD has no such rule). */
	CHECK_STR(err_of(RW "spec:\n  poolRef: {name: p}\n  rules:\n"
			    "  - targets: [{modelRewrite: b, "
			    "weight: 2}, {modelRewrite: c}]\n"),
		  "");
}

/* Aliases are resolved, but a walk that would expand without end is
 * refused at its budget instead of being followed. */
static void test_alias_bomb(void)
{
	char doc[2048];
	/* Anchors under status (ignored) and used in spec. */
	snprintf(doc, sizeof(doc),
		 "apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
		 "kind: InferenceModelRewrite\n"
		 "metadata: {name: r}\n"
		 "status:\n"
		 "  m: &m {model: {value: a}}\n"
		 "  r: &r {matches: [*m, *m, *m], targets: [{modelRewrite: b}]}\n"
		 "spec:\n"
		 "  poolRef: {name: p}\n"
		 "  rules: [*r, *r, *r, *r, *r, *r, *r, *r, *r, *r, *r, *r, *r, *r, *r, *r]\n");
	char err[512];
	store_catalog *c = load_text(doc, NULL, err);
	CHECK(c && c->n_rules == 16 && c->rules[15].n_matches == 3);
	store_catalog_unref(c);

	/* A sequence that contains itself is a type error, found at once. */
	CHECK_STR(err_of("apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
			 "kind: InferenceModelRewrite\n"
			 "metadata: {name: r}\n"
			 "spec:\n"
			 "  poolRef: {name: p}\n"
			 "  rules: &x [*x]\n"),
		  "m.yaml:6: InferenceModelRewrite \"r\": spec.rules[0] must be an object, not "
		  "array");

	/* 3000 rules sharing one list of 3000 matches: 9 million nodes to
	 * read from a 50 KiB file. */
	size_t cap = 100000;
	char *big = malloc(cap);
	int n = snprintf(big, cap,
			 "apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
			 "kind: InferenceModelRewrite\n"
			 "metadata: {name: r}\n"
			 "status:\n"
			 "  m: &m {model: {value: a}}\n"
			 "  ms: &ms [");
	for (int i = 0; i < 3000; i++)
		n += snprintf(big + n, cap - (size_t)n, "%s*m", i ? "," : "");
	n += snprintf(big + n, cap - (size_t)n,
		      "]\n  r: &r {matches: *ms, targets: [{modelRewrite: b}]}\n"
		      "spec:\n  poolRef: {name: p}\n  rules: [");
	for (int i = 0; i < 3000; i++)
		n += snprintf(big + n, cap - (size_t)n, "%s*r", i ? "," : "");
	snprintf(big + n, cap - (size_t)n, "]\n");
	const char *e = err_of(big);
	CHECK(strncmp(e, "m.yaml:", 7) == 0);
	CHECK(strstr(e, ": InferenceModelRewrite \"r\": more than 2000000 YAML nodes to read "
			"(alias expansion?)") != NULL);
	free(big);
}

static void set_mtime(const char *name, long sec)
{
	struct timeval tv[2] = {{sec, 0}, {sec, 0}};
	utimes(fpath(name), tv);
}

static void test_signature(void)
{
	uint64_t a, b, c2, d, e;
	put("p.yaml", POOL_V1);
	set_mtime("p.yaml", 1000000);
	CHECK_INT(store_manifests_signature(dir, &a), 0);
	CHECK_INT(store_manifests_signature(dir, &b), 0);
	CHECK(a == b);
	/* Same size and name, new mtime. */
	set_mtime("p.yaml", 1000001);
	CHECK_INT(store_manifests_signature(dir, &c2), 0);
	CHECK(c2 != a);
	/* A new file; then a file that is not a manifest changes nothing. */
	put("q.yml", "a: 1\n");
	CHECK_INT(store_manifests_signature(dir, &d), 0);
	CHECK(d != c2);
	put("README", "x");
	CHECK_INT(store_manifests_signature(dir, &e), 0);
	CHECK(e == d);
	/* A single file. */
	CHECK_INT(store_manifests_signature(fpath("p.yaml"), &a), 0);
	put("p.yaml", POOL_V1 "# more\n");
	CHECK_INT(store_manifests_signature(fpath("p.yaml"), &b), 0);
	CHECK(a != b);
	CHECK(store_manifests_signature("/nonexistent/kepp", &a) == -ENOENT);
	rm("p.yaml");
	rm("q.yml");
	rm("README");
}

static const char *eps_err(const char *spec, const store_pool *pool)
{
	static char err[256];
	store_endpoint *eps;
	uint32_t n;
	err[0] = '\0';
	if (store_endpoints_parse(spec, pool, &eps, &n, err, sizeof(err)) == 0) {
		free(eps);
		return "";
	}
	CHECK(eps == NULL && n == 0);
	return err;
}

static void test_endpoints(void)
{
	store_endpoint *eps;
	uint32_t n;
	char err[256];
	store_pool pool = {.n_target_ports = 3, .target_ports = {8000, 8001, 8002}};
	CHECK_INT(store_endpoints_parse(" 10.0.0.1:8001, [fd00:0::1]:8000,10.0.0.2,127.0.0.1:9999",
					&pool, &eps, &n, err, sizeof(err)),
		  0);
	CHECK_INT(n, 6);
	if (n == 6) {
		CHECK_STR(eps[0].ip, "10.0.0.1");
		CHECK_INT(eps[0].port, 8001);
		CHECK_STR(eps[0].addr, "10.0.0.1:8001");
		CHECK_INT(eps[0].rank, 1);
		CHECK(eps[0].name == NULL && eps[0].pod == NULL);
		CHECK_STR(eps[1].ip, "fd00::1");
		CHECK_STR(eps[1].addr, "[fd00::1]:8000");
		CHECK_INT(eps[1].rank, 0);
		/* A bare IP: one endpoint per target port, ranked by port. */
		CHECK_STR(eps[2].addr, "10.0.0.2:8000");
		CHECK_STR(eps[4].addr, "10.0.0.2:8002");
		CHECK_INT(eps[4].rank, 2);
		CHECK_INT(eps[4].index, 4);
		/* A port outside targetPorts is rank 0. */
		CHECK_STR(eps[5].addr, "127.0.0.1:9999");
		CHECK_INT(eps[5].rank, 0);
	}
	free(eps);
	CHECK_INT(store_endpoints_parse("fd00::2", &pool, &eps, &n, err, sizeof(err)), 0);
	CHECK(n == 3 && !strcmp(eps[2].addr, "[fd00::2]:8002"));
	free(eps);
	CHECK_INT(store_endpoints_parse("[::1]:80", NULL, &eps, &n, err, sizeof(err)), 0);
	CHECK(n == 1 && !strcmp(eps[0].addr, "[::1]:80") && eps[0].rank == 0);
	free(eps);

	CHECK_STR(eps_err("10.0.0.1", NULL),
		  "--endpoints entry \"10.0.0.1\": no port, and no InferencePool targetPorts to "
		  "take the ports from");
	CHECK_STR(eps_err("10.0.0.1:8000,10.0.0.1:8000", NULL),
		  "--endpoints entry \"10.0.0.1:8000\": duplicate endpoint");
	CHECK_STR(eps_err("10.0.0.1:8001,10.0.0.1", &pool),
		  "--endpoints entry \"10.0.0.1\": duplicate endpoint");
	CHECK_STR(eps_err("[fd00::1]:8000,[fd00:0:0::1]:8000", NULL),
		  "--endpoints entry \"[fd00:0:0::1]:8000\": duplicate endpoint");
	CHECK_STR(eps_err("10.0.0.300:80", NULL),
		  "--endpoints entry \"10.0.0.300:80\": not an IPv4 or IPv6 address");
	CHECK_STR(eps_err("pod-a:80", NULL),
		  "--endpoints entry \"pod-a:80\": not an IPv4 or IPv6 address");
	CHECK_STR(eps_err("10.0.0.1:0", NULL),
		  "--endpoints entry \"10.0.0.1:0\": port must be a number from 1 to 65535");
	CHECK_STR(eps_err("10.0.0.1:65536", NULL),
		  "--endpoints entry \"10.0.0.1:65536\": port must be a number from 1 to 65535");
	CHECK_STR(eps_err("10.0.0.1:80x", NULL),
		  "--endpoints entry \"10.0.0.1:80x\": port must be a number from 1 to 65535");
	CHECK_STR(eps_err("10.0.0.1:", NULL),
		  "--endpoints entry \"10.0.0.1:\": port must be a number from 1 to 65535");
	CHECK_STR(eps_err("[fd00::1", NULL),
		  "--endpoints entry \"[fd00::1\": missing \"]\" after the IPv6 address");
	CHECK_STR(eps_err("[fd00::1]8000", NULL),
		  "--endpoints entry \"[fd00::1]8000\": expected \":port\" after \"]\"");
	CHECK_STR(eps_err("[10.0.0.1]:80", NULL),
		  "--endpoints entry \"[10.0.0.1]:80\": brackets are for IPv6 addresses only");
	CHECK_STR(eps_err("10.0.0.1:80,,10.0.0.2:80", NULL),
		  "--endpoints: empty entry in \"10.0.0.1:80,,10.0.0.2:80\"");
	CHECK_STR(eps_err("", NULL), "--endpoints: empty entry in \"\"");

	/* The count is bounded. */
	size_t cap = (STORE_ENDPOINTS_MAX + 1) * 16;
	char *big = malloc(cap);
	size_t off = 0;
	for (int i = 0; i <= STORE_ENDPOINTS_MAX; i++)
		off += (size_t)snprintf(big + off, cap - off, "%s10.%d.%d.1:80", i ? "," : "",
					i / 256, i % 256);
	CHECK_STR(eps_err(big, NULL),
		  "--endpoints entry \"10.16.0.1:80\": more than 4096 endpoints");
	free(big);
}

int main(void)
{
	log_set_verbosity(0);
	snprintf(dir, sizeof(dir), "/tmp/kepp-manifest-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_examples_folder);
	RUN(test_kubectl_output_and_other_kinds);
	RUN(test_v1alpha2);
	RUN(test_rewrite_precedence);
	RUN(test_filter_to_pool);
	RUN(test_pool_group_choice);
	RUN(test_folder);
	RUN(test_validation_errors);
	RUN(test_alias_bomb);
	RUN(test_signature);
	RUN(test_endpoints);
	rmdir(dir);
	return harness_done();
}
