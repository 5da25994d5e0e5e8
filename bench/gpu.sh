#!/usr/bin/env bash
# GPU figures in one short run (see bench/gpu.py). On the lent GPU machine, whose python has torch,
# transformers and timm but not open_clip or zarr: carry those as wheels in .whl/ (bench/gpu_wheels.sh
# downloads them here) and this script installs them into /tmp/site first.
#   bash bench/gpu.sh               # CUDA
#   bash bench/gpu.sh --cpu-smoke   # tiny sizes on CPU, to check the script before a GPU run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$PY" bench/gpu.py "$@"
