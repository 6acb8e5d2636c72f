"""End to end through the CLI: SmolLM2-135M teacher, truncated student, real lexicon records."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dataset.records import load_records
from run_config.cli import config_from_args
from training.dskd.cli import build_parser, main, summary_line
from training.dskd.config import DSKDConfig
from training.dskd.relations import Relations
from training.dskd.trainer import is_up_to_date

WORDS = ("good", "bad", "large", "small")
N_EXAMPLES = 4
STEPS = 5


@pytest.fixture(scope="module")
def records_file(wordnet_lexicon: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real lexicon records whose definitions use words with WordNet antonyms among them."""
    picked, seen = [], set()
    for r in load_records(wordnet_lexicon / "train.jsonl"):
        words = set(re.findall(r"[a-z]+", r.definition.lower())) & set(WORDS)
        if words - seen and len(r.definition) < 80:
            picked.append(r)
            seen |= words
        if len(picked) == N_EXAMPLES:
            break
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(r.to_json() + "\n" for r in picked), encoding="utf-8")
    return path


def run_argv(smollm2_dir: Path, records_file: Path, out: Path) -> list[str]:
    return [
        "--teacher-model",
        str(smollm2_dir),
        "--data-path-train",
        str(records_file),
        "--data-path-valid",
        str(records_file),
        "--output-dir",
        str(out),
        "--student-layers",
        "4",
        "--trainable-layers",
        "2",
        "--max-steps",
        str(STEPS),
        "--per-device-train-batch-size",
        str(N_EXAMPLES),
        "--learning-rate",
        "1e-3",
        "--warmup-rate",
        "0",
        "--logging-steps",
        "1",
        "--cutoff-len",
        "64",
        "--sense-k",
        "3",
        "--sense-batch-size",
        "8",
        "--gamma",
        "50",
        "--beta-n",
        "5",
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="module")
def run_dir(smollm2_dir: Path, records_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("dskd")
    argv = run_argv(smollm2_dir, records_file, out)
    assert main(argv) == 0
    assert main(argv) == 0  # rerun: up to date, skipped
    return out


def test_a_changed_data_file_makes_the_run_stale(run_dir: Path, smollm2_dir: Path, records_file: Path) -> None:
    cfg = config_from_args(build_parser().parse_args(run_argv(smollm2_dir, records_file, run_dir)), DSKDConfig)
    assert is_up_to_date(cfg)
    before = records_file.stat()
    os.utime(records_file, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # rewritten since the run
    try:
        assert not is_up_to_date(cfg)
    finally:
        os.utime(records_file, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_every_loss_term_is_computed_and_falls(run_dir: Path) -> None:
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    first, last = rows[0], rows[-1]
    for term in ("ce", "kl", "sem_pull", "sem_push"):
        assert first[term] > 0, term
        assert last[term] < first[term], (term, [r[term] for r in rows])
    assert abs(first["loss"] - (first["ce"] + first["kl"] + first["sem"])) < 1e-3
    assert abs(first["sem"] - (first["sem_pull"] + 5 * first["sem_push"])) < 1e-3


def test_relations_and_senses_were_built(run_dir: Path) -> None:
    relations = Relations.load(run_dir)
    assert "bad" in relations.antonyms["good"] and "small" in relations.antonyms["large"]
    manifest = json.loads((run_dir / "senses" / "manifest.json").read_text())
    assert manifest["words"] > 10 and manifest["senses"] >= manifest["words"]


def test_frozen_layers_stay_bit_identical(run_dir: Path, smollm2_dir: Path) -> None:
    teacher = {k: v for f in smollm2_dir.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    student = {k: v for f in (run_dir / "student").glob("*.safetensors") for k, v in load_file(str(f)).items()}
    assert json.loads((run_dir / "student" / "config.json").read_text())["num_hidden_layers"] == 4
    frozen = [k for k in student if not re.match(r"model\.layers\.[23]\.", k)]
    trained = [k for k in student if re.match(r"model\.layers\.[23]\.", k)]
    assert "model.embed_tokens.weight" in frozen and "model.norm.weight" in frozen
    assert all(torch.equal(student[k], teacher[k]) for k in frozen)
    assert any(not torch.equal(student[k], teacher[k]) for k in trained)


def test_metrics_and_manifest(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_examples"] == N_EXAMPLES and metrics["valid"]["perplexity"] > 1
    margin = metrics["margin"]  # --gamma 50: kept, with the teacher's measured antonym distances beside it
    assert margin["gamma"] == 50 and margin["source"] == "config" and margin["pairs"] > 0
    assert margin["teacher_antonym_mse"]["q10"] <= margin["teacher_antonym_mse"]["q90"]
    assert 0 < metrics["final"]["sem_push_active"] <= 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stage"] == "train-dskd" and manifest["config"]["objective"] == "dskd"


def test_missing_data_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "--teacher-model",
            "x",
            "--data-path-train",
            str(tmp_path / "none.jsonl"),
            "--output-dir",
            str(tmp_path / "o"),
            "--objective",
            "ce",
            "--device",
            "cpu",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.jsonl: no such file" in err[0]


def test_the_run_ends_with_one_summary_line(run_dir: Path, smollm2_dir: Path, records_file: Path) -> None:
    """stdout's last line: the numbers of metrics.json in one line, pointing at the student."""
    cfg = config_from_args(build_parser().parse_args(run_argv(smollm2_dir, records_file, run_dir)), DSKDConfig)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    line = summary_line(cfg, metrics, senses_only=False)
    assert line.startswith(f"distill: {metrics['train_examples']} examples, {metrics['final']['step']} steps")
    assert line.endswith(f" -> {run_dir / 'student'}") and "\n" not in line
