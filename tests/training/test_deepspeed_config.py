"""DeepSpeed ZeRO-2 / ZeRO-3 on the CPU through the real `deepspeed` launcher (2 ranks, gloo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT
from tests.helpers.launcher import DEEPSPEED, launcher_env, run_launcher
from tests.helpers.train import tiny_args
from training.sft.trainer import checkpoint_problem


def _check_consolidated(out: Path, tiny_llama: Path) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama)
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        assert p.shape == q.shape and p.numel() > 0, name  # full tensors, not ZeRO partitions
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))  # trained
    return json.loads((out / "train_summary.json").read_text())


@pytest.mark.skipif(not DEEPSPEED.is_file(), reason="deepspeed launcher not installed")
# The launch commands the toolkit prints use `--module training.train`; users may type the file path. Both find
# the packages through the install (here PYTHONPATH, set by _env, stands in for `pip install -e .`).
@pytest.mark.parametrize(("stage", "script"), [(2, ["--module", "training.train"]), (3, ["training/train.py"])])
def test_zero_through_launcher(stage, script, tiny_llama, urban_splits, tmp_path):
    train, valid = urban_splits
    out = tmp_path / f"zero{stage}"
    proc = run_launcher(
        [
            *script,
            *tiny_args(
                tiny_llama,
                train,
                valid,
                out,
                "--max-steps",
                "2",
                "--eval-times",
                "1",
                "--keep-checkpoints",
                "--deepspeed",
                f"run_config/ds_zero{stage}.json",
            ),
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = _check_consolidated(out, tiny_llama)
    assert summary["plan"]["world_size"] == 2 and summary["global_step"] == 2
    assert summary["learning_rate"]["peak"] == pytest.approx(1e-3)  # the run config's schedule, not DeepSpeed's
    assert len(summary["valid_bleu"]) == 1
    ckpt = out / "checkpoint-2"
    assert checkpoint_problem(ckpt) is None  # a complete DeepSpeed checkpoint: `latest` names its states
    (ckpt / "latest").unlink()  # as when a rank was killed before the save was committed
    assert checkpoint_problem(ckpt).startswith("no complete DeepSpeed checkpoint")


@pytest.mark.skipif(not DEEPSPEED.is_file(), reason="deepspeed launcher not installed")
def test_zero3_without_launcher_via_main_py(tiny_llama, urban_splits, tmp_path):
    train, valid = urban_splits
    out = tmp_path / "zero3-main"
    cmd = [
        sys.executable,
        "main.py",
        "train",
        *tiny_args(
            tiny_llama,
            train,
            valid,
            out,
            "--max-steps",
            "2",
            "--no-do-validation",
            "--deepspeed",
            "run_config/ds_zero3.json",
        ),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=launcher_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _check_consolidated(out, tiny_llama)["plan"]["world_size"] == 1
