/* alloc: NUMA-local memory. One jemalloc arena per NUMA node in the plan;
 * each worker binds its thread to its node's arena and allocates its
 * connection slab and relay buffers from it at start, after pinning, so
 * first touch lands on the worker's node. Nothing on the data path
 * allocates. Builds without jemalloc (sanitizers) fall back to the libc
 * allocator with the same interface. */
#ifndef ARCTIC_ALLOC_H
#define ARCTIC_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Creates n arenas (one per NUMA node in use). 0 or -errno. */
int mem_init(unsigned n);

/* jemalloc arena index of plan node slot i (< n given to mem_init). */
unsigned mem_arena(unsigned i);

/* Binds the calling thread's small allocations to arena. 0 or -errno. */
int mem_thread_bind(unsigned arena);

/* The arena the calling thread allocates from, or -1 (no jemalloc). */
int mem_thread_arena(void);

/* Zeroed, aligned memory from arena; NULL on failure. */
void *mem_alloc(unsigned arena, size_t size, size_t align);
void mem_free(void *p);

/* Which arena owns p (jemalloc "arenas.lookup"), or -1. */
int mem_arena_of(const void *p);

/* 1 when built with jemalloc. */
int mem_have_jemalloc(void);

#ifdef __cplusplus
}
#endif

#endif
