#!/usr/bin/env bash
# A Python venv with the official `openai` SDK and LangChain's OpenAI chat model, for the SDK
# and agent-framework compatibility tests. Prints the
# interpreter's path. Installs python3-venv from Debian when the machine lacks it.
set -euo pipefail
venv="${SWITCHYARD_VENV:-$HOME/.cache/switchyard-venv}"
if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq python3-venv) >&2
    fi
    python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import openai, langchain_openai' >/dev/null 2>&1; then
    "$venv/bin/pip" install -q 'openai>=1.50,<3' 'langchain-openai>=0.3,<2' >&2
fi
echo "$venv/bin/python"
