/* worker: one thread per planned CPU, with its own io_uring, its own
 * SO_REUSEPORT listener, its own connection slab and relay buffers. A
 * worker touches only its own state on the data path; the one shared
 * word is the global active-connection count used for max_connections. */
#ifndef ARCTIC_WORKER_H
#define ARCTIC_WORKER_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "arctic/stats.h"

#ifdef __cplusplus
extern "C" {
#endif

struct config;
struct conn;
struct topo_plan;

/* State shared by every worker and the main thread. */
struct shared {
	const struct config *cfg;
	const struct topo_plan *plan;
	ARC_ATOMIC(int64_t) active __attribute__((aligned(64)));
	/* start-up handshake */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned ready, failed;
	char error[512];
	ARC_ATOMIC(unsigned) finished;
	int sq_fd[64]; /* SQPOLL_SHARED: ring fd per node slot, -1 unset */
};

enum worker_state { W_RUNNING, W_DRAINING, W_DONE };

struct worker {
	struct io_uring ring;
	const struct config *cfg;
	struct shared *sh;
	struct worker_stats *stats;

	/* connection slab: slots [0, cap); free list through conn.next */
	struct conn *conns;
	uint32_t cap, hwm, free_head, nconns;

	/* relay buffers: one provided-buffer ring, group 0 */
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	uint32_t buf_size, buf_count;
	/* buffers in the ring: taken by a completion that carries one,
	 * returned by worker_buf_put() */
	uint32_t bufs_free;
	/* directions parked on -ENOBUFS, FIFO through conn.wait_next */
	uint32_t wait_head, wait_tail;
	/* auto mode: trial directions holding a pipe now (at most
	 * cfg->pipe_trial) */
	uint32_t pipe_trials;
	uint32_t moves; /* directions moved to a pipe, or on their way
			 * (DF_MOVED or DF_EVICT; <= cfg_moved_pipes) */
	/* auto mode: streaming directions holding a pipe now (DF_STREAM and
	 * DF_SPLICE; at most cfg_stream_pipes(), the tick runs
	 * conn_quiet_scan while any does) */
	uint32_t stream_pipes;
	/* empty pipes kept for reuse: pairs {read, write}, at most
	 * cfg->pipe_trial of them (saves pipe2() and two close() per pipe) */
	int *pipe_pool;
	uint32_t pipes_pooled;
	bool pipe_pool_used; /* taken from or given to since the last tick */
	const char *pipe_err; /* the call that failed in make_pipe() */
	/* CQEs of the current reap handled and not yet marked seen (see
	 * worker_sq_room) */
	unsigned cq_handled;

	/* idle timeout: LRU list through conn.idle_prev/next, head = oldest */
	uint32_t idle_head, idle_tail;
	uint32_t now_ms; /* coarse clock for idle timeouts, wraps in 49 days */

	int listen_fd;
	int wake_fd;
	uint64_t wake_val;
	/* set with the eventfd write: read only when the ring has failed
	 * (ring_stalled), the eventfd's completion then never coming */
	ARC_ATOMIC(bool) drain_req;
	bool accept_armed, accept_paused, tick_armed, sqpoll;
	enum worker_state state;
	uint64_t drain_deadline_ns;

	struct __kernel_timespec connect_ts, tick_ts, pause_ts;
	uint64_t last_log_ns[4];

	unsigned idx;
	unsigned arena;
	struct stats_winfo info;
	pthread_t thread;
} __attribute__((aligned(64)));

/* Starts worker thread idx; it pins itself, allocates, arms accept and
 * reports through sh. 0 or -errno. */
int worker_start(struct worker *w, struct shared *sh, unsigned idx,
		 int listen_fd);

/* Asks a worker to stop accepting and drain (signal-safe: one write). */
void worker_wake(struct worker *w);

void worker_join(struct worker *w);

/* Frees what a joined worker allocated (its stats included). */
void worker_free(struct worker *w);

/* Rate-limited log (at most one line per second per kind). */
void worker_log(struct worker *w, unsigned kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* io_uring helpers used by relay: an SQE, submitting to make room. */
struct io_uring_sqe *worker_sqe(struct worker *w);

/* Submits until the SQ has room for n entries (SQEs that must go in one
 * submission, such as a linked pair, take their room first). */
void worker_sq_room(struct worker *w, unsigned n);

/* Returns relay buffer bid to the ring; parked directions are woken after
 * the current batch of completions. */
void worker_buf_put(struct worker *w, uint16_t bid);

static inline uint8_t *worker_buf(struct worker *w, uint16_t bid)
{
	return w->bufs + (size_t)bid * w->buf_size;
}

#ifdef __cplusplus
}
#endif

#endif
