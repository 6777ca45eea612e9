/* Go durations and Kubernetes quantities (user/util/units.c), against
 * reference grammars written here from Go's time.ParseDuration and
 * apimachinery's resource.ParseQuantity: kepp must accept exactly what they
 * accept (minus negative values, which kepp refuses everywhere), with the
 * same value.
 *
 * Input: [which][text]: bit 0 of |which| picks the parser. */
#include <errno.h>
#include <math.h>
#include <stdio.h>

#include "fuzz.h"
#include "util/units.h"

static bool digit(char c) { return c >= '0' && c <= '9'; }

/* time.ParseDuration: [-+]?("0" | ((\d+\.?\d*|\.\d+)unit)+), units ns us µs
 * (U+00B5) μs (U+03BC) ms s m h; the value must fit int64 nanoseconds.
 * Returns 0 with the value in ns, 1 for a valid negative, -1 when invalid,
 * -2 past int64 nanoseconds. */
static int go_duration(const char *s, double *ns)
{
	bool neg = false;
	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	if (!strcmp(s, "0")) {
		*ns = 0;
		return 0;
	}
	if (!*s)
		return -1;
	double total = 0;
	while (*s) {
		if (!(*s == '.' || digit(*s)))
			return -1;
		double v = 0, frac = 0;
		bool pre = false, post = false;
		for (; digit(*s); s++, pre = true)
			v = v * 10 + (*s - '0');
		if (*s == '.') {
			double scale = 0.1;
			for (s++; digit(*s); s++, post = true, scale /= 10)
				frac += (*s - '0') * scale;
		}
		if (!pre && !post)
			return -1;
		static const struct {
			const char *u;
			double mul;
		} units[] = {{"ns", 1}, {"us", 1e3}, {"\xc2\xb5s", 1e3}, {"\xce\xbcs", 1e3},
			     {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
		size_t ul = 0;
		while (s[ul] && s[ul] != '.' && !digit(s[ul]))
			ul++;
		if (!ul)
			return -1;
		bool found = false;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (strlen(units[i].u) == ul && !memcmp(s, units[i].u, ul)) {
				/* Go adds whole nanoseconds of the fraction. */
				total += v * units[i].mul + floor(frac * units[i].mul);
				found = true;
			}
		if (!found)
			return -1;
		s += ul;
	}
	*ns = total;
	if (total > 9223372036854775807.0)
		return -2; /* overflow: invalid, but |ns| says by how much */
	return neg && total > 0 ? 1 : 0;
}

/* resource.ParseQuantity: [+-]?(\d+|\d+\.\d*|\.\d+) then a suffix: "", a
 * decimal SI prefix (n u m k M G T P E), a binary one (Ki .. Ei), or an
 * exponent [eE][+-]?\d+; Value() rounds up. Computed exactly in decimal
 * digits. Returns 0 with the value in |res| ("big" past int64), 1 for a
 * valid negative, -1 when invalid. */
static int k8s_quantity(const char *s, char res[32])
{
	bool neg = false;
	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	const char *ip = s;
	size_t in = strspn(s, "0123456789"), fn = 0;
	s += in;
	const char *fp = s;
	if (*s == '.') {
		fp = ++s;
		fn = strspn(s, "0123456789");
		s += fn;
	}
	if (!in && !fn)
		return -1;
	static const struct {
		const char *suf;
		int dec, bin;
	} sufs[] = {{"", 0, 0},    {"n", -9, 0},  {"u", -6, 0},  {"m", -3, 0},  {"k", 3, 0},
		    {"M", 6, 0},   {"G", 9, 0},   {"T", 12, 0},  {"P", 15, 0},  {"E", 18, 0},
		    {"Ki", 0, 10}, {"Mi", 0, 20}, {"Gi", 0, 30}, {"Ti", 0, 40}, {"Pi", 0, 50},
		    {"Ei", 0, 60}};
	long dec = 0;
	int bin = -1;
	for (size_t i = 0; i < sizeof(sufs) / sizeof(sufs[0]); i++)
		if (!strcmp(s, sufs[i].suf)) {
			dec = sufs[i].dec;
			bin = sufs[i].bin;
		}
	if (bin < 0) {
		if (*s != 'e' && *s != 'E')
			return -1;
		s++;
		bool eneg = false;
		if (*s == '-' || *s == '+')
			eneg = *s++ == '-';
		if (!digit(*s))
			return -1;
		for (; digit(*s); s++)
			dec = dec < 1000000 ? dec * 10 + (*s - '0') : dec;
		if (*s)
			return -1;
		dec = eneg ? -dec : dec;
		bin = 0;
	}
	/* Digits (most significant first) times 2^bin. */
	size_t cap = in + fn + 32, n = 0;
	unsigned char *d = calloc(cap, 1);
	FUZZ_CHECK(d);
	for (size_t i = 0; i < in + fn; i++) {
		unsigned char c = (unsigned char)((i < in ? ip[i] : fp[i - in]) - '0');
		if (n || c)
			d[n++] = c;
	}
	dec -= (long)fn;
	if (!n) {
		free(d);
		strcpy(res, "0");
		return 0;
	}
	for (int b = 0; b < bin; b++) {
		int carry = 0;
		for (size_t i = n; i-- > 0;) {
			int v = d[i] * 2 + carry;
			d[i] = (unsigned char)(v % 10);
			carry = v / 10;
		}
		if (carry) {
			memmove(d + 1, d, n++);
			d[0] = (unsigned char)carry;
		}
	}
	/* Integer part rounded up, as text. */
	char buf[64];
	size_t o = 0;
	bool big = false, frac = false;
	if (dec >= 0) {
		if ((long)n + dec > 19)
			big = true;
		for (size_t i = 0; !big && i < n; i++)
			buf[o++] = (char)('0' + d[i]);
		for (long i = 0; !big && i < dec; i++)
			buf[o++] = '0';
	} else {
		size_t k = (size_t)-dec;
		size_t ilen = k >= n ? 0 : n - k;
		if (ilen > 19)
			big = true;
		for (size_t i = 0; !big && i < ilen; i++)
			buf[o++] = (char)('0' + d[i]);
		for (size_t i = ilen; i < n; i++)
			frac |= d[i] != 0;
		if (!o)
			buf[o++] = '0';
	}
	free(d);
	buf[o] = '\0';
	if (!big && frac) {
		size_t i = o;
		while (i > 0 && buf[i - 1] == '9')
			buf[--i] = '0';
		if (i == 0) {
			memmove(buf + 1, buf, o + 1);
			buf[0] = '1';
			o++;
		} else {
			buf[i - 1]++;
		}
	}
	if (big || o > 19 || (o == 19 && strcmp(buf, "9223372036854775807") > 0))
		strcpy(res, "big");
	else
		strcpy(res, buf);
	return neg && strcmp(res, "0") ? 1 : 0;
}

static bool close_to(double a, double b)
{
	return fabs(a - b) <= 1 + 1e-9 * fabs(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fin f = {data, size};
	bool quantity = fin_u8(&f) & 1;
	char *s = fuzz_strdup(f.p, f.n);
	if (strlen(s) != f.n) {
		free(s);
		return 0; /* both parsers see C strings */
	}
	int64_t v = -1;
	double want = 0;
	if (quantity) {
		char res[32];
		int r = units_quantity(s, &v);
		int ref = k8s_quantity(s, res);
		FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ERANGE);
		if (r == 0) {
			char got[32];
			snprintf(got, sizeof(got), "%lld", (long long)v);
			FUZZ_CHECK(ref == 0 && !strcmp(got, res));
		} else if (r == -ERANGE) {
			FUZZ_CHECK(ref == 0 && !strcmp(res, "big"));
		} else {
			FUZZ_CHECK(ref != 0);
		}
	} else {
		int r = units_duration_ms(s, &v);
		int ref = go_duration(s, &want);
		FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ERANGE);
		/* The reference adds in doubles: near 2^63 ns it cannot tell. */
		bool edge = (ref >= 0 || ref == -2) && fabs(want - 9223372036854775808.0) < 1e7;
		if (r == 0) {
			FUZZ_CHECK(ref == 0 || edge);
			FUZZ_CHECK(v >= 0 && close_to((double)v, want / 1e6));
		} else if (!edge) {
			FUZZ_CHECK(ref != 0);
		}
	}
	free(s);
	return 0;
}
