/* net: address parsing and formatting. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "arctic/net.h"
#include "check.h"

static void ok(const char *in, bool port0, const char *text)
{
	struct net_addr a;
	char why[200] = "";
	int rc = net_parse_addr(in, port0, &a, why, sizeof(why));
	CHECK(rc == 0, "%s: %s", in, why);
	if (rc == 0)
		CHECK(strcmp(a.text, text) == 0, "%s -> %s, want %s", in, a.text, text);
}

static void bad(const char *in, bool port0, const char *reason)
{
	struct net_addr a;
	char why[200] = "";
	int rc = net_parse_addr(in, port0, &a, why, sizeof(why));
	CHECK(rc == -1, "%s accepted", in);
	CHECK(strstr(why, reason) != NULL, "%s: reason '%s' lacks '%s'", in, why, reason);
}

static bool localhost_is_v6(void)
{
	struct net_addr a;
	char why[100];
	return net_parse_addr("localhost:1", false, &a, why, sizeof(why)) == 0 &&
	       a.ss.ss_family == AF_INET6;
}

int main(void)
{
	ok("127.0.0.1:80", false, "127.0.0.1:80");
	ok("0.0.0.0:0", true, "0.0.0.0:0");
	ok("[::1]:8080", false, "[::1]:8080");
	ok("[::]:1", false, "[::]:1");
	ok("localhost:65535", false, localhost_is_v6() ? "[::1]:65535" : "127.0.0.1:65535");
	bad("127.0.0.1:0", false, "port must be 1-65535");
	bad("127.0.0.1:65536", true, "port must be 0-65535");
	bad("127.0.0.1:-1", true, "port must be");
	bad("127.0.0.1:", true, "port must be");
	bad("127.0.0.1:123456", true, "port must be");
	bad("127.0.0.1", true, "port missing");
	bad("[::1]", true, "port missing");
	bad("[::1:80", true, "missing ']'");
	bad("[]:80", true, "bad IPv6 address");
	bad("fe80::1:80", true, "need brackets");
	bad("", true, "empty address");
	bad(":80", true, "host missing");
	{
		/* a host name past the resolver's limit: said so, not "missing" */
		char longname[300];
		memset(longname, 'a', 290);
		memcpy(longname + 290, ":80", 4);
		bad(longname, true, "host name longer than 255 characters");
	}
	bad("999.1.1.1:80", true, "cannot resolve");

	struct net_addr a;
	char why[100];
	net_parse_addr("127.0.0.1:0", true, &a, why, sizeof(why));
	net_set_port(&a, 4242);
	CHECK(net_port(&a) == 4242 && strcmp(a.text, "127.0.0.1:4242") == 0, "%s", a.text);
	CHECK_DONE();
}
