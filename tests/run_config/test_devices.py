"""Device and dtype names: the one map from config names to torch, with one-line errors for bad names."""

from __future__ import annotations

import pytest
import torch

from run_config.devices import DTYPE_NAMES, resolve_device, resolve_dtype, torch_dtype
from run_config.errors import ConfigError


def test_every_dtype_name_maps_to_its_torch_dtype():
    assert [torch_dtype(n) for n in DTYPE_NAMES] == [torch.float32, torch.bfloat16, torch.float16]
    with pytest.raises(ConfigError, match=r"dtype: unknown dtype 'bf16' \(choose float32, bfloat16, float16\)"):
        torch_dtype("bf16")


def test_auto_dtype_follows_the_device():
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("auto", "cuda:0") is torch.bfloat16
    assert resolve_dtype("float16", "cpu") is torch.float16


def test_auto_device_is_cuda_only_when_torch_sees_one():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="device: unknown device 'gpu'"):
        resolve_device("gpu")


def test_a_gpu_torch_cannot_see_is_refused():
    beyond = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ConfigError, match=f"device: {beyond} asked for"):
        resolve_device(beyond)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")
