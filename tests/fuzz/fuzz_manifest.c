/* YAML manifests (user/store/manifest.c) as --manifests reads them, and the
 * static --endpoints list of the pool they define (user/store/endpoints.c).
 *
 * Input: [options][YAML]. The YAML is written to a memfd and loaded through
 * /proc/self/fd, so the real file path of store_manifests_load runs. Options
 * pick the pool name, namespace and group flags. A catalog that loads must be
 * sorted as store.h documents, find each of its own objects, and take a
 * snapshot of the pool's endpoints. */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "store/manifest.h"
#include "util/log.h"

static int fd = -1;
static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (fd < 0) {
		log_set_verbosity(-100);
		fd = memfd_create("fuzz-manifest.yaml", 0);
		FUZZ_CHECK(fd >= 0);
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	fin f = {data, size};
	uint8_t opt = fin_u8(&f);
	static const char *const names[] = {NULL, "vllm-llama3-8b-instruct", "pool", ""};
	static const char *const nss[] = {NULL, "default", "other", ""};
	static const char *const groups[] = {NULL, "inference.networking.k8s.io",
					     "inference.networking.x-k8s.io", "example.com"};
	store_manifest_opts o = {names[opt & 3], nss[(opt >> 2) & 3], groups[(opt >> 4) & 3]};

	FUZZ_CHECK(ftruncate(fd, 0) == 0);
	FUZZ_CHECK(pwrite(fd, f.p, f.n, 0) == (ssize_t)f.n);

	store_catalog *c = NULL;
	char err[512];
	err[0] = '\0';
	int r = store_manifests_load(path, &o, &c, err, sizeof(err));
	if (r < 0) {
		FUZZ_CHECK(c == NULL);
		FUZZ_CHECK(strncmp(err, path, strlen(path)) == 0);
		return 0;
	}
	FUZZ_CHECK(c != NULL);
	for (uint32_t i = 0; i < c->n_objectives; i++) {
		const store_objective *x = &c->objectives[i];
		FUZZ_CHECK(x->name != NULL);
		if (i)
			FUZZ_CHECK(strcmp(c->objectives[i - 1].name, x->name) <= 0);
		FUZZ_CHECK(store_objective_find(c, x->name, strlen(x->name)) != NULL);
	}
	for (uint32_t i = 0; i < c->n_models; i++) {
		const store_model *x = &c->models[i];
		FUZZ_CHECK(x->name && x->model_name);
		if (i)
			FUZZ_CHECK(strcmp(c->models[i - 1].model_name, x->model_name) <= 0);
		const store_model *m = store_model_find(c, x->model_name, strlen(x->model_name));
		FUZZ_CHECK(m && strcmp(m->model_name, x->model_name) == 0);
		for (uint32_t t = 0; t < x->n_targets; t++)
			FUZZ_CHECK(x->targets[t].model != NULL);
	}
	for (uint32_t i = 0; i < c->n_rules; i++) {
		const store_rewrite_rule *x = &c->rules[i];
		FUZZ_CHECK(x->n_targets > 0 && x->targets);
		for (uint32_t k = 0; k < x->n_matches; k++)
			FUZZ_CHECK(store_rewrite_find(c, x->matches[k], strlen(x->matches[k])) !=
				   NULL);
	}
	if (c->has_pool) {
		const store_pool *p = &c->pool;
		FUZZ_CHECK(p->name && p->namespace_ && p->group);
		FUZZ_CHECK(p->n_target_ports >= 1 && p->n_target_ports <= STORE_MAX_TARGET_PORTS);
		store_endpoint *eps = NULL;
		uint32_t n = 0;
		FUZZ_CHECK(store_endpoints_parse("10.0.0.1,[fd00::1],10.0.0.2:9", p, &eps, &n, err,
						 sizeof(err)) == 0 ||
			   eps == NULL);
		if (eps) {
			FUZZ_CHECK(n >= 2 * p->n_target_ports);
			store_snapshot *s = store_snapshot_new(c, eps, n, true);
			FUZZ_CHECK(s && s->n_endpoints == n);
			store_release(s);
			free(eps);
		}
	}
	store_catalog_unref(c);
	return 0;
}
