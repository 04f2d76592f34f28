#!/usr/bin/env python3
"""Checks deploy/ without Docker (no Docker engine runs on our CI machines):

  python3 scripts/check-deploy.py

- every Grafana dashboard in deploy/grafana/dashboards parses, has a uid (unique), a title,
  schemaVersion 39 and panels, each panel of a core type with an id (unique), a gridPos and
  targets;
- every panel, query and template variable uses a provisioned data source: uid `prometheus` or
  `switchyard-pg`, both declared in the datasources provisioning file;
- every `switchyard_*` metric named in PromQL is one the server exposes (METRICS below);
- every table an SQL query reads is a read model (TABLES below), and time-series SQL returns
  a `time` column;
- brackets balance in every query;
- compose.yaml: the grafana service mounts the provisioning and dashboards folders, every
  ./relative file or folder it mounts exists, and the Dockerfile it builds exists;
- the NATS config fsyncs every JetStream write (`sync_interval: always`).

Python 3 standard library only (no PyYAML: the YAML files are checked as text). Exits 1 with
one line per problem.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROVISIONING = DEPLOY / "grafana" / "provisioning"

DATASOURCE_UIDS = {"prometheus", "switchyard-pg"}

# The series the server exposes at /metrics. For a histogram the `_bucket` series is listed;
# its `_sum` and `_count` are accepted too.
METRICS = {
    # HTTP and inference (gateway)
    "switchyard_http_requests_total",
    "switchyard_http_request_seconds_bucket",
    "switchyard_inference_total",
    "switchyard_inference_seconds_bucket",
    "switchyard_inference_tokens_total",
    "switchyard_circuit_changes_total",
    # event store and actors
    "switchyard_store_events_appended_total",
    "switchyard_store_head_position",
    "switchyard_store_commit_seconds_bucket",
    "switchyard_actors_live",
    # projections
    "switchyard_projection_position",
    "switchyard_projection_lag_events",
    "switchyard_projection_lag_seconds",
    "switchyard_projection_events_total",
    "switchyard_projection_dlq_total",
    "switchyard_projection_batch_seconds_bucket",
    # relay (event log -> NATS)
    "switchyard_relay_published_total",
    "switchyard_relay_position",
    "switchyard_relay_lag_events",
    "switchyard_relay_errors_total",
    # live subscribers (SSE, WebSocket)
    "switchyard_subscriber_connections",
    "switchyard_subscriber_buffer_depth",
    "switchyard_subscriber_dropped_total",
    "switchyard_subscriber_sent_total",
}
METRICS |= {
    m[: -len("_bucket")] + suffix
    for m in list(METRICS)
    if m.endswith("_bucket")
    for suffix in ("_sum", "_count")
}

# The PostgreSQL read models dashboards may read.
TABLES = {
    "usage_hourly",
    "latency_hist",
    "router_stats",
    "inference_log",
    "proj_checkpoints",
    "proj_dlq",
    "tenants",
}

# Grafana 11's core panel types.
PANEL_TYPES = {
    "barchart", "bargauge", "gauge", "heatmap", "histogram", "logs", "piechart", "row", "stat",
    "state-timeline", "status-history", "table", "text", "timeseries", "trend", "xychart",
}

METRIC_RE = re.compile(r"\bswitchyard_[A-Za-z0-9_:]*")
# A name after FROM or JOIN that is not a function call (`extract(epoch FROM now())`,
# `FROM generate_series(...)`): the \b stops the name from being shortened to dodge the `(`.
TABLE_RE = re.compile(r"\b(?:FROM|JOIN)\s+((?:[A-Za-z_]\w*\.)?[A-Za-z_]\w*)\b(?!\s*\()", re.I)
# After a FROM item and its alias, further items of a comma-separated FROM list.
ALIAS_RE = re.compile(r"\s+(?:AS\s+)?(?!(?:%s)\b)[A-Za-z_]\w*(?:\s*\([^)]*\))?" % "|".join(
    "WHERE GROUP ORDER LIMIT OFFSET FETCH HAVING WINDOW UNION INTERSECT EXCEPT JOIN LEFT RIGHT "
    "FULL INNER CROSS NATURAL LATERAL ON USING FOR".split()), re.I)
NEXT_ITEM_RE = re.compile(r"\s*,\s*((?:[A-Za-z_]\w*\.)?[A-Za-z_]\w*)\b(?!\s*\()")
CTE_RE = re.compile(r"\b([A-Za-z_]\w*)\s+AS\s*(?:NOT\s+)?(?:MATERIALIZED\s+)?\(", re.I)
SQL_NOISE_RE = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", re.S)


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, message):
        self.items.append(f"{where}: {message}")


def balanced(text):
    """True when (), [] and {} nest properly, string literals aside."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in SQL_NOISE_RE.sub("''", text):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack


def sql_tables(sql):
    """The tables an SQL query reads, without its CTEs."""
    text = SQL_NOISE_RE.sub("''", sql)
    ctes = {name.lower() for name in CTE_RE.findall(text)}
    names = []
    for match in TABLE_RE.finditer(text):
        names.append(match.group(1))
        end = match.end()
        while True:
            alias = ALIAS_RE.match(text, end)
            end = alias.end() if alias else end
            item = NEXT_ITEM_RE.match(text, end)
            if not item:
                break
            names.append(item.group(1))
            end = item.end()
    tables = set()
    for name in names:
        name = name.lower().rsplit(".", 1)[-1]  # schema-qualified or not
        if name not in ctes:
            tables.add(name)
    return tables


def check_datasource(ds, where, problems):
    if not isinstance(ds, dict) or ds.get("uid") not in DATASOURCE_UIDS:
        uid = ds.get("uid") if isinstance(ds, dict) else ds
        problems.add(where, f"data source uid {uid!r} is not one of {sorted(DATASOURCE_UIDS)}")
        return None
    return ds["uid"]


def check_promql(expr, where, problems):
    if not balanced(expr):
        problems.add(where, "unbalanced brackets in PromQL")
    for metric in sorted(set(METRIC_RE.findall(expr))):
        if metric not in METRICS:
            problems.add(where, f"metric {metric} is not exposed by the server (METRICS in {Path(__file__).name})")


def check_sql(sql, fmt, where, problems):
    if not balanced(sql):
        problems.add(where, "unbalanced brackets in SQL")
    tables = sql_tables(sql)
    if not tables:
        problems.add(where, "SQL reads no table")
    for table in sorted(tables - TABLES):
        problems.add(where, f"SQL reads table {table!r}, not a read model ({', '.join(sorted(TABLES))})")
    if fmt == "time_series" and not re.search(r"\bAS\s+time\b", sql, re.I):
        problems.add(where, "time_series SQL must return a column named time (… AS time)")


def check_dashboard(path, problems, seen_uids, counts):
    where = path.relative_to(ROOT)
    try:
        dash = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        problems.add(where, f"not valid JSON: {err}")
        return
    if not isinstance(dash, dict):
        problems.add(where, "not a JSON object")
        return
    for key in ("uid", "title"):
        if not isinstance(dash.get(key), str) or not dash[key].strip():
            problems.add(where, f"missing {key}")
    uid = dash.get("uid")
    if uid in seen_uids:
        problems.add(where, f"uid {uid!r} also used by {seen_uids[uid]}")
    seen_uids[uid] = where
    if dash.get("schemaVersion") != 39:
        problems.add(where, f"schemaVersion is {dash.get('schemaVersion')!r}, expected 39")

    for var in dash.get("templating", {}).get("list", []):
        vwhere = f"{where} variable {var.get('name')!r}"
        if var.get("type") != "query":
            continue
        ds_uid = check_datasource(var.get("datasource"), vwhere, problems)
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        if ds_uid == "switchyard-pg":
            check_sql(query, "table", vwhere, problems)
            if var.get("allValue"):
                check_sql(var["allValue"], "table", f"{vwhere} allValue", problems)
        elif ds_uid == "prometheus":
            check_promql(query, vwhere, problems)

    panels = dash.get("panels")
    if not isinstance(panels, list) or not panels:
        problems.add(where, "no panels")
        return
    # Rows may nest their panels when collapsed.
    flat = []
    for panel in panels:
        flat.append(panel)
        flat.extend(panel.get("panels", []) if panel.get("type") == "row" else [])
    ids = set()
    for panel in flat:
        if panel.get("type") == "row":
            continue
        pwhere = f"{where} panel {panel.get('title')!r}"
        counts["panels"] += 1
        if not panel.get("title"):
            problems.add(pwhere, "no title")
        if panel.get("type") not in PANEL_TYPES:
            problems.add(pwhere, f"panel type {panel.get('type')!r} is not a Grafana 11 core panel")
        if panel.get("id") in ids or not isinstance(panel.get("id"), int):
            problems.add(pwhere, f"id {panel.get('id')!r} missing or not unique")
        ids.add(panel.get("id"))
        if not isinstance(panel.get("gridPos"), dict):
            problems.add(pwhere, "no gridPos")
        panel_uid = check_datasource(panel.get("datasource"), pwhere, problems)
        targets = panel.get("targets")
        if not targets:
            problems.add(pwhere, "no targets")
            continue
        for target in targets:
            twhere = f"{pwhere} query {target.get('refId')!r}"
            if not target.get("refId"):
                problems.add(twhere, "no refId")
            ds_uid = check_datasource(target.get("datasource", panel.get("datasource")), twhere, problems)
            if ds_uid and panel_uid and ds_uid != panel_uid:
                problems.add(twhere, f"data source {ds_uid} differs from the panel's {panel_uid}")
            if ds_uid == "prometheus":
                expr = target.get("expr")
                if not expr:
                    problems.add(twhere, "no PromQL expr")
                    continue
                counts["promql"] += 1
                check_promql(expr, twhere, problems)
            elif ds_uid == "switchyard-pg":
                raw = target.get("rawSql")
                if not raw:
                    problems.add(twhere, "no rawSql")
                    continue
                fmt = target.get("format", "time_series")
                if fmt not in ("time_series", "table"):
                    problems.add(twhere, f"format {fmt!r} is not time_series or table")
                counts["sql"] += 1
                check_sql(raw, fmt, twhere, problems)


def service_block(compose, name):
    """The lines of one top-level service of compose.yaml (indentation-based, no YAML parser)."""
    lines = compose.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(rf"\s+{re.escape(name)}:\s*(#.*)?", line):
            indent = len(line) - len(line.lstrip())
            block = []
            for nxt in lines[i + 1 :]:
                if nxt.strip() and not nxt.lstrip().startswith("#"):
                    if len(nxt) - len(nxt.lstrip()) <= indent:
                        break
                block.append(nxt)
            return "\n".join(block)
    return None


def check_compose(problems):
    path = DEPLOY / "compose.yaml"
    where = path.relative_to(ROOT)
    try:
        compose = path.read_text(encoding="utf-8")
    except OSError as err:
        problems.add(where, f"cannot read: {err}")
        return
    for service in ("postgres", "nats", "redis", "prometheus", "grafana", "otel-collector", "switchyard"):
        if service_block(compose, service) is None:
            problems.add(where, f"no service {service!r}")
    grafana = service_block(compose, "grafana") or ""
    if not re.search(r"-\s*\./grafana/provisioning:/etc/grafana/provisioning\b", grafana):
        problems.add(where, "the grafana service does not mount ./grafana/provisioning at /etc/grafana/provisioning")
    if not re.search(r"-\s*\./grafana/dashboards:/var/lib/grafana/dashboards\b", grafana):
        problems.add(where, "the grafana service does not mount ./grafana/dashboards at /var/lib/grafana/dashboards")
    # Every bind mount of a relative path must exist beside compose.yaml.
    for source in re.findall(r"^\s*-\s*[\"']?(\.{1,2}/[^:\s\"']+):", compose, re.M):
        if not (DEPLOY / source).exists():
            problems.add(where, f"mounts {source}, which does not exist")
    switchyard = service_block(compose, "switchyard") or ""
    context = re.search(r"^\s*context:\s*(\S+)", switchyard, re.M)
    dockerfile = re.search(r"^\s*dockerfile:\s*(\S+)", switchyard, re.M)
    if not context:
        problems.add(where, "the switchyard service has no build context")
    else:
        target = (DEPLOY / context.group(1) / (dockerfile.group(1) if dockerfile else "Dockerfile")).resolve()
        if not target.is_file():
            shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
            problems.add(where, f"the switchyard service builds {shown}, which does not exist")


def check_provisioning(problems):
    path = PROVISIONING / "datasources" / "datasources.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        problems.add(path.relative_to(ROOT), f"cannot read: {err}")
        return
    declared = set(re.findall(r"^\s*uid:\s*[\"']?([\w-]+)", text, re.M))
    for uid in sorted(DATASOURCE_UIDS - declared):
        problems.add(path.relative_to(ROOT), f"does not declare the data source uid {uid!r}")
    path = PROVISIONING / "dashboards" / "dashboards.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        problems.add(path.relative_to(ROOT), f"cannot read: {err}")
        return
    if not re.search(r"^\s*path:\s*/var/lib/grafana/dashboards\s*$", text, re.M):
        problems.add(path.relative_to(ROOT), "the file provider does not read /var/lib/grafana/dashboards")


def check_nats(problems):
    path = DEPLOY / "nats" / "nats.conf"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        problems.add(path.relative_to(ROOT), f"cannot read: {err}")
        return
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    if not any(re.fullmatch(r"\s*sync_interval\s*[:=]?\s*[\"']?always[\"']?\s*", line) for line in lines):
        problems.add(path.relative_to(ROOT), "JetStream must fsync every write: set `sync_interval: always`")


def main():
    problems = Problems()
    counts = {"panels": 0, "promql": 0, "sql": 0}
    dashboards = sorted(DASHBOARDS.glob("*.json"))
    if not dashboards:
        problems.add(DASHBOARDS.relative_to(ROOT), "no dashboards")
    seen_uids = {}
    for path in dashboards:
        check_dashboard(path, problems, seen_uids, counts)
    check_provisioning(problems)
    check_compose(problems)
    check_nats(problems)

    if problems.items:
        for item in problems.items:
            print(f"check-deploy: {item}", file=sys.stderr)
        print(f"check-deploy: FAILED, {len(problems.items)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"check-deploy: OK: {len(dashboards)} dashboards, {counts['panels']} panels, "
        f"{counts['promql']} PromQL and {counts['sql']} SQL queries; provisioning, compose.yaml "
        "and nats.conf"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
