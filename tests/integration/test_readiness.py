#!/usr/bin/env python3
"""Readiness line: with LISTEN 127.0.0.1:0, stderr gets a line whose contract regex
`listening on (\\S+)` captures exactly `127.0.0.1:<real port>` (nothing appended), the port
is not 0 and accepts connections; with ARCTIC_WORKERS=1 and 2 all workers share that one port
(30 connections all served); stats lines on stdout match the contract regex."""
import re
import harness as h


def main():
    echo = h.EchoServer(name="echo")
    problems = []
    for workers in (None, 1, 2):
        env = {"ARCTIC_STATS_INTERVAL_MS": 200}
        if workers:
            env["ARCTIC_WORKERS"] = workers
        p = h.start_proxy("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=3),
                          env=env)
        label = f"ARCTIC_WORKERS={workers}" if workers else "default workers"
        cap = p.listen_capture
        if not re.fullmatch(r"127\.0\.0\.1:\d+", cap):
            problems.append(f"{label}: `listening on (\\S+)` captured {cap!r} from "
                            f"{p.listen_line!r}; the contract says the capture is the "
                            f"address, e.g. 127.0.0.1:41234")
        h.check(p.port != 0, f"{label}: readiness line shows port 0: {p.listen_line!r}")
        for i in range(30):
            s = p.connect()
            h.roundtrip(s, f"{label} #{i}".encode(), what=f"{label} connection {i}")
            s.close()
        p.wait_stats(lambda st: st.active == 0, 5, f"{label}: a stats line with 0 active")
        bad = [l for l in p.stdout_lines if l.strip() and not h.STATS_RE.search(l)]
        if bad:
            problems.append(f"{label}: stdout lines not matching the stats regex: {bad[:3]!r}")
        p.stop()
    if problems:
        h.fail("\n  ".join(problems))


h.run(main)
