#!/usr/bin/env python3
"""What exporting traces costs (issue 17; see docs/BENCHMARKS.md): the same embedded Switchyard
(SQLite, durable, key auth, limits and a budget on, every inference logged) at a fixed
1,000 req/s against the instant mock upstream, with traces off, sampled at 1 % and at 100 %,
exported over OTLP/HTTP to a receiver in this process (it answers 200 and counts what it got).
The arms alternate (off, 1 %, 100 %, off, 1 %, 100 %, ...) in one run.

Per arm: the gateway's CPU per completed request (its process tree, from /proc), and the
p50 / p99 latency oha measures (latency-corrected), with the same load sent straight to the mock
as the baseline for "added".

  python3 benches/gateway/tracing_overhead.py [--duration 10] [--rounds 2] [--rate 1000]
"""

import argparse
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, target_dir  # noqa: E402
from hotpath import cpu_s, oha, start_mock, start_switchyard, stop  # noqa: E402

ARMS = {
    "off": {},
    "1%": {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    "100%": {"OTEL_TRACES_SAMPLER": "always_on"},
}


class Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that accepts every export and counts requests and bytes."""
    received = {"requests": 0, "bytes": 0}
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        Sink.received["requests"] += 1
        Sink.received["bytes"] += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args()
    if not shutil.which("oha"):
        sys.exit("oha is needed: cargo install oha --locked")
    bins = os.path.join(target_dir(), "release")
    subprocess.run(["cargo", "build", "--release", "--bin", "switchyard", "--bin", "mock-upstream"],
                   cwd=ROOT, check=True)
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    mock, mock_base = start_mock(bins)
    direct = oha(f"{mock_base}/v1/chat/completions", "none", args.duration, 64, args.rate)
    results = {name: [] for name in ARMS}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for name, otel in ARMS.items():
                saved = dict(os.environ)
                if otel:
                    os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                       "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", **otel})
                try:
                    proc, base, key, _, _ = start_switchyard(bins, work, mock_base, "durable")
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                url = f"{base}/v1/chat/completions"
                oha(url, key, 2, 16, 200)  # warm-up
                before = dict(Sink.received)
                c0 = cpu_s(proc.pid)
                out = oha(url, key, args.duration, 64, args.rate)
                cpu_ms = (cpu_s(proc.pid) - c0) * 1000 / max(out["ok"], 1)
                stop(proc)
                exported = Sink.received["bytes"] - before["bytes"]
                row = {"cpu_ms": cpu_ms, "p50": out["p50"] - direct["p50"], "p99": out["p99"] - direct["p99"],
                       "rps": out["rps"], "errors": out["errors"], "exported_kib": exported / 1024}
                results[name].append(row)
                print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), file=sys.stderr)
    stop(mock)
    sink.shutdown()
    off = sum(r["cpu_ms"] for r in results["off"]) / len(results["off"])
    print(f"\n| tracing | CPU ms per request (each round) | vs off | added p50 / p99 ms (each round) | OTLP KiB exported per round |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        cpu = sum(r["cpu_ms"] for r in rows) / len(rows)
        cpus = " / ".join("{:.3f}".format(r["cpu_ms"]) for r in rows)
        lat = " ; ".join("{:.2f} / {:.2f}".format(r["p50"], r["p99"]) for r in rows)
        kib = " / ".join("{:.0f}".format(r["exported_kib"]) for r in rows)
        print(f"| {name} | {cpus} | {cpu / off:.2f}x | {lat} | {kib} |")


if __name__ == "__main__":
    main()
