"""The `distill` stage, DSKD: `python main.py distill --config run_config/dskd_*.json` (= `train --objective dskd`).

Builds the sense dictionary and lexical relations (objective dskd), trains the student, evaluates its
perplexity on the valid split and writes `<output_dir>/{student/, metrics.json, train_log.jsonl,
relations.json, manifest.json}` and `<sense_dir>/{senses.safetensors, words.json, occurrences/, manifest.json}`.
"""

from __future__ import annotations

import argparse
import json
import sys

from run_config.cli import config_from_args, run_main, skip_finished, stage_parser
from training.dskd.config import DSKDConfig


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("distill", __doc__, DSKDConfig)
    parser.add_argument(
        "--senses-only", action="store_true", help="only build the sense dictionary and relations, then stop"
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, DSKDConfig)
    from training.dskd.trainer import is_up_to_date, run

    if not args.senses_only and skip_finished("distill", cfg, is_up_to_date):
        return 0
    result = run(cfg, senses_only=args.senses_only)
    print(json.dumps(result, indent=2))
    print(f"distill: outputs in {cfg.output_dir}" + ("" if args.senses_only else "/student"))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
