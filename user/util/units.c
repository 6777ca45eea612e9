#include "util/units.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int units_duration_ms(const char *s, int64_t *out)
{
	if (!s || !*s)
		return -EINVAL;
	if (!strcmp(s, "0")) {
		*out = 0;
		return 0;
	}
	double total = 0;
	const char *p = s;
	while (*p) {
		char *end;
		errno = 0;
		double v = strtod(p, &end);
		if (end == p || errno || v < 0 || !isfinite(v))
			return -EINVAL;
		p = end;
		double mul;
		if (!strncmp(p, "ms", 2))
			mul = 1, p += 2;
		else if (!strncmp(p, "us", 2))
			mul = 1e-3, p += 2;
		else if (!strncmp(p, "\xc2\xb5s", 3))
			mul = 1e-3, p += 3;
		else if (!strncmp(p, "ns", 2))
			mul = 1e-6, p += 2;
		else if (*p == 's')
			mul = 1e3, p++;
		else if (*p == 'm')
			mul = 6e4, p++;
		else if (*p == 'h')
			mul = 3.6e6, p++;
		else
			return -EINVAL;
		total += v * mul;
	}
	if (total > 9.2e18)
		return -ERANGE;
	*out = (int64_t)total;
	return 0;
}

int units_quantity(const char *s, int64_t *out)
{
	if (!s || !*s)
		return -EINVAL;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0 || !isfinite(v))
		return -EINVAL;
	static const struct {
		const char *suf;
		double mul;
	} sufs[] = {
		{"", 1},
		{"k", 1e3},
		{"M", 1e6},
		{"G", 1e9},
		{"T", 1e12},
		{"P", 1e15},
		{"E", 1e18},
		{"Ki", 1024.0},
		{"Mi", 1048576.0},
		{"Gi", 1073741824.0},
		{"Ti", 1099511627776.0},
		{"Pi", 1125899906842624.0},
		{"Ei", 1152921504606846976.0},
		{"m", 1e-3},
	};
	for (size_t i = 0; i < sizeof(sufs) / sizeof(sufs[0]); i++) {
		if (strcmp(end, sufs[i].suf) == 0) {
			double r = ceil(v * sufs[i].mul);
			if (r > 9.2e18)
				return -ERANGE;
			*out = (int64_t)r;
			return 0;
		}
	}
	return -EINVAL;
}
