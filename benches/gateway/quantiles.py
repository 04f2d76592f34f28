#!/usr/bin/env python3
"""Quantiles of Prometheus histograms, as `histogram_quantile` computes them (linear inside the
bucket that holds the rank). Reads the text format on stdin; prints one line per histogram family
whose name matches the first argument (a regular expression) and has samples:

  curl -s $BASE/metrics | python3 benches/gateway/quantiles.py 'switchyard_store_(append|commit).*'
"""

import re
import sys
from collections import defaultdict


def quantile(buckets, q):
    """`buckets`: [(upper bound, cumulative count)] sorted by bound, the last one +Inf."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower  # the rank is past the last finite bound: report that bound
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


def main():
    wanted = re.compile(sys.argv[1] if len(sys.argv) > 1 else ".*")
    families = defaultdict(list)
    line_re = re.compile(r'^(\w+)_bucket\{(.*)\} (\S+)$')
    for line in sys.stdin:
        m = line_re.match(line.strip())
        if not m or not wanted.fullmatch(m.group(1)):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        le = labels.pop("le")
        key = (m.group(1), tuple(sorted(labels.items())))
        families[key].append((float("inf") if le == "+Inf" else float(le), float(m.group(3))))
    for (name, labels), buckets in sorted(families.items()):
        buckets.sort()
        if buckets[-1][1] == 0:
            continue
        figures = " ".join(f"p{int(q * 100)} {quantile(buckets, q) * 1e3:.2f}"
                           for q in (0.5, 0.99))
        label = ",".join(f"{k}={v}" for k, v in labels)
        print(f"  {name}{{{label}}}: n {int(buckets[-1][1])}, ms {figures}")


if __name__ == "__main__":
    main()
