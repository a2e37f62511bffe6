#!/usr/bin/env python3
"""Moves to a pipe under buffer pressure stay inside the descriptor budget. Under
`prlimit --nofile=512:512`, buffer mode with 64 relay buffers of which a direction holds one
(and small trial and stream reserves, ARCTIC_PIPE_TRIAL=8 and ARCTIC_STREAM_PIPES=8, so that the
limit lowers no reserve) caps max_connections so that every connection's two sockets and a
worker's moved pipes (at most ARCTIC_BUF_COUNT directions at once, two descriptors each: 128,
twice the fixed margin) fit.
40 connections then stall both ways (uploads the upstream does not read, downloads the client
does not read): 80 directions for 64 buffers, so the holders are moved, up to the budget, and
the rest wait. Then connections up to the cap must still be accepted and connected upstream (no
EMFILE), and the proxy's descriptors stay under the limit. Without the moved pipes in the
budget, the cap is higher by 64 and the last connections find no descriptor."""
import time
import harness as h

LIMIT = 512
STALLED = 40


def main():
    # sends, never reads: both directions stall; the extra connections send nothing
    srv = h.ThreadedServer(h.command_source_handler(8 * h.MiB, chunk=65536), name="upstream")
    p, cap = h.start_proxy_limited(LIMIT, srv.addr_str, {
        "ARCTIC_WORKERS": 1, "ARCTIC_IO_MODE": "buffer", "ARCTIC_BUF_COUNT": 64,
        "ARCTIC_PIPE_TRIAL": 8, "ARCTIC_STREAM_PIPES": 8, "ARCTIC_INFLIGHT": 1,
        "ARCTIC_STATS_FORMAT": "json", "ARCTIC_STATS_INTERVAL_MS": 200})
    h.check(STALLED < cap, f"cap {cap} leaves no room for the test")

    stalled = []
    for i in range(STALLED):
        s = p.connect()
        s.sendall(f"SRC {10 + i}\n".encode())
        s.setblocking(False)
        try:
            s.send(b"x" * (8 << 20))
        except BlockingIOError:
            pass
        stalled.append(s)
        time.sleep(0.02)
    time.sleep(2.0)  # several pressure scans: every move the budget allows happens

    extra = []
    for i in range(cap - STALLED):
        extra.append(p.connect())
    tot, fds = h.check_all_admitted(p, srv, cap, LIMIT)
    h.check(tot["moved_to_pipe"] > 32,
            f"only {tot['moved_to_pipe']} directions moved to a pipe: the budget is not used")
    h.log(f"cap {cap}: {STALLED} stalled + {cap - STALLED} more connections all accepted; "
          f"{tot['moved_to_pipe']} moves, {fds} descriptors of {LIMIT}")
    p.check_alive()
    for s in stalled + extra:
        s.close()
    p.stop()
    srv.stop()


h.run(main)
