#!/usr/bin/env python3
"""ARCTIC_STATS_FORMAT=json: every stdout line is one JSON object; after a known transfer
(3,000,000 bytes up + the script line, 5,000,000 bytes down) the totals (README keys
total.bytes_c2u / total.bytes_u2c / accepted / closed / active) are exact, and the
per-worker objects add up to the totals."""
import json
import time
import harness as h

UP = 3_000_000
DOWN = 5_000_000


def main():
    srv = h.DuplexServer(name="duplex upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_STATS_FORMAT": "json", "ARCTIC_STATS_INTERVAL_MS": 200})
    c = h.DuplexClient(p.addr, 1, up=UP, down=DOWN, timeout=30)
    c.start()
    h.check(c.join(30), "transfer did not finish within 30 s")
    probs = c.problems(srv)
    h.check(not probs, "transfer problems: " + "; ".join(probs))
    script_len = len(json.dumps(c.spec).encode()) + 1
    t_done = time.monotonic()
    deadline = t_done + 5
    last = None
    while time.monotonic() < deadline:
        lines = [l for l, t in zip(list(p.stdout_lines), list(p.stdout_times)) if t > t_done]
        for l in lines:
            try:
                obj = json.loads(l)
            except ValueError:
                h.fail(f"stdout line is not JSON: {l[:200]!r}")
            h.check(isinstance(obj, dict), f"stdout line is not a JSON object: {l[:200]!r}")
            last = obj
        if last and isinstance(last.get("total"), dict) and last["total"].get("active") == 0:
            break
        time.sleep(0.1)
    h.check(last is not None, "no JSON stats line within 5 s after the transfer")
    tot = last.get("total")
    h.check(isinstance(tot, dict), f"JSON stats line has no 'total' object: {last}")
    want = {"active": 0, "accepted": 1, "closed": 1, "bytes_c2u": UP + script_len,
            "bytes_u2c": DOWN, "rejected": 0}
    wrong = {k: (tot.get(k), v) for k, v in want.items() if tot.get(k) != v}
    h.check(not wrong, "JSON totals after one connection moving "
                       f"{UP + script_len} B up and {DOWN} B down; wrong (got, expected): "
                       f"{wrong}")
    workers = last.get("workers")
    h.check(isinstance(workers, list) and workers, f"JSON stats line has no 'workers' list")
    for k in ("bytes_c2u", "bytes_u2c", "accepted", "closed"):
        s = sum(w.get(k, 0) for w in workers)
        h.check(s == tot[k], f"sum of workers' {k} = {s} != total {tot[k]}")
    for l in p.stdout_lines:
        try:
            json.loads(l)
        except ValueError:
            h.fail(f"stdout line is not JSON: {l[:200]!r}")
    h.log(f"JSON totals exact: {want}")


h.run(main)
