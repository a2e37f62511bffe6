#define _GNU_SOURCE
#include "arctic/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void arc_bug(const char *file, int line, const char *cond)
{
	arc_out_patience(1000); /* the last words are worth a wait */
	arc_log("BUG at %s:%d: %s", file, line, cond);
	arc_out_restore();
	abort();
}

const char *arc_errname(int err)
{
	if (err < 0)
		err = -err;
	const char *name = strerrorname_np(err);
	return name ? name : "EUNKNOWN";
}

static _Atomic unsigned long long log_dropped;

unsigned long long arc_log_dropped(void)
{
	return log_dropped;
}

void arc_log(const char *fmt, ...)
{
	char line[4608];
	int n = snprintf(line, sizeof(line), "arctic-proxy: ");
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	/* A failed log write must never take the proxy down, nor a stalled
	 * stderr hold a thread: the line is dropped (arc_out_nonblocking) and
	 * counted; so is the rest of a line cut short. */
	if (arc_out_write(STDERR_FILENO, line, len) != (ssize_t)len)
		log_dropped++;
}

void arc_std_fds(void)
{
	for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
		if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
			continue;
		/* open() takes the lowest free descriptor: this one */
		int nfd = open("/dev/null", O_RDWR);
		if (nfd != -1 && nfd != fd) {
			(void)dup2(nfd, fd);
			close(nfd);
		}
	}
}

/* fd 1 and 2 while serving (arc_out_nonblocking) */
static struct {
	bool sock;      /* a socket: written with MSG_DONTWAIT */
	int restore_fl; /* a shared description made O_NONBLOCK: its flags
			 * before, put back by arc_out_restore(); else -1 */
} out[3] = {{false, -1}, {false, -1}, {false, -1}};
static _Atomic unsigned out_patience_ms;

void arc_out_nonblocking(void)
{
	for (int fd = STDOUT_FILENO; fd <= STDERR_FILENO; fd++) {
		struct stat st;
		if (fstat(fd, &st) == -1)
			continue; /* closed: writes fail with EBADF */
		if (S_ISSOCK(st.st_mode)) {
			out[fd].sock = true;
			continue;
		}
		if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
			continue; /* a regular file does not stall */
		int fl = fcntl(fd, F_GETFL);
		if (fl == -1 || (fl & O_NONBLOCK))
			continue;
		/* a new open file description of the same pipe or terminal
		 * (the one shared with the parent keeps its flags) */
		char path[32];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		int nfd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC |
					     (fl & O_APPEND));
		if (nfd != -1) {
			int rc = dup2(nfd, fd);
			close(nfd);
			if (rc != -1)
				continue;
		}
		/* not ours to reopen (a pipe or terminal of another user,
		 * EACCES; no /proc): the shared description itself goes
		 * O_NONBLOCK until arc_out_restore() */
		if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0)
			out[fd].restore_fl = fl;
		else
			arc_log("fcntl(%d, F_SETFL, O_NONBLOCK) failed: %s: writes to fd %d "
				"may block", fd, arc_errname(errno), fd);
	}
	out_patience_ms = 1000;
}

void arc_out_patience(unsigned ms)
{
	out_patience_ms = ms;
}

void arc_out_restore(void)
{
	for (int fd = STDOUT_FILENO; fd <= STDERR_FILENO; fd++) {
		if (out[fd].restore_fl != -1) {
			(void)fcntl(fd, F_SETFL, out[fd].restore_fl);
			out[fd].restore_fl = -1;
		}
	}
}

static ssize_t out_write1(int fd, const void *buf, size_t len)
{
	if (fd >= 0 && fd < (int)ARC_ARRAY_SIZE(out) && out[fd].sock)
		return send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	return write(fd, buf, len);
}

ssize_t arc_out_write(int fd, const void *buf, size_t len)
{
	unsigned patience = out_patience_ms;
	uint64_t deadline = patience ? arc_now_ns() + patience * 1000000ull : 0;
	size_t done = 0;
	for (;;) {
		ssize_t n = out_write1(fd, (const char *)buf + done, len - done);
		if (n > 0)
			done += (size_t)n;
		else if (n == -1 && errno != EAGAIN && errno != EINTR)
			return done ? (ssize_t)done : -1;
		if (done == len || !patience)
			break;
		uint64_t now = arc_now_ns();
		if (now >= deadline) {
			out_patience_ms = 0; /* a reader that stalled: no more waits */
			break;
		}
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		(void)poll(&pfd, 1, (int)((deadline - now) / 1000000ull) + 1);
	}
	if (!done) {
		errno = EAGAIN;
		return -1;
	}
	return (ssize_t)done;
}

uint64_t arc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
