/* Fast per-thread pseudo-random numbers (xoshiro256**), seeded from the
 * kernel once per thread. Not for secrets. No locks, no syscalls after the
 * first call on a thread. */
#ifndef KEPP_UTIL_RAND_H
#define KEPP_UTIL_RAND_H
#include <stdint.h>

uint64_t rand_u64(void);
/* Uniform in [0, n); n > 0. */
uint64_t rand_below(uint64_t n);
/* Uniform in [0, 1). */
double rand_double(void);
/* Reseeds this thread's generator (tests that need repeatable draws). */
void rand_seed(uint64_t seed);
/* Writes a random UUIDv4 as 36 characters plus NUL into |out|. */
void rand_uuid4(char out[37]);
#endif
