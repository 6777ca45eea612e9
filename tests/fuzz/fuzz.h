/* Shared by the fuzz targets (tests/fuzz/fuzz_<name>.c). Each target is one
 * LLVMFuzzerTestOneInput, linked either with libFuzzer (clang, make fuzz) or
 * with driver.c, which replays the committed corpora in `make test`.
 *
 * Targets check invariants with FUZZ_CHECK: a broken one aborts, which both
 * libFuzzer and the replay driver report as a crash of that input. */
#ifndef KEPP_TESTS_FUZZ_H
#define KEPP_TESTS_FUZZ_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                   \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "fuzz invariant broken: %s:%d: %s\n", __FILE__,    \
				__LINE__, #cond);                                          \
			abort();                                                           \
		}                                                                          \
	} while (0)

/* Reads structured fields off the front of an input; past the end every
 * read yields zeros (or an empty span), so any input is a valid program. */
typedef struct fin {
	const uint8_t *p;
	size_t n;
} fin;

static inline uint8_t fin_u8(fin *f)
{
	if (!f->n)
		return 0;
	f->n--;
	return *f->p++;
}

static inline uint16_t fin_u16(fin *f)
{
	uint16_t lo = fin_u8(f);
	return (uint16_t)(lo | (uint16_t)fin_u8(f) << 8);
}

/* Up to |want| bytes; *got says how many there were. */
static inline const uint8_t *fin_take(fin *f, size_t want, size_t *got)
{
	const uint8_t *p = f->p;
	*got = want < f->n ? want : f->n;
	f->p += *got;
	f->n -= *got;
	return p;
}

/* The input as a NUL-terminated malloc'd string (embedded NULs stay). */
static inline char *fuzz_strdup(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);
	if (!s)
		abort();
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}
#endif
