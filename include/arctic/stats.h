/* stats: per-worker counters and the status line.
 *
 * Each worker owns one struct worker_stats, alone on its cache lines, and
 * is its only writer (plain relaxed load+store, no lock prefix). The main
 * thread sums them every interval; a reader may see a counter one update
 * late, never torn. */
#ifndef ARCTIC_STATS_H
#define ARCTIC_STATS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#include <atomic>
#define ARC_ATOMIC(t) std::atomic<t>
#else
#include <stdatomic.h>
#define ARC_ATOMIC(t) _Atomic t
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum stats_counter {
	ST_ACCEPTED,      /* connections accepted and admitted */
	ST_CLOSED,        /* admitted connections finished (any way) */
	ST_REJECTED,      /* refused over max_connections */
	ST_ERR_ACCEPT,    /* accept failures (EMFILE, ENFILE, ENOMEM, ...) */
	ST_ERR_CONNECT,   /* upstream connect failed or timed out */
	ST_ERR_RESET,     /* a peer reset or a send/recv error mid-stream */
	ST_ERR_OTHER,     /* anything else (socket(), ring full, ...) */
	ST_IDLE_CLOSED,   /* closed by ARCTIC_IDLE_TIMEOUT_S */
	ST_DRAIN_ABORTED, /* aborted at the end of the shutdown drain */
	ST_MOVED_TO_PIPE, /* buffered directions moved to a pipe under buffer
			   * pressure (relay.c, conn_evict_scan) */
	ST_BYTES_C2U,     /* bytes delivered client -> upstream */
	ST_BYTES_U2C,     /* bytes delivered upstream -> client */
	ST_LOOPS,         /* event loop iterations */
	ST_BUSY_SPINS,    /* busy-poll iterations that found nothing */
	ST_IDLE_FALLBACKS,/* busy loop fell back to waiting */
	ST_COUNT
};

extern const char *const stats_names[ST_COUNT];

struct worker_stats {
	ARC_ATOMIC(uint64_t) c[ST_COUNT];
} __attribute__((aligned(64)));

#ifndef __cplusplus
_Static_assert(sizeof(struct worker_stats) % 64 == 0,
	       "worker_stats must fill whole cache lines");
#endif

/* Single-writer increment: no atomic read-modify-write needed. */
static inline void stats_add(struct worker_stats *s, enum stats_counter c,
			     uint64_t n)
{
#ifdef __cplusplus
	s->c[c].store(s->c[c].load(std::memory_order_relaxed) + n,
		      std::memory_order_relaxed);
#else
	atomic_store_explicit(&s->c[c],
			      atomic_load_explicit(&s->c[c],
						   memory_order_relaxed) + n,
			      memory_order_relaxed);
#endif
}

#ifndef __cplusplus
/* The owning worker's own read of one counter. */
static inline uint64_t stats_get(const struct worker_stats *s,
				 enum stats_counter c)
{
	return atomic_load_explicit(&s->c[c], memory_order_relaxed);
}
#endif

/* A plain copy of the counters. */
struct stats_snap {
	uint64_t c[ST_COUNT];
};

void stats_read(const struct worker_stats *s, struct stats_snap *out);
void stats_sum(struct stats_snap *acc, const struct stats_snap *s);

/* The counters are read one by one while workers run: a connection that
 * opens and closes between the two reads can make closed pass accepted,
 * so a negative difference is 0, not 2^64 - 1. */
static inline uint64_t stats_active(const struct stats_snap *s)
{
	uint64_t a = s->c[ST_ACCEPTED], c = s->c[ST_CLOSED];
	return a > c ? a - c : 0;
}

static inline uint64_t stats_errors(const struct stats_snap *s)
{
	return s->c[ST_ERR_ACCEPT] + s->c[ST_ERR_CONNECT] +
	       s->c[ST_ERR_RESET] + s->c[ST_ERR_OTHER];
}

/* The original's line: "⚡ N active | N err | N rej | X.XX Gbps | Y.YY GB
 * total\n". Gbps over interval_ns from prev to cur, both directions
 * summed; GB = 1e9 bytes. Returns the length written (always < len). */
size_t stats_format_text(char *buf, size_t len, const struct stats_snap *cur,
			 const struct stats_snap *prev, uint64_t interval_ns);

/* Where a worker runs and allocates (fixed after start). */
struct stats_winfo {
	int pu;         /* planned CPU */
	int node;       /* NUMA node */
	int arena;      /* jemalloc arena of the worker thread, -1 without */
	int slab_arena; /* jemalloc arena holding its connection slab */
};

/* Bytes stats_format_json() needs at most for nworkers workers, with
 * every counter at its largest (terminating NUL included). */
size_t stats_json_size(size_t nworkers);

/* One JSON object and a newline: totals plus one object per worker
 * (info may be NULL). */
size_t stats_format_json(char *buf, size_t len, uint64_t t_ms,
			 const struct stats_snap *total,
			 const struct stats_snap *prev_total,
			 const struct stats_snap *workers,
			 const struct stats_winfo *info, size_t nworkers,
			 uint64_t interval_ns);

#ifdef __cplusplus
}
#endif

#endif
