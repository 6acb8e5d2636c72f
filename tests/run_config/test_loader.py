"""The one config loader: file:line: key errors, overrides, original keys."""

from __future__ import annotations

import argparse
import json
from typing import Literal

import pytest
from pydantic import Field

from run_config.cli import add_config_flags, config_from_args
from run_config.errors import ConfigError
from run_config.loader import StageConfig, load_config


class DemoConfig(StageConfig):
    model_name_or_path: str
    learning_rate: float = 5e-6
    num_train_epochs: int = 3
    train_on_input: bool = False
    mode: Literal["a", "b"] = "a"
    tags: list[str] = Field(default_factory=list)
    legacy_keys = {"num_epochs": "num_train_epochs", "fsdp": None}


def write(tmp_path, obj, name="cfg.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj, indent=2))
    return p


def test_valid_config(tmp_path):
    cfg = load_config(write(tmp_path, {"model_name_or_path": "m", "learning_rate": 1e-5}), DemoConfig)
    assert cfg.learning_rate == 1e-5 and cfg.num_train_epochs == 3


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    p = write(tmp_path, {"model_name_or_path": "m", "learning_rat": 1})
    with pytest.raises(ConfigError) as e:
        load_config(p, DemoConfig)
    assert f"{p}:3: learning_rat: unknown key (did you mean learning_rate?)" in str(e.value)


def test_wrong_type_and_missing_reported_together(tmp_path):
    p = write(tmp_path, {"learning_rate": "fast", "num_train_epochs": 2.5})
    with pytest.raises(ConfigError) as e:
        load_config(p, DemoConfig)
    msg = str(e.value)
    assert f"{p}:2: learning_rate:" in msg and '"fast"' in msg
    assert f"{p}:3: num_train_epochs:" in msg
    assert "model_name_or_path: missing required key" in msg
    assert len(e.value.problems) == 3


def test_string_boolean_rejected_for_new_keys(tmp_path):
    with pytest.raises(ConfigError, match="train_on_input"):
        load_config(write(tmp_path, {"model_name_or_path": "m", "train_on_input": "True"}), DemoConfig)


def test_literal_choice_error(tmp_path):
    with pytest.raises(ConfigError, match="mode: input should be 'a' or 'b'"):
        load_config(write(tmp_path, {"model_name_or_path": "m", "mode": "c"}), DemoConfig)


def test_invalid_json_names_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n "model_name_or_path": "m",\n}\n')
    with pytest.raises(ConfigError, match=rf"{p}:3: invalid JSON"):
        load_config(p, DemoConfig)


def test_original_keys_accepted(tmp_path):
    p = write(tmp_path, {"model_name_or_path": "m", "num_epochs": 10, "fsdp": ""})
    assert load_config(p, DemoConfig).num_train_epochs == 10


def test_cli_flags_override_file(tmp_path):
    p = write(tmp_path, {"model_name_or_path": "m", "learning_rate": 1e-5, "tags": ["x"]})
    parser = argparse.ArgumentParser()
    add_config_flags(parser, DemoConfig)
    args = parser.parse_args(
        [
            "--config",
            str(p),
            "--learning-rate",
            "2e-5",
            "--train-on-input",
            "--set",
            "num_train_epochs=7",
            "--tags",
            "a",
            "b",
        ]
    )
    cfg = config_from_args(args, DemoConfig)
    assert (cfg.learning_rate, cfg.train_on_input, cfg.num_train_epochs, cfg.tags) == (2e-5, True, 7, ["a", "b"])


def test_cli_error_says_command_line(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, DemoConfig)
    args = parser.parse_args(["--set", "num_train_epochs=many"])
    with pytest.raises(ConfigError) as e:
        config_from_args(args, DemoConfig)
    assert "command line: num_train_epochs:" in str(e.value)


def test_duplicate_keys_are_errors_at_any_depth(tmp_path):
    p = tmp_path / "dup.json"
    p.write_text('{\n "model_name_or_path": "m",\n "tags": [{"a": 1, "a": 2}],\n "mode": "a",\n "mode": "b"\n}\n')
    with pytest.raises(ConfigError) as e:
        load_config(p, DemoConfig)
    assert e.value.problems == [
        f"{p}:3: a: key given twice in one object (JSON would keep only the last)",
        f"{p}:5: mode: key given twice in one object (JSON would keep only the last)",
    ]
    p.write_text('{"model_name_or_path": "m", "x": {"mode": 1, "mode": 2}, "mode": "b"}')
    with pytest.raises(ConfigError, match=f"^{p}: mode: key given twice"):  # which of the three: no line guessed
        load_config(p, DemoConfig)
    p.write_text('{"model_name_or_path": "m", "x": {"mode": 1}, "mode": "b"}')  # once per object is fine
    with pytest.raises(ConfigError, match="x: unknown key"):
        load_config(p, DemoConfig)
