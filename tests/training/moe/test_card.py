"""training/moe/card.py: a merge writes its resolved config and a README.md model card that explains the folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import main as toolkit_main
from run_config.errors import DataError
from run_config.loader import load_config
from run_config.runtime import read_manifest
from tests.helpers.pico import perturbed_copy, pico_llama
from training.moe.card import CARD_EXAMPLE_TERMS
from training.moe.checkpoint import CARD_FILE, MERGE_CONFIG_FILE
from training.moe.config import MergeConfig
from training.moe.merge import merge
from training.moe.safetensors_stream import CheckpointReader


@pytest.fixture(scope="module")
def experts(tmp_path_factory) -> list[Path]:
    """Two pico Llama experts (perturbed copies of one base)."""
    root = tmp_path_factory.mktemp("pico")
    base = pico_llama(root / "base", seed=0)
    return [perturbed_copy(base, root / f"e{i}", seed=10 + i, scale=0.05) for i in range(2)]


@pytest.fixture(scope="module")
def clusters(urban_splits, tmp_path_factory) -> Path:
    """The cluster stage's real output: 200 Urban rows in 2 lexical (TF-IDF) clusters, example terms included."""
    out = tmp_path_factory.mktemp("clusters")
    argv = ["cluster", "--input", str(urban_splits[0]), "--output-dir", str(out), "--num-clusters", "2"]
    assert toolkit_main.main([*argv, "--partition", "lexical", "--no-plot"]) == 0
    return out


def _python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)


def test_merge_writes_the_resolved_config_and_a_card_naming_experts_clusters_and_policy(experts, clusters, tmp_path):
    cfg = MergeConfig(
        experts=[str(e) for e in experts], output_dir=str(tmp_path / "moe"), cluster_dir=str(clusters),
        cluster_to_expert=[1, 0],
    )  # fmt: skip
    merge(cfg)
    out = tmp_path / "moe"
    saved = json.loads((out / MERGE_CONFIG_FILE).read_text(encoding="utf-8"))
    assert saved["experts"] == [str(e.resolve()) for e in experts] and saved["cluster_dir"] == str(clusters.resolve())
    assert saved["top_k"] == 2 and saved["router_init"] == "random" and saved["cluster_to_expert"] == [1, 0]
    assert load_config(out / MERGE_CONFIG_FILE, MergeConfig).model_dump(mode="json") == saved

    card = (out / CARD_FILE).read_text(encoding="utf-8")
    examples = json.loads((clusters / "report.json").read_text(encoding="utf-8"))["examples"]
    assert len(examples) == 2 and all(examples)
    for e, path in enumerate(experts):
        assert f"| {e} | `{path.resolve()}` | {1 - e} |" in card  # cluster 1 -> expert 0, cluster 0 -> expert 1
    for c, terms in enumerate(examples):
        assert f"| {c} | {1 - c} | {', '.join(terms[:CARD_EXAMPLE_TERMS])} |" in card
    assert "Default policy `domain`" in card and "k = 2" in card
    assert json.dumps(saved, indent=2) in card
    files = read_manifest(out)["files"]
    assert files[CARD_FILE] == (out / CARD_FILE).stat().st_size and MERGE_CONFIG_FILE in files


def test_the_cards_load_snippets_run_and_its_config_merges_the_same_model(experts, clusters, tmp_path, monkeypatch):
    merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(tmp_path / "moe"), cluster_dir=str(clusters)))
    card = (tmp_path / "moe" / CARD_FILE).read_text(encoding="utf-8")
    stock, toolkit = _python_blocks(card)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(stock, scope)
    assert type(scope["model"]).__name__ == "MixtralForCausalLM" and scope["tokenizer"].eos_token == "</s>"
    scope = {}
    exec(toolkit.replace('device="cuda"', 'device="cpu"'), scope)
    assert scope["moe"].policy == "domain" and scope["moe"].model.dtype == torch.bfloat16
    assert scope["out"].shape[0] == 1 and scope["out"].shape[1] > scope["batch"]["input_ids"].shape[1]

    again = tmp_path / "again"
    argv = ["merge", "--config", str(tmp_path / "moe" / MERGE_CONFIG_FILE), "--output-dir", str(again)]
    assert toolkit_main.main(argv) == 0
    first, second = CheckpointReader(tmp_path / "moe"), CheckpointReader(again)
    assert first.info.keys() == second.info.keys()
    assert all(torch.equal(first.read(k), second.read(k)) for k in first.info)


def test_a_merge_without_clusters_says_so(experts, tmp_path):
    merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(tmp_path / "moe"), policy="token", top_k=1))
    card = (tmp_path / "moe" / CARD_FILE).read_text(encoding="utf-8")
    assert "Merged without a cluster folder" in card and "Default policy `token`" in card and "k = 1" in card
    assert "| 0 | `" in card and "| 1 | `" in card


def test_a_report_that_does_not_fit_the_centroids_fails_before_writing(experts, clusters, tmp_path):
    bad = tmp_path / "clusters"
    bad.mkdir()
    for name in ("centroids.npy", "embedder.json", "tfidf.json"):
        (bad / name).write_bytes((clusters / name).read_bytes())
    (bad / "report.json").write_text(json.dumps({"examples": [["a"], ["b"], ["c"]]}), encoding="utf-8")
    with pytest.raises(DataError, match="report.json.*3 clusters for 2 centroids"):
        merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(tmp_path / "moe"), cluster_dir=str(bad)))
    assert not (tmp_path / "moe").exists()
