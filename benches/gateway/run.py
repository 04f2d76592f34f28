#!/usr/bin/env python3
"""Gateway overhead, side by side, in one run (see docs/BENCHMARKS.md).

Arms, each driven by oha at constant rates (open loop, latency-corrected):
  direct      oha -> mock upstream
  switchyard  oha -> switchyard (key auth, rate limits on, every inference durably logged) -> mock
  litellm-1/2 oha -> LiteLLM proxy with 1 and 2 workers -> mock (when LiteLLM is installed)

The gateway under test gets CPU 0 (taskset); the mock and oha share CPU 1, the same for every
arm. Prints a Markdown table: throughput achieved, p50/p99, added p50/p99 over direct at the same
rate, errors, and the gateway's RSS; then the highest rate with p99 under 1/5/10 ms and no
errors, the authenticated GET /v1/models throughput, and the parity check (InferenceCompleted
events in the log = 2xx answers).

  python3 benches/gateway/run.py [--rates 500,1000,2000] [--duration 10] [--litellm PATH]
"""

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "bench-admin-token-0123456789"
BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "Say hello"}]})


def target_dir():
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["target_directory"]


def start(cmd, env, cpu, marker):
    """Starts a server pinned to `cpu` and returns (process, base URL from its first line)."""
    proc = subprocess.Popen(["taskset", "-c", str(cpu)] + cmd, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    line = proc.stdout.readline().strip()
    if marker not in line:
        proc.kill()
        sys.exit(f"{cmd[0]} did not start: {line!r}")
    return proc, line.split(" on ", 1)[1]


def request(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req) as response:
        return json.loads(response.read() or b"{}")


def oha(url, rate, duration, key, method="POST", connections=64):
    cmd = ["taskset", "-c", "1", "oha", "--no-tui", "--output-format", "json", "-z", f"{duration}s",
           "-c", str(connections), "-m", method, "-H", f"authorization: Bearer {key}"]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    if method == "POST":
        cmd += ["-T", "application/json", "-d", BODY]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    codes = result.get("statusCodeDistribution", {})
    ok = sum(n for code, n in codes.items() if code.startswith("2"))
    # Requests still in flight when the run's time is up are cut by oha, not failed by the server.
    errors = dict(result.get("errorDistribution", {}))
    cut = errors.pop("aborted due to deadline", 0)
    total = sum(codes.values()) + sum(errors.values())
    lat = result["latencyPercentiles"]
    if total - ok:
        detail = {**{c: n for c, n in codes.items() if not c.startswith("2")}, **errors}
        print(f"    non-2xx at {rate}/s: {detail}", file=sys.stderr)
    return {
        "rps": result["summary"]["requestsPerSec"],
        "p50": (lat.get("p50") or 0) * 1000,
        "p99": (lat.get("p99") or 0) * 1000,
        "ok": ok,
        "errors": total - ok,
        "cut": cut,
    }


def fsync_latency_ms(directory, count=2000):
    """p50/p99 of appending 4 KiB to a file and fsyncing it: the floor under any durable log."""
    path = os.path.join(directory, "fsync-probe")
    samples = []
    with open(path, "ab", buffering=0) as f:
        block = b"x" * 4096
        for _ in range(count):
            start = time.perf_counter()
            f.write(block)
            os.fsync(f.fileno())
            samples.append((time.perf_counter() - start) * 1000)
    os.remove(path)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="250,500,1000,2000,4000,8000,16000")
    parser.add_argument("--litellm-rates", default="25,50,100,200,400,800")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--litellm", default=shutil.which("litellm") or "/root/.cache/litellm-venv/bin/litellm")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    litellm_rates = [int(r) for r in args.litellm_rates.split(",")]
    if not shutil.which("oha"):
        sys.exit("oha is needed: cargo install oha --locked")

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "switchyard-gateway", "--bins"], cwd=ROOT, check=True)
    bins = os.path.join(target_dir(), "release")
    work = tempfile.mkdtemp(prefix="switchyard-gw-bench-")
    procs = []
    try:
        mock, mock_base = start([f"{bins}/mock-upstream"], {"MOCK_LISTEN": "127.0.0.1:0", "MOCK_WORKERS": "1"}, 1, "listening")
        procs.append(mock)
        config = os.path.join(work, "switchyard.toml")
        with open(config, "w") as f:
            f.write(f'[[providers]]\nname = "mock"\nkind = "openai"\nbase_url = "{mock_base}/v1"\n'
                    '[[models]]\nname = "mock"\nprovider = "mock"\ninput_usd_per_million = "1"\noutput_usd_per_million = "2"\n')
        data = os.path.join(work, "data")
        gateway, base = start([f"{bins}/switchyard", "serve"], {
            "SWITCHYARD_LISTEN": "127.0.0.1:0", "SWITCHYARD_DATA_DIR": data, "SWITCHYARD_CONFIG": config,
            "SWITCHYARD_ADMIN_TOKEN": TOKEN, "RUST_LOG": "warn"}, 0, "listening")
        procs.append(gateway)
        tenant = request("POST", f"{base}/v1/admin/tenants", {"name": "bench"}, TOKEN)["id"]
        key = request("POST", f"{base}/v1/admin/tenants/{tenant}/keys", {"name": "bench"}, TOKEN)["key"]
        # Limits on, high enough never to refuse: the cost of checking them is measured.
        request("PUT", f"{base}/v1/admin/tenants/{tenant}/limits",
                {"requests_per_minute": 100_000_000, "tokens_per_minute": 10_000_000_000, "monthly_budget_usd": "1000000"}, TOKEN)

        # (name, URL, process whose RSS is reported, bearer key)
        arms = [("direct", f"{mock_base}/v1/chat/completions", None, key),
                ("switchyard", f"{base}/v1/chat/completions", gateway, key)]
        litellm_key = "sk-bench-" + "0123456789abcdef" * 4
        def start_litellm(workers):
            """LiteLLM proxy on CPU 0 with `workers` workers, started only for its own arm."""
            port = 4100 + workers
            cfg = os.path.join(work, f"litellm-{workers}.yaml")
            with open(cfg, "w") as f:
                f.write("model_list:\n  - model_name: mock\n    litellm_params:\n"
                        f"      model: openai/mock\n      api_base: {mock_base}/v1\n      api_key: none\n"
                        "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
                        f"general_settings:\n  master_key: {litellm_key}\n")
            # No network here: LiteLLM must use its bundled price map, and its workers need time
            # to start on one core before uvicorn's health check gives up on them.
            proc = subprocess.Popen(["taskset", "-c", "0", args.litellm, "--config", cfg, "--port", str(port),
                                     "--num_workers", str(workers), "--timeout_worker_healthcheck", "180"],
                                    env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            for _ in range(180):
                try:
                    urllib.request.urlopen(f"{url}/health/liveliness", timeout=1)
                    return proc, f"{url}/v1/chat/completions"
                except Exception:
                    if proc.poll() is not None:
                        sys.exit(f"LiteLLM ({workers} workers) exited during start-up")
                    time.sleep(1)
            sys.exit(f"LiteLLM ({workers} workers) did not become live")

        if os.path.exists(args.litellm):
            for workers in (1, 2):
                arms.append((f"litellm-{workers}w", workers, None, litellm_key))
        else:
            print(f"(LiteLLM not found at {args.litellm}: its arms are skipped)", file=sys.stderr)

        results = {}
        switchyard_ok = 0
        switchyard_cut = 0
        for name, url, proc, bearer in arms:
            if isinstance(url, int):  # a LiteLLM arm: start it now, stop it after
                proc, url = start_litellm(url)
            warm = oha(url, 100, 2, bearer)  # warm-up: not in the table, but in the parity check
            if name == "switchyard":
                switchyard_ok += warm["ok"]
                switchyard_cut += warm["cut"]
            for rate in (litellm_rates if name.startswith("litellm") else rates):
                r = oha(url, rate, args.duration, bearer)
                r["rss"] = rss_mib(proc.pid) if proc else 0.0
                if name == "switchyard":
                    switchyard_cut += r["cut"]
                results[(name, rate)] = r
                print(f"{name:12} {rate:6}/s -> {r['rps']:8.0f}/s p50 {r['p50']:7.2f} ms p99 {r['p99']:8.2f} ms errors {r['errors']}", file=sys.stderr)
                if r["errors"] > r["ok"] or r["p99"] > 2000:
                    break  # past its limit: higher rates only queue
            if name.startswith("litellm"):
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)

        print(f"| arm | offered/s | achieved/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors | RSS MiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for (name, rate), r in results.items():
            d = results.get(("direct", rate))
            add50 = f"{r['p50'] - d['p50']:.2f}" if d and name != "direct" else "—"
            add99 = f"{r['p99'] - d['p99']:.2f}" if d and name != "direct" else "—"
            rss = f"{r['rss']:.0f}" if r["rss"] else "—"
            print(f"| {name} | {rate} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {add50} | {add99} | {r['errors']} | {rss} |")
        print()
        for name in dict.fromkeys(n for n, _ in results):
            best = {}
            for bound in (1, 5, 10):
                ok = [rate for (n, rate), r in results.items() if n == name and r["errors"] == 0 and r["p99"] < bound]
                best[bound] = max(ok) if ok else 0
            print(f"- {name}: highest offered rate with p99 < 1/5/10 ms and no errors: {best[1]}/{best[5]}/{best[10]} req/s")

        models = oha(f"{base}/v1/models", None, args.duration, key, method="GET")
        print(f"- GET /v1/models, authenticated, 64 connections, closed loop: {models['rps']:.0f} req/s, "
              f"p50 {models['p50']:.2f} ms, p99 {models['p99']:.2f} ms, errors {models['errors']}")

        p50, p99 = fsync_latency_ms(data)
        print(f"- the floor under a durable append on this disk: write 4 KiB + fsync, p50 {p50:.2f} ms, p99 {p99:.2f} ms")

        # Parity: every 2xx answer of the switchyard arm has its InferenceCompleted in the log.
        answered = switchyard_ok + sum(r["ok"] for (n, _), r in results.items() if n == "switchyard")
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=30)
        db = sqlite3.connect(os.path.join(data, "events.db"))
        completed = db.execute("SELECT count(*) FROM events WHERE event_type = 'InferenceCompleted'").fetchone()[0]
        # A request oha cut at its deadline may still have been answered and logged.
        fits = answered <= completed <= answered + switchyard_cut
        print(f"- parity: {completed} InferenceCompleted events in the log for {answered} 2xx answers "
              f"and {switchyard_cut} requests cut by oha at its deadline (warm-up included): "
              f"{'consistent' if fits else 'MISMATCH'}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)  # LiteLLM's workers are its children
                except (ProcessLookupError, PermissionError):
                    proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
