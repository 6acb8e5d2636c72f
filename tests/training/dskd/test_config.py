"""Shipped DSKD configs hold the paper's settings; bad keys fail with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from run_config.errors import ConfigError
from run_config.loader import load_config
from training.dskd.config import DSKDConfig

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted((REPO / "run_config").glob("dskd_*.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path, DSKDConfig)
    assert cfg.objective == "dskd" and cfg.kappa == 5 and cfg.trainable_layers == 2


def test_unknown_and_mistyped_keys_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {"teacher_model": "t", "data_path_train": "d", "output_dir": "o", "kapa": 5, "gamma": "wide"}, indent=1
        )
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, DSKDConfig)
    text = str(err.value)
    assert f"{path}:5: kapa: unknown key (did you mean kappa" in text
    assert f"{path}:6: gamma:" in text


def test_cross_field_rules() -> None:
    base = {"teacher_model": "t", "data_path_train": "d", "output_dir": "o"}
    with pytest.raises(ConfigError, match="trainable_layers"):
        load_config(None, DSKDConfig, {**base, "student_layers": 2, "trainable_layers": 3})
    with pytest.raises(ConfigError, match="student_model"):
        load_config(None, DSKDConfig, {**base, "student_layers": 2, "student_model": "s"})


def test_legacy_model_name_maps_to_teacher(tmp_path: Path) -> None:
    path = tmp_path / "legacy.json"
    path.write_text(
        json.dumps(
            {
                "model_name_or_path": "m",
                "data_path_train": "d",
                "output_dir": "o",
                "mask_term": "False",
                "run_name": "x",
            }
        )
    )
    assert load_config(path, DSKDConfig).teacher_model == "m"
