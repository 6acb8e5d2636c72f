"""Encoders on real models: a text with no tokens (GPT-2-style tokenizers add no special tokens) never
reaches the model, and padding never changes a text's states."""

from __future__ import annotations

import numpy as np

from evaluation.encoders import load_encoder


def test_zero_token_text_is_left_out_gpt2_style(smollm2_dir, urban):
    enc = load_encoder(str(smollm2_dir))
    assert enc.tokenizer("")["input_ids"] == []  # SmolLM2's byte-level BPE adds no BOS/EOS
    defs = [r.definition for r in urban[:5]]
    texts = ["", defs[0], "", defs[1], defs[2], ""]
    feats, kept = enc.features(texts, "last", batch_size=2)
    assert kept.tolist() == [1, 3, 4] and feats.shape == (3, enc.dim)
    alone, _ = enc.features(defs[:3], "last", batch_size=3)
    np.testing.assert_allclose(feats, alone, atol=1e-4)  # same vectors whatever the batch and its padding
    none, none_kept = enc.features(["", ""], "mean")
    assert none.shape == (0, enc.dim) and none_kept.tolist() == []
    (empty_tokens, empty_states), (tokens, states) = enc.token_states(["", defs[0]], batch_size=1)
    assert empty_tokens == [] and empty_states.shape == (0, enc.dim)
    assert len(tokens) == len(states) == len(enc.tokenizer(defs[0])["input_ids"])


def test_empty_text_keeps_its_special_tokens_bert_style(minilm_dir):
    enc = load_encoder(str(minilm_dir))
    feats, kept = enc.features(["", "a cat"], "mean")
    assert kept.tolist() == [0, 1] and feats.shape == (2, enc.dim)
    ((tokens, states),) = enc.token_states([""])
    assert tokens == ["[CLS]", "[SEP]"] and states.shape == (2, enc.dim)


def test_truncation_length_is_per_call(minilm_dir):
    enc = load_encoder(str(minilm_dir))
    ((tokens, _),) = enc.token_states(["one two three four five six"], max_length=5)
    assert tokens == ["[CLS]", "one", "two", "three", "[SEP]"]
    ((tokens, _),) = enc.token_states(["one two three four five six"], max_length=256)
    assert len(tokens) == 8
