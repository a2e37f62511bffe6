#!/usr/bin/env python3
"""Buffer mode with a tiny pool (ARCTIC_BUF_COUNT=8, ARCTIC_INFLIGHT=1): eight uploads whose
upstreams do not read hold every buffer; ten idle connections open; then V sends 'ping' and
has to wait for a buffer. When one upload's upstream reads and that upload ends, its buffer
comes back and must reach V, the connection with bytes to relay, not an idle connection
that would leave it unused (V then waits forever). Also checked: a new connection still gets
its echo."""
import socket
import threading
import time
import harness as h

HOGS = 7  # uploads whose upstream never reads; #7 is M, whose upstream reads when told
IDLE = 10



def main():
    release_m = threading.Event()

    def upstream(conn, rec):
        if rec.idx < HOGS:  # never reads
            threading.Event().wait(60)
            return
        if rec.idx == HOGS:
            release_m.wait(60)
        while True:
            d = conn.recv(65536)
            if not d:
                return
            if rec.idx > HOGS:
                conn.sendall(d)

    srv = h.ThreadedServer(upstream, name="upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_WORKERS": 1, "ARCTIC_IO_MODE": "buffer",
                           "ARCTIC_BUF_COUNT": 8, "ARCTIC_INFLIGHT": 1})
    uploads = []
    for i in range(HOGS + 1):
        u = p.connect()
        srv.wait_accepted(i + 1)
        h.push(u, 0.7)
        uploads.append(u)
    idle = [p.connect() for _ in range(IDLE)]
    srv.wait_accepted(HOGS + 1 + IDLE)
    time.sleep(0.3)
    v = p.connect()
    srv.wait_accepted(HOGS + 2 + IDLE)
    time.sleep(0.2)
    v.sendall(b"ping")
    time.sleep(0.3)
    release_m.set()  # M's upstream reads: M's buffer comes back...
    time.sleep(1.0)
    uploads[HOGS].shutdown(socket.SHUT_WR)  # ...and M ends
    try:
        echo = h.recv_exact(v, 4, timeout=5, what="V's echo")
    except h.TestFailure as e:
        h.fail(f"V waited for a buffer and got none after M's came back ({e}); the idle "
               f"connections must not take the wake-up")
    h.check(echo == b"ping", f"V got {echo!r}")
    w = p.connect()
    w.sendall(b"hello")
    h.check(h.recv_exact(w, 5, timeout=5, what="W's echo") == b"hello", "W: wrong echo")
    h.log(f"with {HOGS} buffers held by stalled uploads and {IDLE} idle connections, "
          f"the returned buffer reached V; W echoes too")
    p.check_alive()
    for s in uploads + idle + [v, w]:
        s.close()


h.run(main)
