#!/usr/bin/env bash
# Install the optional peers (mace-torch, torchani) into .venv for `ffspace bench` side-by-side runs, at the
# versions ffspace's adapters were written and tested against (their model APIs change between releases).
# Both come with --no-deps: mace-torch pins e3nn 0.4.4 (ffspace uses e3nn >= 0.5; mace-torch runs with it) and
# neither may replace the pinned torch. Their remaining runtime imports are installed under constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
E3NN=$(.venv/bin/python -c "import e3nn; print(e3nn.__version__)")
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps mace-torch==0.3.16 torchani==2.9.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt "e3nn==$E3NN" \
  torch-ema torchmetrics pandas
.venv/bin/python -c "import mace.modules, torchani; print('peers installed: mace-torch', \
__import__('importlib.metadata').metadata.version('mace-torch'), '/ torchani', torchani.__version__)"
