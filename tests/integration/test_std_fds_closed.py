#!/usr/bin/env python3
"""Started with stdin, stdout and stderr closed (`<&- >&- 2>&-`, as some launchers and
daemonizers do), the proxy must put /dev/null on descriptors 0, 1 and 2 before it opens
anything. Otherwise its listener, a worker's wake-up eventfd and its ring take those
numbers, and every stats line and log line is written into them: a stats line written to a
wake-up eventfd (a kernel that takes a write longer than 8 bytes as its first 8; this one
may refuse it) starts that worker's drain, so it stops accepting; a line written into a
relay pipe would reach a client.

The proxy, one worker, stats every 50 ms: 0, 1 and 2 must be /dev/null; it must relay
across many stats intervals, and one SIGTERM must end it with status 0."""
import os
import signal
import time
import harness as h


def main():
    echo = h.EchoServer(name="echo")
    argv = h.proxy_argv("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0))
    p = h.Proxy(argv, {"ARCTIC_WORKERS": 1, "ARCTIC_STATS_INTERVAL_MS": 50}, close_std=True)
    port = p.listen_port()
    fds = {fd: os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in (0, 1, 2)}
    h.check(all(t == "/dev/null" for t in fds.values()),
            f"descriptors 0-2 of a proxy started with them closed: {fds}, expected /dev/null "
            f"(stats and log lines would be written into whatever took them)")
    s = h.connect(("127.0.0.1", port))
    h.roundtrip(s, b"first", what="round trip with 0-2 closed at start")
    time.sleep(1.0)  # 20 stats lines
    for i in range(3):
        c = h.connect(("127.0.0.1", port))
        h.roundtrip(c, h.pattern_bytes(i, 256 << 10), what=f"new connection {i} after 1 s")
        c.close()
    h.roundtrip(s, b"still", what="first connection after 1 s")
    s.close()
    p.signal(signal.SIGTERM)
    rc = p.wait(10)
    h.check(rc == 0, f"exit status {rc} after SIGTERM, expected 0")
    h.log(f"started with 0-2 closed: they were {fds}; relayed across 20 stats intervals, "
          f"SIGTERM ended it with 0")


h.run(main)
