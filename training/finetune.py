"""The original `training/finetune.py` command line (`--model_config JSON [--deepspeed DS] [--use_lora]`,
also under `deepspeed --num_gpus=N`), run as the `train` stage; the mapping is
scripts/original_commands.py (docs/original_commands.md).

Run as a file it needs the toolkit importable (`pip install -e .`, or PYTHONPATH at the repo root).
"""

from __future__ import annotations

import sys

from scripts.original_commands import finetune_main

if __name__ == "__main__":
    sys.exit(finetune_main())
