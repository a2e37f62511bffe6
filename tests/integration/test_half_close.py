#!/usr/bin/env python3
"""Half-close in both directions, and normal closes are FIN (never RST); run with
ARCTIC_IO_MODE=buffer and with ARCTIC_IO_MODE=splice (a fresh proxy each).

A) client sends 300 KiB then shutdown(SHUT_WR). The upstream must read all of it and then
   EOF; it stays 1 s in the half-open state, then sends a 200 KiB reply and closes. The
   client must receive the whole reply and then EOF (recv b'', not ECONNRESET).
B) mirror: the upstream sends 100 KiB and half-closes at once. The client reads it and
   EOF, then keeps sending 25 x 8 KiB over ~2.5 s, then shutdown(SHUT_WR). The upstream
   must receive everything followed by EOF (not a reset).
"""
import socket
import time
import harness as h

A_UP = h.pattern_bytes(1, 300 * h.KiB)
A_REPLY = h.pattern_bytes(2, 200 * h.KiB)
B_DOWN = h.pattern_bytes(3, 100 * h.KiB)
B_UP = h.pattern_bytes(4, 25 * 8 * h.KiB)
PAUSE = 1.0


def handler(conn, rec):
    cmd = h.read_command(conn, rec)
    if cmd is None:
        return
    rec.info["cmd"] = cmd
    if cmd == "A":
        h.read_to_end(conn, rec, keep=True, timeout=20)
        time.sleep(PAUSE)  # half-open: client->upstream finished, upstream->client open
        try:
            conn.sendall(A_REPLY)
            rec.bytes_out = len(A_REPLY)
        except OSError as e:
            rec.error_out = h.errno_name(e)
        rec.t_out_done = time.monotonic()
        # plain close() -> FIN
    elif cmd == "B":
        try:
            conn.sendall(B_DOWN)
            rec.bytes_out = len(B_DOWN)
            conn.shutdown(socket.SHUT_WR)
        except OSError as e:
            rec.error_out = h.errno_name(e)
        rec.t_out_done = time.monotonic()
        h.read_to_end(conn, rec, keep=True, timeout=20)


def read_all(s, timeout, what):
    """Read until EOF; returns (data, end kind, time of first byte)."""
    s.settimeout(timeout)
    got = bytearray()
    t_first = None
    deadline = time.monotonic() + timeout
    while True:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            c = s.recv(1 << 16)
        except socket.timeout:
            return bytes(got), "timeout", t_first
        except OSError as e:
            return bytes(got), h.errno_name(e), t_first
        if not c:
            return bytes(got), "eof", t_first
        if t_first is None:
            t_first = time.monotonic()
        got += c


def part_a(p, srv):
    s = p.connect()
    s.sendall(b"A\n" + A_UP)
    s.shutdown(socket.SHUT_WR)
    t_shut = time.monotonic()
    data, end, t_first = read_all(s, 20, "reply")
    rec = next(r for r in srv.records if r.info.get("cmd") == "A")
    srv.wait_done(rec, 10, "upstream of part A")
    h.check(rec.end_in == "eof",
            f"A: upstream's read side ended with {rec.end_in!r} after {rec.bytes_in} bytes; "
            f"expected EOF after all {len(A_UP)} bytes")
    h.check(bytes(rec.data_in) == A_UP,
            f"A: upstream received {len(rec.data_in)} bytes "
            f"({'different content' if len(rec.data_in) == len(A_UP) else 'wrong length'}), "
            f"expected the client's {len(A_UP)} bytes")
    h.check(rec.error_out is None,
            f"A: upstream could not send its reply in the half-open state: {rec.error_out}")
    h.check(len(data) == len(A_REPLY) and data == A_REPLY,
            f"A: client received {len(data)} of {len(A_REPLY)} reply bytes "
            f"(content {'ok' if A_REPLY.startswith(data) else 'WRONG'}) and then {end}; "
            f"the proxy lost data or closed the client early in the half-open state")
    h.check(end == "eof",
            f"A: after the full reply the client got {end!r}, expected EOF (FIN); "
            f"ECONNRESET means the proxy closed with RST")
    h.check(t_first is not None and t_first - t_shut >= PAUSE * 0.8,
            f"A: reply arrived {t_first - t_shut:.2f} s after shutdown, expected >= the "
            f"upstream's {PAUSE} s pause (test sanity)")
    s.close()
    h.log(f"A ok: upstream got {len(A_UP)} B + EOF, client got {len(A_REPLY)} B reply "
          f"after {t_first - t_shut:.2f} s, then FIN")


def part_b(p, srv):
    s = p.connect()
    s.sendall(b"B\n")
    data, end, _ = read_all(s, 10, "download")
    h.check(data == B_DOWN and end == "eof",
            f"B: client expected {len(B_DOWN)} bytes then EOF from the half-closed upstream, "
            f"got {len(data)} bytes then {end!r}")
    sent = 0
    for i in range(25):
        try:
            s.sendall(B_UP[i * 8192:(i + 1) * 8192])
        except OSError as e:
            h.fail(f"B: client send #{i} after the upstream's half-close failed with "
                   f"{h.errno_name(e)} (proxy tore down the still-open direction)")
        sent += 8192
        time.sleep(0.1)
    s.shutdown(socket.SHUT_WR)
    rec = next(r for r in srv.records if r.info.get("cmd") == "B")
    srv.wait_done(rec, 10, "upstream of part B")
    h.check(bytes(rec.data_in) == B_UP and rec.end_in == "eof",
            f"B: upstream received {len(rec.data_in)}/{len(B_UP)} bytes "
            f"(content {'ok' if B_UP.startswith(bytes(rec.data_in)) else 'WRONG'}) "
            f"then {rec.end_in!r}; expected everything then EOF (FIN)")
    time.sleep(0.3)  # let the proxy finish the connection: an RST would now be pending
    kind, dt, extra = h.wait_closed(s, 5)
    h.check(kind == "eof" and extra == 0,
            f"B: after both directions finished the client socket reported {kind} "
            f"({extra} extra bytes)")
    s.close()
    h.log("B ok: client sent 200 KiB over 2.5 s after the upstream's FIN; all delivered")


def run_mode(mode):
    srv = h.ThreadedServer(handler, name=f"half-close upstream ({mode})")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_STATS_INTERVAL_MS": 250, "ARCTIC_IO_MODE": mode})
    base_fd = p.stable_fd_count()
    h.log(f"--- ARCTIC_IO_MODE={mode}")
    part_a(p, srv)
    part_b(p, srv)
    p.wait_stats(lambda st: st.active == 0, 10, "0 active after the half-close tests")
    p.wait_fd_count(base_fd, 5, "fds after the half-close tests")
    p.check_alive()
    p.stop()
    srv.stop()


def main():
    failures = []
    for mode in ("buffer", "splice"):
        try:
            run_mode(mode)
        except h.TestFailure as e:
            h.log(f"FAILED in {mode} mode: {e}")
            failures.append(f"ARCTIC_IO_MODE={mode}: {e}")
    if failures:
        h.fail("\n  ".join(failures))


h.run(main)
