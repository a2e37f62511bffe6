#define _GNU_SOURCE
#include "arctic/config.h"
#include "arctic/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define OFF(f) offsetof(struct config, f)
#define SZ(f) sizeof(((struct config *)0)->f)

static const char *const io_modes[] = {"auto", "buffer", "splice", NULL};
static const char *const poll_modes[] = {"wait", "hybrid", "busy", NULL};
static const char *const stats_formats[] = {"text", "json", NULL};

#define POS_ADDR(pos, n, f, d, h) \
	{n, pos, CFG_T_ADDR, OFF(f), 0, 0, 0, NULL, false, d, h}
#define POS_U32(pos, n, f, lo, hi, d, h) \
	{n, pos, CFG_T_U32, OFF(f), 0, lo, hi, NULL, false, d, h}
#define ENV_U32(n, f, lo, hi, d, h) \
	{n, 0, CFG_T_U32, OFF(f), 0, lo, hi, NULL, false, d, h}
#define ENV_POW2(n, f, lo, hi, d, h) \
	{n, 0, CFG_T_U32, OFF(f), 0, lo, hi, NULL, true, d, h}
#define ENV_BOOL(n, f, d, h) \
	{n, 0, CFG_T_BOOL, OFF(f), 0, 0, 1, NULL, false, d, h}
#define ENV_ENUM(n, f, names, d, h) \
	{n, 0, CFG_T_ENUM, OFF(f), 0, 0, 0, names, false, d, h}
#define ENV_STR(n, f, d, h) \
	{n, 0, CFG_T_STR, OFF(f), SZ(f), 0, 0, NULL, false, d, h}

const struct cfg_option cfg_options[] = {
	POS_ADDR(1, "listen", listen, "0.0.0.0:8080",
		 "address to listen on (IPv4, [IPv6] or host name; port 0 = any)"),
	POS_ADDR(2, "upstream", upstream, "127.0.0.1:80",
		 "upstream address (host names are resolved once, at start)"),
	POS_U32(3, "max_connections", max_connections, 1, 10000000, "100000",
		"maximum concurrent proxied connections (all workers)"),
	POS_U32(4, "timeout_secs", timeout_secs, 1, 3600, "5",
		"upstream connect timeout in seconds"),
	POS_U32(5, "buffer_size", buffer_size, 0, 268435456, "65536",
		"SO_RCVBUF/SO_SNDBUF in bytes (0 = kernel autotuning)"),
	POS_U32(6, "backlog", backlog, 1, 65535, "4096", "TCP listen backlog"),
	POS_U32(7, "reject_sleep_ms", reject_sleep_ms, 0, 60000, "10",
		"pause accepting this long after a rejection"),
	POS_U32(8, "shutdown_drain_secs", shutdown_drain_secs, 0, 86400, "5",
		"on SIGINT/SIGTERM, wait this long for connections to finish"),
	POS_U32(9, "upstream_test_timeout_secs", upstream_test_timeout_secs, 0,
		3600, "3", "test connect to the upstream at start (0 = skip)"),

	ENV_U32("ARCTIC_WORKERS", workers, 1, 4096, "auto",
		"worker threads (auto: one per CPU of the plan)"),
	ENV_ENUM("ARCTIC_IO_MODE", io_mode, io_modes, "auto",
		 "relay: buffers, switching a streaming direction to a pipe (auto); buffer; splice"),
	ENV_U32("ARCTIC_IDLE_TIMEOUT_S", idle_timeout_s, 0, 604800, "0",
		"close a connection idle both ways this long (0 = never)"),
	ENV_U32("ARCTIC_DEFER_ACCEPT", defer_accept_s, 0, 3600, "0",
		"TCP_DEFER_ACCEPT seconds (0 = off; delays server-speaks-first protocols)"),
	ENV_BOOL("ARCTIC_REUSEPORT_JOIN", reuseport_join, "0",
		 "share LISTEN with SO_REUSEPORT listeners already on it (a restart: start the new, then stop the old); 0 = a port in use stops the start"),
	ENV_U32("ARCTIC_BUF_SIZE", buf_size, 1024, 4194304, "65536",
		"bytes per relay buffer"),
	ENV_POW2("ARCTIC_BUF_COUNT", buf_count, 8, 32768, "256",
		 "relay buffers per worker (power of two)"),
	ENV_U32("ARCTIC_PIPE_SIZE", pipe_size, 4096, 1048576, "262144",
		"pipe capacity per spliced direction (bounds bytes in flight)"),
	ENV_U32("ARCTIC_SPLICE_AFTER", splice_after, 1, 255, "4",
		"auto: big reads in a row (>= 1/4 buffer) before a direction switches to splice"),
	ENV_U32("ARCTIC_PIPE_TRIAL", pipe_trial, 0, 1000000, "64",
		"auto: trial directions per worker holding a pipe at once, also the pool of empty pipes (0 = start on buffers)"),
	ENV_U32("ARCTIC_STREAM_PIPES", stream_pipes, 0, 1000000, "256",
		"auto: streaming directions per worker on a pipe at once (past that, buffers)"),
	ENV_U32("ARCTIC_INFLIGHT", inflight, 1, 8, "2",
		"relay buffers held per direction (bounds bytes in flight)"),
	/* the completion queue is 4x: 65536 is the kernel's largest */
	ENV_POW2("ARCTIC_RING_ENTRIES", ring_entries, 64, 16384, "1024",
		 "submission queue entries per worker ring (power of two; the completion queue is 4x)"),
	ENV_BOOL("ARCTIC_QUICKACK", quickack, "1",
		 "ACK the upstream's data at once (0 = delayed ACKs ride on the next segment sent upstream)"),

	ENV_STR("ARCTIC_TOPOLOGY", topology, "",
		"hwloc XML file to plan for instead of this machine"),
	ENV_STR("ARCTIC_CPUS", cpus, "",
		"restrict workers to these CPUs (list, e.g. 0-7,16-23)"),
	ENV_STR("ARCTIC_NUMA_NODES", numa_nodes, "",
		"restrict workers to these NUMA nodes (list)"),
	ENV_BOOL("ARCTIC_SMT", smt, "0",
		 "a worker on every hardware thread, not one per core"),
	ENV_STR("ARCTIC_NIC", nic, "",
		"prefer the cores of this network device's NUMA node"),

	ENV_BOOL("ARCTIC_SQPOLL", sqpoll, "0",
		 "kernel submission-queue polling thread per ring"),
	ENV_U32("ARCTIC_SQPOLL_IDLE_MS", sqpoll_idle_ms, 0, 60000, "1000",
		"SQPOLL thread idle time before it sleeps"),
	ENV_BOOL("ARCTIC_SQPOLL_SHARED", sqpoll_shared, "0",
		 "one SQPOLL thread per NUMA node, shared by its workers"),
	ENV_U32("ARCTIC_BUSY_POLL_US", busy_poll_us, 0, 1000000, "0",
		"SO_BUSY_POLL microseconds on every socket (0 = off)"),
	ENV_BOOL("ARCTIC_PREFER_BUSY_POLL", prefer_busy_poll, "0",
		 "SO_PREFER_BUSY_POLL on every socket"),
	ENV_U32("ARCTIC_BUSY_POLL_BUDGET", busy_poll_budget, 0, 65535, "0",
		"SO_BUSY_POLL_BUDGET packets (0 = kernel default)"),
	ENV_U32("ARCTIC_NAPI_US", napi_us, 0, 1000000, "0",
		"io_uring NAPI busy-poll microseconds (kernel 6.9+, 0 = off)"),
	ENV_ENUM("ARCTIC_POLL", poll, poll_modes, "hybrid",
		 "worker loop: sleep (wait), spin a while (ARCTIC_POLL_SPIN_US to _MAX_US) then sleep (hybrid), spin (busy)"),
	ENV_U32("ARCTIC_POLL_SPIN_US", poll_spin_us, 1, 1000000, "20",
		"hybrid: spin at least this long after the last completion before sleeping"),
	ENV_U32("ARCTIC_POLL_SPIN_MAX_US", poll_spin_max_us, 1, 1000000, "50",
		"hybrid: the spin doubles, up to this, while sleeps end within it"),
	ENV_U32("ARCTIC_POLL_IDLE_US", poll_idle_us, 0, 60000000, "10000",
		"busy loop falls back to waiting after this idle time (0 = never)"),

	ENV_ENUM("ARCTIC_STATS_FORMAT", stats_format, stats_formats, "text",
		 "stats line format on stdout"),
	ENV_U32("ARCTIC_STATS_INTERVAL_MS", stats_interval_ms, 10, 3600000,
		"1000", "stats interval in milliseconds"),
};
const size_t cfg_option_count = sizeof(cfg_options) / sizeof(cfg_options[0]);

static uint32_t *u32_at(struct config *cfg, const struct cfg_option *o)
{
	return (uint32_t *)((char *)cfg + o->offset);
}

static const uint32_t *cu32_at(const struct config *cfg,
			       const struct cfg_option *o)
{
	return (const uint32_t *)((const char *)cfg + o->offset);
}

/* Strict unsigned parse: decimal digits only, no sign, no blanks. */
static int parse_u64(const char *s, uint64_t *out)
{
	if (*s == '\0')
		return -1;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*out = v;
	return 0;
}

static int parse_bool(const char *s, uint32_t *out)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

int cfg_set(struct config *cfg, const struct cfg_option *o, const char *val,
	    char *err, size_t errlen)
{
	char why[200];
	switch (o->type) {
	case CFG_T_ADDR: {
		struct net_addr *a = (struct net_addr *)((char *)cfg + o->offset);
		bool listen = o->offset == OFF(listen);
		if (net_parse_addr(val, listen, a, why, sizeof(why)) == 0)
			return 0;
		break;
	}
	case CFG_T_U32: {
		uint64_t v;
		if (strcmp(o->def, "auto") == 0 && strcmp(val, "auto") == 0) {
			*u32_at(cfg, o) = 0; /* 0 stands for auto */
			return 0;
		}
		if (parse_u64(val, &v) != 0 || v < o->min || v > o->max) {
			snprintf(why, sizeof(why),
				 "expected an integer from %u to %u", o->min,
				 o->max);
			break;
		}
		if (o->pow2 && (v & (v - 1)) != 0) {
			snprintf(why, sizeof(why),
				 "expected a power of two from %u to %u",
				 o->min, o->max);
			break;
		}
		*u32_at(cfg, o) = (uint32_t)v;
		return 0;
	}
	case CFG_T_BOOL:
		if (parse_bool(val, u32_at(cfg, o)) == 0)
			return 0;
		snprintf(why, sizeof(why), "expected 0 or 1");
		break;
	case CFG_T_ENUM: {
		size_t n = 0;
		for (; o->enum_names[n]; n++) {
			if (strcmp(val, o->enum_names[n]) == 0) {
				*u32_at(cfg, o) = (uint32_t)n;
				return 0;
			}
		}
		int off = snprintf(why, sizeof(why), "expected ");
		for (size_t i = 0; i < n && off < (int)sizeof(why); i++)
			off += snprintf(why + off, sizeof(why) - (size_t)off,
					"%s%s", i ? " or " : "",
					o->enum_names[i]);
		break;
	}
	case CFG_T_STR: {
		size_t len = strlen(val);
		if (len < o->size) {
			memcpy((char *)cfg + o->offset, val, len + 1);
			return 0;
		}
		snprintf(why, sizeof(why), "longer than %zu characters",
			 o->size - 1);
		break;
	}
	}
	snprintf(err, errlen, "%s: invalid value '%.200s' (%s)", o->name, val,
		 why);
	return -1;
}

void cfg_format(const struct config *cfg, const struct cfg_option *o,
		char *buf, size_t len)
{
	switch (o->type) {
	case CFG_T_ADDR: {
		const struct net_addr *a =
			(const struct net_addr *)((const char *)cfg + o->offset);
		snprintf(buf, len, "%s", a->text[0] ? a->text : a->input);
		break;
	}
	case CFG_T_U32:
	case CFG_T_BOOL:
		if (*cu32_at(cfg, o) == 0 && strcmp(o->def, "auto") == 0)
			snprintf(buf, len, "auto");
		else
			snprintf(buf, len, "%u", *cu32_at(cfg, o));
		break;
	case CFG_T_ENUM:
		snprintf(buf, len, "%s", o->enum_names[*cu32_at(cfg, o)]);
		break;
	case CFG_T_STR:
		snprintf(buf, len, "%s", (const char *)cfg + o->offset);
		break;
	}
}

void cfg_defaults(struct config *cfg)
{
	char err[256];
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < cfg_option_count; i++) {
		const struct cfg_option *o = &cfg_options[i];
		if (o->type == CFG_T_ADDR) {
			/* resolved in cfg_parse: keep the text only */
			struct net_addr *a =
				(struct net_addr *)((char *)cfg + o->offset);
			snprintf(a->input, sizeof(a->input), "%s", o->def);
			continue;
		}
		int rc = cfg_set(cfg, o, o->def, err, sizeof(err));
		ARC_BUG_ON(rc != 0);
	}
	cfg->moved_max = UINT32_MAX;
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 63 || lb > 63)
		return 64;
	size_t d[64][64];
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			size_t cost = a[i - 1] != b[j - 1];
			size_t v = d[i - 1][j - 1] + cost;
			if (d[i - 1][j] + 1 < v)
				v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			/* transposition counts as one edit */
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
			    a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	}
	return d[la][lb];
}

const char *cfg_closest_env(const char *name)
{
	const char *best = NULL;
	size_t best_d = (size_t)-1;
	for (size_t i = 0; i < cfg_option_count; i++) {
		if (cfg_options[i].position)
			continue;
		size_t d = edit_distance(name, cfg_options[i].name);
		if (d < best_d) {
			best_d = d;
			best = cfg_options[i].name;
		}
	}
	return best;
}

static const struct cfg_option *find_env(const char *name, size_t len)
{
	for (size_t i = 0; i < cfg_option_count; i++) {
		const struct cfg_option *o = &cfg_options[i];
		if (!o->position && strlen(o->name) == len &&
		    strncmp(o->name, name, len) == 0)
			return o;
	}
	return NULL;
}

static const struct cfg_option *find_pos(int position)
{
	for (size_t i = 0; i < cfg_option_count; i++)
		if (cfg_options[i].position == position)
			return &cfg_options[i];
	return NULL;
}

/* A leading '-' followed by a digit is a (bad) number, not an option, so
 * "-5" is reported against the argument it was meant for. */
static bool looks_like_option(const char *s)
{
	return s[0] == '-' && s[1] != '\0' && !(s[1] >= '0' && s[1] <= '9');
}

int cfg_parse(struct config *cfg, int argc, char **argv, char **envp,
	      char *err, size_t errlen)
{
	cfg_defaults(cfg);
	int action = CFG_RUN;
	int npos = 0;
	const char *pos[16];

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			for (i++; i < argc; i++) {
				if (npos >= 9) {
					snprintf(err, errlen,
						 "too many arguments: '%.100s' (at most 9 positional arguments; see --help)",
						 argv[i]);
					return -1;
				}
				pos[npos++] = argv[i];
			}
			break;
		}
		if (looks_like_option(a)) {
			if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
				return CFG_HELP;
			if (strcmp(a, "--version") == 0 ||
			    strcmp(a, "-V") == 0)
				return CFG_VERSION;
			if (strcmp(a, "--plan") == 0) {
				action = CFG_PLAN;
				continue;
			}
			if (strcmp(a, "--json") == 0) {
				cfg->plan_json = true;
				continue;
			}
			snprintf(err, errlen,
				 "unknown option '%.100s' (see --help)", a);
			return -1;
		}
		if (npos >= 9) {
			snprintf(err, errlen,
				 "too many arguments: '%.100s' (at most 9 positional arguments; see --help)",
				 a);
			return -1;
		}
		pos[npos++] = a;
	}
	if (cfg->plan_json && action != CFG_PLAN) {
		snprintf(err, errlen, "--json goes with --plan");
		return -1;
	}

	/* environment: every ARCTIC_* name must be known */
	for (char **e = envp; e && *e; e++) {
		if (strncmp(*e, "ARCTIC_", 7) != 0)
			continue;
		const char *eq = strchr(*e, '=');
		if (!eq)
			continue;
		size_t nlen = (size_t)(eq - *e);
		const struct cfg_option *o = find_env(*e, nlen);
		if (!o) {
			char name[128];
			snprintf(name, sizeof(name), "%.*s",
				 (int)(nlen < 100 ? nlen : 100), *e);
			const char *near = cfg_closest_env(name);
			snprintf(err, errlen,
				 "%s: unknown variable (did you mean %s?)",
				 name, near ? near : "--help");
			return -1;
		}
		if (cfg_set(cfg, o, eq + 1, err, errlen) != 0)
			return -1;
	}

	/* positional: numbers first so a bad number is reported before a
	 * slow name lookup; addresses last */
	for (int i = 2; i < npos; i++)
		if (cfg_set(cfg, find_pos(i + 1), pos[i], err, errlen) != 0)
			return -1;
	for (int p = 1; p <= 2; p++) {
		const struct cfg_option *o = find_pos(p);
		const char *val = npos >= p ? pos[p - 1] : o->def;
		if (cfg_set(cfg, o, val, err, errlen) != 0)
			return -1;
	}
	cfg->max_connections_asked = cfg->max_connections;
	return action;
}

void cfg_usage(FILE *f)
{
	fprintf(f,
		"Usage: arctic-proxy [--plan [--json]] [LISTEN [UPSTREAM [max_connections\n"
		"         [timeout_secs [buffer_size [backlog [reject_sleep_ms\n"
		"         [shutdown_drain_secs [upstream_test_timeout_secs]]]]]]]]]\n"
		"       arctic-proxy -h|--help | --version\n\n"
		"A layer-4 TCP proxy: one pinned io_uring worker per core.\n\n"
		"Arguments (positional, default in brackets):\n");
	for (size_t i = 0; i < cfg_option_count; i++) {
		const struct cfg_option *o = &cfg_options[i];
		if (o->position)
			fprintf(f, "  %-28s %s [%s]\n", o->name, o->help,
				o->def);
	}
	fprintf(f, "\nOptions:\n"
		   "  --plan                       print the placement plan and settings, bind nothing\n"
		   "  --json                       with --plan: as JSON\n"
		   "  -h, --help                   this text\n"
		   "  --version                    version and kernel features found\n"
		   "\nEnvironment (read once at start; unknown ARCTIC_* names are an error):\n");
	for (size_t i = 0; i < cfg_option_count; i++) {
		const struct cfg_option *o = &cfg_options[i];
		if (!o->position)
			fprintf(f, "  %-28s %s [%s]\n", o->name, o->help,
				o->def[0] ? o->def : "unset");
	}
}
