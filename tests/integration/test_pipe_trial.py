#!/usr/bin/env python3
"""Auto mode's trial pipes (ARCTIC_PIPE_TRIAL): a new connection's two directions start on
pipes; small request/response messages move them to buffers and the pipes are given back
(the proxy's fd table returns to its baseline); a later stream on the same connection is
relayed intact; at most ARCTIC_PIPE_TRIAL directions per worker are on trial pipes at once;
ARCTIC_PIPE_TRIAL=0 starts every direction on buffers."""
import socket
import threading
import time
import harness as h


def pipe_fds(p):
    # fds 0-2 are the harness's own pipes to the proxy
    return sum(1 for e in p.fd_list() if "->pipe:" in e and int(e.split("->")[0]) > 2)


def wait_pipes(p, pred, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    n = pipe_fds(p)
    while not pred(n) and time.monotonic() < deadline:
        time.sleep(0.05)
        n = pipe_fds(p)
    h.check(pred(n), f"{what}: the proxy holds {n} pipe descriptors after {timeout:.0f} s; "
            f"fds: {p.fd_list()}")
    return n


def connected(echo_seen_before, echo):
    """Waits until the upstream accepted this connection (the proxy has connected)."""
    deadline = time.monotonic() + 5
    while echo.accepted <= echo_seen_before and time.monotonic() < deadline:
        time.sleep(0.02)
    h.check(echo.accepted > echo_seen_before, "the proxy did not connect the upstream")


def main():
    echo = h.EchoServer(name="echo upstream")
    env = {"ARCTIC_WORKERS": 1, "ARCTIC_PIPE_TRIAL": 4}
    p = h.start_proxy("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env=env)
    h.check(pipe_fds(p) == 0, f"a fresh proxy holds pipes: {p.fd_list()}")

    # a new connection: both directions on a pipe before any byte moves
    before = echo.accepted
    a = p.connect()
    connected(before, echo)
    wait_pipes(p, lambda n: n == 4, "a new connection in auto mode (2 trial pipes expected)")
    h.log("new connection: both directions start on pipes")

    # small messages end the trial: back to buffers, pipes pooled, then closed when unused
    for i in range(4):
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
                peak[0] = max(peak[0], pipe_fds(p))
            except OSError:
                pass
            time.sleep(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    h.roundtrip(a, data, timeout=60, what="8 MiB stream after the trial")
    done.set()
    sampler.join(5)
    # a direction that switched to a pipe mid-stream keeps it until the connection ends
    after = pipe_fds(p)
    h.check(max(peak[0], after) > 0,
            f"an 8 MiB stream after the trial never took a pipe: {p.fd_list()}")
    h.log(f"8 MiB echo after the trial intact ({max(peak[0], after)} pipe fds while streaming)")
    a.close()
    wait_pipes(p, lambda n: n == 0, "after closing the streaming connection")

    # the cap: 4 trial directions per worker, whatever the number of connections
    conns = []
    for i in range(5):
        before = echo.accepted
        s = p.connect()
        connected(before, echo)
        conns.append(s)
    wait_pipes(p, lambda n: n == 8, "5 idle connections with ARCTIC_PIPE_TRIAL=4 "
               "(4 trial pipes = 8 descriptors expected)")
    time.sleep(1.0)  # nothing is released while they are open and idle, nothing added
    h.check(pipe_fds(p) == 8, f"trial pipes changed on idle connections: {p.fd_list()}")
    for i, s in enumerate(conns):  # every one relays, on a trial pipe or on buffers
        h.roundtrip(s, h.pattern_bytes(20 + i, 300000), timeout=20, what=f"idle conn {i}")
    for s in conns:
        s.shutdown(socket.SHUT_WR)
        kind, dt, extra = h.wait_closed(s, 10)
        h.check(kind == "eof" and extra == 0, f"FIN not relayed back: {kind}, {extra} bytes")
        s.close()
    wait_pipes(p, lambda n: n == 0, "after closing every connection")
    p.wait_stats(lambda st: st.active == 0, 10, "0 active at the end")
    p.check_alive("after the trial tests")
    p.stop()

    # ARCTIC_PIPE_TRIAL=0: connections start on buffers
    p = h.start_proxy("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_WORKERS": 1, "ARCTIC_PIPE_TRIAL": 0})
    before = echo.accepted
    s = p.connect()
    connected(before, echo)
    time.sleep(0.5)
    h.check(pipe_fds(p) == 0, f"ARCTIC_PIPE_TRIAL=0: a new connection took pipes: {p.fd_list()}")
    h.roundtrip(s, b"hello", timeout=10, what="ARCTIC_PIPE_TRIAL=0 echo")
    s.close()
    h.log("ARCTIC_PIPE_TRIAL=0: no pipe before data")
    p.stop()


h.run(main)
