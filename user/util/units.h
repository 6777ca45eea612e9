/* Parsing of Go durations and Kubernetes quantities, shared by flags and
 * YAML decoding so both accept exactly the same spellings. */
#ifndef KEPP_UTIL_UNITS_H
#define KEPP_UTIL_UNITS_H
#include <stdint.h>

/* Go durations ("250ms", "1m30s", "0"; units ns, us, µs, ms, s, m, h) as
 * milliseconds. Returns 0, -EINVAL, or -ERANGE. */
int units_duration_ms(const char *s, int64_t *out);
/* Kubernetes quantities ("1Gi", "500M", "1000", "1.5k") as a whole number,
 * rounded up. Returns 0, -EINVAL, or -ERANGE. */
int units_quantity(const char *s, int64_t *out);
#endif
