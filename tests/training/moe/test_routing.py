"""training/moe/routing.py + moe_export.py: routing policies, one-expert domain routing, per-domain export."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from run_config.errors import ConfigError, DataError
from tests.helpers.pico import perturbed_copy, pico_llama, write_minilm_clusters
from training.moe.config import MergeConfig
from training.moe.export import EXPORT_INDEX, export_all_dense, export_dense
from training.moe.merge import merge
from training.moe.routing import load_routed_moe

IDS = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11, 12], [1, 13, 14, 15, 16, 17, 18, 19, 20]])


def _merge(experts, out: Path, **kw) -> Path:
    merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(out), **kw))
    return out


@pytest.fixture(scope="module")
def pico_moe(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pico_moe")
    base = pico_llama(root / "base", seed=0)
    experts = [perturbed_copy(base, root / f"e{i}", seed=i, scale=0.2) for i in range(3)]
    return {"experts": experts, "moe": _merge(experts, root / "moe"), "root": root}


def _dense_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(str(folder)).eval()(input_ids=ids).logits


def test_domain_routing_runs_one_expert_and_equals_its_export(pico_moe, tmp_path, count_ffn):
    moe = load_routed_moe(pico_moe["moe"])
    assert moe.policy == "domain" and moe.num_experts == 3
    with torch.no_grad(), moe.only_expert(2):
        logits = moe.model(input_ids=IDS).logits
    assert count_ffn == Counter({2: 2})  # 2 layers x expert 2, nothing else computed
    dense = export_dense(pico_moe["moe"], 2, tmp_path / "dense2")
    torch.testing.assert_close(logits, _dense_logits(dense, IDS), rtol=1e-5, atol=1e-5)


def test_mixed_batch_routes_each_sequence(pico_moe, count_ffn):
    moe = load_routed_moe(pico_moe["moe"])
    with torch.no_grad():
        with moe.route([0, 2]):
            both = moe.model(input_ids=IDS).logits
        with moe.only_expert(0):
            first = moe.model(input_ids=IDS[:1]).logits
        with moe.only_expert(2):
            second = moe.model(input_ids=IDS[1:]).logits
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=1e-5, atol=1e-5)
    assert count_ffn == Counter({0: 4, 2: 4})
    with pytest.raises(ValueError, match="needs each sequence's expert"):
        moe.model(input_ids=IDS)


def test_per_domain_export_roundtrip(pico_moe, tmp_path):
    paths = export_all_dense(pico_moe["moe"], tmp_path / "dense")
    index = json.loads((tmp_path / "dense" / EXPORT_INDEX).read_text())
    assert index["experts"] == {"0": "expert_0", "1": "expert_1", "2": "expert_2"}
    for e, path in enumerate(paths):
        exported, original = (
            load_file(path / "model.safetensors"),
            load_file(pico_moe["experts"][e] / "model.safetensors"),
        )
        assert exported.keys() == original.keys()
        for k in original:
            if ".mlp." in k:
                assert torch.equal(exported[k], original[k]), k
    one = _merge([pico_moe["experts"][1]], tmp_path / "moe1", top_k=1)
    back = load_file(export_dense(one, 0, tmp_path / "back") / "model.safetensors")
    original = load_file(pico_moe["experts"][1] / "model.safetensors")
    assert back.keys() == original.keys() and all(torch.equal(back[k], original[k]) for k in original)
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "llama"
    with pytest.raises(DataError, match="no expert 5"):
        export_dense(pico_moe["moe"], 5, tmp_path / "x")


@pytest.mark.parametrize("k", [1, 2])
def test_token_topk_generates_with_aux_loss(pico_moe, k):
    moe = load_routed_moe(pico_moe["moe"], policy="token", top_k=k)
    out = moe.forward(input_ids=IDS, labels=IDS, output_router_logits=True)
    assert torch.isfinite(out.loss) and torch.isfinite(out.aux_loss) and out.aux_loss > 0
    assert len(out.router_logits) == 2 and out.router_logits[0].shape == (IDS.numel(), 3)
    generated = moe.generate(input_ids=IDS, max_new_tokens=4, do_sample=False)
    assert generated.shape == (2, IDS.shape[1] + 4)


def test_identical_experts_every_policy_equals_dense(tmp_path):
    base = pico_llama(tmp_path / "base", seed=3)
    moe_dir = _merge([base] * 3, tmp_path / "moe")
    dense = _dense_logits(base, IDS)
    for policy in ("token", "soft-sequence", "hard-sequence"):
        moe = load_routed_moe(moe_dir, policy=policy)
        with torch.no_grad():
            torch.testing.assert_close(moe.forward(input_ids=IDS).logits, dense, rtol=1e-5, atol=1e-5)


def test_hard_sequence_keeps_the_prompt_choice_while_decoding(pico_moe, count_ffn):
    moe = load_routed_moe(pico_moe["moe"], policy="hard-sequence")
    with torch.no_grad():
        out = moe.generate(input_ids=IDS[:1], max_new_tokens=3, do_sample=False)
        chosen = {layer: int(v.argmax()) for layer, v in moe.state.seq_logits.items()}
    assert sum(count_ffn.values()) == 2 * 3  # one expert per layer per step: prefill + 2 decoding steps
    assert out.shape == (1, IDS.shape[1] + 3) and len(chosen) == 2


def test_sequence_pooling_mask_follows_num_return_sequences(pico_moe):
    moe = load_routed_moe(pico_moe["moe"], policy="soft-sequence")
    mask = torch.ones_like(IDS)
    mask[0, :3] = 0  # left padding of the first prompt
    with torch.no_grad():
        moe.forward(input_ids=IDS, attention_mask=mask)
        pooled = moe.state.seq_logits[0].clone()
        moe.generate(input_ids=IDS, attention_mask=mask, max_new_tokens=2, do_sample=True, num_return_sequences=3)
    torch.testing.assert_close(moe.state.seq_logits[0], pooled.repeat_interleave(3, dim=0), rtol=1e-5, atol=1e-5)


def test_soft_sequence_pools_only_the_mask(pico_moe):
    moe = load_routed_moe(pico_moe["moe"], policy="soft-sequence")
    mask = torch.zeros_like(IDS)
    mask[:, :4] = 1
    with torch.no_grad():
        moe.forward(input_ids=IDS, pool_mask=mask)
        masked = moe.state.seq_logits[0].clone()
        moe.forward(input_ids=IDS[:, :4])
    torch.testing.assert_close(masked, moe.state.seq_logits[0], rtol=1e-5, atol=1e-5)


def test_domains_for_maps_clusters_to_experts(pico_moe, tmp_path):
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "c" / "centroids.npy", np.eye(3, 8, dtype=np.float32))
    (tmp_path / "c" / "embedder.json").write_text('{"kind": "none"}')
    moe_dir = _merge(
        pico_moe["experts"], tmp_path / "moe", cluster_dir=str(tmp_path / "c"), cluster_to_expert=[2, 0, 1]
    )

    class FixedAssigner:
        def assign(self, pairs):
            return np.arange(len(pairs)) % 3

    moe = load_routed_moe(moe_dir)
    moe.router._assigner = FixedAssigner()
    assert moe.domains_for([("a", "b")] * 4) == [2, 0, 1, 2]
    with pytest.raises(DataError, match="without --cluster-dir"):
        load_routed_moe(pico_moe["moe"]).domains_for([("a", "b")])
    with pytest.raises(ConfigError, match="choose from"):
        load_routed_moe(pico_moe["moe"], policy="token-level")


def test_domains_for_uses_the_cluster_assigner(pico_moe, pairs_3dex, minilm_dir, tmp_path):
    pytest.importorskip("clustering.assign")
    labels = write_minilm_clusters(tmp_path / "clusters", pairs_3dex[:60], 3, minilm_dir)
    moe_dir = _merge(pico_moe["experts"], tmp_path / "moe", cluster_dir=str(tmp_path / "clusters"))
    moe = load_routed_moe(moe_dir)
    assert moe.domains_for(pairs_3dex[:60]) == labels


@pytest.mark.parametrize(
    "dtype,expected",
    [(None, torch.float32), ("auto", torch.float32), ("bfloat16", torch.bfloat16), (torch.float16, torch.float16)],
)
def test_dtype_reaches_the_loader(pico_moe, dtype, expected):
    moe = load_routed_moe(pico_moe["moe"], policy="token", dtype=dtype)
    assert {p.dtype for p in moe.model.parameters()} == {expected}
    with torch.no_grad():
        assert moe.forward(input_ids=IDS).logits.dtype == expected


def _export_logits(folder: Path) -> tuple[torch.Tensor, Any]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits, model


def test_exports_tie_the_head_as_the_moe_does_and_untie_it_when_asked(tmp_path):
    from safetensors.torch import save_file

    base = pico_llama(tmp_path / "base", seed=0, tie=True)
    experts = [perturbed_copy(base, tmp_path / f"e{i}", seed=i, scale=0.2) for i in range(2)]
    moe_dir = _merge(experts, tmp_path / "moe")
    moe = load_routed_moe(moe_dir)
    with torch.no_grad(), moe.only_expert(1):
        want = moe.model(input_ids=IDS).logits
    tied = export_dense(moe_dir, 1, tmp_path / "tied")
    untied = export_dense(moe_dir, 1, tmp_path / "untied", untie=True)
    for folder, tie in ((tied, True), (untied, False)):
        config, weights = json.loads((folder / "config.json").read_text()), load_file(folder / "model.safetensors")
        assert config["tie_word_embeddings"] is tie and ("lm_head.weight" in weights) is not tie
        logits, model = _export_logits(folder)
        torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
        shares = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        assert shares is tie
    weights = load_file(untied / "model.safetensors")
    assert torch.equal(weights["lm_head.weight"], weights["model.embed_tokens.weight"])
    # a stray lm_head tensor beside a tied config: the MoE (and vLLM) use the embeddings, so does the export
    shard = moe_dir / "model.safetensors"
    stored = load_file(shard)
    save_file({**stored, "lm_head.weight": torch.randn_like(stored["model.embed_tokens.weight"])}, str(shard))
    stray = export_dense(moe_dir, 1, tmp_path / "stray")
    assert "lm_head.weight" not in load_file(stray / "model.safetensors")
    torch.testing.assert_close(_export_logits(stray)[0], want, rtol=1e-5, atol=1e-5)


def test_merge_untie_embeddings_reaches_the_exports(tmp_path):
    from training.moe.export import exports_complete
    from training.moe.merge import is_up_to_date

    base = pico_llama(tmp_path / "base", seed=0, tie=True)
    cfg = MergeConfig(
        experts=[str(base)] * 2,
        output_dir=str(tmp_path / "moe"),
        dense_export_dir=str(tmp_path / "exports"),
        untie_embeddings=True,
    )
    merge(cfg)
    for e in range(2):
        assert (
            json.loads((tmp_path / "exports" / f"expert_{e}" / "config.json").read_text())["tie_word_embeddings"]
            is False
        )
    assert is_up_to_date(cfg) and exports_complete(cfg.output_dir, cfg.dense_export_dir, untie=True)
    assert not exports_complete(cfg.output_dir, cfg.dense_export_dir, untie=False)
