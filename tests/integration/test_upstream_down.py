#!/usr/bin/env python3
"""Upstream down: nothing listens on the upstream port (upstream_test_timeout_secs=0 so the
proxy starts anyway). Each client is closed promptly with RST (contract: 'Upstream connect
failure: that client is closed (RST), counted in err'), err counts each failure exactly once,
the proxy stays alive with its fd count back to baseline, and once the upstream comes up on
that port the same proxy serves normally."""
import time
import harness as h

ATTEMPTS = 3


def main():
    hold, port = h.bound_unused_port()  # bound, not listening: connect -> ECONNREFUSED
    p = h.start_proxy("127.0.0.1:0", f"127.0.0.1:{port}",
                      *h.pos(timeout_secs=2, upstream_test_timeout_secs=0),
                      env={"ARCTIC_STATS_INTERVAL_MS": 200})
    base_fd = p.stable_fd_count()
    h.log(f"proxy ready on {p.addr_str}, upstream 127.0.0.1:{port} refuses; {base_fd} fds")
    for i in range(ATTEMPTS):
        kind, dt, extra, s = h.connect_expect_close(p.addr, 8)
        h.check(kind != "timeout",
                f"attempt {i}: client connection still open 8 s after connecting to a proxy "
                f"whose upstream refuses connections")
        h.check(dt < 3.0, f"attempt {i}: client closed only after {dt:.2f} s (expected promptly "
                          f"- the upstream refuses at once)")
        h.check(extra == 0, f"attempt {i}: client received {extra} unexpected bytes")
        h.check(kind == "reset",
                f"attempt {i}: client connection ended with {kind!r} after {dt:.2f} s; the "
                f"contract says an upstream connect failure closes the client with RST "
                f"(expected ECONNRESET)")
        if s:
            s.close()
        h.log(f"attempt {i}: closed with {kind} after {dt:.3f} s")
    st = p.wait_stats(lambda st: st.err >= ATTEMPTS, 5, f"err >= {ATTEMPTS}")
    time.sleep(0.5)
    st = p.stats()
    h.check(st.err == ATTEMPTS,
            f"stats err = {st.err} after {ATTEMPTS} failed upstream connects, expected "
            f"exactly {ATTEMPTS}")
    h.check(st.active == 0 and st.rej == 0,
            f"stats after the failures: {st}; expected 0 active and 0 rej")
    p.check_alive("after upstream connect failures")
    p.wait_fd_count(base_fd, 5, "fds after the failed upstream connects")

    # now the upstream comes up on the same port: the proxy must serve
    echo = h.EchoServer(sock=hold, name="late echo upstream")
    s = p.connect()
    h.roundtrip(s, h.pattern_bytes(9, 100000), what="echo after the upstream came up")
    s.close()
    h.log("proxy serves once the upstream is up")
    time.sleep(0.6)
    st = p.stats()
    h.check(st.err == ATTEMPTS, f"err changed to {st.err} after a successful connection")
    p.wait_stats(lambda st: st.active == 0, 5, "0 active at the end")
    p.wait_fd_count(base_fd, 5, "fds at the end")


h.run(main)
