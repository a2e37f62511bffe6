"""Shared body of test_integrity_{auto,buffer,splice}.py."""
import threading
import time
import harness as h

N_CONN = 32
SIZE = 8 * h.MiB


def run_integrity(mode, env=None):
    srv = h.DuplexServer(backlog=256, name="duplex upstream")
    p = h.start_proxy("127.0.0.1:0", srv.addr_str, *h.pos(upstream_test_timeout_secs=3),
                      env={"ARCTIC_IO_MODE": mode, "ARCTIC_STATS_INTERVAL_MS": 250,
                           **(env or {})})
    if env:
        mode = f"{mode} ({' '.join(f'{k}={v}' for k, v in env.items())})"
    h.log(f"proxy ({mode} mode) ready on {p.addr_str}; warming expected hashes")
    for cid in range(1, N_CONN + 1):  # precompute so verification doesn't slow the end
        h.pattern_sha256(cid, SIZE)
        h.pattern_sha256(1000 + cid, SIZE)
    t0 = time.monotonic()
    clients = [h.DuplexClient(p.addr, cid, up=SIZE, down=SIZE, timeout=60)
               for cid in range(1, N_CONN + 1)]
    # the pipes in the proxy's fd table show which relay path carried the bytes
    pipes_seen = [0]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            try:
                # fds 0-2 are the harness's own pipes to the proxy
                n = sum(1 for e in p.fd_list() if "->pipe:" in e and int(e.split("->")[0]) > 2)
            except Exception:
                n = 0
            pipes_seen[0] = max(pipes_seen[0], n)
            time.sleep(0.05)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for c in clients:
        c.start()
    deadline = time.monotonic() + 80
    for c in clients:
        c.join(max(0.0, deadline - time.monotonic()))
    dt = time.monotonic() - t0
    sampling.set()
    sampler.join(5)
    problems = []
    for c in clients:
        problems += c.problems(srv)
    if problems:
        h.fail(f"{mode} mode: {len(problems)} problem(s) in {N_CONN} x {SIZE >> 20} MiB "
               f"each way:\n  " + "\n  ".join(problems[:40]))
    total = 2 * N_CONN * SIZE
    h.log(f"{mode} mode: {N_CONN} connections x {SIZE >> 20} MiB each way verified "
          f"({total / dt / 1e6:.0f} MB/s aggregate, {dt:.1f} s)")
    if mode == "buffer":
        h.check(pipes_seen[0] == 0, f"buffer mode opened {pipes_seen[0]} pipe descriptors")
    else:
        h.check(pipes_seen[0] > 0, f"{mode} mode: no pipe seen in the proxy during 8 MiB streams "
                "(the bytes never took the splice path)")
    h.log(f"{mode} mode: up to {pipes_seen[0]} pipe descriptors open during the transfer")
    n_scripted = len(srv.by_id)
    h.check(n_scripted == N_CONN,
            f"upstream saw {n_scripted} scripted connections, expected {N_CONN}")
    p.wait_stats(lambda st: st.active == 0, 10, "0 active after all transfers")
    p.check_alive(f"after the {mode} integrity run")
    p.stop()
