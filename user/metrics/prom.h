/* A strict, bounded parser for the Prometheus text exposition format 0.0.4,
 * following Go expfmt's TextParser: "# HELP" and "# TYPE" lines (at most one
 * of each per family, TYPE before the family's samples), other "#" lines are
 * comments, legacy metric and label names, label values with the escapes \\,
 * \" and \n, values as Go's ParseFloat reads them (NaN, +Inf, -Inf included),
 * and an optional integer millisecond timestamp.
 *
 * Pure: no I/O, no globals, nothing kept between calls, so it can be fuzzed.
 * Samples are handed to a callback as they are parsed; every pointer in a
 * sample is valid only during that call. A caller that must not act on a body
 * that later turns out malformed collects first and commits when the parse
 * returns 0. */
#ifndef KEPP_METRICS_PROM_H
#define KEPP_METRICS_PROM_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mx_prom_type {
	MX_PROM_UNTYPED = 0,
	MX_PROM_COUNTER,
	MX_PROM_GAUGE,
	MX_PROM_HISTOGRAM,
	MX_PROM_SUMMARY,
};

typedef struct mx_prom_label {
	const char *name;
	size_t name_len;
	const char *value; /* unescaped */
	size_t value_len;
} mx_prom_label;

typedef struct mx_prom_sample {
	const char *name; /* sample name, e.g. "foo_bucket" */
	size_t name_len;
	const char *family; /* family name, e.g. "foo" */
	size_t family_len;
	enum mx_prom_type type; /* of the family */
	const mx_prom_label *labels;
	uint32_t n_labels;
	double value;
	bool has_ts;
	int64_t ts_ms;
	uint32_t line;
} mx_prom_sample;

typedef struct mx_prom_limits {
	size_t max_body;       /* bytes; default 16 MiB */
	size_t max_line;       /* bytes per line; default 64 KiB */
	uint32_t max_labels;   /* per sample; default 128 */
	uint32_t max_families; /* distinct metric families; default 65536 */
} mx_prom_limits;

#define MX_PROM_MAX_BODY (16u << 20)

/* Return nonzero to stop the parse; mx_prom_parse then returns -ECANCELED. */
typedef int (*mx_prom_sample_fn)(void *ctx, const mx_prom_sample *s);

/* Parses |len| bytes of |buf| (need not be NUL-terminated). |lim| NULL or a
 * zero field means the default. Returns 0, -EINVAL for malformed text, -E2BIG
 * when a limit is passed, -ENOMEM, or -ECANCELED; on error |err| holds
 * "line N: <reason>" (or the limit that was passed). */
int mx_prom_parse(const char *buf, size_t len, const mx_prom_limits *lim, mx_prom_sample_fn fn,
		  void *ctx, char *err, size_t errlen);

const char *mx_prom_type_name(enum mx_prom_type t);
#endif
