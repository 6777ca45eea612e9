/* Bump allocator for per-stream and per-build scratch memory. Allocations are
 * freed all at once by arena_reset/arena_free. Blocks are kept across resets
 * so a stream's steady state allocates nothing. Not thread-safe. */
#ifndef KEPP_UTIL_ARENA_H
#define KEPP_UTIL_ARENA_H
#include <stddef.h>

typedef struct arena_block arena_block;
typedef struct arena {
	arena_block *head;  /* block being filled */
	arena_block *first; /* first block; blocks form a list kept for reuse */
	size_t block_size;  /* size of ordinary blocks */
} arena;

void arena_init(arena *a, size_t block_size);
/* 16-byte aligned; NULL only when malloc fails. */
void *arena_alloc(arena *a, size_t n);
void *arena_calloc(arena *a, size_t n);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_strdup(arena *a, const char *s);
/* Forgets every allocation but keeps the ordinary blocks for reuse. */
void arena_reset(arena *a);
void arena_free(arena *a);
#endif
