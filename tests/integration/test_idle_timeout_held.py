#!/usr/bin/env python3
"""ARCTIC_IDLE_TIMEOUT_S=1 closing a connection whose client stopped reading: the proxy still
holds bytes of it (relay buffers or a pipe), so the close must be a reset, never a FIN that
reads as a complete stream (the client would take a truncated download for a whole one).
A connection idle with nothing held still ends with a plain EOF. In every I/O mode."""
import socket
import threading
import time
import harness as h

TOTAL = 8 * h.MiB


def main():
    def upstream(conn, rec):
        if rec.idx % 2 == 0:  # the download the client stops reading
            try:
                conn.sendall(h.pattern_bytes(3, TOTAL))
            except OSError:
                pass
        threading.Event().wait(15)

    for mode in ("auto", "buffer", "splice"):
        srv = h.ThreadedServer(upstream, name="upstream")
        p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0),
                          env={"ARCTIC_IO_MODE": mode, "ARCTIC_IDLE_TIMEOUT_S": 1})
        stuck = p.connect()
        srv.wait_accepted(1)
        quiet = p.connect()
        srv.wait_accepted(2)
        time.sleep(3.5)  # nobody reads: both are idle past the timeout
        n, end = 0, None
        stuck.settimeout(10)
        try:
            while True:
                b = stuck.recv(1 << 20)
                if not b:
                    end = "EOF"
                    break
                n += len(b)
        except ConnectionResetError:
            end = "reset"
        except socket.timeout:
            end = "timeout"
        h.log(f"{mode}: the stalled download ended with {end} after {n} of {TOTAL} bytes")
        h.check(n < TOTAL, f"{mode}: all {TOTAL} bytes arrived; the test needs the proxy to "
                "hold some when the timeout fires")
        h.check(end == "reset",
                f"ARCTIC_IO_MODE={mode}: a connection closed by the idle timeout while the "
                f"proxy held its bytes ended with {end} after {n} of {TOTAL} bytes: the "
                f"truncation must show as a reset")
        kind, _, _ = h.wait_closed(quiet, 5)
        h.check(kind == "eof", f"{mode}: the idle connection with nothing held ended with "
                f"{kind}, expected a plain EOF")
        p.check_alive(mode)
        p.stop()
        srv.stop()


h.run(main)
