"""evaluate --group-by on real Urban rows: each bucket's rows scored as a file of their own."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evaluation.api import score
from evaluation.evaluate import main
from evaluation.groups import GroupContext, group_rows, wordnet_pos
from evaluation.predictions import read_predictions
from run_config.errors import DataError

N = 60


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def split(urban, tmp_path):
    """N Urban references, and predictions: expert 0 copies the gold definition, expert 1 (given as a mixture
    led by 1) writes an unrelated text, the rest have no expert (a dense row). Training references: the even
    rows (their terms count as seen)."""
    records = urban[:N]
    refs = _write(tmp_path / "test.jsonl", [json.loads(r.to_json()) for r in records])
    train = _write(tmp_path / "train.jsonl", [json.loads(r.to_json()) for r in records[::2]])
    rows = []
    for i, r in enumerate(records):
        if i % 3 == 0:
            rows.append({"id": r.id, "prediction": r.definition, "expert": 0, "router_margin": 0.2})
        elif i % 3 == 1:
            rows.append({"id": r.id, "prediction": "zzz qqq", "expert": [[1, 0.7], [0, 0.3]], "router_margin": 0.01})
        else:
            rows.append({"id": r.id, "prediction": " ".join(r.definition.split()[:4])})
    return records, refs, train, _write(tmp_path / "p.jsonl", rows)


def test_wordnet_pos_of_known_words():
    assert [wordnet_pos(w) for w in ("bank", "ran", "quickly", "beautiful", "ice cream", "bromanian")] == [
        "noun",
        "verb",
        "adv",
        "adj",
        "noun",
        "unknown",
    ]


def test_group_labels_follow_the_references(split):
    records, _, _, preds = split
    rows = read_predictions(preds)
    context = GroupContext.build(records, records[::2])
    definitions = Counter(r.term for r in records)
    seen = {r.term for r in records[::2]}
    expected = {
        "refs": Counter({1: "1", 2: "2-3", 3: "2-3"}.get(definitions[r.term], "4+") for r in records),
        "seen": Counter("seen" if r.term in seen else "unseen" for r in records),
        "length": Counter({1: "1", 2: "2"}.get(len(r.term.split()), "3+") for r in records),
        "pos": Counter(wordnet_pos(r.term) for r in records),
        "source": Counter(r.source for r in records),
        "expert": Counter({"0": N // 3, "1": N // 3, "none": N // 3}),
    }
    for key, counts in expected.items():
        groups = group_rows(rows, key, context)
        assert {label: len(v) for label, v in groups.items()} == dict(counts), key
    assert list(group_rows(rows, "refs", context)) == ["1", "2-3", "4+"]  # buckets by size
    assert list(group_rows(rows, "expert")) == ["0", "1", "none"]  # expert needs no context
    assert {"noun", "unknown"} <= set(group_rows(rows, "pos", context))  # slang is not in WordNet
    with pytest.raises(ValueError, match="choose from refs, seen, pos, length, source, expert"):
        group_rows(rows, "colour", context)
    with pytest.raises(ValueError, match="needs the training references"):
        group_rows(rows, "seen", GroupContext.build(records))


def test_evaluate_group_by_scores_each_group_as_its_own_file(split, tmp_path, capsys):
    records, refs, train, preds = split
    out = tmp_path / "out"
    args = ["--predictions", preds, "--references", refs, "--metrics", "bleu,rouge", "--output-dir", out]
    args += ["--group-by", "refs,seen,pos,length,source,expert", "--train-references", train]
    assert main([*map(str, args)]) == 0
    scores = json.loads((out / "scores.json").read_text())
    (model,) = scores["systems"]
    rows = read_predictions(preds)
    context = GroupContext.build(records, records[::2])
    by_id = {r.id: r for r in records}
    for key in ("refs", "seen", "pos", "length", "source", "expert"):
        groups = scores["groups"][key]
        for label, members in group_rows(rows, key, context).items():
            want = score([p.prediction for p in members], [by_id[p.id] for p in members], pool=records)
            got = groups[label]["systems"][model]["mean"]
            assert got["bleu"] == pytest.approx(want["bleu"]) and got["rougeL"] == pytest.approx(want["rougeL"])
            assert groups[label]["predictions"] == len(members)
            low, high = groups[label]["ci95"][model]["bleu"]
            assert low <= got["bleu"] + 1e-9 and got["bleu"] <= high + 1e-9
        table = (out / f"table_{key}.md").read_text()
        assert table.startswith(f"| {key} | Method | n | BLEU | ROUGE |")
    assert scores["groups"]["expert"]["0"]["systems"][model]["mean"]["bleu"] == pytest.approx(100.0)
    assert scores["groups"]["expert"]["1"]["systems"][model]["mean"]["rougeL"] == 0.0
    # sentence BLEU is a mean over examples: the whole file's is the size-weighted mean of any key's groups
    groups = scores["groups"]["pos"]
    total = sum(g["systems"][model]["mean"]["bleu"] * g["predictions"] for g in groups.values())
    assert scores["bleu"] == pytest.approx(total / N)
    assert "by seen:" in capsys.readouterr().out


def test_bad_group_settings_are_refused_before_any_work(split, tmp_path, capsys):
    _, refs, _, preds = split
    args = ["--predictions", preds, "--references", refs, "--output-dir", tmp_path / "o"]
    assert main([*map(str, args), "--group-by", "expert,colour"]) == 2
    assert "unknown group key 'colour'" in capsys.readouterr().err
    assert main([*map(str, args), "--group-by", "seen"]) == 2
    assert "group_by seen needs train_references" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    bad = _write(tmp_path / "bad.jsonl", [{"id": "x", "prediction": "a", "expert": [[-1, 1.0]]}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: expert: expected an expert id"):
        read_predictions(bad)
