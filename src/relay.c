#define _GNU_SOURCE
#include "arctic/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "arctic/config.h"
#include "arctic/net.h"
#include "arctic/util.h"
#include "arctic/worker.h"

enum { LOG_CONNECT = 1, LOG_OTHER = 2 };

static inline uint32_t slot_of(const struct worker *w, const struct conn *c)
{
	return (uint32_t)(c - w->conns);
}

static inline uint64_t ud_of(const struct worker *w, const struct conn *c,
			     unsigned op)
{
	return relay_ud(op, slot_of(w, c), c->gen);
}

static void drop_pipe(struct worker *w, struct relay_dir *x);

/* ---- slab ---------------------------------------------------------- */

struct conn *conn_slot_alloc(struct worker *w)
{
	uint32_t i;
	if (w->free_head != RELAY_NONE) {
		i = w->free_head;
		w->free_head = w->conns[i].next;
	} else if (w->hwm < w->cap) {
		i = w->hwm++;
	} else {
		return NULL;
	}
	struct conn *c = &w->conns[i];
	uint32_t gen = c->gen;
	memset(c, 0, sizeof(*c));
	c->gen = gen;
	c->fd[0] = c->fd[1] = -1;
	c->idle_prev = c->idle_next = RELAY_NONE;
	c->wait_prev = c->wait_next = RELAY_NONE;
	return c;
}

void conn_slot_free(struct worker *w, struct conn *c)
{
	c->state = CONN_FREE;
	c->gen = (c->gen + 1) & 0xffffff;
	c->next = w->free_head;
	w->free_head = slot_of(w, c);
}

/* ---- idle LRU (only maintained when ARCTIC_IDLE_TIMEOUT_S is set) --- */

static void idle_unlink(struct worker *w, struct conn *c)
{
	uint32_t i = slot_of(w, c);
	if (c->idle_prev == RELAY_NONE && w->idle_head != i)
		return; /* not on the list */
	if (c->idle_prev != RELAY_NONE)
		w->conns[c->idle_prev].idle_next = c->idle_next;
	else
		w->idle_head = c->idle_next;
	if (c->idle_next != RELAY_NONE)
		w->conns[c->idle_next].idle_prev = c->idle_prev;
	else
		w->idle_tail = c->idle_prev;
	c->idle_prev = c->idle_next = RELAY_NONE;
}

static void idle_touch(struct worker *w, struct conn *c)
{
	if (!w->cfg->idle_timeout_s)
		return;
	c->last_active = w->now_ms;
	uint32_t i = slot_of(w, c);
	if (w->idle_tail == i)
		return;
	idle_unlink(w, c);
	c->idle_prev = w->idle_tail;
	if (w->idle_tail != RELAY_NONE)
		w->conns[w->idle_tail].idle_next = i;
	else
		w->idle_head = i;
	w->idle_tail = i;
}

/* ---- -ENOBUFS parking: FIFO of connections with a starved direction - */

static bool parked(const struct conn *c)
{
	return (c->dir[0].flags | c->dir[1].flags) & DF_WAIT_BUF;
}

static void park(struct worker *w, struct conn *c, int d)
{
	bool was = parked(c);
	c->dir[d].flags |= DF_WAIT_BUF;
	if (was)
		return;
	uint32_t i = slot_of(w, c);
	c->wait_next = RELAY_NONE;
	c->wait_prev = w->wait_tail;
	if (w->wait_tail != RELAY_NONE)
		w->conns[w->wait_tail].wait_next = i;
	else
		w->wait_head = i;
	w->wait_tail = i;
}

static void unpark_unlink(struct worker *w, struct conn *c)
{
	if (!parked(c))
		return;
	if (c->wait_prev != RELAY_NONE)
		w->conns[c->wait_prev].wait_next = c->wait_next;
	else
		w->wait_head = c->wait_next;
	if (c->wait_next != RELAY_NONE)
		w->conns[c->wait_next].wait_prev = c->wait_prev;
	else
		w->wait_tail = c->wait_prev;
	c->wait_prev = c->wait_next = RELAY_NONE;
	c->dir[0].flags &= (uint16_t)~DF_WAIT_BUF;
	c->dir[1].flags &= (uint16_t)~DF_WAIT_BUF;
}

/* ---- teardown ------------------------------------------------------ */

static void conn_release(struct worker *w, struct conn *c)
{
	ARC_BUG_ON(c->inflight != 0);
	for (int d = 0; d < 2; d++) {
		struct relay_dir *x = &c->dir[d];
		if (x->flags & DF_SPLICE) {
			drop_pipe(w, x);
		} else {
			if (x->flags & DF_EVICT)
				w->moves--;
			while (x->q_count) {
				worker_buf_put(w, x->b.q_bid[x->q_head]);
				x->q_head = (x->q_head + 1) % RELAY_MAX_INFLIGHT;
				x->q_count--;
			}
		}
	}
	for (int i = 0; i < 2; i++)
		if (c->fd[i] >= 0)
			close(c->fd[i]);
	w->nconns--;
	atomic_fetch_sub_explicit(&w->sh->active, 1, memory_order_relaxed);
	stats_add(w->stats, ST_CLOSED, 1);
	conn_slot_free(w, c);
}

/* Ends a connection. rst: abort with RST on both sockets (errors, resets,
 * drain timeout); otherwise a plain close (FIN after every byte). Pending
 * operations are cancelled and the slot is released when the last one
 * has completed, so no completion can land on a reused slot. */
static void conn_close(struct worker *w, struct conn *c, bool rst)
{
	if (c->state == CONN_CLOSING)
		return;
	c->state = CONN_CLOSING;
	idle_unlink(w, c);
	unpark_unlink(w, c);
	if (rst)
		for (int i = 0; i < 2; i++)
			if (c->fd[i] >= 0)
				net_set_rst(c->fd[i]);
	if (!c->inflight) {
		conn_release(w, c);
		return;
	}
	for (int i = 0; i < 2; i++) {
		if (c->fd[i] < 0)
			continue;
		struct io_uring_sqe *sqe = worker_sqe(w);
		/* ALL: every request on this fd (recv, send, poll, connect). */
		io_uring_prep_cancel_fd(sqe, c->fd[i], IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, relay_ud(OP_IGNORE, 0, 0));
	}
}

/* A receive, send, poll or splice failed: the connection ends with an RST
 * both ways. A peer's doing (a reset, a broken pipe, a keepalive timeout,
 * an unreachable host) counts as err_reset; anything else is trouble of
 * the proxy's own: err_other, and a log line naming the errno (at most
 * one a second). */
static void conn_fail(struct worker *w, struct conn *c, int res)
{
	switch (-res) {
	case ECONNRESET:
	case EPIPE:
	case ETIMEDOUT:
	case ECONNABORTED:
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case EHOSTDOWN:
	case ENETUNREACH:
	case ENETDOWN:
		stats_add(w->stats, ST_ERR_RESET, 1);
		break;
	default:
		stats_add(w->stats, ST_ERR_OTHER, 1);
		worker_log(w, LOG_OTHER, "relaying failed: %s (conn %u, worker %u)",
			   arc_errname(res), slot_of(w, c), w->idx);
	}
	conn_close(w, c, true);
}

/* ---- buffer mode ---------------------------------------------------- */

/* Forwards an EOF: shutdown(SHUT_WR) of the destination, with a direct
 * syscall: io_uring always hands IORING_OP_SHUTDOWN to an io-wq thread (a
 * context switch or two), while the syscall never blocks. When the other
 * direction has already ended, the connection is complete and close(2)
 * sends this FIN itself: both sockets were read to EOF, so the close cannot
 * turn into an RST, and a shutdown per connection is saved. */
static void forward_eof(struct worker *w, struct conn *c, int d)
{
	c->dir[d].flags |= DF_SHUT;
	if (c->dir[1 - d].flags & DF_SHUT) {
		conn_close(w, c, false);
		return;
	}
	/* ENOTCONN (the peer is gone) still ends this direction; the other
	 * direction reports its own error. */
	(void)shutdown(c->fd[1 - d], SHUT_WR);
}

static int make_pipe(struct worker *w, struct conn *c, int d);
static bool stream_pipe(struct worker *w, struct conn *c, int d);

/* Fewer than cfg_stream_pipes() streams of the worker are on pipes. */
static bool stream_room(const struct worker *w)
{
	return w->stream_pipes < cfg_stream_pipes(w->cfg);
}
static void pump_splice(struct worker *w, struct conn *c, int d);
static void evict_finish(struct worker *w, struct conn *c, int d);

static void pump_buf(struct worker *w, struct conn *c, int d)
{
	struct relay_dir *x = &c->dir[d];
	int from = c->fd[d], to = c->fd[1 - d];

	/* moving to a pipe (conn_evict_scan): nothing new until its
	 * operations have ended, then the move */
	if (x->flags & DF_EVICT) {
		if (!(x->flags & (DF_RECV | DF_SEND)))
			evict_finish(w, c, d);
		return;
	}

	/* auto mode: a direction that streams moves to a pipe once nothing
	 * of it is in flight, so no byte can overtake another */
	if ((x->flags & DF_TO_SPLICE) && !x->q_count &&
	    !(x->flags & (DF_RECV | DF_SEND | DF_EOF))) {
		x->flags &= (uint16_t)~DF_TO_SPLICE;
		if (stream_pipe(w, c, d)) {
			pump_splice(w, c, d);
			return;
		}
		x->streak = 0; /* no stream pipe left (or EMFILE): on buffers */
	}

	if (!(x->flags & DF_SEND) && x->q_count) {
		uint16_t bid = x->b.q_bid[x->q_head];
		struct io_uring_sqe *sqe = worker_sqe(w);
		/* MSG_NOSIGNAL: a peer gone away is an error code, not a
		 * SIGPIPE. */
		io_uring_prep_send(sqe, to, worker_buf(w, bid) + x->send_off,
				   x->b.q_len[x->q_head] - x->send_off,
				   MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, ud_of(w, c, OP_SEND | (unsigned)d));
		x->flags |= DF_SEND;
		c->inflight++;
	}
	if (!(x->flags & (DF_RECV | DF_EOF | DF_WAIT_BUF | DF_TO_SPLICE)) &&
	    x->q_count < w->cfg->inflight) {
		struct io_uring_sqe *sqe = worker_sqe(w);
		/* BUFFER_SELECT: the kernel picks a buffer from group 0 only
		 * when data arrives, so an idle connection holds none. */
		io_uring_prep_recv(sqe, from, NULL, w->buf_size, 0);
		/* POLL_FIRST unless the last recv left data in the socket:
		 * an immediate attempt could only fail with EAGAIN, and a
		 * recv that reaches for a buffer before its data is there
		 * would park on -ENOBUFS with nothing to relay. So a parked
		 * direction always has data, and a buffer given back goes
		 * to one that uses it (worker.c, wake_parked). */
		if (!(x->flags & DF_NONEMPTY))
			sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = 0;
		io_uring_sqe_set_data64(sqe, ud_of(w, c, OP_RECV | (unsigned)d));
		x->flags |= DF_RECV;
		c->inflight++;
	}
	if ((x->flags & DF_EOF) && !x->q_count &&
	    !(x->flags & (DF_SEND | DF_SHUT)))
		forward_eof(w, c, d);
}

static void on_recv(struct worker *w, struct conn *c, int d,
		    struct io_uring_cqe *cqe)
{
	struct relay_dir *x = &c->dir[d];
	int res = cqe->res;
	x->flags &= (uint16_t)~DF_RECV;
	if (res > 0) {
		ARC_BUG_ON(!(cqe->flags & IORING_CQE_F_BUFFER));
		ARC_BUG_ON(x->q_count >= RELAY_MAX_INFLIGHT);
		uint8_t tail = (x->q_head + x->q_count) % RELAY_MAX_INFLIGHT;
		x->b.q_bid[tail] = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		x->b.q_len[tail] = (uint32_t)res;
		x->q_count++;
		if (cqe->flags & IORING_CQE_F_SOCK_NONEMPTY)
			x->flags |= DF_NONEMPTY;
		else
			x->flags &= (uint16_t)~DF_NONEMPTY;
		if (w->cfg->io_mode == CFG_IO_AUTO) {
			/* streaming: big reads, or more data waiting behind this
			 * one; request/response traffic of small messages never
			 * builds a streak */
			if ((uint32_t)res < w->buf_size / 4 &&
			    !(cqe->flags & IORING_CQE_F_SOCK_NONEMPTY)) {
				x->streak = 0;
			} else {
				if (x->streak < UINT8_MAX)
					x->streak++;
				/* with no stream pipe left it streams on
				 * here: a switch attempt would only hold
				 * its recv until the queue drains */
				if (x->streak >= w->cfg->splice_after &&
				    stream_room(w))
					x->flags |= DF_TO_SPLICE;
			}
		}
		idle_touch(w, c);
		pump_buf(w, c, d);
		return;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER)
		worker_buf_put(w, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
	if (res == 0) {
		x->flags |= DF_EOF;
		pump_buf(w, c, d);
	} else if ((res == -ECANCELED || res == -EINTR || res == -ENOBUFS) &&
		   (x->flags & DF_EVICT)) {
		/* cancelled (or starved) on its way to a pipe */
		pump_buf(w, c, d);
	} else if (res == -ENOBUFS) {
		park(w, c, d);
	} else {
		conn_fail(w, c, res);
	}
}

static void on_send(struct worker *w, struct conn *c, int d, int res)
{
	struct relay_dir *x = &c->dir[d];
	x->flags &= (uint16_t)~DF_SEND;
	if ((res == -ECANCELED || res == -EINTR) && (x->flags & DF_EVICT)) {
		pump_buf(w, c, d); /* on its way to a pipe */
		return;
	}
	if (res <= 0) {
		conn_fail(w, c, res ? res : -EPIPE);
		return;
	}
	stats_add(w->stats, d == C2U ? ST_BYTES_C2U : ST_BYTES_U2C,
		  (uint64_t)res);
	x->send_off += (uint32_t)res;
	if (x->send_off >= x->b.q_len[x->q_head]) {
		uint16_t bid = x->b.q_bid[x->q_head];
		x->q_head = (x->q_head + 1) % RELAY_MAX_INFLIGHT;
		x->q_count--;
		x->send_off = 0;
		if (!x->q_count)
			x->flags &= (uint16_t)~DF_HELD;
		idle_touch(w, c);
		pump_buf(w, c, d);
		/* after the pump: this direction's recv is armed before
		 * the end of the batch wakes parked directions */
		worker_buf_put(w, bid);
		return;
	}
	idle_touch(w, c);
	pump_buf(w, c, d);
}

/* ---- splice mode ---------------------------------------------------- */

#define SPLICE_CHUNK (1u << 20)

static void arm_poll(struct worker *w, struct conn *c, int d, bool out)
{
	struct relay_dir *x = &c->dir[d];
	uint8_t flag = out ? DF_SEND : DF_RECV;
	if (x->flags & flag)
		return;
	struct io_uring_sqe *sqe = worker_sqe(w);
	/* POLLRDHUP: the result says whether the peer's FIN is already
	 * queued behind its bytes (see pump_splice) */
	io_uring_prep_poll_add(sqe, out ? c->fd[1 - d] : c->fd[d],
			       out ? POLLOUT : POLLIN | POLLRDHUP);
	io_uring_sqe_set_data64(
		sqe, ud_of(w, c, (out ? OP_POLL_OUT : OP_POLL_IN) | (unsigned)d));
	x->flags |= flag;
	c->inflight++;
}

/* Auto mode starts a direction on a pipe (a "trial"): TCP settles a
 * connection's receive window and segment size in its first milliseconds,
 * and a direction drained through a pipe from its first byte settles larger
 * than one that starts on buffers (~62 KiB segments instead of ~47 KiB on
 * loopback). A read of a quarter buffer or more ends the trial: the
 * direction streams and keeps its pipe while it streams (conn_quiet_scan
 * takes it back once it is quiet), if fewer than ARCTIC_STREAM_PIPES
 * streams of the worker are on pipes (else the burst finishes on the trial
 * pipe and the direction goes to buffers). TRIAL_SMALL_READS small reads end
 * it the other way: with the socket drained and the pipe empty, the
 * direction moves to buffers (request/response traffic costs less there:
 * one ring submission per message instead of a poll and two splice calls).
 * A trial direction holds a pipe only while its bytes move: readiness takes
 * one from the worker's pool, a drained socket with an empty pipe gives it
 * back, so an idle connection holds none. At most ARCTIC_PIPE_TRIAL trial
 * directions per worker hold one at once (w->pipe_trials); past that, or
 * with no pipe to be had, the trial ends on buffers. */
#define TRIAL_SMALL_READS 2

/* w->pipe_trials counts directions with both DF_TRIAL and DF_SPLICE, and
 * w->stream_pipes those with both DF_STREAM and DF_SPLICE; each changes
 * only where one of its two flags does: end_trial(), judge_trial(),
 * make_pipe() and drop_pipe(). */
static void end_trial(struct worker *w, struct relay_dir *x)
{
	x->flags &= (uint16_t)~DF_TRIAL;
	if (x->flags & DF_SPLICE)
		w->pipe_trials--;
	x->streak = 0;
}

/* Readiness on a trial direction without a pipe: take one, or end the
 * trial on buffers. */
static void trial_take_pipe(struct worker *w, struct conn *c, int d)
{
	if (w->pipe_trials < w->cfg->pipe_trial && make_pipe(w, c, d) == 0)
		return;
	end_trial(w, &c->dir[d]);
}

/* A trial direction between messages (socket drained, pipe empty, nothing
 * in flight): the pipe goes back to the pool until the next readiness. */
static void trial_pause(struct worker *w, struct conn *c, int d)
{
	struct relay_dir *x = &c->dir[d];
	ARC_BUG_ON(x->s.bytes || (x->flags & (DF_RECV | DF_SEND)));
	drop_pipe(w, x);
	arm_poll(w, c, d, false);
}

static void judge_trial(struct worker *w, struct relay_dir *x, size_t n)
{
	if (n >= w->buf_size / 4) {
		if (stream_room(w)) {
			end_trial(w, x); /* a stream, on the pipe it has */
			x->flags |= DF_STREAM;
			w->stream_pipes++;
		} else {
			/* no stream pipe left: this burst ends on the trial
			 * pipe, then the direction goes to buffers */
			x->streak = TRIAL_SMALL_READS;
		}
	}
	else if (x->streak < UINT8_MAX)
		x->streak++;
}

/* Trial over, small messages, or a moved direction (conn_evict_scan) that
 * has caught up: give the pipe back (empty, nothing in flight on this
 * direction) and continue on buffers; the socket was just drained, or
 * pump_splice is giving other connections a turn (the recv finds what is
 * left). */
static void leave_pipe(struct worker *w, struct conn *c, int d)
{
	struct relay_dir *x = &c->dir[d];
	ARC_BUG_ON(x->s.bytes || (x->flags & (DF_RECV | DF_SEND)));
	if (x->flags & DF_TRIAL)
		end_trial(w, x);
	x->streak = 0;
	drop_pipe(w, x);
	x->flags &= (uint16_t)~DF_NONEMPTY;
	x->q_head = x->q_count = 0;
	x->send_off = 0;
	pump_buf(w, c, d);
}

/* pump_splice has nothing to move (source drained, or its fairness exit)
 * and the pipe is empty: a trial direction gives its pipe back, on to
 * buffers after small messages or to the pool until its next readiness;
 * a moved one that has caught up returns to buffers. true if it did (the
 * direction is re-armed), false if it keeps its pipe. */
static bool let_pipe_go(struct worker *w, struct conn *c, int d)
{
	struct relay_dir *x = &c->dir[d];
	if (x->s.bytes || (x->flags & (DF_RECV | DF_SEND)))
		return false;
	if (x->flags & DF_TRIAL) {
		if (x->streak >= TRIAL_SMALL_READS)
			leave_pipe(w, c, d);
		else
			trial_pause(w, c, d);
		return true;
	}
	if (x->flags & DF_MOVED) {
		leave_pipe(w, c, d);
		return true;
	}
	return false;
}

/* splice(2) stops at a TCP urgent mark (MSG_OOB): it fails with EAGAIN
 * while poll keeps reporting POLLIN. With SO_OOBINLINE (net.c) the urgent
 * byte is ordinary data to recv(2): it is copied into the pipe, behind the
 * bytes before it (the pipe is empty here), and splicing goes on past the
 * mark. 1 if the byte moved, 0 if the source is not at a mark, -errno. */
static int pass_urgent(struct relay_dir *x, int from)
{
	int at = 0;
	if (ioctl(from, SIOCATMARK, &at) == -1)
		return -errno;
	if (!at)
		return 0;
	char b;
	ssize_t n = recv(from, &b, 1, MSG_DONTWAIT);
	if (n == -1)
		return errno == EAGAIN ? 0 : -errno;
	if (n == 0)
		return 0; /* EOF: the next splice says so */
	if (write(x->s.pipe_w, &b, 1) != 1)
		return -errno; /* not with an empty pipe; never drop it */
	x->s.bytes++;
	return 1;
}

/* Moves bytes source -> pipe -> destination with non-blocking splice(2)
 * calls made inline: io_uring's own SPLICE op on sockets is handed to
 * io-wq threads (two context switches per call), while readiness from a
 * ring poll plus an inline splice costs one syscall and no thread hop.
 * The pipe (ARCTIC_PIPE_SIZE) bounds the bytes in flight per direction.
 * When readiness said the source's FIN is queued (DF_RDHUP), the source is
 * read to its EOF before the bytes go on, the last of them are sent with
 * SPLICE_F_MORE, and the FIN that forward_eof() sends right after rides on
 * their segment: a response and its close reach the client as one segment,
 * ACKed once (the same number of splice calls: the read that finds the
 * EOF comes before the send instead of after it). */
static void pump_splice(struct worker *w, struct conn *c, int d)
{
	struct relay_dir *x = &c->dir[d];
	int from = c->fd[d], to = c->fd[1 - d];

	x->flags &= (uint16_t)~DF_QUIET;
	for (int round = 0; round < 16; round++) {
		if (x->s.bytes && (x->flags & (DF_RDHUP | DF_EOF)) != DF_RDHUP) {
			unsigned fl = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
			if (x->flags & DF_EOF)
				fl |= SPLICE_F_MORE;
			ssize_t m = splice(x->s.pipe_r, NULL, to, NULL,
					   x->s.bytes, fl);
			if (m > 0) {
				x->s.bytes -= (uint32_t)m;
				stats_add(w->stats,
					  d == C2U ? ST_BYTES_C2U : ST_BYTES_U2C,
					  (uint64_t)m);
				idle_touch(w, c);
				continue;
			}
			if (m == -1 && errno == EINTR)
				continue;
			if (m == -1 && errno == EAGAIN) {
				arm_poll(w, c, d, true);
				return;
			}
			conn_fail(w, c, m == -1 ? -errno : -EPIPE);
			return;
		}
		if (x->flags & DF_EOF) {
			if (x->flags & DF_SHUT)
				return;
			forward_eof(w, c, d);
			/* the direction is over: its empty pipe goes back */
			if (c->state == CONN_OPEN) {
				drop_pipe(w, x);
				x->flags &= (uint16_t)~(DF_TRIAL | DF_STREAM);
			}
			return;
		}
		ssize_t n = splice(from, NULL, x->s.pipe_w, NULL, SPLICE_CHUNK,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n >= 0)
			x->flags &= (uint16_t)~DF_READY;
		if (n > 0) {
			x->s.bytes += (uint32_t)n;
			if (x->flags & DF_TRIAL)
				judge_trial(w, x, (size_t)n);
			idle_touch(w, c);
			continue;
		}
		if (n == 0) {
			x->flags |= DF_EOF;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (x->flags & DF_RDHUP) {
			/* a full pipe, or an error (RST) behind the bytes:
			 * send what the pipe holds first */
			x->flags &= (uint16_t)~DF_RDHUP;
			if (x->s.bytes)
				continue;
		}
		if (errno == EAGAIN && (x->flags & DF_READY)) {
			/* readable, yet nothing to splice: an urgent mark? */
			x->flags &= (uint16_t)~DF_READY;
			int r = pass_urgent(x, from);
			if (r > 0)
				continue;
			if (r < 0) {
				conn_fail(w, c, r);
				return;
			}
			errno = EAGAIN;
		}
		if (errno == EAGAIN) {
			if (!let_pipe_go(w, c, d))
				arm_poll(w, c, d, false);
			return;
		}
		conn_fail(w, c, -errno);
		return;
	}
	/* fairness: give other connections a turn, resume on readiness; a
	 * direction that has just emptied its pipe lets it go here as well (it
	 * would otherwise keep it until its source speaks again) */
	if (x->s.bytes || !let_pipe_go(w, c, d))
		arm_poll(w, c, d, x->s.bytes != 0);
}

/* Gives direction d a pipe; its capacity (ARCTIC_PIPE_SIZE) bounds the
 * bytes in flight. 0 or -errno. */
static int make_pipe(struct worker *w, struct conn *c, int d)
{
	int p[2];
	if (w->pipes_pooled) {
		w->pipe_pool_used = true;
		w->pipes_pooled--;
		p[0] = w->pipe_pool[2 * w->pipes_pooled];
		p[1] = w->pipe_pool[2 * w->pipes_pooled + 1];
	} else {
		if (pipe2(p, O_NONBLOCK | O_CLOEXEC) == -1) {
			w->pipe_err = "pipe2()";
			return -errno;
		}
		if (w->cfg->pipe_size != 65536 &&
		    fcntl(p[1], F_SETPIPE_SZ, (int)w->cfg->pipe_size) == -1) {
			/* EPERM: past fs.pipe-max-size, or the user's pipes
			 * past fs.pipe-user-pages-soft (without CAP_SYS_RESOURCE) */
			int e = -errno;
			w->pipe_err = "fcntl(F_SETPIPE_SZ, ARCTIC_PIPE_SIZE)";
			close(p[0]);
			close(p[1]);
			return e;
		}
	}
	struct relay_dir *x = &c->dir[d];
	x->s.pipe_r = p[0];
	x->s.pipe_w = p[1];
	x->s.bytes = 0;
	x->flags |= DF_SPLICE;
	if (x->flags & DF_TRIAL)
		w->pipe_trials++;
	if (x->flags & DF_STREAM)
		w->stream_pipes++;
	return 0;
}

/* Direction d streams (DF_STREAM): a pipe, if the worker has fewer than
 * cfg_stream_pipes() streams on pipes; false (DF_STREAM cleared, the
 * direction streams on buffers) if not, or with no descriptor. */
static bool stream_pipe(struct worker *w, struct conn *c, int d)
{
	struct relay_dir *x = &c->dir[d];
	x->flags |= DF_STREAM;
	if (stream_room(w) && make_pipe(w, c, d) == 0)
		return true;
	x->flags &= (uint16_t)~DF_STREAM;
	return false;
}

/* Gives a direction's pipe back: to the worker's pool when it is empty and
 * the pool has room, closed otherwise (bytes left in it are dropped with
 * the connection). */
static void drop_pipe(struct worker *w, struct relay_dir *x)
{
	if (!x->s.bytes && w->pipes_pooled < cfg_pipe_pool(w->cfg)) {
		w->pipe_pool[2 * w->pipes_pooled] = x->s.pipe_r;
		w->pipe_pool[2 * w->pipes_pooled + 1] = x->s.pipe_w;
		w->pipes_pooled++;
		w->pipe_pool_used = true;
	} else {
		close(x->s.pipe_r);
		close(x->s.pipe_w);
	}
	if (x->flags & DF_TRIAL)
		w->pipe_trials--;
	if (x->flags & DF_STREAM)
		w->stream_pipes--;
	if (x->flags & DF_MOVED)
		w->moves--;
	x->flags &= (uint16_t)~(DF_SPLICE | DF_MOVED | DF_QUIET);
}

/* ---- buffer pressure: a stalled direction moves to a pipe ----------- */

/* The relay buffers are one pool per worker. A direction whose destination
 * reads slowly or not at all keeps up to ARCTIC_INFLIGHT of them behind a
 * send that does not complete, and enough such directions would leave the
 * worker's other buffered directions waiting for as long as those readers
 * stall. So while directions wait (the tick runs then), a direction that
 * has held buffers from one scan to the next, without its queue running
 * empty in between, is moved to a pipe of its own: its send and recv are
 * cancelled, the bytes it holds are copied into an empty pipe, its buffers
 * go back to the pool, and it goes on as a spliced direction (the pipe
 * bounds its bytes in flight as the buffers did). Once it has caught up
 * (pipe empty, source drained) it gives the pipe back and returns to
 * buffers (leave_pipe), so a moved direction holds a pipe only while it
 * lags. Only when the pipe can take every byte a direction may hold
 * (ARCTIC_INFLIGHT * ARCTIC_BUF_SIZE <= ARCTIC_PIPE_SIZE, true at the
 * defaults), and for at most cfg_moved_pipes() directions of a worker at
 * once: the descriptor budget (main.c) counts their pipes. */

/* Takes direction d off the -ENOBUFS wait list (the connection stays on it
 * while its other direction waits). */
static void unpark_dir(struct worker *w, struct conn *c, int d)
{
	if (!(c->dir[d].flags & DF_WAIT_BUF))
		return;
	if (c->dir[1 - d].flags & DF_WAIT_BUF)
		c->dir[d].flags &= (uint16_t)~DF_WAIT_BUF;
	else
		unpark_unlink(w, c);
}

static void cancel_op(struct worker *w, struct conn *c, unsigned op)
{
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_cancel64(sqe, ud_of(w, c, op), 0);
	io_uring_sqe_set_data64(sqe, relay_ud(OP_IGNORE, 0, 0));
}

static void evict_start(struct worker *w, struct conn *c, int d)
{
	struct relay_dir *x = &c->dir[d];
	x->flags |= DF_EVICT;
	w->moves++;
	unpark_dir(w, c, d);
	/* a send waiting for room has sent nothing yet: cancelled, it
	 * completes with -ECANCELED (-EINTR if an io-wq thread was running
	 * it; a send cut short after some bytes returns their count); one
	 * that got through meanwhile completes as usual, and the queue says
	 * what is left */
	if (x->flags & DF_SEND)
		cancel_op(w, c, OP_SEND | (unsigned)d);
	if (x->flags & DF_RECV)
		cancel_op(w, c, OP_RECV | (unsigned)d);
	if (!(x->flags & (DF_RECV | DF_SEND)))
		evict_finish(w, c, d);
}

/* A pipe for direction d with room for total bytes, or false (no pipe:
 * EMFILE; or a smaller one than asked for: a user over
 * fs.pipe-user-pages-soft gets a single page, and it is closed, not
 * pooled, so the next try does not take it again). */
static bool evict_pipe(struct worker *w, struct conn *c, int d, size_t total)
{
	struct relay_dir *x = &c->dir[d];
	if (make_pipe(w, c, d))
		return false;
	int cap = fcntl(x->s.pipe_w, F_GETPIPE_SZ);
	if (cap >= 0 && (size_t)cap >= total)
		return true;
	close(x->s.pipe_r);
	close(x->s.pipe_w);
	x->flags &= (uint16_t)~DF_SPLICE;
	return false;
}

/* Nothing of direction d in flight: its queued bytes go into a pipe. */
static void evict_finish(struct worker *w, struct conn *c, int d)
{
	struct relay_dir *x = &c->dir[d];
	uint16_t bid[RELAY_MAX_INFLIGHT];
	uint32_t len[RELAY_MAX_INFLIGHT];
	unsigned n = x->q_count;
	uint32_t off = x->send_off;
	size_t total = 0;
	for (unsigned i = 0; i < n; i++) {
		unsigned k = (x->q_head + i) % RELAY_MAX_INFLIGHT;
		bid[i] = x->b.q_bid[k];
		len[i] = x->b.q_len[k];
		total += len[i];
	}
	total -= off;
	x->flags &= (uint16_t)~(DF_EVICT | DF_HELD);
	if (!n) { /* its last send got through meanwhile */
		w->moves--;
		pump_buf(w, c, d);
		return;
	}
	if (!evict_pipe(w, c, d, total)) {
		w->moves--;
		/* x->s overlaid the queue: restore it, stay on buffers, and
		 * let the next scan try again */
		for (unsigned i = 0; i < n; i++) {
			x->b.q_bid[i] = bid[i];
			x->b.q_len[i] = len[i];
		}
		x->q_head = 0;
		x->flags |= DF_HELD;
		pump_buf(w, c, d);
		return;
	}
	/* x->s now overlays the queue: the bytes go by copy */
	x->q_head = x->q_count = 0;
	x->send_off = 0;
	x->flags &= (uint16_t)~(DF_NONEMPTY | DF_TO_SPLICE);
	x->flags |= DF_MOVED;
	/* one writev: the pipe is empty, so its pages fill densely and
	 * total <= capacity is enough (a write(2) per buffer takes a
	 * page slot of its own for each partial page) */
	struct iovec iov[RELAY_MAX_INFLIGHT];
	for (unsigned i = 0; i < n; i++) {
		iov[i].iov_base = (char *)worker_buf(w, bid[i]) + off;
		iov[i].iov_len = len[i] - off;
		off = 0;
	}
	ssize_t m = writev(x->s.pipe_w, iov, (int)n);
	int err = m == -1 ? -errno : m == (ssize_t)total ? 0 : -EAGAIN;
	/* what is in the pipe, even on failure: a pipe with bytes left in
	 * it is closed, never pooled for another connection */
	x->s.bytes = m > 0 ? (uint32_t)m : 0;
	for (unsigned i = 0; i < n; i++)
		worker_buf_put(w, bid[i]);
	if (err) {
		conn_fail(w, c, err); /* never send on with a gap */
		return;
	}
	stats_add(w->stats, ST_MOVED_TO_PIPE, 1);
	pump_splice(w, c, d);
}

void conn_evict_scan(struct worker *w)
{
	if ((uint64_t)w->cfg->inflight * w->buf_size > w->cfg->pipe_size)
		return;
	uint32_t budget = cfg_moved_pipes(w->cfg);
	for (uint32_t i = 0; i < w->hwm && w->moves < budget; i++) {
		struct conn *c = &w->conns[i];
		for (int d = 0; d < 2 && c->state == CONN_OPEN; d++) {
			struct relay_dir *x = &c->dir[d];
			if (!x->q_count ||
			    (x->flags & (DF_SPLICE | DF_TRIAL | DF_STREAM | DF_EVICT)))
				continue;
			if ((x->flags & DF_HELD) && w->moves < budget)
				evict_start(w, c, d);
			else
				x->flags |= DF_HELD;
		}
	}
}

void conn_quiet_scan(struct worker *w)
{
	for (uint32_t i = 0; i < w->hwm && w->stream_pipes; i++) {
		struct conn *c = &w->conns[i];
		if (c->state != CONN_OPEN)
			continue;
		for (int d = 0; d < 2; d++) {
			struct relay_dir *x = &c->dir[d];
			/* a stream on its pipe; quiet: the pipe empty, only
			 * POLLIN armed */
			if ((x->flags & (DF_SPLICE | DF_STREAM)) != (DF_SPLICE | DF_STREAM) ||
			    x->s.bytes ||
			    (x->flags & (DF_RECV | DF_SEND | DF_EOF | DF_RDHUP |
					 DF_READY)) != DF_RECV)
				continue;
			if (!(x->flags & DF_QUIET)) {
				x->flags |= DF_QUIET;
				continue;
			}
			/* quiet since the last scan: the pipe goes back, the
			 * armed POLLIN takes one again (pump) */
			drop_pipe(w, x);
		}
	}
}

/* ---- connection start ---------------------------------------------- */

/* Readiness on a stream whose pipe went back while it was quiet
 * (conn_quiet_scan): take one again, or go on on buffers. */
static void stream_take_pipe(struct worker *w, struct conn *c, int d)
{
	struct relay_dir *x = &c->dir[d];
	if (stream_pipe(w, c, d))
		return;
	x->streak = 0; /* no stream pipe left (or EMFILE): on buffers */
	x->flags &= (uint16_t)~DF_NONEMPTY;
	x->q_head = x->q_count = 0;
	x->send_off = 0;
}

static void pump(struct worker *w, struct conn *c, int d)
{
	if ((c->dir[d].flags & (DF_TRIAL | DF_SPLICE)) == DF_TRIAL)
		trial_take_pipe(w, c, d);
	else if ((c->dir[d].flags & (DF_STREAM | DF_SPLICE)) == DF_STREAM)
		stream_take_pipe(w, c, d);
	if (c->dir[d].flags & DF_SPLICE)
		pump_splice(w, c, d);
	else
		pump_buf(w, c, d);
}

void conn_start(struct worker *w, int cfd)
{
	const struct config *cfg = w->cfg;
	stats_add(w->stats, ST_ACCEPTED, 1);
	w->nconns++;
	struct conn *c = conn_slot_alloc(w);
	if (!c) {
		/* cannot happen: admission caps the total at the slab size */
		worker_log(w, LOG_OTHER, "no free connection slot (worker %u)",
			   w->idx);
		stats_add(w->stats, ST_ERR_OTHER, 1);
		net_set_rst(cfd);
		close(cfd);
		w->nconns--;
		atomic_fetch_sub_explicit(&w->sh->active, 1,
					  memory_order_relaxed);
		stats_add(w->stats, ST_CLOSED, 1);
		return;
	}
	c->fd[FD_CLIENT] = cfd;
	c->state = CONN_CONNECTING;

	/* Non-blocking in every mode: the inline splice(2), recv(2) and
	 * ioctl calls must not block. (io_uring's own recv and send ignore
	 * O_NONBLOCK: they wait for readiness, or on an io-wq thread, and
	 * stay cancellable either way.) */
	int type = SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK;
	int ufd = socket(cfg->upstream.ss.ss_family, type, 0);
	if (ufd == -1) {
		int e = errno;
		worker_log(w, LOG_OTHER,
			   "socket() for upstream %s failed: %s (conn %u, worker %u)",
			   cfg->upstream.text, arc_errname(e), slot_of(w, c),
			   w->idx);
		stats_add(w->stats, ST_ERR_OTHER, 1);
		conn_close(w, c, true);
		return;
	}
	c->fd[FD_UPSTREAM] = ufd;
	const char *what = "?";
	int rc = net_upstream_opts(cfg, ufd, &what);
	if (rc) {
		worker_log(w, LOG_OTHER,
			   "setsockopt(%s) on upstream socket failed: %s (conn %u, worker %u)",
			   what, arc_errname(rc), slot_of(w, c), w->idx);
		stats_add(w->stats, ST_ERR_OTHER, 1);
		conn_close(w, c, true);
		return;
	}

	/* connect + linked timeout must sit in one submission: room for
	 * both before taking the first */
	worker_sq_room(w, 2);
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_connect(sqe, ufd, (const struct sockaddr *)&cfg->upstream.ss,
			      cfg->upstream.len);
	io_uring_sqe_set_data64(sqe, ud_of(w, c, OP_CONNECT));
	/* IO_LINK ties the timeout to this connect: it fires only while
	 * the connect is pending and cancels it with -ECANCELED. */
	sqe->flags |= IOSQE_IO_LINK;
	c->inflight++;
	sqe = worker_sqe(w);
	io_uring_prep_link_timeout(sqe, &w->connect_ts, 0);
	io_uring_sqe_set_data64(sqe, relay_ud(OP_IGNORE, 0, 0));
}

/* The upstream socket connected in delayed-ACK mode (net_upstream_opts),
 * so the ACK of the SYN-ACK waits to ride on the client's first bytes. If
 * the first pump sent none (a server-speaks-first protocol, or bytes that
 * go through a buffer), TCP_QUICKACK pushes the held ACK out now instead
 * of when the delayed-ACK timer fires (up to 200 ms): 1 also leaves
 * delayed-ACK mode, 2 stays in it (the kernel's "val & 1").
 * ARCTIC_QUICKACK=1: the upstream's data is ACKed at once from here on.
 * ARCTIC_QUICKACK=0: ACKs stay delayed and ride on the next bytes sent
 * upstream (or the FIN), as the kernel does for interactive traffic.
 * Best effort: a failure only costs a segment or a delayed ACK. */
static void handshake_ack(int fd, bool quickack, bool sent)
{
	int val;
	if (quickack)
		val = 1;
	else if (!sent)
		val = 2;
	else
		return;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &val, sizeof(val));
}

static void on_connect(struct worker *w, struct conn *c, int res)
{
	const struct config *cfg = w->cfg;
	if (res < 0) {
		int e = res == -ECANCELED ? -ETIMEDOUT : res;
		worker_log(w, LOG_CONNECT,
			   "connect(%s) failed: %s (conn %u, worker %u)",
			   cfg->upstream.text, arc_errname(e), slot_of(w, c),
			   w->idx);
		stats_add(w->stats, ST_ERR_CONNECT, 1);
		conn_close(w, c, true);
		return;
	}
	c->state = CONN_OPEN;
	if (cfg->io_mode == CFG_IO_AUTO) {
		/* no pipe yet: pump() takes one for each burst of bytes */
		if (cfg->pipe_trial) {
			c->dir[C2U].flags |= DF_TRIAL;
			c->dir[U2C].flags |= DF_TRIAL;
		}
	} else if (cfg->io_mode == CFG_IO_SPLICE) {
		int rc = make_pipe(w, c, C2U);
		if (!rc)
			rc = make_pipe(w, c, U2C);
		if (rc) {
			worker_log(w, LOG_OTHER,
				   "%s failed: %s (conn %u, worker %u)",
				   w->pipe_err, arc_errname(rc), slot_of(w, c), w->idx);
			stats_add(w->stats, ST_ERR_OTHER, 1);
			conn_close(w, c, true);
			return;
		}
	}
	idle_touch(w, c);
	uint64_t sent = stats_get(w->stats, ST_BYTES_C2U);
	pump(w, c, C2U);
	if (c->state == CONN_OPEN)
		pump(w, c, U2C);
	if (c->state == CONN_OPEN) /* else the fds are closed */
		handshake_ack(c->fd[FD_UPSTREAM], cfg->quickack,
			      stats_get(w->stats, ST_BYTES_C2U) != sent);
}

void conn_complete(struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned op = relay_ud_op(ud);
	uint32_t slot = relay_ud_slot(ud);
	ARC_BUG_ON(slot >= w->hwm);
	struct conn *c = &w->conns[slot];
	/* A slot is released only after its last completion, so a
	 * generation mismatch is a bug, not a race. */
	ARC_BUG_ON(c->gen != relay_ud_gen(ud) || c->state == CONN_FREE);
	ARC_BUG_ON(c->inflight == 0);
	c->inflight--;
	if (cqe->flags & IORING_CQE_F_BUFFER)
		w->bufs_free--;

	if (c->state == CONN_CLOSING) {
		if (cqe->flags & IORING_CQE_F_BUFFER)
			worker_buf_put(w, (uint16_t)(cqe->flags >>
						     IORING_CQE_BUFFER_SHIFT));
		if (!c->inflight)
			conn_release(w, c);
		return;
	}

	int d = (int)(op & 1);
	switch (op & ~1u) {
	case OP_CONNECT:
		on_connect(w, c, cqe->res);
		break;
	case OP_RECV:
		on_recv(w, c, d, cqe);
		break;
	case OP_SEND:
		on_send(w, c, d, cqe->res);
		break;
	case OP_POLL_IN:
		c->dir[d].flags &= (uint16_t)~DF_RECV;
		if (cqe->res < 0) {
			conn_fail(w, c, cqe->res);
			break;
		}
		if ((cqe->res & (POLLRDHUP | POLLERR)) == POLLRDHUP)
			c->dir[d].flags |= DF_RDHUP;
		if (cqe->res & POLLIN)
			c->dir[d].flags |= DF_READY;
		pump(w, c, d); /* a paused trial takes a pipe again */
		break;
	case OP_POLL_OUT:
		c->dir[d].flags &= (uint16_t)~DF_SEND;
		if (cqe->res < 0)
			conn_fail(w, c, cqe->res);
		else
			pump_splice(w, c, d);
		break;
	default:
		ARC_BUG_ON(1);
	}
}

void conn_unpark(struct worker *w, uint32_t slot)
{
	struct conn *c = &w->conns[slot];
	uint16_t f0 = c->dir[0].flags, f1 = c->dir[1].flags;
	unpark_unlink(w, c);
	if (f0 & DF_WAIT_BUF)
		pump_buf(w, c, 0);
	if ((f1 & DF_WAIT_BUF) && c->state == CONN_OPEN)
		pump_buf(w, c, 1);
}

/* Bytes a close would lose: received and not yet sent on (relay buffers,
 * a pipe), or not yet read from a socket (a direction waiting for a
 * buffer has its bytes there). A socket that cannot say counts as
 * holding: an RST is the safe end. */
static bool conn_holds_bytes(const struct conn *c)
{
	for (int d = 0; d < 2; d++) {
		const struct relay_dir *x = &c->dir[d];
		if (x->q_count || ((x->flags & DF_SPLICE) && x->s.bytes))
			return true;
	}
	for (int i = 0; i < 2; i++) {
		int n = 0;
		if (ioctl(c->fd[i], FIONREAD, &n) == -1 || n > 0)
			return true;
	}
	return false;
}

void conn_idle_scan(struct worker *w)
{
	uint32_t limit = w->cfg->idle_timeout_s * 1000u;
	while (w->idle_head != RELAY_NONE) {
		struct conn *c = &w->conns[w->idle_head];
		/* unsigned difference: correct across the 49-day wrap */
		if (w->now_ms - c->last_active < limit)
			break;
		stats_add(w->stats, ST_IDLE_CLOSED, 1);
		/* bytes still held here would be lost: say so with an RST,
		 * not a FIN that reads as a complete stream */
		conn_close(w, c, conn_holds_bytes(c));
	}
}

uint32_t conn_abort_all(struct worker *w)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < w->hwm; i++) {
		struct conn *c = &w->conns[i];
		if (c->state == CONN_CONNECTING || c->state == CONN_OPEN) {
			conn_close(w, c, true);
			n++;
		}
	}
	return n;
}
