"""Outcome reward model (ORM) for Best-of-N: a causal LM with a scalar head scoring (term, context, definition).

The scored text is the training text of `prompts.builder` without EOS (BOS + question + "\\n\\n" +
definition), right-padded; the HF sequence-classification head reads the last non-pad token.
Negatives are the policy's own samples (paper: 1:32 sampling, the 8 most likely kept), ranked by the
mean token log-likelihood up to EOS with pads excluded (bug 33).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dataset.records import Record, normalize_space
from inference.backend import Backend, Request, Sampling
from prompts.builder import build_prompt, build_training_text

Triple = tuple[str, str, str]  # (term, context, definition)


@dataclass(frozen=True)
class Pair:
    """One preference: the gold definition (`chosen`) over a sampled one (`rejected`)."""

    id: str
    term: str
    context: str
    chosen: str
    rejected: str
    rejected_logprob: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reward_text(tokenizer: Any, term: str, context: str, definition: str) -> str:
    prompt, target = build_training_text(term, context, definition, bos_token=tokenizer.bos_token or "")
    return prompt + target


def load_reward_model(path: str | Path, device: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """A sequence-classification model with one output (a new head when `path` is a plain causal LM), in `dtype`
    on `device`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


def freeze_below_top_layers(model: Any, top_layers: int) -> int:
    """Freeze all but the scalar head, the final norm and the top `top_layers` decoder layers;
    return the trainable count."""
    base = model.base_model
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: trainable_top_layers needs a decoder with `.layers`")
    model.requires_grad_(False)
    for module in [*list(layers)[len(layers) - top_layers :], getattr(base, "norm", None), model.score]:
        if module is not None:
            module.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def compute_rewards(model: Any, tokenizer: Any, triples: Sequence[Triple]) -> torch.Tensor:
    """Scalar reward of each (term, context, definition); differentiable."""
    texts = [reward_text(tokenizer, *t) for t in triples]
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    return model(**enc).logits[:, 0].float()


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r(x, y_w) - r(x, y_l))."""
    return -F.logsigmoid(chosen - rejected).mean()


class RewardScorer:
    """Scores candidate definitions with a trained reward model (Best-of-N with `selection: orm`)."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32) -> None:
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> RewardScorer:
        return cls(*load_reward_model(path, device, dtype))

    def score(self, triples: Sequence[Triple]) -> list[float]:
        out: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(triples), self.batch_size):
                out += compute_rewards(self.model, self.tokenizer, triples[start : start + self.batch_size]).tolist()
        return out


def pairwise_accuracy(scorer: RewardScorer, pairs: Sequence[Pair]) -> float:
    """Fraction of pairs whose gold definition gets the higher reward."""
    chosen = scorer.score([(p.term, p.context, p.chosen) for p in pairs])
    rejected = scorer.score([(p.term, p.context, p.rejected) for p in pairs])
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


def mine_negatives(
    backend: Backend, records: Sequence[Record], sampling: Sampling, samples_per_prompt: int, keep: int
) -> list[Pair]:
    """Sample `samples_per_prompt` answers per record; keep the `keep` most likely distinct non-gold ones."""
    requests = [
        Request(
            r.id,
            r.term,
            r.context,
            build_prompt(r.term, r.context, bos_token=backend.bos_token),
            tuple(range(samples_per_prompt)),
        )
        for r in records
    ]
    samples: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for gen in backend.generate(requests, sampling):
        text = normalize_space(gen.text or "")  # the policy's own text, read as validation and `infer` read it
        if gen.error is None and text:
            samples[gen.item_id].append((gen.logprob if gen.logprob is not None else float("-inf"), text))
    pairs = []
    for r in records:
        gold = normalize_space(r.definition).casefold()
        seen: set[str] = set()
        ranked = sorted(samples[r.id], key=lambda s: (-s[0], s[1]))
        for logprob, text in ranked:
            key = text.casefold()
            if key == gold or key in seen:
                continue
            seen.add(key)
            pairs.append(Pair(r.id, r.term, r.context, r.definition, text, logprob))
            if len(seen) == keep:
                break
    return pairs
