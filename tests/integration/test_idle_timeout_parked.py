#!/usr/bin/env python3
"""ARCTIC_IDLE_TIMEOUT_S closing a connection whose bytes wait in its source socket for a relay
buffer (buffer mode, every buffer held): the bytes are lost, so the upstream must see a reset,
never a FIN that reads as a complete stream.

One worker, 8 relay buffers, one per direction (ARCTIC_INFLIGHT=1), idle timeout 5 s, and
pipes (16 KiB) too small to take a 64 KiB buffer's bytes, so the buffer pressure scan cannot
move a stalled upload to a pipe (as when its move budget is used up) and the wait lasts. V
connects first and stays quiet. Eight uploads follow whose upstreams never read: each holds
a buffer behind a send that cannot complete, and the pool runs dry. V then sends 'hello': its
recv finds no buffer and waits (parked), which does not count as activity, so V, idle since it
connected, is the first the timeout closes (the oldest in the idle order). V's upstream must not have
received a byte, and must see the end of the connection as a reset."""
import socket
import threading
import time
import harness as h

HOGS = 8
IDLE_S = 5  # set-up takes ~1 s; the rest is slack for a loaded machine



def main():
    v_end = {}
    v_done = threading.Event()

    def upstream(conn, rec):
        if rec.idx != 0:  # an upload's upstream: never reads
            threading.Event().wait(20)
            return
        got = 0
        conn.settimeout(15)
        try:
            while True:
                b = conn.recv(65536)
                if not b:
                    v_end["how"] = "EOF"
                    break
                got += len(b)
        except ConnectionResetError:
            v_end["how"] = "reset"
        except socket.timeout:
            v_end["how"] = "timeout"
        v_end["bytes"] = got
        v_done.set()

    srv = h.ThreadedServer(upstream, name="upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_WORKERS": 1, "ARCTIC_IO_MODE": "buffer",
                           "ARCTIC_BUF_COUNT": 8, "ARCTIC_INFLIGHT": 1,
                           "ARCTIC_PIPE_SIZE": 16384, "ARCTIC_IDLE_TIMEOUT_S": IDLE_S})
    t0 = time.monotonic()
    v = p.connect()
    srv.wait_accepted(1)
    hogs = []
    for i in range(HOGS):
        s = p.connect()
        srv.wait_accepted(2 + i)
        hogs.append(s)
    pushers = [threading.Thread(target=h.push, args=(s, 0.8)) for s in hogs]
    for t in pushers:
        t.start()
    for t in pushers:
        t.join()
    setup = time.monotonic() - t0
    if setup >= IDLE_S - 0.5:
        h.skip(f"the uploads took {setup:.1f} s to fill the buffers (a loaded machine): the "
               f"test needs V to send well before its idle timeout ({IDLE_S} s)")
    v.sendall(b"hello")
    h.check(v_done.wait(10), "V's upstream connection did not end within 10 s")
    took = time.monotonic() - t0
    h.log(f"V's upstream connection ended with {v_end['how']} after {v_end['bytes']} bytes, "
          f"{took:.1f} s after V connected")
    h.check(v_end["bytes"] == 0, f"V's 'hello' reached its upstream ({v_end['bytes']} bytes): "
            f"no buffer was missing, the test shows nothing")
    h.check(v_end["how"] == "reset", f"the idle timeout closed V while its 'hello' waited for "
            f"a buffer; V's upstream saw {v_end['how']}: the lost bytes must show as a reset")
    p.check_alive()
    for s in hogs + [v]:
        s.close()
    p.stop()
    srv.stop()


h.run(main)
