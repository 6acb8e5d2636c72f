"""vLLM serving of merged MoEs without a GPU (a fake `vllm` records the engines and requests): routing on the host
by the MoE-free router, token-routed MoEs served as they are, per-domain exports, per-domain LoRA adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

import inference.vllm_backend as vllm_backend
from inference.backend import Request, Sampling
from inference.config import InferConfig
from prompts.builder import build_prompt
from run_config.errors import ConfigError
from run_config.loader import load_config
from tests.helpers.fake_vllm import FakeVllm
from tests.helpers.pico import perturbed_copy, pico_llama, write_minilm_clusters
from training.moe.config import MergeConfig
from training.moe.export import export_all_dense
from training.moe.merge import merge
from training.moe.routing import load_routed_moe


def _lora(base: Path, folder: Path, r: int, seed: int) -> Path:
    """A real peft LoRA adapter of `base` (attention projections, as train --use-lora writes)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    lora = LoraConfig(r=r, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory, urban_records, minilm_dir) -> dict:
    """2 pico experts with MiniLM centroids of 40 real Urban rows, merged with several policies; their exports and
    two LoRA adapters of the base."""
    root = tmp_path_factory.mktemp("vllm_moe")
    base = pico_llama(root / "base", seed=0)
    experts = [str(perturbed_copy(base, root / f"e{i}", seed=i, scale=0.3)) for i in range(2)]
    pairs = [(r.term, r.context) for r in urban_records[:40]]
    write_minilm_clusters(root / "clusters", pairs, 2, minilm_dir)
    out = {"base": base, "root": root}
    for name, policy, extra in [
        ("domain", "domain", {}),
        ("ensemble", "ensemble", {"ensemble_k": 2}),
        ("hybrid", "hybrid", {"hybrid_tau": 1.0}),  # every margin is below 1: every input mixes two experts
        ("token", "token", {"top_k": 2}),
        ("soft", "soft-sequence", {}),
    ]:
        cfg = MergeConfig(experts=experts, output_dir=str(root / name), cluster_dir=str(root / "clusters"))
        merge(cfg.model_copy(update={"policy": policy, **extra}))
        out[name] = root / name
    out["exports"] = [str(p) for p in export_all_dense(root / "domain", root / "exports")]
    out["adapters"] = [str(_lora(base, root / f"adapter_{i}", r, i)) for i, r in enumerate((4, 8))]
    return out


@pytest.fixture
def fake(monkeypatch) -> FakeVllm:
    fake = FakeVllm()
    monkeypatch.setattr(vllm_backend, "import_vllm", lambda: fake)
    monkeypatch.setattr(vllm_backend, "import_lora_request", lambda: fake.LoRARequest)
    return fake


def _requests(records) -> list[Request]:
    return [Request(r.id, r.term, r.context, build_prompt(r.term, r.context, bos_token="<s>"), (0,)) for r in records]


def _no_model_loads(monkeypatch) -> list:
    from transformers import AutoModelForCausalLM

    from training.moe import routing

    calls: list = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: calls.append(a) or 1 / 0)
    monkeypatch.setattr(routing, "load_routed_moe", lambda *a, **k: calls.append(a) or 1 / 0)
    return calls


def test_domain_exports_follow_the_router_and_the_moe_is_never_built(served, fake, urban_records, monkeypatch):
    requests = _requests(urban_records[40:70])
    with monkeypatch.context() as m:
        loads = _no_model_loads(m)
        backend = vllm_backend.VllmBackend(str(served["domain"]), domain_exports=served["exports"], dtype="bfloat16")
        rows = list(backend.generate(requests, Sampling(seed=3)))
    assert loads == []
    routes = load_routed_moe(served["domain"], device="cpu").routes([(r.term, r.context) for r in requests])
    want = {r.item_id: route for r, route in zip(requests, routes)}
    domains = sorted({route.experts[0] for route in routes})
    assert domains == [0, 1]  # the real rows reach both experts
    assert [model for model, _ in fake.engines] == [served["exports"][d] for d in domains]
    assert all(args["dtype"] == "bfloat16" and "enable_lora" not in args for _, args in fake.engines)
    assert len(rows) == len(requests)
    assert {g.item_id: (g.expert, g.router_margin) for g in rows} == {k: (v.field, v.margin) for k, v in want.items()}
    prompts_per_engine = [len(prompts) for prompts, _ in fake.calls]
    assert prompts_per_engine == [sum(1 for v in want.values() if v.experts == (d,)) for d in domains]


def test_a_token_routed_moe_is_one_engine_on_the_moe_folder(served, fake, urban_records, monkeypatch):
    with monkeypatch.context() as m:
        loads = _no_model_loads(m)
        backend = vllm_backend.VllmBackend(
            str(served["token"]), dtype="float16", tensor_parallel_size=2, gpu_memory_utilization=0.5, seed=9
        )
        rows = list(backend.generate(_requests(urban_records[:5]), Sampling(seed=1)))
    assert loads == [] and backend.router is None and len(rows) == 5
    args = {"dtype": "float16", "gpu_memory_utilization": 0.5, "tensor_parallel_size": 2, "seed": 9}
    assert fake.engines == [(str(served["token"]), args)]
    assert fake.generate_kwargs == [{"model": str(served["token"])}]  # no LoRA: vLLM's own MoE kernels route
    assert all(g.expert is None for g in rows)


def test_what_one_expert_per_input_cannot_serve_is_refused_before_any_engine(served, fake, urban_records):
    with pytest.raises(ConfigError, match="soft-sequence is not the per-token top-k"):
        vllm_backend.VllmBackend(str(served["soft"]))
    with pytest.raises(ConfigError, match="domain-routed MoE"):
        vllm_backend.VllmBackend(str(served["domain"]))
    with pytest.raises(ConfigError, match="routes inside the model.*serve the token-routed MoE itself"):
        vllm_backend.VllmBackend(str(served["token"]), domain_exports=served["exports"])
    with pytest.raises(ConfigError, match="ensemble mixes 2 experts"):
        vllm_backend.VllmBackend(str(served["ensemble"]), domain_exports=served["exports"])
    with pytest.raises(ConfigError, match="domain_exports: 1 given for 2 experts"):
        vllm_backend.VllmBackend(str(served["domain"]), domain_exports=served["exports"][:1])
    hybrid = vllm_backend.VllmBackend(str(served["hybrid"]), domain_exports=served["exports"])
    with pytest.raises(ConfigError, match="mixes experts for 6 of 6 inputs"):
        list(hybrid.generate(_requests(urban_records[:6]), Sampling()))
    assert fake.engines == []


def test_lora_experts_share_one_engine_with_an_adapter_per_domain(served, fake, urban_records, monkeypatch):
    requests = _requests(urban_records[40:70])
    with monkeypatch.context() as m:
        loads = _no_model_loads(m)
        backend = vllm_backend.VllmBackend(str(served["domain"]), domain_adapters=served["adapters"], seed=5)
        rows = list(backend.generate(requests, Sampling(seed=3)))
    assert loads == []
    args = {"dtype": "auto", "gpu_memory_utilization": 0.9, "tensor_parallel_size": 1, "seed": 5}
    ((model, engine_args),) = fake.engines  # one engine over the shared base
    lora_args = {"enable_lora": True, "max_loras": 2, "max_lora_rank": 8}  # ranks 4 and 8: vLLM reserves 8
    assert model == str(served["base"]) and engine_args == {**args, **lora_args}
    routes = load_routed_moe(served["domain"], device="cpu").routes([(r.term, r.context) for r in requests])
    by_domain = {d: [r.item_id for r, route in zip(requests, routes) if route.experts == (d,)] for d in (0, 1)}
    loras = [kw["lora_request"] for kw in fake.generate_kwargs]
    assert [(lr.lora_name, lr.lora_int_id, lr.lora_path) for lr in loras] == [
        (f"domain_{d}", d + 1, served["adapters"][d]) for d in (0, 1)
    ]
    ids = backend.tokenizer([r.prompt for r in requests], add_special_tokens=False)["input_ids"]
    prompt_of = {r.item_id: p for r, p in zip(requests, ids)}
    for (prompts, _), d in zip(fake.calls, (0, 1)):
        assert prompts == [{"prompt_token_ids": prompt_of[i]} for i in by_domain[d]]
    assert {g.item_id: g.expert for g in rows} == {r.item_id: route.field for r, route in zip(requests, routes)}


def test_adapters_that_one_engine_cannot_serve_are_refused(served, fake, tmp_path):
    other = _lora(pico_llama(tmp_path / "other_base", seed=3), tmp_path / "other", 8, 0)
    with pytest.raises(ConfigError, match="adapters of different base models"):
        vllm_backend.VllmBackend(str(served["domain"]), domain_adapters=[served["adapters"][0], str(other)])
    with pytest.raises(Exception, match="not a LoRA adapter folder"):
        vllm_backend.VllmBackend(str(served["domain"]), domain_adapters=[served["adapters"][0], served["exports"][1]])
    with pytest.raises(ConfigError, match="domain_adapters: 1 given for 2 experts"):
        vllm_backend.VllmBackend(str(served["domain"]), domain_adapters=served["adapters"][:1])
    with pytest.raises(ConfigError, match="not both"):
        vllm_backend.VllmBackend(
            str(served["domain"]), domain_exports=served["exports"], domain_adapters=served["adapters"]
        )
    base = {"input": "x", "model": "m", "output_dir": "o", "domain_adapters": ["a"]}
    with pytest.raises(Exception, match="domain_adapters is for backend vllm"):
        load_config(None, InferConfig, base)
    with pytest.raises(Exception, match="not both"):
        load_config(None, InferConfig, {**base, "backend": "vllm", "domain_exports": ["e"]})
    assert fake.engines == []
