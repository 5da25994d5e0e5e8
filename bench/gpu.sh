#!/usr/bin/env bash
# GPU figures in one run (see bench/gpu.py), written to bench/results/gpu-<date>.md.
#   bash bench/gpu.sh               # CUDA: every figure (< 10 min on one H200-class GPU)
#   bash bench/gpu.sh --quick       # CUDA: fewer iterations and smaller training scale (< 4 min)
#   bash bench/gpu.sh --cpu-smoke   # tiny sizes on CPU, to check the script before a GPU run (in the tests)
#   bash bench/gpu.sh --which-python  # the interpreter it would use
# The project's python, from any clone: $PY if set, else this clone's .venv, else the .venv of the main
# clone this worktree belongs to, else python3. A machine whose python lacks open_clip or zarr: carry them
# as wheels in .whl/ (bench/gpu_wheels.sh downloads them) and they are installed into /tmp/site first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
find_python() {
  if [ -n "${PY:-}" ]; then echo "$PY"; return; fi
  local common
  common="$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)"
  for cand in "$ROOT/.venv/bin/python" "${common%/.git}/.venv/bin/python"; do
    if [ -x "$cand" ]; then echo "$cand"; return; fi
  done
  echo python3
}
PY="$(find_python)"
if [ "${1:-}" = "--which-python" ]; then echo "$PY"; exit 0; fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "bench/gpu.sh: $PY cannot import torch: set PY to the project's python or create $ROOT/.venv" >&2
  exit 1
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" bench/gpu.py "$@"
