/* echo_server: minimal epoll TCP echo server for the arctic-proxy benchmarks.
 *
 * Usage: echo_server [ADDR:]PORT
 *   PORT 0 lets the kernel pick; the real address is printed on stderr as
 *   "listening on 127.0.0.1:PORT" once the socket accepts.
 *
 * Every byte received is written back on the same connection.  EOF from the
 * peer is answered with shutdown(SHUT_WR) once everything read was echoed.
 * Memory per connection is one small struct plus a buffer only while a write
 * is pending, so thousands of idle connections cost little here (the idle
 * benchmark measures the proxy's memory, not this one's).
 * The open-files soft limit is raised to the hard limit at start.
 * SIGINT/SIGTERM: exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 16384

struct conn {
    int fd;
    int eof;          /* peer sent FIN */
    size_t off, len;  /* pending bytes in buf[off..len) */
    char *buf;        /* allocated only while a write is pending */
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static void close_conn(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->buf);
    free(c);
}

/* Try to flush pending bytes; returns -1 on fatal error, 0 otherwise. */
static int flush_pending(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        c->off += (size_t)n;
    }
    free(c->buf);
    c->buf = NULL;
    c->off = c->len = 0;
    return 0;
}

static void rearm(int ep, struct conn *c)
{
    struct epoll_event ev = {0};
    ev.data.ptr = c;
    if (c->buf)
        ev.events = EPOLLOUT;            /* stop reading until flushed */
    else if (!c->eof)
        ev.events = EPOLLIN | EPOLLRDHUP;
    else
        ev.events = 0;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Returns -1 when the connection must be closed. */
static int handle(int ep, struct conn *c, uint32_t events)
{
    static char tmp[BUF_SIZE];
    if (events & EPOLLERR)
        return -1;
    if (c->buf) {
        if (flush_pending(c) < 0)
            return -1;
        if (c->buf) {
            rearm(ep, c);
            return 0;
        }
    }
    if (!c->eof && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLOUT))) {
        for (int rounds = 0; rounds < 16; rounds++) {
            ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                return -1;
            }
            if (n == 0) {
                c->eof = 1;
                break;
            }
            size_t done = 0;
            while (done < (size_t)n) {
                ssize_t w = send(c->fd, tmp + done, (size_t)n - done, MSG_NOSIGNAL);
                if (w < 0) {
                    if (errno == EINTR)
                        continue;
                    if (errno == EAGAIN || errno == EWOULDBLOCK)
                        break;
                    return -1;
                }
                done += (size_t)w;
            }
            if (done < (size_t)n) {
                c->len = (size_t)n - done;
                c->off = 0;
                c->buf = malloc(c->len);
                if (!c->buf)
                    return -1;
                memcpy(c->buf, tmp + done, c->len);
                break;
            }
        }
    }
    if (c->eof && !c->buf) {
        shutdown(c->fd, SHUT_WR);
        /* Nothing more to do: the peer closed its side, ours is closed now. */
        return -1;
    }
    rearm(ep, c);
    return 0;
}

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : "0";
    char host[64] = "127.0.0.1";
    const char *colon = strrchr(spec, ':');
    const char *port_s = spec;
    if (colon) {
        size_t hl = (size_t)(colon - spec);
        if (hl == 0 || hl >= sizeof host) {
            fprintf(stderr, "echo_server: bad address '%s'\n", spec);
            return 2;
        }
        memcpy(host, spec, hl);
        host[hl] = 0;
        port_s = colon + 1;
    }
    char *end;
    long port = strtol(port_s, &end, 10);
    if (*port_s == 0 || *end || port < 0 || port > 65535) {
        fprintf(stderr, "echo_server: bad port '%s'\n", port_s);
        return 2;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "echo_server: bad IPv4 address '%s'\n", host);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        fprintf(stderr, "echo_server: bind/listen %s:%ld: %s\n", host, port, strerror(errno));
        return 1;
    }
    socklen_t al = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &al);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    fprintf(stderr, "listening on %s:%u\n", host, ntohs(addr.sin_port));
    fflush(stderr);

    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 500);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("echo_server: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                            continue;
                        break; /* EAGAIN, or EMFILE: retried on the next event */
                    }
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = calloc(1, sizeof *c);
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
                        close(fd);
                        free(c);
                    }
                }
                continue;
            }
            struct conn *c = evs[i].data.ptr;
            if (handle(ep, c, evs[i].events) < 0)
                close_conn(ep, c);
        }
    }
    return 0;
}
