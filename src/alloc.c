#include "arctic/alloc.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MEM_MAX_ARENAS 256

static unsigned arenas[MEM_MAX_ARENAS];
static unsigned narenas;

#ifdef ARCTIC_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>

int mem_have_jemalloc(void)
{
	return 1;
}

int mem_init(unsigned n)
{
	if (n == 0 || n > MEM_MAX_ARENAS)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		unsigned a;
		size_t sz = sizeof(a);
		int rc = mallctl("arenas.create", &a, &sz, NULL, 0);
		if (rc)
			return -rc;
		arenas[i] = a;
	}
	narenas = n;
	return 0;
}

unsigned mem_arena(unsigned i)
{
	return i < narenas ? arenas[i] : 0;
}

int mem_thread_bind(unsigned arena)
{
	int rc = mallctl("thread.arena", NULL, NULL, &arena, sizeof(arena));
	return rc ? -rc : 0;
}

int mem_thread_arena(void)
{
	unsigned a;
	size_t sz = sizeof(a);
	if (mallctl("thread.arena", &a, &sz, NULL, 0))
		return -1;
	return (int)a;
}

void *mem_alloc(unsigned arena, size_t size, size_t align)
{
	/* No tcache: these are large, long-lived start-up allocations. */
	return mallocx(size, MALLOCX_ARENA(arena) | MALLOCX_ALIGN(align) |
				     MALLOCX_ZERO | MALLOCX_TCACHE_NONE);
}

void mem_free(void *p)
{
	if (p)
		dallocx(p, MALLOCX_TCACHE_NONE);
}

int mem_arena_of(const void *p)
{
	unsigned a;
	size_t sz = sizeof(a);
	if (mallctl("arenas.lookup", &a, &sz, &p, sizeof(p)))
		return -1;
	return (int)a;
}

#else /* libc fallback */

int mem_have_jemalloc(void)
{
	return 0;
}

int mem_init(unsigned n)
{
	if (n == 0 || n > MEM_MAX_ARENAS)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		arenas[i] = i;
	narenas = n;
	return 0;
}

unsigned mem_arena(unsigned i)
{
	return i < narenas ? arenas[i] : 0;
}

int mem_thread_bind(unsigned arena)
{
	(void)arena;
	return 0;
}

int mem_thread_arena(void)
{
	return -1;
}

void *mem_alloc(unsigned arena, size_t size, size_t align)
{
	(void)arena;
	if (align < sizeof(void *))
		align = sizeof(void *);
	void *p = NULL;
	if (posix_memalign(&p, align, size))
		return NULL;
	memset(p, 0, size);
	return p;
}

void mem_free(void *p)
{
	free(p);
}

int mem_arena_of(const void *p)
{
	(void)p;
	return -1;
}
#endif
