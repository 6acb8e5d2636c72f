#!/usr/bin/env bash
# Set up (idempotent), then run the whole method end to end on the embedded WordNet lexicon with
# SmolLM2-135M on CPU: preprocess -> cluster (N=4) -> 4 experts + dense baseline -> merge ->
# router finetuning -> infer (domain routing) -> evaluate -> Table-2-style report.
# Extra arguments go to the pipeline (e.g. --work-dir runs/demo2, --num-clusters 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
exec .venv/bin/python main.py pipeline --config run_config/pipeline_demo.json "$@"
