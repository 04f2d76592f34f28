#!/usr/bin/env python3
"""Several `switchyard serve` nodes on one PostgreSQL log and one Redis (docs/SCALING.md).

For each cluster size in --nodes, starts that many nodes on a fresh schema (shared Redis, admin
token and data dir), one mock upstream, a tenant with request, token and budget limits set high
enough never to refuse (so every check runs: the budget in Redis), then drives
`POST /v1/chat/completions` closed-loop with one oha per node (the connections split between
them) for --duration seconds. Nothing is pinned: every process may use both cores, as a
deployment would. Reports per size: completions/s, the CPU each part used (cores, from
/proc/<pid>/stat: the nodes, PostgreSQL, Redis, the load generator and mock), completions per
second per core used by the nodes and per core used in all, errors, and the parity check
(InferenceCompleted events in the log = 2xx answers).

With --fixed-rate R, it also runs each size open-loop at R req/s (oha -q, latency-corrected)
and reports p50/p99 and CPU per request. With --sqlite, one node runs embedded (SQLite, no
Redis): the single-node hot path, to compare two binaries (--binary) at a fixed rate.

  python3 benches/gateway/scaling.py [--nodes 1,2,3] [--duration 10] [--connections 48]
      [--fixed-rate 1000] [--binary PATH] [--database-url URL] [--redis-url URL]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import TOKEN, BODY, request, target_dir, ROOT  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / TICKS


def pids_named(prefix):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip().startswith(prefix):
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return found


def start(cmd, env):
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    line = proc.stdout.readline().strip()
    if "listening" not in line:
        proc.kill()
        sys.exit(f"{cmd[0]} did not start: {line!r}")
    return proc, line.split(" on ", 1)[1]


def oha_cmd(url, key, duration, connections, rate=None):
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", f"{duration}s", "-c", str(connections),
           "-m", "POST", "-H", f"authorization: Bearer {key}", "-T", "application/json", "-d", BODY]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    return cmd + [url]


def drive(bases, key, duration, connections, rate=None):
    """One oha per node at once; returns (ok, errors, rps, p50 ms, p99 ms, load pids' CPU s)."""
    per = max(1, connections // len(bases))
    procs = [subprocess.Popen(oha_cmd(f"{b}/v1/chat/completions", key, duration, per,
                                      rate / len(bases) if rate else None),
                              stdout=subprocess.PIPE, text=True) for b in bases]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    ok = errors = 0
    rps = 0.0
    p50s, p99s = [], []
    for out in outs:
        codes = out.get("statusCodeDistribution", {})
        good = sum(n for c, n in codes.items() if c.startswith("2"))
        errs = dict(out.get("errorDistribution", {}))
        errs.pop("aborted due to deadline", None)
        ok += good
        errors += sum(n for c, n in codes.items() if not c.startswith("2")) + sum(errs.values())
        rps += out["summary"]["requestsPerSec"]
        lat = out["latencyPercentiles"]
        p50s.append((lat.get("p50") or 0) * 1000)
        p99s.append((lat.get("p99") or 0) * 1000)
    return ok, errors, rps, max(p50s), max(p99s)


def count_completed(database_url, schema):
    out = subprocess.run(["psql", database_url, "-At", "-c",
                          f"SELECT count(*) FROM {schema}.events WHERE event_type = 'InferenceCompleted'"],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--fixed-rate", type=int, default=0)
    parser.add_argument("--binary", default="")
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--database-url", default=os.environ.get(
        "SWITCHYARD_TEST_DATABASE_URL", "postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test"))
    parser.add_argument("--redis-url", default=os.environ.get("SWITCHYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379"))
    args = parser.parse_args()
    if not shutil.which("oha"):
        sys.exit("oha is needed: cargo install oha --locked")
    if not args.binary:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "switchyard-gateway", "--bins"],
                       cwd=ROOT, check=True)
    bins = os.path.join(target_dir(), "release")
    binary = args.binary or f"{bins}/switchyard"
    work = tempfile.mkdtemp(prefix="switchyard-scaling-")
    procs = []
    rows = []
    answered = {}
    try:
        mock, mock_base = start([f"{bins}/mock-upstream"], {"MOCK_LISTEN": "127.0.0.1:0", "MOCK_WORKERS": "1"})
        procs.append(mock)
        config = os.path.join(work, "switchyard.toml")
        with open(config, "w") as f:
            f.write(f'[[providers]]\nname = "mock"\nkind = "openai"\nbase_url = "{mock_base}/v1"\n'
                    '[[models]]\nname = "mock"\nprovider = "mock"\ninput_usd_per_million = "1"\noutput_usd_per_million = "2"\n')
        for n in [int(x) for x in args.nodes.split(",")]:
            schema = f"scale_{uuid.uuid4().hex[:12]}"
            data = os.path.join(work, schema)
            env = {"SWITCHYARD_LISTEN": "127.0.0.1:0", "SWITCHYARD_DATA_DIR": data, "SWITCHYARD_CONFIG": config,
                   "SWITCHYARD_ADMIN_TOKEN": TOKEN, "RUST_LOG": "warn"}
            if not args.sqlite:
                env.update({"SWITCHYARD_DATABASE_URL": args.database_url, "SWITCHYARD_DATABASE_SCHEMA": schema,
                            "SWITCHYARD_REDIS_URL": args.redis_url})
            elif n != 1:
                sys.exit("--sqlite runs one node")
            nodes = [start([binary, "serve"], env) for _ in range(n)]
            procs.extend(p for p, _ in nodes)
            bases = [b for _, b in nodes]
            tenant = request("POST", f"{bases[0]}/v1/admin/tenants", {"name": "bench"}, TOKEN)["id"]
            key = request("POST", f"{bases[0]}/v1/admin/tenants/{tenant}/keys", {"name": "bench"}, TOKEN)["key"]
            request("PUT", f"{bases[0]}/v1/admin/tenants/{tenant}/limits",
                    {"requests_per_minute": 100_000_000, "tokens_per_minute": 10_000_000_000,
                     "monthly_budget_usd": "1000000"}, TOKEN)
            time.sleep(1)
            warm = drive(bases, key, 2, args.connections)  # warm-up (in the parity count)
            answered[n] = warm[0]
            modes = [("closed", None)] + ([("fixed", args.fixed_rate)] if args.fixed_rate else [])
            for mode, rate in modes:
                node_pids = [p.pid for p, _ in nodes]
                parts = {"nodes": node_pids, "postgres": pids_named("postgres"), "redis": pids_named("redis-server")}
                before = {k: cpu_seconds(v) for k, v in parts.items()}
                started = time.time()
                ok, errors, rps, p50, p99 = drive(bases, key, args.duration, args.connections, rate)
                elapsed = time.time() - started
                after = {k: cpu_seconds(v) for k, v in parts.items()}
                cores = {k: (after[k] - before[k]) / elapsed for k in parts}
                rows.append({"nodes": n, "mode": mode, "rate": rate, "rps": ok / elapsed, "ok": ok,
                             "errors": errors, "p50": p50, "p99": p99, **{f"cores_{k}": v for k, v in cores.items()}})
                r = rows[-1]
                answered[n] += ok
                print(f"{n} node(s) {mode:6} -> {r['rps']:7.0f}/s p50 {p50:7.2f} ms p99 {p99:8.2f} ms errors {errors} "
                      f"cores: nodes {cores['nodes']:.2f} postgres {cores['postgres']:.2f} redis {cores['redis']:.2f}",
                      file=sys.stderr)
            for p, _ in nodes:
                p.send_signal(signal.SIGTERM)
            for p, _ in nodes:
                p.wait(timeout=30)
            if args.sqlite:
                import sqlite3
                db = sqlite3.connect(os.path.join(data, "events.db"))
                completed = db.execute("SELECT count(*) FROM events WHERE event_type = 'InferenceCompleted'").fetchone()[0]
            else:
                completed = count_completed(args.database_url, schema)
            print(f"{n} node(s): {completed} InferenceCompleted in the log", file=sys.stderr)
            for r in rows:
                if r["nodes"] == n:
                    r["logged"] = completed
        print("| nodes | load | completions/s | p50 ms | p99 ms | errors | cores: nodes | PostgreSQL | Redis | per node-core | per core (nodes + PG + Redis) | node CPU µs/request | logged / answered |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            used = r["cores_nodes"] + r["cores_postgres"] + r["cores_redis"]
            load = "closed loop" if r["mode"] == "closed" else f"{r['rate']}/s"
            print(f"| {r['nodes']} | {load} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | "
                  f"{r['cores_nodes']:.2f} | {r['cores_postgres']:.2f} | {r['cores_redis']:.2f} | "
                  f"{r['rps'] / max(r['cores_nodes'], 1e-9):.0f} | {r['rps'] / max(used, 1e-9):.0f} | "
                  f"{1e6 * r['cores_nodes'] / max(r['rps'], 1e-9):.0f} | {r.get('logged', 0)} / {answered.get(r['nodes'], 0)} |")
    finally:
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
