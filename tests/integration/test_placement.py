#!/usr/bin/env python3
"""NUMA placement (issue: topology): every worker thread is pinned where `--plan --json`
says, allocates from its node's jemalloc arena, taskset/ARCTIC_CPUS are honoured, and a
plan read from another machine's topology is refused for a real run."""
import json
import os
import re
import subprocess
import harness as h

SRC = os.environ.get("ARCTIC_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def plan_json(env=None, prefix=()):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ARCTIC_")}
    e.update(env or {})
    out = subprocess.run(list(prefix) + [h.proxy_bin(), "--plan", "--json"], env=e,
                         capture_output=True, text=True, timeout=30)
    h.check(out.returncode == 0, f"--plan --json exited {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def worker_threads(pid):
    """{name: cpus_allowed_list} of the proxy's worker threads (named arctic-wN)."""
    res = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            status = open(f"/proc/{pid}/task/{tid}/status").read()
        except FileNotFoundError:
            continue
        m = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
        if comm.startswith("arctic-w"):
            res[comm] = m.group(1)
    return res


def json_stats(p, timeout=10):
    deadline = h.time.monotonic() + timeout
    while h.time.monotonic() < deadline:
        for line in reversed(p.stdout_lines):
            if line.startswith("{"):
                return json.loads(line)
        h.time.sleep(0.1)
    h.fail("no JSON stats line")


def check_pinned(env, prefix=(), what=""):
    plan = plan_json(env, prefix)
    echo = h.EchoServer(name="echo")
    argv = list(prefix) + h.proxy_argv("127.0.0.1:0", echo.addr_str, *h.pos())
    pr = h.Proxy(argv, dict(env, ARCTIC_STATS_FORMAT="json", ARCTIC_STATS_INTERVAL_MS=200))
    pr.wait_ready()
    threads = worker_threads(pr.pid)
    h.check(len(threads) == len(plan["workers"]),
            f"{what}: {len(threads)} worker threads {threads}, plan has {len(plan['workers'])}")
    for w in plan["workers"]:
        name = f"arctic-w{w['worker']}"
        h.check(threads.get(name) == str(w["pu"]),
                f"{what}: {name} allowed on {threads.get(name)!r}, plan says CPU {w['pu']}")
    js = json_stats(pr)
    arenas_by_node = {}
    # sanitizer builds use the libc allocator (the banner says so): no arenas to check
    jemalloc = "(libc allocator)" not in pr.stderr_text()
    for w, pw in zip(js["workers"], plan["workers"]):
        h.check(w["pu"] == pw["pu"] and w["node"] == pw["node"],
                f"{what}: stats say worker {w['worker']} on pu {w['pu']} node {w['node']}, plan {pw}")
        if not jemalloc:
            continue
        h.check(w["arena"] > 0, f"{what}: worker {w['worker']} uses jemalloc arena {w['arena']} "
                "(expected a created per-node arena, not the default 0 or none)")
        h.check(w["slab_arena"] == w["arena"],
                f"{what}: worker {w['worker']} slab in arena {w['slab_arena']}, thread arena {w['arena']}")
        arenas_by_node.setdefault(w["node"], set()).add(w["arena"])
    for node, arenas in arenas_by_node.items():
        h.check(len(arenas) == 1, f"{what}: node {node} workers use several arenas {arenas}")
    # the pinned proxy still proxies
    s = pr.connect()
    h.roundtrip(s, b"placement" * 100, what=f"{what} echo")
    s.close()
    pr.stop()
    echo_stop = getattr(echo, "stop", None)
    if echo_stop:
        echo_stop()
    h.log(f"{what}: {len(threads)} workers pinned as planned, arenas {arenas_by_node}")
    return plan


def main():
    ncpu = os.cpu_count()
    plan = check_pinned({}, what="default")
    h.check(len(plan["workers"]) >= 1, "empty plan")
    check_pinned({"ARCTIC_WORKERS": "1"}, what="ARCTIC_WORKERS=1")
    if ncpu >= 2:
        p = check_pinned({}, prefix=("taskset", "-c", "1"), what="taskset -c 1")
        h.check([w["pu"] for w in p["workers"]] == [1],
                f"taskset -c 1: plan should be one worker on CPU 1, got {p['workers']}")
        p = check_pinned({"ARCTIC_CPUS": "1"}, what="ARCTIC_CPUS=1")
        h.check([w["pu"] for w in p["workers"]] == [1], f"ARCTIC_CPUS=1: {p['workers']}")

    # a foreign topology is for --plan only
    xml = os.path.join(SRC, "topology", "intel-2s-16c-smt.xml")
    rc, out, err = h.run_proxy_once(["127.0.0.1:0", "127.0.0.1:9", *map(str, h.pos(upstream_test_timeout_secs=0))],
                                    env={"ARCTIC_TOPOLOGY": xml})
    h.check(rc == 2 and "--plan only" in err and err.count("\n") == 1,
            f"run with ARCTIC_TOPOLOGY: exit {rc}, stderr {err!r}")
    # and --plan shows the other machine: 32 workers over 2 nodes
    p = plan_json({"ARCTIC_TOPOLOGY": xml})
    h.check(len(p["workers"]) == 32 and sorted(p["nodes"]) == [0, 1],
            f"--plan for the 2-socket file: {len(p['workers'])} workers, nodes {p['nodes']}")
    # bad policy values are one-line errors
    for env, want in [({"ARCTIC_CPUS": "99-100"}, "ARCTIC_CPUS: invalid value '99-100'"),
                      ({"ARCTIC_NUMA_NODES": "7"}, "ARCTIC_NUMA_NODES: invalid value '7'"),
                      ({"ARCTIC_TOPOLOGY": "/nonexistent.xml"}, "ARCTIC_TOPOLOGY: cannot load"),
                      ({"ARCTIC_NIC": "nosuchnic0"}, "ARCTIC_NIC: invalid value 'nosuchnic0'")]:
        rc, out, err = h.run_proxy_once(["--plan"], env=env)
        h.check(rc == 2 and want in err and err.count("\n") == 1,
                f"--plan with {env}: exit {rc}, stderr {err!r}, expected one line with {want!r}")


h.run(main)
