#!/usr/bin/env python3
"""A peer's last bytes and its FIN, arriving together, leave the proxy together: the FIN rides
on the segment of the last bytes (pipe path: auto mode's trial and ARCTIC_IO_MODE=splice, when
the proxy learns of the FIN from the readiness that woke it), so the receiver gets one segment
(and ACKs once) where a plain relay sends two. Counted by the
receiver's kernel (TCP_INFO segs_in) against a direct connection, in both directions; the
bytes are checked too. Minimum over a few connections, so a stall cannot fail the test."""
import socket
import harness as h

TRIES = 4
BANNER = b"220 ready, closing\r\n"
MESSAGE = b"QUIT and close\r\n"


def send_with_fin(conn, data):
    """data and the FIN in one segment: MSG_MORE holds the data until shutdown adds the FIN."""
    conn.send(data, socket.MSG_MORE)
    conn.shutdown(socket.SHUT_WR)


def read_all(conn, timeout=10):
    conn.settimeout(timeout)
    got = b""
    while True:
        b = conn.recv(4096)
        if not b:
            return got
        got += b


def speaks_first(conn, rec):
    """Upstream: a banner and the close in one segment, then wait for the client's EOF."""
    send_with_fin(conn, BANNER)
    read_all(conn, 20)


def listens(conn, rec):
    """Upstream: read to EOF, note what came and in how many segments."""
    rec.info["got"] = read_all(conn, 20)
    rec.info["segs_in"] = h.tcp_segs_in(conn)


def downstream(connect):
    """Client reads the banner to EOF; returns its segs_in."""
    runs = []
    for _ in range(TRIES):
        s = connect()
        got = read_all(s)
        h.check(got == BANNER, f"client got {got!r}, expected {BANNER!r}")
        runs.append(h.tcp_segs_in(s))
        s.close()
    return min(runs), runs


def upstream(connect, server):
    """Client sends a message and its FIN in one segment; returns the upstream's segs_in."""
    runs = []
    for _ in range(TRIES):
        n = server.accepted
        s = connect()
        server.wait_accepted(n + 1)  # through the proxy: connected upstream, now idle
        send_with_fin(s, MESSAGE)
        h.check(read_all(s) == b"", "the upstream sent bytes")
        s.close()
        rec = server.records[n]
        server.wait_done(rec, 10)
        h.check(rec.info.get("got") == MESSAGE, f"upstream got {rec.info.get('got')!r}")
        runs.append(rec.info["segs_in"])
    return min(runs), runs


def main():
    banner = h.ThreadedServer(speaks_first, name="banner upstream")
    sink = h.ThreadedServer(listens, name="listening upstream")
    d_down, runs = downstream(lambda: h.connect((banner.host, banner.port)))
    h.log(f"direct: the client saw {d_down} segments {runs}")
    d_up, runs = upstream(lambda: h.connect((sink.host, sink.port)), sink)
    h.log(f"direct: the upstream saw {d_up} segments {runs}")

    for mode in ("auto", "splice"):
        p = h.start_proxy("127.0.0.1:0", banner.addr_str, *h.pos(upstream_test_timeout_secs=0),
                          env={"ARCTIC_IO_MODE": mode})
        p_down, runs = downstream(p.connect)
        h.log(f"{mode}: through the proxy the client saw {p_down} segments {runs}")
        # SYN-ACK and the banner with its FIN, as from the upstream itself
        h.check(p_down == d_down,
                f"ARCTIC_IO_MODE={mode}: the client saw {p_down} segments, {d_down} straight "
                f"from the upstream: the FIN did not ride on the banner's segment {runs}")
        p.check_alive(mode)
        p.stop()

        p = h.start_proxy("127.0.0.1:0", sink.addr_str, *h.pos(upstream_test_timeout_secs=0),
                          env={"ARCTIC_IO_MODE": mode})
        p_up, runs = upstream(p.connect, sink)
        h.log(f"{mode}: through the proxy the upstream saw {p_up} segments {runs}")
        # SYN, ACK, then the message with its FIN, as from the client itself
        h.check(p_up == d_up,
                f"ARCTIC_IO_MODE={mode}: the upstream saw {p_up} segments, {d_up} from a plain "
                f"client: the FIN did not ride on the message's segment {runs}")
        p.check_alive(mode)
        p.stop()
    h.check(not banner.errors and not sink.errors, f"upstream errors: {banner.errors + sink.errors}")


h.run(main)
