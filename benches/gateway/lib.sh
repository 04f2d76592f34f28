# Shared by flamegraph.sh and threads.sh: builds the release binaries, starts the mock upstream
# and `switchyard serve` (embedded SQLite, durable unless SWITCHYARD_DURABILITY says otherwise,
# key auth, limits and budget on) and makes a tenant and key. Sets `work`, `pid` (the gateway),
# `base` (its URL) and `key`; `load RATE SECONDS` runs oha against it in the background
# (RATE 0 = closed loop, 32 connections). SWITCHYARD_BIN names another gateway binary to
# measure (A/B runs); the mock is always the release build's. Source it right after the one `cd`
# to the repository's root (a relative SWITCHYARD_BIN is taken from the directory before it).
case "${SWITCHYARD_BIN:-}" in ""|/*) ;; *) SWITCHYARD_BIN="$OLDPWD/$SWITCHYARD_BIN" ;; esac
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}"
bin="$CARGO_TARGET_DIR/release"
[ -n "${SWITCHYARD_BIN:-}" ] && [ -x "$bin/mock-upstream" ] || cargo build --release -q -p switchyard-gateway --bins
gateway="${SWITCHYARD_BIN:-$bin/switchyard}"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait; rm -rf "$work"' EXIT
started() { # waits for the first line of $1 while process $2 lives
    until [ -s "$1" ]; do
        kill -0 "$2" 2>/dev/null || { echo "$3 did not start:" >&2; cat "$1.err" >&2; exit 1; }
        sleep 0.1
    done
}
MOCK_LISTEN=127.0.0.1:0 MOCK_WORKERS=1 "$bin/mock-upstream" >"$work/mock.out" 2>"$work/mock.out.err" &
started "$work/mock.out" $! "the mock upstream"
mock=$(head -1 "$work/mock.out" | sed 's/.* on //')
printf '[[providers]]\nname = "mock"\nkind = "openai"\nbase_url = "%s/v1"\n[[models]]\nname = "mock"\nprovider = "mock"\ninput_usd_per_million = "1"\noutput_usd_per_million = "2"\n' "$mock" >"$work/sw.toml"
token=bench-admin-token-0123456789
SWITCHYARD_LISTEN=127.0.0.1:0 SWITCHYARD_DATA_DIR="$work/data" SWITCHYARD_CONFIG="$work/sw.toml" \
    SWITCHYARD_ADMIN_TOKEN=$token RUST_LOG=warn "$gateway" serve >"$work/sw.out" 2>"$work/sw.out.err" &
pid=$!
started "$work/sw.out" "$pid" "$gateway"
base=$(head -1 "$work/sw.out" | sed 's/.* on //')
admin() { curl -sf -X "$1" "$base$2" -H "authorization: Bearer $token" -H 'content-type: application/json' -d "$3"; }
tenant=$(admin POST /v1/admin/tenants '{"name":"bench"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
key=$(admin POST "/v1/admin/tenants/$tenant/keys" '{"name":"bench"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["key"])')
admin PUT "/v1/admin/tenants/$tenant/limits" '{"requests_per_minute":100000000,"tokens_per_minute":10000000000,"monthly_budget_usd":"1000000"}' >/dev/null
load() {
    local args=(oha --no-tui -z "$2s" -c 32 -m POST -H "authorization: Bearer $key" -T application/json
        -d '{"model":"mock","messages":[{"role":"user","content":"Say hello"}]}')
    [ "$1" != 0 ] && args+=(-q "$1" --latency-correction)
    "${args[@]}" "$base/v1/chat/completions" >"$work/oha.out" &
}
