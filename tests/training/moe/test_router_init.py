"""training/moe/router_init.py: centroid router init when a centroid is nearest to no router prompt (real rows)."""

from __future__ import annotations

import torch

from clustering.assign import load_assigner
from tests.helpers.pico import perturbed_copy, pico_llama, write_minilm_clusters
from tests.helpers.train import urban_records, write_split
from training.moe.config import MergeConfig
from training.moe.merge import merge
from training.moe.plan import router_key
from training.moe.router_init import centroid_groups
from training.moe.safetensors_stream import CheckpointReader


def test_an_expert_nearest_to_no_prompt_gets_the_prompts_most_similar_to_its_centroid(data_3dex, minilm_dir, tmp_path):
    records = urban_records(data_3dex, 60)
    pairs = [(r.term, r.context) for r in records]
    labels = write_minilm_clusters(tmp_path / "clusters", pairs, 2, minilm_dir)
    pool = [p for p, c in zip(pairs, labels) if c == 0]  # every prompt is nearest to centroid 0
    assigner = load_assigner(tmp_path / "clusters", device="cpu")
    groups = centroid_groups(pool, assigner, [0, 1], 2)
    assert groups[0] == pool
    scores = assigner.scores(pool)[:, 1]
    assert len(groups[1]) == len(pool) // 2
    assert min(scores[pool.index(p)] for p in groups[1]) >= max(s for p, s in zip(pool, scores) if p not in groups[1])
    swapped = centroid_groups(pool, assigner, [1, 0], 2)  # cluster 0 is expert 1's
    assert swapped[1] == pool and swapped[0] == groups[1]

    base = pico_llama(tmp_path / "base", seed=0)
    experts = [perturbed_copy(base, tmp_path / f"e{i}", seed=i, scale=0.05) for i in range(2)]
    prompts = write_split(tmp_path / "valid.jsonl", [r for r, c in zip(records, labels) if c == 0], "valid")
    merge(
        MergeConfig(
            experts=[str(e) for e in experts],
            output_dir=str(tmp_path / "moe"),
            router_init="centroids",
            cluster_dir=str(tmp_path / "clusters"),
            router_prompt_files=[str(prompts)],
            router_prompt_samples=len(pool),
        )
    )
    reader = CheckpointReader(tmp_path / "moe")
    for layer in range(2):
        gate = reader.read(router_key(layer))
        assert torch.isfinite(gate).all() and not torch.allclose(gate[0], gate[1])
        torch.testing.assert_close(gate.norm(dim=-1), torch.ones(2))
