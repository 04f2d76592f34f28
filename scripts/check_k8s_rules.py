#!/usr/bin/env python3
"""The rules a rendered Switchyard overlay must keep (run by scripts/check-k8s.sh on the output
of `kubectl kustomize`), beyond what the Kubernetes schemas check:

- a Deployment with at least 2 replicas, readiness on /readyz and liveness on /healthz,
  requests and limits for CPU and memory, non-root, a read-only root filesystem, no privilege
  escalation, and a grace period longer than the drain (SWITCHYARD_SHUTDOWN_TIMEOUT) plus the
  preStop pause;
- the admin token, key secret and database URL from a Secret, never inline;
- a Service, a PodDisruptionBudget, an HPA on CPU and on request rate with at least 2 replicas,
  a NetworkPolicy, and a ServiceMonitor whose selector and port match the Service.

Usage: check_k8s_rules.py RENDERED.yaml [NAME]; exit status 1 with the broken rules listed.
"""

import sys

import yaml


def fail(problems, message):
    problems.append(message)


def check(docs):
    problems = []
    by_kind = {}
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            fail(problems, f"not a Kubernetes object: {str(doc)[:80]}")
            continue
        by_kind.setdefault(doc["kind"], []).append(doc)
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                 "NetworkPolicy", "ServiceMonitor", "ConfigMap"]:
        if len(by_kind.get(kind, [])) != 1:
            fail(problems, f"expected exactly one {kind}, found {len(by_kind.get(kind, []))}")
    if problems:
        return problems
    deployment = by_kind["Deployment"][0]
    spec = deployment.get("spec") or {}
    if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 2:
        fail(problems, f"Deployment replicas must be >= 2, is {spec.get('replicas')!r}")
    pod = (spec.get("template") or {}).get("spec") or {}
    pod_security = pod.get("securityContext") or {}
    containers = pod.get("containers") or []
    server = next((c for c in containers if c.get("name") == "switchyard"), None)
    if server is None:
        return problems + ["no container named switchyard"]
    probe = lambda name: ((server.get(name) or {}).get("httpGet") or {}).get("path")
    if probe("readinessProbe") != "/readyz":
        fail(problems, "readiness must probe /readyz")
    if probe("livenessProbe") != "/healthz":
        fail(problems, "liveness must probe /healthz")
    resources = server.get("resources") or {}
    for tier in ["requests", "limits"]:
        for resource in ["cpu", "memory"]:
            if not (resources.get(tier) or {}).get(resource):
                fail(problems, f"resources.{tier}.{resource} is missing")
    security = server.get("securityContext") or {}
    if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
        fail(problems, "the container must run as non-root")
    if security.get("readOnlyRootFilesystem") is not True:
        fail(problems, "the root filesystem must be read-only")
    if security.get("allowPrivilegeEscalation") is not False:
        fail(problems, "allowPrivilegeEscalation must be false")
    env = {e.get("name"): e for e in server.get("env") or []}
    for name in ["SWITCHYARD_ADMIN_TOKEN", "SWITCHYARD_DATABASE_URL", "SWITCHYARD_REDIS_URL"]:
        entry = env.get(name)
        if entry is None:
            fail(problems, f"{name} is not set")
        elif "value" in entry or "secretKeyRef" not in (entry.get("valueFrom") or {}):
            fail(problems, f"{name} must come from a Secret (secretKeyRef), not a value")
    drain = int((env.get("SWITCHYARD_SHUTDOWN_TIMEOUT") or {}).get("value", "30"))
    pause = (((server.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= drain + pause:
        fail(problems, f"terminationGracePeriodSeconds ({grace}) must exceed the drain ({drain} s) plus preStop ({pause} s)")
    mounts = {m.get("mountPath"): m for m in server.get("volumeMounts") or []}
    data_dir = (env.get("SWITCHYARD_DATA_DIR") or {}).get("value")
    if f"{data_dir}/key-secret" not in mounts:
        fail(problems, "the key secret must be mounted from a Secret into the data dir (every replica hashes keys with it)")
    hpa = by_kind["HorizontalPodAutoscaler"][0]["spec"]
    if hpa.get("minReplicas", 1) < 2:
        fail(problems, "the HPA must keep at least 2 replicas")
    metric_kinds = {(m.get("type"), ((m.get("resource") or {}).get("name") or ((m.get("pods") or {}).get("metric") or {}).get("name"))) for m in hpa.get("metrics") or []}
    if ("Resource", "cpu") not in metric_kinds:
        fail(problems, "the HPA must scale on CPU")
    if not any(kind == "Pods" and name and "requests" in name for kind, name in metric_kinds):
        fail(problems, "the HPA must scale on request rate")
    service = by_kind["Service"][0]
    monitor = by_kind["ServiceMonitor"][0]["spec"]
    wanted = (monitor.get("selector") or {}).get("matchLabels") or {}
    labels = (service.get("metadata") or {}).get("labels") or {}
    if not wanted or any(labels.get(k) != v for k, v in wanted.items()):
        fail(problems, f"the ServiceMonitor selects {wanted}, which the Service's labels {labels} do not match")
    ports = {p.get("name") for p in (service.get("spec") or {}).get("ports") or []}
    for endpoint in monitor.get("endpoints") or []:
        if endpoint.get("port") not in ports or endpoint.get("path") != "/metrics":
            fail(problems, f"ServiceMonitor endpoint {endpoint} does not scrape the Service's /metrics")
    return problems


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    name = sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        print(f"{name}: cannot read: {error}", file=sys.stderr)
        return 1
    problems = check(docs)
    for problem in problems:
        print(f"{name}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{name}: rules ok ({len(docs)} objects)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
