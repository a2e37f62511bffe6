#define _GNU_SOURCE
#include "arctic/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void arc_bug(const char *file, int line, const char *cond)
{
	arc_log("BUG at %s:%d: %s", file, line, cond);
	abort();
}

const char *arc_errname(int err)
{
	if (err < 0)
		err = -err;
	const char *name = strerrorname_np(err);
	return name ? name : "EUNKNOWN";
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
	 * stderr hold a thread: the line is dropped (arc_out_nonblocking). */
	ssize_t w = arc_out_write(STDERR_FILENO, line, len);
	(void)w;
}

static bool out_sock[3];

void arc_out_nonblocking(void)
{
	for (int fd = STDOUT_FILENO; fd <= STDERR_FILENO; fd++) {
		struct stat st;
		if (fstat(fd, &st) == -1)
			continue; /* closed: writes fail with EBADF */
		if (S_ISSOCK(st.st_mode)) {
			out_sock[fd] = true;
			continue;
		}
		if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
			continue; /* a regular file does not stall */
		int fl = fcntl(fd, F_GETFL);
		if (fl == -1 || (fl & O_NONBLOCK))
			continue;
		/* a new open file description of the same pipe or terminal;
		 * fails (ENXIO) for a pipe nobody reads any more, whose
		 * writes fail anyway */
		char path[32];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		int nfd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC |
					     (fl & O_APPEND));
		if (nfd == -1)
			continue;
		if (dup2(nfd, fd) == -1)
			arc_log("dup2(%s) failed: %s: fd %d stays blocking", path,
				arc_errname(errno), fd);
		close(nfd);
	}
}

ssize_t arc_out_write(int fd, const void *buf, size_t len)
{
	if (fd >= 0 && fd < (int)ARC_ARRAY_SIZE(out_sock) && out_sock[fd])
		return send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	return write(fd, buf, len);
}

uint64_t arc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
