#!/usr/bin/env python3
"""SSE fan-out: 1,000 event-feed connections on one server (see docs/BENCHMARKS.md).

Starts `switchyard serve` (release build, simulated models with no latency, embedded store),
creates 10 tenants with a key each and opens CONNECTIONS SSE feeds spread evenly over them
(asyncio, raw sockets, one process). Then it sends chat completions at RATE per second spread over
the tenants for DURATION seconds; every event of a tenant must reach every one of its
connections. Delivery latency = receive time - the event's `recorded_at` (same machine clock).

The same traffic is first run with a single connection, as the reference: the ratio of the two
p99s is what fan-out costs.

  python3 benches/gateway/sse_fanout.py [--connections 1000] [--rate 50] [--duration 10]
"""

import argparse
import asyncio
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "bench-admin-token-0123456789"
CONFIG = """
default_model = "sim-small"
[[providers]]
name = "sim"
kind = "sim"
[[models]]
name = "sim-small"
provider = "sim"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"
sim = { latency_ms = 0, quality = 0.5 }
"""


def target_dir():
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["target_directory"]


def call(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req) as response:
        return json.loads(response.read() or b"{}")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Feed:
    """One SSE connection: counts events and records their delivery latency."""

    def __init__(self):
        self.latencies = []
        self.events = 0
        self.ready = asyncio.Event()

    async def run(self, host, port, key, stop):
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        writer.write(f"GET /v1/events/stream?types=InferenceCompleted HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer {key}\r\n\r\n".encode())
        await writer.drain()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # the response head
        self.ready.set()
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(reader.readline(), 0.5)
            except asyncio.TimeoutError:
                continue
            if not line:
                break
            # Chunked transfer encoding: data lines are inside chunks; find the JSON.
            at = line.find(b"data: ")
            if at < 0:
                continue
            now = time.time()
            event = json.loads(line[at + 6:])
            recorded = datetime.datetime.fromisoformat(event["recorded_at"].replace("Z", "+00:00")).timestamp()
            self.latencies.append((now - recorded) * 1000)
            self.events += 1
        writer.close()


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(q * len(values) + 0.999999) - 1))]


async def scenario(base, keys, connections, rate, duration):
    host, port = base.replace("http://", "").split(":")
    stop = asyncio.Event()
    feeds = [Feed() for _ in range(connections)]
    tasks = [asyncio.create_task(feed.run(host, int(port), keys[i % len(keys)], stop)) for i, feed in enumerate(feeds)]
    await asyncio.wait_for(asyncio.gather(*(feed.ready.wait() for feed in feeds)), 60)
    sent = [0] * len(keys)
    loop = asyncio.get_running_loop()

    def complete(key):
        call("POST", f"{base}/v1/chat/completions",
             {"model": "sim-small", "messages": [{"role": "user", "content": "fan out"}]}, key)

    started = time.time()
    n = 0
    while time.time() - started < duration:
        due = int((time.time() - started) * rate)
        while n < due:
            tenant = n % len(keys)
            await loop.run_in_executor(None, complete, keys[tenant])
            sent[tenant] += 1
            n += 1
        await asyncio.sleep(0.005)
    expected = sum(sent[i % len(keys)] for i in range(connections))
    deadline = time.time() + 30
    while sum(f.events for f in feeds) < expected and time.time() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [l for f in feeds for l in f.latencies]
    return {
        "connections": connections,
        "completions": n,
        "expected": expected,
        "delivered": sum(f.events for f in feeds),
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies) if latencies else float("nan"),
        "seconds": time.time() - started,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--duration", type=float, default=10)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    subprocess.run(["cargo", "build", "--release", "--bin", "switchyard"], cwd=ROOT, check=True)
    binary = os.path.join(target_dir(), "release", "switchyard")
    data = tempfile.mkdtemp(prefix="switchyard-fanout-")
    config = os.path.join(data, "config.toml")
    with open(config, "w") as out:
        out.write(CONFIG)
    env = {**os.environ, "SWITCHYARD_ADMIN_TOKEN": TOKEN, "SWITCHYARD_DATA_DIR": data,
           "SWITCHYARD_LISTEN": "127.0.0.1:0", "SWITCHYARD_CONFIG": config, "RUST_LOG": "warn"}
    env.pop("SWITCHYARD_DATABASE_URL", None)
    # The server inherits the raised open-file limit.
    server = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline().strip()
    base = line.split(" on ", 1)[1]
    try:
        keys = []
        for i in range(10):
            tenant = call("POST", f"{base}/v1/admin/tenants", {"name": f"t{i}"}, TOKEN)
            key = call("POST", f"{base}/v1/admin/tenants/{tenant['id']}/keys", {"name": "k"}, TOKEN)
            keys.append(key["key"])
        reference = asyncio.run(scenario(base, keys, 1, args.rate, args.duration))
        rss_before = rss_mib(server.pid)
        fanout = asyncio.run(scenario(base, keys, args.connections, args.rate, args.duration))
        rss_after = rss_mib(server.pid)
    finally:
        server.kill()
        server.wait()
    print(f"## SSE fan-out: {args.connections} connections, {args.rate:g} completions/s for {args.duration:g} s\n")
    print("| connections | completions | deliveries expected | delivered | p50 | p99 | max |")
    print("|---|---|---|---|---|---|---|")
    for r in (reference, fanout):
        print(f"| {r['connections']} | {r['completions']} | {r['expected']} | {r['delivered']} | "
              f"{r['p50']:.1f} ms | {r['p99']:.1f} ms | {r['max']:.1f} ms |")
    print(f"\np99 with {args.connections} connections / p99 with 1: {fanout['p99'] / reference['p99']:.1f}x; "
          f"server RSS {rss_before:.0f} MiB before the fan-out run, {rss_after:.0f} MiB after.")
    if fanout["delivered"] != fanout["expected"]:
        sys.exit("some connections missed events")


if __name__ == "__main__":
    main()
