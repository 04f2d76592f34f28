#!/usr/bin/env python3
"""The hot path side by side (issue 14; see docs/BENCHMARKS.md): Switchyard in both durability
modes on SQLite and on PostgreSQL, and LiteLLM with 1 and 2 workers, against one instant mock
upstream, in one run. Nothing is pinned: every arm may use both cores, as the mock and oha may.

Per arm (Switchyard with key auth, request/token limits and a budget on, every inference logged):
  - closed loop, 32 connections: completions/s, cores used by the gateway (its process tree,
    from /proc), p99; then (Switchyard) the seconds its read side takes to catch up with that
    burst, waited for before the steady-rate figures;
  - 1 connection, closed loop: p50 / p99, added over the same load sent straight to the mock;
  - fixed 1,000 req/s (oha -q, latency-corrected): added p50 / p99;
  - gateway CPU per completed request at 50, 100 and 1,000 req/s;
  - streaming (5-chunk answers): time to first byte added over the mock's (sequential requests),
    and CPU per streamed request at 100 req/s;
  - RSS after the load.
Then, in the same run: the disk's fsync p50/p99 (4 KiB append + fsync), the parity check
(InferenceCompleted events in the log = 2xx answers) for every Switchyard arm, and for both
durability modes on SQLite the records a `kill -9` under 1,000 req/s loses (answers the client
got whose events are not in the log).

  python3 benches/gateway/hotpath.py [--duration 10] [--arms switchyard,batched,pg,pg-batched,litellm-1,litellm-2]
      [--database-url URL] [--litellm PATH]
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import TOKEN, BODY, request, target_dir, fsync_latency_ms, ROOT  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
STREAM_BODY = json.dumps({"model": "mock", "stream": True,
                          "messages": [{"role": "user", "content": "Say hello"}]})


def tree(pid):
    """`pid` and its descendants (LiteLLM's workers are children of its master)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_s(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / TICKS


def rss_mib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1024


def oha(url, key, duration, connections, rate=None, body=BODY):
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", f"{duration}s", "-c", str(connections),
           "-m", "POST", "-H", f"authorization: Bearer {key}", "-T", "application/json", "-d", body]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    out = json.loads(subprocess.run(cmd + [url], check=True, capture_output=True, text=True).stdout)
    codes = out.get("statusCodeDistribution", {})
    errors = dict(out.get("errorDistribution", {}))
    cut = errors.pop("aborted due to deadline", 0)
    ok = sum(n for c, n in codes.items() if c.startswith("2"))
    bad = sum(n for c, n in codes.items() if not c.startswith("2")) + sum(errors.values())
    if bad:
        print(f"    non-2xx: {codes} {errors}", file=sys.stderr)
    lat = out["latencyPercentiles"]
    return {"rps": out["summary"]["requestsPerSec"], "ok": ok, "errors": bad, "cut": cut,
            "p50": (lat.get("p50") or 0) * 1000, "p99": (lat.get("p99") or 0) * 1000}


def ttfb_ms(url, key, count=200):
    """p50/p99 of the time to the first body byte of a streamed answer, one request at a time."""
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port)
    conn.connect()
    # As HTTP clients of LLM APIs do (httpx, curl): the request is not held back by Nagle.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("POST", parsed.path, STREAM_BODY.encode(),
                     {"authorization": f"Bearer {key}", "content-type": "application/json"})
        response = conn.getresponse()
        response.read1(1)
        samples.append((time.perf_counter() - start) * 1000)
        response.read()
    conn.close()
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def start_mock(bins):
    proc = subprocess.Popen([f"{bins}/mock-upstream"], env={**os.environ, "MOCK_LISTEN": "127.0.0.1:0", "MOCK_WORKERS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    return proc, proc.stdout.readline().strip().split(" on ", 1)[1]


def start_switchyard(bins, work, mock_base, durability, database_url=None, extra_config="", settings=None):
    data = os.path.join(work, f"data-{uuid.uuid4().hex[:8]}")
    config = os.path.join(work, "switchyard.toml")
    with open(config, "w") as f:
        f.write(f'[[providers]]\nname = "mock"\nkind = "openai"\nbase_url = "{mock_base}/v1"\n'
                '[[models]]\nname = "mock"\nprovider = "mock"\ninput_usd_per_million = "1"\noutput_usd_per_million = "2"\n'
                + extra_config)
    env = {"SWITCHYARD_LISTEN": "127.0.0.1:0", "SWITCHYARD_DATA_DIR": data, "SWITCHYARD_CONFIG": config,
           "SWITCHYARD_ADMIN_TOKEN": TOKEN, "SWITCHYARD_DURABILITY": durability, "RUST_LOG": "warn"}
    schema = None
    if database_url:
        schema = f"hot_{uuid.uuid4().hex[:10]}"
        env["SWITCHYARD_DATABASE_URL"] = database_url
        env["SWITCHYARD_DATABASE_SCHEMA"] = schema
    proc = subprocess.Popen([f"{bins}/switchyard", "serve"], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    line = proc.stdout.readline().strip()
    if "listening" not in line:
        proc.kill()
        sys.exit(f"switchyard did not start: {line!r}")
    base = line.split(" on ", 1)[1]
    tenant = request("POST", f"{base}/v1/admin/tenants", {"name": "bench"}, TOKEN)["id"]
    key = request("POST", f"{base}/v1/admin/tenants/{tenant}/keys", {"name": "bench"}, TOKEN)["key"]
    request("PUT", f"{base}/v1/admin/tenants/{tenant}/limits",
            {"requests_per_minute": 100_000_000, "tokens_per_minute": 10_000_000_000,
             "monthly_budget_usd": "1000000"}, TOKEN)
    for name, value in (settings or {}).items():
        request("PUT", f"{base}/v1/admin/tenants/{tenant}/settings/{name}", {"value": value}, TOKEN)
    return proc, base, key, data, schema


def start_litellm(litellm, work, mock_base, workers):
    key = "sk-bench-" + "0123456789abcdef" * 4
    port = 4100 + workers
    cfg = os.path.join(work, f"litellm-{workers}.yaml")
    with open(cfg, "w") as f:
        f.write("model_list:\n  - model_name: mock\n    litellm_params:\n"
                f"      model: openai/mock\n      api_base: {mock_base}/v1\n      api_key: none\n"
                "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
                f"general_settings:\n  master_key: {key}\n")
    proc = subprocess.Popen([litellm, "--config", cfg, "--port", str(port), "--num_workers", str(workers)],
                            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            request("POST", f"{base}/v1/chat/completions", json.loads(BODY), key)
            return proc, base, key
        except Exception:
            if proc.poll() is not None:
                sys.exit(f"LiteLLM ({workers} workers) exited during start-up")
            time.sleep(1)
    sys.exit(f"LiteLLM ({workers} workers) did not answer")


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def completed_events(data, database_url, schema):
    if schema:
        out = subprocess.run(["psql", database_url, "-At", "-c",
                              f"SELECT count(*) FROM {schema}.events WHERE event_type = 'InferenceCompleted'"],
                             check=True, capture_output=True, text=True).stdout
        return int(out.strip())
    db = sqlite3.connect(os.path.join(data, "events.db"))
    return db.execute("SELECT count(*) FROM events WHERE event_type = 'InferenceCompleted'").fetchone()[0]


def projection_lag(base):
    """The read side's lag behind the log, in events (summed over projectors), from /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("switchyard_projection_lag_events"))


def caught_up(base, patience=120):
    """Seconds until every projector has caught up with the log (at most `patience`)."""
    start = time.monotonic()
    while time.monotonic() - start < patience:
        if projection_lag(base) == 0:
            break
        time.sleep(0.2)
    return time.monotonic() - start


def measure(name, proc, base, key, args, direct):
    """Every figure of one arm; returns a dict (and the 2xx answers it got, for parity)."""
    url = f"{base}/v1/chat/completions"
    r = {"name": name}
    answered = cut = 0

    def run(duration, connections, rate=None, body=BODY):
        nonlocal answered, cut
        out = oha(url, key, duration, connections, rate, body)
        answered += out["ok"]
        cut += out["cut"]
        return out

    run(2, 8, 100)  # warm-up
    c0, t0 = cpu_s(proc.pid), time.monotonic()
    closed = run(args.duration, 32)
    cores = (cpu_s(proc.pid) - c0) / (time.monotonic() - t0)
    r["closed"], r["closed_cores"], r["closed_p99"] = closed["rps"], cores, closed["p99"]
    r["closed_cpu_ms"] = cores * 1000 / closed["rps"] if closed["rps"] else 0
    # The closed loop leaves the read side a backlog (its projectors trail the burst): the
    # steady-rate figures below are taken once it has caught up, not while it competes.
    if "switchyard" in name.lower():
        r["catch_up_s"] = caught_up(base)
    one = run(args.duration // 2, 1)
    r["one_p50"], r["one_p99"] = one["p50"] - direct["one_p50"], one["p99"] - direct["one_p99"]
    for rate in (50, 100, 1000):
        if rate > closed["rps"] * 0.9:
            r[f"cpu_{rate}"] = None
            continue
        c0 = cpu_s(proc.pid)
        out = run(args.duration, 64, rate)
        r[f"cpu_{rate}"] = (cpu_s(proc.pid) - c0) * 1000 / max(out["ok"], 1)
        if rate == 1000:
            r["fixed_p50"] = out["p50"] - direct["fixed_p50"]
            r["fixed_p99"] = out["p99"] - direct["fixed_p99"]
    stream_rate = 100 if closed["rps"] > 150 else 20
    c0 = cpu_s(proc.pid)
    out = run(args.duration, 16, stream_rate, STREAM_BODY)
    r["stream_cpu"] = (cpu_s(proc.pid) - c0) * 1000 / max(out["ok"], 1)
    p50, p99 = ttfb_ms(url, key)
    answered += 200
    r["ttfb_p50"], r["ttfb_p99"] = p50 - direct["ttfb_p50"], p99 - direct["ttfb_p99"]
    r["rss"] = rss_mib(proc.pid)
    print(f"  {name}: {json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})}",
          file=sys.stderr)
    return r, answered, cut


def crash_loss(bins, work, mock_base, durability, seconds=3):
    """Answers a client got before a `kill -9` at 1,000 req/s whose events are not in the log."""
    proc, base, key, data, _ = start_switchyard(bins, work, mock_base, durability)
    load = subprocess.Popen(["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds + 2}s", "-c", "64",
                             "-q", "1000", "-m", "POST", "-H", f"authorization: Bearer {key}",
                             "-T", "application/json", "-d", BODY, f"{base}/v1/chat/completions"],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(seconds)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = json.loads(load.communicate()[0])
    answered = sum(n for c, n in out.get("statusCodeDistribution", {}).items() if c.startswith("2"))
    logged = completed_events(data, None, None)
    return answered, logged


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--arms", default="switchyard,batched,pg,pg-batched,litellm-1,litellm-2")
    parser.add_argument("--database-url", default=os.environ.get(
        "SWITCHYARD_TEST_DATABASE_URL", "postgres://switchyard:switchyard@127.0.0.1:5432/switchyard_test"))
    parser.add_argument("--litellm", default=shutil.which("litellm") or "")
    args = parser.parse_args()
    arms = args.arms.split(",")
    if not shutil.which("oha"):
        sys.exit("oha is needed: cargo install oha --locked")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "switchyard-gateway", "--bins"], cwd=ROOT, check=True)
    bins = os.path.join(target_dir(), "release")
    work = tempfile.mkdtemp(prefix="switchyard-hotpath-")
    mock, mock_base = start_mock(bins)
    rows, parity = [], []
    try:
        murl = f"{mock_base}/v1/chat/completions"
        one = oha(murl, "x", args.duration // 2, 1)
        fixed = oha(murl, "x", args.duration, 64, 1000)
        t50, t99 = ttfb_ms(murl, "x")
        direct = {"one_p50": one["p50"], "one_p99": one["p99"], "fixed_p50": fixed["p50"],
                  "fixed_p99": fixed["p99"], "ttfb_p50": t50, "ttfb_p99": t99}
        print(f"  direct: {direct}", file=sys.stderr)
        for arm in arms:
            if arm.startswith("litellm"):
                if not args.litellm:
                    print(f"(LiteLLM not installed: arm {arm} skipped)", file=sys.stderr)
                    continue
                workers = int(arm.split("-")[1])
                proc, base, key = start_litellm(args.litellm, work, mock_base, workers)
                r, _, _ = measure(f"LiteLLM, {workers} worker{'s' if workers > 1 else ''}", proc, base, key, args, direct)
                stop(proc)
                rows.append(r)
                continue
            durability = "batched" if "batched" in arm else "durable"
            database_url = args.database_url if arm.startswith("pg") else None
            proc, base, key, data, schema = start_switchyard(bins, work, mock_base, durability, database_url)
            label = f"Switchyard, {'PostgreSQL' if database_url else 'SQLite'}, {durability}"
            r, answered, cut = measure(label, proc, base, key, args, direct)
            stop(proc)
            logged = completed_events(data, database_url, schema)
            parity.append((label, answered, cut, logged))
            rows.append(r)
        fs50, fs99 = fsync_latency_ms(work)
        losses = [(d, *crash_loss(bins, work, mock_base, d)) for d in ("durable", "batched")]
    finally:
        stop(mock)
        shutil.rmtree(work, ignore_errors=True)

    def cell(v, fmt="{:.2f}"):
        return "—" if v is None else fmt.format(v)

    print("| arm | closed loop, 32 conns: req/s (cores, p99 ms) | 1 conn: added p50 / p99 ms "
          "| 1,000 req/s: added p50 / p99 ms | CPU ms per request at 50 / 100 / 1,000 req/s "
          "| at saturation | streaming: TTFB added p50 / p99 ms, CPU ms per request | RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        fixed = f"{cell(r.get('fixed_p50'))} / {cell(r.get('fixed_p99'))}" if r.get("cpu_1000") is not None else "cannot hold it"
        print(f"| {r['name']} | {r['closed']:,.0f} ({r['closed_cores']:.2f}, {r['closed_p99']:.1f}) "
              f"| {r['one_p50']:.2f} / {r['one_p99']:.2f} | {fixed} "
              f"| {cell(r['cpu_50'], '{:.3f}')} / {cell(r['cpu_100'], '{:.3f}')} / {cell(r['cpu_1000'], '{:.3f}')} "
              f"| {r['closed_cpu_ms']:.3f} | {r['ttfb_p50']:.2f} / {r['ttfb_p99']:.2f}, {r['stream_cpu']:.3f} "
              f"| {r['rss']:.0f} |")
    print()
    for r in rows:
        if "catch_up_s" in r:
            print(f"- {r['name']}: the read side caught up with the closed-loop burst in {r['catch_up_s']:.1f} s")
    print(f"- this disk's fsync (4 KiB append + fsync): p50 {fs50:.2f} ms, p99 {fs99:.2f} ms")
    for label, answered, cut, logged in parity:
        fits = answered <= logged <= answered + cut
        print(f"- parity, {label}: {logged} InferenceCompleted for {answered} 2xx answers "
              f"(+{cut} cut by oha at its deadline): {'consistent' if fits else 'MISMATCH'}")
    for durability, answered, logged in losses:
        print(f"- kill -9 at 1,000 req/s, SQLite, {durability}: {answered} answers received, {logged} logged, "
              f"{max(answered - logged, 0)} answered but lost")


if __name__ == "__main__":
    main()
