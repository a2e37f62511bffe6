#!/usr/bin/env python3
"""2000 connections held open at the same time through the proxy to an echo upstream
(max_connections=4000): every one does a round trip with its own message, stats show 2000
active, then all are closed and stats return to 0 active, fds back to baseline. Run with ARCTIC_IO_MODE=buffer, then splice."""
import selectors
import socket
import time
import harness as h

N = 2000


def main():
    lim = h.raise_nofile()
    if lim < 2 * N + 200:
        h.skip(f"RLIMIT_NOFILE hard limit {lim} too low for {N} client + {N} upstream sockets")
    for mode in ("buffer", "splice"):
        h.log(f"--- ARCTIC_IO_MODE={mode}")
        run_mode(mode)


def run_mode(mode):
    echo = h.EchoServer(backlog=4096, name="echo upstream")
    p = h.start_proxy("127.0.0.1:0", echo.addr_str,
                      *h.pos(max_connections=4000, backlog=4096, upstream_test_timeout_secs=0),
                      env={"ARCTIC_STATS_INTERVAL_MS": 250, "ARCTIC_IO_MODE": mode})
    base_fd = p.stable_fd_count()
    socks = []
    t0 = time.monotonic()
    for i in range(N):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(p.addr)
        except OSError as e:
            s.close()
            h.fail(f"connect #{i} to the proxy failed: {h.errno_name(e)}")
        socks.append(s)
        h.add_cleanup(s.close)
    h.log(f"{N} connections open after {time.monotonic() - t0:.2f} s")

    msgs = [f"<connection {i:05d} ".encode() + b"x" * (i % 50) + b">" for i in range(N)]
    for i, s in enumerate(socks):
        s.sendall(msgs[i])
        s.setblocking(False)
    sel = selectors.DefaultSelector()
    got = {}
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
        got[i] = bytearray()
    pending = set(range(N))
    bad = {}
    deadline = time.monotonic() + 40
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            i = key.data
            try:
                c = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                bad[i] = f"recv failed: {h.errno_name(e)}"
                c = None
            if c == b"":
                bad[i] = f"EOF after {len(got[i])} of {len(msgs[i])} bytes"
            if c:
                got[i] += c
                if len(got[i]) >= len(msgs[i]):
                    if bytes(got[i]) != msgs[i]:
                        bad[i] = f"wrong echo {bytes(got[i][:40])!r}"
                    pending.discard(i)
                    sel.unregister(key.fileobj)
                continue
            pending.discard(i)
            sel.unregister(key.fileobj)
    sel.close()
    for i in pending:
        bad[i] = f"no complete echo within 40 s ({len(got[i])} of {len(msgs[i])} bytes)"
    if bad:
        sample = "; ".join(f"#{i}: {bad[i]}" for i in sorted(bad)[:10])
        h.fail(f"{len(bad)} of {N} concurrent connections failed their round trip: {sample}")
    h.log(f"{N} round trips correct after {time.monotonic() - t0:.2f} s")
    echo.wait_accepted(N, 10)
    h.check(echo.accepted == N, f"upstream accepted {echo.accepted} connections, expected {N}")
    h.check(echo.open == N, f"upstream has {echo.open} connections open, expected all {N}")
    p.wait_stats(lambda st: st.active == N, 10, f"{N} active while all are open")

    for s in socks:
        s.close()
    h.log("all client sockets closed")
    p.wait_stats(lambda st: st.active == 0, 20, "0 active after closing everything")
    p.wait_fd_count(base_fd, 10, f"fds after closing {N} connections")
    deadline = time.monotonic() + 10
    while echo.open and time.monotonic() < deadline:
        time.sleep(0.05)
    h.check(echo.open == 0, f"{echo.open} upstream connections still open 10 s after all "
                            f"clients closed")
    p.check_alive(f"after {N} connections")
    p.stop()
    echo.stop()
    for s in socks:
        s.close()


h.run(main)
