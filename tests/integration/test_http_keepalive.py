#!/usr/bin/env python3
"""HTTP/1.1 keep-alive through the proxy: 4 connections x 100 sequential requests, a burst
of 50 pipelined requests with bodies, and a final `Connection: close` request whose
response ends with the server's FIN."""
import harness as h


def main():
    srv = h.ThreadedServer(h.http_handler(), name="http upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=3))
    for c in range(4):
        s = p.connect()
        buf = bytearray()
        for i in range(100):
            path = f"/c{c}/r{i}"
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            st, hd, body = h.http_read_response(s, buf)
            h.check(st == 200 and body == b"hello " + path.encode(),
                    f"conn {c} request {i}: got status {st} body {body[:60]!r}")
        # pipelined burst with request bodies
        reqs = bytearray()
        bodies = []
        for i in range(50):
            b = h.pattern_bytes(c * 100 + i, 1000 + 997 * i)
            bodies.append(b)
            reqs += (f"POST /p{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(b)}\r\n\r\n"
                     .encode() + b)
        s.sendall(reqs)
        for i in range(50):
            st, hd, body = h.http_read_response(s, buf)
            h.check(st == 200 and body == f"hello /p{i}".encode() + bodies[i],
                    f"conn {c} pipelined request {i}: wrong response "
                    f"(status {st}, {len(body)} body bytes)")
        s.sendall(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        st, hd, body = h.http_read_response(s, buf)
        h.check(body == b"hello /bye", f"conn {c}: last response body {body!r}")
        kind, dt, extra = h.wait_closed(s, 10)
        h.check(kind == "eof" and extra == 0 and not buf,
                f"conn {c}: after `Connection: close` expected FIN, got {kind} "
                f"({extra} extra bytes)")
        s.close()
        h.log(f"connection {c}: 151 requests ok")
    recs = [r for r in srv.records if r.info.get("requests")]
    h.check(len(recs) == 4 and all(r.info["requests"] == 151 for r in recs),
            f"upstream saw request counts {[r.info.get('requests') for r in srv.records]}, "
            f"expected 4 connections with 151 each")


h.run(main)
