#!/usr/bin/env bash
# A CPU flame graph of the release gateway under load (docs/BENCHMARKS.md, issue 14):
#
#   bash benches/gateway/flamegraph.sh RATE [SECONDS] [OUT.svg]    # RATE 0 = closed loop, 32 conns
#
# Starts the mock upstream and `switchyard serve` (embedded SQLite, durable, key auth, limits and
# budget on), drives POST /v1/chat/completions with oha at RATE req/s, records the gateway with
# `perf record --call-graph dwarf` for SECONDS, folds the stacks with inferno and writes the SVG
# (default docs/flamegraphs/gateway-RATE.svg). Prints the top frames by self time, then the
# samples split by thread and by component (benches/gateway/profile_split.py). FOLDED_OUT=PATH
# keeps the folded stacks.
# Needs perf (linux-perf), oha and inferno (cargo install oha inferno --locked).
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:?usage: flamegraph.sh RATE [SECONDS] [OUT.svg]}
seconds=${2:-8}
out=${3:-docs/flamegraphs/gateway-$rate.svg}
. benches/gateway/lib.sh
load "$rate" "$((seconds + 4))"
sleep 2
perf record -q -F 999 --call-graph dwarf,16384 -p "$pid" -o "$work/perf.data" -- sleep "$seconds" 2>/dev/null
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$work/folded"
mkdir -p "$(dirname "$out")"
inferno-flamegraph --title "switchyard serve, $rate req/s (0 = closed loop), $(date -u +%F)" <"$work/folded" >"$out"
echo "wrote $out"
# (`head` closes the pipe early: its SIGPIPE is not a failure)
perf report -i "$work/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -25 || true
python3 benches/gateway/profile_split.py "$work/folded"
[ -z "${FOLDED_OUT:-}" ] || cp "$work/folded" "$FOLDED_OUT"
