"""Local HF backend on SmolLM2-135M and real Urban rows: left padding, seeds, log-likelihoods, MoE grouping."""

from __future__ import annotations

import dataclasses
import inspect
import math
import random

import pytest
import torch

from inference.backend import Request, Sampling
from inference.local import LocalBackend, _cut_at_eos, sample_logprobs
from inference.tasks import build_items, item_prompt, parse_answer
from training.data import encode_example


def make_requests(backend, records, samples=(0,)):
    items = build_items("word_interpretation", records, list(range(1, len(records) + 1)), 42)
    return items, [
        Request(i.id, i.term, i.context, item_prompt("word_interpretation", i, backend.bos_token), samples)
        for i in items
    ]


def test_greedy_batch_equals_single_and_repeats(smol_backend, urban_records):
    items, requests = make_requests(smol_backend, urban_records[:3])
    assert len(set(smol_backend.count_tokens([r.prompt for r in requests]))) == 3  # padding really happens
    greedy = Sampling(greedy=True, max_new_tokens=10)
    batch = {g.item_id: g for g in smol_backend.generate(requests, greedy)}
    single = {g.item_id: g for r in requests for g in smol_backend.generate([r], greedy)}
    assert {k: g.text for k, g in batch.items()} == {k: g.text for k, g in single.items()}
    for key, g in batch.items():
        assert g.logprob == pytest.approx(single[key].logprob, abs=1e-3) and g.logprob < 0
    again = {g.item_id: g.text for g in smol_backend.generate(requests, greedy)}
    assert again == {k: g.text for k, g in batch.items()}
    for item in items:
        assert parse_answer("word_interpretation", item, batch[item.id].text)


def test_sampling_is_seeded(smol_backend, urban_records):
    _, requests = make_requests(smol_backend, urban_records[3:5], samples=(0, 1, 2))
    run = lambda seed: sorted(
        (g.item_id, g.sample_idx, g.text)
        for g in smol_backend.generate(requests, Sampling(seed=seed, max_new_tokens=8))
    )
    first = run(7)
    assert len(first) == 6 and first == run(7)
    assert first != run(8)


def texts_by_sample(backend, requests, sampling):
    return {(g.item_id, g.sample_idx): g.text for g in backend.generate(requests, sampling)}


def test_samples_do_not_depend_on_batching_order_or_what_is_pending(smol_backend, urban_records):
    """Each (item, sample) draws with its own seed: batch size 1, 4, 16, a shuffled order and a resumed
    run's leftovers all give the same text for it."""
    _, requests = make_requests(smol_backend, urban_records[:10], samples=(0, 1))
    sampling = Sampling(seed=5, max_new_tokens=6)
    sized = lambda n: LocalBackend(smol_backend.model, smol_backend.tokenizer, name="smol", batch_size=n)
    reference = texts_by_sample(sized(16), requests, sampling)  # one batch of 20 rows
    assert len(reference) == 20 and len(set(reference.values())) > 15  # really sampled, samples differ
    assert texts_by_sample(sized(1), requests, sampling) == reference
    shuffled = random.Random(0).sample(requests, len(requests))
    assert texts_by_sample(sized(4), shuffled, sampling) == reference
    # a killed run resumed: some items need sample 1 only, some sample 0 only, the rest are done
    leftovers = [dataclasses.replace(r, sample_indices=((1,), (0,))[i % 2]) for i, r in enumerate(requests[:7])]
    resumed = texts_by_sample(sized(4), leftovers, sampling)
    assert len(resumed) == 7 and resumed == {k: reference[k] for k in resumed}
    other = texts_by_sample(sized(16), requests[:4], dataclasses.replace(sampling, seed=6))
    assert sum(other[k] != reference[k] for k in other) >= 6


def test_greedy_is_plain_hf_greedy(smol_backend, urban_records):
    _, requests = make_requests(smol_backend, urban_records[5:7])
    texts = texts_by_sample(smol_backend, requests, Sampling(greedy=True, max_new_tokens=10))
    tok = smol_backend.tokenizer
    for request in requests:
        enc = tok(request.prompt, add_special_tokens=False, return_tensors="pt")
        ids = smol_backend.model.generate(
            **enc, do_sample=False, max_new_tokens=10, repetition_penalty=1.05, pad_token_id=tok.pad_token_id
        )[0, enc["input_ids"].shape[1] :]
        expected = tok.decode(_cut_at_eos(ids.tolist(), smol_backend.eos_ids), skip_special_tokens=True)
        assert texts[(request.item_id, 0)] == expected


def test_inference_prompt_is_the_training_prefix(smol_backend, urban_records):
    r = urban_records[0]
    _, (request,) = make_requests(smol_backend, [r])
    prompt_ids = smol_backend.tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
    train = encode_example(smol_backend.tokenizer, r.term, r.context, r.definition, 512)
    assert train.input_ids[: len(prompt_ids)] == prompt_ids and train.labels[len(prompt_ids)] != -100


def test_sample_logprobs_stop_at_eos_and_skip_pads():
    logits = [torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])) for _ in range(3)]
    tokens = torch.tensor([[1, 3, 3], [2, 0, 1]])  # row 0: token, EOS(3), pad(3); row 1 has no EOS
    means, lengths = sample_logprobs(logits, tokens, eos_ids={3})
    assert lengths == [2, 3]
    assert means[0] == pytest.approx((math.log(0.2) + math.log(0.4)) / 2)
    assert means[1] == pytest.approx(math.log(0.25))


class DomainRouter:
    """A routed-MoE stand-in with the `training.moe.routing.RoutedMoE` interface over one real model: the expert
    of a term is its length's parity; `entered` lists the experts of each generate call."""

    policy = "domain"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer, self.entered = model, tokenizer, []

    def generate(self, pairs=None, routes=None, **kwargs):
        experts = sorted({r.experts for r in routes})
        assert len(experts) == 1, f"a batch mixes experts {experts}"
        if experts[0][0] not in self.entered:
            self.entered.append(experts[0][0])
        return self.model.generate(**kwargs)

    def routes(self, pairs):
        from training.moe.routing import Route

        return [Route((len(term) % 2,), (1.0,), 0.5) for term, _ in pairs]


def test_moe_inputs_are_grouped_by_domain(smol_backend, urban_records):
    from inference.local import LocalBackend

    router = DomainRouter(smol_backend.model, smol_backend.tokenizer)
    backend = LocalBackend(router.model, router.tokenizer, name="moe", batch_size=4, moe=router)
    _, requests = make_requests(backend, urban_records[:4])
    out = list(backend.generate(requests, Sampling(greedy=True, max_new_tokens=4)))
    expected = sorted({len(r.term) % 2 for r in requests})
    assert router.entered == expected and len(out) == 4
    terms = {r.item_id: r.term for r in requests}
    assert all(g.expert == len(terms[g.item_id]) % 2 and g.router_margin == 0.5 for g in out)
    by_domain = [len(next(r.term for r in requests if r.item_id == g.item_id)) % 2 for g in out]
    assert by_domain == sorted(by_domain)


def test_domain_grouping_does_not_change_samples(smol_backend, urban_records):
    """A domain-routed MoE regroups inputs per domain; each sample keeps its own draws."""
    router = DomainRouter(smol_backend.model, smol_backend.tokenizer)
    routed = LocalBackend(router.model, router.tokenizer, name="moe", batch_size=4, moe=router)
    mixed = [r for r in urban_records if len(r.term) % 2][:3] + [r for r in urban_records if not len(r.term) % 2][:3]
    _, requests = make_requests(routed, mixed, samples=(0, 1))
    sampling = Sampling(seed=9, max_new_tokens=6)
    assert router.entered == [] and texts_by_sample(routed, requests, sampling) == texts_by_sample(
        smol_backend, requests, sampling
    )
    assert router.entered == [0, 1]


def test_routed_moe_interface():
    moe_routing = pytest.importorskip("training.moe.routing")
    params = inspect.signature(moe_routing.load_routed_moe).parameters
    assert {"policy", "device"} <= set(params)
    assert all(hasattr(moe_routing.RoutedMoE, name) for name in ("domains_for", "only_expert", "generate", "policy"))


@pytest.fixture(scope="module")
def token_router_moe(tmp_path_factory, wordnet_lexicon):
    """A 3-expert pico MoE whose router was finetuned for top-1 token routing (routing.json policy token)."""
    from tests.helpers.pico import perturbed_copy, pico_llama
    from training.moe.config import FinetuneRouterConfig, MergeConfig
    from training.moe.finetune_router import finetune_router
    from training.moe.merge import merge

    root = tmp_path_factory.mktemp("token_moe")
    base = pico_llama(root / "base", seed=0)
    experts = [perturbed_copy(base, root / f"e{i}", seed=i, scale=0.2) for i in range(3)]
    merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(root / "moe")))
    finetune_router(
        FinetuneRouterConfig(
            moe_dir=str(root / "moe"),
            train_file=str(wordnet_lexicon / "train.jsonl"),
            output_dir=str(root / "token"),
            policy="token",
            top_k=1,
            max_records=8,
            batch_size=4,
            learning_rate=1e-2,
        )
    )
    return root / "token"


def test_token_policy_moe_routes_every_token_by_its_router(token_router_moe, wordnet_lexicon):
    """A token-routed MoE (no centroids) is not grouped by domain: each token picks its own top-1 expert."""
    from dataset.records import load_records
    from inference.local import LocalBackend

    backend = LocalBackend.from_path(str(token_router_moe), device="cpu", batch_size=4)
    assert backend.moe.policy == "token" and backend.moe.top_k == 1
    picked = []
    hook = backend.moe.blocks[0].gate.register_forward_hook(lambda _m, _i, out: picked.append(out[2]))
    try:
        _, requests = make_requests(backend, load_records(wordnet_lexicon / "test.jsonl")[:3], samples=(0, 1))
        out = list(backend.generate(requests, Sampling(max_new_tokens=4)))
    finally:
        hook.remove()
    assert len(out) == 6 and picked
    prefill = picked[0]  # the prompts' tokens, one row per token
    assert prefill.shape[1] == 1 and prefill.shape[0] > 6 and len(prefill.unique()) > 1


def test_token_routed_moe_samples_do_not_depend_on_batching(token_router_moe, wordnet_lexicon):
    from dataset.records import load_records

    one = LocalBackend.from_path(str(token_router_moe), device="cpu", batch_size=1)
    four = LocalBackend(one.model, one.tokenizer, name="moe", batch_size=4, moe=one.moe)
    _, requests = make_requests(one, load_records(wordnet_lexicon / "test.jsonl")[:5], samples=(0, 1, 2))
    sampling = Sampling(seed=2, max_new_tokens=6)
    reference = texts_by_sample(one, requests, sampling)
    assert len(reference) == 15 and len(set(reference.values())) > 10
    assert texts_by_sample(four, requests[::-1], sampling) == reference


@pytest.mark.gpu
def test_vllm_backend_matches_interface(smollm2_dir, urban_records):
    pytest.importorskip("vllm", reason="vllm is an optional GPU extra")
    from inference.vllm_backend import VllmBackend

    backend = VllmBackend(str(smollm2_dir), gpu_memory_utilization=0.3)
    _, requests = make_requests(backend, urban_records[:3], samples=(0, 1))
    out = list(backend.generate(requests, Sampling(max_new_tokens=8)))
    assert len(out) == 6 and all(g.text is not None and g.logprob <= 0 for g in out)


@pytest.mark.parametrize(
    "dtype,expected", [("auto", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)]
)
def test_dtype_is_honoured_for_a_routed_moe_folder(tmp_path_factory, wordnet_lexicon, dtype, expected):
    """infer's dtype reaches a routed-MoE folder's loader as it does a dense model's (auto: float32 on CPU)."""
    from dataset.records import load_records
    from inference.local import LocalBackend
    from tests.helpers.pico import perturbed_copy, pico_llama
    from training.moe.config import MergeConfig
    from training.moe.merge import merge

    root = tmp_path_factory.mktemp("moe_dtype")
    base = pico_llama(root / "base", seed=0)
    experts = [str(perturbed_copy(base, root / f"e{i}", seed=i, scale=0.2)) for i in range(2)]
    merge(MergeConfig(experts=experts, output_dir=str(root / "moe"), policy="token", dtype="float32"))
    backend = LocalBackend.from_path(str(root / "moe"), device="cpu", dtype=dtype, batch_size=2)
    assert backend.moe is not None and {p.dtype for p in backend.model.parameters()} == {expected}
    _, requests = make_requests(backend, load_records(wordnet_lexicon / "test.jsonl")[:2])
    out = list(backend.generate(requests, Sampling(greedy=True, max_new_tokens=3)))
    assert len(out) == 2 and all(g.error is None for g in out)
