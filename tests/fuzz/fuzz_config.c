/* EndpointPickerConfig (user/sched/config.c), then the scheduler it builds
 * (sched_new: defaulting, plugin types, references, parameters). Errors must
 * name the source and a line; a config that builds must describe a usable
 * scheduler. */
#include <errno.h>

#include "fuzz.h"
#include "sched/sched.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	log_set_verbosity(-100);
	sched_config *cfg = NULL;
	char err[512];
	err[0] = '\0';
	int r = sched_config_parse_text((const char *)data, size, "fuzz.yaml", &cfg, err,
					sizeof(err));
	if (r < 0) {
		FUZZ_CHECK(cfg == NULL);
		FUZZ_CHECK(strncmp(err, "fuzz.yaml", 9) == 0);
		return 0;
	}
	FUZZ_CHECK(cfg != NULL);
	for (size_t i = 0; i < cfg->n_plugins; i++)
		FUZZ_CHECK(cfg->plugins[i].type && cfg->plugins[i].name);

	err[0] = '\0';
	sched *s = sched_new(cfg, err, sizeof(err));
	if (!s) {
		FUZZ_CHECK(err[0] != '\0');
	} else {
		FUZZ_CHECK(sched_profile_name(s) != NULL);
		const sched_datalayer *dl = sched_data_layer(s);
		FUZZ_CHECK(dl != NULL);
		for (size_t i = 0; i < dl->n_sources; i++) {
			const sched_metrics_source *src = &dl->sources[i];
			FUZZ_CHECK(src->name && src->scheme && src->path);
			for (size_t j = 0; j < src->n_extractors; j++)
				FUZZ_CHECK(src->extractors[j]->n_engines >= 1);
		}
		sched_free(s);
	}
	sched_config_free(cfg);
	return 0;
}
