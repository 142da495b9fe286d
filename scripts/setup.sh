#!/usr/bin/env bash
# Create .venv (once) and install ffspace with its test extras. Idempotent: a second run takes seconds.
# torch is pinned through constraints.txt so pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
