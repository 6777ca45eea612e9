/* EndpointPickerConfig (inference.networking.x-k8s.io/v1alpha1), spec §4.4:
 * the YAML document, decoded strictly (an unknown field is an error), with the
 * source line of every element so later validation can name file and line.
 * Defaulting and plugin instantiation happen in sched_new (sched.h), which
 * also reports unknown plugin types with the line recorded here. */
#ifndef KEPP_SCHED_CONFIG_H
#define KEPP_SCHED_CONFIG_H
#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "util/arena.h"

typedef struct sched_plugin_spec {
	const char *name; /* defaults to type when absent */
	const char *type;
	cJSON *params;    /* parameters as JSON (NULL when absent); owned by the config */
	int line;
} sched_plugin_spec;

typedef struct sched_profile_ref {
	const char *plugin_ref;
	double weight;
	bool has_weight;
	int line;
} sched_profile_ref;

typedef struct sched_profile_spec {
	const char *name;
	sched_profile_ref *refs;
	size_t n_refs;
	int line;
} sched_profile_spec;

typedef struct sched_priority_band {
	long long priority;
	long long max_bytes, max_requests; /* 0: unset */
	const char *fairness_policy_ref, *ordering_policy_ref;
	int line;
} sched_priority_band;

typedef struct sched_config {
	const char *source;          /* file name, or "<config-text>" */
	const char **feature_gates;
	size_t n_feature_gates;
	sched_plugin_spec *plugins;
	size_t n_plugins;
	sched_profile_spec *profiles;
	size_t n_profiles;
	const char *saturation_detector_ref; int saturation_detector_line;
	const char *parser_ref; int parser_line;
	/* dataLayer.sources[].{pluginRef, extractors[].pluginRef} */
	struct sched_datasource {
		const char *plugin_ref;
		const char **extractor_refs;
		size_t n_extractors;
		int line;
	} *sources;
	size_t n_sources;
	bool has_data_layer;
	/* flowControl */
	bool has_flow_control;
	long long fc_max_bytes, fc_max_requests; /* Quantity, parsed; 0 unset */
	long long fc_default_ttl_ms;
	const char *fc_usage_limit_policy_ref;
	bool has_default_band;
	sched_priority_band fc_default_band;
	sched_priority_band *fc_bands;
	size_t n_fc_bands;
	arena mem; /* owns strings and arrays */
} sched_config;

/* Parses a config file (or, with sched_config_parse_text, a YAML string).
 * On error returns a negative errno-style code and writes
 * "<file>:<line>: <reason>" into |err|. */
int sched_config_load_file(const char *path, sched_config **out, char *err, size_t errlen);
int sched_config_parse_text(const char *text, size_t len, const char *source,
			    sched_config **out, char *err, size_t errlen);
void sched_config_free(sched_config *c);
#endif
