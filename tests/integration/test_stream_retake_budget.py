#!/usr/bin/env python3
"""A stream that gave its pipe back while quiet finds the stream budget full when it speaks
again, and goes on on buffers (auto mode). One worker with ARCTIC_STREAM_PIPES=1 and
ARCTIC_PIPE_TRIAL=0 (no trial pipes and no pool, so every pipe the proxy holds is a streaming
direction's and is closed when given back):

1. A downloads 4 MiB: its download direction streams, on the one stream pipe. A then idles,
   and the quiet scan closes that pipe: the proxy holds none.
2. B downloads 1 MiB of 4 and stops reading: B's direction streams on the stream pipe and
   keeps it, full.
3. A downloads again and stops reading halfway: the budget is full, so A goes on on buffers.
   The proxy must hold B's pipe only. A stream that retook a pipe past the budget would hold a
   second one here, for as long as its reader stalls.
4. Both read to the end: every byte arrives, in order.

The clients pin their receive buffers, so a stalled reader leaves its bytes in flight in the
proxy (a growing receive buffer could take them all and let the pipe run empty)."""
import time
import harness as h

SIZE = 4 * h.MiB


def wait_pipe_fds(p, want, timeout, what):
    deadline = time.monotonic() + timeout
    n = h.pipe_fds(p)
    while n != want and time.monotonic() < deadline:
        time.sleep(0.05)
        n = h.pipe_fds(p)
    h.check(n == want, f"{what}: the proxy holds {n} pipe descriptors, expected {want}")


def main():
    srv = h.ThreadedServer(h.command_source_handler(SIZE, chunk=65536, after="repeat"),
                           name="upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_WORKERS": 1, "ARCTIC_PIPE_TRIAL": 0,
                           "ARCTIC_STREAM_PIPES": 1, "ARCTIC_IO_MODE": "auto"})

    # 1. A streams on the one stream pipe, then goes quiet and gives it back
    a = p.connect(rcvbuf=65536)
    a.sendall(b"SRC 11\n")
    most = 0
    got = bytearray()
    a.settimeout(20)
    while len(got) < SIZE:
        chunk = a.recv(min(65536, SIZE - len(got)))
        h.check(chunk, f"A's first download ended after {len(got)} bytes")
        got += chunk
        most = max(most, h.pipe_fds(p))
    h.check(bytes(got) == h.pattern_bytes(11, SIZE), "A's first download: bytes differ")
    h.check(most == 2, f"A's first download: at most {most} pipe descriptors seen, expected "
            f"its stream pipe (2): the test shows nothing")
    wait_pipe_fds(p, 0, 5, "A streamed once and is idle")

    # 2. B takes the stream pipe and keeps it: its reader has stopped
    b = p.connect(rcvbuf=65536)
    b.sendall(b"SRC 22\n")
    first_b = h.recv_exact(b, h.MiB, timeout=20, what="B's download, first MiB")
    wait_pipe_fds(p, 2, 10, "B's download stalled on its stream pipe")
    time.sleep(1.0)  # two quiet scans: a full pipe is not quiet and stays
    h.check(h.pipe_fds(p) == 2, "B's stalled stream gave its pipe back")

    # 3. A speaks again with the budget full: on buffers
    a.sendall(b"SRC 33\n")
    first = h.recv_exact(a, SIZE // 2, timeout=20, what="A's second download, first half")
    time.sleep(1.0)  # A's reader stalls now, with its direction's bytes in flight
    n = h.pipe_fds(p)
    h.check(n == 2, f"A's second download past the stream budget (1): the proxy holds {n} "
            f"pipe descriptors, expected B's pipe only (2)")

    # 4. both read to the end
    rest = h.recv_exact(a, SIZE - SIZE // 2, timeout=20, what="A's second download, rest")
    h.check(first + rest == h.pattern_bytes(33, SIZE), "A's second download: bytes differ")
    rest_b = h.recv_exact(b, SIZE - h.MiB, timeout=20, what="B's download, rest")
    h.check(first_b + rest_b == h.pattern_bytes(22, SIZE), "B's download: bytes differ")
    h.log(f"A streamed (2 pipe fds), went quiet (0), B stalled on the stream pipe (2), A's "
          f"second stream stayed on buffers (2 held); every byte intact")
    p.check_alive()
    a.close()
    b.close()
    p.stop()
    srv.stop()


h.run(main)
