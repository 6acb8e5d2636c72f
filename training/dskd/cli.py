"""The `distill` stage, DSKD: `python main.py distill --config run_config/dskd_*.json` (= `train --objective dskd`).

Builds the sense dictionary and lexical relations (objective dskd), trains the student, evaluates its
perplexity on the valid split and writes `<output_dir>/{student/, metrics.json, train_log.jsonl,
relations.json, manifest.json}` and `<sense_dir>/{senses.safetensors, words.json, occurrences/, manifest.json}`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    print(summary_line(cfg, result, args.senses_only))
    return 0


def summary_line(cfg: DSKDConfig, result: dict, senses_only: bool) -> str:
    """The one stdout line of a run (every number is in <output_dir>/metrics.json)."""
    if senses_only:
        return f"distill: {result['sense_words']} words, {result['senses']} senses -> {cfg.senses_path}"
    valid = f", valid perplexity {result['valid']['perplexity']:.2f}" if "valid" in result else ""
    margin = result.get("margin")
    gamma = f", gamma {margin['gamma']:.4g} ({margin['source'].split(':')[0]})" if margin else ""
    return (
        f"distill: {result['train_examples']} examples, {result['final']['step']} steps, "
        f"final loss {result['final']['loss']:.4f}{gamma}{valid} -> {Path(cfg.output_dir) / 'student'}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
