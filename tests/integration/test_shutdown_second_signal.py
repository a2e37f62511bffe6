#!/usr/bin/env python3
"""A second signal during the drain exits at once with status 128+signo (of the second
signal). Tried as SIGTERM-then-SIGINT (expect 130) and SIGINT-then-SIGTERM (expect 143),
each with an idle connection open and shutdown_drain_secs=30 so that only the second
signal can end the proxy quickly."""
import signal
import socket
import time
import harness as h


def listener_closed(addr, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            s.connect(addr)
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.05)
    return False


def one(first, second):
    n1, n2 = signal.Signals(first).name, signal.Signals(second).name
    srv = h.ThreadedServer(h.hold_handler(), name="idle upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str,
                      *h.pos(shutdown_drain_secs=30, upstream_test_timeout_secs=0))
    s = p.connect()
    h.roundtrip(s, b"hello", what="setup round trip")
    p.signal(first)
    h.check(listener_closed(p.addr, 3), f"{n1}: listener still accepting 3 s after {n1}")
    time.sleep(0.3)
    p.check_alive(f"after {n1} with an open connection and shutdown_drain_secs=30 "
                  f"(it must be draining)")
    t = time.monotonic()
    p.signal(second)
    rc = p.wait_exit(5)
    dt = time.monotonic() - t
    h.check(rc is not None, f"{n1} then {n2}: proxy still running 5 s after the second "
                            f"signal (expected an immediate exit)")
    h.check(rc != 0, f"{n1} then {n2}: exit status 0 after the second signal, expected "
                     f"{128 + second}")
    h.check(rc == 128 + second,
            f"{n1} then {n2}: exit status {rc} "
            f"{'(killed by signal %d)' % -rc if rc < 0 else ''}, expected 128+{second} = "
            f"{128 + second}")
    h.log(f"{n1} then {n2}: exit {rc} after {dt:.2f} s")
    s.close()
    srv.stop()


def main():
    one(signal.SIGTERM, signal.SIGINT)
    one(signal.SIGINT, signal.SIGTERM)


h.run(main)
