/* util: logging, errno names, invariants. Shared by every module. */
#ifndef ARCTIC_UTIL_H
#define ARCTIC_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ARC_CACHELINE 64
#define ARC_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ARC_LIKELY(x) __builtin_expect(!!(x), 1)
#define ARC_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Invariant checks stay on in every build: a broken invariant in a proxy
 * means corrupted streams, so stopping loudly is the safe outcome. */
#define ARC_BUG_ON(cond)                                                     \
	do {                                                                 \
		if (ARC_UNLIKELY(cond))                                      \
			arc_bug(__FILE__, __LINE__, #cond);                  \
	} while (0)

void arc_bug(const char *file, int line, const char *cond)
	__attribute__((noreturn));

/* Symbolic name of an errno value ("ECONNREFUSED"); never NULL. Accepts
 * both positive errno and negative -errno as returned by io_uring. */
const char *arc_errname(int err);

/* One line on stderr prefixed with "arctic-proxy: ". Thread-safe: the line
 * is formatted first and written with a single write(2). */
void arc_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Lines arc_log() could not write whole (stderr full or failing): shown
 * at exit, as the stats lines dropped are. */
unsigned long long arc_log_dropped(void);

/* A descriptor 0, 1 or 2 closed at exec gets /dev/null, before anything
 * else is opened: else the first socket or pipe would take its number, and
 * stats or log lines written "to stdout" would land in relayed data. */
void arc_std_fds(void);

/* While serving, stdout and stderr may be a pipe, a terminal or a socket
 * that stops draining (a paused pager, Ctrl-S, a stalled log collector):
 * a write to them must never block a worker or the thread that takes the
 * signals. arc_out_nonblocking() gives a pipe or a terminal on fd 1 and 2
 * an open file description of the proxy's own, opened O_NONBLOCK (the one
 * shared with the parent keeps its flags); one the proxy may not reopen
 * (another user's pipe or terminal) is made O_NONBLOCK itself, until
 * arc_out_restore(). A socket is written with MSG_DONTWAIT; a regular file
 * is left as it is. */
void arc_out_nonblocking(void);
void arc_out_restore(void);

/* How long arc_out_write() may wait for room (poll) before it gives up on
 * the rest: 1000 ms at start-up and shutdown, 0 while workers serve (set
 * by the caller). */
void arc_out_patience(unsigned ms);

/* write(2) to fd 1 or 2 as arc_out_nonblocking() arranged, within the
 * patience: the bytes written, or -1 with errno EAGAIN when none could
 * be (or another errno). */
ssize_t arc_out_write(int fd, const void *buf, size_t len);

/* Monotonic clock in nanoseconds / milliseconds. */
uint64_t arc_now_ns(void);

#ifdef __cplusplus
}
#endif

#endif
