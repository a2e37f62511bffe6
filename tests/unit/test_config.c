/* config: positional arguments, env variables, every error path. */
#include <stdlib.h>

#include "arctic/config.h"
#include "check.h"

static int parse(struct config *cfg, char *err, size_t errlen, char **env,
		 int argc, char **argv)
{
	return cfg_parse(cfg, argc, argv, env, err, errlen);
}

#define ARGV(...) ((char *[]){"arctic-proxy", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"arctic-proxy", __VA_ARGS__}) / sizeof(char *)))

static void expect_err(char **env, int argc, char **argv, const char *want)
{
	struct config cfg;
	char err[600] = "";
	int rc = parse(&cfg, err, sizeof(err), env, argc, argv);
	CHECK(rc == -1, "args starting '%s': expected an error containing '%s', got rc %d",
	      argc > 1 ? argv[1] : "", want, rc);
	CHECK(strstr(err, want) != NULL, "error '%s' lacks '%s'", err, want);
	CHECK(strchr(err, '\n') == NULL, "error '%s' is not one line", err);
}

static void test_defaults(void)
{
	struct config cfg;
	char err[600];
	char *argv[] = {"arctic-proxy", NULL};
	int rc = parse(&cfg, err, sizeof(err), NULL, 1, argv);
	CHECK(rc == CFG_RUN, "rc %d err %s", rc, err);
	CHECK(strcmp(cfg.listen.text, "0.0.0.0:8080") == 0, "%s", cfg.listen.text);
	CHECK(strcmp(cfg.upstream.text, "127.0.0.1:80") == 0, "%s", cfg.upstream.text);
	CHECK(cfg.max_connections == 100000, "%u", cfg.max_connections);
	CHECK(cfg.timeout_secs == 5, "%u", cfg.timeout_secs);
	CHECK(cfg.buffer_size == 65536, "%u", cfg.buffer_size);
	CHECK(cfg.backlog == 4096, "%u", cfg.backlog);
	CHECK(cfg.reject_sleep_ms == 10, "%u", cfg.reject_sleep_ms);
	CHECK(cfg.shutdown_drain_secs == 5, "%u", cfg.shutdown_drain_secs);
	CHECK(cfg.upstream_test_timeout_secs == 3, "%u", cfg.upstream_test_timeout_secs);
	CHECK(cfg.io_mode == CFG_IO_AUTO, "%u", cfg.io_mode);
	CHECK(cfg.stats_interval_ms == 1000, "%u", cfg.stats_interval_ms);
}

static void test_all_positional(void)
{
	struct config cfg;
	char err[600] = "";
	char **argv = ARGV("127.0.0.1:9000", "[::1]:81", "7", "9", "0", "128", "0", "1", "0");
	int rc = parse(&cfg, err, sizeof(err), NULL, 10, argv);
	CHECK(rc == CFG_RUN, "rc %d err %s", rc, err);
	CHECK(strcmp(cfg.upstream.text, "[::1]:81") == 0, "%s", cfg.upstream.text);
	CHECK(cfg.max_connections == 7 && cfg.timeout_secs == 9 && cfg.buffer_size == 0 &&
	      cfg.backlog == 128 && cfg.reject_sleep_ms == 0 && cfg.shutdown_drain_secs == 1 &&
	      cfg.upstream_test_timeout_secs == 0, "values not taken");
	argv = ARGV("127.0.0.1:0", "localhost:80");
	rc = parse(&cfg, err, sizeof(err), NULL, 3, argv);
	CHECK(rc == CFG_RUN, "port 0 listen / host name upstream: %s", err);
}

static void test_bad_numbers(void)
{
	static const char *names[] = {"max_connections", "timeout_secs", "buffer_size",
				      "backlog", "reject_sleep_ms", "shutdown_drain_secs",
				      "upstream_test_timeout_secs"};
	static const char *bad[] = {"abc", "-5", "99999999999", "", "1.5", " 3", "0x10"};
	for (int i = 0; i < 7; i++) {
		for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
			char *argv[12] = {"arctic-proxy", "127.0.0.1:1", "127.0.0.1:2", "10", "5",
					  "0", "16", "1", "1", "1"};
			argv[3 + i] = (char *)bad[b];
			char want[200];
			snprintf(want, sizeof(want), "%s: invalid value '%s'", names[i], bad[b]);
			expect_err(NULL, 10, argv, want);
		}
	}
	/* range ends */
	expect_err(NULL, 4, ARGV("127.0.0.1:1", "127.0.0.1:2", "0"),
		   "max_connections: invalid value '0' (expected an integer from 1 to");
	expect_err(NULL, 5, ARGV("127.0.0.1:1", "127.0.0.1:2", "1", "0"),
		   "timeout_secs: invalid value '0'");
	expect_err(NULL, 7, ARGV("127.0.0.1:1", "127.0.0.1:2", "1", "1", "0", "65536"),
		   "backlog: invalid value '65536'");
}

static void test_bad_addresses(void)
{
	expect_err(NULL, 2, ARGV("127.0.0.1:99999"), "listen: invalid value '127.0.0.1:99999' (port must be 0-65535)");
	expect_err(NULL, 2, ARGV("127.0.0.1:abc"), "listen: invalid value '127.0.0.1:abc'");
	expect_err(NULL, 2, ARGV("127.0.0.1"), "listen: invalid value '127.0.0.1' (port missing");
	expect_err(NULL, 2, ARGV("[::1"), "listen: invalid value '[::1' (missing ']'");
	expect_err(NULL, 2, ARGV("[::1]"), "listen: invalid value '[::1]'");
	expect_err(NULL, 2, ARGV(""), "listen: invalid value '' (empty address");
	expect_err(NULL, 2, ARGV("::1:80"), "IPv6 addresses need brackets");
	expect_err(NULL, 2, ARGV(":80"), "listen: invalid value ':80' (host missing");
	expect_err(NULL, 3, ARGV("127.0.0.1:1", "127.0.0.1:0"), "upstream: invalid value '127.0.0.1:0' (port must be 1-65535)");
	expect_err(NULL, 3, ARGV("127.0.0.1:1", "no-such-host.invalid:80"), "upstream: invalid value 'no-such-host.invalid:80' (cannot resolve");
	expect_err(NULL, 3, ARGV("127.0.0.1:1", "[zz::1]:80"), "upstream: invalid value '[zz::1]:80'");
}

static void test_cli_shape(void)
{
	expect_err(NULL, 11, ARGV("127.0.0.1:1", "127.0.0.1:2", "1", "1", "1", "1", "1", "1", "1", "extra"),
		   "too many arguments: 'extra'");
	expect_err(NULL, 2, ARGV("--bogus"), "unknown option '--bogus'");
	expect_err(NULL, 2, ARGV("--json"), "--json goes with --plan");
	struct config cfg;
	char err[600];
	CHECK(parse(&cfg, err, sizeof(err), NULL, 2, ARGV("-h")) == CFG_HELP, "-h");
	CHECK(parse(&cfg, err, sizeof(err), NULL, 2, ARGV("--help")) == CFG_HELP, "--help");
	CHECK(parse(&cfg, err, sizeof(err), NULL, 2, ARGV("--version")) == CFG_VERSION, "--version");
	CHECK(parse(&cfg, err, sizeof(err), NULL, 3, ARGV("--plan", "--json")) == CFG_PLAN && cfg.plan_json,
	      "--plan --json");
}

static void test_env(void)
{
	struct config cfg;
	char err[600] = "";
	char *env[] = {"PATH=/bin", "ARCTIC_WORKERS=3", "ARCTIC_IO_MODE=splice",
		       "ARCTIC_IDLE_TIMEOUT_S=7", "ARCTIC_SMT=true", "ARCTIC_CPUS=0-3",
		       "ARCTIC_STATS_FORMAT=json", NULL};
	char *argv[] = {"arctic-proxy", NULL};
	int rc = parse(&cfg, err, sizeof(err), env, 1, argv);
	CHECK(rc == CFG_RUN, "%s", err);
	CHECK(cfg.workers == 3 && cfg.io_mode == CFG_IO_SPLICE && cfg.idle_timeout_s == 7 &&
	      cfg.smt == 1 && strcmp(cfg.cpus, "0-3") == 0 && cfg.stats_format == CFG_STATS_JSON,
	      "env values not taken");

	char *e1[] = {"ARCTIC_WORKRES=2", NULL};
	expect_err(e1, 1, argv, "ARCTIC_WORKRES: unknown variable (did you mean ARCTIC_WORKERS?)");
	char *e2[] = {"ARCTIC_IO_MODE=foo", NULL};
	expect_err(e2, 1, argv, "ARCTIC_IO_MODE: invalid value 'foo' (expected auto or buffer or splice)");
	char *e8[] = {"ARCTIC_POLL=spin", NULL};
	expect_err(e8, 1, argv, "ARCTIC_POLL: invalid value 'spin' (expected wait or hybrid or busy)");
	char *e3[] = {"ARCTIC_BUF_COUNT=100", NULL};
	expect_err(e3, 1, argv, "ARCTIC_BUF_COUNT: invalid value '100' (expected a power of two");
	char *e4[] = {"ARCTIC_SQPOLL=2", NULL};
	expect_err(e4, 1, argv, "ARCTIC_SQPOLL: invalid value '2' (expected 0 or 1)");
	char *e5[] = {"ARCTIC_STATS_INTERVAL_MS=1", NULL};
	expect_err(e5, 1, argv, "ARCTIC_STATS_INTERVAL_MS: invalid value '1'");
	char *e7[] = {"ARCTIC_WORKERS=0", NULL};
	expect_err(e7, 1, argv, "ARCTIC_WORKERS: invalid value '0' (expected an integer from 1 to 4096)");
	char *e6[] = {"ARCTIC_BUSYPOLL_US=5", NULL};
	expect_err(e6, 1, argv, "did you mean ARCTIC_BUSY_POLL_US?");
	CHECK(strcmp(cfg_closest_env("ARCTIC_SQPOL"), "ARCTIC_SQPOLL") == 0, "closest");
}

static void test_table(void)
{
	/* every option's default parses and formats back */
	struct config cfg;
	cfg_defaults(&cfg);
	char buf[300], err[300];
	for (size_t i = 0; i < cfg_option_count; i++) {
		const struct cfg_option *o = &cfg_options[i];
		CHECK(o->help && *o->help, "%s has no help", o->name);
		if (o->type == CFG_T_ADDR)
			continue;
		cfg_format(&cfg, o, buf, sizeof(buf));
		if (o->type != CFG_T_BOOL)
			CHECK(strcmp(buf, o->def) == 0, "%s: default %s formats as %s", o->name, o->def, buf);
		CHECK(cfg_set(&cfg, o, o->def, err, sizeof(err)) == 0, "%s", err);
	}
}

int main(void)
{
	test_defaults();
	test_all_positional();
	test_bad_numbers();
	test_bad_addresses();
	test_cli_shape();
	test_env();
	test_table();
	CHECK_DONE();
}
