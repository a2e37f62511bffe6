#!/usr/bin/env python3
"""SIGINT (ARCTIC_IO_MODE=buffer) and SIGTERM (ARCTIC_IO_MODE=splice) graceful drain, each
with its own proxy, shutdown_drain_secs=20.
Mid-transfer (a paced 48 MiB download at 16 MiB/s and a paced 24 MiB upload at 8 MiB/s)
the signal is sent: within 2 s new connects must fail with ECONNREFUSED, and 0.2 s later
20 further connects must all be refused (every worker's listener closed),
both transfers must complete intact (byte-exact, sha256, FIN), the proxy must exit 0
soon after they complete (not wait out the full drain period), stderr mentions the
shutdown."""
import re
import signal
import socket
import time
import harness as h

DOWN = 48 * h.MiB
UP = 24 * h.MiB
SHUTDOWN_RE = r"(?i)shut|drain|signal|exit|stop"


def wait_refused(addr, t_sig, within):
    """Poll connects until refused; returns seconds after t_sig. Probes that still connect
    are closed at once."""
    deadline = t_sig + within
    accepted = 0
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(addr)
            accepted += 1
        except ConnectionRefusedError:
            return time.monotonic() - t_sig, accepted
        except ConnectionResetError:
            # handshake completed into a listener's queue just as it was closed: the kernel
            # resets such connections; the listener is going away, keep polling
            accepted += 1
        except OSError as e:
            h.fail(f"connect after the signal failed with {h.errno_name(e)}, "
                   f"expected ECONNREFUSED")
        finally:
            s.close()
        time.sleep(0.05)
    h.fail(f"new connections were still accepted {within:.0f} s after the signal "
           f"({accepted} probe connects succeeded); listeners must close at once")


def one_signal(sig, mode):
    name = f"{signal.Signals(sig).name} ({mode} mode)"
    srv = h.DuplexServer(name="duplex upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str,
                      *h.pos(shutdown_drain_secs=20, upstream_test_timeout_secs=0),
                      env={"ARCTIC_IO_MODE": mode})
    down = h.DuplexClient(p.addr, 1, down=DOWN, rate=16 * h.MiB, timeout=30)
    up = h.DuplexClient(p.addr, 2, up=UP, up_rate=8 * h.MiB, timeout=30)
    down.start()
    up.start()
    deadline = time.monotonic() + 15
    while (down.verifier.n < 4 * h.MiB or up.up_sent < 2 * h.MiB) and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    h.check(down.verifier.n >= 4 * h.MiB and up.up_sent >= 2 * h.MiB,
            f"{name}: transfers did not get going (down {down.verifier.n} B, up "
            f"{up.up_sent} B after 15 s)")
    h.check(down.t_down_end is None and up.t_up_done is None,
            f"{name}: test setup: transfers finished before the signal")
    t_sig = time.monotonic()
    p.signal(sig)
    dt, probes_ok = wait_refused(p.addr, t_sig, 2.0)
    h.log(f"{name}: connects refused {dt:.3f} s after the signal ({probes_ok} probes "
          f"connected before)")
    time.sleep(0.2)  # every worker's listener must be closed by now
    for i in range(20):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(p.addr)
            h.fail(f"{name}: connect #{i} after the first refusal succeeded; every worker's "
                   f"listener must be closed")
        except ConnectionRefusedError:
            pass
        except OSError as e:
            h.fail(f"{name}: connect after the signal failed with {h.errno_name(e)}, "
                   f"expected ECONNREFUSED")
        finally:
            s.close()
    h.check(down.t_down_end is None,
            f"{name}: download ended ({down.down_end}, {down.verifier.n} of {DOWN} B) right "
            f"after the signal instead of draining")
    for c in (down, up):
        c.join(40)
    t_done = max(down.t_down_end or 0, up.t_up_done or 0)
    problems = down.problems(srv) + up.problems(srv)
    if problems:
        h.fail(f"{name}: transfers in flight at the signal did not complete intact:\n  "
               + "\n  ".join(problems))
    h.log(f"{name}: both transfers completed intact {t_done - t_sig:.1f} s after the signal")
    rc = p.wait(15)
    t_exit = time.monotonic()
    h.check(rc == 0, f"{name}: proxy exit status {rc} after draining, expected 0")
    h.check(t_exit - t_done < 6.0,
            f"{name}: proxy exited {t_exit - t_done:.1f} s after the last connection finished "
            f"(drain period 20 s); it should exit once everything is drained")
    lines = p.stderr_since(t_sig)
    h.check(any(re.search(SHUTDOWN_RE, l) for l in lines),
            f"{name}: stderr after the signal does not mention the shutdown: {lines!r}")
    h.log(f"{name}: exit 0 {t_exit - t_sig:.1f} s after the signal; stderr: {lines}")
    srv.stop()


def main():
    one_signal(signal.SIGINT, "buffer")
    one_signal(signal.SIGTERM, "splice")


h.run(main, timeout=110)
