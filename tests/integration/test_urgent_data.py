#!/usr/bin/env python3
"""TCP urgent data (send(MSG_OOB)) is relayed in line, in order, in every I/O mode and both
directions: splice(2) stops at the urgent mark and poll keeps reporting the socket readable,
so a relay that only splices stalls the direction and spins its core, and a plain recv(2)
skips the urgent byte (lost). Checked: the receiver gets every byte, the urgent one in its
place, and bytes sent after it keep flowing; the proxy uses little CPU while the connection
sits after the exchange (a spin takes a whole core)."""
import socket
import threading
import time
import harness as h

BEFORE, URGENT, AFTER = b"abc", b"!", b"def"
TAIL = 256 * h.KiB  # after the mark: a stream, so pipes and buffers both carry some


def read_n(sock, n, timeout=10):
    sock.settimeout(timeout)
    got = bytearray()
    while len(got) < n:
        try:
            b = sock.recv(n - len(got))
        except socket.timeout:
            break
        if not b:
            break
        got += b
    return bytes(got)


def send_urgent(sock, tail):
    sock.sendall(BEFORE)
    time.sleep(0.2)  # the first bytes are relayed before the mark arrives
    sock.send(URGENT, socket.MSG_OOB)
    sock.sendall(AFTER)
    time.sleep(0.1)
    sock.sendall(tail)


def main():
    expected_tail = h.pattern_bytes(7, TAIL)
    want = BEFORE + URGENT + AFTER + expected_tail
    for mode in ("auto", "splice", "buffer"):
        for direction in ("client to upstream", "upstream to client"):
            release = threading.Event()

            def handler(conn, rec, release=release):
                """Upstream: keeps the connection; the test drives it as rec.info['conn']."""
                rec.info["conn"] = conn
                release.wait(60)
            srv = h.ThreadedServer(handler, name="upstream")
            p = h.start_proxy("127.0.0.1:0", srv.addr_str,
                              *h.pos(upstream_test_timeout_secs=0),
                              env={"ARCTIC_IO_MODE": mode})
            c = p.connect()
            srv.wait_accepted(1)
            rec = srv.records[0]
            deadline = time.monotonic() + 5
            while "conn" not in rec.info and time.monotonic() < deadline:
                time.sleep(0.01)
            u = rec.info["conn"]
            src, dst = (c, u) if direction == "client to upstream" else (u, c)
            send_urgent(src, expected_tail)
            got = read_n(dst, len(want))
            what = f"ARCTIC_IO_MODE={mode}, {direction}"
            h.check(got == want,
                    f"{what}: the receiver got {len(got)} of {len(want)} bytes; first 8: "
                    f"{got[:8]!r} (expected {want[:8]!r}): "
                    + ("the urgent byte was dropped" if got[:6] == BEFORE + AFTER
                       else "the direction stalled at the urgent mark"
                       if got[:3] == BEFORE and len(got) < 7 else "wrong bytes"))
            # idle now: a worker spinning on a readable socket it cannot read burns a core
            c0, t0 = h.cpu_seconds(p.pid), time.monotonic()
            time.sleep(1.5)
            share = (h.cpu_seconds(p.pid) - c0) / (time.monotonic() - t0)
            h.log(f"{what}: {len(got)} bytes in order, urgent byte in place; proxy CPU "
                  f"afterwards {share:.0%} of a core")
            h.check(share < 0.5, f"{what}: the proxy used {share:.0%} of a core while the "
                    f"connection was idle after the urgent byte (a spin)")
            # and the connection still works both ways
            c.sendall(b"ping")
            h.check(read_n(u, 4) == b"ping", f"{what}: no bytes client->upstream afterwards")
            u.sendall(b"pong")
            h.check(read_n(c, 4) == b"pong", f"{what}: no bytes upstream->client afterwards")
            c.close()
            release.set()
            p.check_alive(what)
            p.stop()
            srv.stop()


h.run(main)
