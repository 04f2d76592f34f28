#!/usr/bin/env bash
# Enforces the crate dependency rule (normal and build dependencies, direct or
# transitive, on any target platform):
#   switchyard-events       depends on none of the other switchyard crates
#   switchyard-actors       must not depend on switchyard-projections, switchyard-workflows, switchyard-inference, switchyard-gateway
#   switchyard-projections  must not depend on switchyard-actors, switchyard-workflows, switchyard-inference, switchyard-gateway
#   switchyard-workflows    must not depend on switchyard-projections, switchyard-inference, switchyard-gateway
#   switchyard-inference    must not depend on switchyard-projections, switchyard-workflows, switchyard-gateway,
#                           nor on any HTTP server (actix-web, actix-http, actix-ws): it is the pipeline without HTTP
# and then the module rule inside every crate (tools/modgraph): no import cycle between
# sibling modules (folders included), no source file over 600 lines unless it is a test file
# or its first comment says why it must be one piece.
# Prints `dependency rule: ok` and `module layers: ok`, or each violation and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

violations=0

# check CRATE FORBIDDEN...
check() {
    local crate="$1" tree forbidden
    shift
    if ! tree="$(cargo tree -p "$crate" -e normal,build --target all --prefix none --format '{p}' --locked)"; then
        echo "dependency rule: cargo tree -p $crate failed" >&2
        exit 1
    fi
    # Lines look like `switchyard-actors v0.1.0 (/path)`; drop the crate itself.
    tree="$(grep -v "^$crate v" <<<"$tree" || true)"
    for forbidden in "$@"; do
        if grep -q "^$forbidden v" <<<"$tree"; then
            echo "dependency rule violated: $crate depends (directly or transitively) on $forbidden" >&2
            echo "  see: cargo tree -p $crate -e normal,build -i $forbidden" >&2
            violations=$((violations + 1))
        fi
    done
}

check switchyard-events switchyard-actors switchyard-projections switchyard-workflows switchyard-inference switchyard-gateway
check switchyard-actors switchyard-projections switchyard-workflows switchyard-inference switchyard-gateway
check switchyard-projections switchyard-actors switchyard-workflows switchyard-inference switchyard-gateway
check switchyard-workflows switchyard-projections switchyard-inference switchyard-gateway
check switchyard-inference switchyard-projections switchyard-workflows switchyard-gateway actix-web actix-http actix-ws

if [ "$violations" -gt 0 ]; then
    echo "dependency rule: $violations violation(s)" >&2
    exit 1
fi
echo "dependency rule: ok"

# The module rule, crate by crate (every library and binary root of the workspace).
cargo build --quiet --locked -p switchyard-modgraph
"${CARGO_TARGET_DIR:-target}/debug/modgraph" \
    crates/events/src/lib.rs \
    crates/actors/src/lib.rs \
    crates/projections/src/lib.rs \
    crates/workflows/src/lib.rs \
    crates/inference/src/lib.rs \
    crates/gateway/src/main.rs \
    benches/lib.rs \
    tools/modgraph/src/main.rs
