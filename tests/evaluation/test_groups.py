"""evaluate --group-by expert on real Urban rows: each expert's rows scored as a file of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.evaluate import main
from evaluation.groups import group_rows
from evaluation.predictions import read_predictions
from run_config.errors import DataError

N = 30


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def split(urban, tmp_path):
    """N Urban references, and predictions: expert 0 copies the gold definition, expert 1 (given as a mixture
    led by 1) writes an unrelated text, the rest have no expert (a dense row)."""
    refs = _write(tmp_path / "test.jsonl", [json.loads(r.to_json()) for r in urban[:N]])
    rows = []
    for i, r in enumerate(urban[:N]):
        if i % 3 == 0:
            rows.append({"id": r.id, "prediction": r.definition, "expert": 0, "router_margin": 0.2})
        elif i % 3 == 1:
            rows.append({"id": r.id, "prediction": "zzz qqq", "expert": [[1, 0.7], [0, 0.3]], "router_margin": 0.01})
        else:
            rows.append({"id": r.id, "prediction": r.definition})
    return refs, _write(tmp_path / "p.jsonl", rows)


def test_group_rows_uses_the_top_expert(split):
    _, preds = split
    groups = group_rows(read_predictions(preds), "expert")
    assert list(groups) == ["0", "1", "none"] and [len(v) for v in groups.values()] == [10, 10, 10]
    with pytest.raises(ValueError, match="choose from expert"):
        group_rows(read_predictions(preds), "colour")


def test_evaluate_group_by_expert_scores_each_expert(split, tmp_path):
    refs, preds = split
    out = tmp_path / "out"
    args = ["--predictions", preds, "--references", refs, "--metrics", "bleu,rouge", "--output-dir", out]
    assert main([*map(str, args), "--group-by", "expert"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    groups = scores["groups"]["expert"]
    assert list(groups) == ["0", "1", "none"]
    (model,) = scores["systems"]
    assert groups["0"]["predictions"] == 10 and groups["0"]["ids"] == 10
    assert groups["0"]["systems"][model]["mean"]["bleu"] == pytest.approx(100.0)
    assert groups["1"]["systems"][model]["mean"]["rougeL"] == 0.0 and groups["none"]["ids"] == 10
    # the whole file's BLEU is the mean of the equal-sized groups' (sentence BLEU averaged over examples)
    means = [g["systems"][model]["mean"]["bleu"] for g in groups.values()]
    assert scores["bleu"] == pytest.approx(sum(means) / 3, abs=1e-6)
    table = (out / "table_expert.md").read_text()
    assert table.splitlines()[0].startswith("| expert | Method | n |") and "| 1 |" in table


def test_unknown_group_key_and_bad_expert_field_are_refused(split, tmp_path, capsys):
    refs, preds = split
    args = ["--predictions", preds, "--references", refs, "--output-dir", tmp_path / "o"]
    assert main([*map(str, args), "--group-by", "expert,colour"]) != 0
    assert "unknown group key 'colour'" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.jsonl", [{"id": "x", "prediction": "a", "expert": [[1]]}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: expert: expected an expert id"):
        read_predictions(bad)
