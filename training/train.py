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
from training.hostfile import check_hostfile
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
    parser.add_argument(
        "--num-gpus", type=int, default=8, help="GPUs per expert (per node) in --print-commands and --launcher slurm"
    )
    parser.add_argument(
        "--hostfile", help="with --print-commands: DeepSpeed hostfile (`HOST slots=N` lines) of a multi-node run"
    )
    parser.add_argument("--num-nodes", type=int, default=1, help="with --hostfile: nodes per expert (default: 1)")
    parser.add_argument(
        "--launcher",
        choices=["none", "slurm"],
        default="none",
        help="with --experts: slurm writes OUTPUT_DIR/slurm/train_experts.sbatch, one expert per array task",
    )
    parser.add_argument(
        "--sbatch-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --launcher slurm: an `#SBATCH --KEY=VALUE` line (partition=gpu, time=48:00:00; repeatable)",
    )
    return parser


def check_launch_flags(args: argparse.Namespace) -> None:
    """Refuse launcher flags that would be ignored, and a hostfile that cannot work, before any work."""
    if not args.experts and (args.print_commands or args.launcher != "none"):
        raise ConfigError(f"{'--print-commands' if args.print_commands else '--launcher'} needs --experts DIR")
    if args.print_commands and args.launcher != "none":
        raise ConfigError("--print-commands prints deepspeed commands: drop --launcher")
    if (args.hostfile or args.num_nodes != 1) and not args.print_commands:
        raise ConfigError("--hostfile/--num-nodes go with --print-commands (multi-node deepspeed commands)")
    if args.num_nodes < 1 or args.num_gpus < 1:
        raise ConfigError("--num-nodes and --num-gpus must be at least 1")
    if args.num_nodes > 1 and not args.hostfile:
        raise ConfigError(f"--num-nodes {args.num_nodes} needs --hostfile (the hosts to run on)")
    if args.hostfile:
        check_hostfile(args.hostfile, args.num_nodes, args.num_gpus)


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
    check_launch_flags(args)
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
            cmds = experts.launcher_commands(
                cfg, args.experts, args.config, args.num_gpus, args.hostfile, args.num_nodes
            )
            print("\n".join(cmds))
            return 0
        if args.launcher == "slurm":
            from training.sft.slurm import write_array_script

            script = write_array_script(cfg, args.experts, args.num_gpus, args.sbatch_option)
            print(f"train: sbatch array script of {len(experts.discover_clusters(args.experts))} experts -> {script}")
            return 0
        finished = lambda sub: not sub.force and trainer.is_finished(sub)
        rows = list(experts.train_experts(cfg, args.experts, trainer.train, finished))
        for row in rows:
            log.info("expert-%s: %s -> %s", row["expert"], row["status"], row["output_dir"])
        done = Counter(row["status"] for row in rows)
        print(f"train: {len(rows)} experts ({', '.join(f'{n} {s}' for s, n in done.items())}) -> {cfg.output_dir}")
        return 0
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
