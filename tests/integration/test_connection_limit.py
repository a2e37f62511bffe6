#!/usr/bin/env python3
"""max_connections=5: five established connections (round trip through to the upstream),
the 6th is closed at once with RST and never reaches the upstream, rej == 1 (exactly once),
the five keep working; after closing one of them and reject_sleep_ms, a new connection
works (the slot is reusable)."""
import time
import harness as h

MAXC = 5
REJECT_SLEEP_MS = 200


def main():
    srv = h.ThreadedServer(h.hold_handler(), name="counting upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str,
                      *h.pos(max_connections=MAXC, reject_sleep_ms=REJECT_SLEEP_MS,
                             upstream_test_timeout_secs=0),
                      env={"ARCTIC_STATS_INTERVAL_MS": 200})
    conns = []
    for i in range(MAXC):
        s = p.connect()
        h.roundtrip(s, f"hello {i}".encode(), timeout=10, what=f"connection {i}")
        conns.append(s)
    srv.wait_accepted(MAXC, 5)
    p.wait_stats(lambda st: st.active == MAXC, 5, f"{MAXC} active")
    h.log(f"{MAXC} connections established")

    kind, dt, nbytes, extra = h.connect_expect_close(p.addr, 5)
    h.check(kind != "timeout",
            f"connection #{MAXC + 1} was not closed within 5 s with max_connections={MAXC}")
    h.check(dt < 2.5, f"connection #{MAXC + 1} closed only after {dt:.2f} s (expected at once)")
    h.check(kind == "reset",
            f"connection #{MAXC + 1} ended with {kind!r}; the contract says the rejected "
            f"client is closed with RST (expected ECONNRESET)")
    if extra:
        extra.close()
    h.log(f"connection #{MAXC + 1} rejected with {kind} after {dt:.3f} s")
    time.sleep(1.0)
    h.check(srv.accepted == MAXC,
            f"upstream accepted {srv.accepted} connections, expected {MAXC}: the rejected "
            f"client reached the upstream")
    p.wait_stats(lambda st: st.rej >= 1, 5, "rej >= 1")
    t = time.monotonic()
    p.wait_stats(lambda st: True, 3, "a further stats line", after=t + 0.01)
    st = p.stats()
    h.check(st.rej == 1 and st.active == MAXC,
            f"after one rejection stats show {st}; expected rej == 1 and {MAXC} active")

    for i, s in enumerate(conns):
        h.roundtrip(s, f"still here {i}".encode(), timeout=10, what=f"connection {i} again")

    conns[0].close()
    p.wait_stats(lambda st: st.active == MAXC - 1, 5, f"{MAXC - 1} active after closing one")
    time.sleep(REJECT_SLEEP_MS / 1000 + 0.3)
    s = p.connect()
    h.roundtrip(s, b"slot reused", timeout=10, what="new connection after a slot was freed")
    srv.wait_accepted(MAXC + 1, 5)
    st = p.wait_stats(lambda st: st.active == MAXC, 5, f"{MAXC} active again")
    h.check(st.rej == 1, f"rej changed to {st.rej} although no further client was rejected")
    h.log("freed slot reused")
    p.check_alive()


h.run(main)
