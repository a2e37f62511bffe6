#!/usr/bin/env python3
"""A stdout or stderr that stops draining never stops the proxy. Each is, in turn, a pipe the
test has filled to capacity (4 KiB) and never reads, the way a paused pager, a terminal
stopped with Ctrl-S or a stalled log collector behaves.

stdout full, stats every 10 ms (and again with stdout a terminal whose output is stopped, as
Ctrl-S does): the proxy must keep relaying, and one SIGTERM must end it
(exit 0) within the drain time; it says how many stats lines it dropped. A blocking write
would hold the thread that takes the signals: the proxy would ignore SIGTERM for as long as
nobody reads its stdout.

stderr full (its start-up lines are dropped; readiness comes from the stats on stdout), one
worker, a dead upstream: each connection's failed upstream connect makes the worker log a
line; each must still be closed and counted, and SIGTERM must end the proxy. A blocking write
would hold the worker, and every connection of that worker with it. Once stderr is read
again, at exit, the proxy says how many log lines it dropped."""
import fcntl
import os
import re
import select
import signal
import socket
import threading
import time
import harness as h

F_SETPIPE_SZ = 1031


def full_pipe():
    """A pipe of one page, filled: (read end, write end)."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 512)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    h.add_cleanup(lambda: [os.close(fd) for fd in (r, w)])
    return r, w


def sigterm_ends(p, what):
    t = time.monotonic()
    p.signal(signal.SIGTERM)
    rc = p.wait(10)
    h.check(rc is not None, f"{what}: the proxy ignored SIGTERM for 10 s")
    h.check(rc == 0, f"{what}: exit status {rc} after SIGTERM, expected 0")
    return time.monotonic() - t


def stdout_full():
    echo = h.EchoServer(name="echo")
    r, w = full_pipe()
    argv = h.proxy_argv("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0))
    p = h.Proxy(argv, {"ARCTIC_STATS_INTERVAL_MS": 10, "ARCTIC_STATS_FORMAT": "json"},
                read_stdout=False, stdout=w)
    p.wait_ready(10)
    s = p.connect()
    for i in range(5):
        time.sleep(0.2)  # 20 stats lines, none of which fits
        h.roundtrip(s, f"stdout full {i}".encode(), what=f"round trip {i} with stdout full")
    s.close()
    took = sigterm_ends(p, "stdout full")
    err = p.stderr_text()
    h.check("shutdown complete" in err, f"no 'shutdown complete' line: {err!r}")
    h.check("stats lines dropped: stdout was not being read" in err,
            f"no line about the dropped stats lines: {err!r}")
    h.log(f"stdout full: relayed, SIGTERM ended the proxy in {took:.2f} s")


def stdout_full_other_user():
    """stdout a full pipe the proxy may not reopen (run as nobody, the pipe is root's): the
    shared open file description itself is made non-blocking while the proxy serves, and
    its flags are put back at exit."""
    nobody, why = h.as_nobody()
    if nobody is None:
        h.log(f"skipped the other-user case: {why}")
        return
    echo = h.EchoServer(name="echo")
    r, w = full_pipe()
    argv = nobody + h.proxy_argv("127.0.0.1:0", echo.addr_str,
                                 *h.pos(upstream_test_timeout_secs=0))
    p = h.Proxy(argv, {"ARCTIC_STATS_INTERVAL_MS": 10, "ARCTIC_STATS_FORMAT": "json"},
                read_stdout=False, stdout=w)
    p.wait_ready(10)
    s = p.connect()
    time.sleep(0.5)
    h.roundtrip(s, b"other user", what="round trip with stdout full (other user)")
    h.check(not os.get_blocking(w), "the proxy (as nobody) left stdout's shared description "
            "blocking: it cannot reopen root's pipe, so it must set O_NONBLOCK on it")
    s.close()
    took = sigterm_ends(p, "stdout full, other user")
    h.check(os.get_blocking(w), "the shared description of stdout is still non-blocking "
            "after the proxy exited: its flags must be put back")
    h.log(f"stdout full, proxy as nobody: shared description non-blocking while serving, "
          f"restored at exit; SIGTERM ended the proxy in {took:.2f} s")


def other_user_failed_start():
    """As above, but the start fails (the upstream check finds nothing listening): the
    flags of the shared description must be put back on that way out too, or the shell
    and every later program on that pipe or terminal would get EAGAIN."""
    nobody, why = h.as_nobody()
    if nobody is None:
        h.log(f"skipped the failed-start case: {why}")
        return
    _, dead = h.bound_unused_port()  # nothing listens here
    r, w = os.pipe()
    h.add_cleanup(lambda: [os.close(fd) for fd in (r, w)])
    argv = nobody + h.proxy_argv("127.0.0.1:0", f"127.0.0.1:{dead}",
                                 *h.pos(upstream_test_timeout_secs=1))
    p = h.Proxy(argv, read_stdout=False, stdout=w)
    rc = p.wait(10)
    h.check(rc == 1, f"failed start (as nobody): exit status {rc}, expected 1")
    h.check("upstream check" in p.stderr_text(),
            f"failed start: no upstream check error: {p.stderr_text()!r}")
    h.check(os.get_blocking(w), "the shared description of stdout is non-blocking after a "
            "failed start: its flags must be put back on every way out")
    h.log("failed start as nobody: exit 1, stdout's shared description blocking again")


def terminal_stopped():
    """stdout a terminal (a pseudo-terminal here) whose output is stopped, as Ctrl-S does."""
    import pty
    import termios
    echo = h.EchoServer(name="echo")
    master, slave = pty.openpty()
    h.add_cleanup(lambda: [os.close(fd) for fd in (master, slave)])
    termios.tcflow(slave, termios.TCOOFF)  # output stopped: writes queue, then block
    argv = h.proxy_argv("127.0.0.1:0", echo.addr_str, *h.pos(upstream_test_timeout_secs=0))
    p = h.Proxy(argv, {"ARCTIC_STATS_INTERVAL_MS": 10, "ARCTIC_STATS_FORMAT": "json"},
                read_stdout=False, stdout=slave)
    p.wait_ready(10)
    s = p.connect()
    for i in range(5):
        time.sleep(0.2)  # 20 stats lines of about 1 KB each: the terminal's queue fills
        h.roundtrip(s, f"terminal stopped {i}".encode(), what=f"round trip {i}, tty stopped")
    s.close()
    took = sigterm_ends(p, "stdout a stopped terminal")
    err = p.stderr_text()
    h.check("stats lines dropped: stdout was not being read" in err,
            f"no line about the dropped stats lines: {err!r}")
    h.log(f"stdout a stopped terminal: relayed, SIGTERM ended the proxy in {took:.2f} s")


def stderr_full():
    _, dead = h.bound_unused_port()  # nothing listens here
    r, w = full_pipe()
    argv = h.proxy_argv("127.0.0.1:0", f"127.0.0.1:{dead}",
                        *h.pos(upstream_test_timeout_secs=0))
    p = h.Proxy(argv, {"ARCTIC_WORKERS": 1, "ARCTIC_STATS_INTERVAL_MS": 100}, stderr=w)
    p.wait_stats(lambda st: True, 10, "a first stats line (stderr is full)")
    port = p.listen_port()  # the 'listening on' line went to the full stderr
    for i in range(3):
        try:
            c = h.connect(("127.0.0.1", port))
        except ConnectionResetError:
            continue  # closed (RST) before connect() returned
        c.settimeout(5)
        try:
            got = c.recv(1)  # b"" or a reset: closed once connect() upstream fails
        except ConnectionResetError:
            got = b""
        except socket.timeout:
            h.fail(f"connection {i} to a dead upstream was not closed within 5 s: the "
                   f"worker is stuck (its log line about the failed connect went to a full "
                   f"stderr)")
        h.check(got == b"", f"connection {i}: got {got!r} from a dead upstream")
        c.close()
    p.wait_stats(lambda st: st.err >= 3, 5, "three failed upstream connects counted")
    # From here a reader drains stderr: the lines of the shutdown get through, and one of
    # them counts the lines the full pipe cost.
    got, done = bytearray(), threading.Event()

    def drain():
        while not done.is_set() or select.select([r], [], [], 0)[0]:
            if select.select([r], [], [], 0.05)[0]:
                got.extend(os.read(r, 65536))
    t = threading.Thread(target=drain)
    t.start()
    try:
        took = sigterm_ends(p, "stderr full")
    finally:
        done.set()
        t.join()
    text = got.decode(errors="replace")
    m = re.search(r"arctic-proxy: (\d+) log lines? dropped: stderr was not being read", text)
    h.check(m is not None, f"stderr full: no count of the dropped log lines at exit; the "
                           f"stderr read after SIGTERM ends with {text[-300:]!r}")
    # at least the start-up lines (banner, settings, listening) and one failed connect
    h.check(int(m.group(1)) >= 4, f"stderr full: {m.group(1)} log lines counted as dropped, "
                                  f"expected at least 4")
    h.check("shutdown complete" in text, "stderr full: no 'shutdown complete' once read")
    h.log(f"stderr full: three failed upstream connects (their log line dropped) were each "
          f"closed and counted; SIGTERM ended the proxy in {took:.2f} s; at exit it said "
          f"{m.group(1)} log lines were dropped")


def main():
    stdout_full()
    stdout_full_other_user()
    other_user_failed_start()
    terminal_stopped()
    stderr_full()


h.run(main)
