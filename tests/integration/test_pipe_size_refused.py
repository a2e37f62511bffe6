#!/usr/bin/env python3
"""A pipe size the kernel refuses is named in the error. Run as an unprivileged user (nobody,
through setpriv), splice mode gives each connection two pipes of ARCTIC_PIPE_SIZE=1 MiB (256
pages); past fs.pipe-user-pages-soft (16384 pages by default: 64 such pipes per user) the
kernel refuses F_SETPIPE_SZ with EPERM. The connections that found no pipe must be closed and
counted, the log must name the call that failed (not pipe2(), which succeeded), and the
proxy must keep serving: an echo through a connection opened before still works."""
import harness as h

CONNS = 48


def main():
    with open("/proc/sys/fs/pipe-user-pages-soft") as f:
        soft = int(f.read())
    if soft == 0 or soft > CONNS * 2 * 256 - 256 * 8:
        h.skip(f"fs.pipe-user-pages-soft is {soft}: {CONNS} connections stay under it")
    nobody, why = h.as_nobody()
    if nobody is None:
        h.skip(why)
    echo = h.EchoServer(name="echo")
    argv = nobody + h.proxy_argv(
        "127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0))
    p = h.Proxy(argv, {"ARCTIC_IO_MODE": "splice", "ARCTIC_PIPE_TRIAL": 0,
                       "ARCTIC_PIPE_SIZE": 1048576, "ARCTIC_WORKERS": 1})
    p.wait_ready(10)
    first = p.connect()
    h.roundtrip(first, b"first", what="echo on the first connection")
    conns = [first]
    for _ in range(CONNS):
        try:
            conns.append(p.connect())
        except (ConnectionResetError, ConnectionRefusedError):
            pass
    line = p.wait_stderr(r"fcntl\(F_SETPIPE_SZ, ARCTIC_PIPE_SIZE\) failed: EPERM", 10)
    h.check(line, f"no log line naming F_SETPIPE_SZ: {p.stderr_lines[3:6]}")
    h.check("pipe2() failed" not in p.stderr_text(), "the log blames pipe2()")
    p.wait_stats(lambda st: st.err > 0, 5, "the refused connections counted as errors")
    h.roundtrip(first, b"still", what="echo on the first connection after the refusals")
    p.check_alive()
    h.log(f"as nobody with {soft} soft pipe pages: {line.strip()!r}; the proxy kept serving")
    for s in conns:
        s.close()
    p.stop()


h.run(main)
