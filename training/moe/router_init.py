"""Initial router weights: random, or the mean hidden state that each expert's prompts (given per expert,
or grouped by cluster centroid) reach at every layer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset.records import read_records
from prompts.builder import build_prompt
from run_config.errors import DataError

log = logging.getLogger(__name__)


def random_router(num_experts: int, hidden: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """Rows drawn from N(0, std), as HF initialises a fresh router."""
    return torch.randn(num_experts, hidden, generator=generator) * std


def read_pairs(path: str | Path, limit: int) -> list[tuple[str, str]]:
    """The first `limit` (term, context) pairs of a records JSONL."""
    pairs = []
    for rec in read_records(path):
        pairs.append((rec.term, rec.context))
        if len(pairs) >= limit:
            break
    if not pairs:
        raise DataError(str(path), None, None, "no records for the router init")
    return pairs


def centroid_groups(
    pairs: Sequence[tuple[str, str]], assigner: Any, to_expert: Sequence[int], num_experts: int
) -> list[list[tuple[str, str]]]:
    """(term, context) pairs per expert by nearest cluster centroid (`assigner`: clustering.assign).

    Routing by centroid is not balanced, so an expert may be nearest to no pair: it then gets the
    len(pairs) // num_experts pairs most similar to its centroid (the whole pool for partitions without
    similarities: random, none), and a warning says so.
    """
    groups: list[list[tuple[str, str]]] = [[] for _ in range(num_experts)]
    for pair, c in zip(pairs, assigner.assign(list(pairs)).tolist(), strict=True):
        groups[to_expert[c]].append(pair)
    empty = [e for e, g in enumerate(groups) if not g]
    if not empty:
        return groups
    log.warning(
        "no router prompt is nearest to the centroid of expert(s) %s: using the prompts most similar to it",
        ", ".join(map(str, empty)),
    )
    ranked = assigner.spec.kind not in ("random", "none")
    scores = assigner.scores(list(pairs)) if ranked else None
    size = max(1, len(pairs) // num_experts)
    for e in empty:
        if scores is None:
            groups[e] = list(pairs)
            continue
        column = scores[:, list(to_expert).index(e)]
        groups[e] = [pairs[i] for i in np.argsort(-column, kind="stable")[:size]]
    return groups


@torch.no_grad()
def mean_router_inputs(
    model_dir: str | Path, prompts_by_expert: Sequence[Sequence[tuple[str, str]]], batch_size: int = 8
) -> torch.Tensor:
    """Mean input of every layer's FFN (post-attention RMSNorm output) over each expert's prompts.

    Returns a float32 tensor [layers, experts, hidden]. One dense model is loaded, never N.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    layers = model.model.layers
    sums = torch.zeros(len(layers), len(prompts_by_expert), model.config.hidden_size)
    captured: list[torch.Tensor] = []
    hooks = [
        layer.post_attention_layernorm.register_forward_hook(lambda _m, _i, out: captured.append(out))
        for layer in layers
    ]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    try:
        for e, pairs in enumerate(prompts_by_expert):
            count = 0
            for start in range(0, len(pairs), batch_size):
                texts = [
                    build_prompt(t, c, bos_token=tok.bos_token or "") for t, c in pairs[start : start + batch_size]
                ]
                ids = [tok(x, add_special_tokens=False)["input_ids"] for x in texts]
                width = max(map(len, ids))
                input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
                mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
                captured.clear()
                model(input_ids=input_ids, attention_mask=mask)
                m = mask.unsqueeze(-1).float()
                for li, h in enumerate(captured):
                    sums[li, e] += (h.float() * m).sum(dim=(0, 1))
                count += int(mask.sum())
            sums[:, e] /= max(count, 1)
    finally:
        for h in hooks:
            h.remove()
    return sums


def router_from_means(means: torch.Tensor) -> torch.Tensor:
    """Router rows from mean FFN inputs [layers, experts, hidden]: centred across experts, unit norm."""
    rows = means - means.mean(dim=1, keepdim=True) if means.shape[1] > 1 else means
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-6)
