#!/usr/bin/env python3
"""A connection that streamed once and then went idle holds no pipe (auto mode). Under
`prlimit --nofile=1024:1024`, one worker with ARCTIC_PIPE_TRIAL=8, ARCTIC_STREAM_PIPES=100 and 16
relay buffers caps max_connections so that every connection's two sockets and the worker's
pooled, trial, moved and streaming pipes fit. 80 connections each download 1 MiB through a pipe
(the way a keep-alive client fetches a file) and then stay open, idle. Their pipes must go back
(to the worker's pool, or closed): the proxy holds at most the pool's pipes. Then connections up
to the cap must still be accepted and connected upstream, the proxy's descriptors stay under the
limit, and an idle connection that streamed once streams again, intact. A streaming direction
that kept its pipe while idle would hold it for the connection's life: 80 pipes (160
descriptors) here."""
import time
import harness as h

LIMIT = 1024
STREAMED = 80
POOL = 8
SIZE = 1 * h.MiB


def main():
    # a download per command; the connection stays open in between
    srv = h.ThreadedServer(h.command_source_handler(SIZE, after="repeat"), name="upstream")
    p, cap = h.start_proxy_limited(LIMIT, srv.addr_str, {
        "ARCTIC_WORKERS": 1, "ARCTIC_PIPE_TRIAL": POOL, "ARCTIC_BUF_COUNT": 16,
        "ARCTIC_STREAM_PIPES": 100, "ARCTIC_STATS_FORMAT": "json",
        "ARCTIC_STATS_INTERVAL_MS": 200})
    h.check(STREAMED + 40 < cap, f"cap {cap} leaves no room for the test")

    streamed = []
    most = 0
    for i in range(STREAMED):
        s = p.connect()
        s.sendall(f"SRC {100 + i}\n".encode())
        got = h.recv_exact(s, SIZE, timeout=20, what=f"download {i}")
        h.check(got == h.pattern_bytes(100 + i, SIZE), f"download {i}: bytes differ")
        most = max(most, h.pipe_fds(p))
        streamed.append(s)
    h.check(most > 0, "no download went through a pipe: the test shows nothing")

    deadline = time.monotonic() + 5
    n = h.pipe_fds(p)
    while n > 2 * POOL and time.monotonic() < deadline:
        time.sleep(0.05)
        n = h.pipe_fds(p)
    h.check(n <= 2 * POOL, f"{STREAMED} idle connections that streamed once: the proxy holds "
            f"{n} pipe descriptors, more than its pool of {POOL} pipes")

    extra = [p.connect() for _ in range(cap - STREAMED)]
    _, fds = h.check_all_admitted(p, srv, cap, LIMIT)
    h.log(f"cap {cap}: {STREAMED} idle after a download ({most} pipe fds at most while "
          f"streaming, {n} once idle) + {cap - STREAMED} more all accepted; {fds} descriptors "
          f"of {LIMIT}")

    # an idle connection that streamed once streams again, intact
    s = streamed[0]
    s.sendall(b"SRC 7\n")
    got = h.recv_exact(s, SIZE, timeout=20, what="second download on an idle connection")
    h.check(got == h.pattern_bytes(7, SIZE), "second download: bytes differ")
    p.check_alive()
    for s in streamed + extra:
        s.close()
    p.stop()
    srv.stop()


h.run(main)
