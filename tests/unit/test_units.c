/* util/units against the grammars it mirrors (Go's time.ParseDuration,
 * apimachinery's resource.ParseQuantity), from inputs tests/fuzz/fuzz_units.c
 * found: strtod took spellings both refuse, refused some both take, and
 * rounded 1.1k up to 1101. */
#include <errno.h>

#include "harness.h"
#include "util/units.h"

static int64_t dur(const char *s)
{
	int64_t v = -1;
	return units_duration_ms(s, &v) < 0 ? -1 : v;
}

static int64_t qty(const char *s)
{
	int64_t v = -1;
	return units_quantity(s, &v) < 0 ? -1 : v;
}

static void test_duration_grammar(void)
{
	CHECK_INT(dur("250ms"), 250);
	CHECK_INT(dur("1h2m3.5s"), 3723500);
	CHECK_INT(dur(".5h"), 1800000);
	CHECK_INT(dur("1.s"), 1000);
	CHECK_INT(dur("+1s"), 1000);
	CHECK_INT(dur("-0"), 0);
	CHECK_INT(dur("1500us"), 1);
	CHECK_INT(dur("2000\xc2\xb5s"), 2);  /* U+00B5 */
	CHECK_INT(dur("3000\xce\xbcs"), 3);  /* U+03BC, which Go also takes */
	CHECK_INT(dur("1s1s"), 2000);
	CHECK_INT(dur("1e3s"), -1);         /* no exponents */
	CHECK_INT(dur("0x10s"), -1);        /* no hex */
	CHECK_INT(dur(" 1s"), -1);          /* no blanks */
	CHECK_INT(dur("1s "), -1);
	CHECK_INT(dur("1s-1s"), -1);        /* a sign only in front */
	CHECK_INT(dur("1s+1s"), -1);
	CHECK_INT(dur("."), -1);
	CHECK_INT(dur(".s"), -1);
	CHECK_INT(dur("infs"), -1);
	CHECK_INT(dur("-1s"), -1);
	int64_t v;
	/* Past int64 nanoseconds (about 292 years), as Go refuses it. */
	CHECK_INT(units_duration_ms("2562048h", &v), -ERANGE);
	CHECK_INT(dur("2562047h"), 2562047LL * 3600000);
	/* The largest: 2^63 - 1 ns; found by fuzzing when the bound was in ms. */
	CHECK_INT(dur("9223372036854775\xc2\xb5s"), 9223372036854LL);
	CHECK_INT(dur("9223372036854775807ns"), 9223372036854LL);
	CHECK_INT(units_duration_ms("9223372036854775808ns", &v), -ERANGE);
	CHECK_INT(dur("1.0000009ms"), 1);
	CHECK_INT(dur("0.5s0.5s"), 1000);
	/* 2^63 ns twice: Go's check after the sum lets it wrap to 0. */
	CHECK_INT(units_duration_ms("9223372036854775808ns9223372036854775808ns", &v), -ERANGE);
}

static void test_quantity_grammar(void)
{
	CHECK_INT(qty("4Mi"), 4194304);
	CHECK_INT(qty("1.1k"), 1100);        /* was 1101: 1.1 * 1000 in binary */
	CHECK_INT(qty("2.3M"), 2300000);
	CHECK_INT(qty("0.1Gi"), 107374183);  /* 107374182.4 rounded up */
	CHECK_INT(qty("100m"), 1);
	CHECK_INT(qty("1n"), 1);
	CHECK_INT(qty("2u"), 1);
	CHECK_INT(qty("1e3"), 1000);
	CHECK_INT(qty("1.5E-2"), 1);
	CHECK_INT(qty("+5"), 5);
	CHECK_INT(qty("1."), 1);
	CHECK_INT(qty(".5Ki"), 512);
	CHECK_INT(qty("-0"), 0);
	CHECK_INT(qty("8Ei"), -1);           /* 2^63 */
	CHECK_INT(qty("9223372036854775807"), INT64_MAX);
	CHECK_INT(qty("9223372036854775807.1"), -1);
	CHECK_INT(qty("7.5Ei"), 8646911284551352320LL);
	CHECK_INT(qty("1.000000000000000000000000000000000000000001"), 2); /* past 38 digits */
	CHECK_INT(qty("0.000000000000000000000000000000000000000000001Ei"), 1);
	CHECK_INT(qty("0x10"), -1);
	CHECK_INT(qty(" 1"), -1);
	CHECK_INT(qty("inf"), -1);
	CHECK_INT(qty("1e3k"), -1);
	CHECK_INT(qty("4MiB"), -1);
	CHECK_INT(qty("-1"), -1);
	CHECK_INT(qty("."), -1);
}

int main(void)
{
	RUN(test_duration_grammar);
	RUN(test_quantity_grammar);
	return harness_done();
}
