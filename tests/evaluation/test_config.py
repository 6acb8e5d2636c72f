"""Evaluate config: errors name the file, line and key."""

from __future__ import annotations

import pytest

from evaluation.config import EvaluateConfig
from run_config.errors import ConfigError
from run_config.loader import load_config


def test_bad_keys_are_reported_with_file_and_line(tmp_path):
    bad = tmp_path / "e.json"
    bad.write_text(
        '{\n "predictions": "p",\n "references": "r",\n "output_dir": "o",\n "metrcs": ["bleu"],\n'
        ' "protocol": "median"\n}\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(bad, EvaluateConfig)
    text = str(err.value)
    assert "e.json:5: metrcs: unknown key (did you mean metrics?)" in text
    assert "e.json:6: protocol:" in text
