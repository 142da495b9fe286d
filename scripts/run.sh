#!/usr/bin/env bash
# Set up (if needed) and run the main job: `ffspace run` on the shipped default; extra args are overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ffspace run "$@"
