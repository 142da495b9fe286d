#!/usr/bin/env bash
# DeePMD-kit (the peer of issue 29's water benchmark) in its own virtual environment, .venv-deepmd, beside the
# pinned torch. Why its own: deepmd-kit pulls pandas, h5py, mendeleev and more at versions ffspace does not test,
# and why from source: the deepmd-kit 3.2.0 wheel's PyTorch custom operators (needed by `dp --pt compress`) are
# built for torch 2.11.0, and `import deepmd.pt` refuses them beside torch 2.13.0. Built here against the pinned
# torch (2026-12-03, 2 cores: ~15 minutes of compiling). Then:
#   OMP_NUM_THREADS=2 .venv-deepmd/bin/python benchmarks/deepmd_water.py
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-deepmd
.venv-deepmd/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch
PIP_CONSTRAINT=constraints.txt .venv-deepmd/bin/python -m pip install --quiet --disable-pip-version-check \
  --no-binary deepmd-kit deepmd-kit==3.2.0 e3nn
.venv-deepmd/bin/python -c "import torch, deepmd.pt; from deepmd.pt.cxx_op import ENABLE_CUSTOMIZED_OP; \
print('deepmd-kit', __import__('deepmd').__version__, 'with torch', torch.__version__, '- custom ops:', ENABLE_CUSTOMIZED_OP)"
