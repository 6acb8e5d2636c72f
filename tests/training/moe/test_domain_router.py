"""training/moe/domain_router.py: the MoE-free router gives the routes of the loaded MoE, on real 3D-EX pairs."""

from __future__ import annotations

import pytest
import torch

from run_config.errors import ConfigError, DataError
from tests.helpers.pico import perturbed_copy, pico_llama, write_minilm_clusters
from training.moe.checkpoint import read_routing, save_classifier, write_routing
from training.moe.config import MergeConfig
from training.moe.domain_router import DomainClassifier, load_domain_router
from training.moe.merge import merge
from training.moe.routing import load_routed_moe


@pytest.fixture(scope="module")
def moe_dirs(tmp_path_factory, pairs_3dex, minilm_dir) -> dict:
    """3 distinct pico experts with MiniLM centroids of 60 real pairs, merged with each pre-routed policy."""
    root = tmp_path_factory.mktemp("domain_router")
    base = pico_llama(root / "base", seed=0)
    experts = [str(perturbed_copy(base, root / f"e{i}", seed=i, scale=0.3)) for i in range(3)]
    write_minilm_clusters(root / "clusters", pairs_3dex[:60], 3, minilm_dir)
    out = {}
    for policy, extra in [("domain", {}), ("ensemble", {"ensemble_k": 2}), ("hybrid", {"hybrid_tau": 0.05})]:
        cfg = MergeConfig(experts=experts, output_dir=str(root / policy), cluster_dir=str(root / "clusters"))
        merge(cfg.model_copy(update={"policy": policy, **extra}))
        out[policy] = root / policy
    learned = root / "learned"
    merge(MergeConfig(experts=experts, output_dir=str(learned), cluster_dir=str(root / "clusters")))
    torch.manual_seed(0)
    clf = DomainClassifier(32, 3, layer=1)
    routing = read_routing(learned)
    routing.update(policy="learned-domain", domain_classifier=save_classifier(learned, clf.state_dict(), 1, {}))
    write_routing(learned, routing)
    out["learned-domain"] = learned
    return out


def _no_model_loads(monkeypatch) -> list:
    from transformers import AutoModelForCausalLM

    from training.moe import routing

    calls: list = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: calls.append(a) or 1 / 0)
    monkeypatch.setattr(routing, "load_routed_moe", lambda *a, **k: calls.append(a) or 1 / 0)
    return calls


@pytest.mark.parametrize("policy", ["domain", "ensemble", "hybrid", "learned-domain"])
def test_the_router_alone_routes_as_the_loaded_moe(policy, moe_dirs, pairs_3dex, monkeypatch):
    pairs = pairs_3dex[60:100]
    expected = load_routed_moe(moe_dirs[policy], device="cpu").routes(pairs)
    with monkeypatch.context() as m:
        loads = _no_model_loads(m)
        router = load_domain_router(moe_dirs[policy], device="cpu")
        got = router.routes(pairs)
    assert loads == [] and router.policy == policy
    assert [r.experts for r in got] == [r.experts for r in expected]
    assert len({r.experts for r in got}) > 1  # real pairs reach more than one expert
    for a, b in zip(got, expected):
        assert a.weights == pytest.approx(b.weights, abs=1e-6) and a.margin == pytest.approx(b.margin, abs=1e-6)
    if policy in ("ensemble", "hybrid"):
        assert any(len(r.experts) == 2 for r in got)
    if policy == "hybrid":
        assert any(len(r.experts) == 1 for r in got)


def test_the_learned_router_reads_only_its_dense_prefix(moe_dirs, pairs_3dex, monkeypatch):
    from training.moe import domain_router

    prefixes = []
    original = domain_router.load_dense_prefix
    monkeypatch.setattr(domain_router, "load_dense_prefix", lambda *a: prefixes.append(original(*a)) or prefixes[-1])
    router = load_domain_router(moe_dirs["learned-domain"], device="cpu", dtype="float32")
    assert prefixes == []  # loaded when first routing
    router.routes(pairs_3dex[:3])
    router.routes(pairs_3dex[3:6])
    (prefix,) = prefixes
    assert len(prefix.layers) == 1 and sum(p.numel() for p in prefix.parameters()) > 0
    assert not any(p.is_meta for p in prefix.parameters()) and not any(b.is_meta for b in prefix.buffers())
    moe = load_routed_moe(moe_dirs["learned-domain"], device="cpu")
    feats = domain_router.prompt_features(prefix, moe.tokenizer, pairs_3dex[:8], 1)
    torch.testing.assert_close(feats, moe.prompt_features(pairs_3dex[:8], 1), rtol=1e-5, atol=1e-5)


def test_what_the_router_cannot_route_is_refused_up_front(moe_dirs, tmp_path):
    with pytest.raises(ConfigError, match="routes inside the model"):
        load_domain_router(moe_dirs["domain"], policy="token")
    base = pico_llama(tmp_path / "base", seed=1)
    merge(MergeConfig(experts=[str(base)] * 2, output_dir=str(tmp_path / "plain")))
    with pytest.raises(DataError, match="without --cluster-dir"):
        load_domain_router(tmp_path / "plain")
    with pytest.raises(DataError, match="no learned domain router"):
        load_domain_router(moe_dirs["domain"], policy="learned-domain")
    with pytest.raises(ConfigError, match="ensemble_k must be in"):
        load_domain_router(moe_dirs["ensemble"], ensemble_k=4)
