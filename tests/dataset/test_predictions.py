"""Prediction rows: every field in ROW_FIELDS order, the raw text beside the scored one; one reader's rules."""

from __future__ import annotations

import json

import pytest

from dataset.predictions import ROW_FIELDS, ResumableJsonl, make_row, numbered_rows, read_rows, write_rows
from run_config.errors import DataError


def test_a_row_keeps_the_raw_text_beside_the_prediction():
    row = make_row(
        "u:1",
        "bank",
        "on the bank",
        prediction="a ridge",
        raw="Sure! **Definition:** a ridge",
        model="m",
        seed=1,
        sample_idx=0,
        latency_s=0.5,
        error=None,
    )
    assert tuple(row) == ROW_FIELDS
    assert (row["prediction"], row["raw"]) == ("a ridge", "Sure! **Definition:** a ridge")
    failed = make_row("u:1", "bank", "", prediction=None, model="m", seed=1, sample_idx=0, latency_s=0.0, error="500")
    assert failed["raw"] is None
    with pytest.raises(ValueError):
        make_row("u:1", "bank", "", prediction=None, model="m", seed=1, sample_idx=0, latency_s=0.0, error=None)


def _row(**kw):
    base = dict(prediction="a ridge", model="m", seed=1, sample_idx=0, latency_s=0.1, error=None)
    return make_row("u:1", "bank", "on the bank", **{**base, **kw})


def _write(path, *lines: str):
    path.write_bytes("".join(lines).encode())
    return path


@pytest.mark.parametrize(
    "row,message",
    [
        ({"id": "u:1", "prediction": "x", "sample_idx": "0"}, 'p.jsonl:1: sample_idx: expected int, got "0"'),
        ({"id": "u:1", "prediction": "x", "seed": True}, "p.jsonl:1: seed: expected int, got true"),
        ({"id": "u:1", "prediction": "x", "latency_s": "1s"}, "p.jsonl:1: latency_s: expected number"),
        ({"prediction": "x"}, "p.jsonl:1: id: missing"),
        ({"id": "", "prediction": "x"}, "p.jsonl:1: id: empty"),
        ({"id": "u:1", "prediction": None, "error": None}, "p.jsonl:1: prediction: missing (null needs the reason"),
        ({"id": "u:1", "prediction": "x", "error": "HTTP 500"}, "p.jsonl:1: error: set beside a prediction"),
        (["u:1"], "p.jsonl:1: expected a JSON object, got list"),
    ],
)
def test_a_bad_row_names_file_line_and_field_for_every_reader(tmp_path, row, message):
    """Both readers check a row alike: infer's resume once kept a sample_idx "0" or a row with neither a
    prediction nor an error as done, and evaluate never saw the other fields."""
    path = _write(tmp_path / "p.jsonl", json.dumps(row) + "\n")
    for read in (read_rows, numbered_rows):
        with pytest.raises(DataError) as e:
            read(path)
        assert message in str(e.value)


def test_sample_idx_defaults_to_zero_and_blank_lines_are_skipped(tmp_path):
    path = _write(tmp_path / "p.jsonl", '{"id": "u:1", "prediction": "x"}\n', "\n", json.dumps(_row()) + "\n")
    rows, cut = numbered_rows(path)
    assert [(line, row["sample_idx"]) for line, row in rows] == [(1, 0), (3, 0)] and not cut
    assert rows[1][1] == _row()


def test_a_cut_last_line_is_dropped_when_resuming_and_an_error_when_scoring(tmp_path):
    path = _write(tmp_path / "p.jsonl", json.dumps(_row()) + "\n", json.dumps(_row(sample_idx=1))[:30])
    assert read_rows(path) == ([_row()], True)
    with pytest.raises(DataError, match=r"p.jsonl:2: invalid JSON"):
        numbered_rows(path)
    torn_inside = _write(tmp_path / "q.jsonl", '{"id": "u:1"\n', json.dumps(_row()) + "\n")
    with pytest.raises(DataError, match=r"q.jsonl:1: invalid JSON"):
        read_rows(torn_inside)  # only a last line can be a killed writer's


def test_invalid_utf8_is_one_line_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(json.dumps(_row()).encode() + b"\n" + b'{"id": "u:2", "prediction": "\xff"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: invalid UTF-8 bytes"):
        read_rows(path)


def test_resume_keeps_done_rows_and_redoes_errors_and_the_cut_tail(tmp_path):
    path = tmp_path / "samples.jsonl"
    write_rows(path, [_row(), _row(sample_idx=1, prediction=None, error="HTTP 500")])
    with open(path, "a") as f:
        f.write(json.dumps(_row(sample_idx=2))[:25])
    with ResumableJsonl(path) as store:
        assert store.done == {("u:1", 0)} and store.dropped_errors == 1
        store.append(_row(sample_idx=1))
    assert read_rows(path) == ([_row(), _row(sample_idx=1)], False)
    assert read_rows(tmp_path / "none.jsonl") == ([], False)


def test_routed_rows_carry_the_expert_and_margin(tmp_path):
    from dataset.predictions import expert_value, top_expert

    one = _row(expert=expert_value([2], [1.0]), router_margin=0.1234567)
    mixed = _row(expert=expert_value([0, 3], [0.25, 0.75]), router_margin=0.5)
    assert (one["expert"], one["router_margin"]) == (2, 0.123457)
    assert mixed["expert"] == [[3, 0.75], [0, 0.25]] and top_expert(mixed["expert"]) == 3
    assert top_expert(one["expert"]) == 2 and top_expert(None) is None
    path = tmp_path / "p.jsonl"
    write_rows(path, [one, mixed, _row()])
    assert [r["expert"] for r in read_rows(path)[0]] == [2, [[3, 0.75], [0, 0.25]], None]
    for bad in ('"expert": "2"', '"expert": -1', '"expert": [[1, "a"]]', '"expert": []', '"router_margin": "x"'):
        _write(path, '{"id": "u:1", "prediction": "a", ' + bad + "}\n")
        with pytest.raises(DataError, match=r"p.jsonl:1: (expert|router_margin): expected"):
            numbered_rows(path)
