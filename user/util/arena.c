#include "util/arena.h"

#include <stdlib.h>
#include <string.h>

struct arena_block {
	arena_block *next;
	size_t cap, used;
	int oversized; /* a one-off block for a big allocation: freed on reset */
	_Alignas(16) unsigned char data[];
};

void arena_init(arena *a, size_t block_size)
{
	a->head = a->first = NULL;
	a->block_size = block_size ? block_size : 16384;
}

static arena_block *new_block(size_t cap, int oversized)
{
	arena_block *b = malloc(sizeof(*b) + cap);
	if (!b)
		return NULL;
	b->next = NULL;
	b->cap = cap;
	b->used = 0;
	b->oversized = oversized;
	return b;
}

void *arena_alloc(arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (n == 0)
		n = 16;
	if (a->head && a->head->cap - a->head->used >= n) {
		void *p = a->head->data + a->head->used;
		a->head->used += n;
		return p;
	}
	if (n > a->block_size / 2) {
		/* Big allocations get their own block, linked after head so the
		 * head keeps filling. */
		arena_block *b = new_block(n, 1);
		if (!b)
			return NULL;
		b->used = n;
		if (a->head) {
			b->next = a->head->next;
			a->head->next = b;
		} else {
			a->head = a->first = b;
		}
		return b->data;
	}
	/* Move to the next reusable ordinary block, or add one. */
	arena_block *nb = a->head ? a->head->next : a->first;
	while (nb && nb->oversized)
		nb = nb->next;
	if (!nb) {
		nb = new_block(a->block_size, 0);
		if (!nb)
			return NULL;
		if (a->head) {
			nb->next = a->head->next;
			a->head->next = nb;
		} else {
			a->first = nb;
		}
	}
	nb->used = 0;
	a->head = nb;
	void *p = nb->data;
	nb->used = n;
	return p;
}

void *arena_calloc(arena *a, size_t n)
{
	void *p = arena_alloc(a, n);
	if (p)
		memset(p, 0, n);
	return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);
	if (!p)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *arena_strdup(arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

void arena_reset(arena *a)
{
	arena_block **pp = &a->first;
	while (*pp) {
		arena_block *b = *pp;
		if (b->oversized) {
			*pp = b->next;
			free(b);
			continue;
		}
		b->used = 0;
		pp = &b->next;
	}
	a->head = a->first;
}

void arena_free(arena *a)
{
	arena_block *b = a->first;
	while (b) {
		arena_block *n = b->next;
		free(b);
		b = n;
	}
	a->head = a->first = NULL;
}
