#!/usr/bin/env python3
"""Stats count bytes as they flow: during an 8 s download paced at 20 MiB/s (default stats
interval 1 s) the stats lines printed while the connection is still open already show
1 active, a non-zero and growing GB total and a plausible non-zero Gbps (~0.17). After the
transfer: 0 active, 0.00 Gbps, and GB total ~= the bytes moved (both directions summed)."""
import statistics
import time
import harness as h

RATE = 20 * h.MiB
DOWN = 160 * h.MiB


def main():
    srv = h.DuplexServer(name="paced source")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0))
    t0 = time.monotonic()
    c = h.DuplexClient(p.addr, 1, down=DOWN, rate=RATE, timeout=30)
    c.start()
    h.check(c.join(60), "paced transfer did not finish within 60 s")
    probs = c.problems(srv)
    h.check(not probs, "transfer problems: " + "; ".join(probs))
    t_end = c.t_down_end
    h.log(f"transfer took {t_end - t0:.1f} s")
    mid = [st for t, st in p.stats_list(after=t0 + 1.5) if t < t_end - 0.5]
    h.check(len(mid) >= 3,
            f"only {len(mid)} stats lines were printed during the {t_end - t0:.1f} s transfer "
            f"(stats interval 1 s); lines: {[st for _, st in p.stats_list()]}")
    h.log("during transfer: " + "; ".join(f"{s.active}a {s.gbps}Gbps {s.gb}GB" for s in mid))
    h.check(all(s.active == 1 for s in mid),
            f"stats during the transfer should show 1 active: {mid}")
    counted = [s for s in mid if s.gb > 0]
    h.check(len(counted) >= 3,
            f"only {len(counted)} of the {len(mid)} stats lines printed while the connection "
            f"was open show a non-zero GB total: bytes are not counted as they flow; "
            f"{[s.gb for s in mid]}")
    h.check(all(b.gb >= a.gb for a, b in zip(mid, mid[1:])) and mid[-1].gb > mid[0].gb,
            f"GB total did not grow during the transfer: {[s.gb for s in mid]}")
    nonzero = sum(1 for s in mid if s.gbps > 0)
    h.check(nonzero >= 0.75 * len(mid),
            f"Gbps was 0.00 in {len(mid) - nonzero} of {len(mid)} stats lines printed "
            f"mid-transfer: {[s.gbps for s in mid]}")
    med = statistics.median(s.gbps for s in mid)
    h.check(0.05 <= med <= 1.0,
            f"median Gbps during a {RATE * 8 / 1e9:.3f} Gbps transfer was {med} "
            f"(accepted 0.05..1.0)")
    st = p.wait_stats(lambda s: s.active == 0 and s.gbps == 0.0, 5,
                      "0 active and 0.00 Gbps after the transfer", after=t_end)
    moved = DOWN / 1e9
    h.check(0.9 * moved - 0.01 <= st.gb <= 1.1 * moved + 0.01,
            f"GB total {st.gb} after moving {DOWN} bytes ({moved:.3f} GB, both directions "
            f"summed); expected about {moved:.2f}")
    h.log(f"final stats {st}")


h.run(main)
