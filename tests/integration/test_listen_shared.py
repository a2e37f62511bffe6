#!/usr/bin/env python3
"""The listeners use SO_REUSEPORT (one per worker), which would let them join another
process's SO_REUSEPORT group on the same port and quietly take part of its clients. So:

- a port held by a SO_REUSEPORT listener (of the same user) stops the start: exit 1, one
  line `bind(127.0.0.1:P) failed: EADDRINUSE ...`, no readiness line;
- a second arctic-proxy on a running one's port does the same, and the first keeps every
  client;
- with ARCTIC_REUSEPORT_JOIN=1 the second one starts and shares the port (clients reach both
  upstreams); once the first is stopped with SIGTERM (exit 0), the second takes every client:
  a restart that never refuses the port."""
import re
import socket
import harness as h


def letter_server(letter):
    def handler(conn, rec):
        conn.sendall(letter)
    return h.ThreadedServer(handler, name=f"upstream {letter.decode()}")


def replies(port, n):
    got = {}
    for _ in range(n):
        s = h.connect(("127.0.0.1", port))
        b = h.recv_exact(s, 1, what="the upstream's letter")
        got[b] = got.get(b, 0) + 1
        s.close()
    return got


def refused(port, env=None):
    rc, _, err = h.run_proxy_once([f"127.0.0.1:{port}", "127.0.0.1:1"]
                                  + h.pos(upstream_test_timeout_secs=0), env=env, timeout=15)
    lines = [l for l in err.splitlines() if l.startswith("arctic-proxy:")]
    want = re.compile(rf"^arctic-proxy: bind\(127\.0\.0\.1:{port}\) failed: EADDRINUSE\b")
    h.check(rc == 1 and len(lines) == 1 and want.match(lines[0]) and
            not h.LISTEN_RE.search(err),
            f"port {port} in use by a SO_REUSEPORT listener: exit {rc}, stderr {err!r}")
    return lines[0]


def main():
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    held.bind(("127.0.0.1", 0))
    held.listen(16)
    h.add_cleanup(held.close)
    line = refused(held.getsockname()[1])
    held.close()

    ua, ub = letter_server(b"A"), letter_server(b"B")
    a = h.start_proxy("127.0.0.1:0", ua.addr_str, *h.pos(upstream_test_timeout_secs=0))
    port = a.addr[1]
    refused(port)
    got = replies(port, 20)
    h.check(got == {b"A": 20}, f"after a refused second start, the first proxy's clients "
            f"reached {got}")

    b = h.start_proxy(f"127.0.0.1:{port}", ub.addr_str, *h.pos(upstream_test_timeout_secs=0),
                      env={"ARCTIC_REUSEPORT_JOIN": 1})
    got = replies(port, 60)
    h.check(got.get(b"A") and got.get(b"B"), f"with ARCTIC_REUSEPORT_JOIN=1 both proxies "
            f"should take clients on port {port}: {got}")
    shared = dict(got)
    a.signal(15)
    rc = a.wait(15)
    h.check(rc == 0, f"the first proxy exited {rc} on SIGTERM")
    got = replies(port, 20)
    h.check(got == {b"B": 20}, f"after the first proxy stopped, clients reached {got}")
    b.check_alive()
    h.log(f"refused: {line!r}; shared: {shared}; after the first stopped: {got}")


h.run(main)
