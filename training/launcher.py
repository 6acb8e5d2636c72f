"""The `deepspeed` launcher command of a training stage (train, finetune-router), found as a module of the
installed package (`python -m`)."""

from __future__ import annotations


def deepspeed_argv(
    num_gpus: int, hostfile: str | None = None, num_nodes: int = 1, module: str = "training.train"
) -> list[str]:
    """The launcher running `module` on `num_gpus` GPUs; with a hostfile, on `num_gpus` GPUs of each of its first
    `num_nodes` hosts (DeepSpeed's own multi-node launch)."""
    nodes = ["--hostfile", hostfile, "--num_nodes", str(num_nodes)] if hostfile else []
    return ["deepspeed", *nodes, "--num_gpus", str(num_gpus), "--module", module]
