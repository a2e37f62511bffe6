#!/usr/bin/env python3
"""Reset propagation (contract: 'Reset from one side -> reset (RST) of the other side').

A1 upstream sends 512 KiB and then RSTs while the client is reading: the client gets a
   correct prefix and then ECONNRESET (a FIN / b'' is a failure, a hang is a failure).
A2 the client is streaming to the upstream; the upstream reads 256 KiB and RSTs: the
   client's socket must report ECONNRESET within 5 s.
B1 the client sent 256 KiB (all read by the upstream) and then closes with RST: the
   upstream's recv must report ECONNRESET within 5 s.
B2 the upstream is streaming 256 MiB; the client reads 1 MiB and RSTs: the upstream's
   send must fail within 5 s (it must not hang nor be able to send everything).
Afterwards: 0 active in stats, the four resets counted as errors (and none logged as the
proxy's own failure), and the proxy's fd count back to the baseline.
Everything runs with ARCTIC_IO_MODE=buffer and again with ARCTIC_IO_MODE=splice."""
import selectors
import socket
import time
import harness as h

A1_BYTES = 512 * h.KiB
CUT = 256 * h.KiB


def handler(conn, rec):
    cmd = h.read_command(conn, rec)
    if cmd is None:
        return
    rec.info["cmd"] = cmd
    if cmd == "A1":
        h.send_pattern(conn, rec, seed=11, nbytes=A1_BYTES)
        h.set_rst_on_close(conn)
        rec.info["rst_sent"] = time.monotonic()
    elif cmd == "A2":
        h.read_to_end(conn, rec, timeout=20, limit=CUT)
        h.set_rst_on_close(conn)
        rec.info["rst_sent"] = time.monotonic()
    elif cmd == "B1":
        h.read_to_end(conn, rec, timeout=20)
    elif cmd == "B2":
        h.send_pattern(conn, rec, seed=12, nbytes=256 * h.MiB)
    # returning closes the socket (with RST when SO_LINGER 0 was set)


def rec_for(srv, cmd, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in list(srv.records):
            if r.info.get("cmd") == cmd:
                return r
        time.sleep(0.01)
    h.fail(f"{cmd}: upstream never received the command")


def a1(p, srv):
    s = p.connect()
    s.sendall(b"A1\n")
    v = h.Verifier(11)
    s.settimeout(10)
    outcome = None
    while outcome is None:
        try:
            c = s.recv(1 << 16)
            if not c:
                outcome = "eof"
            v.feed(c)
        except socket.timeout:
            outcome = "timeout"
        except OSError as e:
            outcome = h.errno_name(e)
    t_end = time.monotonic()
    rec = rec_for(srv, "A1")
    h.check(v.first_mismatch is None and v.n <= A1_BYTES,
            f"A1: client received {v.n} bytes, not a prefix of the upstream's data "
            f"(first wrong byte at {v.first_mismatch})")
    h.check(outcome != "timeout", f"A1: client still open 10 s after the upstream's RST "
                                  f"(received {v.n} bytes)")
    h.check(outcome == "ECONNRESET",
            f"A1: upstream reset the connection, client saw {outcome!r} after {v.n} bytes; "
            f"expected ECONNRESET (RST propagated)")
    sent = rec.info.get("rst_sent")
    h.check(sent is not None and t_end - sent < 5.0,
            f"A1: reset reached the client {t_end - sent:.2f} s after the upstream's RST")
    s.close()
    h.log(f"A1 ok: {v.n} correct bytes then ECONNRESET")


def a2(p, srv):
    s = p.connect()
    s.sendall(b"A2\n")
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    pat = h.Pattern(21, 1 << 40)
    pending = memoryview(b"")
    outcome = None
    deadline = time.monotonic() + 15
    sent = 0
    try:
        while outcome is None and time.monotonic() < deadline:
            for key, ev in sel.select(0.2):
                if ev & selectors.EVENT_READ:
                    try:
                        c = s.recv(65536)
                        if not c:
                            outcome = "eof"
                            break
                        outcome = f"unexpected data ({len(c)} bytes)"
                        break
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        outcome = h.errno_name(e)
                        break
                if ev & selectors.EVENT_WRITE:
                    if not len(pending):
                        pending = pat.read(256 * h.KiB)
                    try:
                        n = s.send(pending)
                        sent += n
                        pending = pending[n:]
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        outcome = h.errno_name(e)
                        break
    finally:
        sel.close()
    t_end = time.monotonic()
    rec = rec_for(srv, "A2")
    h.check(outcome is not None,
            f"A2: client could keep sending for 15 s ({sent} bytes) after the upstream "
            f"read {rec.bytes_in} bytes and reset; the proxy did not propagate the reset")
    h.check(outcome == "ECONNRESET",
            f"A2: after the upstream's RST the client saw {outcome!r} (sent {sent} bytes); "
            f"expected ECONNRESET (EPIPE or EOF means the proxy closed with FIN)")
    sent_t = rec.info.get("rst_sent")
    h.check(sent_t is not None and t_end - sent_t < 5.0,
            f"A2: reset reached the client {t_end - sent_t:.2f} s after the upstream's RST")
    s.close()
    h.log(f"A2 ok: client saw ECONNRESET {t_end - sent_t:.3f} s after the upstream's RST")


def b1(p, srv):
    s = p.connect()
    s.sendall(b"B1\n" + h.pattern_bytes(31, CUT))
    rec = rec_for(srv, "B1")
    deadline = time.monotonic() + 10
    while rec.bytes_in < CUT and time.monotonic() < deadline:
        time.sleep(0.01)
    h.check(rec.bytes_in == CUT,
            f"B1: upstream received {rec.bytes_in} of {CUT} bytes before the reset (setup)")
    t_rst = time.monotonic()
    h.abort(s)
    h.check(rec.done.wait(10), "B1: upstream connection still open 10 s after the "
                               "client's RST (the proxy did not close it)")
    dt = rec.t_end_in - t_rst
    h.check(rec.end_in == "reset",
            f"B1: after the client's RST the upstream's read ended with {rec.end_in!r} "
            f"after {dt:.2f} s; expected ECONNRESET (eof = the proxy sent FIN instead of RST)")
    h.check(dt < 5.0, f"B1: upstream saw the reset only after {dt:.2f} s")
    h.log(f"B1 ok: upstream saw ECONNRESET {dt:.3f} s after the client's RST")


def b2(p, srv):
    s = p.connect()
    s.sendall(b"B2\n")
    v = h.Verifier(12)
    s.settimeout(10)
    while v.n < h.MiB:
        c = s.recv(min(65536, h.MiB - v.n))
        h.check(c, f"B2: EOF after {v.n} bytes of the upstream's stream")
        v.feed(c)
    h.check(v.first_mismatch is None, f"B2: corrupted stream at byte {v.first_mismatch}")
    t_rst = time.monotonic()
    h.abort(s)
    rec = rec_for(srv, "B2")
    h.check(rec.done.wait(10),
            f"B2: upstream still sending 10 s after the client's RST ({rec.bytes_out} bytes "
            f"sent): the proxy did not close the upstream side")
    dt = rec.t_out_done - t_rst
    h.check(rec.error_out is not None,
            f"B2: the upstream managed to send all {rec.bytes_out} bytes although the client "
            f"had reset after 1 MiB (the proxy kept draining a dead connection)")
    h.check(dt < 5.0, f"B2: upstream's send failed only {dt:.2f} s after the client's RST")
    h.log(f"B2 ok: upstream's send failed ({rec.error_out}) {dt:.3f} s after the client's RST")


def run_mode(mode):
    srv = h.ThreadedServer(handler, name=f"reset upstream ({mode})")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_STATS_INTERVAL_MS": 200, "ARCTIC_IO_MODE": mode})
    base_fd = p.stable_fd_count()
    h.log(f"--- ARCTIC_IO_MODE={mode}")
    failures = []
    for fn in (a1, a2, b1, b2):
        try:
            fn(p, srv)
        except h.TestFailure as e:
            h.log(f"FAILED: {e}")
            failures.append(f"{mode} mode: {e}")
        p.check_alive(f"after scenario {fn.__name__.upper()} ({mode} mode)")
    # a peer's reset is the peer's doing: counted (err_reset), never logged as a failure of
    # the proxy's own
    own = p.wait_stderr(r"relaying failed", 0.1)
    if own:
        failures.append(f"{mode} mode: a peer reset was taken for the proxy's own failure: "
                        f"{own!r}")
    try:
        p.wait_stats(lambda st: st.active == 0 and st.err >= 4, 10,
                     "0 active and the four resets counted")
        p.wait_fd_count(base_fd, 5, "fds after the reset scenarios")
    except h.TestFailure as e:
        failures.append(f"{mode} mode: {e}")
    p.stop()
    srv.stop()
    return failures


def main():
    failures = run_mode("buffer") + run_mode("splice")
    if failures:
        h.fail(f"{len(failures)} reset check(s) failed:\n  " + "\n  ".join(failures))


h.run(main)
