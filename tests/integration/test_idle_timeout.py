#!/usr/bin/env python3
"""ARCTIC_IDLE_TIMEOUT_S=1 (in buffer and then in splice mode), twelve connections at once:
 A0-A9 idle after their only bytes, sent at chosen phases of the CLOCK_MONOTONIC second
   (six just before a whole second, four spread over it): each is closed by the proxy
   1-4.5 s after its last byte (never before ~1 s: checked as >= 0.8 s), client and
   upstream side. An idle clock kept in whole seconds closes some of them far too early.
 B client sends one byte every 0.3 s for 3.6 s (upstream silent): stays open past 3 s and
   all bytes arrive; once B stops sending it is closed within ~4.5 s.
 C upstream sends one byte every 0.3 s for 3.6 s (client silent): same."""
import functools
import threading
import time
import json
import harness as h

BYTES = 12
EVERY = 0.3


# Phase (fraction of a CLOCK_MONOTONIC second) at which each A connection sends its only
# bytes. Most go just before a whole second: an idle clock kept in whole seconds would then
# close them after well under 1 s. The others cover the rest of the second.
A_PHASES = [0.95] * 6 + [0.1, 0.3, 0.5, 0.7]


def scenario_a(p, srv, res, k):
    """Idle connection #k: connects, waits for phase A_PHASES[k] of the clock's second,
    sends its script line, then stays idle: must be closed 1-4.5 s later (>= 0.8 s checked)."""
    cid = 10 + k
    s = p.connect()
    now = time.monotonic()
    wait = (A_PHASES[k] - (now % 1.0)) % 1.0
    time.sleep(wait)
    s.sendall(json.dumps({"id": cid, "down": 0, "end": "none"}).encode() + b"\n")
    phase = time.monotonic() % 1.0
    kind, dt, extra = h.wait_closed(s, 8)
    if kind == "timeout":
        res.append(f"A{k}: idle connection still open 8 s after its last byte "
                   f"(idle timeout 1 s)")
        return
    if not 0.8 <= dt <= 4.5:
        res.append(f"A{k}: connection closed {dt:.2f} s after its last byte (sent at "
                   f"{phase:.2f} into a second); expected 1-4.5 s (ARCTIC_IDLE_TIMEOUT_S=1)")
    rec = srv.wait_id(cid, 2)
    if not rec.done.wait(3):
        res.append(f"A{k}: upstream side still open 3 s after the client side was closed: "
                   f"{rec}")
    h.log(f"A{k}: closed ({kind}) {dt:.2f} s after the last byte (sent at phase {phase:.2f})")


def scenario_b(p, srv, res):
    s = p.connect()
    s.sendall(json.dumps({"id": 2, "down": 0, "end": "none"}).encode() + b"\n")
    data = h.pattern_bytes(2, BYTES)
    s.setblocking(False)
    for i in range(BYTES):
        time.sleep(EVERY)
        try:
            c = s.recv(16)
            res.append(f"B: connection got {'EOF' if c == b'' else 'data'} after "
                       f"{(i + 1) * EVERY:.1f} s while the client was sending a byte every "
                       f"{EVERY} s")
            return
        except BlockingIOError:
            pass
        except OSError as e:
            res.append(f"B: connection failed ({h.errno_name(e)}) after {(i + 1) * EVERY:.1f} s "
                       f"although the client sent a byte every {EVERY} s")
            return
        try:
            s.send(data[i:i + 1])
        except OSError as e:
            res.append(f"B: send #{i} failed: {h.errno_name(e)}")
            return
    t_last = time.monotonic()
    rec = srv.wait_id(2, 2)
    deadline = time.monotonic() + 2
    while rec.bytes_in < BYTES and time.monotonic() < deadline:
        time.sleep(0.02)
    if rec.bytes_in != BYTES or rec.verifier.first_mismatch is not None:
        res.append(f"B: upstream received {rec.bytes_in} of {BYTES} bytes "
                   f"(mismatch at {rec.verifier.first_mismatch})")
    if rec.done.is_set():
        res.append(f"B: upstream side was closed while the client kept sending: {rec}")
    kind, dt, _ = h.wait_closed(s, 8)
    if kind == "timeout" or not 0.7 <= dt <= 4.5:
        res.append(f"B: after the client stopped sending the connection ended with {kind} "
                   f"after {dt:.2f} s; expected closed 1-4.5 s after the last byte")
    h.log(f"B: open for {BYTES * EVERY:.1f} s while sending, then closed ({kind}) {dt:.2f} s "
          f"after the last byte")


def scenario_c(p, srv, res):
    s = p.connect()
    s.sendall(json.dumps({"id": 3, "down": BYTES, "chunk": 1, "interval": EVERY,
                          "end": "none"}).encode() + b"\n")
    v = h.Verifier(1003)
    s.settimeout(3)
    t_start = time.monotonic()
    while v.n < BYTES:
        try:
            c = s.recv(16)
        except OSError as e:
            res.append(f"C: recv failed ({h.errno_name(e)}) after {v.n} bytes, "
                       f"{time.monotonic() - t_start:.1f} s, while the upstream sent a byte "
                       f"every {EVERY} s")
            return
        if not c:
            res.append(f"C: EOF after {v.n} bytes, {time.monotonic() - t_start:.1f} s, while "
                       f"the upstream sent a byte every {EVERY} s")
            return
        v.feed(c)
    t_last = time.monotonic()
    if v.first_mismatch is not None:
        res.append(f"C: wrong byte at {v.first_mismatch}")
    kind, dt, _ = h.wait_closed(s, 8)
    if kind == "timeout" or not 0.5 <= dt <= 4.5:
        res.append(f"C: after the upstream stopped sending the connection ended with {kind} "
                   f"after {dt:.2f} s; expected closed 1-4.5 s after the last byte")
    h.log(f"C: open for {t_last - t_start:.1f} s while receiving, then closed ({kind}) "
          f"{dt:.2f} s after the last byte")


def run_mode(mode, res):
    srv = h.DuplexServer(name="duplex upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_IDLE_TIMEOUT_S": 1, "ARCTIC_IO_MODE": mode})
    h.log(f"--- ARCTIC_IO_MODE={mode}")
    mres = []

    def guarded(fn):
        try:
            fn(p, srv, mres)
        except Exception as e:  # TestFailure or socket errors inside a scenario thread
            mres.append(f"{fn.__name__}: {e}")
    fns = [functools.partial(scenario_a, k=k) for k in range(len(A_PHASES))]
    for fn in fns:
        fn.__name__ = f"scenario_a{fn.keywords['k']}"
    fns += [scenario_b, scenario_c]
    threads = [threading.Thread(target=guarded, args=(fn,), daemon=True) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if any(t.is_alive() for t in threads):
        mres.append("an idle-timeout scenario hung")
    p.check_alive()
    res += [f"{mode} mode: {r}" for r in mres]
    p.stop()
    srv.stop()


def main():
    res = []
    for mode in ("buffer", "splice"):
        run_mode(mode, res)
    if res:
        h.fail("\n  ".join(res))


h.run(main)
