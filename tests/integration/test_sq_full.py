#!/usr/bin/env python3
"""A worker that falls behind (SIGSTOP, then SIGCONT) finds a burst of work at once: readable
connections and a queue of new ones, more submissions than its ring holds
(ARCTIC_RING_ENTRIES=64). A new connection needs two entries in one submission (connect and
its linked timeout); when the ring has room for only one, the proxy must submit what it has
first, never hand the kernel a slot it has not filled yet (the kernel would run whatever that
slot held a ring ago again: a second completion for an old operation, an assertion, a crash).
Checked over several fill levels: the proxy survives, every connection still echoes."""
import signal
import socket
import time
import harness as h

NEW = 40


def got(s, data):
    try:
        return h.recv_exact(s, len(data), timeout=10) == data
    except h.TestFailure:
        return False


def echo_ok(s, data):
    try:
        s.settimeout(10)
        s.sendall(data)
    except OSError:
        return False
    return got(s, data)


def main():
    echo = h.EchoServer(name="echo upstream")
    for old in range(1, 6):
        p = h.start_proxy("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0),
                          env={"ARCTIC_WORKERS": 1, "ARCTIC_RING_ENTRIES": 64,
                               "ARCTIC_POLL": "wait"})
        olds = [p.connect() for _ in range(old)]
        for s in olds:
            h.check(echo_ok(s, b"hi"), f"{old} old connections: no echo before the pause")
        p.signal(signal.SIGSTOP)
        try:
            for s in olds:  # each: one readiness, one entry when the worker runs again
                s.sendall(b"x")
            time.sleep(0.05)
            news = [socket.create_connection(p.addr, timeout=10) for _ in range(NEW)]
        finally:
            p.signal(signal.SIGCONT)
        lost = sum(not got(s, b"x") for s in olds)
        bad = sum(not echo_ok(s, b"z") for s in olds + news)
        for s in olds + news:
            s.close()
        time.sleep(1.0)  # the closes complete every operation still in flight
        what = f"{old} readable connections and {NEW} new ones after a pause, 64-entry ring"
        p.check_alive(what)
        h.check(lost == 0, f"{what}: {lost} bytes sent during the pause were not echoed")
        h.check(bad == 0, f"{what}: {bad} connections did not echo after the pause")
        h.log(f"{what}: all echo, the proxy runs on")
        p.stop()


h.run(main)
