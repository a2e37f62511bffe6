"""Shared helpers for the arctic-proxy integration tests (Python 3.11, stdlib only).

Every test file does:

    import harness as h
    def main(): ...
    h.run(main)

h.run() turns TestFailure into exit 1, TestSkip into exit 77, success into exit 0,
arms a watchdog (default 100 s) and always runs the registered clean-ups (proxies are
killed, servers stopped) - also on failure.

Nothing here uses fixed ports: the proxy listens on port 0 and the real address is taken
from its stderr line `listening on <addr>`; upstream servers bind port 0 as well.
"""

import collections
import ctypes
import errno
import faulthandler
import functools
import hashlib
import json
import os
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

STATS_RE = re.compile(
    r"⚡\s+(\d+) active \|\s+(\d+) err \|\s+(\d+) rej \|\s+([\d.]+) Gbps \|\s+([\d.]+) GB total")
LISTEN_RE = re.compile(r"listening on (\S+)")

EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 77

T0 = time.monotonic()
KiB = 1024
MiB = 1024 * 1024

Stats = collections.namedtuple("Stats", "active err rej gbps gb")


# ----------------------------------------------------------------------------------------
# result handling
# ----------------------------------------------------------------------------------------

class TestFailure(Exception):
    pass


class TestSkip(Exception):
    pass


def fail(msg):
    raise TestFailure(msg)


def skip(msg):
    raise TestSkip(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        print(f"[{time.monotonic() - T0:8.3f}] {msg}", flush=True)


_cleanups = []
_cleanup_lock = threading.Lock()
_proxies = []


def add_cleanup(fn):
    with _cleanup_lock:
        _cleanups.append(fn)


def _run_cleanups():
    while True:
        with _cleanup_lock:
            if not _cleanups:
                return
            fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # clean-up must never mask the result
            print(f"(cleanup error ignored: {e!r})", flush=True)


def _kill_all_proxies():
    for p in list(_proxies):
        try:
            if p.proc.poll() is None:
                p.proc.kill()
        except Exception:
            pass


def _dump_proxies():
    for p in list(_proxies):
        try:
            rc = p.proc.poll()
            print(f"--- proxy pid {p.proc.pid} argv={p.argv[1:]} env={p.env_extra} "
                  f"exit={'running' if rc is None else rc}", flush=True)
            for line in p.stderr_lines[-25:]:
                print(f"    stderr| {line}")
            for line in p.stdout_lines[-5:]:
                print(f"    stdout| {line}")
        except Exception:
            pass
    sys.stdout.flush()


def run(main, timeout=100.0):
    """Run main(); exit 0 pass / 1 fail / 77 skip. Never returns."""
    def on_watchdog():
        print(f"FAIL: test did not finish within its {timeout:.0f} s watchdog "
              f"(something hung); thread dump follows", flush=True)
        try:
            faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
            _dump_proxies()
        finally:
            _kill_all_proxies()
            sys.stdout.flush()
            os._exit(EXIT_FAIL)

    wd = threading.Timer(timeout, on_watchdog)
    wd.daemon = True
    wd.start()
    rc = EXIT_FAIL
    name = os.path.basename(sys.argv[0])
    try:
        main()
        rc = EXIT_PASS
    except TestSkip as e:
        print(f"SKIP: {name}: {e}", flush=True)
        rc = EXIT_SKIP
    except TestFailure as e:
        print(f"FAIL: {name}: {e}", flush=True)
        _dump_proxies()
        rc = EXIT_FAIL
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        print(f"FAIL: {name}: unexpected exception (see traceback above)", flush=True)
        _dump_proxies()
        rc = EXIT_FAIL
    finally:
        _run_cleanups()
        _kill_all_proxies()
        wd.cancel()
    if rc == EXIT_PASS:
        print(f"PASS: {name} ({time.monotonic() - T0:.1f} s)", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


# ----------------------------------------------------------------------------------------
# environment helpers
# ----------------------------------------------------------------------------------------

def proxy_bin():
    b = os.environ.get("ARCTIC_PROXY_BIN")
    if not b:
        root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
        b = os.path.join(root, "build", "arctic-proxy")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        fail(f"proxy binary not found or not executable: {b!r} (set ARCTIC_PROXY_BIN)")
    return b


def ipv6_available():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        s.listen(1)
        c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        c.settimeout(2)
        c.connect(s.getsockname()[:2])
        c.close()
        return True
    except OSError:
        return False
    finally:
        s.close()


def raise_nofile(want=None):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else min(want, hard)
    if hard == resource.RLIM_INFINITY and want is None:
        target = 1 << 20
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fmt_addr(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addr(s):
    """'127.0.0.1:41234' or '[::1]:41234' -> (host, port, family)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", s)
    if m:
        return m.group(1), int(m.group(2)), socket.AF_INET6
    m = re.fullmatch(r"([^:\[\]]+):(\d+)", s)
    if m:
        return m.group(1), int(m.group(2)), socket.AF_INET
    raise ValueError(f"cannot parse address {s!r}")


def bound_unused_port(host="127.0.0.1"):
    """A socket bound to host:0 but NOT listening: connects to it are refused (RST) and
    nobody else can take the port while we hold it. Returns (sock, port)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((host, 0))
    add_cleanup(s.close)
    return s, s.getsockname()[1]


# ----------------------------------------------------------------------------------------
# deterministic data
# ----------------------------------------------------------------------------------------

PERIOD = 1_048_573  # prime: chunk-sized duplications/drops never line up with the period
_base_cache = []


def _base():
    if not _base_cache:
        b = random.Random(0xA2C71C).randbytes(PERIOD)
        _base_cache.append(b + b)
    return _base_cache[0]


def _start_offset(seed):
    return (seed * 2654435761 + 12345) % PERIOD


class Pattern:
    """Deterministic byte stream identified by seed; read(n) gives the next <=n bytes."""

    def __init__(self, seed, total):
        self.seed = seed
        self.pos = _start_offset(seed)
        self.remaining = total
        self.base = memoryview(_base())

    def read(self, n):
        n = min(n, self.remaining, PERIOD)
        if n <= 0:
            return b""
        v = self.base[self.pos:self.pos + n]
        self.pos = (self.pos + n) % PERIOD
        self.remaining -= n
        return v


def pattern_bytes(seed, n):
    p = Pattern(seed, n)
    out = bytearray()
    while True:
        c = p.read(1 << 20)
        if not c:
            return bytes(out)
        out += c


@functools.lru_cache(maxsize=None)
def pattern_sha256(seed, n):
    h = hashlib.sha256()
    p = Pattern(seed, n)
    while True:
        c = p.read(1 << 20)
        if not c:
            return h.hexdigest()
        h.update(c)


class Verifier:
    """Hashes a received stream and compares it byte-for-byte with Pattern(seed)."""

    def __init__(self, seed=None):
        self.seed = seed
        self.n = 0
        self.sha = hashlib.sha256()
        self.first_mismatch = None
        self.pos = _start_offset(seed) if seed is not None else 0
        self.base = _base() if seed is not None else None

    def feed(self, data):
        if not data:
            return
        self.sha.update(data)
        if self.seed is not None and self.first_mismatch is None:
            mv = memoryview(data)
            off = 0
            while off < len(mv):
                k = min(len(mv) - off, PERIOD)
                exp = self.base[self.pos:self.pos + k]
                got = mv[off:off + k]
                if got != exp:
                    for i in range(k):
                        if got[i] != exp[i]:
                            self.first_mismatch = self.n + off + i
                            break
                    break
                self.pos = (self.pos + k) % PERIOD
                off += k
        self.n += len(data)

    def hexdigest(self):
        return self.sha.hexdigest()

    def problem(self, expected_len):
        """None if the stream is exactly Pattern(seed, expected_len), else a description."""
        if self.first_mismatch is not None:
            return (f"data corrupted: first wrong byte at offset {self.first_mismatch} "
                    f"(received {self.n} of {expected_len} bytes)")
        if self.n != expected_len:
            return f"byte count {self.n} != expected {expected_len}"
        exp = pattern_sha256(self.seed, expected_len)
        if self.hexdigest() != exp:
            return f"sha256 {self.hexdigest()} != expected {exp}"
        return None


# ----------------------------------------------------------------------------------------
# the proxy process
# ----------------------------------------------------------------------------------------

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except Exception:  # pragma: no cover
    _prctl = None


def _child_setup():
    # PR_SET_PDEATHSIG: the proxy dies with the test even if the test is SIGKILLed.
    if _prctl is not None:
        _prctl(1, signal.SIGKILL, 0, 0, 0)


def as_nobody():
    """(argv prefix that runs a command as user nobody, None) or (None, why it cannot):
    needs root, setpriv, and a proxy binary that nobody may run."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None, "needs root and setpriv to run the proxy as an unprivileged user"
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    r = subprocess.run(prefix + [proxy_bin(), "--version"], capture_output=True, timeout=10)
    if r.returncode != 0:
        return None, (f"user nobody cannot run {proxy_bin()} (a directory on its path is "
                      f"closed to others?): {r.stderr.decode(errors='replace').strip()[:200]}")
    return prefix, None


# Syscall numbers for syscall_faults(), per machine (the filter checks the architecture).
_SECCOMP = {
    "x86_64": (0xC000003E, {"setsockopt": 54, "splice": 275, "io_uring_setup": 425,
                            "io_uring_enter": 426, "io_uring_register": 427}),
    "aarch64": (0xC00000B7, {"setsockopt": 208, "splice": 76, "io_uring_setup": 425,
                             "io_uring_enter": 426, "io_uring_register": 427}),
}


def syscall_faults(rules):
    """A seccomp filter that makes the kernel fail some calls of the proxy, for error paths
    no real peer can reach: rules are (syscall name, {argument index: value}, errno name),
    e.g. ("setsockopt", {1: IPPROTO_TCP, 2: TCP_QUICKACK}, "EPERM"); a call matching every
    given argument (their low 32 bits) fails with that errno, every other call runs. Returns
    (a preexec function for Proxy(preexec=...), None) or (None, why this machine cannot)."""
    if _prctl is None or os.uname().machine not in _SECCOMP:
        return None, f"no seccomp filter for this machine ({os.uname().machine})"
    arch, nrs = _SECCOMP[os.uname().machine]
    LD, JEQ, RET = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    ALLOW, ERRNO = 0x7FFF0000, 0x00050000
    body = []
    for name, args, err in rules:
        block = [(LD, 0, 0, 0), (JEQ, 0, None, nrs[name])]  # seccomp_data.nr
        for i, v in sorted(args.items()):
            block += [(LD, 0, 0, 16 + 8 * i), (JEQ, 0, None, v)]  # args[i], low half
        block.append((RET, 0, 0, ERRNO | getattr(errno, err)))
        # a mismatch jumps to the next rule
        body += [(c, jt, len(block) - j - 1 if jf is None else jf, k)
                 for j, (c, jt, jf, k) in enumerate(block)]
    prog = [(LD, 0, 0, 4), (JEQ, 0, len(body), arch)] + body + [(RET, 0, 0, ALLOW)]
    filt = (ctypes.c_uint8 * (8 * len(prog)))()
    for n, ins in enumerate(prog):
        struct.pack_into("<HBBI", filt, 8 * n, *ins)

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Fprog(len(prog), ctypes.addressof(filt))
    keep = (filt, fprog)  # alive until the child has installed them

    def preexec():
        _child_setup()
        ul = ctypes.c_ulong
        # PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER
        if (_prctl(38, ul(1), ul(0), ul(0), ul(0)) != 0 or
                _prctl(22, ul(2), ul(ctypes.addressof(keep[1])), ul(0), ul(0)) != 0):
            os._exit(126)

    return preexec, None


def _child_close_std():
    _child_setup()
    for fd in (0, 1, 2):
        os.close(fd)


def _parse_stats(line):
    m = STATS_RE.search(line)
    if not m:
        return None
    return Stats(int(m.group(1)), int(m.group(2)), int(m.group(3)),
                 float(m.group(4)), float(m.group(5)))


class Proxy:
    def __init__(self, argv, env_extra=None, read_stdout=True, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, close_std=False, preexec=None):
        """close_std: the proxy starts with descriptors 0, 1 and 2 closed (no output is
        read; see listen_port()). preexec: runs in the child before exec (it must also do
        what _child_setup does; see syscall_faults())."""
        self.argv = argv
        self.env_extra = dict(env_extra or {})
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCTIC_")}
        # TEST_PROXY_ENV="ARCTIC_SQPOLL=1 ..." runs a whole test in another ring mode
        # (registered by CMake as <test>[mode]); the test's own settings win.
        for kv in os.environ.get("TEST_PROXY_ENV", "").split():
            k, _, v = kv.partition("=")
            env[k] = v
        env.update({k: str(v) for k, v in self.env_extra.items()})
        self.stderr_lines = []
        self.stderr_times = []
        self.stdout_lines = []
        self.stdout_times = []
        self._cond = threading.Condition()
        self._stderr_eof = False
        self.addr_str = None
        self.host = None
        self.port = None
        self.family = None
        main_thread = threading.current_thread() is threading.main_thread()
        if close_std:
            stdout = stderr = None
            child = _child_close_std
        elif preexec is not None:
            child = preexec
        else:
            child = _child_setup if main_thread else None
        self.proc = subprocess.Popen(
            argv, stdin=None if close_std else subprocess.DEVNULL, stdout=stdout,
            stderr=stderr, env=env, close_fds=True, preexec_fn=child)
        _proxies.append(self)
        add_cleanup(self.stop)
        self._threads = []
        if self.proc.stderr is not None:
            t = threading.Thread(target=self._reader, args=(self.proc.stderr, True),
                                 daemon=True)
            t.start()
            self._threads.append(t)
        else:
            self._stderr_eof = True
        if read_stdout and self.proc.stdout is not None:
            t = threading.Thread(target=self._reader, args=(self.proc.stdout, False),
                                 daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def pid(self):
        return self.proc.pid

    def _reader(self, pipe, is_err):
        try:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    if is_err:
                        self.stderr_lines.append(line)
                        self.stderr_times.append(time.monotonic())
                    else:
                        self.stdout_lines.append(line)
                        self.stdout_times.append(time.monotonic())
                    self._cond.notify_all()
        except (ValueError, OSError):
            pass
        finally:
            if is_err:
                with self._cond:
                    self._stderr_eof = True
                    self._cond.notify_all()

    # -- readiness -------------------------------------------------------------------
    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.stderr_lines:
                    m = LISTEN_RE.search(line)
                    if m:
                        # keep the exact capture (test_readiness checks it is exactly the
                        # address); tolerate trailing punctuation here so that the other
                        # tests can still test behaviour
                        self.listen_capture = m.group(1)
                        self.listen_line = line
                        self.addr_str = m.group(1).rstrip(",;.")
                        try:
                            self.host, self.port, self.family = parse_addr(self.addr_str)
                        except ValueError:
                            fail(f"cannot parse the address in stderr line {line!r}")
                        return self
                if self._stderr_eof or self.proc.poll() is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        rc = self.proc.poll()
        if rc is None:
            time.sleep(0.2)
            rc = self.proc.poll()
        fail(f"proxy {self.argv[1:]} env={self.env_extra} not ready within {timeout:.0f} s "
             f"(no stderr line matching 'listening on <addr>'); exit status "
             f"{'still running' if rc is None else rc}; stderr: {self.stderr_text()!r}")

    @property
    def addr(self):
        return (self.host, self.port)

    # -- output ----------------------------------------------------------------------
    def stderr_text(self):
        with self._cond:
            return "\n".join(self.stderr_lines)

    def stderr_since(self, t):
        with self._cond:
            return [l for l, lt in zip(self.stderr_lines, self.stderr_times) if lt >= t]

    def wait_stderr(self, regex, timeout, after=None):
        """Wait for a stderr line (arriving at/after monotonic time `after`) matching regex."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line, lt in zip(self.stderr_lines, self.stderr_times):
                    if (after is None or lt >= after) and rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self._stderr_eof:
                    return None
                self._cond.wait(min(left, 0.2))

    def json_total(self):
        """The "total" object of the last ARCTIC_STATS_FORMAT=json line, None before one."""
        with self._cond:
            lines = [l for l in self.stdout_lines if l.startswith("{")]
        return json.loads(lines[-1])["total"] if lines else None

    def stats_list(self, after=None):
        """[(monotonic time, Stats)] of every stats line (optionally only after a time)."""
        out = []
        with self._cond:
            for line, lt in zip(self.stdout_lines, self.stdout_times):
                if after is not None and lt < after:
                    continue
                s = _parse_stats(line)
                if s:
                    out.append((lt, s))
        return out

    def stats(self):
        """The latest stats line, parsed (Stats namedtuple) or None."""
        with self._cond:
            for line in reversed(self.stdout_lines):
                s = _parse_stats(line)
                if s:
                    return s
        return None

    def wait_stats(self, pred, timeout, what, after=None):
        """Wait for a stats line (received at/after `after`) for which pred(stats) is true."""
        deadline = time.monotonic() + timeout
        if after is None:
            after = time.monotonic()
        with self._cond:
            while True:
                last = None
                for line, lt in zip(self.stdout_lines, self.stdout_times):
                    if lt < after:
                        continue
                    s = _parse_stats(line)
                    if s:
                        last = s
                        if pred(s):
                            return s
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        fail(f"no stats line showed {what} within {timeout:.0f} s; last stats line: "
             f"{last if last else self.stats()}")

    # -- process ---------------------------------------------------------------------
    def alive(self):
        return self.proc.poll() is None

    def check_alive(self, when=""):
        rc = self.proc.poll()
        if rc is not None:
            fail(f"proxy died {when}: exit status {rc}; stderr tail: "
                 f"{self.stderr_lines[-10:]!r}")

    def fd_count(self):
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except FileNotFoundError:
            fail("proxy process gone while counting its fds")

    def fd_list(self):
        out = []
        d = f"/proc/{self.proc.pid}/fd"
        for n in sorted(os.listdir(d), key=int):
            try:
                out.append(f"{n}->{os.readlink(os.path.join(d, n))}")
            except OSError:
                pass
        return out

    def listen_port(self, timeout=10.0):
        """The port the proxy listens on, read from its socket inodes and /proc/net/tcp
        (for a proxy whose 'listening on' line cannot be read)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive("while looking for its listening socket")
            inodes = {e.split("socket:[")[1].rstrip("]") for e in self.fd_list()
                      if "socket:[" in e}
            with open("/proc/net/tcp") as f:
                for row in f.readlines()[1:]:
                    col = row.split()
                    if col[3] == "0A" and col[9] in inodes:
                        return int(col[1].split(":")[1], 16)
            if time.monotonic() > deadline:
                fail(f"the proxy has no listening socket in /proc/net/tcp after {timeout} s")
            time.sleep(0.05)

    def wait_fd_count(self, target, timeout=5.0, what="fd count"):
        deadline = time.monotonic() + timeout
        n = self.fd_count()
        while n > target and time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.fd_count()
        if n > target:
            fail(f"{what}: proxy still has {n} fds after {timeout:.0f} s, baseline {target}; "
                 f"fds: {self.fd_list()}")
        return n

    def stable_fd_count(self, settle=0.3):
        """fd count once it stopped changing (workers may open things lazily)."""
        prev = self.fd_count()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            time.sleep(settle)
            cur = self.fd_count()
            if cur == prev:
                return cur
            prev = cur
        return prev

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except FileNotFoundError:
            fail("proxy process gone while reading its RSS")
        return 0

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Exit status (negative = killed by signal). Fails the test on timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            fail(f"proxy did not exit within {timeout:.1f} s")

    def wait_exit(self, timeout):
        """Exit status or None if still running after timeout (no failure)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def connect(self, timeout=10.0, rcvbuf=None):
        return connect(self.addr, timeout=timeout, rcvbuf=rcvbuf)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(2)
        for p in (self.proc.stdout, self.proc.stderr):
            try:
                if p:
                    p.close()
            except OSError:
                pass


POSITIONAL_NAMES = ("max_connections", "timeout_secs", "buffer_size", "backlog",
                    "reject_sleep_ms", "shutdown_drain_secs", "upstream_test_timeout_secs")


def pos(max_connections=1000, timeout_secs=5, buffer_size=65536, backlog=1024,
        reject_sleep_ms=10, shutdown_drain_secs=5, upstream_test_timeout_secs=3):
    """All positional arguments after LISTEN UPSTREAM, explicitly (test-friendly defaults)."""
    return [max_connections, timeout_secs, buffer_size, backlog, reject_sleep_ms,
            shutdown_drain_secs, upstream_test_timeout_secs]


def proxy_argv(listen, upstream, *positional):
    return [proxy_bin(), listen, upstream] + [str(p) for p in positional]


def start_proxy(listen, upstream, *positional, env=None, ready=True, ready_timeout=20.0,
                read_stdout=True):
    """Start arctic-proxy LISTEN UPSTREAM [positional...] and wait for `listening on`.

    Every ARCTIC_* variable of the test's own environment (ARCTIC_PROXY_BIN...) is removed;
    `env` adds variables."""
    p = Proxy(proxy_argv(listen, upstream, *positional), env, read_stdout=read_stdout)
    if ready:
        p.wait_ready(ready_timeout)
    return p


def run_proxy_once(args, env=None, timeout=10.0, preexec=None):
    """Run the binary with args, expecting it to exit by itself (preexec: as for Proxy).
    Returns (exit status, stdout text, stderr text). Fails the test if it keeps running."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ARCTIC_")}
    e.update({k: str(v) for k, v in (env or {}).items()})
    args = [str(a) for a in args]
    p = subprocess.Popen([proxy_bin()] + args, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                         preexec_fn=preexec or _child_setup)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        fail(f"`arctic-proxy {' '.join(map(repr, args))}` env={env} did not exit within "
             f"{timeout:.0f} s (expected it to exit by itself); stderr so far: "
             f"{err.decode('utf-8', 'replace')!r}")
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# ----------------------------------------------------------------------------------------
# client socket helpers
# ----------------------------------------------------------------------------------------

def pipe_fds(p):
    """Pipe descriptors the proxy holds (fds 0-2 are the harness's own pipes to it)."""
    return sum(1 for e in p.fd_list() if "->pipe:" in e and int(e.split("->")[0]) > 2)


def start_proxy_limited(limit, upstream, env):
    """The proxy under `prlimit --nofile=limit:limit` (skips without prlimit), ready; returns
    (proxy, the max_connections it capped itself to)."""
    if not shutil.which("prlimit"):
        skip("prlimit not installed")
    argv = ["prlimit", f"--nofile={limit}:{limit}"] + proxy_argv(
        "127.0.0.1:0", upstream, *pos(upstream_test_timeout_secs=0))
    p = Proxy(argv, env)
    p.wait_ready(10)
    m = re.search(r"max_connections capped at (\d+)", "\n".join(p.stderr_lines))
    check(m, f"no 'max_connections capped' line: {p.stderr_lines[:4]}")
    return p, int(m.group(1))


def check_all_admitted(p, server, cap, limit):
    """Connections up to cap are open: every one must have been accepted and connected
    upstream, with no descriptor error (EMFILE) and the proxy under its limit. Needs
    ARCTIC_STATS_FORMAT=json. Returns (last stats total, descriptors held)."""
    server.wait_accepted(cap, timeout=20)
    time.sleep(0.5)
    tot = p.json_total()
    fds = len(p.fd_list())
    check(tot["err_accept"] == 0 and tot["err_other"] == 0,
          f"descriptor errors within max_connections ({cap}): err_accept="
          f"{tot['err_accept']} err_other={tot['err_other']}")
    check(tot["active"] == cap, f"{tot['active']} connections active, expected {cap}")
    check(fds < limit, f"the proxy holds {fds} descriptors at the limit {limit}")
    return tot, fds


def connect(addr, timeout=10.0, rcvbuf=None):
    """A connected client socket; rcvbuf pins its SO_RCVBUF before the handshake (a reader
    that stops then holds little: the bytes in flight stay in the proxy)."""
    host, port = addr[0], addr[1]
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    add_cleanup(s.close)
    return s


def cpu_seconds(pid):
    """User + system CPU time of process pid so far, in seconds."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def tcp_segs_in(sock):
    """Segments the kernel received on this TCP socket (TCP_INFO tcpi_segs_in, Linux >= 4.2)."""
    # struct tcp_info: tcpi_segs_out at byte 136, tcpi_segs_in at 140
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    check(len(info) >= 144, f"TCP_INFO too short for tcpi_segs_in: {len(info)} bytes")
    return struct.unpack_from("I", info, 140)[0]


def set_rst_on_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def abort(sock):
    """Close with RST (SO_LINGER 0)."""
    try:
        set_rst_on_close(sock)
    except OSError:
        pass
    sock.close()


def push(sock, secs):
    """Send for secs seconds, as fast as the proxy takes bytes: a peer that never reads has
    them fill its socket buffers and the proxy's buffer or pipe on the way."""
    sock.setblocking(False)
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            sock.send(b"u" * 65536)
        except BlockingIOError:
            time.sleep(0.02)
    sock.setblocking(True)


def recv_exact(sock, n, timeout=10.0, what="data"):
    sock.settimeout(timeout)
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            fail(f"timeout after {timeout:.0f} s waiting for {what}: got {len(buf)} of {n} bytes")
        sock.settimeout(left)
        try:
            c = sock.recv(min(n - len(buf), 1 << 20))
        except socket.timeout:
            continue
        except OSError as e:
            fail(f"{what}: recv failed with {errno_name(e)} after {len(buf)} of {n} bytes")
        if not c:
            fail(f"{what}: connection closed (EOF) after {len(buf)} of {n} bytes")
        buf += c
    return bytes(buf)


def errno_name(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    if getattr(e, "errno", None):
        return errno.errorcode.get(e.errno, str(e.errno))
    return repr(e)


def wait_closed(sock, timeout):
    """Wait until the peer ends the connection. Returns (kind, seconds, extra_bytes) where kind is
    'eof' (FIN), 'reset' (ECONNRESET/EPIPE...) or 'timeout'. Data arriving meanwhile is
    counted in extra_bytes."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    extra = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout", time.monotonic() - t0, extra
        sock.settimeout(left)
        try:
            c = sock.recv(1 << 16)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return "reset", time.monotonic() - t0, extra
        except OSError as e:
            return f"error:{errno_name(e)}", time.monotonic() - t0, extra
        if not c:
            return "eof", time.monotonic() - t0, extra
        extra += len(c)


def connect_expect_close(addr, timeout):
    """Connect to addr and wait for the peer to end the connection, for connections the
    proxy is expected to close at once. A reset that arrives before connect() returns
    counts as 'reset' (the proxy can be faster than our connect). Returns
    (kind, seconds, extra_bytes, sock or None)."""
    t0 = time.monotonic()
    try:
        s = connect(addr, timeout=timeout)
    except ConnectionResetError:
        return "reset", time.monotonic() - t0, 0, None
    kind, dt, extra = wait_closed(s, timeout)
    return kind, time.monotonic() - t0, extra, s


def exchange(sock, data, expect_len, timeout=30.0, shut_wr=False, what="exchange"):
    """Send `data` while receiving `expect_len` bytes (no deadlock for big payloads).
    Returns the received bytes. shut_wr: shutdown(SHUT_WR) once everything is sent."""
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    mv = memoryview(data)
    sent = 0
    got = bytearray()
    deadline = time.monotonic() + timeout
    try:
        sel.register(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if len(mv) else 0))
        if not len(mv) and shut_wr:
            sock.shutdown(socket.SHUT_WR)
        while len(got) < expect_len or sent < len(mv):
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"{what}: timeout after {timeout:.0f} s: sent {sent}/{len(mv)}, "
                     f"received {len(got)}/{expect_len}")
            for key, ev in sel.select(min(left, 0.5)):
                if ev & selectors.EVENT_WRITE and sent < len(mv):
                    try:
                        sent += sock.send(mv[sent:sent + (1 << 20)])
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        fail(f"{what}: send failed with {errno_name(e)} after {sent}/{len(mv)} "
                             f"bytes sent, {len(got)}/{expect_len} received")
                    if sent == len(mv):
                        sel.modify(sock, selectors.EVENT_READ)
                        if shut_wr:
                            sock.shutdown(socket.SHUT_WR)
                if ev & selectors.EVENT_READ:
                    try:
                        c = sock.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        fail(f"{what}: recv failed with {errno_name(e)} after {len(got)}/"
                             f"{expect_len} bytes received ({sent}/{len(mv)} sent)")
                    if not c:
                        if len(got) < expect_len:
                            fail(f"{what}: unexpected EOF after {len(got)}/{expect_len} bytes "
                                 f"received ({sent}/{len(mv)} sent)")
                        else:
                            sel.unregister(sock)
                            break
                    got += c
                    if len(got) > expect_len:
                        fail(f"{what}: received {len(got)} bytes, more than the "
                             f"{expect_len} expected")
    finally:
        sel.close()
        sock.setblocking(True)
    return bytes(got)


def roundtrip(sock, data, timeout=30.0, what="round trip"):
    got = exchange(sock, data, len(data), timeout=timeout, what=what)
    if got != data:
        i = next((k for k in range(len(data)) if got[k] != data[k]), None)
        fail(f"{what}: echoed data differs from sent data at offset {i} (len {len(data)})")
    return got


# ----------------------------------------------------------------------------------------
# upstream servers
# ----------------------------------------------------------------------------------------

def _listen_sock(host, backlog, sock=None):
    if sock is None:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
    sock.listen(backlog)
    return sock


class ConnRecord:
    """What an upstream saw on one accepted connection."""

    def __init__(self, idx, peer):
        self.idx = idx
        self.peer = peer
        self.t_accept = time.monotonic()
        self.bytes_in = 0
        self.sha_in = hashlib.sha256()
        self.data_in = bytearray()  # only kept when the handler wants it
        self.end_in = None          # 'eof' | 'reset' | 'timeout' | 'error:X' | 'stopped'
        self.t_end_in = None
        self.bytes_out = 0
        self.error_out = None
        self.t_out_done = None
        self.info = {}
        self.done = threading.Event()

    def __repr__(self):
        return (f"<conn #{self.idx} in={self.bytes_in} end_in={self.end_in} "
                f"out={self.bytes_out} err_out={self.error_out} {self.info}>")


def read_to_end(conn, rec, keep=False, timeout=60.0, verifier=None, limit=None):
    """Read until EOF/reset/timeout; fills rec.bytes_in/sha_in/end_in."""
    conn.settimeout(timeout)
    while True:
        try:
            c = conn.recv(1 << 18)
        except socket.timeout:
            rec.end_in = "timeout"
            break
        except (ConnectionResetError, BrokenPipeError):
            rec.end_in = "reset"
            break
        except OSError as e:
            rec.end_in = f"error:{errno_name(e)}"
            break
        if not c:
            rec.end_in = "eof"
            break
        rec.bytes_in += len(c)
        rec.sha_in.update(c)
        if verifier is not None:
            verifier.feed(c)
        if keep:
            rec.data_in += c
        if limit is not None and rec.bytes_in >= limit:
            rec.end_in = "limit"
            break
    rec.t_end_in = time.monotonic()
    return rec.end_in


def send_pattern(conn, rec, seed, nbytes, rate=None, chunk=256 * KiB, stop_event=None):
    """Send Pattern(seed, nbytes), optionally paced at `rate` bytes/s. Sets rec.bytes_out and
    rec.error_out. Returns True when everything was sent."""
    pat = Pattern(seed, nbytes)
    t0 = time.monotonic()
    conn.settimeout(60.0)
    try:
        while True:
            if stop_event is not None and stop_event.is_set():
                rec.error_out = "stopped"
                return False
            c = pat.read(chunk)
            if not len(c):
                break
            conn.sendall(c)
            rec.bytes_out += len(c)
            if rate:
                ahead = t0 + rec.bytes_out / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    except socket.timeout:
        rec.error_out = "timeout"
        return False
    except (ConnectionResetError, BrokenPipeError) as e:
        rec.error_out = "reset"
        return False
    except OSError as e:
        rec.error_out = f"error:{errno_name(e)}"
        return False
    finally:
        rec.t_out_done = time.monotonic()
    return True


def read_command(conn, rec):
    """Reads the one-line command a scripted client sends first; None (and
    rec.end_in set) if the connection ends before the newline."""
    conn.settimeout(20)
    cmd = b""
    while not cmd.endswith(b"\n"):
        c = conn.recv(1)
        if not c:
            rec.end_in = "eof-before-command"
            return None
        cmd += c
    return cmd.strip().decode()


def _wait_accepted(server, n, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.accepted >= n:
            return
        time.sleep(0.02)
    fail(f"{server.name}: upstream accepted {server.accepted} connections, expected {n} "
         f"within {timeout:.0f} s")


class ThreadedServer:
    """Accept loop thread + one daemon thread per connection running handler(conn, rec)."""

    def __init__(self, handler, host="127.0.0.1", backlog=1024, sock=None, name="server"):
        self.handler = handler
        self.name = name
        self.sock = _listen_sock(host, backlog, sock)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.records = []
        self.accepted = 0
        self._lock = threading.Lock()
        self._conns = []
        self._threads = []
        self._stop = threading.Event()
        self.errors = []
        self.sock.settimeout(0.2)
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()
        add_cleanup(self.stop)

    @property
    def addr_str(self):
        return fmt_addr(self.host, self.port)

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            with self._lock:
                rec = ConnRecord(self.accepted, peer)
                self.accepted += 1
                self.records.append(rec)
                self._conns.append(conn)
            t = threading.Thread(target=self._run_handler, args=(conn, rec), daemon=True)
            with self._lock:
                self._threads.append(t)
            t.start()

    def _run_handler(self, conn, rec):
        try:
            self.handler(conn, rec)
        except Exception as e:
            rec.info["handler_exception"] = repr(e)
            self.errors.append(f"{self.name} conn #{rec.idx}: {e!r}")
        finally:
            try:
                conn.close()
            except OSError:
                pass
            rec.done.set()

    def wait_accepted(self, n, timeout=10.0):
        _wait_accepted(self, n, timeout)

    def wait_done(self, rec, timeout, what="upstream connection"):
        if not rec.done.wait(timeout):
            fail(f"{what} still open after {timeout:.0f} s: {rec}")

    def stop(self):
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(2)
        deadline = time.monotonic() + 3
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


# ---- handlers ----------------------------------------------------------------------

def sink_handler(keep=False, read_timeout=60.0):
    """Read and hash everything until EOF; record byte count / sha256 / how it ended."""
    def h(conn, rec):
        read_to_end(conn, rec, keep=keep, timeout=read_timeout)
    return h


def source_handler(nbytes, seed=1, end="close", rate=None, chunk=256 * KiB, delay=0.0,
                   read_after=True):
    """Send Pattern(seed, nbytes) then end with 'close' (FIN), 'shutdown' (half-close, then
    keep reading until the client's EOF) or 'rst' (SO_LINGER 0)."""
    def h(conn, rec):
        if delay:
            time.sleep(delay)
        ok = send_pattern(conn, rec, seed, nbytes, rate=rate, chunk=chunk)
        if end == "rst":
            set_rst_on_close(conn)
            return
        if end == "shutdown" and ok:
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if read_after:
                read_to_end(conn, rec)
    return h


def command_source_handler(nbytes, chunk=256 * KiB, after="return"):
    """For scripted downloads: a line `SRC <seed>` from the client is answered with
    Pattern(seed, nbytes). Then, after="return": the handler ends, reading nothing more (an
    upload from the client stalls); "hold": it waits for the client's EOF; "repeat": it answers
    further SRC lines, waiting for each as long as it takes, until EOF. A connection that sends
    no command (read_command's timeout) or another line is left alone."""
    def handler(conn, rec):
        while True:
            try:
                if after == "repeat":
                    conn.settimeout(None)
                    first = conn.recv(1)
                    if not first:
                        return
                    cmd = first.decode() + (read_command(conn, rec) or "")
                else:
                    cmd = read_command(conn, rec)
            except OSError:
                return
            if not cmd or not cmd.startswith("SRC "):
                return
            ok = send_pattern(conn, rec, int(cmd[4:]), nbytes, chunk=chunk)
            if after == "hold":
                try:
                    conn.recv(1)
                except OSError:
                    pass
            if after != "repeat" or not ok:
                return
    return handler


def reset_handler(read_bytes=0, delay=0.0, read_timeout=10.0):
    """Accept, optionally read read_bytes, sleep delay, then close with RST."""
    def h(conn, rec):
        if read_bytes:
            read_to_end(conn, rec, timeout=read_timeout, limit=read_bytes)
        if delay:
            time.sleep(delay)
        set_rst_on_close(conn)
        rec.info["rst_sent"] = time.monotonic()
    return h


def hold_handler():
    """Counting server connection: echo everything until EOF (so round trips work)."""
    def h(conn, rec):
        conn.settimeout(120)
        while True:
            try:
                c = conn.recv(65536)
            except socket.timeout:
                rec.end_in = "timeout"
                return
            except OSError:
                rec.end_in = "reset"
                return
            if not c:
                rec.end_in = "eof"
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            rec.bytes_in += len(c)
            try:
                conn.sendall(c)
            except OSError:
                rec.error_out = "reset"
                return
            rec.bytes_out += len(c)
    return h


def http_handler(body_for=None):
    """Tiny HTTP/1.1 keep-alive server: answers each request in order; body = the
    request target repeated/derived by body_for(path) (default: b'hello ' + path)."""
    if body_for is None:
        def body_for(path):
            return b"hello " + path.encode()

    def h(conn, rec):
        conn.settimeout(30)
        buf = bytearray()
        rec.info["requests"] = 0
        while True:
            while b"\r\n\r\n" not in buf:
                try:
                    c = conn.recv(65536)
                except OSError:
                    rec.end_in = "reset"
                    return
                if not c:
                    rec.end_in = "eof"
                    return
                buf += c
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, version = lines[0].split(" ", 2)
            headers = {}
            for l in lines[1:]:
                k, _, v = l.partition(":")
                headers[k.strip().lower()] = v.strip()
            clen = int(headers.get("content-length", "0"))
            while len(rest) < clen:
                c = conn.recv(65536)
                if not c:
                    rec.end_in = "eof-in-body"
                    return
                rest += c
            req_body, buf = rest[:clen], bytearray(rest[clen:])
            body = body_for(path) + req_body
            close = headers.get("connection", "").lower() == "close"
            resp = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode() + body
            conn.sendall(resp)
            rec.info["requests"] += 1
            if close:
                conn.shutdown(socket.SHUT_WR)
                rec.end_in = "closed-by-server"
                return
    return h


def http_read_response(sock, buf, timeout=10.0):
    """Read one HTTP/1.1 response with Content-Length from sock; buf is a bytearray of
    already-received bytes (consumed). Returns (status, headers, body)."""
    sock.settimeout(timeout)
    while b"\r\n\r\n" not in buf:
        c = sock.recv(65536)
        if not c:
            fail(f"EOF while reading an HTTP response header (have {bytes(buf[:80])!r})")
        buf += c
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    clen = int(headers.get("content-length", "0"))
    rest = bytearray(rest)
    while len(rest) < clen:
        c = sock.recv(65536)
        if not c:
            fail(f"EOF while reading an HTTP body ({len(rest)}/{clen} bytes)")
        rest += c
    body = bytes(rest[:clen])
    buf[:] = rest[clen:]
    return status, headers, body


# ---- scripted duplex server ----------------------------------------------------------

class DuplexServer(ThreadedServer):
    """Each client first sends one JSON line (the script), then its upload stream.
    Script keys:
      id (int, required), down (bytes to send, default 0), down_seed (default 1000+id),
      up (expected upload bytes, only for reporting), up_seed (default id),
      rate (bytes/s, 0 = as fast as possible), chunk (default 256 KiB),
      interval (s between chunks; overrides rate), delay (s before sending),
      end ('shutdown' = half-close after sending [default]; 'none' = keep the write side
           open until the client's EOF, then close).
    The upload is verified against Pattern(up_seed). Results in self.by_id[id]."""

    def __init__(self, host="127.0.0.1", backlog=1024, sock=None, name="duplex"):
        self.by_id = {}
        super().__init__(self._handle, host=host, backlog=backlog, sock=sock, name=name)

    def _handle(self, conn, rec):
        conn.settimeout(30)
        buf = bytearray()
        while b"\n" not in buf:
            c = conn.recv(4096)
            if not c:
                rec.end_in = "eof-before-script"
                return
            buf += c
            if len(buf) > 65536:
                rec.end_in = "no-script"
                return
        line, _, rest = bytes(buf).partition(b"\n")
        spec = json.loads(line)
        cid = spec["id"]
        rec.info["spec"] = spec
        rec.verifier = Verifier(spec.get("up_seed", cid))
        rec.verifier.feed(rest)
        rec.bytes_in = len(rest)
        with self._lock:
            self.by_id[cid] = rec
        sender = threading.Thread(target=self._sender, args=(conn, rec, spec), daemon=True)
        sender.start()
        read_to_end(conn, rec, timeout=spec.get("read_timeout", 60), verifier=rec.verifier)
        rec.bytes_in = rec.verifier.n
        sender.join(spec.get("read_timeout", 60))

    def _sender(self, conn, rec, spec):
        cid = spec["id"]
        if spec.get("delay"):
            time.sleep(spec["delay"])
        down = spec.get("down", 0)
        seed = spec.get("down_seed", 1000 + cid)
        interval = spec.get("interval")
        if interval:
            pat = Pattern(seed, down)
            chunk = spec.get("chunk", 1)
            try:
                while True:
                    c = pat.read(chunk)
                    if not len(c):
                        break
                    conn.sendall(c)
                    rec.bytes_out += len(c)
                    time.sleep(interval)
                ok = True
            except OSError as e:
                rec.error_out = errno_name(e)
                ok = False
            rec.t_out_done = time.monotonic()
        else:
            ok = send_pattern(conn, rec, seed, down, rate=spec.get("rate") or None,
                              chunk=spec.get("chunk", 256 * KiB))
        if spec.get("end", "shutdown") == "shutdown" and ok:
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        rec.info["sender_done"] = True

    def wait_id(self, cid, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if cid in self.by_id:
                    return self.by_id[cid]
            time.sleep(0.02)
        fail(f"upstream never received the script of connection id {cid} within "
             f"{timeout:.0f} s (accepted {self.accepted} connections)")


class DuplexClient:
    """Client side of DuplexServer: sends the script line and `up` bytes of Pattern(up_seed)
    (optionally paced), while receiving and verifying `down` bytes of Pattern(down_seed).
    Runs in two threads; call start(), then join()."""

    def __init__(self, addr, cid, up=0, down=0, rate=0, up_rate=0, up_interval=None,
                 up_chunk=256 * KiB, read_delay=0.0, shut_wr=True, extra=None, timeout=60.0):
        self.addr = addr
        self.cid = cid
        self.up = up
        self.down = down
        self.up_rate = up_rate
        self.up_interval = up_interval
        self.up_chunk = up_chunk
        self.read_delay = read_delay
        self.shut_wr = shut_wr
        self.timeout = timeout
        self.spec = {"id": cid, "down": down, "rate": rate, "up": up}
        self.spec.update(extra or {})
        self.verifier = Verifier(self.spec.get("down_seed", 1000 + cid))
        self.down_end = None
        self.t_down_end = None
        self.up_sent = 0
        self.up_error = None
        self.t_up_done = None
        self.error = None
        self.sock = None
        self.read_gate = threading.Event()
        if not read_delay:
            self.read_gate.set()
        self._threads = []

    def start(self):
        try:
            self.sock = connect(self.addr, timeout=self.timeout)
        except OSError as e:
            self.error = f"connect failed: {errno_name(e)}"
            raise TestFailure(f"connection {self.cid}: connect to proxy failed: {errno_name(e)}")
        self.sock.sendall(json.dumps(self.spec).encode() + b"\n")
        for fn in (self._send, self._recv):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _send(self):
        pat = Pattern(self.spec.get("up_seed", self.cid), self.up)
        t0 = time.monotonic()
        try:
            while True:
                c = pat.read(self.up_chunk)
                if not len(c):
                    break
                self.sock.sendall(c)
                self.up_sent += len(c)
                if self.up_interval:
                    time.sleep(self.up_interval)
                elif self.up_rate:
                    ahead = t0 + self.up_sent / self.up_rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            if self.shut_wr:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.up_error = errno_name(e)
        self.t_up_done = time.monotonic()

    def _recv(self):
        if self.read_delay:
            self.read_gate.wait(self.read_delay)
        try:
            while True:
                c = self.sock.recv(1 << 20)
                if not c:
                    self.down_end = "eof"
                    break
                self.verifier.feed(c)
        except socket.timeout:
            self.down_end = "timeout"
        except (ConnectionResetError, BrokenPipeError):
            self.down_end = "reset"
        except OSError as e:
            self.down_end = f"error:{errno_name(e)}"
        self.t_down_end = time.monotonic()

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def problems(self, server=None, expect_eof=True):
        """List of human-readable problems with this connection (empty = all good)."""
        out = []
        pre = f"connection {self.cid}"
        if any(t.is_alive() for t in self._threads):
            out.append(f"{pre}: still running (sent {self.up_sent}/{self.up}, received "
                       f"{self.verifier.n}/{self.down})")
        if self.up_error:
            out.append(f"{pre}: client send failed with {self.up_error} after "
                       f"{self.up_sent}/{self.up} bytes")
        p = self.verifier.problem(self.down)
        if p:
            out.append(f"{pre}: upstream->client: {p}")
        if expect_eof and self.down_end != "eof":
            out.append(f"{pre}: upstream->client stream ended with {self.down_end!r}, "
                       f"expected EOF (FIN)")
        if server is not None:
            rec = server.by_id.get(self.cid)
            if rec is None:
                out.append(f"{pre}: upstream never saw this connection's script")
            else:
                if not rec.done.wait(10):
                    out.append(f"{pre}: upstream side still open 10 s after the client "
                               f"finished: {rec}")
                p = rec.verifier.problem(self.up)
                if p:
                    out.append(f"{pre}: client->upstream: {p}")
                if self.shut_wr and rec.end_in != "eof":
                    out.append(f"{pre}: upstream's read side ended with {rec.end_in!r}, "
                               f"expected EOF (FIN)")
                if rec.error_out:
                    out.append(f"{pre}: upstream send failed: {rec.error_out}")
        return out


# ---- selector-based echo server (scales to thousands of connections) ----------------

class EchoServer:
    """Single-thread, non-blocking echo server. On the client's EOF it flushes what is
    pending and then half-closes (so FIN propagates back). Counts accepts / ends."""

    def __init__(self, host="127.0.0.1", backlog=4096, sock=None, name="echo"):
        self.name = name
        self.sock = _listen_sock(host, backlog, sock)
        self.sock.setblocking(False)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.open = 0
        self.ends = collections.Counter()
        self.echoed = 0
        self.with_data = 0  # connections that sent at least one byte
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        add_cleanup(self.stop)

    @property
    def addr_str(self):
        return fmt_addr(self.host, self.port)

    def _close(self, conn, st, how):
        try:
            self._sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()
        self.open -= 1
        self.ends[how] += 1

    def _loop(self):
        sel = self._sel
        while not self._stop.is_set():
            try:
                events = sel.select(0.1)
            except OSError:
                return
            for key, ev in events:
                if key.data is None:
                    for _ in range(256):
                        try:
                            conn, _ = self.sock.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            break
                        conn.setblocking(False)
                        self.accepted += 1
                        self.open += 1
                        sel.register(conn, selectors.EVENT_READ,
                                     {"buf": bytearray(), "eof": False})
                    continue
                conn, st = key.fileobj, key.data
                if ev & selectors.EVENT_READ and not st["eof"]:
                    try:
                        c = conn.recv(1 << 18)
                    except (BlockingIOError, InterruptedError):
                        c = None
                    except OSError:
                        self._close(conn, st, "reset")
                        continue
                    if c == b"":
                        st["eof"] = True
                    elif c:
                        if not st.get("seen"):
                            st["seen"] = True
                            self.with_data += 1
                        st["buf"] += c
                if st["buf"]:
                    try:
                        n = conn.send(st["buf"][:1 << 20])
                        self.echoed += n
                        del st["buf"][:n]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        self._close(conn, st, "reset")
                        continue
                if st["eof"] and not st["buf"]:
                    try:
                        conn.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    self._close(conn, st, "eof")
                    continue
                want = 0
                if not st["eof"] and len(st["buf"]) < 4 * MiB:
                    want |= selectors.EVENT_READ
                if st["buf"]:
                    want |= selectors.EVENT_WRITE
                if want != key.events:
                    sel.modify(conn, want, st)

    def wait_accepted(self, n, timeout=10.0):
        _wait_accepted(self, n, timeout)

    def stop(self):
        self._stop.set()
        self._t.join(3)
        try:
            for key in list(self._sel.get_map().values()):
                try:
                    key.fileobj.close()
                except OSError:
                    pass
            self._sel.close()
        except Exception:
            pass
