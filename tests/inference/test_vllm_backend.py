"""vLLM request building without a GPU: a fake `vllm` module records what the backend asks the engine for."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

import inference.vllm_backend as vllm_backend
from inference.backend import Request, Sampling, derived_seed
from inference.tasks import build_items, item_prompt


class FakeVllm:
    """The names the backend uses: `SamplingParams` and `sampling_params.BeamSearchParams` keep their arguments,
    `LLM.generate` answers from the seed, `LLM.beam_search` with `beam_tokens` after the prompt (vLLM's
    BeamSearchSequence.tokens hold the prompt too), best beam first."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict], list[SimpleNamespace]]] = []
        self.beam_tokens: list[int] = []
        fake = self

        class LLM:
            def __init__(self, model: str, **engine_args: object) -> None:
                self.model = model

            def generate(self, prompts, params, use_tqdm):
                fake.calls.append((prompts, params))
                answer = lambda p, sp: SimpleNamespace(
                    text=f"len {len(p['prompt_token_ids'])} seed {sp.seed}", token_ids=[1, 2], cumulative_logprob=-1.0
                )
                return [SimpleNamespace(outputs=[answer(p, sp)] * sp.n) for p, sp in zip(prompts, params)]

            def beam_search(self, prompts, params):
                fake.calls.append((prompts, params))
                beam = lambda p, tail, lp: SimpleNamespace(
                    tokens=p["prompt_token_ids"] + tail, cum_logprob=lp, text="?"
                )
                return [
                    SimpleNamespace(sequences=[beam(p, fake.beam_tokens, -3.0), beam(p, fake.beam_tokens[:1], -9.0)])
                    for p in prompts
                ]

        self.LLM, self.SamplingParams = LLM, lambda **kwargs: SimpleNamespace(**kwargs)
        self.sampling_params = SimpleNamespace(BeamSearchParams=lambda **kwargs: SimpleNamespace(**kwargs))


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


def test_stop_strings_stay_in_the_text_and_the_term_is_a_bad_word(fake_vllm, urban_records):
    """stop and block_term become per-request SamplingParams: vLLM stops at the stop string and keeps it in
    the text (infer cuts it, as for every backend); the term's variants are vLLM bad words."""
    from inference.decoding import term_variants

    fake, backend = fake_vllm
    requests = _requests(backend, urban_records[:3], (0, 1))
    list(backend.generate(requests, Sampling(seed=2, stop=(".", ";"), block_term=True)))
    ((_, params),) = fake.calls
    terms = [r.term for r in requests for _ in (0, 1)]
    for term, sp in zip(terms, params, strict=True):
        assert sp.stop == [".", ";"] and sp.include_stop_str_in_output is True
        assert sp.bad_words == term_variants(term) and " " + term in sp.bad_words
    list(backend.generate(requests, Sampling(seed=2)))
    assert not any(hasattr(sp, "stop") or hasattr(sp, "bad_words") for sp in fake.calls[-1][1])


def test_beams_go_to_vllm_beam_search(fake_vllm, urban_records):
    """num_beams > 1: one LLM.beam_search call with BeamSearchParams(beam_width, max_tokens, length_penalty);
    the best beam's new tokens (after the prompt) are decoded up to EOS and its log-prob averaged over them."""
    fake, backend = fake_vllm
    answer = backend.tokenizer(" a person who is very shy", add_special_tokens=False)["input_ids"]
    fake.beam_tokens = [*answer, backend.tokenizer.eos_token_id, *answer[:2]]
    requests = _requests(backend, urban_records[:2], (0,))
    sampling = Sampling(greedy=True, num_beams=4, length_penalty=0.7, max_new_tokens=11, repetition_penalty=1.0)
    out = list(backend.generate(requests, sampling))
    ((prompts, params),) = fake.calls
    assert vars(params) == {"beam_width": 4, "max_tokens": 11, "length_penalty": 0.7, "temperature": 0.0}
    ids = backend.tokenizer([r.prompt for r in requests], add_special_tokens=False)["input_ids"]
    assert prompts == [{"prompt_token_ids": p} for p in ids]
    assert [(g.item_id, g.sample_idx, g.text) for g in out] == [
        (r.item_id, 0, " a person who is very shy") for r in requests
    ]
    assert all(g.logprob == pytest.approx(-3.0 / (len(answer) + 1), abs=1e-6) for g in out)


def test_infer_cli_reaches_vllm_beam_search_and_cuts_at_the_stop(fake_vllm, smollm2_dir, urban_rows, tmp_path):
    """`infer --backend vllm --num-beams 3 --stop .` end to end on real Urban rows with vllm faked: the beam's
    text keeps the stop (BeamSearchParams has none), the prediction is cut before it, `raw` keeps it all."""
    import json

    from dataset.predictions import read_rows
    from inference.infer import main

    fake, backend = fake_vllm
    fake.beam_tokens = backend.tokenizer(" a shy person. Also a verb", add_special_tokens=False)["input_ids"]
    args = ["--backend", "vllm", "--model", smollm2_dir, "--input", urban_rows, "--output-dir", tmp_path]
    flags = ["--greedy", "--num-beams", 3, "--length-penalty", 0.5, "--repetition-penalty", 1.0, "--stop", "."]
    assert main([*map(str, args + flags)]) == 0
    ((_, params),) = fake.calls
    assert (params.beam_width, params.length_penalty, params.max_tokens) == (3, 0.5, 64)
    rows, _ = read_rows(tmp_path / "predictions.jsonl")
    assert len(rows) == 6 and all(r["prediction"] == "a shy person" for r in rows)
    assert all(r["raw"] == " a shy person. Also a verb" for r in rows)
    assert json.loads((tmp_path / "summary.json").read_text())["stop_cut"] == 6
