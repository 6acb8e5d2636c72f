#!/usr/bin/env bash
# The prepared GPU check (one H200; no model hub, no package registry there): ratio lines within 8 minutes.
#
#   bash scripts/gpu_check.sh --prepare   # here, with the network: wheels + configs + tokenizers + rows -> .whl/ (< 40 MiB)
#   bash scripts/gpu_check.sh --dry-run   # here or in CI, CPU only, < 2 minutes: every step at tiny sizes
#   bash scripts/gpu_check.sh             # on the device: install .whl/*.whl, run every step on cuda
#
# On the device machine (run tool), after --prepare here: carry [".whl"], command
#   set -o pipefail; bash scripts/gpu_check.sh 2>&1 | tee $OUT/gpu_check.log
# with timeout_s 570 (the steps' budget is 480 s, the wheels install in ~20 s). With the machine's start
# (1-2 minutes) one run takes ~11 of the 15 minutes of device time: a second full run does not fit, so
# rerun only what failed (extra arguments go to `python -m scripts.gpu_check`: --only zero3 mauve, --budget 200).
#
# Models are random-initialised from SmolLM2-135M's / all-MiniLM-L6-v2's config and real tokenizer (the
# weights cannot travel). Each step (scripts/gpu_steps.py) runs in its own process under its own timeout and
# prints `step=<name> ratio=<x> goal=<y> (...)`, `step=<name> skipped: <reason>` or `step=<name> failed: <why>`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
case "${1:-}" in
  --prepare)
    shift
    exec "$PY" -m scripts.gpu_payload "$@"
    ;;
  --dry-run)
    shift
    exec "$PY" -m scripts.gpu_check --dry-run "$@"
    ;;
esac
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .whl/site .whl/*.whl
export PYTHONPATH="$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m scripts.gpu_payload --check --on-device
exec "$PY" -m scripts.gpu_check "$@"
