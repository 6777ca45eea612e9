#include "util/units.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

/* Both grammars are scanned by hand: strtod would also take what Go and
 * Kubernetes refuse (leading blanks, hex, "inf", exponents inside a
 * duration), and its binary result would make 1.1k round up to 1101. */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* [+-]? then digits with an optional fraction (at least one digit). */
static const char *scan_number(const char *s, bool *neg, const char **int_p, size_t *int_n,
			       const char **frac_p, size_t *frac_n)
{
	*neg = false;
	if (*s == '+' || *s == '-')
		*neg = *s++ == '-';
	*int_p = s;
	*int_n = strspn(s, "0123456789");
	s += *int_n;
	*frac_p = s;
	*frac_n = 0;
	if (*s == '.') {
		*frac_p = ++s;
		*frac_n = strspn(s, "0123456789");
		s += *frac_n;
	}
	return *int_n || *frac_n ? s : NULL;
}

/* time.ParseDuration: [-+]?("0" | ((\d+\.?\d*|\.\d+)unit)+) with units ns,
 * us, µs (U+00B5), μs (U+03BC), ms, s, m, h. Computed as Go does, in uint64
 * nanoseconds with its overflow checks, so the same texts are refused. */
int units_duration_ms(const char *s, int64_t *out)
{
	if (!s || !*s)
		return -EINVAL;
	bool neg = false;
	if (*s == '+' || *s == '-')
		neg = *s++ == '-';
	if (!strcmp(s, "0")) {
		*out = 0;
		return 0;
	}
	if (!*s)
		return -EINVAL;
	static const struct {
		const char *unit;
		uint64_t ns;
	} units[] = {
		{"ns", 1},           {"us", 1000},          {"\xc2\xb5s", 1000}, {"\xce\xbcs", 1000},
		{"ms", 1000000},     {"s", 1000000000},     {"m", 60000000000ULL},
		{"h", 3600000000000ULL},
	};
	const uint64_t lim = 1ULL << 63;
	uint64_t total = 0;
	while (*s) {
		if (!(*s == '.' || is_digit(*s)))
			return -EINVAL;
		/* leadingInt: the integer part, refused past 1<<63. */
		uint64_t v = 0;
		const char *start = s;
		for (; is_digit(*s); s++) {
			if (v > lim / 10)
				return -ERANGE;
			v = v * 10 + (uint64_t)(*s - '0');
			if (v > lim)
				return -ERANGE;
		}
		bool pre = s != start, post = false;
		/* leadingFraction: digits past what fits are ignored. */
		uint64_t f = 0;
		double scale = 1;
		if (*s == '.') {
			bool over = false;
			for (start = ++s; is_digit(*s); s++) {
				if (over)
					continue;
				if (f > (lim - 1) / 10) {
					over = true;
					continue;
				}
				uint64_t y = f * 10 + (uint64_t)(*s - '0');
				if (y > lim) {
					over = true;
					continue;
				}
				f = y;
				scale *= 10;
			}
			post = s != start;
		}
		if (!pre && !post)
			return -EINVAL;
		size_t ul = 0;
		while (s[ul] && s[ul] != '.' && !is_digit(s[ul]))
			ul++;
		size_t u = 0;
		while (u < sizeof(units) / sizeof(units[0]) &&
		       !(strlen(units[u].unit) == ul && !memcmp(s, units[u].unit, ul)))
			u++;
		if (u == sizeof(units) / sizeof(units[0]))
			return -EINVAL;
		s += ul;
		uint64_t unit = units[u].ns;
		if (v > lim / unit)
			return -ERANGE;
		v *= unit;
		if (f > 0) {
			v += (uint64_t)((double)f * ((double)unit / scale));
			if (v > lim)
				return -ERANGE;
		}
		/* Checked before adding: Go's own check comes after and lets
		 * 2^63 + 2^63 wrap to 0. */
		if (v > lim - total)
			return -ERANGE;
		total += v;
	}
	if (neg && total)
		return -EINVAL;
	if (total > lim - 1)
		return -ERANGE;
	*out = (int64_t)(total / 1000000);
	return 0;
}

/* resource.ParseQuantity: [+-]?(\d+|\d+\.\d*|\.\d+) and a suffix: "", a
 * decimal SI prefix (n u m k M G T P E), a binary one (Ki .. Ei), or an
 * exponent [eE][+-]?\d+. The value is rounded up to a whole number exactly,
 * in integer arithmetic, as Quantity.Value() does. */
int units_quantity(const char *s, int64_t *out)
{
	if (!s || !*s)
		return -EINVAL;
	bool neg;
	const char *ip, *fp;
	size_t in, fn;
	s = scan_number(s, &neg, &ip, &in, &fp, &fn);
	if (!s)
		return -EINVAL;
	static const struct {
		const char *suf;
		int dec, bin;
	} sufs[] = {
		{"", 0, 0},   {"n", -9, 0},  {"u", -6, 0},  {"m", -3, 0},  {"k", 3, 0},
		{"M", 6, 0},  {"G", 9, 0},   {"T", 12, 0},  {"P", 15, 0},  {"E", 18, 0},
		{"Ki", 0, 10}, {"Mi", 0, 20}, {"Gi", 0, 30}, {"Ti", 0, 40}, {"Pi", 0, 50},
		{"Ei", 0, 60},
	};
	long dec = 0;
	int bin = 0;
	size_t k = 0;
	while (k < sizeof(sufs) / sizeof(sufs[0]) && strcmp(s, sufs[k].suf))
		k++;
	if (k < sizeof(sufs) / sizeof(sufs[0])) {
		dec = sufs[k].dec;
		bin = sufs[k].bin;
	} else if (*s == 'e' || *s == 'E') {
		bool eneg = false;
		if (*++s == '+' || *s == '-')
			eneg = *s++ == '-';
		if (!is_digit(*s))
			return -EINVAL;
		for (; is_digit(*s); s++)
			if (dec < 100000)
				dec = dec * 10 + (*s - '0');
		if (*s)
			return -EINVAL;
		if (eneg)
			dec = -dec;
	} else {
		return -EINVAL;
	}

	/* The value is (m + t) * 10^dec * 2^bin with m the first 38
	 * significant digits and 0 <= t < 1 what the others add (|sticky|
	 * when nonzero): enough to round up exactly short of absurd inputs. */
	unsigned __int128 m = 0;
	size_t sig = 0;
	bool sticky = false;
	for (size_t i = 0; i < in + fn; i++) {
		char c = i < in ? ip[i] : fp[i - in];
		if (sig == 38) {
			dec += i < in;
			sticky |= c != '0';
			continue;
		}
		m = m * 10 + (unsigned)(c - '0');
		sig += m != 0;
		dec -= i >= in;
	}
	if (m == 0 && !sticky) {
		*out = 0;
		return 0;
	}
	if (neg)
		return -EINVAL;
	const unsigned __int128 max = INT64_MAX;
	if (dec >= 0) {
		if (dec > 19 || m > max)
			return -ERANGE;
		for (long i = 0; i < dec; i++)
			if ((m *= 10) > max)
				return -ERANGE;
		if (m > max >> bin)
			return -ERANGE;
		*out = (int64_t)(m << bin);
		return 0;
	}
	/* 10^38 is the largest power of ten in 128 bits. */
	for (; dec < -38; dec++) {
		sticky |= m % 10 != 0;
		m /= 10;
	}
	unsigned __int128 d = 1;
	for (long i = 0; i < -dec; i++)
		d *= 10;
	unsigned __int128 q = m / d, r = m % d;
	if (q > max >> bin)
		return -ERANGE;
	/* q * 2^bin plus floor(r * 2^bin / d), one bit at a time (r < d < 2^127). */
	for (int i = 0; i < bin; i++) {
		r <<= 1;
		q <<= 1;
		if (r >= d) {
			r -= d;
			q |= 1;
		}
	}
	q += r != 0 || sticky;
	if (q > max)
		return -ERANGE;
	*out = (int64_t)q;
	return 0;
}
