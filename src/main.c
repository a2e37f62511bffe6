/* main: wiring only. Parse, plan, raise limits, check the upstream, bind
 * the listeners, start the workers, then print stats and handle signals
 * until the drain is over. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "arctic/alloc.h"
#include "arctic/config.h"
#include "arctic/net.h"
#include "arctic/probe.h"
#include "arctic/stats.h"
#include "arctic/topology.h"
#include "arctic/util.h"
#include "arctic/worker.h"

#ifndef ARCTIC_VERSION
#define ARCTIC_VERSION "0.0.0"
#endif

extern char **environ;

static void print_settings(FILE *f, const struct config *cfg, bool json)
{
	char val[300];
	for (size_t i = 0; i < cfg_option_count; i++) {
		const struct cfg_option *o = &cfg_options[i];
		cfg_format(cfg, o, val, sizeof(val));
		if (json) {
			fprintf(f, "%s\"%s\":", i ? "," : "", o->name);
			if ((o->type == CFG_T_U32 || o->type == CFG_T_BOOL) &&
			    strspn(val, "0123456789") == strlen(val))
				fprintf(f, "%s", val);
			else
				fprintf(f, "\"%s\"", val);
		} else {
			fprintf(f, "  %-28s %s\n", o->name, val);
		}
	}
}

static void print_plan(const struct config *cfg, const struct topo_plan *p)
{
	if (cfg->plan_json) {
		printf("{\"source\":\"%s\",\"policy\":\"%s\",\"workers\":[",
		       p->source, p->policy);
		for (size_t i = 0; i < p->nworkers; i++) {
			const struct topo_worker *w = &p->w[i];
			printf("%s{\"worker\":%zu,\"pu\":%d,\"core\":%d,\"package\":%d,"
			       "\"node\":%d,\"arena\":%d,\"sqpoll_cpu\":%d,\"why\":\"%s\"}",
			       i ? "," : "", i, w->pu, w->core, w->package,
			       w->node, w->node_slot, w->sqpoll_cpu, w->why);
		}
		printf("],\"nodes\":[");
		for (size_t k = 0; k < p->nnodes; k++)
			printf("%s%d", k ? "," : "", p->nodes[k]);
		printf("],\"settings\":{");
		print_settings(stdout, cfg, true);
		printf("}}\n");
		return;
	}
	printf("placement plan for %s: %s\n\n", p->source, p->policy);
	printf("%-7s %-5s %-5s %-8s %-5s %-6s %-11s %s\n", "worker", "pu",
	       "core", "package", "node", "arena", "sqpoll_cpu", "why");
	for (size_t i = 0; i < p->nworkers; i++) {
		const struct topo_worker *w = &p->w[i];
		printf("%-7zu %-5d %-5d %-8d %-5d %-6d %-11d %s\n", i, w->pu,
		       w->core, w->package, w->node, w->node_slot,
		       w->sqpoll_cpu, w->why);
	}
	printf("\nsettings:\n");
	print_settings(stdout, cfg, false);
}

/* The startup banner echoes every knob, so a run's log says what ran. */
static void log_settings(const struct config *cfg)
{
	char line[4096], val[300];
	size_t off = 0;
	for (size_t i = 0; i < cfg_option_count && off < sizeof(line); i++) {
		const struct cfg_option *o = &cfg_options[i];
		cfg_format(cfg, o, val, sizeof(val));
		off += (size_t)snprintf(line + off, sizeof(line) - off, "%s%s=%s",
					i ? " " : "", o->name, val[0] ? val : "\"\"");
	}
	arc_log("settings: %s", line);
}

/* Pipes a worker may hold beside its connections' own (splice mode): trial
 * and pooled, moved, streaming. */
static uint64_t reserved_pipes(const struct config *cfg)
{
	return 2 * (uint64_t)cfg_pipe_pool(cfg) + cfg_moved_pipes(cfg) +
	       cfg_stream_pipes(cfg);
}

/* Two descriptors per connection (client, upstream), six in splice mode
 * (plus two pipes), and a margin for listeners, rings and eventfds, for
 * each worker's trial and pooled pipes (ARCTIC_PIPE_TRIAL of each, two
 * descriptors apiece), for the pipes of directions moved off the relay
 * buffers under pressure (cfg_moved_pipes() per worker) and for those of
 * streaming directions (cfg_stream_pipes() per worker). So in auto mode
 * every pipe is inside the budget, and the descriptors of connections up
 * to max_connections are always there. When the limit is short, the pipe
 * reserves give way first (to half of what the fixed margin leaves), then
 * max_connections is capped. */
static void raise_nofile(struct config *cfg, size_t nworkers)
{
	uint64_t per = cfg->io_mode == CFG_IO_SPLICE ? 6 : 2;
	uint64_t fixed = 64 + 4 * (uint64_t)nworkers;
	uint64_t opt = 2 * reserved_pipes(cfg) * nworkers;
	uint64_t slack = fixed + opt;
	uint64_t need = (uint64_t)cfg->max_connections * per + slack;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
		arc_log("getrlimit(RLIMIT_NOFILE) failed: %s", arc_errname(errno));
		return;
	}
	if (rl.rlim_cur < need) {
		rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need
				      ? need
				      : rl.rlim_max;
		struct rlimit nl = {.rlim_cur = want, .rlim_max = rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &nl) == 0)
			rl.rlim_cur = want;
		else
			arc_log("setrlimit(RLIMIT_NOFILE, %llu) failed: %s",
				(unsigned long long)want, arc_errname(errno));
	}
	uint64_t room = rl.rlim_cur > fixed ? (rl.rlim_cur - fixed) / 2 : 0;
	if (rl.rlim_cur < need && opt > room) {
		/* the pipe reserves are optional (past them a direction relays
		 * on buffers, or waits for one as it would without moves):
		 * when descriptors are short they get at most half of what the
		 * fixed margin leaves, connections the rest */
		uint32_t p0 = cfg->pipe_trial, m0 = cfg_moved_pipes(cfg),
			 s0 = cfg->stream_pipes;
		cfg->pipe_trial = (uint32_t)(p0 * room / opt);
		cfg->moved_max = (uint32_t)(m0 * room / opt);
		cfg->stream_pipes = (uint32_t)(s0 * room / opt);
		arc_log("pipe reserves lowered by the open-files limit (%llu "
			"descriptors), per worker: ARCTIC_PIPE_TRIAL %u -> %u, "
			"moved pipes %u -> %u, ARCTIC_STREAM_PIPES %u -> %u",
			(unsigned long long)rl.rlim_cur, p0, cfg->pipe_trial, m0,
			cfg_moved_pipes(cfg), s0, cfg->stream_pipes);
		slack = fixed + 2 * reserved_pipes(cfg) * nworkers;
		need = (uint64_t)cfg->max_connections * per + slack;
	}
	if (rl.rlim_cur < need) {
		uint64_t cap = rl.rlim_cur > slack ? (rl.rlim_cur - slack) / per : 1;
		if (cap < 1)
			cap = 1;
		if (cap < cfg->max_connections) {
			arc_log("max_connections capped at %llu by the open-files limit "
				"(%llu descriptors, %llu per connection; asked %u): raise "
				"it with ulimit -n",
				(unsigned long long)cap,
				(unsigned long long)rl.rlim_cur,
				(unsigned long long)per, cfg->max_connections);
			cfg->max_connections = (uint32_t)cap;
		}
	}
}

static int bind_listeners(struct config *cfg, int *fds, size_t n)
{
	char err[300];
	/* The listeners have SO_REUSEPORT, so they would join the group of
	 * any other process of this user with such listeners on the port (a
	 * second instance, nginx with reuseport) and take part of its
	 * clients, silently. A port in use stops the start instead, unless
	 * joining is asked for. Port 0 never lands on a port in use. */
	if (net_port(&cfg->listen) != 0 && !cfg->reuseport_join &&
	    net_port_free(&cfg->listen, err, sizeof(err))) {
		arc_log("%s", err);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		int fd = net_listen(cfg, &cfg->listen, err, sizeof(err));
		if (fd < 0) {
			arc_log("%s", err);
			for (size_t k = 0; k < i; k++)
				close(fds[k]);
			return -1;
		}
		fds[i] = fd;
		if (i == 0 && net_port(&cfg->listen) == 0) {
			/* port 0: every worker shares the port the kernel
			 * picked for the first listener */
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1) {
				arc_log("getsockname(%s) failed: %s",
					cfg->listen.text, arc_errname(errno));
				close(fd);
				return -1;
			}
			uint16_t port = ss.ss_family == AF_INET6
						? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
						: ntohs(((struct sockaddr_in *)&ss)->sin_port);
			net_set_port(&cfg->listen, port);
		}
	}
	return 0;
}

/* Stats lines go to stdout without ever blocking this thread, which also
 * takes the signals (arc_out_nonblocking): a line that finds no room is
 * dropped and counted, and the rest of a line written in part goes out
 * before any later stats line (at exit, within a second). A stdout closed
 * at exec is /dev/null (arc_std_fds); one whose reader goes away is ignored
 * (SIGPIPE is ignored too). */
struct out_line {
	char *rest;
	size_t off, len, cap;
	uint64_t dropped;
};

static void emit(struct out_line *o, const char *buf, size_t len)
{
	if (o->off < o->len) {
		ssize_t n = arc_out_write(STDOUT_FILENO, o->rest + o->off,
					  o->len - o->off);
		if (n > 0)
			o->off += (size_t)n;
		else if (n == -1 && errno != EAGAIN && errno != EINTR)
			o->off = o->len; /* closed */
		if (o->off < o->len) {
			o->dropped++;
			return;
		}
	}
	ssize_t n = arc_out_write(STDOUT_FILENO, buf, len);
	if (n == -1) {
		if (errno == EAGAIN || errno == EINTR)
			o->dropped++;
		return;
	}
	if ((size_t)n < len && len - (size_t)n <= o->cap) {
		memcpy(o->rest, buf + n, len - (size_t)n);
		o->off = 0;
		o->len = len - (size_t)n;
	}
}

static void collect(struct worker *ws, size_t n, struct stats_snap *per,
		    struct stats_winfo *info, struct stats_snap *total)
{
	memset(total, 0, sizeof(*total));
	for (size_t i = 0; i < n; i++) {
		if (info)
			info[i] = ws[i].info;
		stats_read(ws[i].stats, &per[i]);
		stats_sum(total, &per[i]);
	}
}

/* Runs the proxy until a signal ends the drain. Returns the exit status. */
static int serve(struct config *cfg, const struct topo_plan *plan)
{
	size_t nw = plan->nworkers;
	arc_out_nonblocking();
	raise_nofile(cfg, nw);

	if (cfg->upstream_test_timeout_secs) {
		int rc = net_check_upstream(&cfg->upstream, cfg->upstream_test_timeout_secs);
		if (rc) {
			arc_log("upstream check: connect(%s) failed: %s (timeout %u s; "
				"upstream_test_timeout_secs=0 skips the check)",
				cfg->upstream.text, arc_errname(rc),
				cfg->upstream_test_timeout_secs);
			return 1;
		}
	}

	/* Signals are taken synchronously by this thread only. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	int src = pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (src) {
		arc_log("pthread_sigmask() failed: %s", arc_errname(-src));
		return 1;
	}
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		arc_log("ignoring SIGPIPE failed: %s", arc_errname(-errno));
		return 1;
	}

	int status = 1;
	int rc = mem_init((unsigned)plan->nnodes);
	if (rc) {
		arc_log("creating %zu jemalloc arenas failed: %s", plan->nnodes,
			arc_errname(rc));
		return 1;
	}
	int *fds = calloc(nw, sizeof(int));
	struct worker *ws = aligned_alloc(64, nw * sizeof(struct worker));
	struct stats_snap *per = calloc(nw, sizeof(*per));
	struct stats_winfo *info = calloc(nw, sizeof(*info));
	/* the longest line this many workers can make */
	size_t line_cap = stats_json_size(nw);
	if (line_cap < 512)
		line_cap = 512;
	char *line = malloc(line_cap);
	struct out_line out = {.rest = malloc(line_cap), .cap = line_cap};
	if (!fds || !ws || !per || !info || !line || !out.rest) {
		arc_log("out of memory for %zu workers", nw);
		goto out_free;
	}
	if (bind_listeners(cfg, fds, nw))
		goto out_free;

	static struct shared sh;
	sh.cfg = cfg;
	sh.plan = plan;
	pthread_mutex_init(&sh.lock, NULL);
	pthread_cond_init(&sh.cond, NULL);
	for (size_t i = 0; i < ARC_ARRAY_SIZE(sh.sq_fd); i++)
		sh.sq_fd[i] = -1;
	/* from here until the workers are joined, no write to stdout or
	 * stderr waits for room */
	arc_out_patience(0);
	for (size_t i = 0; i < nw; i++) {
		rc = worker_start(&ws[i], &sh, (unsigned)i, fds[i]);
		if (rc) {
			arc_out_patience(1000);
			arc_log("starting worker %zu failed: %s", i, arc_errname(rc));
			arc_out_restore();
			_exit(1);
		}
	}
	pthread_mutex_lock(&sh.lock);
	while (sh.ready + sh.failed < nw)
		pthread_cond_wait(&sh.cond, &sh.lock);
	pthread_mutex_unlock(&sh.lock);
	if (sh.failed) {
		arc_out_patience(1000);
		arc_log("%s", sh.error);
		arc_out_restore();
		_exit(1);
	}

	arc_log("arctic-proxy %s: %zu worker%s (%s), io_mode=%s, max_connections=%u, "
		"jemalloc arenas=%zu%s",
		ARCTIC_VERSION, nw, nw == 1 ? "" : "s", plan->policy,
		cfg->io_mode == CFG_IO_SPLICE ? "splice" : cfg->io_mode == CFG_IO_BUFFER ? "buffer" : "auto",
		cfg->max_connections, plan->nnodes,
		mem_have_jemalloc() ? "" : " (libc allocator)");
	log_settings(cfg);
	arc_log("listening on %s (upstream %s)", cfg->listen.text, cfg->upstream.text);

	struct stats_snap total, prev;
	memset(&prev, 0, sizeof(prev));
	uint64_t interval = (uint64_t)cfg->stats_interval_ms * 1000000ull;
	uint64_t t0 = arc_now_ns(), last = t0, next = t0 + interval;
	int shutting = 0;
	for (;;) {
		uint64_t now = arc_now_ns();
		if (shutting && atomic_load(&sh.finished) == nw)
			break;
		if (now >= next) {
			collect(ws, nw, per, info, &total);
			size_t len = cfg->stats_format == CFG_STATS_JSON
					     ? stats_format_json(line, line_cap,
								 (now - t0) / 1000000, &total,
								 &prev, per, info, nw, now - last)
					     : stats_format_text(line, line_cap, &total,
								 &prev, now - last);
			emit(&out, line, len);
			prev = total;
			last = now;
			next += interval;
			if (next <= now)
				next = now + interval;
			continue;
		}
		uint64_t wait = next - now;
		if (shutting && wait > 50000000ull)
			wait = 50000000ull; /* notice the end of the drain */
		struct timespec ts = {.tv_sec = (time_t)(wait / 1000000000ull),
				      .tv_nsec = (long)(wait % 1000000000ull)};
		int sig = sigtimedwait(&sigs, NULL, &ts);
		if (sig <= 0)
			continue;
		if (shutting) {
			arc_log("second signal (%s): exiting now", sigabbrev_np(sig));
			arc_out_restore();
			_exit(128 + sig);
		}
		shutting = sig;
		collect(ws, nw, per, NULL, &total);
		arc_log("%s received: listeners closed, draining %llu connection%s "
			"for up to %u s (a second signal exits now)",
			sigabbrev_np(sig), (unsigned long long)stats_active(&total),
			stats_active(&total) == 1 ? "" : "s", cfg->shutdown_drain_secs);
		for (size_t i = 0; i < nw; i++)
			worker_wake(&ws[i]);
	}
	for (size_t i = 0; i < nw; i++)
		worker_join(&ws[i]);
	/* the last lines may wait a little for a slow reader */
	arc_out_patience(1000);
	if (out.off < out.len && arc_out_write(STDOUT_FILENO, out.rest + out.off,
					       out.len - out.off) < (ssize_t)(out.len - out.off))
		out.dropped++;
	collect(ws, nw, per, NULL, &total);
	if (total.c[ST_DRAIN_ABORTED])
		arc_log("drain timeout after %u s: %llu connection%s remaining, aborted",
			cfg->shutdown_drain_secs,
			(unsigned long long)total.c[ST_DRAIN_ABORTED],
			total.c[ST_DRAIN_ABORTED] == 1 ? "" : "s");
	else
		arc_log("all connections drained");
	if (out.dropped)
		arc_log("%llu stats line%s dropped: stdout was not being read",
			(unsigned long long)out.dropped, out.dropped == 1 ? "" : "s");
	unsigned long long lost = arc_log_dropped();
	if (lost)
		arc_log("%llu log line%s dropped: stderr was not being read", lost,
			lost == 1 ? "" : "s");
	arc_log("shutdown complete");
	for (size_t i = 0; i < nw; i++)
		worker_free(&ws[i]);
	status = 0;
out_free:
	arc_out_restore();
	free(line);
	free(out.rest);
	free(fds);
	free(ws);
	free(per);
	free(info);
	return status;
}

int main(int argc, char **argv)
{
	static struct config cfg;
	char err[600];

	arc_std_fds();
	int action = cfg_parse(&cfg, argc, argv, environ, err, sizeof(err));
	if (action < 0) {
		arc_log("%s", err);
		return 2;
	}
	if (action == CFG_HELP) {
		cfg_usage(stdout);
		return 0;
	}
	if (action == CFG_VERSION) {
		printf("arctic-proxy %s\n", ARCTIC_VERSION);
		probe_print(stdout);
		return 0;
	}

	struct topo_plan plan;
	if (topo_plan(&cfg, &plan, err, sizeof(err))) {
		arc_log("%s", err);
		return 2;
	}
	if (action == CFG_PLAN) {
		print_plan(&cfg, &plan);
		topo_plan_free(&plan);
		return 0;
	}
	int rc = 2;
	if (!plan.is_this_system)
		arc_log("the plan comes from %s, not this machine: use it with --plan only",
			plan.source);
	else if ((rc = probe_check(&cfg, err, sizeof(err))))
		arc_log("%s", err);
	else
		rc = serve(&cfg, &plan);
	arc_out_restore(); /* every way out of serve() */
	topo_plan_free(&plan);
	return rc;
}
