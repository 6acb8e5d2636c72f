"""Finetune a causal LM (or one expert per cluster) for definition modeling.

`python main.py train --config run_config/train_smollm2_cpu.json`, the same under
`deepspeed --num_gpus N --module training.train ...`, `--experts <clustering output dir>` for one expert per
cluster, `--objective dskd` for decoder sense-knowledge distillation (training.dskd).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from pathlib import Path

from run_config.cli import config_from_args, run_main, skip_finished, stage_parser
from run_config.errors import ConfigError
from run_config.loader import ignored_legacy_keys, read_json_config
from training.sft.config import TrainConfig

log = logging.getLogger("training.train")


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("train", __doc__, TrainConfig, skip=("report_to",))
    parser.add_argument(
        "--report-to",
        "--report_to",
        dest="report_to",
        choices=["none", "wandb", "tensorboard"],
        default=None,
        help="experiment tracker (wandb runs offline without WANDB_API_KEY)",
    )
    parser.add_argument(
        "--experts",
        metavar="DIR",
        help="clustering output: train one expert per DIR/clusters/cluster-{k}/ into OUTPUT_DIR/expert-{k}/",
    )
    parser.add_argument(
        "--print-commands",
        action="store_true",
        help="with --experts: print the multi-GPU deepspeed command of each expert and exit",
    )
    parser.add_argument("--num-gpus", type=int, default=8, help="GPUs per expert in --print-commands (default: 8)")
    return parser


def requested_objective(argv: list[str]) -> str:
    """The objective named by `--objective` (last wins) or by the config file, before full validation
    (the DSKD objective has its own config schema)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--objective")
    pre.add_argument("--config")
    args, _ = pre.parse_known_args(argv)
    if args.objective:
        return args.objective
    if args.config and Path(args.config).is_file():
        return str(read_json_config(args.config)[0].get("objective", "sft"))
    return "sft"


def strip_objective(argv: list[str]) -> list[str]:
    """`argv` without `--objective X` / `--objective=X`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--objective":
            skip = True
        elif not a.startswith("--objective="):
            out.append(a)
    return out


def run_dskd(argv: list[str]) -> int:
    """Delegate to the `distill` stage (training.dskd.cli), imported only when asked for."""
    from training.dskd import cli

    return cli.main(strip_objective(argv))


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, TrainConfig)
    if args.config:
        ignored = ignored_legacy_keys(args.config, TrainConfig)
        if ignored:
            log.info("%s: original keys without effect here: %s", args.config, ", ".join(ignored))
    if cfg.report_to == "wandb" and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    from training.sft import experts, trainer

    if args.experts:
        if args.print_commands:
            print("\n".join(experts.launcher_commands(cfg, args.experts, args.config, args.num_gpus)))
            return 0
        finished = lambda sub: not sub.force and trainer.is_finished(sub)
        rows = list(experts.train_experts(cfg, args.experts, trainer.train, finished))
        for row in rows:
            log.info("expert-%s: %s -> %s", row["expert"], row["status"], row["output_dir"])
        done = Counter(row["status"] for row in rows)
        print(f"train: {len(rows)} experts ({', '.join(f'{n} {s}' for s, n in done.items())}) -> {cfg.output_dir}")
        return 0
    if args.print_commands:
        raise ConfigError("--print-commands needs --experts DIR")
    if skip_finished("train", cfg, trainer.is_finished):
        return 0
    summary = trainer.train(cfg)
    print(
        f"train: {summary['global_step']} steps, train loss {summary['train_loss']:.4f}, best valid BLEU "
        f"{summary['best_bleu']} -> {cfg.output_dir}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if requested_objective(argv) == "dskd":
        return run_dskd(argv)
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
