#!/usr/bin/env bash
# Set up (idempotent), then run the toolkit on the embedded default lexicon (WordNet 3.0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
OUT="${1:-runs/demo}"
.venv/bin/python main.py preprocess --builtin wordnet --output-dir "$OUT/data"
.venv/bin/python main.py preprocess --stats "$OUT/data/all.jsonl"
