"""One expert per cluster: sequential, finished experts skipped, an interrupted one resumed."""

from __future__ import annotations

import json
import logging
import shlex

import transformers

from tests.helpers.train import experts_args
from training.train import main


def test_experts_resume_after_interruption(tiny_llama, clusters, tmp_path, monkeypatch, capsys, caplog):
    out = tmp_path / "experts"
    original = transformers.Trainer._save_checkpoint

    def crash_after_first_checkpoint_of_expert_1(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.args.output_dir.endswith("expert-1"):
            raise KeyboardInterrupt  # the machine went away after checkpoint-2 of expert-1

    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", crash_after_first_checkpoint_of_expert_1)
    assert main(experts_args(tiny_llama, clusters, out)) == 130
    assert (out / "expert-0" / "manifest.json").is_file() and not (out / "expert-1" / "manifest.json").exists()
    assert (out / "expert-1" / "checkpoint-2").is_dir()
    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", original)
    mtime = (out / "expert-0" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="training.train"):
        assert main(experts_args(tiny_llama, clusters, out)) == 0
    last = capsys.readouterr().out.splitlines()[-1]  # above it: the HF Trainer's own loss lines
    assert last == f"train: 2 experts (1 skipped (finished), 1 trained) -> {out}"
    assert "expert-0: skipped (finished)" in caplog.text and "expert-1: trained" in caplog.text
    assert (out / "expert-0" / "model.safetensors").stat().st_mtime_ns == mtime
    summary = json.loads((out / "expert-1" / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 4
    for k in (0, 1):
        folder = out / f"expert-{k}"
        assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
        assert json.loads((folder / "manifest.json").read_text())["config"]["train_file"].endswith(
            f"cluster-{k}/train.jsonl"
        )


def test_print_commands(tiny_llama, clusters, tmp_path, capsys):
    out = tmp_path / "experts"
    assert (
        main(
            [
                *experts_args(tiny_llama, clusters, out),
                "--print-commands",
                "--num-gpus",
                "8",
                "--deepspeed",
                "run_config/ds_zero3.json",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and not out.exists()
    argv = shlex.split(lines[1])
    assert argv[:5] == ["deepspeed", "--num_gpus", "8", "--module", "training.train"]
    assert argv[argv.index("--output-dir") + 1] == str(out / "expert-1")
    assert argv[argv.index("--train-file") + 1].endswith("cluster-1/train.jsonl")
    assert argv[argv.index("--deepspeed") + 1] == "run_config/ds_zero3.json"


def test_missing_cluster_folder_is_named(tiny_llama, tmp_path, capsys):
    assert main(experts_args(tiny_llama, tmp_path, tmp_path / "o")) == 1
    assert "clusters: no cluster-{k} folders" in capsys.readouterr().err


def test_cluster_without_valid_rows_validates_on_a_hold_out(tiny_llama, clusters, tmp_path, capsys):
    """Centroid routing is not balanced: cluster-1 got no valid rows. Its expert validates on a seeded
    hold-out of its own train rows (recorded in its summary); cluster-0's expert uses its valid file."""
    (clusters / "clusters" / "cluster-1" / "valid.jsonl").write_text("", encoding="utf-8")
    out = tmp_path / "experts"
    assert main(experts_args(tiny_llama, clusters, out)) == 0
    s0, s1 = (json.loads((out / f"expert-{k}" / "train_summary.json").read_text()) for k in range(2))
    assert s0["valid_holdout"] is None and s0["valid"]["examples"] + s0["valid"]["dropped_prompt_too_long"] == 8
    holdout = s1["valid_holdout"]
    assert holdout["from"].endswith("cluster-1/train.jsonl") and (holdout["fraction"], holdout["seed"]) == (0.1, 42)
    assert holdout["rows"] >= 3 and holdout["rows"] + holdout["train_rows_left"] == 32
    assert s1["train"]["examples"] + s1["train"]["dropped_prompt_too_long"] == holdout["train_rows_left"]
    assert len(s1["valid_bleu"]) == 2
    capsys.readouterr()
    assert main([*experts_args(tiny_llama, clusters, out), "--print-commands"]) == 0
    argv = shlex.split(capsys.readouterr().out.strip().splitlines()[1])
    assert "--valid-file" not in argv and argv[argv.index("--valid-holdout") + 1] == "0.1"


def test_print_commands_across_nodes(tiny_llama, clusters, tmp_path, capsys):
    """With a hostfile, each expert's command is DeepSpeed's multi-node launch of the first `--num-nodes` hosts."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=8\nnode-b slots=8\nnode-c slots=8\n", encoding="utf-8")
    out = tmp_path / "experts"
    flags = ["--print-commands", "--hostfile", str(hostfile), "--num-nodes", "2", "--num-gpus", "8"]
    assert main([*experts_args(tiny_llama, clusters, out), *flags, "--deepspeed", "run_config/ds_zero3.json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and not out.exists()
    for k, line in enumerate(lines):
        argv = shlex.split(line)
        assert argv[:9] == [
            "deepspeed",
            "--hostfile",
            str(hostfile),
            "--num_nodes",
            "2",
            "--num_gpus",
            "8",
            "--module",
            "training.train",
        ]
        assert argv[argv.index("--output-dir") + 1] == str(out / f"expert-{k}")
        assert argv[argv.index("--deepspeed") + 1] == "run_config/ds_zero3.json"


def test_bad_multi_node_settings_are_refused_before_any_work(tiny_llama, clusters, tmp_path, capsys):
    """A malformed or missing hostfile is a data error (exit 1, file and line), a flag that cannot work a config
    error (exit 2); nothing is written."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=8\nnode-b: 8\n", encoding="utf-8")
    out = tmp_path / "experts"
    base = [*experts_args(tiny_llama, clusters, out), "--print-commands"]
    assert main([*base, "--hostfile", str(hostfile), "--num-nodes", "2"]) == 1
    assert f"{hostfile}:2: hostfile: 'node-b: 8' is not `HOST slots=N`" in capsys.readouterr().err
    assert main([*base, "--hostfile", str(tmp_path / "absent")]) == 1
    assert f"{tmp_path / 'absent'}: hostfile: no such file" in capsys.readouterr().err
    assert main([*base, "--num-nodes", "2"]) == 2
    assert "--num-nodes 2 needs --hostfile" in capsys.readouterr().err
    assert main([*experts_args(tiny_llama, clusters, out), "--hostfile", str(hostfile)]) == 2
    assert "--hostfile/--num-nodes go with --print-commands" in capsys.readouterr().err
    assert not out.exists()
