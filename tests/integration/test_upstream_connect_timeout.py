#!/usr/bin/env python3
"""Upstream connect timeout (timeout_secs=1): the upstream's accept queue is full so its
SYNs are dropped and the connect hangs. The client must be closed (RST) about timeout_secs
later (not immediately, not never), err counted, the proxy keeps serving and its fd count
returns to baseline."""
import socket
import time
import harness as h


def blackhole_upstream():
    """A listener with listen(0) whose accept queue we fill: further SYNs get dropped."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    h.add_cleanup(ls.close)
    addr = ls.getsockname()
    fillers = []
    for _ in range(2):
        f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        f.setblocking(False)
        f.connect_ex(addr)
        fillers.append(f)
        h.add_cleanup(f.close)
        time.sleep(0.1)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(1.5)
    try:
        probe.connect(addr)
        h.skip("cannot build a non-answering upstream here (a full accept queue still "
               "completes handshakes)")
    except socket.timeout:
        pass
    finally:
        probe.close()
    return ls, addr[1]


def main():
    ls, port = blackhole_upstream()
    p = h.start_proxy("127.0.0.1:0", f"127.0.0.1:{port}",
                      *h.pos(timeout_secs=1, upstream_test_timeout_secs=0),
                      env={"ARCTIC_STATS_INTERVAL_MS": 200})
    base_fd = p.stable_fd_count()
    kind, dt, extra, s = h.connect_expect_close(p.addr, 10)
    h.check(kind != "timeout",
            "client still open 10 s after connecting; upstream connect timeout is 1 s")
    h.check(dt >= 0.7,
            f"client closed after only {dt:.2f} s ({kind}); the upstream connect was still "
            f"pending and timeout_secs is 1")
    h.check(dt <= 5.0, f"client closed after {dt:.2f} s; expected about 1 s (timeout_secs=1)")
    h.check(kind == "reset",
            f"client ended with {kind!r} after {dt:.2f} s; the contract says an upstream "
            f"connect timeout closes the client with RST")
    h.log(f"client closed with {kind} after {dt:.2f} s")
    p.wait_stats(lambda st: st.err == 1 and st.active == 0, 5, "err == 1 and 0 active")
    p.check_alive("after an upstream connect timeout")
    p.wait_fd_count(base_fd, 5, "fds after the connect timeout")


h.run(main)
