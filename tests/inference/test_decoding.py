"""Decoding on SmolLM2 and real Urban rows: beam search is HF's, stop strings cut, the term is blocked."""

from __future__ import annotations

import pytest
import torch

from inference.backend import Request, Sampling
from inference.decoding import BlockSequences, cut_at_stop, term_token_sequences, term_variants
from inference.local import _cut_at_eos
from inference.tasks import build_items, item_prompt


def make_requests(backend, records):
    items = build_items("word_interpretation", records, list(range(1, len(records) + 1)), 42)
    return [Request(i.id, i.term, i.context, item_prompt("word_interpretation", i, backend.bos_token)) for i in items]


def by_id(backend, requests, sampling):
    return {g.item_id: g for g in backend.generate(requests, sampling)}


def hf_generate(backend, prompt: str, **kwargs) -> list[int]:
    """HF `generate` on one unpadded prompt with the backend's EOS and pad; the new ids up to EOS."""
    enc = backend.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        out = backend.model.generate(
            **enc,
            do_sample=False,
            repetition_penalty=1.05,
            pad_token_id=backend.tokenizer.pad_token_id,
            eos_token_id=sorted(backend.eos_ids),
            **kwargs,
        )
    return out[0, enc["input_ids"].shape[1] :].tolist()


def mean_logprob(backend, prompt: str, new: list[int]) -> float:
    """Mean log-prob of `new` after `prompt` under one forward pass (raw logits, EOS counted)."""
    ids = backend.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = backend.model(torch.tensor([ids + new])).logits[0, len(ids) - 1 : -1]
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(new)[:, None]).mean().item()


def test_term_variants_cover_case_and_leading_space(smol_backend):
    assert term_variants("esp") == ["esp", " esp", "Esp", " Esp"]
    assert term_variants("Betty Crocker") == ["Betty Crocker", " Betty Crocker", "betty crocker", " betty crocker"]
    sequences = term_token_sequences(smol_backend.tokenizer, "esp")
    assert len(sequences) == len({tuple(s) for s in sequences}) == 4
    assert [smol_backend.tokenizer.decode(s) for s in sequences] == term_variants("esp")


def test_one_beam_is_greedy_and_beams_are_hf_beam_search(smol_backend, urban_records):
    """Batched and left-padded, num_beams 1 gives HF's greedy text and num_beams 3 with a length penalty
    HF's beam search on each prompt alone; the beam's log-prob is its tokens' mean under the raw logits."""
    requests = make_requests(smol_backend, urban_records[3:6])
    assert len(set(smol_backend.count_tokens([r.prompt for r in requests]))) == 3  # padding really happens
    greedy = by_id(smol_backend, requests, Sampling(greedy=True, num_beams=1, max_new_tokens=10))
    beams = by_id(smol_backend, requests, Sampling(greedy=True, num_beams=3, length_penalty=0.6, max_new_tokens=10))
    decode = lambda ids: smol_backend.tokenizer.decode(_cut_at_eos(ids, smol_backend.eos_ids), skip_special_tokens=True)
    differ = 0
    for r in requests:
        assert greedy[r.item_id].text == decode(hf_generate(smol_backend, r.prompt, max_new_tokens=10))
        hf_beam = hf_generate(smol_backend, r.prompt, max_new_tokens=10, num_beams=3, length_penalty=0.6)
        assert beams[r.item_id].text == decode(hf_beam)
        new = _cut_at_eos(hf_beam, smol_backend.eos_ids)
        new = hf_beam[: len(new) + 1]  # EOS counted, when there is one
        assert beams[r.item_id].logprob == pytest.approx(mean_logprob(smol_backend, r.prompt, new), abs=2e-3)
        differ += beams[r.item_id].text != greedy[r.item_id].text
    assert differ  # beam search really searched


def test_stop_strings_end_generation_at_the_stop(smol_backend, urban_records):
    """Every text stops right after the token that wrote the first stop string; before it, the greedy text."""
    requests = make_requests(smol_backend, urban_records[:4])
    full = by_id(smol_backend, requests, Sampling(greedy=True, max_new_tokens=12))
    stopped = by_id(smol_backend, requests, Sampling(greedy=True, max_new_tokens=12, stop=(".", ";")))
    cut = 0
    for r in requests:
        text, whole = stopped[r.item_id].text, full[r.item_id].text
        assert whole.startswith(text) and cut_at_stop(text, (".", ";")) == cut_at_stop(whole, (".", ";"))
        if cut_at_stop(whole, (".", ";")) != whole:
            hit = min(i for i in (text.find("."), text.find(";")) if i >= 0)
            assert text[hit + 1 :].strip() == "" and len(text) < len(whole)
            cut += 1
    assert cut >= 2


def test_block_term_never_writes_the_terms_tokens(smol_backend, urban_records):
    """Greedy SmolLM2 quotes "esp" in its definition; with block_term no variant's token sequence is
    generated (checked on the generated ids) and the text no longer holds the term."""
    records = [r for r in urban_records[:12] if r.term == "esp"][:1]
    (request,) = make_requests(smol_backend, records)
    plain = by_id(smol_backend, [request], Sampling(greedy=True, max_new_tokens=20))[request.item_id].text
    assert '"esp"' in plain
    blocked = by_id(smol_backend, [request], Sampling(greedy=True, max_new_tokens=20, block_term=True))
    assert "esp" not in blocked[request.item_id].text
    banned = term_token_sequences(smol_backend.tokenizer, "esp")
    processor = BlockSequences([banned])
    new = hf_generate(smol_backend, request.prompt, max_new_tokens=20, logits_processor=[processor])
    assert smol_backend.tokenizer.decode(_cut_at_eos(new, smol_backend.eos_ids), skip_special_tokens=True) == (
        blocked[request.item_id].text
    )
    for seq in banned:
        assert all(new[i : i + len(seq)] != seq for i in range(len(new)))


def test_block_sequences_masks_the_last_token_after_the_others():
    scores = torch.zeros(2, 6)
    BlockSequences([[[1, 2], [5]], [[3, 4]]])(torch.tensor([[0, 1], [0, 4]]), scores)
    assert torch.isinf(scores[0, 2]) and torch.isinf(scores[0, 5]) and not torch.isinf(scores[1]).any()
    assert torch.isinf(scores).sum() == 2
