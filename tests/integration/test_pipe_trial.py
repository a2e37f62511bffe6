#!/usr/bin/env python3
"""Auto mode's trial pipes (ARCTIC_PIPE_TRIAL): a new connection's directions are relayed
through a pipe from their first byte, but hold one only while bytes move: a connection that
is idle (before any byte, or after a message) holds no pipe; small request/response messages
move the directions to buffers; a later stream on the same connection is relayed intact; idle
connections do not use up the trial, so a new connection still streams through a pipe from
its first byte; closed connections' pipes serve the next ones (the worker's pool); at most
ARCTIC_PIPE_TRIAL trial directions per worker hold a pipe at once (stalled destinations keep
theirs; the next ones go to buffers), every byte arrives; ARCTIC_PIPE_TRIAL=0 starts every
direction on buffers."""
import socket
import threading
import time
import harness as h


def wait_pipes(p, pred, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    n = h.pipe_fds(p)
    while not pred(n) and time.monotonic() < deadline:
        time.sleep(0.05)
        n = h.pipe_fds(p)
    h.check(pred(n), f"{what}: the proxy holds {n} pipe descriptors after {timeout:.0f} s; "
            f"fds: {p.fd_list()}")
    return n


def connected(echo_seen_before, echo):
    """Waits until the upstream accepted this connection (the proxy has connected)."""
    deadline = time.monotonic() + 5
    while echo.accepted <= echo_seen_before and time.monotonic() < deadline:
        time.sleep(0.02)
    h.check(echo.accepted > echo_seen_before, "the proxy did not connect the upstream")


def idle_connections_leave_the_trial(echo):
    """Connections idle after a message hold no trial: with ARCTIC_SPLICE_AFTER=255 a direction
    on buffers never moves to a pipe within 8 MiB, so a pipe after the stream means the new
    connection was spliced from its first byte."""
    p = h.start_proxy("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_WORKERS": 1, "ARCTIC_PIPE_TRIAL": 4,
                           "ARCTIC_SPLICE_AFTER": 255})
    idle = []
    for i in range(6):
        before = echo.accepted
        s = p.connect()
        connected(before, echo)
        h.roundtrip(s, f"hello {i}\r\n".encode(), timeout=10, what=f"idle conn {i}")
        idle.append(s)
    wait_pipes(p, lambda n: n == 0, "6 connections idle after one message")
    s = p.connect()
    data = h.pattern_bytes(11, 8 * h.MiB)
    h.roundtrip(s, data, timeout=60, what="8 MiB stream beside idle connections")
    n = h.pipe_fds(p)
    h.check(n > 0, "a new connection beside 6 idle ones did not stream through a trial pipe "
            f"(ARCTIC_SPLICE_AFTER=255 keeps buffers off pipes): {p.fd_list()}")
    h.log(f"beside 6 idle connections a new stream still starts on a pipe ({n} pipe fds)")
    for c in idle + [s]:
        c.close()
    wait_pipes(p, lambda n: n == 0, "after closing every connection")
    p.wait_stats(lambda st: st.active == 0, 10, "0 active")
    p.stop()


def pipe_inodes(p):
    return {e.split("pipe:[")[1].rstrip("]") for e in p.fd_list()
            if "->pipe:" in e and int(e.split("->")[0]) > 2}


def pipes_are_reused(echo):
    """A closed connection's pipes go to the worker's pool and serve the next connections:
    10 streams one after the other see a handful of distinct pipes, not two new ones each
    (pipe2() and two close() per pipe saved)."""
    p = h.start_proxy("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_WORKERS": 1, "ARCTIC_PIPE_TRIAL": 4})
    seen = set()
    for i in range(10):
        s = p.connect()
        h.roundtrip(s, h.pattern_bytes(40 + i, 1 * h.MiB), timeout=60, what=f"stream {i}")
        now = pipe_inodes(p)  # promoted directions keep their pipe while open
        h.check(now, f"stream {i} holds no pipe after 1 MiB: {p.fd_list()}")
        seen |= now
        s.close()
    h.check(len(seen) <= 6, f"10 streams used {len(seen)} distinct pipes: the pool did not "
            f"serve them (at most 6 expected with ARCTIC_PIPE_TRIAL=4)")
    h.log(f"10 streams one after the other used {len(seen)} distinct pipes (pool reuse)")
    wait_pipes(p, lambda n: n == 0, "after the streams (pool released when unused)")
    p.stop()


def stalled_trials_are_capped():
    """Trial directions whose destination stopped reading keep their pipe (bytes in it); with
    ARCTIC_PIPE_TRIAL=2 only two do, the others relay on buffers. 4 MiB relay buffers make
    every trial read (at most a 256 KiB pipe) a small one, so no trial ends in a stream."""
    total = 3 * h.MiB
    src = h.ThreadedServer(h.source_handler(total, seed=31), name="source upstream")
    p = h.start_proxy("127.0.0.1:0", src.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_WORKERS": 1, "ARCTIC_PIPE_TRIAL": 2,
                           "ARCTIC_BUF_SIZE": 4 * h.MiB, "ARCTIC_BUF_COUNT": 8})
    clients = []
    for i in range(4):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        h.add_cleanup(c.close)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.settimeout(10)
        c.connect(p.addr)
        clients.append(c)
    src.wait_accepted(4)
    wait_pipes(p, lambda n: n == 4, "4 stalled downloads with ARCTIC_PIPE_TRIAL=2 "
               "(2 trial pipes = 4 descriptors expected)")
    time.sleep(1.0)
    h.check(h.pipe_fds(p) == 4, f"trial pipes changed while stalled: {p.fd_list()}")
    h.log("4 stalled downloads: 2 hold trial pipes, 2 relay on buffers")
    want = h.pattern_bytes(31, total)
    for i, c in enumerate(clients):
        got = h.recv_exact(c, total, timeout=60, what=f"stalled download {i}")
        h.check(got == want, f"stalled download {i}: bytes differ")
        kind, dt, extra = h.wait_closed(c, 10)
        h.check(kind == "eof" and extra == 0, f"download {i}: EOF not relayed: {kind}, {extra}")
        c.close()
    wait_pipes(p, lambda n: n == 0, "after the downloads")
    p.wait_stats(lambda st: st.active == 0, 10, "0 active")
    p.stop()


def trial_off_starts_on_buffers(echo, trial):
    """ARCTIC_PIPE_TRIAL=0: every direction starts on buffers. ARCTIC_SPLICE_AFTER=255 keeps
    buffers off pipes within 8 MiB, so a stream from the first byte shows no pipe (with trial
    pipes it keeps one: see idle_connections_leave_the_trial)."""
    p = h.start_proxy("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_WORKERS": 1, "ARCTIC_PIPE_TRIAL": trial,
                           "ARCTIC_SPLICE_AFTER": 255})
    s = p.connect()
    h.roundtrip(s, h.pattern_bytes(12, 8 * h.MiB), timeout=60,
                what=f"8 MiB stream with ARCTIC_PIPE_TRIAL={trial}")
    h.check(h.pipe_fds(p) == 0, f"ARCTIC_PIPE_TRIAL={trial}: a stream from the first byte took "
            f"a pipe: {p.fd_list()}")
    s.close()
    h.log(f"ARCTIC_PIPE_TRIAL={trial}: an 8 MiB stream stays on buffers")
    p.stop()


def main():
    echo = h.EchoServer(name="echo upstream")
    env = {"ARCTIC_WORKERS": 1, "ARCTIC_PIPE_TRIAL": 4}
    p = h.start_proxy("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env=env)
    h.check(h.pipe_fds(p) == 0, f"a fresh proxy holds pipes: {p.fd_list()}")

    # a new connection holds no pipe before its first byte, nor once a message has passed
    before = echo.accepted
    a = p.connect()
    connected(before, echo)
    time.sleep(0.5)
    h.check(h.pipe_fds(p) == 0, f"a new idle connection holds pipes: {p.fd_list()}")
    h.roundtrip(a, b"first message\r\n", timeout=10, what="first exchange")
    wait_pipes(p, lambda n: n == 0, "a connection idle after one message (no pipe expected)")
    h.log("idle connection (before and after a message): no pipe held")

    # small messages end the trial: back to buffers, pipes pooled, then closed when unused
    for i in range(1, 4):
        h.roundtrip(a, f"request {i}\r\n".encode(), timeout=10, what=f"small exchange #{i}")
    wait_pipes(p, lambda n: n == 0, "after small exchanges (trial over, pool released)")
    h.log("small exchanges: directions moved to buffers, pipes given back")
    for i in range(50):
        h.roundtrip(a, (f"ping {i};".encode()) * (1 + i % 9), timeout=10,
                    what=f"ping-pong #{i} on buffers")

    # the same connection then streams: intact, and through a pipe again
    data = h.pattern_bytes(7, 8 * h.MiB)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], h.pipe_fds(p))
            except OSError:
                pass
            time.sleep(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    h.roundtrip(a, data, timeout=60, what="8 MiB stream after the trial")
    done.set()
    sampler.join(5)
    # a direction that switched to a pipe mid-stream keeps it until the connection ends
    after = h.pipe_fds(p)
    h.check(max(peak[0], after) > 0,
            f"an 8 MiB stream after the trial never took a pipe: {p.fd_list()}")
    h.log(f"8 MiB echo after the trial intact ({max(peak[0], after)} pipe fds while streaming)")

    a.close()
    p.wait_stats(lambda st: st.active == 0, 10, "0 active at the end")
    p.check_alive("after the trial tests")
    p.stop()

    idle_connections_leave_the_trial(echo)
    pipes_are_reused(echo)
    stalled_trials_are_capped()

    trial_off_starts_on_buffers(echo, 0)


h.run(main)
