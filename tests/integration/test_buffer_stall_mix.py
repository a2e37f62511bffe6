#!/usr/bin/env python3
"""Moves to a pipe under buffer pressure, many at once and at awkward moments: 30 connections
through one worker with 8 relay buffers, each uploading and downloading up to a few MiB in
random chunks while both its client and its upstream stop reading for 0.2-1.2 s at random.
Directions get moved while a send is partly done, while a recv is in flight, after the source's
EOF, while the other direction waits for a buffer. Every byte of every stream must arrive in
order, each connection must end with a clean EOF both ways, the proxy must count moves and no
error. Seeded, so a failure repeats. In buffer mode and in auto mode held on buffers."""
import random
import socket
import threading
import time
import harness as h

CONNS = 30


def main():
    problems = []

    def send(sock, seed, size, r):
        pat = h.Pattern(seed, size)
        try:
            while True:
                c = pat.read(r.choice([1, 700, 4096, 16384, 65536, 200000]))
                if not len(c):
                    break
                sock.sendall(c)
                if r.random() < 0.3:
                    time.sleep(r.random() * 0.05)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            problems.append(f"sending stream {seed}: {h.errno_name(e)}")

    def read(sock, seed, size, r):
        ver = h.Verifier(seed)
        sock.settimeout(30)
        try:
            while True:
                if r.random() < 0.08:
                    time.sleep(0.2 + r.random())  # this reader stalls
                b = sock.recv(r.choice([1, 1000, 65536, 1 << 20]))
                if not b:
                    break
                ver.feed(b)
        except OSError as e:
            problems.append(f"reading stream {seed}: {h.errno_name(e)} after {ver.n} bytes")
            return
        p = ver.problem(size)
        if p:
            problems.append(f"stream {seed}: {p}")

    def upstream(conn, rec):
        cmd = h.read_command(conn, rec)
        if cmd is None:
            return
        down_seed, down, up_seed, up = map(int, cmd.split())
        t = threading.Thread(target=send, args=(conn, down_seed, down, random.Random(down_seed)))
        t.start()
        read(conn, up_seed, up, random.Random(up_seed + 1))
        t.join()

    for mode, extra in (("buffer", {}),
                        ("auto", {"ARCTIC_PIPE_TRIAL": 0, "ARCTIC_SPLICE_AFTER": 255})):
        problems.clear()
        srv = h.ThreadedServer(upstream, name="upstream")
        p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=0),
                          env={"ARCTIC_WORKERS": 1, "ARCTIC_IO_MODE": mode,
                               "ARCTIC_BUF_COUNT": 8, "ARCTIC_INFLIGHT": 2,
                               "ARCTIC_STATS_FORMAT": "json", "ARCTIC_STATS_INTERVAL_MS": 200,
                               **extra})
        rng = random.Random(20261126)

        def client(i):
            down_seed, up_seed = 100 + 2 * i, 101 + 2 * i
            down, up = rng.randint(0, 3 * h.MiB), rng.randint(0, 2 * h.MiB)
            s = p.connect()
            s.sendall(f"{down_seed} {down} {up_seed} {up}\n".encode())
            t = threading.Thread(target=send, args=(s, up_seed, up, random.Random(up_seed)))
            t.start()
            read(s, down_seed, down, random.Random(down_seed + 1))
            t.join()
            s.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CONNS)]
        for t in threads:
            t.start()
            time.sleep(0.01)
        for t in threads:
            t.join(90)
        h.check(not any(t.is_alive() for t in threads), f"{mode}: a connection hung")
        h.check(not problems, f"{mode}: {len(problems)} streams went wrong: {problems[:5]}")
        time.sleep(0.5)
        tot = p.json_total()
        h.check(tot["errors"] == 0, f"{mode}: the proxy counted {tot['errors']} errors")
        h.check(tot["active"] == 0, f"{mode}: {tot['active']} connections still open")
        h.check(tot["moved_to_pipe"] > 0, f"{mode}: no direction was moved to a pipe")
        h.log(f"{mode}: {CONNS} connections, {tot['moved_to_pipe']} directions moved to a "
              f"pipe, every stream intact")
        p.check_alive()
        p.stop()
        srv.stop()


h.run(main)
