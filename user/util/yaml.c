#include "util/yaml.h"

#include "util/units.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define MAX_DOCS 1024
#define MAX_DEPTH 64
#define MAX_JSON_NODES 100000

static int load_parser(yaml_parser_t *p, const char *name, yfile *out, char *err, size_t errlen)
{
	yaml_document_t *docs = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		yaml_document_t d;
		if (!yaml_parser_load(p, &d)) {
			snprintf(err, errlen, "%s:%zu:%zu: %s%s%s", name, p->problem_mark.line + 1,
				 p->problem_mark.column + 1, p->problem ? p->problem : "invalid YAML",
				 p->context ? " " : "", p->context ? p->context : "");
			goto fail;
		}
		if (!yaml_document_get_root_node(&d)) {
			/* The end of the stream. */
			yaml_document_delete(&d);
			break;
		}
		if (n == MAX_DOCS) {
			yaml_document_delete(&d);
			snprintf(err, errlen, "%s: more than %d YAML documents", name, MAX_DOCS);
			goto fail;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 4;
			yaml_document_t *nd = realloc(docs, cap * sizeof(*nd));
			if (!nd) {
				yaml_document_delete(&d);
				snprintf(err, errlen, "%s: out of memory", name);
				goto fail;
			}
			docs = nd;
		}
		docs[n++] = d;
	}
	out->name = name;
	out->docs = docs;
	out->n_docs = n;
	return 0;
fail:
	for (size_t i = 0; i < n; i++)
		yaml_document_delete(&docs[i]);
	free(docs);
	return -EINVAL;
}

int yfile_load_string(const char *text, size_t len, const char *name, yfile *out, char *err,
		      size_t errlen)
{
	yaml_parser_t p;
	if (!yaml_parser_initialize(&p)) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -ENOMEM;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
	int r = load_parser(&p, name, out, err, errlen);
	yaml_parser_delete(&p);
	return r;
}

int yfile_load(const char *path, size_t max_bytes, yfile *out, char *err, size_t errlen)
{
	if (!max_bytes)
		max_bytes = YAML_MAX_BYTES;
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	struct stat st;
	if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		fclose(f);
		return -EINVAL;
	}
	if ((size_t)st.st_size > max_bytes) {
		snprintf(err, errlen, "%s: %lld bytes is over the limit of %zu", path,
			 (long long)st.st_size, max_bytes);
		fclose(f);
		return -EFBIG;
	}
	char *buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		fclose(f);
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	size_t got = fread(buf, 1, (size_t)st.st_size, f);
	fclose(f);
	int r = yfile_load_string(buf, got, path, out, err, errlen);
	free(buf);
	return r;
}

void yfile_free(yfile *f)
{
	for (size_t i = 0; i < f->n_docs; i++)
		yaml_document_delete(&f->docs[i]);
	free(f->docs);
	f->docs = NULL;
	f->n_docs = 0;
}

yaml_node_t *ydoc_root(yaml_document_t *d) { return yaml_document_get_root_node(d); }

size_t ymap_len(const yaml_node_t *m)
{
	if (!m || m->type != YAML_MAPPING_NODE)
		return 0;
	return (size_t)(m->data.mapping.pairs.top - m->data.mapping.pairs.start);
}

void ymap_at(yaml_document_t *d, yaml_node_t *m, size_t i, yaml_node_t **k, yaml_node_t **v)
{
	yaml_node_pair_t *p = m->data.mapping.pairs.start + i;
	*k = yaml_document_get_node(d, p->key);
	*v = yaml_document_get_node(d, p->value);
}

yaml_node_t *ymap_get(yaml_document_t *d, yaml_node_t *m, const char *key)
{
	for (size_t i = 0; i < ymap_len(m); i++) {
		yaml_node_t *k, *v;
		ymap_at(d, m, i, &k, &v);
		const char *ks = yscalar(k);
		if (ks && strcmp(ks, key) == 0)
			return v;
	}
	return NULL;
}

size_t yseq_len(const yaml_node_t *s)
{
	if (!s || s->type != YAML_SEQUENCE_NODE)
		return 0;
	return (size_t)(s->data.sequence.items.top - s->data.sequence.items.start);
}

yaml_node_t *yseq_at(yaml_document_t *d, yaml_node_t *s, size_t i)
{
	return yaml_document_get_node(d, s->data.sequence.items.start[i]);
}

const char *yscalar(const yaml_node_t *n)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return NULL;
	return (const char *)n->data.scalar.value;
}

static bool plain(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

bool yis_null(const yaml_node_t *n)
{
	if (!plain(n))
		return false;
	const char *s = yscalar(n);
	return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
	       !strcmp(s, "NULL");
}

int yto_int64(const yaml_node_t *n, int64_t *out)
{
	if (!plain(n))
		return -EINVAL;
	const char *s = yscalar(n);
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (end == s || *end || errno)
		return -EINVAL;
	*out = v;
	return 0;
}

int yto_bool(const yaml_node_t *n, bool *out)
{
	if (!plain(n))
		return -EINVAL;
	const char *s = yscalar(n);
	if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
		*out = true;
	else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

int yto_double(const yaml_node_t *n, double *out)
{
	if (!plain(n))
		return -EINVAL;
	const char *s = yscalar(n);
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !isfinite(v))
		return -EINVAL;
	*out = v;
	return 0;
}

int yto_duration_ms(const yaml_node_t *n, int64_t *out)
{
	return units_duration_ms(yscalar(n), out);
}

int yto_quantity(const yaml_node_t *n, int64_t *out) { return units_quantity(yscalar(n), out); }

const char *ykind(const yaml_node_t *n)
{
	if (!n)
		return "nothing";
	switch (n->type) {
	case YAML_MAPPING_NODE:
		return "mapping";
	case YAML_SEQUENCE_NODE:
		return "sequence";
	default:
		return "scalar";
	}
}

static cJSON *scalar_json(const yaml_node_t *n)
{
	const char *s = yscalar(n);
	if (plain(n)) {
		bool b;
		int64_t i;
		double d;
		if (yis_null(n))
			return cJSON_CreateNull();
		if (yto_bool(n, &b) == 0)
			return cJSON_CreateBool(b);
		if (yto_int64(n, &i) == 0)
			return cJSON_CreateNumber((double)i);
		if (yto_double(n, &d) == 0 && strpbrk(s, "0123456789"))
			return cJSON_CreateNumber(d);
	}
	return cJSON_CreateString(s);
}

static cJSON *to_json(yaml_document_t *d, yaml_node_t *n, int depth, long *budget, char *err,
		      size_t errlen)
{
	if (--*budget < 0) {
		snprintf(err, errlen, "line %d: more than %d YAML nodes (alias expansion?)", yline(n),
			 MAX_JSON_NODES);
		return NULL;
	}
	if (depth > MAX_DEPTH) {
		snprintf(err, errlen, "line %d: nested deeper than %d levels", yline(n), MAX_DEPTH);
		return NULL;
	}
	if (n->type == YAML_SCALAR_NODE)
		return scalar_json(n);
	if (n->type == YAML_SEQUENCE_NODE) {
		cJSON *a = cJSON_CreateArray();
		for (size_t i = 0; a && i < yseq_len(n); i++) {
			cJSON *c = to_json(d, yseq_at(d, n, i), depth + 1, budget, err, errlen);
			if (!c) {
				cJSON_Delete(a);
				return NULL;
			}
			cJSON_AddItemToArray(a, c);
		}
		return a;
	}
	cJSON *o = cJSON_CreateObject();
	for (size_t i = 0; o && i < ymap_len(n); i++) {
		yaml_node_t *k, *v;
		ymap_at(d, n, i, &k, &v);
		const char *ks = yscalar(k);
		if (!ks) {
			snprintf(err, errlen, "line %d: mapping keys must be scalars", yline(k));
			cJSON_Delete(o);
			return NULL;
		}
		cJSON *c = to_json(d, v, depth + 1, budget, err, errlen);
		if (!c) {
			cJSON_Delete(o);
			return NULL;
		}
		cJSON_AddItemToObject(o, ks, c);
	}
	return o;
}

cJSON *yto_json(yaml_document_t *d, yaml_node_t *n, char *err, size_t errlen)
{
	long budget = MAX_JSON_NODES;
	return to_json(d, n, 0, &budget, err, errlen);
}
