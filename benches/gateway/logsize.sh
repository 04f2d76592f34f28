#!/usr/bin/env bash
# What one inference leaves in the embedded log (docs/BENCHMARKS.md, issue 14):
#
#   bash benches/gateway/logsize.sh [REQUESTS]    # default 20,000
#
# Starts the gateway as threads.sh does (SWITCHYARD_BIN=PATH for another binary), sends REQUESTS
# chat completions with oha (32 connections), stops the gateway with SIGTERM (every pending
# record written), then reads the log: events and bytes of payload per inference, and the
# size of events.db (after a WAL checkpoint) per inference.
# Needs oha (cargo install oha --locked).
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${1:-20000}
. benches/gateway/lib.sh
oha --no-tui -n "$requests" -c 32 -m POST -H "authorization: Bearer $key" -T application/json \
    -d '{"model":"mock","messages":[{"role":"user","content":"Say hello"}]}' \
    "$base/v1/chat/completions" >"$work/oha.out"
kill -TERM "$pid"
wait "$pid" || true
python3 - "$work/data/events.db" "$requests" <<'PY'
import sqlite3, sys, os
path, requests = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path)
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
rows = db.execute("""SELECT count(*), count(DISTINCT stream_id), sum(length(payload)),
    sum(length(payload) + length(stream_id) + length(event_type) + 16 + 16 + 8 * 4
        + coalesce(length(traceparent), 0) + coalesce(length(correlation_id), 0))
    FROM events WHERE stream_id LIKE 'inference-%'""").fetchone()
events, inferences, payload, row = rows
kinds = db.execute("""SELECT event_type, schema_version, count(*) FROM events
    WHERE stream_id LIKE 'inference-%' GROUP BY 1, 2 ORDER BY 3 DESC""").fetchall()
db.close()
size = os.path.getsize(path)
print(f"{inferences} inferences logged for {requests} requests sent")
print(f"events per inference: {events / inferences:.2f} ({', '.join(f'{k} v{v}: {n}' for k, v, n in kinds)})")
print(f"payload bytes per inference: {payload / inferences:.0f}; row bytes (payload + columns) per inference: {row / inferences:.0f}")
print(f"events.db after a checkpoint: {size / inferences:.0f} bytes per inference ({size / 2**20:.1f} MiB)")
PY
