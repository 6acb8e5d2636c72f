"""Device and dtype names of the run configs, turned into what torch takes (torch imported only when asked)."""

from __future__ import annotations

from typing import Any

from run_config.errors import ConfigError

DTYPE_NAMES = ("float32", "bfloat16", "float16")


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
    return name


def resolve_dtype(name: str, device: str) -> Any:
    """Like `torch_dtype`, with `auto` -> bfloat16 on a GPU, float32 on the CPU."""
    if name == "auto":
        return torch_dtype("bfloat16" if device.startswith("cuda") else "float32")
    return torch_dtype(name)
