#!/usr/bin/env bash
# Renders the Kubernetes overlays (deploy/k8s/overlays/*) with `kubectl kustomize`, validates
# every object against the Kubernetes 1.30 schemas (kubernetes-validate, strict: no unknown
# fields), and checks Switchyard's own rules on them (scripts/check_k8s_rules.py). Then proves
# the checks bite: a manifest with a wrong type, one with an inline secret, and a file that is
# not YAML must each be refused.
#
#   bash scripts/check-k8s.sh
#
# Installs what is missing: Debian's kubernetes-client (kubectl, with kustomize built in) and
# kubernetes-validate from PyPI in ~/.cache/switchyard-k8s-venv (SWITCHYARD_K8S_VENV).
# CRDs (the ServiceMonitor) have no schema there: the rules check them instead.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SWITCHYARD_K8S_VENV:-$HOME/.cache/switchyard-k8s-venv}"
k8s_version="1.30.0"
log() { printf 'check-k8s: %s\n' "$*" >&2; }

if ! command -v kubectl >/dev/null 2>&1; then
    log "installing kubectl (Debian kubernetes-client)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client) >&2
fi
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    log "installing kubernetes-validate into $venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "kubernetes-validate==1.37.0" >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

validate() { "$venv/bin/kubernetes-validate" -k "$k8s_version" --strict --quiet "$@"; }
rules() { "$venv/bin/python" "$root/scripts/check_k8s_rules.py" "$@"; }

for overlay in "$root"/deploy/k8s/overlays/*/; do
    name="$(basename "$overlay")"
    kubectl kustomize "$overlay" > "$work/$name.yaml"
    validate "$work/$name.yaml"
    rules "$work/$name.yaml" "overlay $name"
done

# The checks refuse what they must.
rendered="$work/$(basename "$(ls -d "$root"/deploy/k8s/overlays/*/ | head -1)").yaml"
sed 's/^  replicas: \([0-9]*\)$/  replicas: "two"/' "$rendered" > "$work/bad-type.yaml"
if validate "$work/bad-type.yaml" >/dev/null 2>&1; then
    log "a string for replicas passed the schema check"; exit 1
fi
"$venv/bin/python" - "$rendered" "$work/inline-secret.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "Deployment":
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]:
            if e["name"] == "SWITCHYARD_ADMIN_TOKEN":
                e.pop("valueFrom", None)
                e["value"] = "an-inline-admin-token"
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
if rules "$work/inline-secret.yaml" >/dev/null 2>&1; then
    log "an inline admin token passed the rules"; exit 1
fi
printf 'kind: [Deployment\n  replicas: {\n' > "$work/not-yaml.yaml"
if rules "$work/not-yaml.yaml" >/dev/null 2>&1; then
    log "a file that is not YAML passed the rules"; exit 1
fi
# The alert rules, with promtool from Debian's prometheus package (unpacked, not installed:
# installing it would start a Prometheus server).
promtool="${SWITCHYARD_PROMTOOL:-$HOME/.cache/switchyard-tools/prometheus/usr/bin/promtool}"
if [ ! -x "$promtool" ]; then
    log "unpacking promtool from Debian's prometheus package"
    (cd "$work" && apt-get download prometheus >&2 2>/dev/null \
        || (apt-get update -qq >&2 && apt-get download prometheus >&2))
    mkdir -p "$(dirname "$(dirname "$(dirname "$promtool")")")"
    dpkg-deb -x "$work"/prometheus_*.deb "$(dirname "$(dirname "$(dirname "$promtool")")")"
fi
"$promtool" check rules "$root/deploy/prometheus/alerts.yml" >&2
# Every alert names a runbook that exists.
"$venv/bin/python" - "$root" <<'PY'
import os, sys, yaml
root = sys.argv[1]
rules = [r for g in yaml.safe_load(open(f"{root}/deploy/prometheus/alerts.yml"))["groups"] for r in g["rules"]]
missing = [r["alert"] for r in rules if not os.path.isfile(os.path.join(root, r.get("annotations", {}).get("runbook", "-")))]
if missing:
    sys.exit(f"check-k8s: alerts without a runbook file: {missing}")
PY

log "OK: $(ls "$root"/deploy/k8s/overlays | tr '\n' ' ')rendered, valid against Kubernetes $k8s_version, rules kept; hostile manifests refused"
