/* k8s: the parts that need no API server: kubeconfig and in-cluster config,
 * --endpoint-selector and --endpoint-target-ports, selector matching, pods to
 * endpoints (readiness, active-ports, ranks), the Lease name, URL escaping,
 * API objects to a catalog through store_objects_load, and the pool's
 * kepp.io/fastpath annotation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "k8s/k8s.h"
#include "store/manifest.h"
#include "util/log.h"

static char dir[64];

static const char *put(const char *name, const char *text)
{
	static char p[256];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	CHECK(f != NULL);
	if (f) {
		fputs(text, f);
		fclose(f);
	}
	return p;
}

/* base64 of "-----BEGIN CERTIFICATE-----\nabc\n" */
#define CA_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmFiYwo="

static void test_kubeconfig(void)
{
	char err[512] = "";
	k8s_config c;
	put("kc", "apiVersion: v1\n"
		  "kind: Config\n"
		  "current-context: dev\n"
		  "clusters:\n"
		  "- name: prod\n"
		  "  cluster: {server: 'https://prod:6443'}\n"
		  "- name: dev\n"
		  "  cluster:\n"
		  "    server: https://10.0.0.1:6443/\n"
		  "    certificate-authority-data: " CA_B64 "\n"
		  "users:\n"
		  "- name: alice\n"
		  "  user:\n"
		  "    client-certificate: certs/alice.crt\n"
		  "    client-key: /abs/alice.key\n"
		  "- name: bob\n"
		  "  user: {token: bobtoken}\n"
		  "- name: exec\n"
		  "  user: {exec: {command: aws}}\n"
		  "contexts:\n"
		  "- name: dev\n"
		  "  context: {cluster: dev, user: alice, namespace: team}\n"
		  "- name: prod\n"
		  "  context: {cluster: prod, user: bob}\n"
		  "- name: cloud\n"
		  "  context: {cluster: prod, user: exec}\n"
		  "- name: nowhere\n"
		  "  context: {cluster: missing, user: bob}\n");
	char kc[256];
	snprintf(kc, sizeof(kc), "%s/kc", dir);
	CHECK_INT(k8s_config_kubeconfig(kc, NULL, &c, err, sizeof(err)), 0);
	CHECK_STR(c.server, "https://10.0.0.1:6443"); /* trailing slash cut */
	CHECK_STR(c.ca_pem, "-----BEGIN CERTIFICATE-----\nabc\n");
	char want[300];
	snprintf(want, sizeof(want), "%s/certs/alice.crt", dir); /* relative to the file */
	CHECK_STR(c.cert_file, want);
	CHECK_STR(c.key_file, "/abs/alice.key");
	CHECK_STR(c.namespace_, "team");
	CHECK(c.token == NULL);
	k8s_config_free(&c);

	CHECK_INT(k8s_config_kubeconfig(kc, "prod", &c, err, sizeof(err)), 0);
	CHECK_STR(c.server, "https://prod:6443");
	CHECK_STR(c.token, "bobtoken");
	CHECK(c.namespace_ == NULL && c.ca_pem == NULL);
	k8s_config_free(&c);

	CHECK_INT(k8s_config_kubeconfig(kc, "cloud", &c, err, sizeof(err)), -ENOTSUP);
	CHECK(strstr(err, "exec plugin") != NULL);
	CHECK_INT(k8s_config_kubeconfig(kc, "nowhere", &c, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "no known cluster") != NULL);
	CHECK_INT(k8s_config_kubeconfig(kc, "absent", &c, err, sizeof(err)), -ENOENT);

	/* A merged list: the first file naming a context wins; missing files
	 * are skipped; current-context from the first file that sets one. */
	put("kc2", "current-context: prod\n"
		   "contexts:\n- name: prod\n  context: {cluster: dev, user: carol}\n"
		   "users:\n- name: carol\n  user: {tokenFile: tok}\n");
	put("tok", "from-file\n");
	char list[600];
	snprintf(list, sizeof(list), "%s/none:%s/kc2:%s/kc", dir, dir, dir);
	CHECK_INT(k8s_config_kubeconfig(list, NULL, &c, err, sizeof(err)), 0);
	CHECK_STR(c.server, "https://10.0.0.1:6443");
	CHECK_STR(c.token, "from-file");
	snprintf(want, sizeof(want), "%s/tok", dir);
	CHECK_STR(c.token_file, want);
	k8s_config_free(&c);

	put("bad", "clusters:\n- name: x\n  cluster: {server: 'https://x', "
		   "certificate-authority-data: '%%%'}\n"
		   "contexts:\n- name: x\n  context: {cluster: x}\ncurrent-context: x\n");
	snprintf(list, sizeof(list), "%s/bad", dir);
	CHECK_INT(k8s_config_kubeconfig(list, NULL, &c, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "base64") != NULL);
	put("certonly", "clusters:\n- name: x\n  cluster: {server: 'https://x'}\n"
			"users:\n- name: u\n  user: {client-certificate: a.crt}\n"
			"contexts:\n- name: x\n  context: {cluster: x, user: u}\n"
			"current-context: x\n");
	snprintf(list, sizeof(list), "%s/certonly", dir);
	CHECK_INT(k8s_config_kubeconfig(list, NULL, &c, err, sizeof(err)), -EINVAL);
	snprintf(list, sizeof(list), "%s/nothing-here", dir);
	CHECK_INT(k8s_config_kubeconfig(list, NULL, &c, err, sizeof(err)), -ENOENT);
}

static void test_in_cluster(void)
{
	char err[512] = "", sa[128];
	k8s_config c;
	snprintf(sa, sizeof(sa), "%s/sa", dir);
	mkdir(sa, 0700);
	unsetenv("KUBERNETES_SERVICE_HOST");
	CHECK_INT(k8s_config_in_cluster(sa, &c, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "KUBERNETES_SERVICE_HOST") != NULL);
	setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	CHECK_INT(k8s_config_in_cluster(sa, &c, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "token") != NULL);
	put("sa/token", "eyJhbGciOi\n");
	put("sa/namespace", "inference\n");
	CHECK_INT(k8s_config_in_cluster(sa, &c, err, sizeof(err)), 0);
	CHECK_STR(c.server, "https://[fd00::1]:443");
	CHECK_STR(c.token, "eyJhbGciOi");
	CHECK_STR(c.namespace_, "inference");
	char want[256];
	snprintf(want, sizeof(want), "%s/ca.crt", sa);
	CHECK_STR(c.ca_file, want);
	snprintf(want, sizeof(want), "%s/token", sa);
	CHECK_STR(c.token_file, want);
	k8s_config_free(&c);
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
}

static void test_selector_and_ports_flags(void)
{
	arena a;
	arena_init(&a, 4096);
	const char **k, **v;
	uint32_t n;
	char err[256];
	CHECK_INT(k8s_selector_parse("app=vllm,example.com/tier=gpu,empty=", &a, &k, &v, &n, err,
				     sizeof(err)),
		  0);
	CHECK_INT(n, 3);
	CHECK_STR(k[1], "example.com/tier");
	CHECK_STR(v[1], "gpu");
	CHECK_STR(v[2], "");
	const char *bad[] = {"",	"app",	 "app=a,app=b",	   "-app=x",
			     "app=x y", "a=b=c", "Bad_Prefix/x=y", "app=" /* fine */ "x,",
			     "k=-v"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK(k8s_selector_parse(bad[i], &a, &k, &v, &n, err, sizeof(err)) == -EINVAL);
		CHECK(err[0] != '\0');
	}
	uint16_t ports[STORE_MAX_TARGET_PORTS];
	CHECK_INT(k8s_ports_parse("8000,8001", ports, &n, err, sizeof(err)), 0);
	CHECK_INT(n, 2);
	CHECK_INT(ports[1], 8001);
	CHECK_INT(k8s_ports_parse("1,2,3,4,5,6,7,8,9", ports, &n, err, sizeof(err)), -EINVAL);
	CHECK_INT(k8s_ports_parse("8000,8000", ports, &n, err, sizeof(err)), -EINVAL);
	CHECK_INT(k8s_ports_parse("0", ports, &n, err, sizeof(err)), -EINVAL);
	CHECK_INT(k8s_ports_parse("65536", ports, &n, err, sizeof(err)), -EINVAL);
	CHECK_INT(k8s_ports_parse("80 ", ports, &n, err, sizeof(err)), -EINVAL);
	CHECK_INT(k8s_ports_parse("", ports, &n, err, sizeof(err)), -EINVAL);
	arena_free(&a);
}

static store_pool make_pool(arena *a, const char *sel, const char *ports)
{
	store_pool p = {0};
	char err[256];
	CHECK_INT(k8s_selector_parse(sel, a, &p.selector_keys, &p.selector_values, &p.n_selector,
				     err, sizeof(err)),
		  0);
	CHECK_INT(k8s_ports_parse(ports, p.target_ports, &p.n_target_ports, err, sizeof(err)), 0);
	return p;
}

static void test_selector_match(void)
{
	arena a;
	arena_init(&a, 4096);
	store_pool p = make_pool(&a, "app=vllm,tier=gpu", "8000");
	cJSON *l = cJSON_Parse("{\"app\":\"vllm\",\"tier\":\"gpu\",\"x\":\"y\"}");
	CHECK(k8s_labels_match(l, &p));
	cJSON_ReplaceItemInObject(l, "tier", cJSON_CreateString("cpu"));
	CHECK(!k8s_labels_match(l, &p));
	cJSON_DeleteItemFromObject(l, "tier");
	CHECK(!k8s_labels_match(l, &p));
	CHECK(!k8s_labels_match(NULL, &p));
	cJSON_Delete(l);
	char *s = k8s_selector_string(&p);
	CHECK_STR(s, "app=vllm,tier=gpu");
	free(s);
	store_pool none = {0};
	CHECK(!k8s_labels_match(NULL, &none)); /* an empty selector takes no pod */
	arena_free(&a);
}

static cJSON *pod(const char *name, const char *ip, const char *ready, const char *extra_md)
{
	char buf[2048];
	snprintf(buf, sizeof(buf),
		 "{\"metadata\":{\"name\":\"%s\",\"labels\":{\"app\":\"vllm\","
		 "\"inference.networking.k8s.io/engine-type\":\"sglang\"}%s},"
		 "\"status\":{\"podIP\":\"%s\",\"conditions\":[{\"type\":\"PodScheduled\","
		 "\"status\":\"True\"},{\"type\":\"Ready\",\"status\":\"%s\"}]}}",
		 name, extra_md, ip, ready);
	cJSON *p = cJSON_Parse(buf);
	CHECK(p != NULL);
	return p;
}

static int eps_of(cJSON *p, const store_pool *pool, arena *a, store_endpoint *e, k8s_labels *l)
{
	int n = k8s_pod_endpoints(p, pool, a, e, l, 8);
	cJSON_Delete(p);
	return n;
}

static void test_pod_endpoints(void)
{
	arena a;
	arena_init(&a, 4096);
	store_pool p = make_pool(&a, "app=vllm", "8000,8001,8002");
	store_endpoint e[8];
	k8s_labels l[8];

	CHECK_INT(eps_of(pod("p0", "10.0.0.7", "True", ""), &p, &a, e, l), 3);
	CHECK_STR(e[0].name, "p0-rank-0");
	CHECK_STR(e[2].name, "p0-rank-2");
	CHECK_STR(e[1].pod, "p0");
	CHECK_STR(e[1].addr, "10.0.0.7:8001");
	CHECK_STR(e[1].ip, "10.0.0.7");
	CHECK_INT(e[2].port, 8002);
	CHECK_INT(e[2].rank, 2);
	CHECK_INT(l[0].n, 2);
	bool engine = false;
	for (uint32_t i = 0; i < l[0].n; i++)
		engine |= !strcmp(l[0].keys[i], "inference.networking.k8s.io/engine-type") &&
			  !strcmp(l[0].values[i], "sglang");
	CHECK(engine);

	/* Not ready, unknown readiness, terminating, no IP, bad IP, other labels. */
	CHECK_INT(eps_of(pod("p1", "10.0.0.8", "False", ""), &p, &a, e, l), 0);
	CHECK_INT(eps_of(pod("p1", "10.0.0.8", "Unknown", ""), &p, &a, e, l), 0);
	CHECK_INT(eps_of(pod("p1", "10.0.0.8", "True",
			     ",\"deletionTimestamp\":\"2025-01-01T00:00:00Z\""),
			 &p, &a, e, l),
		  0);
	CHECK_INT(eps_of(pod("p1", "", "True", ""), &p, &a, e, l), 0);
	CHECK_INT(eps_of(pod("p1", "10.0.0.999", "True", ""), &p, &a, e, l), 0);
	store_pool other = make_pool(&a, "app=other", "8000");
	CHECK_INT(eps_of(pod("p1", "10.0.0.8", "True", ""), &other, &a, e, l), 0);
	cJSON *no_cond = cJSON_Parse("{\"metadata\":{\"name\":\"x\",\"labels\":{\"app\":\"vllm\"}},"
				     "\"status\":{\"podIP\":\"10.0.0.1\"}}");
	CHECK_INT(eps_of(no_cond, &p, &a, e, l), 0);

	/* IPv6 in brackets; ranks keep their targetPorts index. */
	CHECK_INT(eps_of(pod("v6", "fd00:0::5", "True",
			     ",\"annotations\":{\"inference.networking.k8s.io/active-ports\":"
			     "\" 8002 , 9999,abc,8000x\"}"),
			 &p, &a, e, l),
		  2);
	CHECK_STR(e[0].addr, "[fd00::5]:8000"); /* "8000x" scans as 8000, as Go's Sscanf */
	CHECK_INT(e[0].rank, 0);
	CHECK_STR(e[1].addr, "[fd00::5]:8002");
	CHECK_STR(e[1].name, "v6-rank-2");
	CHECK_INT(e[1].rank, 2);
	/* An empty annotation turns every port off. */
	CHECK_INT(
		eps_of(pod("off", "10.0.0.9", "True",
			   ",\"annotations\":{\"inference.networking.k8s.io/active-ports\":\"\"}"),
		       &p, &a, e, l),
		0);
	/* Room for fewer endpoints than the pod has. */
	cJSON *big = pod("p0", "10.0.0.7", "True", "");
	CHECK_INT(k8s_pod_endpoints(big, &p, &a, e, NULL, 2), -ENOSPC);
	cJSON_Delete(big);
	arena_free(&a);
}

static void test_helpers(void)
{
	char name[300];
	CHECK_INT(k8s_lease_name(name, sizeof(name), "ns", "pool"), 0);
	CHECK_STR(name, "epp-ns-pool.gateway-api-inference-extension.sigs.k8s.io");
	char longpool[260];
	memset(longpool, 'a', sizeof(longpool) - 1);
	longpool[sizeof(longpool) - 1] = '\0';
	CHECK_INT(k8s_lease_name(name, sizeof(name), "ns", longpool), -ENAMETOOLONG);
	char *e = k8s_url_escape("metadata.name=a b&c/d");
	CHECK_STR(e, "metadata.name%3Da%20b%26c%2Fd");
	free(e);
	char t[40];
	k8s_format_microtime(t, sizeof(t), 1700000000123456LL);
	CHECK_STR(t, "2023-11-14T22:13:20.123456Z");
	cJSON *o = cJSON_Parse("{\"a\":{\"b\":{\"c\":\"d\"}},\"n\":1}");
	CHECK_STR(k8s_json_str(o, "a", "b", "c", NULL), "d");
	CHECK(k8s_json_str(o, "a", "b", NULL) == NULL);
	CHECK(k8s_json_get(o, "n", "x", NULL) == NULL);
	cJSON_Delete(o);
}

/* Objects as the API server returns them, through the manifest decoder. */
static void test_api_objects(void)
{
	const char *pool_json =
		"{\"apiVersion\":\"inference.networking.k8s.io/v1\",\"kind\":\"InferencePool\","
		"\"metadata\":{\"name\":\"pool\",\"namespace\":\"default\",\"uid\":\"u\","
		"\"resourceVersion\":\"12\",\"generation\":3,\"creationTimestamp\":"
		"\"2025-01-01T00:00:00Z\",\"futureField\":1},"
		"\"spec\":{\"selector\":{\"matchLabels\":{\"app\":\"vllm\"}},\"targetPorts\":"
		"[{\"number\":8000},{\"number\":8001}],\"newerSpecField\":{\"x\":true}},"
		"\"status\":{\"parents\":[]}}";
	const char *obj_json =
		"{\"apiVersion\":\"inference.networking.x-k8s.io/v1alpha2\",\"kind\":"
		"\"InferenceObjective\",\"metadata\":{\"name\":\"batch\",\"namespace\":\"default\","
		"\"creationTimestamp\":\"2025-01-01T00:00:00Z\"},\"spec\":{\"priority\":-1,"
		"\"poolRef\":{\"group\":\"inference.networking.k8s.io\",\"name\":\"pool\"}}}";
	const char *bad_json = /* priority must be an integer */
		"{\"apiVersion\":\"inference.networking.x-k8s.io/v1alpha2\",\"kind\":"
		"\"InferenceObjective\",\"metadata\":{\"name\":\"bad\",\"namespace\":\"default\"},"
		"\"spec\":{\"priority\":\"high\",\"poolRef\":{\"name\":\"pool\"}}}";
	const char *rw_json =
		"{\"apiVersion\":\"inference.networking.x-k8s.io/v1alpha2\",\"kind\":"
		"\"InferenceModelRewrite\",\"metadata\":{\"name\":\"rw\",\"namespace\":\"default\","
		"\"creationTimestamp\":\"2025-01-01T00:00:00Z\"},\"spec\":{\"poolRef\":{\"name\":"
		"\"pool\"},\"rules\":[{\"matches\":[{\"model\":{\"type\":\"Exact\",\"value\":\"m\"}"
		"}],"
		"\"targets\":[{\"modelRewrite\":\"m-v2\",\"weight\":1}]}]}}";
	cJSON *o[4] = {cJSON_Parse(pool_json), cJSON_Parse(obj_json), cJSON_Parse(bad_json),
		       cJSON_Parse(rw_json)};
	store_api_object objs[4];
	for (int i = 0; i < 4; i++) {
		CHECK(o[i] != NULL);
		objs[i] = (store_api_object){o[i], "/apis/x"};
	}
	store_manifest_opts mo = {.pool_name = "pool", .pool_namespace = "default"};
	store_catalog *c = NULL;
	CHECK_INT(store_objects_load(objs, 4, &mo, &c), 0);
	CHECK(c && c->has_pool);
	if (c && c->has_pool) {
		CHECK_INT(c->pool.n_target_ports, 2);
		CHECK_INT(c->pool.target_ports[1], 8001);
		CHECK_STR(c->pool.selector_values[0], "vllm");
		CHECK_INT(c->n_objectives, 1); /* the bad one is left out */
		CHECK_STR(c->objectives[0].name, "batch");
		CHECK_INT(c->objectives[0].priority, -1);
		CHECK_INT(c->n_rules, 1);
		CHECK_STR(c->rules[0].targets[0].model, "m-v2");
	}
	store_catalog_unref(c);
	/* Without the pool, objects still filter by poolRef. */
	CHECK_INT(store_objects_load(objs + 1, 3, &mo, &c), 0);
	CHECK(c && !c->has_pool && c->n_objectives == 1);
	store_catalog_unref(c);
	/* Far too deep is refused without a crash. */
	char deep[4096] = "";
	for (int i = 0; i < 200; i++)
		strcat(deep, "[");
	for (int i = 0; i < 200; i++)
		strcat(deep, "]");
	cJSON *d = cJSON_Parse(deep);
	cJSON *pd = cJSON_Parse(pool_json);
	if (d && pd) {
		cJSON_AddItemToObject(cJSON_GetObjectItem(pd, "spec"), "deep", d);
		store_api_object one = {pd, "deep"};
		CHECK_INT(store_objects_load(&one, 1, &mo, &c), 0);
		CHECK(c && !c->has_pool);
		store_catalog_unref(c);
	}
	cJSON_Delete(pd);
	for (int i = 0; i < 4; i++)
		cJSON_Delete(o[i]);
}

static void test_pool_fastpath(void)
{
	const char *v1 =
		"{\"apiVersion\":\"inference.networking.k8s.io/v1\",\"kind\":\"InferencePool\","
		"\"metadata\":{\"name\":\"pool\",\"namespace\":\"default\",\"annotations\":"
		"{\"kepp.io/fastpath\":\"10.96.0.50:8000=llama, 10.96.0.50:8001=llama-lora\","
		"\"other\":\"x\"}},"
		"\"spec\":{\"selector\":{\"matchLabels\":{\"app\":\"vllm\"}},\"targetPorts\":"
		"[{\"number\":8000}],\"endpointPickerRef\":{\"name\":\"epp\",\"port\":"
		"{\"number\":9002}}}}";
	const char *v1alpha2 =
		"{\"apiVersion\":\"inference.networking.x-k8s.io/v1alpha2\",\"kind\":"
		"\"InferencePool\",\"metadata\":{\"name\":\"pool\",\"namespace\":\"default\","
		"\"annotations\":{\"kepp.io/fastpath\":\"[fd00::9]:80=m\"}},\"spec\":"
		"{\"selector\":{\"app\":\"vllm\"},\"targetPortNumber\":8000,"
		"\"extensionRef\":{\"name\":\"epp\"}}}";
	cJSON *p1 = cJSON_Parse(v1), *p2 = cJSON_Parse(v1alpha2);
	CHECK(p1 && p2);
	if (!p1 || !p2) {
		cJSON_Delete(p1);
		cJSON_Delete(p2);
		return;
	}
	CHECK_STR(k8s_pool_fastpath(p1), "10.96.0.50:8000=llama, 10.96.0.50:8001=llama-lora");
	CHECK_STR(k8s_pool_fastpath(p2), "[fd00::9]:80=m");
	/* The annotation does not disturb the pool's decoding. */
	for (int i = 0; i < 2; i++) {
		store_api_object one = {i ? p2 : p1, "/apis/x"};
		store_manifest_opts mo = {.pool_name = "pool", .pool_namespace = "default"};
		store_catalog *c = NULL;
		CHECK_INT(store_objects_load(&one, 1, &mo, &c), 0);
		CHECK(c && c->has_pool && c->pool.target_ports[0] == 8000);
		store_catalog_unref(c);
	}
	/* A pool being deleted has no services any more. */
	cJSON_AddStringToObject(cJSON_GetObjectItem(p1, "metadata"), "deletionTimestamp",
				"2025-01-01T00:00:00Z");
	CHECK(k8s_pool_fastpath(p1) == NULL);
	/* None, or not a string (the API server would refuse it): none. */
	cJSON *annots = cJSON_GetObjectItem(cJSON_GetObjectItem(p2, "metadata"), "annotations");
	cJSON_ReplaceItemInObject(annots, "kepp.io/fastpath", cJSON_CreateNumber(1));
	CHECK(k8s_pool_fastpath(p2) == NULL);
	cJSON_DeleteItemFromObject(annots, "kepp.io/fastpath");
	CHECK(k8s_pool_fastpath(p2) == NULL);
	cJSON_DeleteItemFromObject(cJSON_GetObjectItem(p2, "metadata"), "annotations");
	CHECK(k8s_pool_fastpath(p2) == NULL);
	cJSON_Delete(p1);
	cJSON_Delete(p2);
}

int main(void)
{
	log_set_verbosity(-100); /* the refused objects log; keep the output clean */
	snprintf(dir, sizeof(dir), "/tmp/kepp-k8s-test-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_kubeconfig);
	RUN(test_in_cluster);
	RUN(test_selector_and_ports_flags);
	RUN(test_selector_match);
	RUN(test_pod_endpoints);
	RUN(test_helpers);
	RUN(test_api_objects);
	RUN(test_pool_fastpath);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return harness_done();
}
