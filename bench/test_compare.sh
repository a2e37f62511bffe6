#!/usr/bin/env bash
# Tests of bench/compare's failure handling (not of any proxy's speed).
#
#  1. a proxy that is not installed (--haproxy-bin /nonexistent/...) is skipped with a
#     clear message and the run still succeeds for the others;
#  2. a proxy that cannot start (prints a start-up error, exits 1) is a recorded failure;
#  3. a proxy that dies mid-run (a fake arctic-proxy that exits after ~1 s) is a recorded
#     failure for rr and bulk1 - no hang, no driver crash;
#  4. nothing the driver started is left running;
#  5. a positional argument in --matrix ('default|buffer_size=0') becomes its own column,
#     started with that argument replaced;
#  6. the summary gives the load core's busy time per request (direct's row as the reference).
#
# Standalone: bench/test_compare.sh   exit 0 = pass, 1 = fail, 77 = skipped (no wrk/nginx/
# iperf3/cc on this machine; ctest: set SKIP_RETURN_CODE 77).  Takes ~40 s.
set -u
here=$(cd "$(dirname "$0")" && pwd)
compare="$here/compare"
tmp=$(mktemp -d /tmp/arctic-bench-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

for tool in wrk nginx iperf3 taskset python3; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "test_compare: SKIP: $tool not installed"
        exit 77
    fi
done
if ! command -v "${CC:-cc}" >/dev/null 2>&1; then
    echo "test_compare: SKIP: no C compiler"
    exit 77
fi

fails=0
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fails=$((fails + 1)); }
check_grep() { # description pattern file
    if grep -Eq -- "$2" "$3"; then ok "$1"; else bad "$1 (no /$2/ in $3)"; sed 's/^/    /' "$3" | tail -20; fi
}

# A fake arctic-proxy: a tiny threaded TCP relay speaking the contract's CLI and readiness
# line.  FAKE_MODE=die: exits 1 s after becoming ready; FAKE_MODE=nostart: start-up error.
cat > "$tmp/fake-arctic.py" <<'EOF'
import os, socket, sys, threading, time
mode = os.path.basename(sys.argv[0]).split("-")[0]
listen, upstream = sys.argv[1], sys.argv[2]
if mode == "nostart":
    print(f"arctic-proxy: bind({listen}) failed: EADDRINUSE", file=sys.stderr, flush=True)
    sys.exit(1)
lh, lp = listen.rsplit(":", 1)
uh, up = upstream.rsplit(":", 1)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((lh, int(lp)))
ls.listen(1024)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def serve():
    while True:
        c, _ = ls.accept()
        try:
            u = socket.create_connection((uh, int(up)))
        except OSError:
            c.close()
            continue
        for x, y in ((c, u), (u, c)):
            threading.Thread(target=pump, args=(x, y), daemon=True).start()
threading.Thread(target=serve, daemon=True).start()
print("fake arctic-proxy", file=sys.stderr)
print(f"listening on {lh}:{ls.getsockname()[1]}", file=sys.stderr, flush=True)
time.sleep(1.0)
print("fake arctic-proxy: dying on purpose", file=sys.stderr, flush=True)
os._exit(3)
EOF
for m in die nostart; do
    # the mode is taken from the python script's file name: give each mode its own copy
    cp "$tmp/fake-arctic.py" "$tmp/$m-fake.py"
    printf '#!/bin/sh\nexec python3 %s "$@"\n' "$tmp/$m-fake.py" > "$tmp/$m-arctic"
    chmod +x "$tmp/$m-arctic"
done

common=(--reps 1 --warmup-reps 0 --upstream-warmup 1 --quiet-wait 1 --redo-budget 0 --no-sysctl
        --idle-conns 100)

echo "# 1+2: missing haproxy binary, arctic that cannot start"
"$compare" --proxies arctic,haproxy,direct --haproxy-bin /nonexistent/haproxy \
    --arctic-bin "$tmp/nostart-arctic" --workloads rr1 --duration 1 "${common[@]}" \
    --matrix 'default|buffer_size=0' --out "$tmp/r1" > "$tmp/r1.log" 2>&1
rc=$?
[ $rc -eq 0 ] && ok "run 1 exit status 0" || { bad "run 1 exit status $rc"; tail -20 "$tmp/r1.log"; }
check_grep "skip message for the missing haproxy" "skipping haproxy: /nonexistent/haproxy not found" "$tmp/r1.log"
check_grep "summary lists haproxy as skipped" "skipped haproxy" "$tmp/r1/summary.md"
check_grep "direct still measured" "^direct,rr1,req_per_s,[0-9.]+," "$tmp/r1/results.csv"
check_grep "load-core cost per request shown for direct" "^\| direct \| [0-9.]+ \| [0-9.]+ \| 1\.00 \|$" "$tmp/r1/summary.md"
check_grep "arctic start failure recorded in results.csv" "^arctic,rr1,failure,.*failed to start.*EADDRINUSE" "$tmp/r1/results.csv"
check_grep "arctic start failure shown in summary.md" "FAILED: failed to start" "$tmp/r1/summary.md"
check_grep "a positional matrix key is its own column" "^arctic\[buffer_size=0\],rr1,failure," "$tmp/r1/results.csv"
check_grep "... started with that argument replaced" "nostart-arctic 127.0.0.1:[0-9]+ 127.0.0.1:[0-9]+ 100000 5 0 4096 10 5 3$" \
    "$(ls "$tmp"/r1/work/proxies/arctic_buffer_size=0_-*.cmd | head -1)"
check_grep "... and the default column with the default" "nostart-arctic 127.0.0.1:[0-9]+ 127.0.0.1:[0-9]+ 100000 5 65536 4096 10 5 3$" \
    "$(ls "$tmp"/r1/work/proxies/arctic-*.cmd | head -1)"
if grep -q "^haproxy," "$tmp/r1/results.csv"; then bad "skipped haproxy has result rows"; else ok "no rows for skipped haproxy"; fi

echo "# 3: arctic dies mid-run"
start=$(date +%s)
"$compare" --proxies arctic,direct --arctic-bin "$tmp/die-arctic" --workloads rr,bulk1,idle \
    --duration 4 "${common[@]}" --out "$tmp/r2" > "$tmp/r2.log" 2>&1
rc=$?
el=$(( $(date +%s) - start ))
[ $rc -eq 0 ] && ok "run 2 exit status 0 (${el}s)" || { bad "run 2 exit status $rc"; tail -20 "$tmp/r2.log"; }
[ $el -lt 90 ] && ok "run 2 did not hang" || bad "run 2 took ${el}s"
check_grep "rr: death recorded" "^arctic,rr,failure,.*proxy died during the run \(exit status 3\)" "$tmp/r2/results.csv"
check_grep "bulk1: death recorded" "^arctic,bulk1,failure,.*died" "$tmp/r2/results.csv"
check_grep "idle: a number or a failure" "^arctic,idle,(rss_kib_per_conn,[-0-9.]+|failure,)" "$tmp/r2/results.csv"
check_grep "direct rr measured" "^direct,rr,req_per_s,[0-9.]+," "$tmp/r2/results.csv"
check_grep "direct bulk1 measured" "^direct,bulk1,gbit_per_s,[0-9.]+," "$tmp/r2/results.csv"
python3 - "$tmp/r2/results.json" <<'EOF' && ok "results.json parses, failures carry messages" || bad "results.json"
import json, sys
j = json.load(open(sys.argv[1]))
fails = [r for r in j["runs"] if r["status"] == "failed"]
assert fails and all(r["error"] for r in fails), fails
EOF

echo "# 4: nothing left running"
sleep 0.5
if pgrep -f "$tmp" >/dev/null; then
    bad "processes left running:"; pgrep -af "$tmp" | sed 's/^/    /'
else
    ok "no process from the test runs is left"
fi

if [ $fails -eq 0 ]; then echo "test_compare: PASS"; exit 0; fi
echo "test_compare: $fails check(s) failed (logs: $tmp kept)"; trap - EXIT; exit 1
