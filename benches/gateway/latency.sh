#!/usr/bin/env bash
# End-to-end latency of the gateway at a fixed rate (docs/BENCHMARKS.md, issue 14):
#
#   bash benches/gateway/latency.sh RATE [SECONDS]
#
# Starts the gateway as threads.sh does (SWITCHYARD_BIN=PATH for another binary,
# SWITCHYARD_DURABILITY=batched for that mode), drives it with oha at RATE req/s (latency
# corrected, 32 connections) and prints oha's p50 and p99: the whole answer through the mock,
# not the latency added over it (hotpath.py measures that). Then, from /metrics, the p50 and p99
# of the log's append in its parts: the wait for the writer (`append_queue`), the transaction
# (`commit`) and the whole as the request sees it (`append`), interpolated in their buckets.
# Needs oha (cargo install oha --locked).
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:?usage: latency.sh RATE [SECONDS]}
seconds=${2:-10}
. benches/gateway/lib.sh
load "$rate" "$seconds"
wait $!
grep -E '50.00%|99.00%' "$work/oha.out" | head -2 | tr -s ' ' | tr '\n' ' '
echo
curl -sf "$base/metrics" | python3 benches/gateway/quantiles.py 'switchyard_store_(append_queue|commit|append)_seconds'
