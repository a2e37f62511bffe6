/* relay: one proxied connection. A struct conn holds both sockets and the
 * two directions (dir[C2U] reads the client and writes the upstream,
 * dir[U2C] the reverse); one set of functions serves both directions.
 *
 * Every SQE carries {op, slot, generation} in user_data; a slot is freed
 * only after every operation it issued has completed (conn.inflight), and
 * the generation guards against stale completions all the same. */
#ifndef ARCTIC_RELAY_H
#define ARCTIC_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct worker;
struct io_uring_cqe;

enum { C2U = 0, U2C = 1 };
enum { FD_CLIENT = 0, FD_UPSTREAM = 1 };

#define RELAY_MAX_INFLIGHT 8
#define RELAY_NONE UINT32_MAX

/* Operation codes (8 bits). Per-direction ops have the direction in bit 0. */
enum relay_op {
	OP_NONE = 0,
	/* worker-level */
	OP_ACCEPT = 0x01,
	OP_WAKE = 0x02,
	OP_TICK = 0x03,
	OP_RESUME = 0x04,
	OP_IGNORE = 0x05, /* cancel requests, link timeouts: nothing to do */
	/* connection-level */
	OP_CONNECT = 0x10,
	OP_RECV = 0x20,      /* | dir */
	OP_SEND = 0x22,      /* | dir */
	OP_POLL_IN = 0x26,   /* | dir: splice mode, source readable */
	OP_POLL_OUT = 0x28,  /* | dir: splice mode, destination writable */
};

static inline uint64_t relay_ud(unsigned op, uint32_t slot, uint32_t gen)
{
	return ((uint64_t)op << 56) | ((uint64_t)(gen & 0xffffff) << 32) |
	       slot;
}

static inline unsigned relay_ud_op(uint64_t ud)
{
	return (unsigned)(ud >> 56);
}

static inline uint32_t relay_ud_gen(uint64_t ud)
{
	return (uint32_t)(ud >> 32) & 0xffffff;
}

static inline uint32_t relay_ud_slot(uint64_t ud)
{
	return (uint32_t)ud;
}

/* direction flags */
enum {
	DF_RECV = 1 << 0,     /* recv (or POLLIN) in flight */
	DF_SEND = 1 << 1,     /* send (or POLLOUT) in flight */
	DF_EOF = 1 << 2,      /* source said EOF */
	DF_SHUT = 1 << 3,     /* EOF forwarded to the destination: direction done */
	DF_RDHUP = 1 << 4,    /* splice: the source's FIN is queued behind its bytes */
	DF_WAIT_BUF = 1 << 5, /* parked on -ENOBUFS */
	DF_NONEMPTY = 1 << 6, /* last recv left data in the socket */
	DF_SPLICE = 1 << 7,   /* this direction moves bytes through a pipe */
	DF_TO_SPLICE = 1 << 8,/* auto mode: switch to a pipe once buffers drain */
	DF_TRIAL = 1 << 9,    /* auto mode: on a pipe while bytes move, not yet judged */
	DF_READY = 1 << 10,   /* splice: readiness reported, nothing read since */
	DF_HELD = 1 << 11,    /* buffers held since a pressure scan (see
				 * conn_evict_scan) */
	DF_EVICT = 1 << 12,   /* moving to a pipe: waits for its ops to end */
	DF_MOVED = 1 << 13,   /* on a pipe it was moved to: back to buffers
			       * once drained */
	DF_STREAM = 1 << 14,  /* auto mode: a stream (on its pipe, or between
			       * bursts without one: takes one at readiness) */
	DF_QUIET = 1 << 15,   /* a stream's pipe, idle since a quiet scan
			       * (see conn_quiet_scan) */
};

struct relay_dir {
	uint16_t flags;
	uint8_t q_head, q_count; /* buffer mode: received, not yet sent */
	uint8_t streak;          /* auto mode: full buffers in a row (buffers),
				  * small reads so far (trial pipe) */
	uint32_t send_off;       /* bytes of the head buffer already sent */
	union {
		struct {
			uint16_t q_bid[RELAY_MAX_INFLIGHT];
			uint32_t q_len[RELAY_MAX_INFLIGHT];
		} b;
		struct {
			int pipe_r, pipe_w;
			uint32_t bytes; /* bytes sitting in the pipe */
		} s;
	};
};

enum conn_state { CONN_FREE, CONN_CONNECTING, CONN_OPEN, CONN_CLOSING };

struct conn {
	int fd[2];
	uint32_t gen;
	uint16_t inflight;   /* operations issued and not yet completed */
	uint8_t state;
	uint8_t rst;         /* close with RST when released */
	uint32_t next;       /* free list */
	uint32_t idle_prev, idle_next;
	uint32_t last_active; /* worker clock, ms (idle timeout only) */
	uint32_t wait_prev, wait_next; /* -ENOBUFS FIFO */
	struct relay_dir dir[2];
};

/* Connection slab: a slot from the worker's preallocated array (free list,
 * then never-used slots), or NULL when all cap slots are in use. Freeing
 * bumps the slot's generation. No allocation either way. */
struct conn *conn_slot_alloc(struct worker *w);
void conn_slot_free(struct worker *w, struct conn *c);

/* Takes an admitted client fd: allocates a slot, connects the upstream.
 * On failure the client is closed (RST) and the error counted. */
void conn_start(struct worker *w, int client_fd);

/* Handles one connection-level completion. */
void conn_complete(struct worker *w, struct io_uring_cqe *cqe);

/* Re-arms a direction parked on -ENOBUFS (a buffer came back). */
void conn_unpark(struct worker *w, uint32_t waiter);

/* Buffer pressure scan, run on the tick while directions wait for a
 * buffer: moves a direction that has held relay buffers since the last
 * scan (a destination that reads slowly or not at all) into a pipe of its
 * own, so its buffers go back to the shared pool. */
void conn_evict_scan(struct worker *w);

/* Quiet stream scan, run on the tick while streams hold pipes (auto
 * mode, w->stream_pipes): a streaming direction whose pipe has stayed empty
 * with nothing moving since the last scan gives the pipe back (to the
 * pool, or closed) and takes one again at its next readiness, so a
 * connection that streamed once and went idle holds no pipe. */
void conn_quiet_scan(struct worker *w);

/* Idle timeout scan: closes connections idle for idle_timeout_s. */
void conn_idle_scan(struct worker *w);

/* Aborts (RST) every open connection; returns how many. */
uint32_t conn_abort_all(struct worker *w);

#ifdef __cplusplus
}
#endif

#endif
