#!/usr/bin/env python3
"""Splits a folded profile (inferno-collapse-perf's output: `thread;frame;frame... count`) into
the shares that explain where a request's CPU goes (docs/BENCHMARKS.md, issue 14). Needs kernel
frames marked `_[k]` (`inferno-collapse-perf --all`, as flamegraph.sh runs it).

  - by thread (the first frame is the thread's name);
  - by component, inclusive: the samples whose stack holds a frame matching the component's
    pattern (a sample can count in several components: the upstream client's JSON is both);
  - by leaf frame (self time), in broad kinds: the scheduler, wake-ups, the disk, the network,
    allocation, copies, SQLite;
  - kernel samples (leaf frames marked `_[k]`) against user space.

  python3 benches/gateway/profile_split.py FOLDED
"""

import re
import sys
from collections import Counter

# Inclusive: a sample counts for a component if any frame of its stack matches.
COMPONENTS = [
    ("HTTP server (actix-http, actix-web; holds the handler)", r"actix_http::|actix_web::|actix_server::"),
    ("the request handler (chat_completions)", r"chat_completions"),
    ("upstream client (reqwest, hyper, hyper-util)", r"reqwest::|hyper::|hyper_util::"),
    ("JSON (serde_json)", r"serde_json::"),
    ("admission: auth, limits, budget", r"switchyard_inference::admission::|switchyard_gateway::auth::"),
    ("the log's append and commit (events::store)", r"switchyard_events::store::"),
    ("SQLite itself (sqlite3*)", r"^sqlite3[A-Za-z_]*$"),
    ("read models (projections)", r"switchyard_projections::"),
    ("in-memory folds and the event hub", r"switchyard_inference::follow::|events::hub::"),
    ("tracing and metrics (subscriber, exporters, prometheus)", r"tracing_subscriber::|tracing_core::|prometheus::|opentelemetry"),
    ("system calls (any)", r"^(entry_SYSCALL_64|do_syscall_64)"),
]

# Self time: a sample counts for the first category its leaf frame matches.
LEAVES = [
    ("scheduler: switching tasks", r"finish_task_switch|__schedule|schedule$|pick_next|psi_"),
    ("wake-ups: spin unlocks with interrupts, futex", r"_raw_spin_unlock_irq|futex|try_to_wake_up|ttwu"),
    ("disk: the virtio queue, ext4, the block layer", r"iowrite|virtqueue|ext4_|jbd2|blk_|bio_|submit_bio"),
    ("network: loopback TCP", r"tcp_|skb|__netif|ip_|net_rx|__dev_queue|loopback"),
    ("other kernel", r"_\[k\]$"),
    ("allocation (malloc, free, realloc)", r"malloc|free|realloc|_int_"),
    ("memory copies and compares", r"memmove|memcpy|memset|memcmp|memchr"),
    ("SQLite", r"^sqlite3"),
]


def main():
    threads, components, leaves = Counter(), Counter(), Counter()
    total = kernel = 0
    patterns = [(name, re.compile(p)) for name, p in COMPONENTS]
    leaf_patterns = [(name, re.compile(p)) for name, p in LEAVES]
    for line in open(sys.argv[1]):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] += n
        leaf = frames[-1]
        if leaf.endswith("_[k]"):
            kernel += n
        leaves[next((name for name, p in leaf_patterns if p.search(leaf)), "other user space")] += n
        for name, pattern in patterns:
            if any(pattern.search(f) for f in frames[1:]):
                components[name] += n
    if not total:
        print("no samples")
        return
    print(f"leaf in the kernel: {100 * kernel / total:.1f}% of the samples")
    print("by thread:")
    for name, n in threads.most_common(10):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("by component (inclusive):")
    for name, _ in COMPONENTS:
        print(f"  {100 * components[name] / total:5.1f}%  {name}")
    print("by leaf (self time):")
    for name, _ in LEAVES + [("other user space", "")]:
        print(f"  {100 * leaves[name] / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
