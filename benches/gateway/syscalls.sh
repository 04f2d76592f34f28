#!/usr/bin/env bash
# What one commit of the SQLite log costs the disk (docs/BENCHMARKS.md, issue 14):
#
#   bash benches/gateway/syscalls.sh RATE [SECONDS]
#
# Starts the gateway as threads.sh does (SWITCHYARD_BIN, SWITCHYARD_DURABILITY as there), traces
# the log writer's thread alone with `strace -T` (fsync, fdatasync, pwrite64) while oha sends
# RATE req/s, and prints per file descriptor (then which file each is): the calls, their p50 / p99 / max duration, and pwrites and
# fsyncs per completed request. strace stops the thread at every traced call, so keep RATE low
# (≤ 200): the durations are the kernel's, the request latencies under it are not the gateway's.
# Needs oha and strace.
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:?usage: syscalls.sh RATE [SECONDS]}
seconds=${2:-5}
. benches/gateway/lib.sh
writer=$(grep -l '^sqlite-writer$' /proc/"$pid"/task/*/comm | cut -d/ -f5)
strace -T -e trace=fsync,fdatasync,pwrite64 -p "$writer" -o "$work/strace.out" 2>/dev/null &
tracer=$!
sleep 0.5
load "$rate" "$seconds"
wait $!
kill -INT "$tracer"
wait "$tracer" 2>/dev/null || true
done=$(grep -E '^\s*\[200\]' "$work/oha.out" | grep -oE '[0-9]+' | tail -1)
python3 - "$work/strace.out" "${done:-0}" <<'PY'
import re, sys
from collections import defaultdict
path, done = sys.argv[1], int(sys.argv[2])
calls = defaultdict(list)
for line in open(path):
    m = re.match(r'(\w+)\((\d+)[,)].*<([\d.]+)>', line)
    if m:
        calls[(m.group(1), int(m.group(2)))].append(float(m.group(3)) * 1e3)
print(f"completed requests: {done}")
for (call, fd), ms in sorted(calls.items()):
    ms.sort()
    n = len(ms)
    per = f", {n / done:.2f} per request" if done else ""
    print(f"  {call} fd {fd}: {n} calls{per}; ms p50 {ms[n // 2]:.3f} p99 {ms[min(n - 1, int(n * .99))]:.3f} max {ms[-1]:.3f}")
PY
ls -l "/proc/$pid/fd" 2>/dev/null | grep -E 'events\.db' | sed -E 's/.* ([0-9]+) -> /  fd \1: /'
