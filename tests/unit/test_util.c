/* util: arena, random numbers and UUIDs, JSON escaping for logs. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>

#include "harness.h"
#include "util/arena.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/units.h"

static void test_arena_alignment_and_reuse(void)
{
	arena a;
	arena_init(&a, 1024);
	char *first = arena_alloc(&a, 3);
	CHECK(first != NULL);
	for (int i = 0; i < 200; i++) {
		void *p = arena_alloc(&a, (size_t)(i % 37) + 1);
		CHECK(p != NULL);
		CHECK(((uintptr_t)p & 15) == 0);
	}
	arena_reset(&a);
	/* After a reset the first block is reused, so the first address repeats. */
	char *again = arena_alloc(&a, 3);
	CHECK(again == first);
	arena_free(&a);
}

static void test_arena_big_allocations(void)
{
	arena a;
	arena_init(&a, 1024);
	char *small = arena_alloc(&a, 16);
	char *big = arena_alloc(&a, 100000);
	CHECK(big != NULL);
	memset(big, 'x', 100000);
	/* A big allocation does not end the current block. */
	char *small2 = arena_alloc(&a, 16);
	CHECK(small2 == small + 16);
	char *s = arena_strndup(&a, "hello world", 5);
	CHECK_STR(s, "hello");
	char *z = arena_calloc(&a, 64);
	int zero = 1;
	for (int i = 0; i < 64; i++)
		zero &= z[i] == 0;
	CHECK(zero);
	arena_reset(&a);
	arena_free(&a);
}

static void test_rand_below_uniform(void)
{
	rand_seed(42);
	int counts[5] = {0};
	for (int i = 0; i < 50000; i++) {
		uint64_t r = rand_below(5);
		CHECK(r < 5);
		counts[r]++;
	}
	for (int i = 0; i < 5; i++)
		CHECK(counts[i] > 9500 && counts[i] < 10500);
	for (int i = 0; i < 1000; i++) {
		double d = rand_double();
		CHECK(d >= 0.0 && d < 1.0);
	}
}

static void test_rand_seed_repeatable(void)
{
	rand_seed(7);
	uint64_t a = rand_u64(), b = rand_u64();
	rand_seed(7);
	CHECK(rand_u64() == a);
	CHECK(rand_u64() == b);
}

static void test_uuid4_format(void)
{
	char u[37], v[37];
	rand_uuid4(u);
	rand_uuid4(v);
	CHECK_INT(strlen(u), 36);
	CHECK(strcmp(u, v) != 0);
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			CHECK(u[i] == '-');
		else
			CHECK(isxdigit((unsigned char)u[i]) && !isupper((unsigned char)u[i]));
	}
	CHECK(u[14] == '4');                            /* version 4 */
	CHECK(strchr("89ab", u[19]) != NULL);           /* RFC 4122 variant */
}

static void test_json_escape(void)
{
	char out[64];
	const char in[] = "a\"b\\c\nd\x01";
	json_escape(out, sizeof(out), in, sizeof(in) - 1);
	CHECK_STR(out, "a\\\"b\\\\c\\nd\\u0001");
	/* Truncation never splits an escape and always terminates. */
	char tiny[5];
	json_escape(tiny, sizeof(tiny), "ab\"cd", 5);
	CHECK_STR(tiny, "ab\\\"");
	json_escape(tiny, 4, "ab\"cd", 5);
	CHECK_STR(tiny, "ab");
}

static void test_units(void)
{
	int64_t v;
	CHECK_INT(units_duration_ms("250ms", &v), 0);
	CHECK_INT(v, 250);
	CHECK_INT(units_duration_ms("1h2m3.5s", &v), 0);
	CHECK_INT(v, 3723500);
	CHECK_INT(units_duration_ms("0", &v), 0);
	CHECK_INT(v, 0);
	CHECK(units_duration_ms("5", &v) < 0); /* Go needs a unit */
	CHECK(units_duration_ms("5x", &v) < 0);
	CHECK(units_duration_ms("-1s", &v) < 0);
	CHECK_INT(units_quantity("4Mi", &v), 0);
	CHECK_INT(v, 4194304);
	CHECK_INT(units_quantity("1G", &v), 0);
	CHECK_INT(v, 1000000000);
	CHECK_INT(units_quantity("1.5k", &v), 0);
	CHECK_INT(v, 1500);
	CHECK(units_quantity("4MiB", &v) < 0);
	CHECK(units_quantity("", &v) < 0);
	CHECK(units_quantity("99999Ei", &v) < 0);
}

int main(void)
{
	RUN(test_arena_alignment_and_reuse);
	RUN(test_arena_big_allocations);
	RUN(test_rand_below_uniform);
	RUN(test_rand_seed_repeatable);
	RUN(test_uuid4_format);
	RUN(test_json_escape);
	RUN(test_units);
	return harness_done();
}
