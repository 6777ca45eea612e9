#include "util/rand.h"

#include <stdio.h>
#include <sys/random.h>
#include <time.h>

static __thread uint64_t st[4];
static __thread int seeded;

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void rand_seed(uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		st[i] = splitmix(&seed);
	seeded = 1;
}

uint64_t rand_u64(void)
{
	if (__builtin_expect(!seeded, 0)) {
		uint64_t s;
		if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s)) {
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&ts;
		}
		rand_seed(s);
	}
	uint64_t r = rotl(st[1] * 5, 7) * 9;
	uint64_t t = st[1] << 17;
	st[2] ^= st[0];
	st[3] ^= st[1];
	st[1] ^= st[2];
	st[0] ^= st[3];
	st[2] ^= t;
	st[3] = rotl(st[3], 45);
	return r;
}

uint64_t rand_below(uint64_t n)
{
	/* Lemire's nearly divisionless method, with rejection for exact uniformity. */
	unsigned __int128 m = (unsigned __int128)rand_u64() * n;
	uint64_t l = (uint64_t)m;
	if (l < n) {
		uint64_t t = -n % n;
		while (l < t) {
			m = (unsigned __int128)rand_u64() * n;
			l = (uint64_t)m;
		}
	}
	return (uint64_t)(m >> 64);
}

double rand_double(void) { return (double)(rand_u64() >> 11) * 0x1.0p-53; }

void rand_uuid4(char out[37])
{
	uint64_t a = rand_u64(), b = rand_u64();
	a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
	b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
	snprintf(out, 37, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32),
		 (unsigned)((a >> 16) & 0xffff), (unsigned)(a & 0xffff), (unsigned)(b >> 48),
		 (unsigned long long)(b & 0xffffffffffffULL));
}
