#!/usr/bin/env bash
# Makes the virtual environment that runs the authors' released BRAC+ code
# (rlutils-python 0.0.3, TensorFlow 2.15 on the CPU) for benchmarks/side_by_side.py.
#
#   bash benchmarks/peer/make_env.sh [VENV_DIR]
#
# VENV_DIR defaults to $BRACPLUS_PEER_VENV, else ~/.cache/bracplus_jax/peer-venv.
# Idempotent: an existing venv is reused and pip only installs what is missing.
# Every package is pinned. torch and mujoco-py are deliberately not installed:
# the benchmark never runs a PyTorch runner or steps an environment, and
# benchmarks/peer/shims/ stands in for what rlutils only imports.
set -euo pipefail

VENV="${1:-${BRACPLUS_PEER_VENV:-$HOME/.cache/bracplus_jax/peer-venv}}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" - <<'PY'
import sys
if not ((3, 9) <= sys.version_info[:2] <= (3, 11)):
  sys.exit(f"TensorFlow 2.15 needs Python 3.9-3.11, {sys.executable} is {sys.version.split()[0]}; "
           "set PYTHON=/path/to/python3.11")
PY

if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi

# The authors' agent and the TensorFlow stack it was written for, plus what
# rlutils imports at import time (gym, numba, scikit-learn, tensorboardX, ...).
# TensorFlow 2.15 is built against numpy 1.x. gym 0.25.2 is the newest gym whose
# seeding RNG still has the randint() that rlutils' replay buffer samples with.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "rlutils-python==0.0.3" \
  "tensorflow-cpu==2.15.*" \
  "tensorflow-probability==0.23.*" \
  "numpy==1.26.4" \
  "gym==0.25.2" \
  "scipy==1.13.1" \
  "scikit-learn==1.5.2" \
  "numba==0.60.0" \
  "tensorboardX==2.6.2.2" \
  "cloudpickle==3.0.0" \
  "psutil==6.0.0" \
  "docstring_parser==0.16" \
  "tqdm==4.66.5"

"$VENV/bin/python" - <<'PY'
import importlib.metadata as metadata
import sys
names = ("rlutils-python", "tensorflow-cpu", "tensorflow-probability", "numpy", "gym")
print("peer venv ready:", sys.prefix)
print("  python", sys.version.split()[0], "|", ", ".join(f"{n} {metadata.version(n)}" for n in names))
print("  python executable:", sys.executable)
PY
