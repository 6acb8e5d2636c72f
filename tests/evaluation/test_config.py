"""Every shipped evaluate config loads; config errors name the key."""

from __future__ import annotations

import pytest

from evaluation.config import EvaluateConfig
from run_config.errors import ConfigError
from run_config.loader import load_config
from tests.conftest import REPO_ROOT

SHIPPED = sorted((REPO_ROOT / "run_config").glob("evaluate*.json"))


def test_configs_are_shipped():
    assert len(SHIPPED) == 3


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads(path):
    cfg = load_config(path, EvaluateConfig)
    assert cfg.metrics and cfg.protocol in ("max", "orig-compat")


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
