#!/usr/bin/env python3
"""Failures no real peer can cause, forced with a seccomp filter (the kernel fails the call,
the proxy is the real binary), must be counted, named and contained:

- setsockopt(TCP_QUICKACK) on every upstream socket fails with EPERM: each client is reset
  before anything is dialled, the log names the option and the errno (once a second, not
  once per connection), the errors are counted, no descriptor leaks, and the proxy stays up
  and exits 0 on SIGTERM.
- splice(2) fails with EIO: in auto mode a connection's first bytes go through a trial pipe,
  so the relay fails with an errno that is the proxy's own trouble, not the peer's: err_other
  (not err_reset), a "relaying failed: EIO" line, the client reset. The same filter with
  ARCTIC_IO_MODE=buffer (no splice) relays normally: the filter breaks nothing else.
- io_uring refused (as a container's seccomp profile may): io_uring_setup() failing stops
  the start with exit 1 (a start-up failure) and a line that names the call and the errno; io_uring_register()
  failing (no provided-buffer ring) names the errno, not a kernel too old, and points to
  ARCTIC_IO_MODE=splice, which then starts and relays under the same filter.
- Every wait for completions fails (io_uring_enter with min_complete 1, ENOMEM), after a
  start whose own submissions went through: the worker must not spin (it pauses between
  tries), the failures are counted and logged once a second, and SIGTERM still ends the
  proxy with exit 0 (the drain request cannot arrive through the ring)."""
import socket
import time
import harness as h

IPPROTO_TCP, TCP_QUICKACK = 6, 12


def wait_total(p, pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tot = p.json_total()
        if tot and pred(tot):
            return tot
        time.sleep(0.05)
    h.fail(f"{what}: not seen within {timeout} s; last stats {p.json_total()}")


def start(echo, rules, env):
    pre, why = h.syscall_faults(rules)
    if pre is None:
        h.skip(why)
    argv = h.proxy_argv("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0))
    p = h.Proxy(argv, {"ARCTIC_WORKERS": 1, "ARCTIC_STATS_FORMAT": "json",
                       "ARCTIC_STATS_INTERVAL_MS": 100, **env}, preexec=pre)
    p.wait_ready(10)
    return p


def reset_or_closed(s, what):
    """The proxy ended this client without relaying anything: an RST (or a bare EOF)."""
    s.settimeout(10)
    try:
        data = s.recv(100)
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        h.fail(f"{what}: the client was neither answered nor closed within 10 s")
    h.check(data == b"", f"{what}: the client got {data!r}")
    return "eof"


def upstream_sockopt():
    echo = h.EchoServer(name="echo")
    p = start(echo, [("setsockopt", {1: IPPROTO_TCP, 2: TCP_QUICKACK}, "EPERM")], {})
    base = p.stable_fd_count()
    n = 20
    ends = []
    for i in range(n):
        try:  # the reset can come before the client's connect() returns
            s = p.connect()
            s.sendall(b"hello")
        except ConnectionResetError:
            ends.append("reset")
            continue
        ends.append(reset_or_closed(s, f"client {i}"))
        s.close()
    tot = wait_total(p, lambda t: t["closed"] >= n and t["active"] == 0, 5,
                     f"{n} connections closed")
    h.check(tot["err_other"] == n and tot["err_connect"] == 0 and tot["err_reset"] == 0,
            f"expected {n} errors counted as err_other: {tot}")
    h.check(tot["bytes_c2u"] == 0, f"bytes went upstream: {tot}")
    h.check(echo.accepted == 0, f"the upstream saw {echo.accepted} connections")
    lines = [l for l in p.stderr_lines
             if "setsockopt(TCP_QUICKACK) on upstream socket failed: EPERM" in l]
    h.check(lines, f"no log line naming TCP_QUICKACK and EPERM: {p.stderr_lines[-5:]}")
    h.check(len(lines) <= 3, f"{len(lines)} log lines for {n} failures in about a second "
            "(one a second expected)")
    p.wait_fd_count(base, 5, "descriptors after the failed connections")
    p.check_alive()
    p.signal(15)
    rc = p.wait(10)
    h.check(rc == 0, f"exit code {rc} after SIGTERM")
    h.log(f"{n} clients: {ends.count('reset')} reset, {ends.count('eof')} closed; "
          f"log: {lines[0].strip()!r} ({len(lines)} line(s))")


def splice_fails():
    echo = h.EchoServer(name="echo")
    rules = [("splice", {}, "EIO")]
    # control: the same filter, buffers only
    p = start(echo, rules, {"ARCTIC_IO_MODE": "buffer"})
    s = p.connect()
    h.roundtrip(s, b"x" * 1000, what="echo in buffer mode under the filter")
    s.close()
    tot = wait_total(p, lambda t: t["closed"] == 1, 5, "the control connection closed")
    h.check(tot["err_other"] == 0 and tot["err_reset"] == 0, f"control errors: {tot}")
    p.stop()

    p = start(echo, rules, {"ARCTIC_IO_MODE": "auto"})
    s = p.connect()
    try:
        s.sendall(b"x" * 1000)
        end = reset_or_closed(s, "auto mode with splice failing")
    except ConnectionResetError:
        end = "reset"
    s.close()
    tot = wait_total(p, lambda t: t["closed"] == 1 and t["active"] == 0, 5,
                     "the failed connection closed")
    h.check(tot["err_other"] == 1 and tot["err_reset"] == 0,
            f"a failed splice must count as err_other: {tot}")
    line = p.wait_stderr(r"relaying failed: EIO \(conn \d+, worker 0\)", 5)
    h.check(line, f"no 'relaying failed: EIO' line: {p.stderr_lines[-5:]}")
    p.check_alive()
    h.log(f"auto mode: client {end}, {line.strip()!r}; buffer mode relayed under the filter")
    p.stop()


def refused_start(rules, args):
    pre, why = h.syscall_faults(rules)
    if pre is None:
        h.skip(why)
    rc, out, err = h.run_proxy_once(args, timeout=20, preexec=pre)
    return rc, out, err.strip()


def io_uring_refused():
    args = ["127.0.0.1:0", "127.0.0.1:1", *h.pos(upstream_test_timeout_secs=0)]
    rc, _, err = refused_start([("io_uring_setup", {}, "EPERM")], args)
    h.check(rc == 1 and err.count("\n") == 0 and "io_uring_setup() failed: EPERM" in err,
            f"io_uring_setup refused: exit {rc}, stderr {err!r}")
    rc, _, err = refused_start([("io_uring_register", {}, "EPERM")], args)
    h.check(rc == 1 and err.count("\n") == 0 and
            "io_uring_register(IORING_REGISTER_PBUF_RING) failed: EPERM" in err and
            "ARCTIC_IO_MODE=splice" in err and "lacks" not in err,
            f"io_uring_register refused: exit {rc}, stderr {err!r}")
    _, out, _ = refused_start([("io_uring_register", {}, "EPERM")], ["--version"])
    h.check("provided buffer rings: no (EPERM)" in out, f"--version under the filter: {out!r}")
    echo = h.EchoServer(name="echo")
    p = start(echo, [("io_uring_register", {}, "EPERM")], {"ARCTIC_IO_MODE": "splice"})
    s = p.connect()
    h.roundtrip(s, b"y" * 5000, what="echo in splice mode with io_uring_register refused")
    s.close()
    p.check_alive()
    p.stop()
    h.log(f"io_uring_register refused: {err!r}; splice mode relayed")


def ring_wait_refused():
    echo = h.EchoServer(name="echo")
    p = start(echo, [("io_uring_enter", {2: 1}, "ENOMEM")], {"ARCTIC_POLL": "wait"})
    cpu0, t0 = h.cpu_seconds(p.pid), time.monotonic()
    time.sleep(2)
    cpu = h.cpu_seconds(p.pid) - cpu0
    took = time.monotonic() - t0
    h.check(cpu < 0.5, f"the proxy used {cpu:.2f} s of CPU in {took:.1f} s with its ring "
            "failing: a spin")
    lines = [l for l in p.stderr_lines if "io_uring_submit_and_wait() failed: ENOMEM" in l]
    h.check(lines and len(lines) <= 2 + took, f"{len(lines)} log lines for the failing "
            f"wait in {took:.1f} s (one a second expected)")
    tot = wait_total(p, lambda t: t["err_other"] > 0, 5, "the failures counted")
    p.signal(15)
    rc = p.wait(10)
    h.check(rc == 0, f"exit code {rc} after SIGTERM with the ring failing")
    h.check(p.wait_stderr("shutdown complete", 5), "no 'shutdown complete' line")
    h.log(f"ring failing: {cpu:.2f} s CPU in {took:.1f} s, {len(lines)} log line(s), "
          f"err_other {tot['err_other']}, exit {rc} on SIGTERM")


def main():
    upstream_sockopt()
    splice_fails()
    io_uring_refused()
    ring_wait_refused()


h.run(main)
