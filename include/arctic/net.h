/* net: address parsing and socket set-up (listeners, upstream sockets,
 * the start-up upstream check). Functions return 0 or -errno unless said. */
#ifndef ARCTIC_NET_H
#define ARCTIC_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

struct config;

struct net_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[80]; /* "1.2.3.4:80" or "[::1]:80" */
	char input[256]; /* as the user wrote it */
};

/* Parses "host:port", "1.2.3.4:port" or "[v6]:port" and resolves it once.
 * allow_port0: listeners may ask the kernel for a port. Returns 0, or -1
 * with a short reason in why (e.g. "port must be 1-65535"). */
int net_parse_addr(const char *s, bool allow_port0, struct net_addr *out,
		   char *why, size_t whylen);

/* Formats a socket address as "1.2.3.4:80" / "[::1]:80". */
void net_format(const struct sockaddr *sa, char *buf, size_t len);

uint16_t net_port(const struct net_addr *a);
void net_set_port(struct net_addr *a, uint16_t port);

/* Creates a bound, listening SO_REUSEPORT socket with the listener options
 * of cfg (backlog, TCP_FASTOPEN, TCP_DEFER_ACCEPT, buffer sizes, NODELAY,
 * KEEPALIVE, busy poll); accepted sockets inherit them. On failure returns
 * -errno and writes "bind(addr) failed: EADDRINUSE" style text to err. */
int net_listen(const struct config *cfg, const struct net_addr *addr,
	       char *err, size_t errlen);

/* 0 if addr's port is free to listen on for a socket without SO_REUSEPORT
 * (a probe socket is bound and closed), else -errno with "bind(addr)
 * failed: EADDRINUSE ..." in err: unlike the reuseport listeners, it
 * cannot join another process's SO_REUSEPORT group on the port. */
int net_port_free(const struct net_addr *addr, char *err, size_t errlen);

/* Applies per-connection options (NODELAY, KEEPALIVE, buffer sizes, busy
 * poll) to a new upstream socket, and delayed-ACK mode for the connect (the
 * relay decides the handshake ACK once connected). Returns 0 or -errno. */
int net_upstream_opts(const struct config *cfg, int fd, const char **what);

/* Sets SO_LINGER {1, 0} so the next close(2) sends RST (aborts only). */
void net_set_rst(int fd);

/* One blocking connect with a timeout, at start-up. 0 or -errno. */
int net_check_upstream(const struct net_addr *a, unsigned timeout_s);

#ifdef __cplusplus
}
#endif

#endif
