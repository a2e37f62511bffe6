#!/usr/bin/env python3
"""Bad command-line and environment input. Every bad value must give exactly one stderr line
`arctic-proxy: <argname>: invalid value '<value>' (<reason>)` and exit status 2 before
anything is bound (LISTEN is a port this test holds: binding it would fail with
EADDRINUSE, exit 1). Also: too many arguments / unknown option (one `arctic-proxy: ` line,
exit 2), unknown ARCTIC_* variable with a suggestion, bad ARCTIC_* values, -h/--help (usage
and every ARCTIC_* variable on stdout, exit 0), --version (exit 0), --plan (exit 0 without
binding) and --plan --json (one JSON document); README's variable tables list exactly the
ARCTIC_* variables of --help. All problems are
collected and reported together."""
import json
import os
import re
import socket
import harness as h

SRC = os.environ.get("ARCTIC_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))

NUMERIC_BAD = ["abc", "-5", "99999999999"]
ADDR_BAD = ["127.0.0.1:99999", "127.0.0.1:abc", "127.0.0.1", "127.0.0.1:", "[::1", "[::1]", ""]
ENV_VARS = ["ARCTIC_WORKERS", "ARCTIC_IO_MODE", "ARCTIC_STATS_INTERVAL_MS",
            "ARCTIC_STATS_FORMAT", "ARCTIC_IDLE_TIMEOUT_S"]


def main():
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen(16)
    h.add_cleanup(held.close)
    listen = f"127.0.0.1:{held.getsockname()[1]}"
    echo = h.EchoServer(name="echo")
    up = echo.addr_str
    good = [str(x) for x in h.pos(upstream_test_timeout_secs=1)]
    problems = []
    n_cases = 0

    def expect_bad(args, env, argname, value, label):
        nonlocal n_cases
        n_cases += 1
        rc, out, err = h.run_proxy_once(args, env=env, timeout=10)
        lines = [l for l in err.splitlines() if l.strip()]
        want = re.compile(r"^arctic-proxy: " + re.escape(argname) + r": invalid value '"
                          + re.escape(value) + r"' \(.+\)$")
        if rc != 2:
            problems.append(f"{label}: exit status {rc}, expected 2; stderr {err!r}")
        elif len(lines) != 1:
            problems.append(f"{label}: expected exactly one stderr line, got {len(lines)}: "
                            f"{lines!r}")
        elif not want.match(lines[0]):
            problems.append(f"{label}: stderr line {lines[0]!r} does not match "
                            f"\"arctic-proxy: {argname}: invalid value '{value}' (<reason>)\"")

    def expect_exit2_oneline(args, env, must_contain, label):
        nonlocal n_cases
        n_cases += 1
        rc, out, err = h.run_proxy_once(args, env=env, timeout=10)
        lines = [l for l in err.splitlines() if l.strip()]
        if rc != 2:
            problems.append(f"{label}: exit status {rc}, expected 2; stderr {err!r}")
        elif len(lines) != 1 or not lines[0].startswith("arctic-proxy: "):
            problems.append(f"{label}: expected exactly one stderr line starting "
                            f"'arctic-proxy: ', got {lines!r}")
        elif must_contain and must_contain not in lines[0]:
            problems.append(f"{label}: stderr line {lines[0]!r} does not contain "
                            f"{must_contain!r}")
        return lines

    # numeric positionals
    for k, name in enumerate(h.POSITIONAL_NAMES):
        for bad in NUMERIC_BAD:
            args = [listen, up] + good
            args[2 + k] = bad
            expect_bad(args, None, name, bad, f"{name}={bad!r}")
    # addresses
    for bad in ADDR_BAD:
        expect_bad([bad, up] + good, None, "listen", bad, f"listen={bad!r}")
        expect_bad([listen, bad] + good, None, "upstream", bad, f"upstream={bad!r}")
    # too many args / unknown option
    expect_exit2_oneline([listen, up] + good + ["surplus"], None, None, "too many arguments")
    expect_exit2_oneline(["--bogus", listen, up] + good, None, "--bogus", "unknown option")
    # environment
    n_cases += 1
    rc, out, err = h.run_proxy_once([listen, up] + good, env={"ARCTIC_WORKRES": "2"})
    want = "arctic-proxy: ARCTIC_WORKRES: unknown variable (did you mean ARCTIC_WORKERS?)"
    lines = [l for l in err.splitlines() if l.strip()]
    if rc != 2 or lines != [want]:
        problems.append(f"ARCTIC_WORKRES=2: expected exit 2 and the single line {want!r}, got "
                        f"exit {rc}, stderr {lines!r}")
    for var, bad in (("ARCTIC_IO_MODE", "foo"), ("ARCTIC_WORKERS", "0"),
                     ("ARCTIC_WORKERS", "abc"), ("ARCTIC_STATS_FORMAT", "xml"),
                     ("ARCTIC_STATS_INTERVAL_MS", "abc"), ("ARCTIC_IDLE_TIMEOUT_S", "-1")):
        expect_bad([listen, up] + good, {var: bad}, var, bad, f"{var}={bad!r}")
    # help / version
    for opt in ("-h", "--help"):
        n_cases += 1
        rc, out, err = h.run_proxy_once([opt])
        missing = [v for v in ENV_VARS if v not in out]
        if rc != 0:
            problems.append(f"{opt}: exit status {rc}, expected 0; stderr {err!r}")
        if "usage" not in out.lower():
            problems.append(f"{opt}: stdout has no usage text: {out[:200]!r}")
        if missing:
            problems.append(f"{opt}: stdout does not document {missing}")
    # README's tables name exactly the variables --help lists (no knob undocumented, none
    # documented that is gone)
    n_cases += 1
    helped = set(re.findall(r"^\s+(ARCTIC_[A-Z0-9_]+)\s", out, re.M))
    with open(os.path.join(SRC, "README.md"), encoding="utf-8") as f:
        readme = set(re.findall(r"^\| `(ARCTIC_[A-Z0-9_]+)` \|", f.read(), re.M))
    if not helped or helped != readme:
        problems.append(f"--help and README's variable tables differ: only in --help "
                        f"{sorted(helped - readme)}, only in README {sorted(readme - helped)}")
    n_cases += 1
    rc, out, err = h.run_proxy_once(["--version"])
    first = out.splitlines()[0] if out.splitlines() else ""
    if rc != 0 or not re.match(r"^arctic-proxy \S+", first):
        problems.append(f"--version: expected exit 0 and first stdout line "
                        f"'arctic-proxy <version>', got exit {rc}, first line {first!r}")

    # --plan binds nothing (LISTEN is the held port) and exits 0; --plan --json is JSON
    n_cases += 1
    rc, out, err = h.run_proxy_once(["--plan", listen, up] + good)
    if rc != 0:
        problems.append(f"--plan with LISTEN on a port in use: exit {rc}, expected 0 (it "
                        f"must not bind); stderr {err!r}")
    n_cases += 1
    rc, out, err = h.run_proxy_once(["--plan", "--json", listen, up] + good)
    try:
        json.loads(out)
        jerr = None
    except ValueError as e:
        jerr = f"{e} near {out[max(0, e.pos - 60):e.pos + 30]!r}"
    if rc != 0 or jerr:
        problems.append(f"--plan --json: exit {rc}; stdout is "
                        f"{'one JSON document' if not jerr else 'NOT valid JSON: ' + jerr}")

    h.log(f"{n_cases} cases run, {len(problems)} problem(s)")
    if problems:
        h.fail(f"{len(problems)} of {n_cases} CLI cases wrong:\n  " + "\n  ".join(problems))


h.run(main)
