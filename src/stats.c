#include "arctic/stats.h"

#include <stdio.h>
#include <string.h>

const char *const stats_names[ST_COUNT] = {
	[ST_ACCEPTED] = "accepted",
	[ST_CLOSED] = "closed",
	[ST_REJECTED] = "rejected",
	[ST_ERR_ACCEPT] = "err_accept",
	[ST_ERR_CONNECT] = "err_connect",
	[ST_ERR_RESET] = "err_reset",
	[ST_ERR_OTHER] = "err_other",
	[ST_IDLE_CLOSED] = "idle_closed",
	[ST_DRAIN_ABORTED] = "drain_aborted",
	[ST_MOVED_TO_PIPE] = "moved_to_pipe",
	[ST_BYTES_C2U] = "bytes_c2u",
	[ST_BYTES_U2C] = "bytes_u2c",
	[ST_LOOPS] = "loops",
	[ST_BUSY_SPINS] = "busy_spins",
	[ST_IDLE_FALLBACKS] = "idle_fallbacks",
};

void stats_read(const struct worker_stats *s, struct stats_snap *out)
{
	for (int i = 0; i < ST_COUNT; i++)
		out->c[i] = atomic_load_explicit(&s->c[i],
						 memory_order_relaxed);
}

void stats_sum(struct stats_snap *acc, const struct stats_snap *s)
{
	for (int i = 0; i < ST_COUNT; i++)
		acc->c[i] += s->c[i];
}

static uint64_t bytes_of(const struct stats_snap *s)
{
	return s->c[ST_BYTES_C2U] + s->c[ST_BYTES_U2C];
}

static double gbps(const struct stats_snap *cur, const struct stats_snap *prev,
		   uint64_t interval_ns)
{
	if (!interval_ns)
		return 0.0;
	uint64_t d = bytes_of(cur) - bytes_of(prev);
	return (double)d * 8.0 / (double)interval_ns; /* bits/ns = Gbit/s */
}

size_t stats_format_text(char *buf, size_t len, const struct stats_snap *cur,
			 const struct stats_snap *prev, uint64_t interval_ns)
{
	int n = snprintf(buf, len,
			 "\xe2\x9a\xa1 %6llu active | %7llu err | %7llu rej | "
			 "%7.2f Gbps | %10.2f GB total\n",
			 (unsigned long long)stats_active(cur),
			 (unsigned long long)stats_errors(cur),
			 (unsigned long long)cur->c[ST_REJECTED],
			 gbps(cur, prev, interval_ns),
			 (double)bytes_of(cur) / 1e9);
	if (n < 0)
		return 0;
	return (size_t)n < len ? (size_t)n : len - 1;
}

static int json_counters(char *buf, size_t len, const struct stats_snap *s)
{
	int off = snprintf(buf, len, "\"active\":%llu",
			   (unsigned long long)stats_active(s));
	for (int i = 0; i < ST_COUNT && off < (int)len; i++)
		off += snprintf(buf + off, len - (size_t)off, ",\"%s\":%llu",
				stats_names[i], (unsigned long long)s->c[i]);
	if (off < (int)len)
		off += snprintf(buf + off, len - (size_t)off, ",\"errors\":%llu",
				(unsigned long long)stats_errors(s));
	return off;
}

size_t stats_json_size(size_t nworkers)
{
	/* "active" and "errors", then ,"name":N per counter; a number takes
	 * at most 20 digits */
	size_t counters = 2 * 32;
	for (int i = 0; i < ST_COUNT; i++)
		counters += strlen(stats_names[i]) + 4 + 20;
	/* {"worker":N, plus four placement ints of at most 11 characters */
	size_t worker = counters + 32 + 64 + 4 * 11;
	/* t_ms, interval_ms, gbps (at most ~30 characters each), brackets */
	return 256 + counters + nworkers * worker;
}

size_t stats_format_json(char *buf, size_t len, uint64_t t_ms,
			 const struct stats_snap *total,
			 const struct stats_snap *prev_total,
			 const struct stats_snap *workers,
			 const struct stats_winfo *info, size_t nworkers,
			 uint64_t interval_ns)
{
	int off = snprintf(buf, len,
			   "{\"t_ms\":%llu,\"interval_ms\":%.3f,\"gbps\":%.6f,"
			   "\"total\":{",
			   (unsigned long long)t_ms, (double)interval_ns / 1e6,
			   gbps(total, prev_total, interval_ns));
	if (off < (int)len)
		off += json_counters(buf + off, len - (size_t)off, total);
	if (off < (int)len)
		off += snprintf(buf + off, len - (size_t)off, "},\"workers\":[");
	for (size_t w = 0; w < nworkers && off < (int)len; w++) {
		off += snprintf(buf + off, len - (size_t)off, "%s{\"worker\":%zu,",
				w ? "," : "", w);
		if (info && off < (int)len)
			off += snprintf(buf + off, len - (size_t)off,
					"\"pu\":%d,\"node\":%d,\"arena\":%d,\"slab_arena\":%d,",
					info[w].pu, info[w].node, info[w].arena,
					info[w].slab_arena);
		if (off < (int)len)
			off += json_counters(buf + off, len - (size_t)off,
					     &workers[w]);
		if (off < (int)len)
			off += snprintf(buf + off, len - (size_t)off, "}");
	}
	if (off < (int)len)
		off += snprintf(buf + off, len - (size_t)off, "]}\n");
	if (off >= (int)len) {
		/* never emit a truncated object */
		if (len > 3) {
			memcpy(buf, "{}\n", 4);
			return 3;
		}
		return 0;
	}
	return (size_t)off;
}
