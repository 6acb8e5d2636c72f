"""The real `deepspeed` launcher of the tests: 2 CPU ranks (gloo), the repo found through PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT
from training.deepspeed_config import free_port

DEEPSPEED = Path(sys.executable).parent / "deepspeed"


def launcher_env() -> dict[str, str]:
    """This environment for a launcher run: no rank variables of an outer run, DeepSpeed's CPU accelerator,
    one thread per rank, PYTHONPATH standing in for `pip install -e .`."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO_ROOT),
        PATH=f"{DEEPSPEED.parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run_launcher(script: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """`deepspeed --num_gpus 2 --master_port <free> SCRIPT...` from the repo root, output captured."""
    cmd = [str(DEEPSPEED), "--num_gpus", "2", "--master_port", str(free_port()), *script]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=launcher_env(), capture_output=True, text=True, timeout=timeout)
