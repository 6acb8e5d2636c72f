"""Finetuning runs: tiny random Llama for the mechanics, real SmolLM2-135M on real Urban rows for learning."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from run_config.loader import load_config
from tests.conftest import REPO_ROOT
from tests.helpers.train import tiny_args, urban_records, write_split
from training.sft.config import TrainConfig
from training.sft.model import apply_dropout, freeze_except
from training.sft.trainer import plan_steps
from training.sft.validation import generate_definitions, shard
from training.train import main, requested_objective, run_dskd


def _cfg(**kw) -> TrainConfig:
    return TrainConfig.model_validate({"model_name_or_path": "m", "output_dir": "o", **kw})


def test_plan_steps_follows_global_batch():
    plan = plan_steps(
        _cfg(global_batch_size=4096, per_device_train_batch_size=512, num_train_epochs=3, eval_times=10),
        n_train=100_000,
        world_size=8,
    )
    assert plan.gradient_accumulation_steps == 1 and plan.steps_per_epoch == 25 and plan.total_steps == 75
    assert plan.eval_steps == 7
    plan = plan_steps(_cfg(global_batch_size=64, per_device_train_batch_size=4, max_steps=10), 1000, 2)
    assert plan.gradient_accumulation_steps == 8 and plan.total_steps == 10


def test_dropout_reaches_model_config_and_freezing_by_name():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    assert apply_dropout(config, 0.1) == ["attention_dropout"] and config.attention_dropout == 0.1
    model = LlamaForCausalLM(config)
    n = freeze_except(model, "mlp")
    assert n == sum(p.numel() for name, p in model.named_parameters() if "mlp" in name)
    assert all(p.requires_grad == ("mlp" in name) for name, p in model.named_parameters())


def test_shard_pads_every_rank_to_the_same_length():
    items = list(range(5))
    shares = [shard(items, r, 2) for r in range(2)]
    assert shares == [([0, 1, 2], 3), ([3, 4, 4], 2)]


def test_tiny_run_logs_lr_keeps_best_and_skips_when_finished(tiny_llama, urban_splits, tmp_path, capsys):
    train, valid = urban_splits
    out = tmp_path / "run"
    assert main(tiny_args(tiny_llama, train, valid, out, "--keep-checkpoints")) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert (
        summary["global_step"] == 4
        and summary["train"]["examples"] + summary["train"]["dropped_prompt_too_long"] == 200
    )
    assert len(summary["valid_bleu"]) == 2 and all(0 <= b <= 100 for b in summary["valid_bleu"])
    assert summary["best_bleu"] == max(summary["valid_bleu"])
    logs = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    lrs = [row["learning_rate"] for row in logs if "learning_rate" in row]
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3) and lrs[-1] < max(lrs)  # warm-up, then cosine
    assert [row["eval_bleu"] for row in logs if "eval_bleu" in row] == summary["valid_bleu"]
    final = load_file(out / "model.safetensors")
    best = load_file(Path(summary["best_checkpoint"]) / "model.safetensors")
    assert final.keys() == best.keys() and all(torch.equal(final[k], best[k]) for k in final)
    assert json.loads((out / "config.json").read_text())["attention_dropout"] == 0.1
    assert (out / "tokenizer.json").is_file() and (out / "manifest.json").is_file()
    capsys.readouterr()
    assert main(tiny_args(tiny_llama, train, valid, out, "--keep-checkpoints")) == 0
    assert "is up to date (use --force to redo)" in capsys.readouterr().out


def test_force_trains_over_a_finished_run_from_scratch(tiny_llama, urban_splits, tmp_path, capsys):
    train, valid = urban_splits
    out = tmp_path / "run"
    args = tiny_args(tiny_llama, train, valid, out, "--keep-checkpoints", "--eval-times", "1")
    assert main(args) == 0
    first = (out / "manifest.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*args, "--force"]) == 0  # kept checkpoint-4 is not resumed: the run starts over
    assert "up to date" not in capsys.readouterr().out
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"] is None and summary["global_step"] == 4
    assert (out / "manifest.json").stat().st_mtime_ns != first
    assert main(args) == 0 and "is up to date" in capsys.readouterr().out  # force is not part of the config


def test_force_and_resume_from_checkpoint_are_refused_together(tiny_llama, urban_splits, tmp_path, capsys):
    train, valid = urban_splits
    args = tiny_args(tiny_llama, train, valid, tmp_path / "run", "--force", "--resume-from-checkpoint", "last")
    assert main(args) == 2
    assert "force starts training over" in capsys.readouterr().err


def test_early_stopping_on_validation_bleu(tiny_llama, urban_splits, tmp_path):
    train, valid = urban_splits
    out = tmp_path / "run"
    args = tiny_args(
        tiny_llama,
        train,
        valid,
        out,
        "--max-steps",
        "8",
        "--eval-times",
        "8",
        "--early-stopping-patience",
        "1",
        "--early-stopping-threshold",
        "1000",
    )
    assert main(args) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and len(summary["valid_bleu"]) == 2
    assert not list(out.glob("checkpoint-*"))  # removed after a finished run unless keep_checkpoints


def test_missing_valid_file_is_a_one_line_error(tiny_llama, urban_splits, tmp_path, capsys):
    train, _ = urban_splits
    code = main(tiny_args(tiny_llama, train, tmp_path / "nope.jsonl", tmp_path / "o"))
    assert code == 1 and "nope.jsonl: no such file" in capsys.readouterr().err


def test_smollm2_learns_on_real_urban_rows(smollm2_dir, data_3dex, tmp_path):
    records = urban_records(data_3dex, 12)
    train = write_split(tmp_path / "train.jsonl", records[:8], "train")
    valid = write_split(tmp_path / "valid.jsonl", records[8:], "valid")
    out = tmp_path / "smol"
    assert (
        main(
            [
                "--config",
                str(REPO_ROOT / "run_config/train_smollm2_cpu.json"),
                "--model-name-or-path",
                str(smollm2_dir),
                "--train-file",
                str(train),
                "--valid-file",
                str(valid),
                "--output-dir",
                str(out),
                "--max-train-samples",
                "4",
                "--max-steps",
                "3",
                "--learning-rate",
                "1e-4",
                "--warmup-ratio",
                "0",
                "--eval-times",
                "1",
                "--no-do-validation",
                "--logging-steps",
                "1",
            ]
        )
        == 0
    )
    summary = json.loads((out / "train_summary.json").read_text())
    losses = summary["losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]  # the same 4 examples every step: loss falls
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    (pred,) = generate_definitions(model, tok, records[:1], batch_size=1, max_new_tokens=6)
    assert pred.strip()  # generation after training uses the training template (prompts.builder)


def test_dskd_objective_is_delegated(monkeypatch):
    seen: list[list[str]] = []
    fake = types.ModuleType("training.dskd.cli")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "training.dskd", types.ModuleType("training.dskd"))
    monkeypatch.setitem(sys.modules, "training.dskd.cli", fake)
    assert main(["--objective", "dskd", "--config", "x.json"]) == 0
    assert seen == [["--config", "x.json"]]
    assert requested_objective(["--objective=sft"]) == "sft"


def test_train_objective_dskd_is_the_distill_stage(capsys):
    import main

    with pytest.raises(SystemExit) as exc:
        run_dskd(["--objective", "dskd", "--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("usage: distill")
    with pytest.raises(SystemExit):
        main.main(["distill", "--help"])
    assert capsys.readouterr().out.startswith("usage: distill")


def test_sft_config_objective_field(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"objective": "dskd", "model_name_or_path": "m", "output_dir": "o"}')
    assert requested_objective(["--config", str(path)]) == "dskd"
    assert load_config(path, TrainConfig).objective == "dskd"


def test_report_to_wandb_runs_offline(tiny_llama, urban_splits, tmp_path, monkeypatch):
    train, valid = urban_splits
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    args = tiny_args(
        tiny_llama, train, valid, tmp_path / "run", "--max-steps", "2", "--eval-times", "1", "--report_to", "wandb"
    )
    assert main(args) == 0
    assert os.environ["WANDB_MODE"] == "offline"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_finished_run_is_redone_when_its_data_or_base_model_changes(tmp_path):
    from run_config.runtime import inputs_fingerprint, write_manifest
    from training.sft.trainer import is_finished

    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text("a\n")
    valid.write_text("b\n")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    cfg = TrainConfig(
        model_name_or_path=str(tmp_path / "base"),
        train_file=str(train),
        valid_file=str(valid),
        output_dir=str(tmp_path / "out"),
    )
    write_manifest(cfg.output_dir, "train", cfg, inputs=inputs_fingerprint(cfg))
    assert is_finished(cfg)
    train.write_text("a changed cluster\n")
    assert not is_finished(cfg)


def _original_layout(tmp_path, records):
    """The original repository's data layout: dataset/urban/{train,test}.jsonl in its format (no id, no split)."""
    folder = tmp_path / "dataset" / "urban"
    folder.mkdir(parents=True)
    for name, part in (("train", records[:16]), ("test", records[16:])):
        (folder / f"{name}.jsonl").write_text(
            "".join(
                json.dumps({"term": r.term, "context": r.context, "definition": r.definition, "source": r.source})
                + "\n"
                for r in part
            ),
            encoding="utf-8",
        )
    return folder


def test_original_config_validating_on_test_is_refused(tiny_llama, data_3dex, tmp_path, capsys):
    """An original config whose data_path_valid is test.jsonl loads through the legacy keys: train exits 2
    before loading anything, naming the file and the split; allow_test_as_valid runs it with a warning."""
    folder = _original_layout(tmp_path, urban_records(data_3dex, 24))
    config = {
        "model_name_or_path": str(tiny_llama),
        "data_path_train": str(folder / "train.jsonl"),
        "data_path_valid": str(folder / "test.jsonl"),
        "output_dir": str(tmp_path / "run"),
        "do_eval": "True",
        "precision": "fp32",
        "cutoff_len": 64,
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "eval_times": 1,
        "eval_samples": 4,
        "eval_max_new_tokens": 4,
    }
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'test.jsonl'}: 8 of 8 records are of the test split" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
    assert main(["--config", str(path), "--allow-test-as-valid"]) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["warnings"] == [
        f"{folder / 'test.jsonl'}: 8 of 8 records are of the test split: model selected on test (allow_test_as_valid)"
    ]
    assert summary["valid_holdout"] is None and summary["valid"]["examples"] == 8


def test_hold_out_terms_is_seeded_and_keeps_whole_terms(data_3dex):
    from training.sft.validation import hold_out_terms

    records = urban_records(data_3dex, 200)
    kept, held = hold_out_terms(records, 0.1, seed=42)
    assert len(kept) + len(held) == 200 and 20 <= len(held) < 40
    assert not {r.term for r in kept} & {r.term for r in held}  # a term is wholly in or out
    position = {r.id: i for i, r in enumerate(records)}
    assert all(sorted(part, key=lambda r: position[r.id]) == part for part in (kept, held))  # file order
    assert hold_out_terms(records, 0.1, seed=42) == (kept, held)
    assert hold_out_terms(records, 0.1, seed=21)[1] != held
    one_term = [r for r in records if r.term == records[0].term]
    with pytest.raises(ValueError, match="at least 2 terms"):
        hold_out_terms(one_term, 0.1, seed=42)


def _log_rows(out: Path) -> list[dict]:
    """train_log.jsonl without its wall-clock values."""
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.endswith(("_runtime", "_per_second"))} for row in rows]


def test_resume_skips_a_checkpoint_torn_by_a_kill_during_its_save(
    tiny_llama, urban_splits, tmp_path, monkeypatch, caplog
):
    import transformers

    train, valid = urban_splits
    steps = ("--max-steps", "6", "--eval-times", "3")  # checkpoints at steps 2, 4, 6
    assert main(tiny_args(tiny_llama, train, valid, tmp_path / "ref", *steps)) == 0
    original = transformers.Trainer._save_checkpoint

    def killed_during_the_save_of_checkpoint_4(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.state.global_step == 4:  # trainer_state.json, the last file of a save, never came
            (Path(self.args.output_dir) / "checkpoint-4" / "trainer_state.json").unlink()
            raise KeyboardInterrupt

    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", killed_during_the_save_of_checkpoint_4)
    out = tmp_path / "run"
    assert main(tiny_args(tiny_llama, train, valid, out, *steps)) == 130
    assert max(row["step"] for row in _log_rows(out)) == 4  # steps 3 and 4 were logged before the kill
    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", original)
    assert main(tiny_args(tiny_llama, train, valid, out, *steps)) == 0
    assert "checkpoint-4 is incomplete (no trainer_state.json), left by an interrupted save: removing it" in caplog.text
    summary, ref = (json.loads((d / "train_summary.json").read_text()) for d in (out, tmp_path / "ref"))
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 6
    assert _log_rows(out) == _log_rows(tmp_path / "ref")  # no repeated step, the same values
    assert summary["losses"] == ref["losses"] and len(summary["losses"]) == 6
    assert summary["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-9)  # the whole run's, not steps 3-6
    assert summary["train_loss"] == pytest.approx(sum(ref["losses"]) / 6, rel=1e-9)
    final, expected = load_file(out / "model.safetensors"), load_file(tmp_path / "ref" / "model.safetensors")
    assert all(torch.equal(final[k], expected[k]) for k in expected)


def test_kill_9_mid_run_then_the_rerun_completes_without_repeated_steps(tiny_llama, urban_splits, tmp_path):
    import signal
    import subprocess
    import time

    train, valid = urban_splits
    out = tmp_path / "run"
    args = tiny_args(tiny_llama, train, valid, out, "--max-steps", "40", "--eval-times", "4")  # saves every 10
    proc = subprocess.Popen(
        [sys.executable, "main.py", "train", *args], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log, deadline = out / "train_log.jsonl", time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (
                (out / "checkpoint-10" / "trainer_state.json").is_file()
                and log.is_file()
                and any(
                    json.loads(line)["step"] > 11 for line in log.read_text().splitlines()[-3:] if line.endswith("}")
                )
            ):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "manifest.json").exists()
    assert main(args) == 0
    rows = _log_rows(out)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 41))
    assert [r["step"] for r in rows if "eval_loss" in r] == [10, 20, 30, 40]
    assert [r["step"] for r in rows if "train_loss" in r] == [40]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"] is not None and summary["global_step"] == 40
    assert summary["train_loss"] == pytest.approx(sum(summary["losses"]) / 40, rel=1e-9)
