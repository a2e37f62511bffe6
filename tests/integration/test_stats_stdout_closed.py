#!/usr/bin/env python3
"""A closed stdout never stops the proxy: its stdout is a pipe whose read end the test
closes; with stats every 100 ms the proxy hits EPIPE (and SIGPIPE, which the test does not
ignore for the child), yet it must keep running and proxying."""
import time
import harness as h


def main():
    echo = h.EchoServer(name="echo")
    p = h.start_proxy("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_STATS_INTERVAL_MS": 100}, read_stdout=False)
    s = p.connect()
    h.roundtrip(s, b"before", what="round trip before closing stdout")
    p.proc.stdout.close()
    h.log("closed the read end of the proxy's stdout")
    for i in range(10):
        time.sleep(0.15)
        p.check_alive(f"{(i + 1) * 0.15:.2f} s after its stdout pipe was closed")
        h.roundtrip(s, f"while closed {i}".encode(), what=f"round trip {i} with stdout closed")
    s2 = p.connect()
    h.roundtrip(s2, h.pattern_bytes(5, 1 << 20), what="new connection with stdout closed")
    s.close()
    s2.close()
    time.sleep(0.5)
    p.check_alive("after connections closed with stdout closed")
    h.log("proxy kept running and proxying with a closed stdout")


h.run(main)
