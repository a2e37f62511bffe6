#!/usr/bin/env python3
"""Streaming pipes stay inside the descriptor budget (auto mode). Under
`prlimit --nofile=512:512`, one worker with ARCTIC_STREAM_PIPES=16, ARCTIC_PIPE_TRIAL=8 and 16
relay buffers caps max_connections so that every connection's two sockets and the worker's
streaming, trial, pooled and moved pipes fit. 80 connections then start a 2 MiB download each
and their clients stop reading (slow clients): each download direction holds what it has in
flight, on a pipe while the worker has stream pipes left, past that on a trial pipe or on
buffers. Then connections up to the cap must still be accepted and connected upstream (no
EMFILE), the proxy's descriptors stay under the limit, and once the clients read again every
download arrives intact. With streams outside the budget, 80 stalled streams hold 80 pipes
(160 descriptors) and the last connections find no descriptor. Also: under a small hard limit
(1024) the default pipe reserves give way instead of capping max_connections to 1."""
import re
import threading
import time
import harness as h

LIMIT = 512
STALLED = 80
STREAMS = 16
SIZE = 2 * h.MiB


def main():
    # a download, then the connection stays open until the client closes
    srv = h.ThreadedServer(h.command_source_handler(SIZE, chunk=65536, after="hold"),
                           name="upstream")
    p, cap = h.start_proxy_limited(LIMIT, srv.addr_str, {
        "ARCTIC_WORKERS": 1, "ARCTIC_STREAM_PIPES": STREAMS, "ARCTIC_PIPE_TRIAL": 8,
        "ARCTIC_BUF_COUNT": 16, "ARCTIC_STATS_FORMAT": "json", "ARCTIC_STATS_INTERVAL_MS": 200})
    h.check(STALLED + 40 < cap, f"cap {cap} leaves no room for the test")

    stalled = []
    for i in range(STALLED):
        s = p.connect()
        s.sendall(f"SRC {200 + i}\n".encode())
        stalled.append(s)
        time.sleep(0.02)
    time.sleep(2.0)  # every download has filled what the proxy lets it hold
    held = h.pipe_fds(p)

    extra = [p.connect() for _ in range(cap - STALLED)]
    _, fds = h.check_all_admitted(p, srv, cap, LIMIT)
    h.check(held >= 2 * STREAMS, f"only {held} pipe descriptors with {STALLED} stalled "
            f"downloads: the stream pipes were not used")

    # every client reads again, each on its own (a stalled one may wait for a buffer that
    # another stalled one holds, until that one reads)
    errors = []

    def reader(i, s):
        try:
            got = h.recv_exact(s, SIZE, timeout=60, what=f"stalled download {i}")
            if got != h.pattern_bytes(200 + i, SIZE):
                errors.append(f"stalled download {i}: bytes differ")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(str(e))

    readers = [threading.Thread(target=reader, args=(i, s)) for i, s in enumerate(stalled)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    h.check(not errors, "; ".join(errors[:3]))
    h.log(f"cap {cap}: {STALLED} stalled downloads ({held} pipe descriptors) + "
          f"{cap - STALLED} more connections all accepted; {fds} descriptors of {LIMIT}; "
          f"every download intact once read")
    p.check_alive()
    for s in stalled + extra:
        s.close()
    p.stop()
    srv.stop()
    low_limit_lowers_the_reserves()


def low_limit_lowers_the_reserves():
    """With the defaults and a hard limit of 1024 the pipe reserves (trial, moved, stream) would
    take more descriptors than there are: they give way, to half of what the fixed margin
    leaves, and the proxy says so; max_connections keeps the other half instead of dropping to
    1."""
    for workers in (1, 2):
        argv = ["prlimit", "--nofile=1024:1024"] + h.proxy_argv(
            "127.0.0.1:0", "127.0.0.1:9", *h.pos(max_connections=100000,
                                                  upstream_test_timeout_secs=0))
        p = h.Proxy(argv, {"ARCTIC_WORKERS": workers})
        p.wait_ready(10)
        err = "\n".join(p.stderr_lines)
        m = re.search(r"max_connections capped at (\d+)", err)
        h.check(m, f"no 'max_connections capped' line: {p.stderr_lines[:4]}")
        cap = int(m.group(1))
        h.check(cap >= 200, f"{workers} worker(s) under a 1024-descriptor limit: max_connections "
                f"capped at {cap}")
        h.check("pipe reserves lowered by the open-files limit" in err,
                f"no line about the lowered pipe reserves: {p.stderr_lines[:4]}")
        h.log(f"{workers} worker(s), limit 1024: max_connections capped at {cap}")
        p.stop()


h.run(main)
