#define _GNU_SOURCE
#include "arctic/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arctic/config.h"
#include "arctic/util.h"

/* Newer than some libc headers; values from the kernel uapi. */
#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif

void net_format(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(s6->sin6_port));
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(s4->sin_port));
	} else {
		snprintf(buf, len, "(family %d)", sa->sa_family);
	}
}

uint16_t net_port(const struct net_addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

void net_set_port(struct net_addr *a, uint16_t port)
{
	if (a->ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
	net_format((struct sockaddr *)&a->ss, a->text, sizeof(a->text));
}

int net_parse_addr(const char *s, bool allow_port0, struct net_addr *out,
		   char *why, size_t whylen)
{
	char host[256];
	const char *port_s;
	bool bracketed = false;

	memset(out, 0, sizeof(*out));
	snprintf(out->input, sizeof(out->input), "%s", s);
	if (s[0] == '\0') {
		snprintf(why, whylen, "empty address; expected HOST:PORT");
		return -1;
	}
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end) {
			snprintf(why, whylen, "missing ']' in IPv6 address");
			return -1;
		}
		if (end[1] != ':') {
			snprintf(why, whylen,
				 "expected [IPv6]:PORT, port missing");
			return -1;
		}
		size_t hl = (size_t)(end - s - 1);
		if (hl == 0 || hl >= sizeof(host)) {
			snprintf(why, whylen, "bad IPv6 address");
			return -1;
		}
		memcpy(host, s + 1, hl);
		host[hl] = '\0';
		port_s = end + 2;
		bracketed = true;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon) {
			snprintf(why, whylen, "port missing; expected HOST:PORT");
			return -1;
		}
		if (memchr(s, ':', (size_t)(colon - s))) {
			snprintf(why, whylen,
				 "IPv6 addresses need brackets: [ADDR]:PORT");
			return -1;
		}
		size_t hl = (size_t)(colon - s);
		if (hl == 0) {
			snprintf(why, whylen, "host missing; expected HOST:PORT");
			return -1;
		}
		if (hl >= sizeof(host)) {
			snprintf(why, whylen, "host name longer than %zu characters",
				 sizeof(host) - 1);
			return -1;
		}
		memcpy(host, s, hl);
		host[hl] = '\0';
		port_s = colon + 1;
	}

	unsigned long port = 0;
	if (*port_s == '\0' || strlen(port_s) > 5) {
		snprintf(why, whylen, "port must be %d-65535",
			 allow_port0 ? 0 : 1);
		return -1;
	}
	for (const char *p = port_s; *p; p++) {
		if (*p < '0' || *p > '9') {
			snprintf(why, whylen, "port must be %d-65535",
				 allow_port0 ? 0 : 1);
			return -1;
		}
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (port > 65535 || (port == 0 && !allow_port0)) {
		snprintf(why, whylen, "port must be %d-65535",
			 allow_port0 ? 0 : 1);
		return -1;
	}

	struct addrinfo hints = {0};
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_family = bracketed ? AF_INET6 : AF_UNSPEC;
	hints.ai_flags = AI_NUMERICSERV;
	struct addrinfo *res = NULL;
	char ps[8];
	snprintf(ps, sizeof(ps), "%lu", port);
	int rc = getaddrinfo(host, ps, &hints, &res);
	if (rc != 0 || !res) {
		snprintf(why, whylen, "cannot resolve '%s': %s", host,
			 rc == EAI_SYSTEM ? arc_errname(errno)
					  : gai_strerror(rc));
		return -1;
	}
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	net_format((struct sockaddr *)&out->ss, out->text, sizeof(out->text));
	return 0;
}

static int setopt(int fd, int level, int name, int val)
{
	if (setsockopt(fd, level, name, &val, sizeof(val)) == -1)
		return -errno;
	return 0;
}

/* Options every proxied socket gets; on a listener they are inherited by
 * the accepted sockets, which saves four syscalls per connection. */
static int common_opts(const struct config *cfg, int fd, const char **what)
{
	int rc;
	*what = "TCP_NODELAY";
	if ((rc = setopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)))
		return rc;
	*what = "SO_KEEPALIVE";
	if ((rc = setopt(fd, SOL_SOCKET, SO_KEEPALIVE, 1)))
		return rc;
	/* TCP urgent data (MSG_OOB) is relayed in line, as the byte it is:
	 * without this, recv(2) would skip it and the byte would be lost */
	*what = "SO_OOBINLINE";
	if ((rc = setopt(fd, SOL_SOCKET, SO_OOBINLINE, 1)))
		return rc;
	if (cfg->buffer_size) {
		*what = "SO_RCVBUF";
		if ((rc = setopt(fd, SOL_SOCKET, SO_RCVBUF,
				 (int)cfg->buffer_size)))
			return rc;
		*what = "SO_SNDBUF";
		if ((rc = setopt(fd, SOL_SOCKET, SO_SNDBUF,
				 (int)cfg->buffer_size)))
			return rc;
	}
	if (cfg->busy_poll_us) {
		*what = "SO_BUSY_POLL";
		if ((rc = setopt(fd, SOL_SOCKET, SO_BUSY_POLL,
				 (int)cfg->busy_poll_us)))
			return rc;
	}
	if (cfg->prefer_busy_poll) {
		*what = "SO_PREFER_BUSY_POLL";
		if ((rc = setopt(fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, 1)))
			return rc;
	}
	if (cfg->busy_poll_budget) {
		*what = "SO_BUSY_POLL_BUDGET";
		if ((rc = setopt(fd, SOL_SOCKET, SO_BUSY_POLL_BUDGET,
				 (int)cfg->busy_poll_budget)))
			return rc;
	}
	return 0;
}

/* A TCP socket for addr's family, or -errno with the reason in err. */
static int stream_socket(const struct net_addr *addr, char *err, size_t errlen)
{
	int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		int e = errno;
		snprintf(err, errlen, "socket(%s) failed: %s", addr->text,
			 arc_errname(e));
		return -e;
	}
	return fd;
}

int net_listen(const struct config *cfg, const struct net_addr *addr,
	       char *err, size_t errlen)
{
	int fd = stream_socket(addr, err, errlen);
	if (fd < 0)
		return fd;
	const char *what = "SO_REUSEADDR";
	int rc = setopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
	if (!rc) {
		what = "SO_REUSEPORT";
		rc = setopt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
	}
	if (!rc)
		rc = common_opts(cfg, fd, &what);
	if (!rc && cfg->defer_accept_s) {
		what = "TCP_DEFER_ACCEPT";
		rc = setopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT,
			    (int)cfg->defer_accept_s);
	}
	if (rc) {
		snprintf(err, errlen, "setsockopt(%s, %s) failed: %s",
			 addr->text, what, arc_errname(rc));
		goto fail;
	}
	if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) == -1) {
		rc = -errno;
		snprintf(err, errlen, "bind(%s) failed: %s", addr->text,
			 arc_errname(rc));
		goto fail;
	}
	/* TCP_FASTOPEN queue = backlog. Not fatal: the sysctl may forbid it
	 * for servers, and the proxy works without it. */
	(void)setopt(fd, IPPROTO_TCP, TCP_FASTOPEN, (int)cfg->backlog);
	if (listen(fd, (int)cfg->backlog) == -1) {
		rc = -errno;
		snprintf(err, errlen, "listen(%s, %u) failed: %s", addr->text,
			 cfg->backlog, arc_errname(rc));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return rc;
}

int net_port_free(const struct net_addr *addr, char *err, size_t errlen)
{
	int fd = stream_socket(addr, err, errlen);
	if (fd < 0)
		return fd;
	/* SO_REUSEADDR as the listeners have it (a port with connections
	 * in TIME_WAIT is free), and no SO_REUSEPORT */
	int rc = setopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
	if (rc)
		snprintf(err, errlen, "setsockopt(%s, SO_REUSEADDR) failed: %s",
			 addr->text, arc_errname(rc));
	else if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) == -1) {
		rc = -errno;
		snprintf(err, errlen, "bind(%s) failed: %s%s", addr->text,
			 arc_errname(rc),
			 rc == -EADDRINUSE
				 ? " (ARCTIC_REUSEPORT_JOIN=1 shares the port with "
				   "SO_REUSEPORT listeners of the same user)"
				 : "");
	}
	close(fd);
	return rc;
}

int net_upstream_opts(const struct config *cfg, int fd, const char **what)
{
	int rc = common_opts(cfg, fd, what);
	/* Delayed-ACK mode while connecting: the kernel then holds the ACK
	 * of the upstream's SYN-ACK and sends it on the client's first bytes
	 * (one segment less per connection); on_connect() pushes it out at
	 * once when there are no such bytes yet. */
	if (!rc) {
		*what = "TCP_QUICKACK";
		rc = setopt(fd, IPPROTO_TCP, TCP_QUICKACK, 0);
	}
	return rc;
}

void net_set_rst(int fd)
{
	struct linger l = {.l_onoff = 1, .l_linger = 0};
	/* Best effort: if this fails the close is a FIN, still safe. */
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

int net_check_upstream(const struct net_addr *a, unsigned timeout_s)
{
	int fd = socket(a->ss.ss_family,
			SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	int rc = 0;
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == -1) {
		if (errno != EINPROGRESS) {
			rc = -errno;
			goto out;
		}
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int n;
		do {
			n = poll(&p, 1, (int)(timeout_s * 1000));
		} while (n == -1 && errno == EINTR);
		if (n == 0) {
			rc = -ETIMEDOUT;
			goto out;
		}
		if (n == -1) {
			rc = -errno;
			goto out;
		}
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1)
			rc = -errno;
		else if (soerr)
			rc = -soerr;
	}
out:
	close(fd);
	return rc;
}
