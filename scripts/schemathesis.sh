#!/usr/bin/env bash
# Fuzzes the server's HTTP API against its own OpenAPI document with schemathesis: every answer
# must be documented (status code, content type, body schema) and none may be a 5xx.
#
#   bash scripts/schemathesis.sh [path/to/switchyard]
#
# Starts the given server binary (default: the debug build in the cargo target directory) on a
# free port with a fresh data dir, creates three tenants and their keys through the admin API
# and two workflows with three runs through the tenant API (their ids are fixed as path
# parameters in tests/schemathesis/schemathesis.toml), then runs schemathesis twice over
# disjoint operation sets, because the API has two auth schemes: the admin routes
# (`/v1/admin/...`) with the admin token as bearer token, and every other route with a tenant
# key (`Authorization` is a declared header parameter there, fixed in the config). Checks:
# not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance. The server is stopped on exit. Exit status 1 on any failure.
#
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 100), SCHEMATHESIS_SEED (default 20260101),
# SCHEMATHESIS_WORKERS (default 1), SCHEMATHESIS_REPORT_DIR (default: a temp dir; NDJSON and
# JUnit reports of both runs), SWITCHYARD_SCHEMATHESIS_VENV (default
# ~/.cache/switchyard-schemathesis-venv).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}/debug/switchyard}"
venv="${SWITCHYARD_SCHEMATHESIS_VENV:-$HOME/.cache/switchyard-schemathesis-venv}"
version="4.32.5"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
seed="${SCHEMATHESIS_SEED:-20260101}"
workers="${SCHEMATHESIS_WORKERS:-1}"
config="$root/tests/schemathesis/schemathesis.toml"

if [ ! -x "$binary" ]; then
    echo "schemathesis.sh: no server binary at $binary (build it with cargo build --bin switchyard)" >&2
    exit 2
fi

# --- schemathesis, pinned, in its own venv ----------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq python3-venv) >&2
    fi
    python3 -m venv "$venv"
fi
if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" != "$version" ]; then
    "$venv/bin/pip" install -q "schemathesis==$version"
fi
st="$venv/bin/schemathesis"

# --- the server -------------------------------------------------------------------------------
work="$(mktemp -d)"
report_dir="${SCHEMATHESIS_REPORT_DIR:-$work/report}"
mkdir -p "$report_dir"
report_dir="$(cd "$report_dir" && pwd)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work/data" "$work/.hypothesis" "$work/.schemathesis"
}
trap cleanup EXIT

admin_token="schemathesis-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# A one-second heartbeat, so the SSE feed sends something within schemathesis' read window.
SWITCHYARD_LISTEN=127.0.0.1:0 SWITCHYARD_DATA_DIR="$work/data" SWITCHYARD_ADMIN_TOKEN="$admin_token" \
    RUST_LOG="${RUST_LOG:-warn}" \
    "$binary" serve --feed-heartbeat-secs 1 >"$work/stdout" 2>"$work/server.log" &
server_pid=$!

base=""
for _ in $(seq 1 300); do
    base="$(head -n1 "$work/stdout" 2>/dev/null | grep -o 'http://[0-9.:]*' || true)"
    [ -n "$base" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "schemathesis.sh: the server exited before listening:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$base" ]; then
    echo "schemathesis.sh: the server printed no listening URL within 30 s" >&2
    exit 1
fi
echo "schemathesis.sh: server $binary listening on $base"

call() { # token method path content-type body -> response JSON
    curl -fsS -X "$2" "$base$3" -H "Authorization: Bearer $1" -H "Content-Type: $4" --data-binary "$5"
}
admin() { call "$admin_token" "$1" "$2" application/json "$3"; }
tenant() { call "$SY_TENANT_KEY" "$1" "$2" "$3" "$4"; }
field() { "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# The tenant the tenant routes run as, with an unscoped key (every tenant endpoint).
tenant_id="$(admin POST /v1/admin/tenants '{"name":"schemathesis"}' | field id)"
SY_TENANT_KEY="$(admin POST "/v1/admin/tenants/$tenant_id/keys" '{"name":"schemathesis"}' | field key)"
# Tenants and keys for the admin routes to work on (they suspend, rotate, revoke, delete...).
SY_ADMIN_TENANT="$(admin POST /v1/admin/tenants '{"name":"schemathesis-admin-target"}' | field id)"
SY_ADMIN_KEY_ID="$(admin POST "/v1/admin/tenants/$SY_ADMIN_TENANT/keys" '{"name":"target"}' | field id)"
SY_REVOKE_KEY_ID="$(admin POST "/v1/admin/tenants/$SY_ADMIN_TENANT/keys" '{"name":"revoke"}' | field id)"
SY_DELETE_TENANT="$(admin POST /v1/admin/tenants '{"name":"schemathesis-delete-target"}' | field id)"
# Workflows and runs for the workflow routes: one that ends at once, one that waits for a signal.
tenant POST /v1/workflows application/yaml 'name: schemathesis-quick
nodes:
  - {id: answer, kind: llm, model: sim-small, prompt: "Say hello."}
' >/dev/null
tenant POST /v1/workflows application/yaml 'name: schemathesis-wait
nodes:
  - {id: approve, kind: human_input, question: "Go on?", duration_ms: 3600000, schema: {type: object}}
' >/dev/null
SY_DONE_RUN="$(tenant POST /v1/workflows/schemathesis-quick/runs application/json '{"wait_ms":30000}' | field run_id)"
SY_SIGNAL_RUN="$(tenant POST /v1/workflows/schemathesis-wait/runs application/json '{}' | field run_id)"
SY_CANCEL_RUN="$(tenant POST /v1/workflows/schemathesis-wait/runs application/json '{}' | field run_id)"
export SY_TENANT_KEY SY_ADMIN_TENANT SY_ADMIN_KEY_ID SY_REVOKE_KEY_ID SY_DELETE_TENANT SY_DONE_RUN SY_SIGNAL_RUN SY_CANCEL_RUN

# --- the runs ---------------------------------------------------------------------------------
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
status=0
run() { # name, then schemathesis run options
    local name="$1"
    shift
    echo
    echo "=== schemathesis: $name ==="
    # From the temp dir: schemathesis and hypothesis write state (.schemathesis, .hypothesis)
    # into the working directory, never into the repository.
    (cd "$work" && "$st" --config-file "$config" run "$base/openapi.json" \
        --checks "$checks" \
        --max-examples "$max_examples" --seed "$seed" --workers "$workers" \
        --generation-database none --no-color --output-sanitize false \
        --continue-on-failure \
        --report ndjson,junit --report-dir "$report_dir" \
        --report-ndjson-path "$report_dir/$name.ndjson" \
        --report-junit-path "$report_dir/$name.junit.xml" \
        "$@") || status=1
}
run admin --include-path-regex '^/v1/admin/' --header "Authorization: Bearer $admin_token"
run tenant --exclude-path-regex '^/v1/admin/'
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "schemathesis.sh: the server died during the run; its log:" >&2
    tail -n 50 "$work/server.log" >&2
    status=1
fi

# --- the closing line -------------------------------------------------------------------------
"$venv/bin/python" - "$report_dir/admin.ndjson" "$report_dir/tenant.ndjson" <<'EOF'
import json, sys

cases = failed = errors = 0
distinct = set()  # (operation, check, status)
for path in sys.argv[1:]:
    try:
        lines = open(path, encoding="utf-8").readlines()
    except OSError:
        print(f"schemathesis.sh: no report {path}", file=sys.stderr)
        errors += 1
        continue
    for line in lines:
        event = json.loads(line)
        if "NonFatalError" in event or "FatalError" in event:
            errors += 1
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished["recorder"]
        interactions = recorder.get("interactions") or {}
        cases += len(interactions)
        for case_id, checks in (recorder.get("checks") or {}).items():
            failures = [check["name"] for check in checks if check["status"] == "failure"]
            failed += bool(failures)
            response = (interactions.get(case_id) or {}).get("response") or {}
            for name in failures:
                distinct.add((recorder["label"], name, response.get("status_code")))
print(
    f"schemathesis: {cases} cases run, {failed} failed "
    f"({len(distinct)} distinct operation/check/status failures), {errors} errors"
)
EOF
echo "schemathesis.sh: reports in $report_dir"
exit "$status"
