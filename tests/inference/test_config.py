"""Inference / train-reward configs: every shipped one loads; inconsistent ones fail with file:line: key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.config import InferConfig
from run_config.errors import ConfigError
from run_config.loader import load_config
from training.reward_config import RewardConfig

RUN_CONFIG = Path(__file__).resolve().parents[2] / "run_config"
SHIPPED = sorted(RUN_CONFIG.glob("infer_*.json")) + sorted(RUN_CONFIG.glob("train_reward*.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path, RewardConfig if path.name.startswith("train_reward") else InferConfig)
    assert cfg.seed == 42


def test_paper_decoding_defaults():
    cfg = InferConfig(input="x", output_dir="y", model="m")
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty, cfg.max_new_tokens) == (0.6, 50, 0.9, 1.05, 64)
    assert not cfg.greedy and cfg.n_samples == 1


def write(tmp_path, obj) -> Path:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"input": "x", "output_dir": "y", "model": "m", **obj}, indent=2))
    return path


@pytest.mark.parametrize("extra,message", [
    ({"greedy": True, "n_samples": 4}, "identical samples"),
    ({"selection": "orm", "n_samples": 4}, "needs reward_model"),
    ({"icl_mode": "random", "icl_k": 4}, "icl_examples"),
    ({"icl_k": 200}, "icl_k"),
    ({"task": "wsd", "icl_mode": "random", "icl_k": 2, "icl_examples": "t"}, "word_interpretation only"),
    ({"temprature": 0.5}, "did you mean temperature"),
])
def test_bad_configs(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, extra), InferConfig)


def test_original_key_and_value_spellings(tmp_path):
    cfg = load_config(write(tmp_path, {"task": "word-interpretation", "max_query": 100, "shot_num": 32,
                                       "retrieval_policy": "topk", "example_path": "train.jsonl",
                                       "num_return_sequences": 1, "max_tokens": 64}), InferConfig)
    assert (cfg.task, cfg.max_items, cfg.icl_k, cfg.icl_mode, cfg.icl_examples) == \
        ("word_interpretation", 100, 32, "retrieval", "train.jsonl")
