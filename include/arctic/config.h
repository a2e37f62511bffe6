/* config: positional arguments, long options and ARCTIC_* environment
 * variables, described by one table (cfg_options) that drives parsing,
 * validation, --help and the startup banner. Workers only ever see a
 * const struct config *. */
#ifndef ARCTIC_CONFIG_H
#define ARCTIC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "arctic/net.h"

#ifdef __cplusplus
extern "C" {
#endif

enum cfg_io_mode { CFG_IO_AUTO = 0, CFG_IO_BUFFER = 1, CFG_IO_SPLICE = 2 };
enum cfg_poll { CFG_POLL_WAIT = 0, CFG_POLL_HYBRID = 1, CFG_POLL_BUSY = 2 };
enum cfg_stats_format { CFG_STATS_TEXT = 0, CFG_STATS_JSON = 1 };

enum cfg_action {
	CFG_RUN = 0,
	CFG_HELP,
	CFG_VERSION,
	CFG_PLAN,
};

struct config {
	/* positional, compatible with the original arctic-proxy */
	struct net_addr listen;
	struct net_addr upstream;
	uint32_t max_connections;
	uint32_t timeout_secs;
	uint32_t buffer_size;
	uint32_t backlog;
	uint32_t reject_sleep_ms;
	uint32_t shutdown_drain_secs;
	uint32_t upstream_test_timeout_secs;

	/* core */
	uint32_t workers;
	uint32_t io_mode; /* enum cfg_io_mode */
	uint32_t idle_timeout_s;
	uint32_t defer_accept_s;
	uint32_t reuseport_join;
	uint32_t buf_size;
	uint32_t buf_count;
	uint32_t inflight;
	uint32_t pipe_size;
	uint32_t splice_after;
	uint32_t pipe_trial;
	uint32_t stream_pipes;
	/* most directions moved to pipes per worker: ARCTIC_BUF_COUNT unless
	 * the open-files limit lowers it (main.c); not an option */
	uint32_t moved_max;
	uint32_t ring_entries;
	uint32_t quickack;

	/* topology */
	char topology[256];
	char cpus[256];
	char numa_nodes[128];
	uint32_t smt;
	char nic[64];

	/* polling */
	uint32_t sqpoll;
	uint32_t sqpoll_idle_ms;
	uint32_t sqpoll_shared;
	uint32_t busy_poll_us;
	uint32_t prefer_busy_poll;
	uint32_t busy_poll_budget;
	uint32_t napi_us;
	uint32_t poll; /* enum cfg_poll */
	uint32_t poll_idle_us;
	uint32_t poll_spin_us;
	uint32_t poll_spin_max_us;

	/* stats */
	uint32_t stats_format; /* enum cfg_stats_format */
	uint32_t stats_interval_ms;

	/* derived at start-up, not options */
	uint32_t max_connections_asked; /* before the open-files cap */
	bool plan_json;
};

enum cfg_type { CFG_T_ADDR, CFG_T_U32, CFG_T_BOOL, CFG_T_ENUM, CFG_T_STR };

struct cfg_option {
	const char *name;     /* positional name or ARCTIC_* variable */
	int position;         /* 1-based positional index, 0 for env only */
	enum cfg_type type;
	size_t offset;        /* into struct config */
	size_t size;          /* CFG_T_STR buffer size */
	uint32_t min, max;    /* CFG_T_U32 inclusive range */
	const char *const *enum_names; /* CFG_T_ENUM, NULL terminated */
	bool pow2;            /* CFG_T_U32 must be a power of two */
	const char *def;      /* default, as text */
	const char *help;
};

extern const struct cfg_option cfg_options[];
extern const size_t cfg_option_count;

/* Parses argv and the environment (envp, NULL-terminated) into *cfg.
 * Returns the action to take, or -1 with a one-line message (without the
 * "arctic-proxy: " prefix) in err. Nothing is bound or opened. Host names
 * are resolved here, once. */
int cfg_parse(struct config *cfg, int argc, char **argv, char **envp,
	      char *err, size_t errlen);

/* Fills *cfg with every default (addresses unresolved). */
void cfg_defaults(struct config *cfg);

/* Parses one value for option o into cfg. 0 or -1 with err set. */
int cfg_set(struct config *cfg, const struct cfg_option *o, const char *val,
	    char *err, size_t errlen);

/* Formats the current value of o in cfg into buf. */
void cfg_format(const struct config *cfg, const struct cfg_option *o,
		char *buf, size_t len);

/* The valid ARCTIC_* name closest to name (edit distance), or NULL. */
const char *cfg_closest_env(const char *name);

/* Writes --help text to f. */
void cfg_usage(FILE *f);

/* Pipes a worker keeps in its pool of empty pipes (and at most as many
 * held by trial directions): the fd budget and the allocation both use it. */
static inline uint32_t cfg_pipe_pool(const struct config *cfg)
{
	return cfg->io_mode == CFG_IO_BUFFER ? 0 : cfg->pipe_trial;
}

/* Streaming directions a worker may have on pipes at once (auto mode; the
 * others stream on buffers); the descriptor budget counts their pipes. */
static inline uint32_t cfg_stream_pipes(const struct config *cfg)
{
	return cfg->io_mode == CFG_IO_AUTO ? cfg->stream_pipes : 0;
}

/* Directions a worker may have moved off its relay buffers into pipes of
 * their own at once (relay.c, conn_evict_scan): one per buffer is as many
 * as buffer pressure can call for. The fd budget counts their pipes. */
static inline uint32_t cfg_moved_pipes(const struct config *cfg)
{
	if (cfg->io_mode == CFG_IO_SPLICE)
		return 0;
	return cfg->buf_count < cfg->moved_max ? cfg->buf_count : cfg->moved_max;
}

#ifdef __cplusplus
}
#endif

#endif
