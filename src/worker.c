#define _GNU_SOURCE
#include "arctic/worker.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "arctic/alloc.h"
#include "arctic/config.h"
#include "arctic/net.h"
#include "arctic/probe.h"
#include "arctic/relay.h"
#include "arctic/topology.h"
#include "arctic/util.h"

enum { LOG_ACCEPT = 0, LOG_RING = 3 };

/* Accepting pauses this long after EMFILE/ENFILE/ENOMEM, so fd exhaustion
 * costs one counted error per pause instead of a spinning core. */
#define ACCEPT_ERROR_PAUSE_MS 100

/* After the drain's deadline, aborted connections get this long for their
 * last completions before the worker ends regardless. */
#define DRAIN_GRACE_NS (5ull * 1000000000ull)

void worker_log(struct worker *w, unsigned kind, const char *fmt, ...)
{
	uint64_t now = arc_now_ns();
	if (kind < ARC_ARRAY_SIZE(w->last_log_ns) && w->last_log_ns[kind] &&
	    now - w->last_log_ns[kind] < 1000000000ull)
		return;
	if (kind < ARC_ARRAY_SIZE(w->last_log_ns))
		w->last_log_ns[kind] = now;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	arc_log("%s", line);
}

/* A ring call that keeps failing (the kernel short of memory, a policy
 * refusing it) is retried after this pause, not in a spin. */
static void ring_backoff(void)
{
	struct timespec ms = {0, 1000000};
	nanosleep(&ms, NULL);
}

void worker_sq_room(struct worker *w, unsigned n)
{
	for (unsigned tries = 0; io_uring_sq_space_left(&w->ring) < n; tries++) {
		/* SQ full: hand what we have to the kernel to make room. */
		int rc = io_uring_submit(&w->ring);
		if (rc == -EBUSY && w->cq_handled) {
			/* completions wait in the kernel's overflow list and it
			 * holds back submissions until they fit in the CQ: give
			 * it the slots of those this reap has handled (the
			 * current one stays until its handler returns) */
			io_uring_cq_advance(&w->ring, w->cq_handled);
			w->cq_handled = 0;
			continue;
		}
		if (rc < 0 && rc != -EINTR)
			worker_log(w, LOG_RING,
				   "io_uring_submit() failed: %s (worker %u, retrying)",
				   arc_errname(rc), w->idx);
		/* SQPOLL: the kernel thread frees entries on its own time */
		if (w->sqpoll)
			io_uring_sqring_wait(&w->ring);
		/* the kernel short of memory (EAGAIN) or another failure that
		 * persists: wait for it rather than spin (or give up an SQE
		 * the caller cannot do without) */
		if (rc < 0 && rc != -EINTR && tries >= 64)
			ring_backoff();
	}
}

struct io_uring_sqe *worker_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	if (!sqe) {
		worker_sq_room(w, 1);
		sqe = io_uring_get_sqe(&w->ring);
		ARC_BUG_ON(!sqe);
	}
	return sqe;
}

void worker_buf_put(struct worker *w, uint16_t bid)
{
	io_uring_buf_ring_add(w->br, worker_buf(w, bid), w->buf_size, bid,
			      io_uring_buf_ring_mask(w->buf_count), 0);
	io_uring_buf_ring_advance(w->br, 1);
	w->bufs_free++;
}

/* Directions parked on -ENOBUFS get another recv while the ring holds
 * free buffers, one per free buffer, oldest first. A direction parks only
 * with data waiting (relay.c: POLL_FIRST), so a woken one takes the
 * buffer; one whose recv ends without it (EOF, reset) completes, and the
 * next round wakes the next; one that finds the ring empty again parks at
 * the tail. Run after every batch of completions, so a buffer returned in
 * the same batch as an -ENOBUFS is not missed. */
static void wake_parked(struct worker *w)
{
	for (uint32_t n = w->bufs_free; n && w->wait_head != RELAY_NONE; n--)
		conn_unpark(w, w->wait_head);
}

/* ---- accept -------------------------------------------------------- */

static void arm_accept(struct worker *w)
{
	if (w->accept_armed || w->accept_paused || w->state != W_RUNNING)
		return;
	struct io_uring_sqe *sqe = worker_sqe(w);
	int flags = SOCK_CLOEXEC | SOCK_NONBLOCK; /* see conn_start() */
	/* Multishot: one SQE keeps accepting until cancelled or failed
	 * (the CQE without IORING_CQE_F_MORE says it stopped). */
	io_uring_prep_multishot_accept(sqe, w->listen_fd, NULL, NULL, flags);
	io_uring_sqe_set_data64(sqe, relay_ud(OP_ACCEPT, 0, 0));
	w->accept_armed = true;
}

/* Cancels the armed multishot accept; its last CQE clears accept_armed. */
static void cancel_accept(struct worker *w)
{
	if (!w->accept_armed)
		return;
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_cancel64(sqe, relay_ud(OP_ACCEPT, 0, 0), 0);
	io_uring_sqe_set_data64(sqe, relay_ud(OP_IGNORE, 0, 0));
}

/* Stops accepting for ms (a ring timeout, never a sleep). */
static void pause_accept(struct worker *w, unsigned ms)
{
	if (w->accept_paused)
		return;
	w->accept_paused = true;
	cancel_accept(w);
	w->pause_ts.tv_sec = ms / 1000;
	w->pause_ts.tv_nsec = (long long)(ms % 1000) * 1000000;
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_timeout(sqe, &w->pause_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, relay_ud(OP_RESUME, 0, 0));
}

static void admit(struct worker *w, int fd)
{
	/* The one shared write per connection: the global count that
	 * max_connections limits. */
	int64_t n = atomic_fetch_add_explicit(&w->sh->active, 1,
					      memory_order_relaxed) + 1;
	if (n > (int64_t)w->cfg->max_connections) {
		atomic_fetch_sub_explicit(&w->sh->active, 1,
					  memory_order_relaxed);
		net_set_rst(fd);
		close(fd);
		stats_add(w->stats, ST_REJECTED, 1);
		if (w->cfg->reject_sleep_ms)
			pause_accept(w, w->cfg->reject_sleep_ms);
		return;
	}
	conn_start(w, fd);
}

static void on_accept(struct worker *w, struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	if (!(cqe->flags & IORING_CQE_F_MORE))
		w->accept_armed = false;
	if (res >= 0) {
		if (w->state != W_RUNNING) {
			net_set_rst(res);
			close(res);
		} else {
			admit(w, res);
		}
	} else if (res == -ECANCELED || w->state != W_RUNNING) {
		/* paused or shutting down */
	} else if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS ||
		   res == -ENOMEM) {
		stats_add(w->stats, ST_ERR_ACCEPT, 1);
		worker_log(w, LOG_ACCEPT,
			   "accept() failed: %s (worker %u); pausing accepts for %u ms",
			   arc_errname(res), w->idx, ACCEPT_ERROR_PAUSE_MS);
		pause_accept(w, ACCEPT_ERROR_PAUSE_MS);
	} else if (res != -EAGAIN && res != -EINTR) {
		stats_add(w->stats, ST_ERR_ACCEPT, 1);
		worker_log(w, LOG_ACCEPT, "accept() failed: %s (worker %u)",
			   arc_errname(res), w->idx);
	}
	arm_accept(w);
}

/* ---- timers, wake-up, drain ---------------------------------------- */

static void arm_tick(struct worker *w)
{
	if (w->tick_armed || w->state == W_DONE)
		return;
	if (!w->cfg->idle_timeout_s && w->state != W_DRAINING &&
	    !w->pipes_pooled && w->wait_head == RELAY_NONE && !w->stream_pipes)
		return;
	/* Idle connections close within a quarter second of their limit; a
	 * drain notices its deadline within 100 ms; a direction that holds
	 * buffers while others wait moves to a pipe after one to two
	 * ticks; a stream's pipe goes back after one to two quiet ticks. */
	w->tick_ts.tv_sec = 0;
	w->tick_ts.tv_nsec = w->state == W_DRAINING ? 100000000 : 250000000;
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, relay_ud(OP_TICK, 0, 0));
	w->tick_armed = true;
}

/* Closes the pooled pipes: a pool with no traffic for a tick gives its
 * descriptors back, so an idle proxy holds no pipes. */
static void pipe_pool_release(struct worker *w)
{
	for (uint32_t i = 0; i < 2 * w->pipes_pooled; i++)
		close(w->pipe_pool[i]);
	w->pipes_pooled = 0;
}

/* A drain past its deadline aborts the connections left. They end as
 * their last operations complete (cancelled at once); one still waiting
 * seconds later has lost a completion (a CQE the kernel could not queue,
 * or a ring that fails): the worker ends anyway, and closing the ring
 * ends its operations. */
static void drain_deadline(struct worker *w)
{
	if (w->state != W_DRAINING || !w->nconns ||
	    arc_now_ns() < w->drain_deadline_ns)
		return;
	uint32_t n = conn_abort_all(w);
	stats_add(w->stats, ST_DRAIN_ABORTED, n);
	if (!n && arc_now_ns() >= w->drain_deadline_ns + DRAIN_GRACE_NS) {
		worker_log(w, LOG_RING,
			   "%u connection%s still closing %u s after the drain "
			   "ended: leaving them to the ring's exit (worker %u)",
			   w->nconns, w->nconns == 1 ? "" : "s",
			   (unsigned)(DRAIN_GRACE_NS / 1000000000ull), w->idx);
		w->state = W_DONE;
	}
}

static void on_tick(struct worker *w)
{
	w->tick_armed = false;
	if (w->pipes_pooled && !w->pipe_pool_used)
		pipe_pool_release(w);
	w->pipe_pool_used = false;
	w->now_ms = (uint32_t)(arc_now_ns() / 1000000ull);
	if (w->cfg->idle_timeout_s)
		conn_idle_scan(w);
	if (w->wait_head != RELAY_NONE)
		conn_evict_scan(w);
	if (w->stream_pipes)
		conn_quiet_scan(w);
	drain_deadline(w);
	arm_tick(w);
}

static void arm_wake(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_read(sqe, w->wake_fd, &w->wake_val, sizeof(w->wake_val),
			   0);
	io_uring_sqe_set_data64(sqe, relay_ud(OP_WAKE, 0, 0));
}

static void begin_drain(struct worker *w)
{
	if (w->state != W_RUNNING)
		return;
	w->state = W_DRAINING;
	/* shutdown() on a listener stops it at once: new SYNs are refused
	 * and the pending multishot accept completes. */
	if (shutdown(w->listen_fd, SHUT_RDWR) == -1)
		arc_log("shutdown(listener) failed: %s (worker %u)",
			arc_errname(errno), w->idx);
	cancel_accept(w);
	w->drain_deadline_ns = arc_now_ns() +
			       (uint64_t)w->cfg->shutdown_drain_secs * 1000000000ull;
	if (w->nconns && !w->cfg->shutdown_drain_secs)
		stats_add(w->stats, ST_DRAIN_ABORTED, conn_abort_all(w));
	arm_tick(w);
}

/* ---- the loop ------------------------------------------------------ */

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	switch (relay_ud_op(ud)) {
	case OP_ACCEPT:
		on_accept(w, cqe);
		break;
	case OP_WAKE:
		begin_drain(w);
		break;
	case OP_TICK:
		on_tick(w);
		break;
	case OP_RESUME:
		w->accept_paused = false;
		arm_accept(w);
		break;
	case OP_IGNORE:
		break;
	default:
		conn_complete(w, cqe);
	}
}

/* Reaps and dispatches every completion ready now; returns how many. */
static unsigned reap(struct worker *w)
{
	if (w->cfg->idle_timeout_s)
		w->now_ms = (uint32_t)(arc_now_ns() / 1000000ull);
	unsigned head, n = 0;
	struct io_uring_cqe *cqe;
	io_uring_for_each_cqe(&w->ring, head, cqe)
	{
		dispatch(w, cqe);
		w->cq_handled++;
		n++;
	}
	io_uring_cq_advance(&w->ring, w->cq_handled);
	w->cq_handled = 0;
	if (w->wait_head != RELAY_NONE)
		wake_parked(w);
	return n;
}

static void ring_error(struct worker *w, const char *call, int rc)
{
	if (rc >= 0 || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY || rc == -ETIME)
		return;
	worker_log(w, LOG_RING, "%s failed: %s (worker %u)", call, arc_errname(rc), w->idx);
	stats_add(w->stats, ST_ERR_OTHER, 1);
}

/* A wait for completions failed and nothing had completed: the kernel
 * short of memory (ENOMEM, EAGAIN), or a ring refused from now on (a
 * seccomp or LSM policy). Retrying at once would spin the core, so the
 * loop pauses 1 ms; and since the ring may deliver nothing more, what its
 * completions would have done is done here: a drain request (the
 * eventfd's read never completes) starts the drain, and a drain past its
 * deadline ends as the tick would end it. */
static void ring_stalled(struct worker *w, int rc, unsigned reaped)
{
	if (rc >= 0 || rc == -EINTR || rc == -ETIME || reaped)
		return;
	ring_backoff();
	if (atomic_load_explicit(&w->drain_req, memory_order_relaxed))
		begin_drain(w);
	drain_deadline(w);
}

/* Hybrid's spin adapts as a hypervisor's halt polling does: a sleep that
 * ended within spin_max (work came soon after the spin gave up) doubles
 * the spin, up to spin_max; a longer sleep (traffic paused) puts it back
 * to spin_min. So an exchange whose answers take a little longer than
 * spin_min to come (a slow vCPU wake on the other side) is still spun
 * across, and a quiet proxy spins only spin_min after each burst. */
static uint64_t adapt_spin(uint64_t spin, uint64_t slept, uint64_t spin_min,
			   uint64_t spin_max)
{
	if (slept > spin_max)
		return spin_min;
	return spin * 2 < spin_max ? spin * 2 : spin_max;
}

static void run(struct worker *w)
{
	/* hybrid is a busy loop with a short idle limit: it spins across the
	 * gaps of a request/response exchange (a sleeping vCPU costs tens of
	 * microseconds to wake) and sleeps as soon as traffic pauses. */
	bool busy = w->cfg->poll != CFG_POLL_WAIT;
	bool hybrid = w->cfg->poll == CFG_POLL_HYBRID;
	uint64_t spin_min = (uint64_t)w->cfg->poll_spin_us * 1000ull;
	uint64_t spin_max = (uint64_t)w->cfg->poll_spin_max_us * 1000ull;
	if (spin_max < spin_min)
		spin_max = spin_min; /* a max below the min: a fixed spin */
	uint64_t idle_ns = hybrid ? spin_min : (uint64_t)w->cfg->poll_idle_us * 1000ull;
	uint64_t last_work = arc_now_ns();
	while (w->state != W_DONE) {
		if (busy) {
			/* Spin: never sleep while there is work, nor until the
			 * idle limit passes without any; GETEVENTS runs the
			 * deferred completion work without blocking. */
			int rc = io_uring_submit_and_get_events(&w->ring);
			ring_error(w, "io_uring_submit_and_get_events()", rc);
			unsigned n = reap(w);
			if (n) {
				last_work = arc_now_ns();
			} else {
				stats_add(w->stats, ST_BUSY_SPINS, 1);
				uint64_t now = arc_now_ns();
				if (idle_ns && now - last_work >= idle_ns) {
					stats_add(w->stats, ST_IDLE_FALLBACKS, 1);
					rc = io_uring_submit_and_wait(&w->ring, 1);
					ring_error(w, "io_uring_submit_and_wait()", rc);
					uint64_t woke = arc_now_ns();
					if (hybrid)
						idle_ns = adapt_spin(idle_ns, woke - now,
								     spin_min, spin_max);
					ring_stalled(w, rc, reap(w));
					last_work = arc_now_ns();
				}
			}
		} else {
			int rc = io_uring_submit_and_wait(&w->ring, 1);
			ring_error(w, "io_uring_submit_and_wait()", rc);
			ring_stalled(w, rc, reap(w));
		}
		stats_add(w->stats, ST_LOOPS, 1);
		if (!w->tick_armed)
			arm_tick(w); /* if a timer is wanted (see there) */
		if (w->state == W_DRAINING && w->nconns == 0)
			w->state = W_DONE;
	}
}

/* ---- set-up -------------------------------------------------------- */

/* SQPOLL_SHARED: the first worker of each NUMA node creates the ring whose
 * SQ thread the node's other workers attach to (IORING_SETUP_ATTACH_WQ). */
static int shared_sq_fd(struct worker *w, bool *leader)
{
	struct shared *sh = w->sh;
	const struct topo_plan *plan = sh->plan;
	int slot = plan->w[w->idx].node_slot;
	*leader = true;
	for (unsigned i = 0; i < w->idx; i++)
		if (plan->w[i].node_slot == slot)
			*leader = false;
	if (*leader)
		return -1;
	pthread_mutex_lock(&sh->lock);
	while (sh->sq_fd[slot] == -1 && !sh->failed)
		pthread_cond_wait(&sh->cond, &sh->lock);
	int fd = sh->sq_fd[slot];
	pthread_mutex_unlock(&sh->lock);
	return fd;
}

static void publish_sq_fd(struct worker *w, int fd)
{
	struct shared *sh = w->sh;
	pthread_mutex_lock(&sh->lock);
	sh->sq_fd[sh->plan->w[w->idx].node_slot] = fd;
	pthread_cond_broadcast(&sh->cond);
	pthread_mutex_unlock(&sh->lock);
}

static int setup_ring(struct worker *w, char *err, size_t errlen)
{
	const struct config *cfg = w->cfg;
	const struct topo_worker *tw = &w->sh->plan->w[w->idx];
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	/* CQ 4x SQ: room for the completions of several full submission
	 * batches; a larger burst goes to the kernel's (slower) overflow
	 * list, flushed back into the ring as the loop empties it. */
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = cfg->ring_entries * 4;
	bool leader = true;
	int rc;
	if (cfg->sqpoll) {
		/* SQPOLL: a kernel thread pinned to the plan's SQPOLL CPU
		 * (SQ_AFF) picks up submissions, so the worker submits with
		 * no syscall while that thread is awake; it sleeps after
		 * sq_thread_idle ms without work. DEFER_TASKRUN cannot be
		 * combined with it. */
		p.flags |= IORING_SETUP_SQPOLL | IORING_SETUP_SQ_AFF |
			   IORING_SETUP_SINGLE_ISSUER;
		p.sq_thread_cpu = (unsigned)tw->sqpoll_cpu;
		p.sq_thread_idle = cfg->sqpoll_idle_ms;
		if (cfg->sqpoll_shared) {
			int fd = shared_sq_fd(w, &leader);
			if (!leader) {
				if (fd < 0) {
					snprintf(err, errlen, "shared SQPOLL ring of worker %u's node failed",
						 w->idx);
					return -EINVAL;
				}
				p.flags |= IORING_SETUP_ATTACH_WQ;
				p.wq_fd = (unsigned)fd;
			}
		}
		rc = io_uring_queue_init_params(cfg->ring_entries, &w->ring, &p);
		if (cfg->sqpoll_shared && leader)
			publish_sq_fd(w, rc < 0 ? -2 : w->ring.ring_fd);
		if (rc < 0) {
			snprintf(err, errlen,
				 "io_uring_queue_init(%u, SQPOLL on CPU %d) failed: %s (worker %u)",
				 cfg->ring_entries, tw->sqpoll_cpu, arc_errname(rc), w->idx);
			return rc;
		}
	} else {
		/* SINGLE_ISSUER: only this thread submits (the kernel skips
		 * locking). DEFER_TASKRUN: completion work runs when we wait,
		 * in batches, not by interrupting the loop. */
		p.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
		rc = io_uring_queue_init_params(cfg->ring_entries, &w->ring, &p);
		if (rc == -EINVAL) {
			/* pre-6.1 kernel: cooperative task work is the next best */
			memset(&p, 0, sizeof(p));
			p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN;
			p.cq_entries = cfg->ring_entries * 4;
			rc = io_uring_queue_init_params(cfg->ring_entries, &w->ring, &p);
		}
		if (rc < 0) {
			snprintf(err, errlen, "io_uring_queue_init(%u) failed: %s (worker %u)",
				 cfg->ring_entries, arc_errname(rc), w->idx);
			return rc;
		}
	}
	w->sqpoll = cfg->sqpoll;
	if (cfg->napi_us) {
		struct arc_io_uring_napi napi;
		memset(&napi, 0, sizeof(napi));
		napi.busy_poll_to = cfg->napi_us;
		napi.prefer_busy_poll = (unsigned char)cfg->prefer_busy_poll;
		/* liburing 2.3 has no wrapper: raw io_uring_register(2). */
		long r = syscall(__NR_io_uring_register, w->ring.ring_fd,
				 ARC_IORING_REGISTER_NAPI, &napi, 1);
		if (r == -1) {
			rc = -errno;
			snprintf(err, errlen,
				 "io_uring_register(NAPI, %u us) failed: %s (worker %u)",
				 cfg->napi_us, arc_errname(rc), w->idx);
			io_uring_queue_exit(&w->ring);
			return rc;
		}
	}
	/* Registered ring fd: io_uring_enter(2) skips the fd table lookup
	 * (fdget/fdput) on every call. Best effort: a kernel before 5.18
	 * says EINVAL and the plain fd keeps working. */
	(void)io_uring_register_ring_fd(&w->ring);
	return 0;
}

static int setup_buffers(struct worker *w, char *err, size_t errlen)
{
	const struct config *cfg = w->cfg;
	w->buf_size = cfg->buf_size;
	w->buf_count = cfg->buf_count;
	w->br = mem_alloc(w->arena, w->buf_count * sizeof(struct io_uring_buf),
			  4096);
	w->bufs = mem_alloc(w->arena, (size_t)w->buf_count * w->buf_size, 4096);
	if (!w->br || !w->bufs) {
		snprintf(err, errlen,
			 "cannot allocate %u relay buffers of %u bytes (worker %u)",
			 w->buf_count, w->buf_size, w->idx);
		return -ENOMEM;
	}
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)w->br;
	reg.ring_entries = w->buf_count;
	reg.bgid = 0;
	int rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (rc < 0) {
		snprintf(err, errlen,
			 "io_uring_register_buf_ring(%u) failed: %s (worker %u)",
			 w->buf_count, arc_errname(rc), w->idx);
		return rc;
	}
	io_uring_buf_ring_init(w->br);
	unsigned mask = io_uring_buf_ring_mask(w->buf_count);
	for (unsigned i = 0; i < w->buf_count; i++)
		io_uring_buf_ring_add(w->br, worker_buf(w, (uint16_t)i),
				      w->buf_size, (uint16_t)i, mask, (int)i);
	io_uring_buf_ring_advance(w->br, (int)w->buf_count);
	w->bufs_free = w->buf_count;
	return 0;
}

static void report(struct worker *w, const char *err)
{
	struct shared *sh = w->sh;
	pthread_mutex_lock(&sh->lock);
	if (err) {
		if (!sh->failed)
			snprintf(sh->error, sizeof(sh->error), "%s", err);
		sh->failed++;
	} else {
		sh->ready++;
	}
	pthread_cond_broadcast(&sh->cond);
	pthread_mutex_unlock(&sh->lock);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct topo_plan *plan = w->sh->plan;
	char err[400];
	int rc;

	char name[16];
	snprintf(name, sizeof(name), "arctic-w%u", w->idx);
	pthread_setname_np(pthread_self(), name); /* best effort: for ps/top */

	/* Pin before the first allocation so first touch is node-local. */
	rc = topo_pin(plan, w->idx);
	if (rc) {
		snprintf(err, sizeof(err), "pinning worker %u to CPU %d failed: %s",
			 w->idx, plan->w[w->idx].pu, arc_errname(rc));
		goto fail;
	}
	(void)topo_membind(plan, w->idx);
	w->arena = mem_arena((unsigned)plan->w[w->idx].node_slot);
	rc = mem_thread_bind(w->arena);
	if (rc) {
		snprintf(err, sizeof(err), "binding worker %u to arena %u failed: %s",
			 w->idx, w->arena, arc_errname(rc));
		goto fail;
	}
	w->stats = mem_alloc(w->arena, sizeof(*w->stats), ARC_CACHELINE);
	w->cap = w->cfg->max_connections;
	w->conns = mem_alloc(w->arena, (size_t)w->cap * sizeof(struct conn),
			     ARC_CACHELINE);
	uint32_t pool = cfg_pipe_pool(w->cfg);
	if (pool)
		w->pipe_pool = mem_alloc(w->arena, (size_t)pool * 2 * sizeof(int),
					 ARC_CACHELINE);
	if (!w->stats || !w->conns || (pool && !w->pipe_pool)) {
		snprintf(err, sizeof(err),
			 "cannot allocate %u connection slots and %u pooled pipes (worker %u)",
			 w->cap, pool, w->idx);
		goto fail;
	}
	w->info.pu = plan->w[w->idx].pu;
	w->info.node = plan->w[w->idx].node;
	w->info.arena = mem_thread_arena();
	w->info.slab_arena = mem_arena_of(w->conns);
	w->free_head = w->wait_head = w->wait_tail = RELAY_NONE;
	w->idle_head = w->idle_tail = RELAY_NONE;
	w->connect_ts.tv_sec = w->cfg->timeout_secs;
	w->buf_size = w->cfg->buf_size;

	if (setup_ring(w, err, sizeof(err)))
		goto fail;
	if (w->cfg->io_mode != CFG_IO_SPLICE &&
	    setup_buffers(w, err, sizeof(err)))
		goto fail_ring;

	arm_wake(w);
	arm_accept(w);
	arm_tick(w);
	rc = io_uring_submit(&w->ring);
	if (rc < 0) {
		snprintf(err, sizeof(err), "io_uring_submit() failed: %s (worker %u)",
			 arc_errname(rc), w->idx);
		goto fail_ring;
	}
	report(w, NULL);
	run(w);
	io_uring_queue_exit(&w->ring);
	close(w->listen_fd);
	w->listen_fd = -1;
	atomic_fetch_add(&w->sh->finished, 1);
	return NULL;

fail_ring:
	io_uring_queue_exit(&w->ring);
fail:
	report(w, err);
	atomic_fetch_add(&w->sh->finished, 1);
	return NULL;
}

int worker_start(struct worker *w, struct shared *sh, unsigned idx,
		 int listen_fd)
{
	memset(w, 0, sizeof(*w));
	w->sh = sh;
	w->cfg = sh->cfg;
	w->idx = idx;
	w->listen_fd = listen_fd;
	w->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (w->wake_fd == -1)
		return -errno;
	int rc = pthread_create(&w->thread, NULL, worker_main, w);
	if (rc) {
		close(w->wake_fd);
		return -rc;
	}
	return 0;
}

void worker_wake(struct worker *w)
{
	uint64_t one = 1;
	atomic_store_explicit(&w->drain_req, true, memory_order_relaxed);
	ssize_t n = write(w->wake_fd, &one, sizeof(one));
	(void)n; /* eventfd write of 1 cannot fail short of overflow */
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	close(w->wake_fd);
}

void worker_free(struct worker *w)
{
	pipe_pool_release(w);
	mem_free(w->pipe_pool);
	w->pipe_pool = NULL;
	mem_free(w->conns);
	mem_free(w->bufs);
	mem_free(w->br);
	mem_free(w->stats);
	w->conns = NULL;
	w->bufs = NULL;
	w->br = NULL;
	w->stats = NULL;
}
