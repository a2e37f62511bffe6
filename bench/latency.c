/* latency: fixed-rate (open-loop) HTTP/1.1 keep-alive latency client.
 *
 * Usage: latency -p PORT [-a ADDR] [-r RATE] [-c CONNS] [-d SECONDS] [-w WARMUP_S]
 *                [-u PATH] [-t DRAIN_TIMEOUT_S]
 *
 * Request i is *scheduled* at t0 + i/RATE and assigned to connection i % CONNS.
 * A connection carries one request at a time; if its previous response is
 * late, the next request is sent as soon as that response arrives.  Every
 * latency is measured from the request's scheduled time to the end of its
 * response, so a stalled server is charged for all the requests it delayed
 * (no coordinated omission), like wrk2.  Requests scheduled during the first
 * WARMUP_S seconds are sent but not recorded.
 *
 * Responses must carry Content-Length (nginx `return 200 "..."` does).
 * A broken connection counts its in-flight request as an error and is
 * re-opened; if no request completes for DRAIN_TIMEOUT_S the run aborts.
 *
 * Output: one JSON object on stdout, e.g.
 *   {"rate":5000,"conns":16,"duration_s":10,"scheduled":..,"recorded":..,
 *    "errors":0,"timeouts":0,"late_sends":..,"achieved_rate":..,
 *    "mean_us":..,"p50_us":..,"p90_us":..,"p99_us":..,"p999_us":..,"p9999_us":..,"max_us":..}
 * Exit status 0 when the run completed (even with errors), 1 when it could
 * not run (no connection possible, all connections stuck), 2 on bad usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define RBUF 65536

struct conn {
    int fd;
    int idx;            /* connection index: its requests are idx, idx+K, ... */
    int connected;
    int in_flight;      /* a request was sent, response pending */
    uint64_t next_req;  /* next request number (global) this conn must send */
    uint64_t cur_req;   /* request in flight */
    uint64_t retry_at;  /* ns: do not reconnect before */
    size_t rlen;
    long body_left;     /* -1: parsing headers */
    char rbuf[RBUF];
};

static struct sockaddr_in g_addr;
static char g_req[512];
static size_t g_req_len;
static uint64_t g_t0, g_interval_ns, g_warmup_end, g_sched_end;
static int g_conns;
static uint64_t *g_lat;
static size_t g_nlat, g_cap;
static uint64_t g_errors, g_late, g_sent, g_done_total;
static int g_ep;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t sched_of(uint64_t req) { return g_t0 + req * g_interval_ns; }

static void conn_open(struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("latency: socket");
        exit(1);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->connected = 0;
    c->in_flight = 0;
    c->rlen = 0;
    c->body_left = -1;
    int r = connect(c->fd, (struct sockaddr *)&g_addr, sizeof g_addr);
    if (r < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        c->retry_at = now_ns() + 100000000ull;
        g_errors++;
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void conn_fail(struct conn *c)
{
    if (c->in_flight) {
        g_errors++;
        c->in_flight = 0;
        c->next_req = c->cur_req + (uint64_t)g_conns; /* the lost request is not resent */
    }
    if (c->fd >= 0) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->retry_at = now_ns() + 10000000ull;
}

static void conn_send(struct conn *c, uint64_t now)
{
    uint64_t s = sched_of(c->next_req);
    ssize_t n = send(c->fd, g_req, g_req_len, MSG_NOSIGNAL);
    if (n != (ssize_t)g_req_len) {
        /* A small request into an empty socket buffer never goes out partially
         * in practice; treat anything else as a broken connection. */
        conn_fail(c);
        return;
    }
    if (now > s + 1000000ull)
        g_late++;
    c->cur_req = c->next_req;
    c->next_req += (uint64_t)g_conns;
    c->in_flight = 1;
    g_sent++;
}

static void record(uint64_t req, uint64_t now)
{
    uint64_t s = sched_of(req);
    g_done_total++;
    if (s < g_warmup_end)
        return;
    if (g_nlat == g_cap) {
        g_cap = g_cap ? g_cap * 2 : 1 << 16;
        g_lat = realloc(g_lat, g_cap * sizeof *g_lat);
        if (!g_lat) {
            perror("latency: realloc");
            exit(1);
        }
    }
    g_lat[g_nlat++] = now > s ? now - s : 0;
}

/* Parse as many complete responses as the buffer holds. -1: protocol error. */
static int parse(struct conn *c, uint64_t now)
{
    size_t pos = 0;
    for (;;) {
        if (c->body_left < 0) {
            char *hdr_end = memmem(c->rbuf + pos, c->rlen - pos, "\r\n\r\n", 4);
            if (!hdr_end)
                break;
            long clen = -1;
            char *p = c->rbuf + pos;
            while (p < hdr_end) {
                char *eol = memmem(p, (size_t)(hdr_end - p) + 2, "\r\n", 2);
                if (!eol)
                    break;
                if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
                    clen = strtol(p + 15, NULL, 10);
                p = eol + 2;
            }
            if (clen < 0) {
                fprintf(stderr, "latency: response without Content-Length\n");
                return -1;
            }
            pos = (size_t)(hdr_end + 4 - c->rbuf);
            c->body_left = clen;
        }
        size_t avail = c->rlen - pos;
        if ((long)avail < c->body_left) {
            c->body_left -= (long)avail;
            pos = c->rlen;
            break;
        }
        pos += (size_t)c->body_left;
        c->body_left = -1;
        if (!c->in_flight) {
            fprintf(stderr, "latency: unexpected response\n");
            return -1;
        }
        c->in_flight = 0;
        record(c->cur_req, now);
    }
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
    if (c->rlen == RBUF) {
        fprintf(stderr, "latency: response header too large\n");
        return -1;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (g_nlat == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)g_nlat);
    if (i >= g_nlat)
        i = g_nlat - 1;
    return (double)g_lat[i] / 1000.0;
}

static void usage(void)
{
    fprintf(stderr, "usage: latency -p PORT [-a ADDR] [-r RATE] [-c CONNS] [-d SECONDS] "
                    "[-w WARMUP_S] [-u PATH] [-t DRAIN_TIMEOUT_S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1", *path = "/";
    int port = -1;
    double rate = 1000, dur = 10, warm = 1, drain = 5;
    int conns = 16, opt;
    while ((opt = getopt(argc, argv, "a:p:r:c:d:w:u:t:h")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'd': dur = atof(optarg); break;
        case 'w': warm = atof(optarg); break;
        case 'u': path = optarg; break;
        case 't': drain = atof(optarg); break;
        default: usage();
        }
    }
    if (port <= 0 || port > 65535 || rate <= 0 || conns <= 0 || dur <= 0 || warm < 0 ||
        warm >= dur || drain <= 0)
        usage();
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &g_addr.sin_addr) != 1)
        usage();
    g_req_len = (size_t)snprintf(g_req, sizeof g_req,
                                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path, addr, port);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    g_conns = conns;
    g_interval_ns = (uint64_t)(1e9 / rate);
    if (g_interval_ns == 0)
        g_interval_ns = 1;
    g_cap = (size_t)(rate * dur * 1.05) + 1024;
    g_lat = malloc(g_cap * sizeof *g_lat);
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, tfd, &tev);

    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    if (!cs || !g_lat) {
        perror("latency: calloc");
        return 1;
    }
    /* Connect everything first, so connection set-up is not measured. */
    for (int i = 0; i < conns; i++) {
        cs[i].idx = i;
        cs[i].next_req = (uint64_t)i;
        conn_open(&cs[i]);
        if (cs[i].fd < 0) {
            fprintf(stderr, "latency: connect to %s:%d failed: %s\n", addr, port, strerror(errno));
            return 1;
        }
    }
    uint64_t deadline = now_ns() + 5000000000ull;
    int ready = 0;
    struct epoll_event evs[256];
    while (ready < conns) {
        if (now_ns() > deadline) {
            fprintf(stderr, "latency: only %d of %d connections established\n", ready, conns);
            return 1;
        }
        int n = epoll_wait(g_ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c || c->connected || c->fd < 0)
                continue;
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
                fprintf(stderr, "latency: connect: %s\n", strerror(err ? err : ECONNRESET));
                return 1;
            }
            c->connected = 1;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
            epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
            ready++;
        }
    }

    g_errors = 0;
    g_t0 = now_ns() + 1000000ull;
    g_warmup_end = g_t0 + (uint64_t)(warm * 1e9);
    uint64_t total_reqs = (uint64_t)(rate * dur);
    g_sched_end = total_reqs; /* requests numbered [0, total_reqs) */
    uint64_t last_progress = now_ns();
    uint64_t last_done = 0;
    int stuck = 0;

    for (;;) {
        uint64_t now = now_ns();
        uint64_t next_wake = UINT64_MAX;
        int outstanding = 0;
        for (int i = 0; i < conns; i++) {
            struct conn *c = &cs[i];
            if (c->fd < 0) {
                if (c->next_req < g_sched_end) {
                    if (now >= c->retry_at)
                        conn_open(c);
                    else if (c->retry_at < next_wake)
                        next_wake = c->retry_at;
                }
                if (c->next_req < g_sched_end)
                    outstanding = 1;
                continue;
            }
            if (!c->connected) {
                outstanding = 1;
                continue;
            }
            if (!c->in_flight && c->next_req < g_sched_end) {
                uint64_t s = sched_of(c->next_req);
                if (s <= now)
                    conn_send(c, now);
                else if (s < next_wake)
                    next_wake = s;
            }
            if (c->in_flight || c->next_req < g_sched_end)
                outstanding = 1;
        }
        if (!outstanding)
            break;
        if (g_done_total != last_done) {
            last_done = g_done_total;
            last_progress = now;
        } else if (now - last_progress > (uint64_t)(drain * 1e9)) {
            stuck = 1;
            break;
        }
        if (next_wake != UINT64_MAX) {
            struct itimerspec its = {0};
            its.it_value.tv_sec = (time_t)(next_wake / 1000000000ull);
            its.it_value.tv_nsec = (long)(next_wake % 1000000000ull);
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int n = epoll_wait(g_ep, evs, 256, 200);
        if (n < 0 && errno != EINTR) {
            perror("latency: epoll_wait");
            return 1;
        }
        now = now_ns();
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                uint64_t x;
                while (read(tfd, &x, sizeof x) > 0) {
                }
                continue;
            }
            if (c->fd < 0)
                continue;
            if (!c->connected) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
                    g_errors++;
                    conn_fail(c);
                    continue;
                }
                c->connected = 1;
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
                epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            int dead = 0;
            for (;;) {
                ssize_t r = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, 0);
                if (r < 0) {
                    if (errno == EINTR)
                        continue;
                    if (errno != EAGAIN && errno != EWOULDBLOCK)
                        dead = 1;
                    break;
                }
                if (r == 0) {
                    dead = 1;
                    break;
                }
                c->rlen += (size_t)r;
                if (parse(c, now) < 0)
                    return 1;
                if (c->rlen < RBUF)
                    break;
            }
            if (dead)
                conn_fail(c);
            else if (!c->in_flight && c->next_req < g_sched_end && sched_of(c->next_req) <= now)
                conn_send(c, now);
        }
    }

    uint64_t timeouts = 0;
    for (int i = 0; i < conns; i++)
        if (cs[i].in_flight)
            timeouts++;
    double measured_s = dur - warm;
    qsort(g_lat, g_nlat, sizeof *g_lat, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < g_nlat; i++)
        sum += (double)g_lat[i];
    printf("{\"rate\":%.0f,\"conns\":%d,\"duration_s\":%.3f,\"warmup_s\":%.3f,"
           "\"scheduled\":%llu,\"sent\":%llu,\"recorded\":%zu,\"errors\":%llu,"
           "\"timeouts\":%llu,\"stuck\":%s,\"late_sends\":%llu,\"achieved_rate\":%.1f,"
           "\"mean_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
           "\"p999_us\":%.1f,\"p9999_us\":%.1f,\"max_us\":%.1f}\n",
           rate, conns, dur, warm, (unsigned long long)total_reqs, (unsigned long long)g_sent,
           g_nlat, (unsigned long long)g_errors, (unsigned long long)timeouts,
           stuck ? "true" : "false", (unsigned long long)g_late,
           (double)g_nlat / measured_s, g_nlat ? sum / (double)g_nlat / 1000.0 : 0.0,
           pct(50), pct(90), pct(99), pct(99.9), pct(99.99),
           g_nlat ? (double)g_lat[g_nlat - 1] / 1000.0 : 0.0);
    fflush(stdout);
    return stuck && g_nlat == 0 ? 1 : 0;
}
