"""The GPU check's dry run (CPU, tiny shapes) through scripts/gpu_check.sh, and its payload plan."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from scripts.gpu_payload import WHEELS, check_payload, pinned_versions, wheel_plan
from scripts.gpu_steps import STEPS, vllm_importable
from tests.conftest import REPO_ROOT

LINE = re.compile(r"^step=(\w+) (ratio=(\S+) goal=(\S+)|skipped: .+|failed: .+)")


def test_wheel_plan_follows_requirements_and_leaves_out_pot():
    pins = pinned_versions()
    plan = {name: pin for name, pin, _ in wheel_plan()}
    assert plan["deepspeed"] == pins["deepspeed"] and plan["pydantic"] == pins["pydantic"]
    assert plan["faiss-cpu"] == pins["faiss-cpu"] and plan["nltk"] == pins["nltk"]
    assert "pot" not in {name.lower() for name, _ in WHEELS}  # 32.9 MB: over the cap with faiss, needed by no step
    assert {name for name, how in WHEELS if how == "build"} == {"deepspeed", "rouge_score"}


def test_an_incomplete_payload_is_named(tmp_path):
    assert "manifest.json: missing" in check_payload(tmp_path)
    (tmp_path / "manifest.json").write_text('{"wheels": [["nltk", "3.10.4", "nltk-3.10.4-py3-none-any.whl"]]}')
    assert check_payload(tmp_path).endswith("missing (nltk)")
    assert "not the planned ones" in check_payload(tmp_path, wheel_plan())


@pytest.mark.slow
def test_dry_run_prints_every_step_line():
    """Every step runs on the CPU; the budget is stretched so a loaded machine does not time it out
    (the default budget is the 2-minute CI contract, not asserted here)."""
    env = {**os.environ, "LMLEXICON_CACHE": os.environ.get("LMLEXICON_CACHE", str(REPO_ROOT / ".cache"))}
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run", "--budget", "600"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=700,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [s for s in proc.stdout.splitlines() if s.startswith("step=")]
    found = {LINE.match(s).group(1): s for s in lines}
    assert sorted(found) == sorted(n for _, _, _, names in STEPS.values() for n in names)
    assert all(s.endswith("[dry-run: cpu, tiny shapes]") for s in lines)
    for name in ("moe_domain_vs_dense", "moe_token_top2_vs_dense", "train_bf16_vs_fp32", "zero3_vs_bf16"):
        ratio = float(LINE.match(found[name]).group(3))
        assert ratio > 0, found[name]
    assert "max |diff| 0.0000" in found["bertscore_gpu_vs_cpu"]  # cpu against cpu: the same scores
    assert found["gpu_tests"].startswith("step=gpu_tests skipped: ") and "needs a CUDA GPU" in found["gpu_tests"]
    if not vllm_importable():
        assert (
            found["vllm_dense_vs_hf"]
            == "step=vllm_dense_vs_hf skipped: vllm not importable [dry-run: cpu, tiny shapes]"
        )
    assert proc.stdout.startswith("payload: ")  # complete .whl/, or the plan and the assets copied from the cache
