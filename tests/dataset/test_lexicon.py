"""The embedded lexicon's folder (built once through preprocess) and the `asset:` names."""

from __future__ import annotations

import pytest

from dataset.lexicon import resolve_asset, wordnet_lexicon_dir
from run_config import assets
from run_config.errors import ConfigError


def test_asset_names_resolve_and_a_built_lexicon_is_not_rebuilt(wordnet_lexicon, minilm_dir) -> None:
    stamp = (wordnet_lexicon / "manifest.json").stat().st_mtime_ns
    assert resolve_asset("asset:wordnet/test.jsonl") == str(wordnet_lexicon / "test.jsonl")
    assert (wordnet_lexicon / "test.jsonl").is_file()
    assert (wordnet_lexicon / "manifest.json").stat().st_mtime_ns == stamp
    assert resolve_asset("asset:minilm") == str(minilm_dir)
    assert resolve_asset("plain/path") == "plain/path"


def test_unknown_asset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown asset"):
        resolve_asset("asset:nothing")


def test_a_failed_build_raises_its_own_error_and_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LMLEXICON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "WORDNET_SRC", tmp_path / "no-wordnet")
    with pytest.raises(assets.AssetError, match="WordNet not found in .*no-wordnet"):
        wordnet_lexicon_dir()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_a_missing_asset_stops_a_stage_with_one_line(tmp_path, monkeypatch, capsys) -> None:
    """A stage whose config names a WordNet asset that cannot be built exits 1 with one stderr line."""
    import main as toolkit_main

    monkeypatch.setenv("LMLEXICON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "WORDNET_SRC", tmp_path / "no-wordnet")
    argv = ["distill", "--teacher-model", "asset:smollm2", "--data-path-train", "asset:wordnet/train.jsonl"]
    code = toolkit_main.main([*argv, "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "WordNet not found" in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "o").exists()
