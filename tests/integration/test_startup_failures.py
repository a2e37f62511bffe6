#!/usr/bin/env python3
"""Start-up failures exit 1 with one `arctic-proxy: ...` line on stderr (it must start with
the contract's text; a hint may follow):
- LISTEN port already in use: `arctic-proxy: bind(127.0.0.1:P) failed: EADDRINUSE`
- upstream check fails (nothing listening, upstream_test_timeout_secs=1):
  `arctic-proxy: upstream check: connect(127.0.0.1:Q) failed: ECONNREFUSED`
Neither may print the readiness line."""
import re
import socket
import time
import harness as h


def one_error_line(err):
    return [l for l in err.splitlines() if l.startswith("arctic-proxy:")]


def main():
    problems = []
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen(16)
    h.add_cleanup(held.close)
    port = held.getsockname()[1]
    echo = h.EchoServer(name="echo")

    rc, out, err = h.run_proxy_once([f"127.0.0.1:{port}", echo.addr_str]
                                    + h.pos(upstream_test_timeout_secs=1), timeout=15)
    want = re.compile(rf"^arctic-proxy: bind\(127\.0\.0\.1:{port}\) failed: EADDRINUSE\b")
    lines = one_error_line(err)
    if rc != 1:
        problems.append(f"port in use: exit status {rc}, expected 1; stderr {err!r}")
    if len(lines) != 1 or not want.match(lines[0]):
        problems.append(f"port in use: expected one line 'arctic-proxy: bind(127.0.0.1:{port})"
                        f" failed: EADDRINUSE', got arctic-proxy lines {lines!r}")
    if h.LISTEN_RE.search(err):
        problems.append(f"port in use: proxy printed the readiness line: {err!r}")

    hold, q = h.bound_unused_port()
    t = time.monotonic()
    rc, out, err = h.run_proxy_once(["127.0.0.1:0", f"127.0.0.1:{q}"]
                                    + h.pos(upstream_test_timeout_secs=1), timeout=15)
    dt = time.monotonic() - t
    want = re.compile(rf"^arctic-proxy: upstream check: connect\(127\.0\.0\.1:{q}\) failed: "
                      rf"ECONNREFUSED\b")
    lines = one_error_line(err)
    if rc != 1:
        problems.append(f"upstream check: exit status {rc}, expected 1; stderr {err!r}")
    if len(lines) != 1 or not want.match(lines[0]):
        problems.append(f"upstream check: expected one line 'arctic-proxy: upstream check: "
                        f"connect(127.0.0.1:{q}) failed: ECONNREFUSED', got {lines!r}")
    if h.LISTEN_RE.search(err):
        problems.append(f"upstream check: proxy printed the readiness line: {err!r}")
    if dt > 5:
        problems.append(f"upstream check: took {dt:.1f} s to fail on a refused connect")
    if problems:
        h.fail("\n  ".join(problems))


h.run(main)
