#!/usr/bin/env python3
"""IPv6: LISTEN [::1]:0 to an IPv4 and to an IPv6 upstream, and IPv4 LISTEN to an IPv6
upstream. Echo round trips (1 byte, 64 KiB, 1 MiB). Skips (77) only if ::1 is unusable."""
import socket
import harness as h


def check_echo(p, label):
    for i, size in enumerate([1, 65536, 1 << 20]):
        s = p.connect()
        data = h.pattern_bytes(100 + i, size)
        h.roundtrip(s, data, timeout=30, what=f"{label}: {size}-byte echo")
        s.shutdown(socket.SHUT_WR)
        kind, dt, extra = h.wait_closed(s, 10)
        h.check(kind == "eof" and extra == 0,
                f"{label}: expected FIN after echo, got {kind} ({extra} extra bytes)")
        s.close()
    h.log(f"{label}: ok")


def main():
    if not h.ipv6_available():
        h.skip("::1 is not usable on this machine (no IPv6 loopback)")
    echo4 = h.EchoServer("127.0.0.1", name="IPv4 echo")
    echo6 = h.EchoServer("::1", name="IPv6 echo")

    for listen, up, label in (("[::1]:0", echo4.addr_str, "[::1] -> IPv4 upstream"),
                              ("[::1]:0", echo6.addr_str, "[::1] -> IPv6 upstream"),
                              ("127.0.0.1:0", echo6.addr_str, "127.0.0.1 -> IPv6 upstream")):
        p = h.start_proxy(listen, up, *h.pos(upstream_test_timeout_secs=3))
        if listen.startswith("["):
            h.check(p.addr_str.startswith("[::1]:") and p.port != 0,
                    f"{label}: readiness line should show [::1]:<port>, got {p.addr_str!r}")
        else:
            h.check(p.addr_str.startswith("127.0.0.1:") and p.port != 0,
                    f"{label}: readiness line should show 127.0.0.1:<port>, got {p.addr_str!r}")
        check_echo(p, label)
        p.stop()


h.run(main)
