#!/usr/bin/env python3
"""What the response cache (exact and semantic), the guardrails, request capture and budgets
below the tenant cost against a plain pass-through (issue 19, items 1, 2, 4 and 5; see
docs/BENCHMARKS.md): the same embedded Switchyard (SQLite, durable, key auth, limits
and a budget on, every inference logged) in front of the instant mock upstream, in arms that
alternate in one run:

  - pass-through: the cache off, every request goes to the mock;
  - hit: the cache on and every request the same, so all but the first are answered from it
    (still admitted, limited, settled and logged as an inference of provider `cache`);
  - miss + store: the cache on, every request says `"cache": {"no-cache": true}`, so it goes to
    the mock and its answer is stored (the cost of keeping answers);
  - guardrails (clean): the tenant's policy (every PII kind with a names list, three blocked
    topics, a prompt-size limit) checks the prompt and the answer and finds nothing;
  - guardrails (redacting): the same policy, and a prompt with an e-mail, a card number, an IP
    and a name that are redacted before the model (two GuardrailChecked events per inference);
  - capture: the tenant captures every inference (item 4): after each answer, a blob and an
    `InferenceCaptured` event;
  - spend limits: requests carry a user and two tags, and the tenant has budgets for every user
    and both tags (item 5): four budgets reserved and settled per request instead of one;
  - semantic hit: the semantic cache on (the local all-MiniLM-L6-v2, `scripts/embedding-model.sh`)
    and every request a paraphrase of the question the warm-up answered, so each is embedded,
    compared and answered from the cache;
  - semantic miss + store: every request says `no-cache`, so it is embedded, answered by the
    mock, and its answer and question are kept.

Per arm: the gateway's CPU per completed request at a fixed rate (its process tree, from /proc),
the added p50 / p99 latency oha measures there (latency-corrected, over the same load sent
straight to the mock), and the closed-loop throughput with 32 connections. The mock answers at
once, so a hit's saving here is the upstream call's CPU only; with a real model it also saves
the model's whole latency.

  python3 benches/gateway/overhead.py [--duration 10] [--rounds 2] [--rate 1000] [--arms hit,...]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import BODY, ROOT, target_dir  # noqa: E402
from hotpath import cpu_s, oha, start_mock, start_switchyard, stop  # noqa: E402

CACHE_ON = "[cache]\nenabled = true\n"
NO_CACHE_BODY = json.dumps({**json.loads(BODY), "cache": {"no-cache": True}})
GUARDRAILS = {"guardrails": json.dumps({
    "pii": {"names": ["Ada Lovelace", "Alan Turing", "Grace Hopper"]},
    "topics": [{"name": "weapons", "keywords": ["nerve agent", "dirty bomb"], "patterns": ["(?i)build an? bomb"]},
               {"name": "secret", "keywords": ["project bluebird"]},
               {"name": "self-harm", "patterns": ["(?i)\\bhurt (myself|me)\\b"]}],
    "max_prompt_chars": 20000,
})}
PII_BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content":
    "Say hello to Ada Lovelace at ada@example.com, card 4111 1111 1111 1111, from 10.1.2.3"}]})
CAPTURE = {"capture": json.dumps({"retention": "1d"})}
SPEND_LIMITS = {"spend_limits": json.dumps({
    "users": {"*": {"monthly_usd": "1000000"}},
    "tags": {"team-a": {"monthly_usd": "1000000"}, "exp-1": {"monthly_tokens": 1000000000000}},
})}
ATTRIBUTED_BODY = json.dumps({**json.loads(BODY), "user": "user-42", "metadata": {"tags": "team-a,exp-1"}})
PARAPHRASE_BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "Please say hello"}]})


def semantic_config():
    model = os.environ.get("SWITCHYARD_EMBEDDING_MODEL_DIR") or subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "embedding-model.sh")], check=True, capture_output=True,
        text=True).stdout.strip()
    return (f'[[providers]]\nname = "local"\nkind = "local"\nmodel_dir = "{model}"\n'
            '[[models]]\nname = "all-minilm-l6-v2"\nprovider = "local"\nembedding_dimensions = 384\n'
            '[cache]\nenabled = true\nsemantic_model = "all-minilm-l6-v2"\n')


SEMANTIC = {"semantic_cache": json.dumps({"threshold": 0.8})}
# name: (extra config, body, tenant settings, warm-up body when it is not the body)
ARMS = {
    "pass-through": ("", BODY, None),
    "hit": (CACHE_ON, BODY, None),
    "miss + store": (CACHE_ON, NO_CACHE_BODY, None),
    "guardrails (clean)": ("", BODY, GUARDRAILS),
    "guardrails (redacting)": ("", PII_BODY, GUARDRAILS),
    "capture": ("", BODY, CAPTURE),
    "spend limits": ("", ATTRIBUTED_BODY, SPEND_LIMITS),
    "semantic hit": (semantic_config, PARAPHRASE_BODY, SEMANTIC, BODY),
    "semantic miss + store": (semantic_config, NO_CACHE_BODY, SEMANTIC),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arm names (pass-through always runs)")
    args = parser.parse_args()
    chosen = {"pass-through"} | set(args.arms.split(","))
    arms = {name: arm for name, arm in ARMS.items() if name in chosen}
    if not shutil.which("oha"):
        sys.exit("oha is needed: cargo install oha --locked")
    bins = os.path.join(target_dir(), "release")
    subprocess.run(["cargo", "build", "--release", "--bin", "switchyard", "--bin", "mock-upstream"],
                   cwd=ROOT, check=True)
    mock, mock_base = start_mock(bins)
    direct = oha(f"{mock_base}/v1/chat/completions", "none", args.duration, 64, args.rate)
    results = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for name, (extra, body, settings, *warm) in arms.items():
                extra = extra() if callable(extra) else extra
                proc, base, key, _, _ = start_switchyard(bins, work, mock_base, "durable", extra_config=extra,
                                                         settings=settings)
                url = f"{base}/v1/chat/completions"
                # Warm-up (and the hit arms' first answer).
                oha(url, key, 2, 16, 200, body=warm[0] if warm else body)
                c0 = cpu_s(proc.pid)
                fixed = oha(url, key, args.duration, 64, args.rate, body=body)
                cpu_ms = (cpu_s(proc.pid) - c0) * 1000 / max(fixed["ok"], 1)
                closed = oha(url, key, args.duration, 32, body=body)
                stop(proc)
                row = {"cpu_ms": cpu_ms, "p50": fixed["p50"] - direct["p50"], "p99": fixed["p99"] - direct["p99"],
                       "closed_rps": closed["rps"], "errors": fixed["errors"] + closed["errors"]}
                results[name].append(row)
                print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), file=sys.stderr)
    stop(mock)
    base_cpu = sum(r["cpu_ms"] for r in results["pass-through"]) / len(results["pass-through"])
    print(f"\n| arm | CPU ms per request at {args.rate} req/s (each round) | vs pass-through "
          "| added p50 / p99 ms (each round) | closed loop, 32 conns: req/s (each round) |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        cpu = sum(r["cpu_ms"] for r in rows) / len(rows)
        cpus = " / ".join("{:.3f}".format(r["cpu_ms"]) for r in rows)
        lat = " ; ".join("{:.2f} / {:.2f}".format(r["p50"], r["p99"]) for r in rows)
        rps = " / ".join("{:,.0f}".format(r["closed_rps"]) for r in rows)
        print(f"| {name} | {cpus} | {cpu / base_cpu:.2f}x | {lat} | {rps} |")


if __name__ == "__main__":
    main()
