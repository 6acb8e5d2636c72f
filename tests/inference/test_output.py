"""Prediction rows: every field in ROW_FIELDS order, the raw text beside the scored one."""

from __future__ import annotations

import pytest

from inference.output import ROW_FIELDS, make_row


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
