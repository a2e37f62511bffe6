#define _GNU_SOURCE
#include "arctic/util.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
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
	/* A failed log write must never take the proxy down. */
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

uint64_t arc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
