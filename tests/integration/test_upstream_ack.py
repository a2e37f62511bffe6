#!/usr/bin/env python3
"""ACKs on the upstream connection, counted by the upstream's kernel (TCP_INFO segs_in):
- the ACK that completes the upstream handshake rides on the client's first bytes when they
  are already there (one segment less per connection than a plain client sends);
- when the client has sent nothing yet (a server-speaks-first protocol), that ACK still goes
  out at once: the upstream's accept() and banner are not held back by the kernel's
  delayed-ACK timer (200 ms);
- ARCTIC_QUICKACK=1 (default): the upstream's data is ACKed at once; ARCTIC_QUICKACK=0: the
  ACK waits and rides on the proxy's next segment (here its FIN).
Counts are taken as the minimum over a few connections, so a stalled machine (a delayed-ACK
timer firing late in the exchange) cannot fail the test; the counts compared are exact."""
import socket
import time
import harness as h

TRIES = 4
REQUEST = b"ping\n"
RESPONSE = b"pong\n"


def counting_handler(conn, rec):
    """Reads the request, notes segs_in, answers, reads to EOF, notes segs_in again."""
    conn.settimeout(20)
    got = b""
    while len(got) < len(REQUEST):
        b = conn.recv(64)
        if not b:
            break
        got += b
    rec.info["request"] = got
    rec.info["segs_at_request"] = h.tcp_segs_in(conn)
    conn.sendall(RESPONSE)
    while conn.recv(64):
        pass
    rec.info["segs_at_eof"] = h.tcp_segs_in(conn)


def banner_handler(conn, rec):
    """Speaks first: a banner the moment it accepts, then waits for the client's EOF."""
    rec.info["accepted_at"] = time.monotonic()
    conn.settimeout(20)
    conn.sendall(b"220 ready\r\n")
    while conn.recv(64):
        pass


def one_exchange(connect, server):
    n = server.accepted
    s = connect()
    s.sendall(REQUEST)
    got = h.recv_exact(s, len(RESPONSE), timeout=10, what="response")
    h.check(got == RESPONSE, f"response {got!r}")
    s.close()
    server.wait_accepted(n + 1)
    rec = server.records[n]
    server.wait_done(rec, 10)
    h.check(rec.info.get("request") == REQUEST, f"upstream got {rec.info.get('request')!r}")
    h.check("segs_at_eof" in rec.info, f"upstream handler failed: {rec.info}")
    return rec.info["segs_at_request"], rec.info["segs_at_eof"]


def counts(connect, server):
    runs = [one_exchange(connect, server) for _ in range(TRIES)]
    return min(r[0] for r in runs), min(r[1] for r in runs), runs


def main():
    server = h.ThreadedServer(counting_handler, name="counting upstream")

    # A plain client: SYN, ACK, request; then the ACK of the response and the FIN.
    d_req, d_eof, runs = counts(lambda: h.connect((server.host, server.port)), server)
    h.log(f"direct client: upstream saw {d_req} segments by the request, {d_eof} by EOF {runs}")

    # ARCTIC_DEFER_ACCEPT: the proxy accepts (and connects) only once the client's bytes
    # are there, so the handshake ACK can always ride on them.
    for quickack, ack_segments in ((None, 1), ("1", 1), ("0", 0)):
        env = {"ARCTIC_DEFER_ACCEPT": 1}
        if quickack is not None:
            env["ARCTIC_QUICKACK"] = quickack
        p = h.start_proxy("127.0.0.1:0", server.addr_str, *h.pos(upstream_test_timeout_secs=0),
                          env=env)
        p_req, p_eof, runs = counts(p.connect, server)
        what = f"ARCTIC_QUICKACK={quickack or 'default'}"
        h.log(f"{what}: upstream saw {p_req} segments by the request, {p_eof} by EOF {runs}")
        h.check(p_req == d_req - 1,
                f"{what}: the upstream saw {p_req} segments up to the request, a plain client "
                f"sends {d_req}: the handshake ACK did not ride on the client's bytes {runs}")
        # after the request: the ACK of the response (unless delayed), then the FIN
        h.check(p_eof - p_req == 1 + ack_segments,
                f"{what}: {p_eof - p_req} segments after the request, expected "
                f"{1 + ack_segments} ({'ACK of the response, ' if ack_segments else ''}FIN"
                f"{' carrying the delayed ACK' if not ack_segments else ''}) {runs}")
        p.check_alive(what)
        p.stop()

    # Server speaks first, client sends nothing: the held handshake ACK must still go out at
    # once, or the upstream accepts (and speaks) only when the delayed-ACK timer fires.
    banner = h.ThreadedServer(banner_handler, name="banner upstream")
    for quickack in ("1", "0"):
        p = h.start_proxy("127.0.0.1:0", banner.addr_str, *h.pos(upstream_test_timeout_secs=0),
                          env={"ARCTIC_QUICKACK": quickack})
        waits = []
        for _ in range(TRIES):
            t0 = time.monotonic()
            s = p.connect()
            line = h.recv_exact(s, 11, timeout=10, what="banner")
            waits.append(time.monotonic() - t0)
            h.check(line == b"220 ready\r\n", f"banner {line!r}")
            s.close()
        h.log(f"ARCTIC_QUICKACK={quickack}: banner after "
              f"{', '.join(f'{w * 1000:.1f}' for w in waits)} ms")
        h.check(min(waits) < 0.1,
                f"ARCTIC_QUICKACK={quickack}: a server-speaks-first upstream's banner took "
                f"{min(waits) * 1000:.0f} ms at best over {TRIES} connections: the handshake "
                f"ACK waited for the delayed-ACK timer")
        p.check_alive("banner")
        p.stop()
    h.check(not server.errors and not banner.errors, f"upstream errors: {server.errors + banner.errors}")


h.run(main)
