#!/usr/bin/env bash
# Enforces the crate dependency rule (normal and build dependencies, direct or
# transitive, on any target platform):
#   switchyard-events       depends on none of the other switchyard crates
#   switchyard-actors       must not depend on switchyard-projections, switchyard-workflows, switchyard-gateway
#   switchyard-projections  must not depend on switchyard-actors, switchyard-workflows, switchyard-gateway
#   switchyard-workflows    must not depend on switchyard-projections, switchyard-gateway
# Prints `dependency rule: ok`, or each violation and exits 1.
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

check switchyard-events switchyard-actors switchyard-projections switchyard-workflows switchyard-gateway
check switchyard-actors switchyard-projections switchyard-workflows switchyard-gateway
check switchyard-projections switchyard-actors switchyard-workflows switchyard-gateway
check switchyard-workflows switchyard-projections switchyard-gateway

if [ "$violations" -gt 0 ]; then
    echo "dependency rule: $violations violation(s)" >&2
    exit 1
fi
echo "dependency rule: ok"
