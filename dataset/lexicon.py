"""The embedded lexicon's folder (WordNet glosses and examples, preprocessed once) and the `asset:` names."""

from __future__ import annotations

from pathlib import Path

from dataset.config import PreprocessConfig
from dataset.preprocess import is_up_to_date, preprocess
from run_config.assets import cache_dir, minilm_path, smollm2_path
from run_config.errors import ConfigError

ASSET_PREFIX = "asset:"


def wordnet_lexicon_dir() -> Path:
    """Return the preprocessed embedded lexicon in the asset cache, building it when absent or stale."""
    cfg = PreprocessConfig(builtin="wordnet", output_dir=str(cache_dir() / "data" / "wordnet"))
    if not is_up_to_date(cfg):
        preprocess(cfg)
    return Path(cfg.output_dir)


def resolve_asset(name: str) -> str:
    """Turn `asset:smollm2`, `asset:minilm` or `asset:wordnet/<file>` into a local path; else return `name`."""
    if not name.startswith(ASSET_PREFIX):
        return name
    what = name[len(ASSET_PREFIX) :]
    if what == "smollm2":
        return str(smollm2_path())
    if what == "minilm":
        return str(minilm_path())
    if what.startswith("wordnet/"):
        return str(wordnet_lexicon_dir() / what[len("wordnet/") :])
    raise ConfigError(f"unknown asset {name!r}; choose asset:smollm2, asset:minilm or asset:wordnet/<split>.jsonl")
