#!/usr/bin/env python3
"""Slow reader / back-pressure, in buffer and in splice mode: the upstream pushes 256 MiB as
fast as it can while the client reads nothing for 4 s. During that stall the proxy's RSS
must grow by less than 64 MiB and the upstream must be held back (it cannot have pushed
64 MiB or more). Then the client reads everything: 256 MiB, byte-exact, sha256, then EOF."""
import threading
import time
import harness as h

TOTAL = 256 * h.MiB
STALL = 4.0
LIMIT_KIB = 64 * 1024


def one_mode(mode):
    srv = h.ThreadedServer(h.source_handler(TOTAL, seed=77, end="close"), name="source")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_IO_MODE": mode})
    time.sleep(0.3)
    rss0 = p.rss_kib()
    s = p.connect(timeout=30)
    srv.wait_accepted(1, 5)
    rec = srv.records[0]
    peak = rss0
    t_end = time.monotonic() + STALL
    while time.monotonic() < t_end:
        peak = max(peak, p.rss_kib())
        time.sleep(0.05)
    pushed = rec.bytes_out
    h.log(f"{mode}: after a {STALL:.0f} s stall: RSS {rss0} KiB -> peak {peak} KiB "
          f"(+{peak - rss0} KiB), upstream pushed {pushed / h.MiB:.1f} MiB")
    h.check(peak - rss0 < LIMIT_KIB,
            f"{mode}: proxy RSS grew by {(peak - rss0) / 1024:.1f} MiB (from {rss0} KiB to "
            f"{peak} KiB) while the client was not reading; limit 64 MiB")
    h.check(pushed < 64 * h.MiB,
            f"{mode}: upstream could push {pushed / h.MiB:.1f} MiB while the client read "
            f"nothing: no back-pressure")

    # now read everything, sampling RSS in the background
    stop = threading.Event()
    read_peak = [rss0]

    def sampler():
        while not stop.is_set() and p.alive():
            try:
                read_peak[0] = max(read_peak[0], p.rss_kib())
            except h.TestFailure:
                return
            time.sleep(0.1)
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    v = h.Verifier(77)
    t0 = time.monotonic()
    s.settimeout(30)
    end = None
    try:
        while True:
            c = s.recv(1 << 20)
            if not c:
                end = "eof"
                break
            v.feed(c)
    except OSError as e:
        end = h.errno_name(e)
    finally:
        stop.set()
        th.join(2)
    dt = time.monotonic() - t0
    prob = v.problem(TOTAL)
    h.check(prob is None, f"{mode}: downloaded stream: {prob} (ended with {end})")
    h.check(end == "eof", f"{mode}: stream ended with {end!r}, expected EOF")
    h.log(f"{mode}: read {TOTAL >> 20} MiB in {dt:.1f} s, sha256 ok; RSS peak while "
          f"reading {read_peak[0]} KiB (+{read_peak[0] - rss0} KiB, info only)")
    s.close()
    p.check_alive()
    p.stop()
    srv.stop()


def main():
    h.pattern_sha256(77, TOTAL)
    for mode in ("buffer", "splice"):
        one_mode(mode)


h.run(main, timeout=110)
