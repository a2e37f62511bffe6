#!/usr/bin/env python3
"""Drain timeout: shutdown_drain_secs=1 and one idle connection that never finishes. After
SIGTERM the proxy must wait ~1 s (not exit at once), then abort the connection (both the
client and the upstream side end), report on stderr that 1 connection remained/was
aborted, and exit 0."""
import re
import signal
import time
import harness as h


def main():
    srv = h.ThreadedServer(h.hold_handler(), name="idle upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str,
                      *h.pos(shutdown_drain_secs=1, upstream_test_timeout_secs=0))
    s = p.connect()
    h.roundtrip(s, b"hello", what="setup round trip")
    srv.wait_accepted(1, 5)
    rec = srv.records[0]
    time.sleep(0.2)
    t_sig = time.monotonic()
    p.signal(signal.SIGTERM)
    rc = p.wait(10)
    dt = time.monotonic() - t_sig
    h.check(rc == 0, f"exit status {rc} after the drain timeout, expected 0")
    h.check(dt >= 0.8, f"proxy exited {dt:.2f} s after SIGTERM although a connection was "
                       f"open and shutdown_drain_secs=1 (it did not drain)")
    h.check(dt <= 6.0, f"proxy exited only {dt:.2f} s after SIGTERM (shutdown_drain_secs=1)")
    kind, _, extra = h.wait_closed(s, 3)
    h.check(kind in ("eof", "reset"), f"client connection not closed after the proxy "
                                      f"exited: {kind}")
    h.check(rec.done.wait(3), "upstream connection still open after the proxy exited")
    lines = p.stderr_since(t_sig)
    ok = any(re.search(r"(?i)\b1\b.*(remain|abort)|(remain|abort).*\b1\b", l) for l in lines)
    h.check(ok, f"stderr after SIGTERM does not report 1 remaining/aborted connection: "
                f"{lines!r}")
    h.log(f"exit 0 after {dt:.2f} s; client saw {kind}; stderr: {lines}")


h.run(main)
