/* util/yaml: documents, lines, strict scalars, JSON conversion, limits. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "util/yaml.h"

static int load(const char *text, yfile *f, char *err)
{
	return yfile_load_string(text, strlen(text), "t.yaml", f, err, 256);
}

static void test_documents_and_lines(void)
{
	yfile f;
	char err[256];
	CHECK_INT(load("a: 1\n---\n# two\nb:\n  c: [x, y]\n---\n", &f, err), 0);
	/* A trailing "---" is an explicit empty document: callers skip null roots. */
	CHECK_INT(f.n_docs, 3);
	CHECK(yis_null(ydoc_root(&f.docs[2])));
	yaml_document_t *d = &f.docs[1];
	yaml_node_t *root = ydoc_root(d);
	yaml_node_t *b = ymap_get(d, root, "b");
	CHECK(b && b->type == YAML_MAPPING_NODE);
	CHECK_INT(yline(b), 5);
	yaml_node_t *c = ymap_get(d, b, "c");
	CHECK_INT(yseq_len(c), 2);
	CHECK_STR(yscalar(yseq_at(d, c, 1)), "y");
	CHECK(ymap_get(d, root, "missing") == NULL);
	yfile_free(&f);
}

static void test_syntax_error_has_position(void)
{
	yfile f;
	char err[256];
	CHECK(load("a: 1\nb: [1, 2\nc: 3\n", &f, err) < 0);
	CHECK(strncmp(err, "t.yaml:", 7) == 0);
	CHECK(strstr(err, ":3:") != NULL || strstr(err, ":4:") != NULL);
}

static void test_strict_scalars(void)
{
	yfile f;
	char err[256];
	CHECK_INT(load("i: 42\nq: \"42\"\nb: true\nqb: 'true'\nf: 0.25\nn: ~\nd: 1m30s\nk: 2Gi\nx: 12abc\n",
		       &f, err), 0);
	yaml_document_t *d = &f.docs[0];
	yaml_node_t *r = ydoc_root(d);
	int64_t i;
	bool b;
	double x;
	CHECK_INT(yto_int64(ymap_get(d, r, "i"), &i), 0);
	CHECK_INT(i, 42);
	CHECK(yto_int64(ymap_get(d, r, "q"), &i) < 0); /* quoted: a string */
	CHECK(yto_int64(ymap_get(d, r, "x"), &i) < 0);
	CHECK_INT(yto_bool(ymap_get(d, r, "b"), &b), 0);
	CHECK(b);
	CHECK(yto_bool(ymap_get(d, r, "qb"), &b) < 0);
	CHECK_INT(yto_double(ymap_get(d, r, "f"), &x), 0);
	CHECK(x == 0.25);
	CHECK(yis_null(ymap_get(d, r, "n")));
	CHECK(!yis_null(ymap_get(d, r, "q")));
	CHECK_INT(yto_duration_ms(ymap_get(d, r, "d"), &i), 0);
	CHECK_INT(i, 90000);
	CHECK_INT(yto_quantity(ymap_get(d, r, "k"), &i), 0);
	CHECK_INT(i, 2147483648LL);
	CHECK(yto_duration_ms(ymap_get(d, r, "x"), &i) < 0);
	yfile_free(&f);
}

static void test_to_json_types(void)
{
	yfile f;
	char err[256];
	CHECK_INT(load("p:\n  n: 5\n  s: 200ms\n  q: \"5\"\n  b: false\n  z: null\n  l: [1, a]\n", &f,
		       err), 0);
	yaml_document_t *d = &f.docs[0];
	cJSON *j = yto_json(d, ymap_get(d, ydoc_root(d), "p"), err, sizeof(err));
	CHECK(j != NULL);
	char *s = cJSON_PrintUnformatted(j);
	CHECK_STR(s, "{\"n\":5,\"s\":\"200ms\",\"q\":\"5\",\"b\":false,\"z\":null,\"l\":[1,\"a\"]}");
	free(s);
	cJSON_Delete(j);
	yfile_free(&f);
}

static void test_alias_bomb_is_bounded(void)
{
	/* Each level doubles the expansion: 2^30 nodes if followed blindly. */
	char text[4096];
	size_t n = (size_t)snprintf(text, sizeof(text), "a0: &a0 [x, x]\n");
	for (int i = 1; i <= 30; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "a%d: &a%d [*a%d, *a%d]\n", i, i,
				      i - 1, i - 1);
	yfile f;
	char err[256];
	CHECK_INT(load(text, &f, err), 0);
	yaml_document_t *d = &f.docs[0];
	cJSON *j = yto_json(d, ydoc_root(d), err, sizeof(err));
	CHECK(j == NULL);
	CHECK(strstr(err, "more than") != NULL);
	yfile_free(&f);
}

static void test_file_limits(void)
{
	char path[] = "/tmp/kepp-yaml-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	const char body[] = "key: value\n";
	CHECK(write(fd, body, sizeof(body) - 1) == (ssize_t)(sizeof(body) - 1));
	close(fd);
	yfile f;
	char err[256];
	CHECK_INT(yfile_load(path, 0, &f, err, sizeof(err)), 0);
	yfile_free(&f);
	CHECK(yfile_load(path, 4, &f, err, sizeof(err)) == -EFBIG);
	CHECK(strstr(err, "over the limit") != NULL);
	unlink(path);
	CHECK(yfile_load(path, 0, &f, err, sizeof(err)) < 0);
}

int main(void)
{
	RUN(test_documents_and_lines);
	RUN(test_syntax_error_has_position);
	RUN(test_strict_scalars);
	RUN(test_to_json_types);
	RUN(test_alias_bomb_is_bounded);
	RUN(test_file_limits);
	return harness_done();
}
