"""MoE merge and routing on 4 copies of the real SmolLM2-135M (tied embeddings, 30 layers, sharded output)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from tests.helpers.pico import write_minilm_clusters
from training.moe.config import FinetuneRouterConfig, MergeConfig
from training.moe.merge import merge
from training.moe.plan import expert_key, router_key
from training.moe.routing import load_routed_moe
from training.moe.safetensors_stream import CheckpointReader

PROMPT = '"the river bank was muddy after the rain" What is the definition of "bank"?\n\n'


@pytest.fixture(scope="module")
def smol(smollm2_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("smol") / "moe"
    merge(MergeConfig(experts=[str(smollm2_dir)] * 4, output_dir=str(out), max_shard_size_mb=600))
    return {"dense": smollm2_dir, "moe_dir": out, "moe": load_routed_moe(out)}


def test_merged_tensors_names_shapes_no_nan(smol):
    index = json.loads((smol["moe_dir"] / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3
    assert len(index["weight_map"]) == 2 + 30 * (6 + 1 + 4 * 3)  # embed + norm (lm_head tied); per layer
    reader = CheckpointReader(smol["moe_dir"])
    assert reader.info[router_key(29)].shape == (4, 576)
    assert reader.info[expert_key(0, 3, "w1")].shape == (1536, 576)
    assert reader.info[expert_key(0, 3, "w2")].shape == (576, 1536)
    for name in (router_key(0), expert_key(7, 2, "w3"), "model.embed_tokens.weight", "model.norm.weight"):
        assert torch.isfinite(reader.read(name)).all()
    cfg = smol["moe"].model.config
    assert cfg.model_type == "mixtral" and cfg.tie_word_embeddings and cfg.num_local_experts == 4


def test_domain_routing_computes_one_expert_and_equals_dense(smol, count_ffn):  # noqa: F811
    from transformers import AutoModelForCausalLM

    moe = smol["moe"]
    dense = AutoModelForCausalLM.from_pretrained(str(smol["dense"])).eval()
    ids = moe.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad(), moe.only_expert(3):
        logits = moe.model(input_ids=ids).logits
        text = moe.model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    assert set(count_ffn) == {3} and count_ffn[3] == 30 * (1 + 6)  # one forward + 6 decoding steps
    with torch.no_grad():
        torch.testing.assert_close(logits, dense(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
        assert torch.equal(text, dense.generate(input_ids=ids, max_new_tokens=6, do_sample=False))


def test_learned_domain_router_agrees_with_centroid_routing(smol, pairs_3dex, minilm_dir, tmp_path):  # noqa: F811
    """Learned router on the MoE's own hidden states vs MiniLM nearest-centroid labels, on held-out rows."""
    from training.moe.finetune_router import agreement, train_domain_classifier

    pairs = pairs_3dex[:180]
    labels = write_minilm_clusters(tmp_path / "clusters", pairs, 4, minilm_dir)
    moe = smol["moe"]
    moe.set_policy("learned-domain")
    cfg = FinetuneRouterConfig(moe_dir="m", train_file="t", output_dir="o", batch_size=32, classifier_layer=4)
    info = train_domain_classifier(moe, pairs[:120], labels[:120], cfg)
    held_out = agreement(moe, pairs[120:], labels[120:])
    majority = Counter(labels[120:]).most_common(1)[0][1] / len(labels[120:])
    print(
        f"learned domain router (layer {info['layer']}): train accuracy {info['train_accuracy']:.3f}, "
        f"held-out agreement {held_out:.3f} (majority class {majority:.3f})"
    )
    assert info["train_accuracy"] > 0.8 and held_out > majority
    assert moe.domains_for(pairs[:5]) == moe.classify_domains(pairs[:5])
