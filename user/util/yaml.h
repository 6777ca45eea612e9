/* YAML loading for manifests and configs: libyaml's document API (a node
 * tree where every node carries its line and column), plus strict scalar
 * conversions and a bounded YAML-to-JSON conversion for plugin parameters.
 * Errors are written as "<file>:<line>:<col>: <reason>" or "<file>:<line>:
 * <reason>" by the callers, with the line of the node at fault. */
#ifndef KEPP_UTIL_YAML_H
#define KEPP_UTIL_YAML_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <yaml.h>

#define YAML_MAX_BYTES (4u << 20) /* default manifest/config size limit */

typedef struct yfile {
	const char *name;         /* file name for messages */
	yaml_document_t *docs;    /* every document of the stream */
	size_t n_docs;
} yfile;

/* Loads every document of |path| (at most |max_bytes|; 0: YAML_MAX_BYTES).
 * Returns 0, or <0 with "<path>:<line>:<col>: <reason>" in |err|. */
int yfile_load(const char *path, size_t max_bytes, yfile *out, char *err, size_t errlen);
int yfile_load_string(const char *text, size_t len, const char *name, yfile *out, char *err,
		      size_t errlen);
void yfile_free(yfile *f);

/* The root node of a document, or NULL for an empty document. */
yaml_node_t *ydoc_root(yaml_document_t *d);
/* 1-based line of a node. */
static inline int yline(const yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 0; }

/* Map access. ymap_get returns the value for |key| or NULL. */
yaml_node_t *ymap_get(yaml_document_t *d, yaml_node_t *map, const char *key);
/* Iteration over a mapping: for (size_t i = 0; i < ymap_len(m); i++) ymap_at(d, m, i, &k, &v) */
size_t ymap_len(const yaml_node_t *map);
void ymap_at(yaml_document_t *d, yaml_node_t *map, size_t i, yaml_node_t **k, yaml_node_t **v);
size_t yseq_len(const yaml_node_t *seq);
yaml_node_t *yseq_at(yaml_document_t *d, yaml_node_t *seq, size_t i);

/* The text of a scalar node (NUL-terminated), or NULL if not a scalar. */
const char *yscalar(const yaml_node_t *n);
/* A plain (unquoted) scalar that YAML reads as null: "", "~", "null". */
bool yis_null(const yaml_node_t *n);
/* Strict conversions of plain scalars (quoted "5" is a string, not an int).
 * Return 0 or -EINVAL. */
int yto_int64(const yaml_node_t *n, int64_t *out);
int yto_bool(const yaml_node_t *n, bool *out);
int yto_double(const yaml_node_t *n, double *out);
/* Go durations ("200ms", "1m30s") as milliseconds (scalar of any style). */
int yto_duration_ms(const yaml_node_t *n, int64_t *out);
/* Kubernetes resource quantities ("1Gi", "500M", "1000") as an integer. */
int yto_quantity(const yaml_node_t *n, int64_t *out);

/* Converts a node to JSON as a Kubernetes decoder would (plain scalars that
 * look like numbers, booleans or null become those; everything else a
 * string). Bounded: NULL when deeper than 64 or over 100000 nodes (alias
 * bombs), with the reason in |err|. */
cJSON *yto_json(yaml_document_t *d, yaml_node_t *n, char *err, size_t errlen);

/* Human name of a node type for messages: "mapping", "sequence", "scalar". */
const char *ykind(const yaml_node_t *n);
#endif
