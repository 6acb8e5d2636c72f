"""`train --experts DIR --launcher slurm`: an sbatch array script, one expert per task, run here task by task."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from run_config.loader import load_config
from tests.helpers.train import experts_args
from training.sft.config import TrainConfig
from training.train import main

ROOT = Path(__file__).resolve().parents[3]


def _generate(tiny_llama, clusters, out, capsys, *extra):
    argv = [*experts_args(tiny_llama, clusters, out), "--launcher", "slurm", *extra]
    assert main(argv) == 0
    script = out / "slurm" / "train_experts.sbatch"
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"train: sbatch array script of 2 experts -> {script}"
    return script


def _task(script: Path, task: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` of this environment
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)


def test_array_script_lines(tiny_llama, clusters, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "experts"
    script = _generate(
        tiny_llama, clusters, out, capsys, "--num-gpus", "8", "--deepspeed", "run_config/ds_zero3.json",
        "--sbatch-option", "partition=gpu", "--sbatch-option", "time=48:00:00",
    )  # fmt: skip
    lines = script.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#!/bin/bash" and os.access(script, os.X_OK)
    sbatch = [line for line in lines if line.startswith("#SBATCH ")]
    assert sbatch == [
        "#SBATCH --job-name=lmlexicon-experts",
        "#SBATCH --array=0,1",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --gpus-per-node=8",
        f"#SBATCH --output={out / 'slurm' / 'expert-%a.log'}",
        "#SBATCH --open-mode=append",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=48:00:00",
        "#SBATCH --requeue",
    ]
    assert f"cd {ROOT}" in lines
    config = out / "slurm" / "train.json"
    resolved = load_config(config, TrainConfig)  # the resolved run config, command-line flags included
    assert (resolved.max_steps, resolved.cutoff_len, resolved.deepspeed) == (4, 64, "run_config/ds_zero3.json")
    for k in (0, 1):
        branch = next(line for line in lines if line.startswith(f"  {k}) exec "))
        argv = shlex.split(branch.removeprefix(f"  {k}) exec ").removesuffix(" ;;"))
        assert argv[:5] == ["deepspeed", "--num_gpus", "8", "--module", "training.train"]
        assert argv[argv.index("--config") + 1] == str(config)
        assert argv[argv.index("--output-dir") + 1] == str(out / f"expert-{k}")
        assert argv[argv.index("--train-file") + 1] == str(clusters / "clusters" / f"cluster-{k}" / "train.jsonl")
        assert argv[argv.index("--run-name") + 1] == f"expert-{k}"
    assert not (out / "expert-0").exists()


def test_settings_a_slurm_array_cannot_use_are_refused(tiny_llama, clusters, tmp_path, capsys):
    """Config errors exit 2 before anything is written."""
    out = tmp_path / "experts"
    base = [*experts_args(tiny_llama, clusters, out), "--launcher", "slurm"]
    assert main([*base, "--force"]) == 2
    assert "force with --launcher slurm: a requeued task would start its expert over" in capsys.readouterr().err
    assert main([*base, "--sbatch-option", "--partition gpu"]) == 2
    assert "--sbatch-option '--partition gpu': expected KEY=VALUE" in capsys.readouterr().err
    assert main([*base, "--print-commands"]) == 2
    assert "--print-commands prints deepspeed commands: drop --launcher" in capsys.readouterr().err
    assert not (out / "slurm").exists()


def test_array_tasks_run_locally_each_training_its_expert(tiny_llama, clusters, tmp_path, capsys, monkeypatch):
    """Tasks 0 and 1 each train a real tiny expert into their own folder; a rerun task skips its finished expert,
    and a task id without a cluster fails."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "experts"
    script = _generate(tiny_llama, clusters, out, capsys, "--num-gpus", "1")
    for k in (0, 1):
        done = _task(script, k)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1].startswith("train: 4 steps, train loss ")
        manifest = json.loads((out / f"expert-{k}" / "manifest.json").read_text())
        assert manifest["config"]["train_file"].endswith(f"cluster-{k}/train.jsonl")
        assert (out / f"expert-{k}" / "model.safetensors").is_file()
    mtime = (out / "expert-0" / "model.safetensors").stat().st_mtime_ns
    again = _task(script, 0)  # the task requeued after its expert finished
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip() == f"train: {out / 'expert-0'} is up to date (use --force to redo)"
    assert (out / "expert-0" / "model.safetensors").stat().st_mtime_ns == mtime
    missing = _task(script, 7)
    assert missing.returncode == 2 and "no expert for SLURM_ARRAY_TASK_ID=7" in missing.stderr
