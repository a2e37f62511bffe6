/* stats: the status line and the JSON object. */
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "arctic/stats.h"
#include "check.h"

int main(void)
{
	struct stats_snap prev = {{0}}, cur = {{0}};
	cur.c[ST_ACCEPTED] = 300;
	cur.c[ST_CLOSED] = 66;
	cur.c[ST_ERR_CONNECT] = 10;
	cur.c[ST_ERR_RESET] = 2;
	cur.c[ST_REJECTED] = 5;
	cur.c[ST_BYTES_C2U] = 1000000000ull;
	cur.c[ST_BYTES_U2C] = 250000000ull;
	char buf[512];
	size_t n = stats_format_text(buf, sizeof(buf), &cur, &prev, 1000000000ull);
	CHECK(n == strlen(buf), "length");
	CHECK(strcmp(buf, "\xe2\x9a\xa1    234 active |      12 err |       5 rej |   10.00 Gbps |       1.25 GB total\n") == 0,
	      "got '%s'", buf);

	regex_t re;
	regcomp(&re, "^\xe2\x9a\xa1 +[0-9]+ active \\| +[0-9]+ err \\| +[0-9]+ rej \\| +[0-9.]+ Gbps \\| +[0-9.]+ GB total\n$",
		REG_EXTENDED);
	CHECK(regexec(&re, buf, 0, NULL, 0) == 0, "regex");
	regfree(&re);

	/* over half a second: rate doubles */
	prev = cur;
	cur.c[ST_BYTES_C2U] += 125000000ull;
	stats_format_text(buf, sizeof(buf), &cur, &prev, 500000000ull);
	CHECK(strstr(buf, "    2.00 Gbps") != NULL, "rate: %s", buf);
	CHECK(strstr(buf, "1.38 GB total") != NULL, "total: %s", buf);
	/* zero interval never divides by zero */
	stats_format_text(buf, sizeof(buf), &cur, &prev, 0);
	CHECK(strstr(buf, "0.00 Gbps") != NULL, "zero interval: %s", buf);
	/* small buffer: truncated, terminated */
	n = stats_format_text(buf, 10, &cur, &prev, 1);
	CHECK(n == 9 && buf[9] == '\0', "truncation n=%zu", n);

	struct stats_snap workers[2] = {cur, prev};
	char js[4096];
	struct stats_winfo info[2] = {{0, 0, 8, 8}, {1, 0, 8, 8}};
	n = stats_format_json(js, sizeof(js), 1234, &cur, &prev, workers, info, 2, 1000000000ull);
	CHECK(n > 0 && js[n - 1] == '\n', "json newline");
	CHECK(strstr(js, "\"t_ms\":1234") && strstr(js, "\"total\":{\"active\":234,") &&
	      strstr(js, "\"rejected\":5") && strstr(js, "\"workers\":[{\"worker\":0,") &&
	      strstr(js, "{\"worker\":1,\"pu\":1,\"node\":0,\"arena\":8,\"slab_arena\":8,") && strstr(js, "\"errors\":12"),
	      "json: %s", js);
	n = stats_format_json(js, 50, 1, &cur, &prev, workers, NULL, 2, 1);
	CHECK(strcmp(js, "{}\n") == 0, "json truncation gives an empty object, got %s", js);

	/* a machine with many workers, every counter and placement value at
	 * its longest: the buffer stats_json_size() asks for holds the whole
	 * object (a fixed buffer gave "{}" past about 20 workers) */
	{
		enum { NW = 512 };
		static struct stats_snap big[NW];
		static struct stats_winfo binfo[NW];
		struct stats_snap bt;
		memset(&bt, 0xff, sizeof(bt));
		for (size_t i = 0; i < NW; i++) {
			big[i] = bt;
			binfo[i] = (struct stats_winfo){-2147483647 - 1, -2147483647 - 1,
							-2147483647 - 1, -2147483647 - 1};
		}
		size_t cap = stats_json_size(NW);
		char *bj = malloc(cap);
		CHECK(bj != NULL, "malloc");
		n = stats_format_json(bj, cap, UINT64_MAX, &bt, &prev, big, binfo, NW, 1);
		CHECK(n > 3 && n < cap && bj[n - 1] == '\n' && strcmp(bj + n - 3, "]}\n") == 0,
		      "json for %d workers: n=%zu cap=%zu", NW, n, cap);
		size_t objs = 0;
		for (const char *q = bj; (q = strstr(q, "{\"worker\":")); q++)
			objs++;
		CHECK(objs == NW, "%zu worker objects, expected %d", objs, NW);
		free(bj);
	}

	struct worker_stats ws;
	memset(&ws, 0, sizeof(ws));
	stats_add(&ws, ST_LOOPS, 3);
	stats_add(&ws, ST_LOOPS, 4);
	struct stats_snap s;
	stats_read(&ws, &s);
	CHECK(s.c[ST_LOOPS] == 7, "stats_add");
	CHECK(sizeof(struct worker_stats) % 64 == 0, "cache lines");

	/* counters read while a connection opened and closed between the
	 * reads of accepted and closed: no wrap to 2^64 - 1 */
	struct stats_snap race = {{0}}, none = {{0}};
	race.c[ST_ACCEPTED] = 41;
	race.c[ST_CLOSED] = 42;
	CHECK(stats_active(&race) == 0, "active %llu with closed > accepted",
	      (unsigned long long)stats_active(&race));
	stats_format_text(buf, sizeof(buf), &race, &none, 1000000000ull);
	CHECK(strstr(buf, "      0 active") != NULL, "line with closed > accepted: %s", buf);
	CHECK_DONE();
}
