"""vLLM request building without a GPU: a fake `vllm` module records what the backend asks the engine for."""

from __future__ import annotations

import random

import pytest

import inference.vllm_backend as vllm_backend
from inference.backend import Request, Sampling, derived_seed
from inference.tasks import build_items, item_prompt
from tests.helpers.fake_vllm import FakeVllm


@pytest.fixture
def fake_vllm(monkeypatch, smollm2_dir):
    fake = FakeVllm()
    monkeypatch.setattr(vllm_backend, "import_vllm", lambda: fake)
    return fake, vllm_backend.VllmBackend(str(smollm2_dir), seed=1)


def _requests(backend, records, samples):
    items = build_items("word_interpretation", records, list(range(1, len(records) + 1)), 42)
    return [
        Request(i.id, i.term, i.context, item_prompt("word_interpretation", i, backend.bos_token), samples)
        for i in items
    ]


def test_each_sample_is_one_request_with_its_own_seed(fake_vllm, urban_records):
    fake, backend = fake_vllm
    requests = _requests(backend, urban_records[:4], (0, 1, 2))
    out = {(g.item_id, g.sample_idx): g for g in backend.generate(requests, Sampling(seed=7, max_new_tokens=9))}
    ((prompts, params),) = fake.calls
    assert len(prompts) == len(params) == len(out) == 12
    ids = backend.tokenizer([r.prompt for r in requests], add_special_tokens=False)["input_ids"]
    jobs = [(r, idx, p) for r, p in zip(requests, ids) for idx in (0, 1, 2)]
    for (request, idx, prompt_ids), prompt, sp in zip(jobs, prompts, params):
        assert prompt == {"prompt_token_ids": prompt_ids}
        assert sp.n == 1 and sp.seed == derived_seed(7, request.item_id, idx) and sp.max_tokens == 9
        assert (sp.temperature, sp.top_k, sp.top_p, sp.repetition_penalty) == (0.6, 50, 0.9, 1.05)
        assert out[(request.item_id, idx)].text == f"len {len(prompt_ids)} seed {sp.seed}"
    assert len({sp.seed for sp in params}) == 12


def test_seeds_do_not_depend_on_order_or_what_is_pending(fake_vllm, urban_records):
    fake, backend = fake_vllm
    requests = _requests(backend, urban_records[:5], (0, 1))
    sampling = Sampling(seed=3)
    texts = lambda reqs, s: {(g.item_id, g.sample_idx): g.text for g in backend.generate(reqs, s)}
    full = texts(requests, sampling)
    shuffled = texts(random.Random(0).sample(requests, 5), sampling)
    leftovers = texts([Request(r.item_id, r.term, r.context, r.prompt, (1,)) for r in requests[:3]], sampling)
    assert shuffled == full and len(leftovers) == len(fake.calls[-1][0]) == 3
    assert leftovers == {k: full[k] for k in leftovers}
    other = texts(requests, Sampling(seed=4))
    assert all(other[k] != full[k] for k in full)


def test_greedy_requests_have_temperature_zero(fake_vllm, urban_records):
    fake, backend = fake_vllm
    list(backend.generate(_requests(backend, urban_records[:2], (0,)), Sampling(greedy=True)))
    assert [(sp.n, sp.temperature) for sp in fake.calls[0][1]] == [(1, 0.0), (1, 0.0)]
