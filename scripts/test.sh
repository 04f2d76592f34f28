#!/usr/bin/env bash
# The project's test command (what CI runs via .ci/run):
#
#   bash scripts/test.sh            # full run: fmt, clippy, dependency rule, fuzz targets,
#                                   # schemathesis, tests, doc tests
#   bash scripts/test.sh --quick    # local iteration: skip fmt and clippy
#
# It starts (installing if needed) PostgreSQL and NATS/JetStream through
# scripts/services.sh, with a freshly recreated `switchyard_test` database.
# The cargo target dir defaults to $HOME/.cache/switchyard-target so that
# later runs (and fresh clones, as in CI) build incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
case "${1:-}" in
    --quick) quick=1 ;;
    "") ;;
    *)
        echo "usage: bash scripts/test.sh [--quick]" >&2
        exit 2
        ;;
esac

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}"
if [ -n "${CI:-}" ]; then
    export CARGO_TERM_COLOR=never
fi

step() { printf '==> %s\n' "$*"; }

# Files of earlier test runs (SQLite stores, crash-test files) under Cargo's temp dir.
rm -rf "$CARGO_TARGET_DIR/tmp/switchyard-tests"

step "services (PostgreSQL, NATS/JetStream)"
SWITCHYARD_TEST_FRESH_DB=1 bash scripts/services.sh

export SWITCHYARD_TEST_DATABASE_URL="${SWITCHYARD_TEST_DATABASE_URL:-postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test}"
export SWITCHYARD_TEST_NATS_URL="${SWITCHYARD_TEST_NATS_URL:-nats://127.0.0.1:4222}"
# The relay test runs a nats-server of its own (to kill and restart it), 2.10 or later.
SWITCHYARD_TEST_NATS_SERVER="${SWITCHYARD_TEST_NATS_SERVER:-$(bash scripts/services.sh --nats-binary)}"
export SWITCHYARD_TEST_NATS_SERVER
export SWITCHYARD_TEST_REDIS_URL="${SWITCHYARD_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

step "the local embedding model (scripts/embedding-model.sh)"
SWITCHYARD_TEST_EMBEDDING_MODEL="$(bash scripts/embedding-model.sh)"
export SWITCHYARD_TEST_EMBEDDING_MODEL

step "Python venv with the openai SDK (scripts/python-sdk.sh)"
SWITCHYARD_TEST_PYTHON="$(bash scripts/python-sdk.sh)"
export SWITCHYARD_TEST_PYTHON

if [ "$quick" = 0 ]; then
    step "cargo fmt --all -- --check"
    cargo fmt --all -- --check

    step "cargo clippy --workspace --all-targets --locked -- -D warnings"
    cargo clippy --workspace --all-targets --locked -- -D warnings
else
    step "--quick: skipping fmt and clippy"
fi

step "dependency rule (scripts/check-deps.sh)"
bash scripts/check-deps.sh

step "deploy files and Grafana dashboards (scripts/check-deploy.py)"
python3 scripts/check-deploy.py

step "Kubernetes overlays and alert rules (scripts/check-k8s.sh)"
bash scripts/check-k8s.sh

# Doc tests first, so that the test runner's closing summary is the last thing printed.
step "cargo test --workspace --locked --doc"
cargo test --workspace --locked --doc

# Fuzz targets (`fuzz::*` tests, seeds in fuzz/corpus/): each runs for FUZZ_SECONDS (60 by
# default) under bolero's random engine and prints how many inputs it ran; `--quick` gives each
# 5 s. Locally, `cargo bolero test fuzz::<target> -p <crate>` runs one under libFuzzer.
fuzz_seconds="${FUZZ_SECONDS:-60}"
if [ "$quick" = 1 ]; then
    fuzz_seconds="${FUZZ_SECONDS:-5}"
fi
export BOLERO_RANDOM_TEST_TIME_MS=$((fuzz_seconds * 1000))

if cargo nextest --version >/dev/null 2>&1; then
    step "fuzz targets, ${fuzz_seconds} s each: cargo nextest run -E 'test(/^fuzz::/)'"
    cargo nextest run --workspace --locked --no-fail-fast --profile ci \
        --success-output immediate -E 'test(/^fuzz::/)'
    step "schemathesis against /openapi.json (scripts/schemathesis.sh)"
    cargo build --locked --bin switchyard
    bash scripts/schemathesis.sh "$CARGO_TARGET_DIR/debug/switchyard"
    step "cargo nextest run --workspace --locked --no-fail-fast --profile ci (all but fuzz::)"
    unset BOLERO_RANDOM_TEST_TIME_MS
    cargo nextest run --workspace --locked --no-fail-fast --profile ci -E 'not test(/^fuzz::/)'
else
    step "fuzz targets, ${fuzz_seconds} s each (cargo-nextest not installed)"
    cargo test --workspace --locked --no-fail-fast -- --nocapture fuzz::
    unset BOLERO_RANDOM_TEST_TIME_MS
    step "schemathesis against /openapi.json (scripts/schemathesis.sh)"
    cargo build --locked --bin switchyard
    bash scripts/schemathesis.sh "$CARGO_TARGET_DIR/debug/switchyard"
    step "cargo test --workspace --locked --no-fail-fast (cargo-nextest not installed)"
    cargo test --workspace --locked --no-fail-fast -- --skip fuzz::
fi


step "all checks passed"
