#!/usr/bin/env python3
"""Descriptor exhaustion: with an open-files limit that leaves no descriptor for accept(),
clients are counted as accept errors, the worker pauses accepting (no 100% CPU spin, at most
about one log line per second), and the proxy keeps running; with room for the client socket
but not the upstream one, each client is reset and counted."""
import shutil
import socket
import time
import harness as h


def start(limit, echo, may_fail=False):
    """The proxy under `prlimit --nofile=limit:limit`, one worker; None if it could not
    start (too few descriptors for its own set-up) and may_fail."""
    argv = ["prlimit", f"--nofile={limit}:{limit}"] + h.proxy_argv(
        "127.0.0.1:0", echo.addr_str, *h.pos(max_connections=10, upstream_test_timeout_secs=0))
    p = h.Proxy(argv, {"ARCTIC_WORKERS": "1", "ARCTIC_STATS_INTERVAL_MS": "250"})
    try:
        p.wait_ready(10)
    except h.TestFailure:
        if not may_fail or p.proc.poll() != 1:
            raise
        return None
    return p


def free_fd_slots(p, limit):
    used = {int(e.split("->")[0]) for e in p.fd_list()}
    return [n for n in range(limit) if n not in used]


def main():
    if not shutil.which("prlimit"):
        h.skip("prlimit not installed")
    echo = h.EchoServer(name="echo")

    # find the limit that leaves exactly no descriptor number free after start-up
    for limit in range(4, 16):
        p = start(limit, echo, may_fail=True)
        if p is None:
            continue
        free = free_fd_slots(p, limit)
        if not free:
            break
        p.stop()
    else:
        h.fail("no open-files limit between 4 and 15 leaves the started proxy without a free descriptor")
    h.log(f"open-files limit {limit}: no descriptor left for accept()")

    clients = [socket.create_connection(p.addr, timeout=5) for _ in range(3)]
    t0, c0 = time.monotonic(), h.cpu_seconds(p.pid)
    time.sleep(2.0)
    cpu = (h.cpu_seconds(p.pid) - c0) / (time.monotonic() - t0)
    st = p.stats()
    p.check_alive("under descriptor exhaustion")
    h.check(st.err >= 2, f"accept failures not counted: stats {st}")
    h.check(st.err < 200, f"{st.err} errors in 2 s: accepting is not paused between failures")
    h.check(cpu < 0.3, f"proxy used {cpu:.2f} CPU while out of descriptors (spinning?)")
    lines = [l for l in p.stderr_lines if "accept() failed: EMFILE" in l]
    h.check(lines, f"no 'accept() failed: EMFILE' line on stderr: {p.stderr_lines[-5:]}")
    h.check(len(lines) <= 5, f"{len(lines)} EMFILE log lines in about 2 s (rate limit is one per second)")
    for c in clients:
        c.close()
    p.stop()
    h.log(f"EMFILE: {st.err} counted errors, {len(lines)} log lines, {cpu:.3f} CPU")

    # one descriptor more: the client is accepted, the upstream socket() fails
    p = start(limit + 1, echo)
    try:
        c = socket.create_connection(p.addr, timeout=5)
        kind, dt, extra = h.wait_closed(c, 5)
    except ConnectionResetError:
        # the RST can land while connect() is still returning
        kind, dt = "reset", 0.0
    h.check(kind in ("reset", "eof"), f"client with no upstream descriptor: {kind} after {dt:.2f} s")
    p.wait_stats(lambda st: st.err >= 1 and st.active == 0, 5, "the failed upstream socket counted")
    h.check(any("socket() for upstream" in l and "EMFILE" in l for l in p.stderr_lines),
            f"no 'socket() for upstream ... EMFILE' line: {p.stderr_lines[-5:]}")
    p.check_alive("after the failed upstream socket")
    p.stop()


h.run(main)
