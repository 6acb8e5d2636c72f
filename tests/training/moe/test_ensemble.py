"""Routes every policy reports (expert, margin), and the ensemble / hybrid policies, on pico MoEs and real pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.backend import Request, Sampling
from inference.local import LocalBackend
from run_config.errors import ConfigError
from tests.helpers.pico import perturbed_copy, pico_llama, write_minilm_clusters
from training.moe.config import MergeConfig
from training.moe.merge import merge
from training.moe.routing import DomainClassifier, Route, load_routed_moe

IDS = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11, 12], [1, 13, 14, 15, 16, 17, 18, 19, 20]])


def _merge(experts, out: Path, **kw) -> Path:
    merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(out), **kw))
    return out


@pytest.fixture(scope="module")
def clustered(tmp_path_factory, pairs_3dex, minilm_dir) -> dict:
    """3 distinct pico experts merged with MiniLM centroids of 60 real pairs; the same base merged 3 times."""
    root = tmp_path_factory.mktemp("ensemble")
    base = pico_llama(root / "base", seed=0)
    experts = [perturbed_copy(base, root / f"e{i}", seed=i, scale=0.3) for i in range(3)]
    write_minilm_clusters(root / "clusters", pairs_3dex[:60], 3, minilm_dir)
    moe = _merge(experts, root / "moe", cluster_dir=str(root / "clusters"), policy="ensemble", ensemble_k=2)
    same = _merge([base] * 3, root / "same", cluster_dir=str(root / "clusters"))
    return {"moe": moe, "same": same, "base": base, "pairs": pairs_3dex[60:76]}


def _requests(pairs) -> list[Request]:
    from prompts.builder import build_prompt

    return [Request(f"x:{i}", t, c, build_prompt(t, c, bos_token="<s>"), (0, 1)) for i, (t, c) in enumerate(pairs)]


def _run(backend, pairs, sampling) -> dict:
    return {(g.item_id, g.sample_idx): g for g in backend.generate(_requests(pairs), sampling)}


def test_domain_and_ensemble_routes_follow_the_centroid_similarities(clustered):
    pairs = clustered["pairs"]
    domain = load_routed_moe(clustered["moe"], policy="domain")
    sims = domain._cluster_assigner().scores(pairs)  # cluster_to_expert is the identity here
    ranked = np.sort(sims, axis=1)[:, ::-1]
    routes = domain.routes(pairs)
    assert [r.experts for r in routes] == [(e,) for e in domain.domains_for(pairs)]
    assert [r.margin for r in routes] == pytest.approx(list(ranked[:, 0] - ranked[:, 1]), abs=1e-6)
    ensemble = load_routed_moe(clustered["moe"])
    assert ensemble.policy == "ensemble" and ensemble.ensemble_k == 2
    for route, row in zip(ensemble.routes(pairs), sims):
        top = np.argsort(-row)[:2]
        assert route.experts == tuple(top)
        w = np.exp(row[top] / 0.1) / np.exp(row[top] / 0.1).sum()
        assert route.weights == pytest.approx(list(w)) and route.field[0][0] == top[0]
    margins = [r.margin for r in routes]
    tau = float(np.median(margins))
    hybrid = load_routed_moe(clustered["moe"], policy="hybrid", hybrid_tau=tau)
    sizes = [len(r.experts) for r in hybrid.routes(pairs)]
    assert sizes == [1 if m >= tau else 2 for m in margins] and 1 in sizes and 2 in sizes


def test_ensemble_of_one_expert_is_domain_routing(clustered):
    """k = 1: the ensemble's samples, log-likelihoods and rows' expert fields are domain routing's, exactly."""
    pairs, sampling = clustered["pairs"][:8], Sampling(seed=3, max_new_tokens=6)
    domain = LocalBackend.from_path(str(clustered["moe"]), device="cpu", batch_size=4)
    domain.moe.set_policy("domain")
    one = LocalBackend.from_path(str(clustered["moe"]), device="cpu", batch_size=4)
    one.moe.set_ensemble(k=1)
    a, b = _run(domain, pairs, sampling), _run(one, pairs, sampling)
    assert {k: (g.text, g.logprob, g.expert, g.router_margin) for k, g in a.items()} == {
        k: (g.text, g.logprob, g.expert, g.router_margin) for k, g in b.items()
    }
    assert all(isinstance(g.expert, int) and g.router_margin >= 0 for g in a.values())


def test_ensemble_of_identical_experts_is_the_dense_model(clustered):
    pairs, sampling = clustered["pairs"][:6], Sampling(greedy=True, max_new_tokens=8)
    dense = LocalBackend.from_path(str(clustered["base"]), device="cpu", batch_size=3)
    mixed = LocalBackend.from_path(str(clustered["same"]), device="cpu", batch_size=3)
    mixed.moe.set_policy("ensemble")
    mixed.moe.set_ensemble(k=3)
    a, b = _run(dense, pairs, sampling), _run(mixed, pairs, sampling)
    assert {k: g.text for k, g in a.items()} == {k: g.text for k, g in b.items()}
    assert [b[k].logprob for k in a] == pytest.approx([a[k].logprob for k in a], abs=1e-4)
    assert all(len(g.expert) == 3 and g.expert[0][1] == pytest.approx(g.expert[0][1]) for g in b.values())


def test_mixed_generation_mixes_the_experts_next_token_distributions(clustered):
    """Each generated step's log-probs are log(0.3 p_0 + 0.7 p_2) of the two experts run alone on the same text."""
    moe = load_routed_moe(clustered["moe"])
    routes = [Route((0, 2), (0.3, 0.7), 0.1), Route((1, 0), (0.6, 0.4), 0.2)]
    with torch.no_grad():
        out = moe.generate(
            routes=routes,
            input_ids=IDS,
            max_new_tokens=4,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=3,
            eos_token_id=None,
        )
        assert out.sequences.shape == (2, IDS.shape[1] + 4)
        for b, route in enumerate(routes):
            seq = out.sequences[b : b + 1]
            probs = 0
            for e, w in zip(route.experts, route.weights):
                with moe.only_expert(e):
                    probs = probs + w * moe.model(input_ids=seq).logits[0].softmax(-1)
            for t, step in enumerate(out.logits):
                expected = probs[IDS.shape[1] - 1 + t].log()
                torch.testing.assert_close(step[b], expected, rtol=1e-4, atol=1e-4)
                assert int(seq[0, IDS.shape[1] + t]) == int(expected.argmax())  # greedy on the mixture


def test_in_model_policies_record_the_prompt_routing(clustered):
    moe = load_routed_moe(clustered["moe"], policy="token", top_k=2)
    mask = torch.ones_like(IDS)
    mask[0, :3] = 0
    seen = []
    hooks = [b.gate.register_forward_hook(lambda _m, _i, out: seen.append(out[0].softmax(-1))) for b in moe.blocks]
    with torch.no_grad():
        moe.forward(input_ids=IDS, attention_mask=mask)
    for h in hooks:
        h.remove()
    m = mask.reshape(-1, 1).float()
    per_layer = [(p * m).view(2, -1, 3).sum(1) / mask.sum(1, keepdim=True) for p in seen]
    expected = torch.stack(per_layer).mean(0).double()
    routes = moe.recorded_routes()
    for route, row in zip(routes, expected):
        top = torch.topk(row, 2)
        assert route.experts == tuple(top.indices.tolist()) and route.margin == pytest.approx(float(top.values[0]))
        assert route.weights == pytest.approx(top.values.tolist())
    for policy, size in (("hard-sequence", 1), ("soft-sequence", 3)):
        moe.set_policy(policy)
        with torch.no_grad():
            moe.generate(input_ids=IDS, attention_mask=mask, max_new_tokens=2, do_sample=False)
        routes = moe.recorded_routes()
        assert [len(r.experts) for r in routes] == [size, size]
    assert sum(routes[0].weights) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="routes inside the model"):
        moe.routes(clustered["pairs"][:1])


def test_learned_domain_margin_is_the_classifier_probability(clustered):
    moe = load_routed_moe(clustered["moe"], policy="learned-domain")
    torch.manual_seed(0)
    moe.classifier = DomainClassifier(32, 3, layer=1)
    pairs = clustered["pairs"][:5]
    probs = moe.classifier_probabilities(pairs)
    routes = moe.routes(pairs)
    assert [r.experts[0] for r in routes] == probs.argmax(-1).tolist()
    assert [r.margin for r in routes] == pytest.approx(probs.max(-1).values.tolist())


def test_ensemble_settings_are_checked(clustered, tmp_path):
    base = clustered["base"]
    with pytest.raises(ValueError, match="routes by centroid similarity"):
        MergeConfig(experts=[str(base)] * 2, output_dir=str(tmp_path / "x"), policy="hybrid")
    with pytest.raises(ValueError, match="ensemble_k must be in"):
        MergeConfig(experts=[str(base)] * 2, output_dir="x", policy="ensemble", cluster_dir="c", ensemble_k=3)
    moe = load_routed_moe(clustered["moe"])
    with pytest.raises(ConfigError, match="ensemble_k"):
        moe.set_ensemble(k=4)
    with pytest.raises(ConfigError, match="temperature"):
        moe.set_ensemble(temperature=0)
    plain = _merge([base] * 2, tmp_path / "plain")
    with pytest.raises(Exception, match="without --cluster-dir"):
        load_routed_moe(plain, policy="ensemble")
