"""The original `inference/main.py` command line (`--task ... --model ... --input_path ...`), run as the
`infer` and `evaluate` stages; the mapping is scripts/original_commands.py (docs/original_commands.md).

Run as a file it needs the toolkit importable (`pip install -e .`, or PYTHONPATH at the repo root).
"""

from __future__ import annotations

import sys

from scripts.original_commands import main

if __name__ == "__main__":
    sys.exit(main(prog="inference/main.py"))
