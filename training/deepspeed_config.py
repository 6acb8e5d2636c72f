"""DeepSpeed JSON configs: checked so the run config stays the one source of optimizer and schedule."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from run_config.errors import ConfigError
from run_config.loader import read_json_config

log = logging.getLogger(__name__)


def load_deepspeed_config(path: str | Path) -> dict[str, Any]:
    """Read a DeepSpeed JSON and reject what would silently override the run config (the original's bug 27).

    A `scheduler` block would replace the cosine schedule, and an `optimizer` block with fixed values
    would replace AdamW's settings. An optimizer block whose params are all "auto" (DeepSpeed's own
    AdamW, e.g. for CPU offload) is allowed: its values are filled from the run config. ZeRO-3 always
    gathers the 16-bit weights on save so the output is a consolidated HF checkpoint.
    """
    cfg, _text = read_json_config(path)
    if "scheduler" in cfg:
        raise ConfigError(
            f"{path}: scheduler: remove it; the run config's lr_scheduler_type/warmup_ratio "
            "are the one schedule (a DeepSpeed scheduler would silently replace them)"
        )
    opt = cfg.get("optimizer")
    if opt is not None:
        fixed = sorted(k for k, v in opt.get("params", {}).items() if v != "auto")
        if fixed:
            raise ConfigError(
                f'{path}: optimizer.params: {", ".join(fixed)} must be "auto" (filled from the '
                "run config), or drop the optimizer block"
            )
    zero = cfg.get("zero_optimization", {})
    if zero.get("stage") == 3 and zero.get("stage3_gather_16bit_weights_on_model_save") is not True:
        log.info("%s: setting stage3_gather_16bit_weights_on_model_save (consolidated HF output)", path)
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return cfg


def zero_stage(ds_config: dict[str, Any] | None) -> int:
    """ZeRO stage of a DeepSpeed config (0 without one)."""
    return int((ds_config or {}).get("zero_optimization", {}).get("stage", 0))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_single_process_env() -> bool:
    """Without a launcher, set the torch.distributed variables of a 1-process world (DeepSpeed
    otherwise tries MPI discovery). Returns True when it had to."""
    if "RANK" in os.environ:
        return False
    os.environ.update(
        {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": os.environ.get("MASTER_PORT") or str(free_port()),
        }
    )
    return True


def prepare_deepspeed(path: str | Path | None, gpu: bool) -> dict[str, Any] | None:
    """The checked DeepSpeed config of a run (None without one), its process world set up: DeepSpeed's CPU
    accelerator when the run is not on a GPU, a 1-process world without a launcher."""
    if not path:
        return None
    ds_config = load_deepspeed_config(path)
    if not gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if ensure_single_process_env():
        log.info("no launcher: DeepSpeed runs as a 1-process world (use `deepspeed --num_gpus N` for more)")
    return ds_config


def init_zero3(ds_config: dict[str, Any] | None, gpu: bool) -> None:
    """Start torch.distributed before a ZeRO-3 model is loaded (zero.Init partitions while loading), after
    TrainingArguments exist; nothing to do below ZeRO-3."""
    if zero_stage(ds_config) != 3:
        return
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo")
