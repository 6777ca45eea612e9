/* Minimal unit-test harness: CHECK records a failure with file:line and goes
 * on; RUN runs one test function; harness_done() prints the closing line
 * "N passed, N failed" that tests/run.sh sums, and returns the exit code. */
#ifndef KEPP_TEST_HARNESS_H
#define KEPP_TEST_HARNESS_H
#include <stdio.h>
#include <string.h>

static int h_passed, h_failed, h_cur_failed;
static const char *h_cur;

#define CHECK(cond)                                                              \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "  FAIL %s: %s:%d: %s\n", h_cur, __FILE__, \
				__LINE__, #cond);                                \
			h_cur_failed = 1;                                        \
		}                                                                \
	} while (0)

#define CHECK_INT(a, b)                                                          \
	do {                                                                     \
		long long _a = (long long)(a), _b = (long long)(b);              \
		if (_a != _b) {                                                  \
			fprintf(stderr, "  FAIL %s: %s:%d: %s == %s (%lld != %lld)\n", \
				h_cur, __FILE__, __LINE__, #a, #b, _a, _b);       \
			h_cur_failed = 1;                                        \
		}                                                                \
	} while (0)

#define CHECK_STR(a, b)                                                          \
	do {                                                                     \
		const char *_a = (a), *_b = (b);                                 \
		if (!_a || !_b || strcmp(_a, _b) != 0) {                         \
			fprintf(stderr, "  FAIL %s: %s:%d: %s == %s (\"%s\" != \"%s\")\n", \
				h_cur, __FILE__, __LINE__, #a, #b, _a ? _a : "(null)", \
				_b ? _b : "(null)");                             \
			h_cur_failed = 1;                                        \
		}                                                                \
	} while (0)

#define RUN(fn)                                                                  \
	do {                                                                     \
		h_cur = #fn;                                                     \
		h_cur_failed = 0;                                                \
		fn();                                                            \
		if (h_cur_failed) {                                              \
			h_failed++;                                              \
			printf("not ok - %s\n", #fn);                            \
		} else {                                                         \
			h_passed++;                                              \
			printf("ok - %s\n", #fn);                                \
		}                                                                \
	} while (0)

static inline int harness_done(void)
{
	printf("%d passed, %d failed\n", h_passed, h_failed);
	return h_failed ? 1 : 0;
}
#endif
