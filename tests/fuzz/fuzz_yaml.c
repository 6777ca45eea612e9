/* YAML loading (user/util/yaml.c): every document of the input through the
 * node accessors, every scalar through the strict conversions, and every
 * root through yto_json, whose output must be JSON that parses back. Aliases
 * can make a node graph cyclic or exponential, so the walk here has its own
 * budget, and yto_json must stay bounded by its own. */
#include <errno.h>

#include "fuzz.h"
#include "util/yaml.h"

static void scalar(const yaml_node_t *n)
{
	int64_t i;
	bool b;
	double d;
	FUZZ_CHECK(yscalar(n) != NULL);
	(void)yis_null(n);
	(void)yto_int64(n, &i);
	(void)yto_bool(n, &b);
	if (yto_double(n, &d) == 0)
		FUZZ_CHECK(d == d);
	if (yto_duration_ms(n, &i) == 0)
		FUZZ_CHECK(i >= 0);
	if (yto_quantity(n, &i) == 0)
		FUZZ_CHECK(i >= 0);
}

static void walk(yaml_document_t *d, yaml_node_t *n, int depth, long *budget)
{
	FUZZ_CHECK(n != NULL);
	if (--*budget < 0 || depth > 64)
		return;
	FUZZ_CHECK(yline(n) >= 1);
	FUZZ_CHECK(strcmp(ykind(n), "nothing") != 0);
	switch (n->type) {
	case YAML_SCALAR_NODE:
		scalar(n);
		break;
	case YAML_SEQUENCE_NODE:
		FUZZ_CHECK(yscalar(n) == NULL);
		for (size_t i = 0; i < yseq_len(n); i++)
			walk(d, yseq_at(d, n, i), depth + 1, budget);
		break;
	case YAML_MAPPING_NODE:
		for (size_t i = 0; i < ymap_len(n); i++) {
			yaml_node_t *k, *v;
			ymap_at(d, n, i, &k, &v);
			walk(d, k, depth + 1, budget);
			walk(d, v, depth + 1, budget);
			const char *ks = yscalar(k);
			/* ymap_get finds a value under that key (the first one). */
			if (ks && strlen(ks) == k->data.scalar.length)
				FUZZ_CHECK(ymap_get(d, n, ks) != NULL);
		}
		break;
	default:
		FUZZ_CHECK(!"unknown node type");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	yfile f;
	char err[256];
	err[0] = '\0';
	int r = yfile_load_string((const char *)data, size, "fuzz.yaml", &f, err, sizeof(err));
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL || r == -ENOMEM);
		FUZZ_CHECK(strncmp(err, "fuzz.yaml", 9) == 0);
		return 0;
	}
	for (size_t i = 0; i < f.n_docs; i++) {
		yaml_document_t *d = &f.docs[i];
		yaml_node_t *root = ydoc_root(d);
		FUZZ_CHECK(root != NULL);
		long budget = 20000;
		walk(d, root, 0, &budget);
		cJSON *j = yto_json(d, root, err, sizeof(err));
		if (!j) {
			FUZZ_CHECK(strncmp(err, "line ", 5) == 0);
			continue;
		}
		char *text = cJSON_PrintUnformatted(j);
		FUZZ_CHECK(text != NULL);
		cJSON *back = cJSON_Parse(text);
		FUZZ_CHECK(back != NULL);
		cJSON_Delete(back);
		free(text);
		cJSON_Delete(j);
	}
	yfile_free(&f);
	return 0;
}
