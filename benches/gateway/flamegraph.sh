#!/usr/bin/env bash
# A CPU flame graph of the release gateway under load (docs/BENCHMARKS.md, issue 14):
#
#   bash benches/gateway/flamegraph.sh RATE [SECONDS] [OUT.svg]    # RATE 0 = closed loop, 32 conns
#
# Starts the mock upstream and `switchyard serve` (embedded SQLite, durable, key auth, limits and
# budget on), drives POST /v1/chat/completions with oha at RATE req/s, records the gateway with
# `perf record --call-graph dwarf` for SECONDS, folds the stacks with inferno and writes the SVG
# (default docs/flamegraphs/gateway-RATE.svg). Prints the top frames by self time.
# Needs perf (linux-perf), oha and inferno (cargo install oha inferno --locked).
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:?usage: flamegraph.sh RATE [SECONDS] [OUT.svg]}
seconds=${2:-8}
out=${3:-docs/flamegraphs/gateway-$rate.svg}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}"
cargo build --release -q -p switchyard-gateway --bins
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
MOCK_LISTEN=127.0.0.1:0 MOCK_WORKERS=1 "$bin/mock-upstream" >"$work/mock.out" 2>/dev/null &
until [ -s "$work/mock.out" ]; do sleep 0.1; done
mock=$(head -1 "$work/mock.out" | sed 's/.* on //')
printf '[[providers]]\nname = "mock"\nkind = "openai"\nbase_url = "%s/v1"\n[[models]]\nname = "mock"\nprovider = "mock"\ninput_usd_per_million = "1"\noutput_usd_per_million = "2"\n' "$mock" >"$work/sw.toml"
token=bench-admin-token-0123456789
SWITCHYARD_LISTEN=127.0.0.1:0 SWITCHYARD_DATA_DIR="$work/data" SWITCHYARD_CONFIG="$work/sw.toml" \
    SWITCHYARD_ADMIN_TOKEN=$token RUST_LOG=warn "$bin/switchyard" serve >"$work/sw.out" 2>/dev/null &
pid=$!
until [ -s "$work/sw.out" ]; do sleep 0.1; done
base=$(head -1 "$work/sw.out" | sed 's/.* on //')
admin() { curl -sf -X "$1" "$base$2" -H "authorization: Bearer $token" -H 'content-type: application/json' -d "$3"; }
tenant=$(admin POST /v1/admin/tenants '{"name":"bench"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
key=$(admin POST "/v1/admin/tenants/$tenant/keys" '{"name":"bench"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["key"])')
admin PUT "/v1/admin/tenants/$tenant/limits" '{"requests_per_minute":100000000,"tokens_per_minute":10000000000,"monthly_budget_usd":"1000000"}' >/dev/null
load=(oha --no-tui -z "$((seconds + 4))s" -c 32 -m POST -H "authorization: Bearer $key" -T application/json
      -d '{"model":"mock","messages":[{"role":"user","content":"Say hello"}]}')
[ "$rate" != 0 ] && load+=(-q "$rate" --latency-correction)
"${load[@]}" "$base/v1/chat/completions" >/dev/null &
sleep 2
perf record -q -F 999 --call-graph dwarf,16384 -p "$pid" -o "$work/perf.data" -- sleep "$seconds" 2>/dev/null
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"$work/folded"
mkdir -p "$(dirname "$out")"
inferno-flamegraph --title "switchyard serve, $rate req/s (0 = closed loop), $(date -u +%F)" <"$work/folded" >"$out"
echo "wrote $out"
perf report -i "$work/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -25
