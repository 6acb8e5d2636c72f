"""The sense metric on real Urban rows (3D-EX): own sense ranked among the term's definitions, counted left-outs,
the max - per-context gap; BLEU and MiniLM embedding similarities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.api import score, score_records
from evaluation.bleu import moses_sentence_bleu
from evaluation.evaluate import main
from evaluation.metrics.settings import MetricSettings
from evaluation.sense import Senses, gold_rank, sense_sets

N = 60
ONE_CONTEXT_TERM = "rawffles"  # two definitions, both given for its one context


@pytest.fixture(scope="module")
def records(urban):
    """The first N Urban rows (22 of a polysemous term, 38 monosemous) and the rows of a term whose two
    definitions share one context."""
    return urban[:N] + [r for r in urban if r.term == ONE_CONTEXT_TERM]


@pytest.fixture(scope="module")
def settings(minilm_dir) -> MetricSettings:
    return MetricSettings(sense_model=str(minilm_dir), workers=1)


def distinct_definitions(records, term: str) -> list[str]:
    return list(dict.fromkeys(r.definition for r in records if r.term == term))


def own_definitions(records, record) -> set[str]:
    return {r.definition for r in records if (r.term, r.context) == (record.term, record.context)}


def polysemous(records) -> list:
    """Rows with a definition of their term outside their own context, found here without evaluation.sense."""
    return [r for r in records if set(distinct_definitions(records, r.term)) - own_definitions(records, r)]


def other_sense(records, record) -> str:
    """The first definition of the record's term given for another context."""
    own = own_definitions(records, record)
    return next(d for d in distinct_definitions(records, record.term) if d not in own)


def test_rows_are_split_into_polysemous_monosemous_and_one_context(records):
    sets = sense_sets(records, records)
    poly = polysemous(records)
    assert len(poly) == 22
    assert [s for s in sets if isinstance(s, Senses)] == [
        Senses(
            tuple(distinct_definitions(records, r.term)),
            tuple(d in own_definitions(records, r) for d in distinct_definitions(records, r.term)),
        )
        for r in poly
    ]
    monosemous = sum(len(distinct_definitions(records, r.term)) == 1 for r in records)
    assert sets.count("monosemous") == monosemous == 38
    assert sets.count("one_context") == 2 and len(sets) == len(poly) + monosemous + 2


def test_gold_rank_counts_ties_against_the_gold():
    gold = np.array([True, False, False])
    assert gold_rank(np.array([9.0, 3.0, 1.0]), gold) == 1
    assert gold_rank(np.array([3.0, 9.0, 1.0]), gold) == 2
    assert gold_rank(np.array([3.0, 3.0, 3.0]), gold) == 3  # a tie is no win


def test_the_gold_definition_ranks_first(records, settings):
    result = score([r.definition for r in records], records, metrics=("sense",), settings=settings)
    for sim in ("bleu", "embedding"):
        assert result[f"sense_{sim}_acc"] == pytest.approx(100.0)
        assert result[f"sense_{sim}_mrr"] == pytest.approx(100.0)
        assert result[f"sense_{sim}_gap"] == pytest.approx(0.0, abs=1e-4)
    assert result["scored"] == {"sense": 22} and result["n_examples"] == len(records)
    assert result["excluded"] == {"sense_monosemous": 38, "sense_one_context": 2}


def test_another_senses_definition_ranks_that_sense_first(records, settings):
    poly = polysemous(records)
    predictions = [other_sense(records, r) for r in poly]
    scores = score_records(predictions, poly, metrics=("sense",), pool=records, settings=settings)
    per = scores.per_example()
    for k, (record, prediction) in enumerate(zip(poly, predictions)):
        candidates = distinct_definitions(records, record.term)
        own = own_definitions(records, record)
        bleu = {c: 100 * moses_sentence_bleu(prediction, [c]) for c in candidates}
        assert max(bleu, key=bleu.get) == prediction  # the predicted sense is the most similar
        best_gold = max(bleu[c] for c in candidates if c in own)
        rank = 1 + sum(bleu[c] >= best_gold for c in candidates if c not in own)
        assert rank >= 2
        assert per["sense_bleu_acc"][k] == 0.0
        assert per["sense_bleu_mrr"][k] == pytest.approx(100.0 / rank) and per["sense_bleu_mrr"][k] <= 50.0
        assert per["sense_bleu_gap"][k] == pytest.approx(100.0 - best_gold)
        assert per["sense_embedding_acc"][k] == 0.0 and per["sense_embedding_mrr"][k] <= 50.0
        assert per["sense_embedding_gap"][k] > 0.0


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_evaluate_reports_sense_beside_the_max_minus_per_context_gap(records, minilm_dir, tmp_path, capsys):
    """Mixed predictions: gold, another sense's definition, the first words of the gold, empty."""
    poly = {r.id for r in polysemous(records)}

    def prediction(i: int, r) -> str:
        if i % 4 == 0:
            return r.definition
        if i % 4 == 1 and r.id in poly:
            return other_sense(records, r)
        return "" if i % 4 == 3 else " ".join(r.definition.split()[:3])

    predictions = [prediction(i, r) for i, r in enumerate(records)]
    refs = _write(tmp_path / "test.jsonl", [json.loads(r.to_json()) for r in records])
    preds = _write(tmp_path / "p.jsonl", [{"id": r.id, "prediction": p} for r, p in zip(records, predictions)])
    out = tmp_path / "out"
    args = ["--predictions", preds, "--references", refs, "--metrics", "bleu,sense", "--sense-model", minilm_dir]
    assert main([str(a) for a in [*args, "--bootstrap-samples", 200, "--output-dir", out]]) == 0
    scores = json.loads((out / "scores.json").read_text())

    kept = [(r, p) for r, p in zip(records, predictions) if r.id in poly]
    rows, texts = [r for r, _ in kept], [p for _, p in kept]
    gap = score(texts, rows, ("bleu",), "max", pool=records)["bleu"]
    gap -= score(texts, rows, ("bleu",), "per-context", pool=records)["bleu"]
    assert gap > 1.0  # the other-sense rows score high under max only
    assert scores["sense_bleu_gap"] == pytest.approx(gap)
    (system,) = scores["systems"].values()
    run = system["seeds"][0]
    assert run["scored"] == {"sense": 22}
    assert run["excluded"] == {"sense_monosemous": 38, "sense_one_context": 2}
    assert 0.0 < scores["sense_bleu_acc"] < 100.0 and 0.0 < scores["sense_embedding_mrr"] < 100.0

    assert scores["signatures"]["sense"].startswith("sense|refs:senses|candidates:distinct-term-definitions|")
    assert f"|model:{minilm_dir}|" in scores["signatures"]["sense"]
    low, high = scores["ci95"]["systems"][next(iter(scores["systems"]))]["sense_bleu_acc"]
    assert low <= scores["sense_bleu_acc"] <= high and high > low
    table = (out / "table.md").read_text()
    assert "Sense@1 BLEU" in table and "max−ctx BLEU" in table and "Sense MRR emb." in table
    lines = [json.loads(line) for line in (out / "per_example.jsonl").open()]
    assert sum(line["sense_bleu_acc"] is None for line in lines) == 40  # left out, shown as null
    assert all((line["sense_bleu_acc"] is None) == (line["id"] not in poly) for line in lines)
    assert "Sense@1 BLEU" in capsys.readouterr().out


def test_sense_ignores_the_protocol_and_averages_best_of_n_samples(records, settings):
    poly = polysemous(records)
    samples = [[r.definition, other_sense(records, r)] for r in poly]
    by_max = score(samples, poly, ("sense",), "max", pool=records, settings=settings)
    by_orig = score(samples, poly, ("sense",), "orig-compat", pool=records, settings=settings)
    names = [f"sense_{s}_{k}" for s in ("bleu", "embedding") for k in ("acc", "mrr", "gap")]
    assert {n: by_orig[n] for n in names} == pytest.approx({n: by_max[n] for n in names})
    assert by_max["sense_bleu_acc"] == pytest.approx(50.0)  # one sample right, one wrong, per row
    assert by_max["oracle"]["sense_bleu_acc"] == pytest.approx(100.0)


def test_evaluate_gives_the_same_sense_scores_under_a_rounding_protocol(records, minilm_dir, tmp_path):
    refs = _write(tmp_path / "test.jsonl", [json.loads(r.to_json()) for r in records])
    rows = [{"id": r.id, "prediction": " ".join(r.definition.split()[:3])} for r in records]
    preds = _write(tmp_path / "p.jsonl", rows)
    args = ["--predictions", preds, "--references", refs, "--metrics", "bleu,sense", "--sense-model", minilm_dir]
    got = {}
    for protocol in ("max", "orig-compat"):
        assert main([str(a) for a in [*args, "--protocol", protocol, "--output-dir", tmp_path / protocol]]) == 0
        got[protocol] = json.loads((tmp_path / protocol / "scores.json").read_text())
    names = [n for n in got["max"] if n.startswith("sense_")]
    assert len(names) == 6 and {n: got["orig-compat"][n] for n in names} == {n: got["max"][n] for n in names}
    assert got["max"]["sense_bleu_acc"] != round(got["max"]["sense_bleu_acc"], 2)  # not rounded up
    assert got["orig-compat"]["bleu"] == round(got["orig-compat"]["bleu"], 2)  # the protocol rounds its own


def test_group_by_refs_scores_sense_on_the_polysemous_groups_only(records, minilm_dir, tmp_path):
    refs = _write(tmp_path / "test.jsonl", [json.loads(r.to_json()) for r in records])
    preds = _write(tmp_path / "p.jsonl", [{"id": r.id, "prediction": r.definition} for r in records])
    args = ["--predictions", preds, "--references", refs, "--metrics", "sense", "--sense-model", minilm_dir]
    assert main([str(a) for a in [*args, "--group-by", "refs", "--output-dir", tmp_path / "out"]]) == 0
    groups = json.loads((tmp_path / "out" / "scores.json").read_text())["groups"]["refs"]
    ((one,),) = [list(groups["1"]["systems"].values())]
    assert one["scored"] == {"sense": 0} and one["mean"]["sense_bleu_acc"] == 0.0  # no polysemous row
    for label in ("2-3", "4+"):
        (system,) = groups[label]["systems"].values()
        assert system["scored"]["sense"] > 0 and system["mean"]["sense_bleu_acc"] == pytest.approx(100.0)
    table = (tmp_path / "out" / "table_refs.md").read_text().splitlines()
    assert "Sense@1 BLEU" in table[0]
    assert table[2].startswith("| 1 |") and table[2].endswith("| – | – | – | – | – | – |")
    assert "100.00" in table[3]
