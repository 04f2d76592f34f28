#!/usr/bin/env python3
"""Splits a folded profile (inferno-collapse-perf's output: `thread;frame;frame... count`) into
the shares that explain where a request's CPU goes (docs/BENCHMARKS.md, issue 14):

  - by thread (the first frame is the thread's name);
  - by component, inclusive: the samples whose stack holds a frame matching the component's
    pattern (a sample can count in several components: the upstream client's JSON is both);
  - kernel samples (frames marked `_[k]`) against user space.

  python3 benches/gateway/profile_split.py FOLDED
"""

import re
import sys
from collections import Counter

COMPONENTS = [
    ("HTTP server (actix-http, actix-web)", r"actix_http::|actix_web::|actix_server::"),
    ("upstream client (reqwest, hyper, hyper-util)", r"reqwest::|hyper::|hyper_util::"),
    ("JSON (serde_json)", r"serde_json::"),
    ("the request handler (chat_completions)", r"chat_completions"),
    ("admission: auth, limits, budget", r"switchyard_inference::admission::|switchyard_gateway::auth::"),
    ("the log's append and commit (events::store)", r"switchyard_events::store::"),
    ("SQLite itself (sqlite3*)", r"\bsqlite3[A-Za-z_]*"),
    ("read models (projections)", r"switchyard_projections::"),
    ("in-memory folds and the event hub", r"switchyard_inference::follow::|events::hub::"),
    ("tracing and metrics", r"tracing::|tracing_core::|tracing_subscriber::|prometheus::"),
    ("allocation (malloc, free, realloc)", r"^(malloc|free|realloc|cfree|_int_malloc|_int_free|__libc_malloc|__libc_free)"),
    ("tokio and futex wake-ups", r"tokio::runtime::|futex_"),
    ("scheduler (finish_task_switch, schedule)", r"finish_task_switch|__schedule|schedule_hrtimeout|do_idle"),
    ("fsync", r"fsync|ext4_sync_file|jbd2_"),
]


def main():
    threads, components = Counter(), Counter()
    total = kernel = 0
    patterns = [(name, re.compile(p)) for name, p in COMPONENTS]
    for line in open(sys.argv[1]):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] += n
        if frames[-1].endswith("_[k]"):
            kernel += n
        for name, pattern in patterns:
            if any(pattern.search(f) for f in frames[1:]):
                components[name] += n
    if not total:
        print("no samples")
        return
    print(f"samples: {total}; leaf in the kernel: {100 * kernel / total:.1f}%")
    print("by thread:")
    for name, n in threads.most_common(10):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("by component (inclusive):")
    for name, _ in COMPONENTS:
        print(f"  {100 * components[name] / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
