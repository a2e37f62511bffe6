#!/usr/bin/env python3
"""Echo round trips through the proxy over IPv4: payloads from 1 byte to 4 MiB (each on its
own connection, FIN propagates back), 200 small ping-pongs on one connection, stats return
to 0 active; then the same with buffer_size=0 (kernel autotuning)."""
import socket
import harness as h


def main():
    echo = h.EchoServer(name="echo upstream")
    p = h.start_proxy("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=3),
                      env={"ARCTIC_STATS_INTERVAL_MS": 250})
    h.check(p.host == "127.0.0.1" and p.port != 0,
            f"listening address should be 127.0.0.1:<real port>, got {p.addr_str!r}")
    h.log(f"proxy ready on {p.addr_str}")

    sizes = [1, 2, 100, 1460, 4096, 65535, 65536, 65537, 262151, 1 << 20, 4 << 20]
    for i, size in enumerate(sizes):
        s = p.connect()
        data = h.pattern_bytes(i + 1, size)
        h.roundtrip(s, data, timeout=30, what=f"{size}-byte echo")
        s.shutdown(socket.SHUT_WR)
        kind, dt, extra = h.wait_closed(s, 10)
        h.check(kind == "eof" and extra == 0,
                f"{size}-byte echo: after our FIN expected the echo's FIN (recv b''), got "
                f"{kind} after {dt:.2f} s with {extra} extra bytes")
        s.close()
        h.log(f"echo {size} bytes ok")

    s = p.connect()
    for i in range(200):
        msg = (f"ping {i};".encode()) * (1 + i % 7)
        h.roundtrip(s, msg, timeout=10, what=f"ping-pong #{i}")
    s.close()
    h.log("200 ping-pongs ok")

    want = len(sizes) + 1  # the start-up check connection carries no data
    h.check(echo.with_data == want,
            f"upstream saw {echo.with_data} connections carrying data, expected {want}")
    p.wait_stats(lambda st: st.active == 0, 10, "0 active after all clients closed")
    p.check_alive("after the echo tests")
    p.stop()

    # buffer_size=0 (kernel autotuning) must work too
    p = h.start_proxy("127.0.0.1:0", echo.addr_str,
                      *h.pos(buffer_size=0, upstream_test_timeout_secs=0))
    for i, size in enumerate((1, 4 << 20)):
        s = p.connect()
        h.roundtrip(s, h.pattern_bytes(50 + i, size), what=f"buffer_size=0: {size}-byte echo")
        s.close()
    h.log("buffer_size=0 ok")


h.run(main)
