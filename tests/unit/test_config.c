/* sched/config: EndpointPickerConfig decoding (spec §4.4): the shipped
 * examples, every section, strictness with exact "<file>:<line>: ..."
 * messages, limits, and the hand-off to sched_new. Run from the repository
 * root (tests/run.sh does), where deploy/examples/ lives. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "sched/config.h"
#include "sched/sched.h"
#include "util/yaml.h"

#define HDR "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n"

static sched_config *parse(const char *text, char *err, size_t errlen)
{
	sched_config *c = NULL;
	err[0] = '\0';
	int r = sched_config_parse_text(text, strlen(text), "t.yaml", &c, err, errlen);
	CHECK(r < 0 ? c == NULL && err[0] : c != NULL);
	return r < 0 ? NULL : c;
}

/* The error text of |text|, or "" when it parsed. */
static const char *parse_err(const char *text)
{
	static char err[512];
	sched_config *c = parse(text, err, sizeof(err));
	if (c) {
		sched_config_free(c);
		return "";
	}
	return err;
}

static char *params_str(const sched_plugin_spec *p)
{
	return p->params ? cJSON_PrintUnformatted(p->params) : NULL;
}

/* Every example config in deploy/examples/ builds a scheduler. */
static void test_examples_build(void)
{
	const char *files[] = {"deploy/examples/endpointpickerconfig.yaml",
			       "deploy/examples/conformance-plugins.yaml",
			       "deploy/examples/lora-config.yaml"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		sched_config *c = NULL;
		char err[512] = "";
		CHECK_INT(sched_config_load_file(files[i], &c, err, sizeof(err)), 0);
		sched *s = c ? sched_new(c, err, sizeof(err)) : NULL;
		if (!s)
			fprintf(stderr, "  %s: %s\n", files[i], err);
		CHECK(s != NULL);
		sched_free(s);
		sched_config_free(c);
	}
}

static void test_example_file(void)
{
	sched_config *c = NULL;
	char err[512] = "";
	CHECK_INT(sched_config_load_file("deploy/examples/endpointpickerconfig.yaml", &c, err,
					 sizeof(err)), 0);
	CHECK_STR(err, "");
	if (!c)
		return;
	CHECK_STR(c->source, "deploy/examples/endpointpickerconfig.yaml");
	CHECK_INT(c->n_feature_gates, 0);
	CHECK_INT(c->n_plugins, 6);
	if (c->n_plugins == 6) {
		/* name defaults to type; lines are those of the list items */
		CHECK_STR(c->plugins[0].name, "queue-scorer");
		CHECK_STR(c->plugins[0].type, "queue-scorer");
		CHECK_INT(c->plugins[0].line, 4);
		CHECK(c->plugins[0].params == NULL);
		CHECK_STR(c->plugins[3].name, "prefix-cache-scorer");
		CHECK_INT(c->plugins[3].line, 7);
		char *s = params_str(&c->plugins[3]);
		CHECK_STR(s, "{\"autoTune\":true,\"blockSizeTokens\":16,"
			     "\"maxPrefixBlocksToMatch\":256,\"lruCapacityPerServer\":31250}");
		free(s);
		CHECK_STR(c->plugins[5].name, "sat");
		CHECK_STR(c->plugins[5].type, "utilization-detector");
		CHECK_INT(c->plugins[5].line, 16);
		/* typed like sigs.k8s.io/yaml: 200ms stays a string, 0.0 is a number */
		s = params_str(&c->plugins[5]);
		CHECK_STR(s, "{\"queueDepthThreshold\":5,\"kvCacheUtilThreshold\":0.8,"
			     "\"metricsStalenessThreshold\":\"200ms\",\"headroom\":0}");
		free(s);
	}
	CHECK_INT(c->n_profiles, 1);
	if (c->n_profiles == 1) {
		const sched_profile_spec *p = &c->profiles[0];
		CHECK_STR(p->name, "default");
		CHECK_INT(p->line, 20);
		CHECK_INT(p->n_refs, 5);
		if (p->n_refs == 5) {
			CHECK_STR(p->refs[0].plugin_ref, "queue-scorer");
			CHECK(p->refs[0].has_weight && p->refs[0].weight == 2.0);
			CHECK_INT(p->refs[0].line, 22);
			CHECK(p->refs[2].has_weight && p->refs[2].weight == 3.0);
			CHECK_STR(p->refs[3].plugin_ref, "lora-affinity-scorer");
			CHECK(!p->refs[3].has_weight);
			CHECK_STR(p->refs[4].plugin_ref, "max-score-picker");
			CHECK_INT(p->refs[4].line, 29);
		}
	}
	CHECK_STR(c->saturation_detector_ref, "sat");
	CHECK_INT(c->saturation_detector_line, 31);
	CHECK(c->parser_ref == NULL);
	CHECK(!c->has_data_layer);
	CHECK(!c->has_flow_control);

	sched *s = sched_new(c, err, sizeof(err));
	CHECK_STR(err, "");
	CHECK(s != NULL);
	if (s) {
		CHECK_STR(sched_profile_name(s), "default");
		sched_free(s);
	}
	sched_config_free(c);
}

static void test_conformance_file(void)
{
	sched_config *c = NULL;
	char err[512] = "";
	CHECK_INT(sched_config_load_file("deploy/examples/conformance-plugins.yaml", &c, err,
					 sizeof(err)), 0);
	CHECK_STR(err, "");
	if (!c)
		return;
	CHECK_INT(c->n_plugins, 2);
	if (c->n_plugins == 2) {
		CHECK_STR(c->plugins[0].name, "header-based-testing-filter");
		CHECK_STR(c->plugins[1].type, "destination-endpoint-served-verifier");
		CHECK_INT(c->plugins[1].line, 5);
	}
	CHECK_INT(c->n_profiles, 1);
	if (c->n_profiles == 1) {
		CHECK_STR(c->profiles[0].name, "conformance-profile");
		CHECK_INT(c->profiles[0].n_refs, 1);
		CHECK_STR(c->profiles[0].refs[0].plugin_ref, "header-based-testing-filter");
	}
	sched *s = sched_new(c, err, sizeof(err));
	CHECK_STR(err, "");
	CHECK(s != NULL);
	if (s) {
		CHECK_STR(sched_profile_name(s), "conformance-profile");
		sched_free(s);
	}
	sched_config_free(c);
}

static void test_empty_plugins(void)
{
	char err[512];
	static const char *const texts[] = {
		HDR "plugins: []\n",
		HDR "plugins:\nschedulingProfiles: ~\n",
		HDR,
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		sched_config *c = parse(texts[i], err, sizeof(err));
		CHECK_STR(err, "");
		CHECK(c != NULL);
		if (!c)
			continue;
		CHECK_STR(c->source, "t.yaml");
		CHECK_INT(c->n_plugins, 0);
		CHECK_INT(c->n_profiles, 0);
		/* sched_new fills in the defaults: a "default" profile. */
		sched *s = sched_new(c, err, sizeof(err));
		CHECK_STR(err, "");
		CHECK(s != NULL);
		if (s) {
			CHECK_STR(sched_profile_name(s), "default");
			sched_free(s);
		}
		sched_config_free(c);
	}
	/* no name for the config text: the documented placeholder */
	sched_config *c = NULL;
	const char *t = HDR "plugins: []\n";
	CHECK_INT(sched_config_parse_text(t, strlen(t), NULL, &c, err, sizeof(err)), 0);
	if (c)
		CHECK_STR(c->source, "<config-text>");
	sched_config_free(c);
}

static void test_all_sections(void)
{
	char err[512];
	sched_config *c = parse(
		HDR
		"featureGates: [dataLayer, enableLegacyMetrics]\n"          /* 3 */
		"plugins:\n"
		"- name: src\n"                                              /* 5 */
		"  type: metrics-data-source\n"
		"  parameters: {scheme: https, path: /m, n: 5, b: true, q: \"5\", z: null}\n"
		"- {type: core-metrics-extractor, name: ex}\n"               /* 8 */
		"- type: passthrough-parser\n"
		"  parameters: ~\n"
		"- name: \"5\"\n"                                            /* 11 */
		"  type: queue-scorer\n"
		"schedulingProfiles:\n"
		"- name: p\n"                                                /* 14 */
		"  plugins:\n"
		"  - pluginRef: \"5\"\n"
		"    weight: 0.5\n"
		"  - {pluginRef: src, weight: ~}\n"                          /* 18 */
		"saturationDetector: {pluginRef: utilization-detector}\n"
		"dataLayer:\n"
		"  sources:\n"
		"  - pluginRef: src\n"                                       /* 22 */
		"    extractors:\n"
		"    - pluginRef: ex\n"
		"parser:\n"
		"  pluginRef: passthrough-parser\n"                          /* 26 */
		"flowControl:\n"
		"  maxBytes: 1Gi\n"
		"  maxRequests: 500\n"
		"  defaultRequestTTL: 1m30s\n"
		"  usageLimitPolicyPluginRef: static-usage-limit-policy\n"
		"  defaultPriorityBand: {priority: 0, maxBytes: \"2k\"}\n"   /* 32 */
		"  priorityBands:\n"
		"  - priority: -10\n"                                        /* 34 */
		"    maxRequests: 7\n"
		"    fairnessPolicyRef: round-robin-fairness-policy\n"
		"    orderingPolicyRef: edf-ordering-policy\n"
		"  - priority: 100\n",
		err, sizeof(err));
	CHECK_STR(err, "");
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_INT(c->n_feature_gates, 2);
	if (c->n_feature_gates == 2) {
		CHECK_STR(c->feature_gates[0], "dataLayer");
		CHECK_STR(c->feature_gates[1], "enableLegacyMetrics");
	}
	CHECK_INT(c->n_plugins, 4);
	if (c->n_plugins == 4) {
		CHECK_INT(c->plugins[0].line, 5);
		char *s = params_str(&c->plugins[0]);
		CHECK_STR(s, "{\"scheme\":\"https\",\"path\":\"/m\",\"n\":5,\"b\":true,\"q\":\"5\","
			     "\"z\":null}");
		free(s);
		CHECK_STR(c->plugins[1].name, "ex");
		CHECK_INT(c->plugins[1].line, 8);
		CHECK(c->plugins[2].params == NULL); /* null parameters: absent */
		CHECK_STR(c->plugins[3].name, "5"); /* quoted: a string */
	}
	CHECK_INT(c->n_profiles, 1);
	if (c->n_profiles == 1 && c->profiles[0].n_refs == 2) {
		CHECK_STR(c->profiles[0].refs[0].plugin_ref, "5");
		CHECK(c->profiles[0].refs[0].weight == 0.5);
		CHECK(!c->profiles[0].refs[1].has_weight);
		CHECK_INT(c->profiles[0].refs[1].line, 18);
	}
	CHECK_STR(c->saturation_detector_ref, "utilization-detector");
	CHECK_INT(c->saturation_detector_line, 19);
	CHECK(c->has_data_layer);
	CHECK_INT(c->n_sources, 1);
	if (c->n_sources == 1) {
		CHECK_STR(c->sources[0].plugin_ref, "src");
		CHECK_INT(c->sources[0].line, 22);
		CHECK_INT(c->sources[0].n_extractors, 1);
		if (c->sources[0].n_extractors == 1)
			CHECK_STR(c->sources[0].extractor_refs[0], "ex");
	}
	CHECK_STR(c->parser_ref, "passthrough-parser");
	CHECK_INT(c->parser_line, 26);
	CHECK(c->has_flow_control);
	CHECK_INT(c->fc_max_bytes, 1073741824LL);
	CHECK_INT(c->fc_max_requests, 500);
	CHECK_INT(c->fc_default_ttl_ms, 90000);
	CHECK_STR(c->fc_usage_limit_policy_ref, "static-usage-limit-policy");
	CHECK(c->has_default_band);
	CHECK_INT(c->fc_default_band.priority, 0);
	CHECK_INT(c->fc_default_band.max_bytes, 2000);
	CHECK_INT(c->fc_default_band.line, 32);
	CHECK_INT(c->n_fc_bands, 2);
	if (c->n_fc_bands == 2) {
		CHECK_INT(c->fc_bands[0].priority, -10);
		CHECK_INT(c->fc_bands[0].max_requests, 7);
		CHECK_INT(c->fc_bands[0].max_bytes, 0);
		CHECK_STR(c->fc_bands[0].fairness_policy_ref, "round-robin-fairness-policy");
		CHECK_STR(c->fc_bands[0].ordering_policy_ref, "edf-ordering-policy");
		CHECK_INT(c->fc_bands[0].line, 34);
		CHECK_INT(c->fc_bands[1].priority, 100);
		CHECK(c->fc_bands[1].fairness_policy_ref == NULL);
	}
	sched_config_free(c);
}

struct bad {
	const char *text, *want;
};

static void check_bad(const struct bad *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *got = parse_err(b[i].text);
		if (strcmp(got, b[i].want) != 0)
			fprintf(stderr, "  case %zu:\n%s", i, b[i].text);
		CHECK_STR(got, b[i].want);
	}
}

static void test_unknown_fields(void)
{
	static const struct bad b[] = {
		{HDR "metadata: {name: x}\n",
		 "t.yaml:3: unknown field \"metadata\" in EndpointPickerConfig"},
		{HDR "plugins:\n- type: queue-scorer\n- type: max-score-picker\n  params: {}\n",
		 "t.yaml:6: unknown field \"params\" in plugins[1]"},
		{HDR "schedulingProfiles:\n- name: a\n  plugin: []\n",
		 "t.yaml:5: unknown field \"plugin\" in schedulingProfiles[0]"},
		/* field names are case-sensitive, as in the strict Kubernetes codec */
		{HDR "schedulingProfiles:\n- name: a\n  plugins:\n  - PluginRef: x\n",
		 "t.yaml:6: unknown field \"PluginRef\" in schedulingProfiles[0].plugins[0]"},
		{HDR "saturationDetector:\n  pluginRef: a\n  queueDepthThreshold: 5\n",
		 "t.yaml:5: unknown field \"queueDepthThreshold\" in saturationDetector"},
		{HDR "parser: {pluginRef: a, name: b}\n",
		 "t.yaml:3: unknown field \"name\" in parser"},
		/* the pre-v1.5 spelling of the section */
		{HDR "data:\n  sources: []\n",
		 "t.yaml:3: unknown field \"data\" in EndpointPickerConfig"},
		{HDR "dataLayer:\n  sources: []\n  extractors: []\n",
		 "t.yaml:5: unknown field \"extractors\" in dataLayer"},
		{HDR "dataLayer:\n  sources:\n  - pluginRef: s\n    extractors:\n"
		     "    - pluginRef: e\n"
		     "      type: x\n",
		 "t.yaml:8: unknown field \"type\" in dataLayer.sources[0].extractors[0]"},
		{HDR "flowControl:\n  maxQueue: 5\n",
		 "t.yaml:4: unknown field \"maxQueue\" in flowControl"},
		{HDR "flowControl:\n  defaultPriorityBand:\n    priority: 1\n    weight: 2\n",
		 "t.yaml:6: unknown field \"weight\" in flowControl.defaultPriorityBand"},
		{HDR "flowControl:\n  priorityBands:\n  - priority: 1\n  - priority: 2\n"
		     "    ttl: 1s\n",
		 "t.yaml:7: unknown field \"ttl\" in flowControl.priorityBands[1]"},
		/* a repeated field is refused too */
		{HDR "plugins:\n- type: a\n  type: b\n",
		 "t.yaml:5: duplicate field \"type\" in plugins[0]"},
		{HDR "kind: EndpointPickerConfig\n",
		 "t.yaml:3: duplicate field \"kind\" in EndpointPickerConfig"},
		{HDR "plugins:\n- ? [a]\n  : b\n",
		 "t.yaml:4: field names in plugins[0] must be strings, not a sequence"},
	};
	check_bad(b, sizeof(b) / sizeof(b[0]));
}

static void test_type_meta(void)
{
	static const struct bad b[] = {
		{"apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: EndpointPickerConfig\n",
		 "t.yaml:1: apiVersion \"inference.networking.x-k8s.io/v1alpha2\" is not "
		 "supported: "
		 "want \"inference.networking.x-k8s.io/v1alpha1\""},
		{"apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: InferencePool\n",
		 "t.yaml:2: kind \"InferencePool\" is not supported: "
		 "want \"EndpointPickerConfig\""},
		{"apiVersion: inference.networking.x-k8s.io/v1alpha1\nplugins: []\n",
		 "t.yaml:1: missing kind: want \"EndpointPickerConfig\""},
		{"# comment\nkind: EndpointPickerConfig\n",
		 "t.yaml:2: missing apiVersion: want \"inference.networking.x-k8s.io/v1alpha1\""},
		{"apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
		 "kind: [EndpointPickerConfig]\n",
		 "t.yaml:2: kind must be a string, not a sequence"},
		{"- a\n- b\n",
		 "t.yaml:1: an EndpointPickerConfig must be a mapping, not a sequence"},
		{HDR "---\n" HDR, "t.yaml:4: only one YAML document is allowed in a config"},
		{"# nothing\n", "t.yaml: empty config: want an EndpointPickerConfig document"},
		{"", "t.yaml: empty config: want an EndpointPickerConfig document"},
	};
	check_bad(b, sizeof(b) / sizeof(b[0]));
	/* empty documents around the config are fine */
	CHECK_STR(parse_err("---\n---\n" HDR "---\n"), "");
}

static void test_types_checked(void)
{
	static const struct bad b[] = {
		{HDR "plugins: {type: x}\n", "t.yaml:3: plugins must be a sequence, not a mapping"},
		{HDR "plugins:\n- type-x\n",
		 "t.yaml:4: plugins[0] must be a mapping, not a string"},
		{HDR "plugins:\n- name: 5\n  type: queue-scorer\n",
		 "t.yaml:4: plugins[0].name must be a string, not a number"},
		{HDR "plugins:\n- type: true\n",
		 "t.yaml:4: plugins[0].type must be a string, not a boolean"},
		{HDR "plugins:\n- type: {a: b}\n",
		 "t.yaml:4: plugins[0].type must be a string, not a mapping"},
		{HDR "featureGates: [dataLayer, 1]\n",
		 "t.yaml:3: featureGates[1] must be a string, not a number"},
		{HDR "featureGates: dataLayer\n",
		 "t.yaml:3: featureGates must be a sequence, not a string"},
		{HDR "schedulingProfiles:\n- name: a\n  plugins:\n  - pluginRef: q\n"
		     "    weight: \"2\"\n",
		 "t.yaml:7: schedulingProfiles[0].plugins[0].weight must be a number, "
		 "not a string"},
		{HDR "schedulingProfiles:\n- name: a\n  plugins:\n  - pluginRef: q\n"
		     "    weight: heavy\n",
		 "t.yaml:7: schedulingProfiles[0].plugins[0].weight must be a number, "
		 "not a string"},
		{HDR "schedulingProfiles:\n- name: a\n  plugins: q\n",
		 "t.yaml:5: schedulingProfiles[0].plugins must be a sequence, not a string"},
		{HDR "saturationDetector: sat\n",
		 "t.yaml:3: saturationDetector must be a mapping, not a string"},
		{HDR "parser: {pluginRef: [a]}\n",
		 "t.yaml:3: parser.pluginRef must be a string, not a sequence"},
		{HDR "dataLayer:\n  sources:\n  - pluginRef: s\n    extractors: e\n",
		 "t.yaml:6: dataLayer.sources[0].extractors must be a sequence, not a string"},
		{HDR "flowControl:\n  priorityBands:\n  - priority: high\n",
		 "t.yaml:5: flowControl.priorityBands[0].priority must be an integer"},
		{HDR "flowControl:\n  defaultPriorityBand: {priority: 1.5}\n",
		 "t.yaml:4: flowControl.defaultPriorityBand.priority must be an integer"},
		{HDR "flowControl:\n  maxBytes: lots\n",
		 "t.yaml:4: flowControl.maxBytes must be a quantity such as 1Gi or 500M"},
		{HDR "flowControl:\n  priorityBands:\n  - {priority: 1, maxRequests: -5}\n",
		 "t.yaml:5: flowControl.priorityBands[0].maxRequests must be a quantity such as "
		 "1Gi or 500M"},
		/* metav1.Duration decodes only from a string */
		{HDR "flowControl:\n  defaultRequestTTL: 30\n",
		 "t.yaml:4: flowControl.defaultRequestTTL must be a duration such as 30s"},
		{HDR "flowControl:\n  defaultRequestTTL: soon\n",
		 "t.yaml:4: flowControl.defaultRequestTTL must be a duration such as 30s"},
		{HDR "flowControl:\n  usageLimitPolicyPluginRef: 7\n",
		 "t.yaml:4: flowControl.usageLimitPolicyPluginRef must be a string, not a number"},
	};
	check_bad(b, sizeof(b) / sizeof(b[0]));
}

static void test_plugin_validation(void)
{
	static const struct bad b[] = {
		{HDR "plugins:\n- type: queue-scorer\n- type: max-score-picker\n"
		     "- type: queue-scorer\n",
		 "t.yaml:6: duplicate plugin name 'queue-scorer'"},
		/* the name defaults to the type before the check, as upstream */
		{HDR "plugins:\n- name: max-score-picker\n  type: random-picker\n"
		     "- type: max-score-picker\n",
		 "t.yaml:6: duplicate plugin name 'max-score-picker'"},
		{HDR "plugins:\n- type: queue-scorer\n- name: x\n  parameters: {a: 1}\n",
		 "t.yaml:5: plugin 'x' is missing a type"},
		{HDR "plugins:\n- name: x\n  type: \"\"\n",
		 "t.yaml:4: plugin 'x' is missing a type"},
		{HDR "plugins:\n- ~\n", "t.yaml:4: plugin '' is missing a type"},
		/* strict decoding of the whole document comes before these checks */
		{HDR "plugins:\n- name: x\n- type: y\n  bogus: 1\n",
		 "t.yaml:6: unknown field \"bogus\" in plugins[1]"},
	};
	check_bad(b, sizeof(b) / sizeof(b[0]));
}

static void test_sched_new_reports_config_lines(void)
{
	char err[512];
	sched_config *c = parse(HDR "plugins:\n"
				    "- type: queue-scorer\n"
				    "- name: mine\n"
				    "  type: no-such-scorer\n",
				err, sizeof(err));
	CHECK(c != NULL);
	if (!c)
		return;
	sched *s = sched_new(c, err, sizeof(err));
	CHECK(s == NULL);
	CHECK_STR(err, "t.yaml:5: plugin type 'no-such-scorer' is not registered");
	sched_free(s);
	sched_config_free(c);

	/* parameters reach the factory typed: a quoted number is a string */
	c = parse(HDR "plugins:\n- type: max-score-picker\n  parameters:\n"
		      "    maxNumOfEndpoints: \"2\"\n",
		  err, sizeof(err));
	CHECK(c != NULL);
	if (!c)
		return;
	s = sched_new(c, err, sizeof(err));
	CHECK(s == NULL);
	CHECK(strncmp(err, "t.yaml:4: failed to create plugin 'max-score-picker'", 52) == 0);
	sched_free(s);
	sched_config_free(c);
}

static void test_limits(void)
{
	/* An alias bomb in parameters: each level doubles, 2^30 nodes if
	 * expanded. */
	char text[8192];
	size_t n = (size_t)snprintf(text, sizeof(text), HDR "plugins:\n- type: queue-scorer\n"
							  "  parameters:\n    a0: &a0 [x, x]\n");
	for (int i = 1; i <= 30; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "    a%d: &a%d [*a%d, *a%d]\n", i,
				      i, i - 1, i - 1);
	const char *e = parse_err(text);
	CHECK(strncmp(e, "t.yaml:", 7) == 0);
	CHECK(strstr(e, "more than") != NULL);

	/* The structure too: 400 profiles sharing one list of 400 references
	 * are 160000 entries from 15 KB of text. */
	char *big = malloc(32768);
	CHECK(big != NULL);
	if (!big)
		return;
	n = (size_t)snprintf(big, 32768, HDR "schedulingProfiles:\n"
					     "- name: a\n  plugins: &l [&q {pluginRef: q}");
	for (int i = 1; i < 400; i++)
		n += (size_t)snprintf(big + n, 32768 - n, ", *q");
	n += (size_t)snprintf(big + n, 32768 - n, "]\n");
	for (int i = 1; i < 400; i++)
		n += (size_t)snprintf(big + n, 32768 - n, "- {name: a, plugins: *l}\n");
	CHECK(n < 32768);
	e = parse_err(big);
	CHECK(strstr(e, "t.yaml:") == e && strstr(e, ": more than 100000 YAML nodes") != NULL);
	free(big);

	/* parameters nested without end */
	n = (size_t)snprintf(text, sizeof(text), HDR "plugins:\n- type: q\n  parameters: ");
	for (int i = 0; i < 100; i++)
		text[n++] = '[';
	for (int i = 0; i < 100; i++)
		text[n++] = ']';
	text[n++] = '\n';
	text[n] = '\0';
	e = parse_err(text);
	CHECK(strstr(e, "t.yaml:5: plugins[0].parameters: nested deeper than") == e);

	/* size limits of the text and of the file */
	size_t len = YAML_MAX_BYTES + 1;
	char *buf = malloc(len + 1);
	CHECK(buf != NULL);
	if (!buf)
		return;
	memset(buf, '#', len);
	buf[len] = '\0';
	sched_config *c = NULL;
	char err[512];
	CHECK_INT(sched_config_parse_text(buf, len, "big.yaml", &c, err, sizeof(err)), -EFBIG);
	CHECK(c == NULL);
	CHECK(strstr(err, "big.yaml: ") == err && strstr(err, "over the limit") != NULL);
	char path[] = "/tmp/kepp-config-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(write(fd, buf, len) == (ssize_t)len);
		close(fd);
		CHECK_INT(sched_config_load_file(path, &c, err, sizeof(err)), -EFBIG);
		CHECK(c == NULL);
		CHECK(strstr(err, "over the limit") != NULL);
		unlink(path);
	}
	free(buf);
}

static void test_files(void)
{
	sched_config *c = NULL;
	char err[512];
	CHECK(sched_config_load_file("/nonexistent/kepp.yaml", &c, err, sizeof(err)) < 0);
	CHECK(c == NULL);
	CHECK_STR(err, "/nonexistent/kepp.yaml: No such file or directory");

	char path[] = "/tmp/kepp-config-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	const char body[] = HDR "plugins:\n- type: queue-scorer\n  weight: 2\n";
	CHECK(write(fd, body, sizeof(body) - 1) == (ssize_t)(sizeof(body) - 1));
	close(fd);
	CHECK(sched_config_load_file(path, &c, err, sizeof(err)) < 0);
	char want[128];
	snprintf(want, sizeof(want), "%s:5: unknown field \"weight\" in plugins[0]", path);
	CHECK_STR(err, want);
	unlink(path);

	/* YAML syntax errors keep libyaml's position */
	CHECK(strncmp(parse_err(HDR "plugins: [a\n"), "t.yaml:", 7) == 0);
	sched_config_free(NULL);
}

int main(void)
{
	RUN(test_example_file);
	RUN(test_examples_build);
	RUN(test_conformance_file);
	RUN(test_empty_plugins);
	RUN(test_all_sections);
	RUN(test_unknown_fields);
	RUN(test_type_meta);
	RUN(test_types_checked);
	RUN(test_plugin_validation);
	RUN(test_sched_new_reports_config_lines);
	RUN(test_limits);
	RUN(test_files);
	return harness_done();
}
