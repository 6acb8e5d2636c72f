"""Device and dtype names of the run configs, turned into what torch takes (torch imported only when asked).

The one owner of those names: every stage that loads a model types its `device` key as `Device` and its
`dtype` key as `Dtype`, and turns them into torch's with `resolve_device` / `resolve_dtype` before any work.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator

from run_config.errors import ConfigError

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DTYPE_NAMES: tuple[str, ...] = get_args(Dtype)[1:]
DEVICE_HELP = "auto (cuda when torch sees a GPU, else cpu), cpu, cuda, cuda:N, mps"
_DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device_name(value: str) -> str:
    if not _DEVICE_NAME.fullmatch(value):
        raise ValueError(f"unknown device {value!r} (choose {DEVICE_HELP})")
    return value


# A device name, checked for its spelling when the config is read; whether this machine has it is checked by
# `resolve_device` when the stage starts.
Device = Annotated[str, AfterValidator(_device_name)]


def torch_dtype(name: str) -> Any:
    """`float32`, `bfloat16` or `float16` -> the torch dtype."""
    if name not in DTYPE_NAMES:
        raise ConfigError(f"dtype: unknown dtype {name!r} (choose {', '.join(DTYPE_NAMES)})")
    import torch

    return getattr(torch, name)


def resolve_device(name: str) -> str:
    """`auto` -> cuda when available, else cpu; any other torch device name as given, once checked."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {name!r} (auto, cpu, cuda, cuda:N, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} asked for, but torch sees no CUDA GPU (use auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device: {name} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {name} asked for, but torch sees no Apple GPU (use auto or cpu)")
    return name


def resolve_dtype(name: str, device: str) -> Any:
    """Like `torch_dtype`, with `auto` -> bfloat16 on a GPU, float32 on the CPU."""
    if name == "auto":
        return torch_dtype("bfloat16" if device.startswith("cuda") else "float32")
    return torch_dtype(name)
