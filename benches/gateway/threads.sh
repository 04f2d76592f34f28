#!/usr/bin/env bash
# Where the gateway's CPU goes, thread by thread (docs/BENCHMARKS.md, issue 14):
#
#   bash benches/gateway/threads.sh RATE [SECONDS]    # RATE 0 = closed loop, 32 conns
#
# Starts the gateway as flamegraph.sh does, drives it with oha at RATE req/s, and prints for each
# thread name the CPU (user + system) and the context switches (voluntary + involuntary) per
# completed request over SECONDS, read from /proc/<pid>/task/*/{stat,status} before and after.
# Needs oha (cargo install oha --locked).
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:?usage: threads.sh RATE [SECONDS]}
seconds=${2:-10}
. benches/gateway/lib.sh
load "$rate" "$((seconds + 4))"
sleep 2
sample() {
    python3 - "$pid" <<'PY'
import os, sys, json
pid = sys.argv[1]
out = {}
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        status = open(f"/proc/{pid}/task/{tid}/status").read()
    except FileNotFoundError:
        continue
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    switches = sum(int(l.split()[1]) for l in status.splitlines() if "ctxt_switches:" in l)
    out[tid] = [comm, ticks, switches]
print(json.dumps(out))
PY
}
completed() { curl -s "$base/metrics" | awk '/^switchyard_inference_total\{.*outcome="completed"/ {s+=$2} END {print s+0}'; }
process() { awk '{print $14 + $15}' "/proc/$pid/stat"; } # the whole process, exited threads too
before=$(sample); done0=$(completed); all0=$(process)
sleep "$seconds"
after=$(sample); done1=$(completed); all1=$(process)
python3 - "$before" "$after" "$done0" "$done1" "$all0" "$all1" <<'PY'
import json, os, sys
before, after = json.loads(sys.argv[1]), json.loads(sys.argv[2])
requests = float(sys.argv[4]) - float(sys.argv[3])
if requests < 10:
    sys.exit(f"only {requests:.0f} requests completed in the window: is the gateway answering?")
hz = os.sysconf("SC_CLK_TCK")
by = {}
for tid, (comm, ticks, switches) in after.items():
    b = before.get(tid, [comm, 0, 0])
    name = comm.rstrip("0123456789-_#").strip() or comm
    row = by.setdefault(name, [0, 0, 0])
    row[0] += 1; row[1] += ticks - b[1]; row[2] += switches - b[2]
print(f"{requests:.0f} requests in the window")
print(f"{'thread':<24}{'n':>3}{'CPU µs/req':>12}{'switches/req':>14}")
total = [0, 0]
for name, (n, ticks, switches) in sorted(by.items(), key=lambda kv: -kv[1][1]):
    cpu = ticks / hz / requests * 1e6
    total[0] += cpu; total[1] += switches / requests
    print(f"{name:<24}{n:>3}{cpu:>12.0f}{switches / requests:>14.2f}")
print(f"{'total':<24}{'':>3}{total[0]:>12.0f}{total[1]:>14.2f}")
whole = (int(sys.argv[6]) - int(sys.argv[5])) / hz / requests * 1e6
print(f"{'process (/proc/PID/stat)':<27}{whole:>12.0f}   (threads that ended in the window included)")
PY
