"""Tokenization for training on real Urban rows with the SmolLM2 tokenizer: masking, padding, truncation."""

from __future__ import annotations

import pytest

from prompts.builder import build_prompt
from tests.helpers.train import urban_records
from training.data import IGNORE_INDEX, encode_prompts, encode_records, left_pad, pad_batch, pad_token_id


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def records(data_3dex):
    return urban_records(data_3dex, 64)


def test_batch_masks_prompt_and_padding_token_by_token(tokenizer, records):
    enc = encode_records(tokenizer, records[:8], cutoff_len=128)
    batch = pad_batch(enc.examples, pad_token_id(tokenizer))
    prompts = encode_prompts(tokenizer, enc.records)
    for i, (r, prompt) in enumerate(zip(enc.records, prompts)):
        ids, labels, mask = (
            batch["input_ids"][i].tolist(),
            batch["labels"][i].tolist(),
            batch["attention_mask"][i].tolist(),
        )
        n = sum(mask)
        assert ids[: len(prompt)] == prompt  # the inference prompt is the exact prefix of the training text
        assert prompt[0] == tokenizer.bos_token_id and ids[n - 1] == tokenizer.eos_token_id
        for pos in range(len(ids)):
            if pos < len(prompt) or pos >= n:  # prompt and padding: no loss
                assert labels[pos] == IGNORE_INDEX
            else:  # definition + EOS: trained on the real token
                assert labels[pos] == ids[pos] and mask[pos] == 1
        assert mask[n:] == [0] * (len(ids) - n)
        target = tokenizer.decode(ids[len(prompt) : n], skip_special_tokens=True)
        assert target == r.definition
    assert min(sum(m) for m in batch["attention_mask"].tolist()) < batch["input_ids"].shape[1]  # padding present


def test_truncation_and_long_prompts_are_counted(tokenizer, records):
    full = encode_records(tokenizer, records, cutoff_len=512)
    cut = encode_records(tokenizer, records, cutoff_len=40)
    assert full.truncated == 0 and full.prompt_too_long == 0
    assert cut.truncated > 0 and cut.prompt_too_long > 0
    assert len(cut.examples) + cut.prompt_too_long == len(records)
    assert all(len(e["input_ids"]) <= 40 for e in cut.examples)
    for e, r in zip(cut.examples, cut.records):  # the prompt is never cut
        prompt = tokenizer(build_prompt(r.term, r.context, bos_token=tokenizer.bos_token), add_special_tokens=False)[
            "input_ids"
        ]
        assert e["input_ids"][: len(prompt)] == prompt
    assert cut.summary() == {
        "examples": len(cut.examples),
        "truncated_targets": cut.truncated,
        "dropped_prompt_too_long": cut.prompt_too_long,
    }


def test_train_on_prompt_keeps_prompt_labels(tokenizer, records):
    enc = encode_records(tokenizer, records[:2], cutoff_len=128, train_on_prompt=True)
    assert all(e["labels"] == e["input_ids"] for e in enc.examples)


def test_left_pad_for_generation(tokenizer, records):
    prompts = encode_prompts(tokenizer, records[:3])
    batch = left_pad(prompts, pad_token_id(tokenizer))
    for i, p in enumerate(prompts):
        assert batch["input_ids"][i, -len(p) :].tolist() == p
        assert batch["attention_mask"][i].tolist() == [0] * (batch["input_ids"].shape[1] - len(p)) + [1] * len(p)
