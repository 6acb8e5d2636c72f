"""Inference / train-reward configs: paper defaults; inconsistent ones fail with file:line: key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.config import InferConfig
from run_config.errors import ConfigError
from run_config.loader import load_config


def test_paper_decoding_defaults():
    cfg = InferConfig(input="x", output_dir="y", model="m")
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty, cfg.max_new_tokens) == (
        0.6,
        50,
        0.9,
        1.05,
        64,
    )
    assert not cfg.greedy and cfg.n_samples == 1 and cfg.seed == 42


def write(tmp_path, obj) -> Path:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"input": "x", "output_dir": "y", "model": "m", **obj}, indent=2))
    return path


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"greedy": True, "n_samples": 4}, "identical samples"),
        ({"selection": "orm", "n_samples": 4}, "needs reward_model"),
        ({"icl_mode": "random", "icl_k": 4}, "icl_examples"),
        ({"icl_k": 200}, "icl_k"),
        ({"task": "wsd", "icl_mode": "random", "icl_k": 2, "icl_examples": "t"}, "word_interpretation only"),
        ({"temprature": 0.5}, "did you mean temperature"),
    ],
)
def test_bad_configs(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, extra), InferConfig)


API = ("openai", "anthropic", "gemini")
REFUSED = [  # (config, message): settings that cannot work, refused when the config loads (exit 2)
    *[
        ({"backend": b, "selection": "likelihood", "n_samples": 4}, f"needs token log-probs, which backend {b}")
        for b in API
    ],
    *[({"backend": b, "greedy": True, "send_sampling": False}, "vendor's default temperature") for b in API],
    *[({"backend": b, "max_prompt_tokens": 512}, "no local tokenizer") for b in API],
    *[
        (
            {"task": t, "selection": s, "n_samples": 4, "reward_model": "r"},
            f"selection {s} is defined for word_interpretation only",
        )
        for t in ("wsd", "context_synthesis", "definition_synthesis")
        for s in ("likelihood", "oracle", "orm")
    ],
    *[
        ({"task": t, "icl_mode": "random", "icl_k": 2, "icl_examples": "t"}, "word_interpretation only")
        for t in ("wsd", "context_synthesis", "definition_synthesis")
    ],
    *[({"backend": b, "domain_exports": ["d0"]}, "domain_exports is for backend vllm") for b in ("local", *API)],
    ({"icl_k": 32}, "icl_k 32 needs icl_mode random or retrieval"),
    ({"greedy": True, "n_samples": 2, "backend": "vllm"}, "identical samples"),
    ({"num_beams": 4}, "set greedy true"),
    ({"num_beams": 4, "greedy": True, "n_samples": 2}, "identical samples"),
    *[({"num_beams": 4, "greedy": True, "backend": b}, f"backend {b} has no beam search") for b in API],
    ({"num_beams": 4, "greedy": True, "backend": "vllm"}, "neither block_term nor repetition_penalty"),
    ({"num_beams": 4, "greedy": True, "backend": "vllm", "repetition_penalty": 1.0, "block_term": True}, "block_term"),
    ({"length_penalty": 0.5}, "beam search only"),
    *[({"block_term": True, "backend": b}, f"backend {b} has neither") for b in API],
    ({"block_term": True, "task": "wsd"}, "word_interpretation only"),
    ({"stop": [".", ""]}, "empty stop sequence"),
    ({"selection": "mbr", "n_samples": 4, "task": "wsd"}, "selection mbr is defined for word_interpretation only"),
    ({"selection": "mbr", "mbr_utility": "chrf"}, "mbr_utility"),
]
ACCEPTED = [  # every other combination can work
    *[{"backend": b, "selection": "likelihood", "n_samples": 4} for b in ("local", "vllm")],
    *[
        {"backend": b, "selection": s, "n_samples": 4, "reward_model": "r"}
        for b in ("local", "vllm", *API)
        for s in ("first", "oracle", "orm")
    ],
    *[
        {"backend": b, "task": t}
        for b in ("local", "vllm", *API)
        for t in ("wsd", "context_synthesis", "definition_synthesis")
    ],
    *[
        {"backend": b, "icl_mode": m, "icl_k": 4, "icl_examples": "t"}
        for b in ("local", "vllm", *API)
        for m in ("random", "retrieval")
    ],
    *[{"backend": b, "greedy": True} for b in ("local", "vllm", *API)],
    {"backend": "vllm", "domain_exports": ["d0", "d1"], "selection": "likelihood", "n_samples": 8},
    {"backend": "local", "max_prompt_tokens": 512, "on_long_prompt": "skip"},
    {"icl_k": 0, "example_path": "train.jsonl"},
    *[{"backend": b, "num_beams": 4, "greedy": True, "length_penalty": 0.6} for b in ("local",)],
    {"backend": "vllm", "num_beams": 4, "greedy": True, "length_penalty": 0.6, "repetition_penalty": 1.0},
    *[{"backend": b, "block_term": True, "stop": ["."]} for b in ("local", "vllm")],
    {"backend": "local", "num_beams": 2, "greedy": True, "block_term": True, "stop": [";"]},
    *[{"backend": b, "stop": [".", ";"]} for b in API],
    *[{"backend": b, "selection": "mbr", "n_samples": 4, "mbr_utility": u} for b in API for u in ("bleu", "bertscore")],
]


@pytest.mark.parametrize("extra,message", REFUSED, ids=lambda x: json.dumps(x) if isinstance(x, dict) else "")
def test_settings_that_cannot_work_are_refused(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, extra), InferConfig)


@pytest.mark.parametrize("extra", ACCEPTED, ids=json.dumps)
def test_combinations_that_can_work_load(tmp_path, extra):
    load_config(write(tmp_path, extra), InferConfig)


def test_likelihood_with_an_api_exits_2_before_any_work(tmp_path, capsys):
    from inference.infer import main

    path = write(
        tmp_path, {"backend": "openai", "selection": "likelihood", "n_samples": 4, "output_dir": str(tmp_path / "out")}
    )
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "selection likelihood needs token log-probs" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_reward_model_is_refused_before_sampling(tmp_path, capsys):
    from inference.infer import main

    path = write(
        tmp_path,
        {
            "selection": "orm",
            "n_samples": 4,
            "reward_model": str(tmp_path / "orm"),
            "output_dir": str(tmp_path / "out"),
        },
    )
    assert main(["--config", str(path)]) == 2
    assert f"reward_model: {tmp_path / 'orm'}: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_original_key_and_value_spellings(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            {
                "task": "word-interpretation",
                "max_query": 100,
                "shot_num": 32,
                "retrieval_policy": "topk",
                "example_path": "train.jsonl",
                "num_return_sequences": 1,
                "max_tokens": 64,
            },
        ),
        InferConfig,
    )
    assert (cfg.task, cfg.max_items, cfg.icl_k, cfg.icl_mode, cfg.icl_examples) == (
        "word_interpretation",
        100,
        32,
        "retrieval",
        "train.jsonl",
    )


@pytest.mark.parametrize("backend", ["local", "vllm", "openai", "anthropic", "gemini"])
def test_the_answer_parser_runs_for_api_backends_unless_told(backend):
    cfg = {"input": "x", "output_dir": "y", "model": "m", "backend": backend}
    assert InferConfig(**cfg).parses_answers is (backend in ("openai", "anthropic", "gemini"))
    assert InferConfig(**cfg, parse_answer="always").parses_answers is True
    assert InferConfig(**cfg, parse_answer="never").parses_answers is False


def test_parse_answer_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="parse_answer"):
        load_config(write(tmp_path, {"parse_answer": "sometimes"}), InferConfig)


def test_stop_flags_repeat_or_take_a_comma_list():
    """--stop . --stop ';' and --stop '.,;' give the same list; a lone comma is a stop sequence itself."""
    from inference.infer import build_parser
    from run_config.cli import config_from_args

    base = ["--input", "x", "--output-dir", "y", "--model", "m"]
    parse = lambda *flags: config_from_args(build_parser().parse_args([*base, *flags]), InferConfig)
    assert parse("--stop", ".", "--stop", ";").stop == [".", ";"]
    assert parse("--stop", ".,;").stop == [".", ";"] == parse("--stop", ".", ";").stop
    assert parse("--stop", ",").stop == [","] and parse().stop == []
    cfg = parse("--num-beams", "3", "--length-penalty", "0.7", "--greedy", "--block-term", "--stop", ".")
    sampling = cfg.sampling(cfg.seed, cfg.greedy)
    assert (sampling.num_beams, sampling.length_penalty, sampling.stop, sampling.block_term) == (3, 0.7, (".",), True)
