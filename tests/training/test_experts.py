"""One expert per cluster: sequential, finished experts skipped, an interrupted one resumed."""
from __future__ import annotations

import json
import shlex

import pytest
import transformers

from tests.training.train_helpers import tiny_args, tiny_llama, urban_records, write_split  # noqa: F401
from training.train import main


@pytest.fixture
def clusters(data_3dex, tmp_path):
    """The clustering stage's layout: DIR/clusters/cluster-{k}/{train,valid}.jsonl (two clusters)."""
    records = urban_records(data_3dex, 80)
    root = tmp_path / "clustering"
    for k, part in enumerate((records[:40], records[40:])):
        write_split(root / "clusters" / f"cluster-{k}" / "train.jsonl", part[:32], "train")
        write_split(root / "clusters" / f"cluster-{k}" / "valid.jsonl", part[32:], "valid")
    return root


def _args(tiny_llama, clusters, out):
    # train/valid files come from each cluster; the placeholders below are replaced
    args = tiny_args(tiny_llama, clusters, clusters, out)
    for flag in ("--train-file", "--valid-file"):
        i = args.index(flag)
        del args[i:i + 2]
    return [*args, "--experts", str(clusters)]


def test_experts_resume_after_interruption(tiny_llama, clusters, tmp_path, monkeypatch, capsys):
    out = tmp_path / "experts"
    original = transformers.Trainer._save_checkpoint

    def crash_after_first_checkpoint_of_expert_1(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.args.output_dir.endswith("expert-1"):
            raise KeyboardInterrupt  # the machine went away after checkpoint-2 of expert-1

    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", crash_after_first_checkpoint_of_expert_1)
    assert main(_args(tiny_llama, clusters, out)) == 130
    assert (out / "expert-0" / "manifest.json").is_file() and not (out / "expert-1" / "manifest.json").exists()
    assert (out / "expert-1" / "checkpoint-2").is_dir()
    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", original)
    mtime = (out / "expert-0" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(_args(tiny_llama, clusters, out)) == 0
    printed = capsys.readouterr().out
    assert "expert-0: skipped (finished)" in printed and "expert-1: trained" in printed
    assert (out / "expert-0" / "model.safetensors").stat().st_mtime_ns == mtime
    summary = json.loads((out / "expert-1" / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 4
    for k in (0, 1):
        folder = out / f"expert-{k}"
        assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
        assert json.loads((folder / "manifest.json").read_text())["config"]["train_file"].endswith(
            f"cluster-{k}/train.jsonl")


def test_print_commands(tiny_llama, clusters, tmp_path, capsys):
    out = tmp_path / "experts"
    assert main([*_args(tiny_llama, clusters, out), "--print-commands", "--num-gpus", "8",
                 "--deepspeed", "run_config/ds_zero3.json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and not out.exists()
    argv = shlex.split(lines[1])
    assert argv[:4] == ["deepspeed", "--num_gpus", "8", "training/train.py"]
    assert argv[argv.index("--output-dir") + 1] == str(out / "expert-1")
    assert argv[argv.index("--train-file") + 1].endswith("cluster-1/train.jsonl")
    assert argv[argv.index("--deepspeed") + 1] == "run_config/ds_zero3.json"


def test_missing_cluster_folder_is_named(tiny_llama, tmp_path, capsys):
    assert main(_args(tiny_llama, tmp_path, tmp_path / "o")) == 1
    assert "clusters: no cluster-{k} folders" in capsys.readouterr().err
